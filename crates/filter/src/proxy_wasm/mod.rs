//! Filters of the proxy-wasm ABI (v0.2.1, and v0.2.0): core modules written for Envoy, Istio
//! or Higress with the official SDKs, run unmodified.
//!
//! The guest keeps its contexts in its own memory: a root context per plugin configuration
//! (created and configured on first use in an instance) and an HTTP context per request.
//! A request's context must see the same instance from its request headers to its log phase,
//! so an instance is taken for the whole request ([`Stream`]) and given back to this thread's
//! idle instances when the request ends ([`finish`]); `isolation: request` starts a fresh one
//! for every request. Every call has the plugin's deadline and every instance its memory cap,
//! as for components; a failed call drops the instance and applies the attachment's policy.
//!
//! Ticks (`proxy_on_tick`) run off the request path, in an instance kept for them per plugin
//! configuration ([`Ticks`]), for as long as an attachment holds that configuration.

mod abi;
mod maps;
mod metrics;
mod properties;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use wasmtime::{InstancePre, Module, Store, TypedFunc};

pub(crate) use abi::{Host, linker};
pub use metrics::{MetricKind, PluginMetric, plugin_metrics};

use crate::engine::{Kind, Plugin, START_DEADLINE, deadline_ticks};
use crate::failure::{FailureKind, FilterFailure};
use crate::host::{Action, Head, ImmediateResponse, RequestContext};
use crate::idle::IdlePool;

/// The ABI version `bytes` declares, if it is a core module of the proxy-wasm ABI.
pub(crate) fn abi_version(bytes: &[u8]) -> Option<&'static str> {
    use wasmparser::{Encoding, Parser, Payload};
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::Version { encoding: Encoding::Component, .. } => return None,
            Payload::ExportSection(exports) => {
                return exports.into_iter().find_map(|export| match export.ok()?.name {
                    "proxy_abi_version_0_2_1" => Some("0.2.1"),
                    "proxy_abi_version_0_2_0" => Some("0.2.0"),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    None
}

/// A proxy-wasm module, compiled and linked.
pub(crate) struct Code {
    pre: InstancePre<Host>,
    /// The module exports `proxy_on_tick`.
    ticks: bool,
    /// The ticks of each configuration attached, by configuration id.
    ticking: Mutex<HashMap<u64, Weak<Ticks>>>,
}

impl Code {
    pub fn new(linker: &wasmtime::Linker<Host>, module: &Module) -> Result<Self, String> {
        let linker = abi::with_stubs(linker, module)?;
        let pre = linker.instantiate_pre(module).map_err(|e| format!("cannot be linked: {e:#}"))?;
        if module.get_export("proxy_on_context_create").is_none() {
            return Err("does not export proxy_on_context_create".into());
        }
        let ticks = module.get_export("proxy_on_tick").is_some();
        Ok(Self { pre, ticks, ticking: Mutex::default() })
    }

    /// The ticks of `plugin` with configuration `config` (id `config_id`), shared by every
    /// attachment of that configuration: started here on the current tokio runtime if they
    /// are not running. None if the module has no `proxy_on_tick` or there is no runtime.
    pub fn ticks(&self, plugin: &Arc<Plugin>, config: &Arc<str>, config_id: u64) -> Option<Arc<Ticks>> {
        if !self.ticks {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut ticking = self.ticking.lock().unwrap_or_else(|e| e.into_inner());
        ticking.retain(|_, ticks| ticks.strong_count() > 0);
        if let Some(ticks) = ticking.get(&config_id).and_then(Weak::upgrade) {
            return Some(ticks);
        }
        let task = runtime.spawn(run_ticks(plugin.clone(), config.clone(), config_id));
        let ticks = Arc::new(Ticks(task.abort_handle()));
        ticking.insert(config_id, Arc::downgrade(&ticks));
        Some(ticks)
    }

    /// Starts the plugin in a fresh instance and configures it with `config`: the check of an
    /// attachment's configuration, at load.
    pub fn validate_config(&self, plugin: &Plugin, config: &str) -> Result<(), String> {
        let failed = |failure: FilterFailure| format!("the plugin {} while checking it", failure.kind);
        let mut vm = Vm::new(self, plugin).map_err(failed)?;
        match vm.root(plugin, config, 0) {
            Ok(_) => Ok(()),
            Err(failure) if failure.kind == FailureKind::Unavailable => Err(failure.detail),
            Err(failure) => Err(failed(failure)),
        }
    }

    /// Runs the request headers or response headers phase of the request in hand, in the
    /// instance `stream` holds (taken in the request phase).
    #[allow(clippy::too_many_arguments)]
    pub async fn on_head(
        &self,
        plugin: &Arc<Plugin>,
        config: &str,
        config_id: u64,
        fresh: bool,
        stream: &mut Option<Stream>,
        context: Box<RequestContext>,
        head: Head,
    ) -> (Box<RequestContext>, Head, Result<Option<Action>, FilterFailure>) {
        if matches!(head, Head::Request(_)) {
            let vm = match fresh {
                true => None,
                false => checkout(plugin),
            };
            let vm = match vm.map_or_else(|| Vm::new(self, plugin), Ok) {
                Ok(vm) => vm,
                Err(failure) => return (context, head, Err(failure)),
            };
            *stream = Some(Stream { vm, id: 0, plugin: plugin.clone(), fresh, seen: None, held: Default::default() });
        }
        // No stream for the response: the request phase failed open.
        let Some(open) = stream else { return (context, head, Ok(None)) };
        let (context, head, result) = open.on_head(config, config_id, context, head).await;
        if result.is_err() {
            *stream = None;
        }
        (context, head, result)
    }
}

/// A live instance of a proxy-wasm module.
struct Vm {
    store: Store<Host>,
    exports: Exports,
    /// Root contexts, by the configuration they were configured with.
    roots: Vec<(u64, u32)>,
    next_id: u32,
}

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
type OnHttpCallResponse = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The guest's entry points; a missing optional one is not called.
struct Exports {
    on_context_create: TypedFunc<(u32, u32), ()>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_http_call_response: Option<OnHttpCallResponse>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_delete: Option<TypedFunc<u32, ()>>,
    on_tick: Option<TypedFunc<u32, ()>>,
}

impl Vm {
    /// A new instance: its start-up code (`_initialize`, `proxy_on_vm_start`) runs under
    /// [`START_DEADLINE`] at least.
    fn new(code: &Code, plugin: &Plugin) -> Result<Self, FilterFailure> {
        let engine = &plugin.engine;
        let mut store = Store::new(engine.wasmtime(), Host::new(plugin.name.clone(), plugin.limits.memory));
        store.limiter(|host| &mut host.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(plugin.limits.deadline.max(START_DEADLINE)));
        let started = {
            let _ticking = engine.clock().ticking();
            Self::start(code, &mut store)
        };
        store.data_mut().end_call();
        match started {
            Ok(exports) => Ok(Self { store, exports, roots: Vec::new(), next_id: 2 }),
            Err(e) => Err(FilterFailure::of(&plugin.name, &e, &store.data().limiter)),
        }
    }

    /// Instantiates the module and starts the VM, with root context 1.
    fn start(code: &Code, store: &mut Store<Host>) -> wasmtime::Result<Exports> {
        let instance = code.pre.instantiate(&mut *store)?;
        abi::bind(store, &instance);
        if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
            initialize.call(&mut *store, ())?;
        }
        let exports = Exports {
            on_context_create: instance.get_typed_func(&mut *store, "proxy_on_context_create")?,
            on_vm_start: instance.get_typed_func(&mut *store, "proxy_on_vm_start").ok(),
            on_configure: instance.get_typed_func(&mut *store, "proxy_on_configure").ok(),
            on_request_headers: instance.get_typed_func(&mut *store, "proxy_on_request_headers").ok(),
            on_response_headers: instance.get_typed_func(&mut *store, "proxy_on_response_headers").ok(),
            on_request_body: instance.get_typed_func(&mut *store, "proxy_on_request_body").ok(),
            on_response_body: instance.get_typed_func(&mut *store, "proxy_on_response_body").ok(),
            on_http_call_response: instance.get_typed_func(&mut *store, "proxy_on_http_call_response").ok(),
            on_done: instance.get_typed_func(&mut *store, "proxy_on_done").ok(),
            on_log: instance.get_typed_func(&mut *store, "proxy_on_log").ok(),
            on_delete: instance.get_typed_func(&mut *store, "proxy_on_delete").ok(),
            on_tick: instance.get_typed_func(&mut *store, "proxy_on_tick").ok(),
        };
        exports.on_context_create.call(&mut *store, (1, 0))?;
        if let Some(on_vm_start) = &exports.on_vm_start {
            // The VM configuration is empty: there is no VM-wide configuration to give.
            if on_vm_start.call(&mut *store, (1, 0))? == 0 {
                wasmtime::bail!("proxy_on_vm_start returned false");
            }
        }
        Ok(exports)
    }

    /// The root context configured with `config` (attachment configuration, JSON text),
    /// configuring a new one on first use. `false` from `proxy_on_configure` is a rejected
    /// configuration ([`FailureKind::Unavailable`]).
    fn root(&mut self, plugin: &Plugin, config: &str, config_id: u64) -> Result<u32, FilterFailure> {
        if let Some(&(_, root)) = self.roots.iter().find(|(id, _)| *id == config_id) {
            return Ok(root);
        }
        // The root context made at start-up takes the first configuration.
        let root = match self.roots.is_empty() {
            true => 1,
            false => self.new_id(),
        };
        let configuration = plugin_configuration(config);
        let size = u32::try_from(configuration.len()).unwrap_or(u32::MAX);
        self.store.data_mut().configuration = configuration;
        let accepted = self.call(plugin, plugin.limits.deadline.max(START_DEADLINE), |store, exports| {
            if root != 1 {
                exports.on_context_create.call(&mut *store, (root, 0))?;
            }
            exports.on_configure.as_ref().map_or(Ok(1), |configure| configure.call(&mut *store, (root, size)))
        })?;
        if accepted == 0 {
            let detail = "proxy_on_configure returned false (see the plugin's log)";
            return Err(FilterFailure::new(&plugin.name, FailureKind::Unavailable, detail));
        }
        self.roots.push((config_id, root));
        Ok(root)
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(2);
        id
    }

    /// Runs `f` on the store under `deadline`.
    fn call<R>(
        &mut self,
        plugin: &Plugin,
        deadline: Duration,
        f: impl FnOnce(&mut Store<Host>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, FilterFailure> {
        self.store.set_epoch_deadline(deadline_ticks(deadline));
        let result = {
            let _ticking = plugin.engine.clock().ticking();
            f(&mut self.store, &self.exports)
        };
        self.store.data_mut().end_call();
        result.map_err(|e| FilterFailure::of(&plugin.name, &e, &self.store.data().limiter))
    }
}

/// The ticks of one plugin configuration, running while this is held; dropping the last
/// holder (the attachments of that configuration) stops them.
#[derive(Debug)]
pub(crate) struct Ticks(tokio::task::AbortHandle);

impl Drop for Ticks {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many ticks failed, by plugin and kind of failure.
type TickFailures = HashMap<(Arc<str>, FailureKind), u64>;

/// The ticks that failed in the life of the gateway process.
static TICK_FAILURES: LazyLock<Mutex<TickFailures>> = LazyLock::new(Mutex::default);

/// How many ticks failed, by plugin and kind of failure.
pub fn tick_failures() -> Vec<(Arc<str>, FailureKind, u64)> {
    let failures = TICK_FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    failures.iter().map(|((plugin, kind), count)| (plugin.clone(), *kind, *count)).collect()
}

/// The shortest time between the end of a tick and the start of the next, whatever period
/// the filter asks for: ticks never take a thread whole.
const MIN_TICK_GAP: Duration = Duration::from_millis(10);

/// The instance a configuration's ticks run in, and its root context.
struct Ticker {
    vm: Vm,
    root: u32,
}

/// The tick loop of one configuration of `plugin`: an instance of its own, configured with
/// `config`, whose root context gets `proxy_on_tick` at the period it set, each call on a
/// blocking thread under the plugin's deadline. A failed tick drops the instance and the next
/// one starts afresh; the loop ends when the root context sets no period (or zero), or its
/// instance cannot start or rejects the configuration.
async fn run_ticks(plugin: Arc<Plugin>, config: Arc<str>, config_id: u64) {
    let (mut ticker, mut period) = (None, Duration::ZERO);
    loop {
        let (plugin, config) = (plugin.clone(), config.clone());
        let step = tokio::task::spawn_blocking(move || tick(&plugin, &config, config_id, ticker, period));
        let Ok(next) = step.await else { return };
        (ticker, period) = next;
        if period.is_zero() {
            return;
        }
        tokio::time::sleep(period.max(MIN_TICK_GAP)).await;
    }
}

/// One step of [`run_ticks`]: starts and configures the tick instance if there is none, or
/// calls `proxy_on_tick` in it. Returns the instance if it is still sound, and the period
/// until the next step (zero: no more ticks).
fn tick(
    plugin: &Plugin,
    config: &str,
    config_id: u64,
    ticker: Option<Ticker>,
    period: Duration,
) -> (Option<Ticker>, Duration) {
    let Kind::ProxyWasm(code) = &plugin.kind else { return (None, Duration::ZERO) };
    let Some(Ticker { mut vm, root }) = ticker else {
        let started = Vm::new(code, plugin).and_then(|mut vm| Ok((vm.root(plugin, config, config_id)?, vm)));
        return match started {
            Ok((root, vm)) => {
                let period = vm.store.data().tick_period;
                (Some(Ticker { vm, root }), period)
            }
            Err(failure) => {
                tracing::debug!(plugin = %plugin.name, "no ticks: {failure}");
                (None, Duration::ZERO)
            }
        };
    };
    let result = vm.call(plugin, plugin.limits.deadline, |store, exports| match &exports.on_tick {
        Some(on_tick) => on_tick.call(store, root),
        None => Ok(()),
    });
    match result {
        Ok(()) => {
            let period = vm.store.data().tick_period;
            (Some(Ticker { vm, root }), period)
        }
        Err(failure) => {
            tracing::warn!(plugin = %plugin.name, kind = failure.kind.as_str(), "{failure} (tick)");
            let mut failures = TICK_FAILURES.lock().unwrap_or_else(|e| e.into_inner());
            *failures.entry((plugin.name.clone(), failure.kind)).or_default() += 1;
            (None, period)
        }
    }
}

/// A string configuration as-is; any other value (an object, a list, a number) as JSON text;
/// none as nothing.
fn plugin_configuration(config: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(config) {
        Ok(serde_json::Value::String(text)) => text.into_bytes(),
        Ok(serde_json::Value::Null) => Vec::new(),
        _ => config.as_bytes().to_vec(),
    }
}

/// What the log phase may still read of a request whose head has moved on.
pub(crate) struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub id: Option<http::HeaderValue>,
    pub status: Option<http::StatusCode>,
}

/// One request's HTTP context in an instance it has to itself until the request ends.
pub(crate) struct Stream {
    vm: Vm,
    id: u32,
    plugin: Arc<Plugin>,
    fresh: bool,
    seen: Option<Seen>,
    /// What the filter holds of the request body and of the response body: the chunks it has
    /// been given since it last let the body go on.
    held: [Vec<u8>; 2],
}

/// `proxy_action_t`.
const CONTINUE: u32 = 0;

/// What a body phase made of a chunk.
pub(crate) enum BodyOut {
    /// The bytes that go on (the filter let go of what it held, changed or not).
    Pass(Vec<u8>),
    /// The filter keeps what it has been given until more comes (Pause): it buffers.
    Held,
    /// The filter answered instead of the upstream (request body only).
    Respond(ImmediateResponse),
}

/// Why a body phase did not let the body go on.
pub(crate) enum BodyFault {
    /// The filter buffered more than the cap.
    TooLarge,
    /// The call failed; the body as the filter left it, which goes on past a fail-open filter.
    Failed(FilterFailure, Vec<u8>),
}

impl Stream {
    /// Whether the filter has a body phase for the request (or the response).
    pub fn has_body(&self, request: bool) -> bool {
        match request {
            true => self.vm.exports.on_request_body.is_some(),
            false => self.vm.exports.on_response_body.is_some(),
        }
    }

    /// Gives the filter the next `chunk` of the request (or response) body, with everything it
    /// held back before: `proxy_on_request_body` (or `_response_body`). Pause holds the body
    /// until more comes; at the end of the stream there is nothing more to wait for, and the
    /// body goes on.
    pub fn on_body(
        &mut self,
        request: bool,
        chunk: &[u8],
        end_of_stream: bool,
        cap: usize,
        context: Box<RequestContext>,
    ) -> (Box<RequestContext>, Result<BodyOut, BodyFault>) {
        let plugin = self.plugin.clone();
        let held = &mut self.held[usize::from(!request)];
        // A chunk alone may be larger than the cap: only what a filter holds back is capped.
        if !held.is_empty() && held.len() + chunk.len() > cap {
            return (context, Err(BodyFault::TooLarge));
        }
        held.extend_from_slice(chunk);
        let bytes = std::mem::take(held);
        let size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let body = Some(abi::Body { request, bytes });
        self.vm.store.data_mut().call = Some(abi::Call::new(context, None, self.seen.take(), body));
        let id = self.id;
        let result = self.vm.call(&plugin, plugin.limits.deadline, |store, exports| {
            let function = match request {
                true => &exports.on_request_body,
                false => &exports.on_response_body,
            };
            function.as_ref().map_or(Ok(CONTINUE), |function| function.call(store, (id, size, end_of_stream.into())))
        });
        let call = self.vm.store.data_mut().call.take().expect("a call's inputs stay in the store");
        self.seen = call.seen;
        let bytes = call.body.map(|body| body.bytes).unwrap_or_default();
        let out = match (result, call.local_response) {
            (Err(failure), _) => Err(BodyFault::Failed(failure, bytes)),
            (Ok(_), Some(response)) => Ok(BodyOut::Respond(response)),
            (Ok(action), None) if action == CONTINUE || end_of_stream => Ok(BodyOut::Pass(bytes)),
            (Ok(_), None) => {
                if bytes.len() > cap {
                    return (call.context, Err(BodyFault::TooLarge));
                }
                self.held[usize::from(!request)] = bytes;
                Ok(BodyOut::Held)
            }
        };
        (call.context, out)
    }

    async fn on_head(
        &mut self,
        config: &str,
        config_id: u64,
        context: Box<RequestContext>,
        head: Head,
    ) -> (Box<RequestContext>, Head, Result<Option<Action>, FilterFailure>) {
        let plugin = self.plugin.clone();
        let request = matches!(head, Head::Request(_));
        if request {
            let root = match self.vm.root(&plugin, config, config_id) {
                Ok(root) => root,
                Err(failure) => return (context, head, Err(failure)),
            };
            self.id = self.vm.new_id();
            let id = self.id;
            let create = |store: &mut Store<Host>, exports: &Exports| exports.on_context_create.call(store, (id, root));
            if let Err(failure) = self.vm.call(&plugin, plugin.limits.deadline, create) {
                return (context, head, Err(failure));
            }
        }
        let (headers, end_of_stream) = match &head {
            Head::Request(parts) => (parts.headers.len(), no_body(&parts.headers)),
            Head::Response(parts) => (parts.headers.len(), no_body(&parts.headers)),
        };
        self.vm.store.data_mut().call = Some(abi::Call::new(context, Some(head), self.seen.take(), None));
        let id = self.id;
        let headers = u32::try_from(headers).unwrap_or(u32::MAX);
        let result = self.vm.call(&plugin, plugin.limits.deadline, |store, exports| {
            let function = match request {
                true => &exports.on_request_headers,
                false => &exports.on_response_headers,
            };
            function.as_ref().map_or(Ok(CONTINUE), |function| function.call(store, (id, headers, end_of_stream.into())))
        });
        let result = match result {
            Ok(action) if action != CONTINUE => self.wait(&plugin).await,
            result => result.map(drop),
        };
        // Answers of calls the filter stopped waiting for are not delivered.
        self.vm.store.data_mut().calls.clear();
        let call = self.vm.store.data_mut().call.take().expect("a call's inputs stay in the store");
        let head = call.head.expect("the head stays in the store during a call");
        self.seen = Some(match (&head, call.seen) {
            (Head::Request(parts), _) => Seen {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                version: parts.version,
                id: parts.headers.get("x-request-id").cloned(),
                status: None,
            },
            (Head::Response(parts), Some(seen)) => Seen { status: Some(parts.status), ..seen },
            (Head::Response(parts), None) => Seen {
                method: http::Method::GET,
                uri: http::Uri::default(),
                version: parts.version,
                id: None,
                status: Some(parts.status),
            },
        });
        let result = result.map(|()| call.local_response.map(Action::Respond));
        (call.context, head, result)
    }

    /// The filter paused the request: while it has HTTP calls in flight, waits for the next
    /// answer and gives it to `proxy_on_http_call_response`, until the filter resumes the
    /// request or answers it. A pause with nothing to wait for lets the request go on.
    async fn wait(&mut self, plugin: &Plugin) -> Result<(), FilterFailure> {
        loop {
            let host = self.vm.store.data_mut();
            let call = host.call.as_ref().expect("a call's inputs stay in the store");
            if call.resumed || call.local_response.is_some() || host.calls.is_empty() {
                return Ok(());
            }
            let (token, pending) = host.calls.remove(0);
            let answer = pending.answer().await;
            let (headers, body) = (answer.headers.len() + usize::from(answer.status.is_some()), answer.body.len());
            let head = match answer.status {
                Some(status) => {
                    let mut response = http::Response::new(());
                    *response.status_mut() = status;
                    *response.headers_mut() = answer.headers;
                    Head::Response(response.into_parts().0)
                }
                None => Head::Response(http::Response::new(()).into_parts().0),
            };
            let failed = answer.status.is_none();
            let call = self.vm.store.data_mut().call.as_mut().expect("a call's inputs stay in the store");
            call.answer = Some(abi::Answer { head, body: answer.body.into(), failed });
            let id = self.id;
            let (headers, body) = (u32::try_from(headers).unwrap_or(u32::MAX), u32::try_from(body).unwrap_or(u32::MAX));
            let result =
                self.vm.call(plugin, plugin.limits.deadline, |store, exports| match &exports.on_http_call_response {
                    Some(function) => function.call(store, (id, token, if failed { 0 } else { headers }, body, 0)),
                    None => Ok(()),
                });
            self.vm.store.data_mut().call.as_mut().expect("a call's inputs stay in the store").answer = None;
            result?;
        }
    }

    /// The request ended: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; the instance
    /// goes back to the idle ones if they succeeded.
    fn finish(mut self, context: Box<RequestContext>) -> Box<RequestContext> {
        let plugin = self.plugin.clone();
        let id = self.id;
        self.vm.store.data_mut().call = Some(abi::Call::new(context, None, self.seen.take(), None));
        let result = self.vm.call(&plugin, plugin.limits.deadline, |store, exports| {
            if let Some(done) = &exports.on_done {
                done.call(&mut *store, id)?;
            }
            if let Some(log) = &exports.on_log {
                log.call(&mut *store, id)?;
            }
            exports.on_delete.as_ref().map_or(Ok(()), |delete| delete.call(&mut *store, id))
        });
        let context = self.vm.store.data_mut().call.take().expect("a call's inputs stay in the store").context;
        match result {
            Ok(()) if !self.fresh => checkin(&plugin, self.vm),
            Ok(()) => {}
            // The response is on its way: the failure can only be logged.
            Err(failure) => {
                tracing::warn!(plugin = %plugin.name, kind = failure.kind.as_str(), "{failure} (log phase)")
            }
        }
        context
    }
}

/// Ends the request in every proxy-wasm filter it went through, in reverse order.
pub(crate) fn finish(streams: &mut [Option<Stream>], mut context: Box<RequestContext>) {
    for stream in streams.iter_mut().rev() {
        if let Some(stream) = stream.take() {
            context = stream.finish(context);
        }
    }
}

/// Whether a head says no body follows it.
fn no_body(headers: &http::HeaderMap) -> bool {
    !headers.contains_key(TRANSFER_ENCODING) && headers.get(CONTENT_LENGTH).is_none_or(|length| length == "0")
}

/// Idle instances kept per plugin per thread: one per request in flight is needed, since a
/// request holds its instance while it waits for the upstream.
const MAX_IDLE: usize = 16;

thread_local! {
    static IDLE: RefCell<IdlePool<Vm>> = RefCell::new(IdlePool::new());
}

fn checkout(plugin: &Arc<Plugin>) -> Option<Vm> {
    IDLE.with_borrow_mut(|idle| idle.take(plugin))
}

fn checkin(plugin: &Arc<Plugin>, vm: Vm) {
    IDLE.with_borrow_mut(|idle| idle.keep(plugin, vm, MAX_IDLE));
}
