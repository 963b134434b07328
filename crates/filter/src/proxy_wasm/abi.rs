//! The host side of the proxy-wasm ABI: the `env.proxy_*` imports and the few WASI preview 1
//! functions the SDKs' runtimes need (output into our log, clocks, randomness, no arguments
//! or environment). Every other import of those modules links to a stub that answers
//! `UNIMPLEMENTED` (`ENOSYS` for WASI), so a module built with any SDK loads.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Instance, Linker, Memory, Module, Store, TypedFunc, Val};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;

use super::Seen;
use super::maps::{self, Map};
use super::metrics;
use super::properties;
use crate::failure::MemoryCap;
use crate::host::{Head, ImmediateResponse, RequestContext};
use crate::outbound;
use crate::wasi::{STDERR, STDOUT, Wasi};

/// `proxy_status_t`.
pub(crate) type Status = u32;
pub(crate) const OK: Status = 0;
pub(crate) const NOT_FOUND: Status = 1;
pub(crate) const BAD_ARGUMENT: Status = 2;
const INVALID_MEMORY_ACCESS: Status = 6;
const CAS_MISMATCH: Status = 8;
const INTERNAL_FAILURE: Status = 10;
const UNIMPLEMENTED: Status = 12;

/// `wasi_errno_t`.
const BADF: u32 = 8;
const FAULT: u32 = 21;
const INVAL: u32 = 28;
const NOSYS: u32 = 52;

/// `proxy_buffer_type_t` values with a buffer here.
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const HTTP_CALL_RESPONSE_BODY: u32 = 4;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;

/// The most random bytes one call may ask for.
const MAX_RANDOM: u32 = 1 << 20;

/// The most bytes of shared data (keys and values) one plugin may keep.
const MAX_SHARED: usize = 16 << 20;

/// The data of a proxy-wasm instance's store.
pub(crate) struct Host {
    plugin: Arc<str>,
    pub limiter: MemoryCap,
    wasi: Wasi,
    memory: Option<Memory>,
    /// The guest's allocator for what the host returns: `proxy_on_memory_allocate`, or
    /// `malloc` (AssemblyScript).
    allocate: Option<TypedFunc<u32, u32>>,
    /// The plugin configuration `proxy_on_configure` is reading.
    pub configuration: Vec<u8>,
    pub call: Option<Call>,
    /// HTTP calls in flight, by token.
    pub calls: Vec<(u32, outbound::Pending)>,
    next_token: u32,
    /// The period of `proxy_on_tick` the guest asked for last; zero for no ticks.
    pub tick_period: Duration,
}

/// What a call on a request reads and changes, moved into the store for the call.
pub(crate) struct Call {
    pub context: Box<RequestContext>,
    /// The head of the phase; none in the log phase.
    pub head: Option<Head>,
    pub seen: Option<Seen>,
    /// The body a body phase works on: what the filter holds of it so far.
    pub body: Option<Body>,
    pub local_response: Option<ImmediateResponse>,
    /// The filter resumed the request it paused (`proxy_continue_stream`).
    pub resumed: bool,
    /// The answer of the HTTP call `proxy_on_http_call_response` is about.
    pub answer: Option<Answer>,
}

/// An HTTP call's answer as the filter reads it: a response head, and its body.
pub(crate) struct Answer {
    pub head: Head,
    pub body: Vec<u8>,
    /// The call failed: no headers at all (no `:status`).
    pub failed: bool,
}

impl Call {
    pub fn new(context: Box<RequestContext>, head: Option<Head>, seen: Option<Seen>, body: Option<Body>) -> Self {
        Self { context, head, seen, body, local_response: None, resumed: false, answer: None }
    }
}

/// The bytes of a request or response body a filter sees in a body phase.
pub(crate) struct Body {
    pub request: bool,
    pub bytes: Vec<u8>,
}

impl Call {
    /// Whether the call is in a request phase, where a local response replaces the upstream's.
    fn request_phase(&self) -> bool {
        matches!(self.head, Some(Head::Request(_))) || self.body.as_ref().is_some_and(|body| body.request)
    }

    fn body(&mut self, buffer: u32) -> Option<&mut Vec<u8>> {
        let body = self.body.as_mut()?;
        (body.request == (buffer == REQUEST_BODY)).then_some(&mut body.bytes)
    }
}

impl Host {
    pub fn new(plugin: Arc<str>, memory: usize) -> Self {
        Self {
            wasi: Wasi::new(plugin.clone()),
            plugin,
            limiter: MemoryCap::new(memory),
            memory: None,
            allocate: None,
            configuration: Vec::new(),
            call: None,
            calls: Vec::new(),
            next_token: 1,
            tick_period: Duration::ZERO,
        }
    }

    /// Logs output left without a line end by the call that just ended.
    pub fn end_call(&mut self) {
        self.wasi.end_call();
    }
}

/// Finds the memory and allocator of a new instance.
pub(crate) fn bind(store: &mut Store<Host>, instance: &Instance) {
    let memory = instance.get_memory(&mut *store, "memory");
    let allocate = instance
        .get_typed_func(&mut *store, "proxy_on_memory_allocate")
        .or_else(|_| instance.get_typed_func(&mut *store, "malloc"))
        .ok();
    let host = store.data_mut();
    host.memory = memory;
    host.allocate = allocate;
}

/// Why a host function stopped: a status for the guest, or a trap (the guest's allocator
/// failed, or it ran out of time or memory in it).
enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<wasmtime::Error> for Fault {
    fn from(error: wasmtime::Error) -> Self {
        Fault::Trap(error)
    }
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Fault::Status(status)
    }
}

type Done = Result<(), Fault>;

fn answer(done: Done) -> wasmtime::Result<Status> {
    match done {
        Ok(()) => Ok(OK),
        Err(Fault::Status(status)) => Ok(status),
        Err(Fault::Trap(error)) => Err(error),
    }
}

/// Runs a host function's body: its status, or its trap.
fn run(body: impl FnOnce() -> Done) -> wasmtime::Result<Status> {
    answer(body())
}

fn memory(caller: &Caller<'_, Host>) -> Result<Memory, Fault> {
    caller.data().memory.ok_or(Fault::Status(INVALID_MEMORY_ACCESS))
}

/// A copy of `len` guest bytes at `ptr`.
fn read(caller: &mut Caller<'_, Host>, ptr: u32, len: u32) -> Result<Vec<u8>, Fault> {
    let memory = memory(caller)?;
    let (start, len) = (ptr as usize, len as usize);
    let bytes = memory.data(&*caller).get(start..start.checked_add(len).ok_or(INVALID_MEMORY_ACCESS)?);
    Ok(bytes.ok_or(INVALID_MEMORY_ACCESS)?.to_vec())
}

fn read_text(caller: &mut Caller<'_, Host>, ptr: u32, len: u32) -> Result<String, Fault> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Fault::Status(BAD_ARGUMENT))
}

fn write(caller: &mut Caller<'_, Host>, ptr: u32, bytes: &[u8]) -> Done {
    memory(caller)?.write(&mut *caller, ptr as usize, bytes).map_err(|_| Fault::Status(INVALID_MEMORY_ACCESS))
}

fn write_u32(caller: &mut Caller<'_, Host>, ptr: u32, value: u32) -> Done {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: copied into memory from its allocator, the address written at
/// `data_ptr` and the size at `size_ptr` (a null address for nothing).
fn give(caller: &mut Caller<'_, Host>, bytes: &[u8], data_ptr: u32, size_ptr: u32) -> Done {
    let size = u32::try_from(bytes.len()).map_err(|_| Fault::Status(INTERNAL_FAILURE))?;
    let address = match size {
        0 => 0,
        _ => {
            let allocate = caller.data().allocate.clone().ok_or(INTERNAL_FAILURE)?;
            let address = allocate.call(&mut *caller, size)?;
            if address == 0 {
                return Err(Fault::Status(INTERNAL_FAILURE));
            }
            write(caller, address, bytes)?;
            address
        }
    };
    write_u32(caller, data_ptr, address)?;
    write_u32(caller, size_ptr, size)
}

fn call<'c>(caller: &'c mut Caller<'_, Host>) -> Result<&'c mut Call, Fault> {
    caller.data_mut().call.as_mut().ok_or(Fault::Status(NOT_FOUND))
}

/// The header map `map` of the call in hand.
fn with_map<R>(
    caller: &mut Caller<'_, Host>,
    map: u32,
    f: impl FnOnce(Map<'_>) -> Result<R, Status>,
) -> Result<R, Fault> {
    let call = call(caller)?;
    let (map, head) = match map {
        maps::HTTP_CALL_RESPONSE_HEADERS => {
            let answer = call.answer.as_mut().filter(|answer| !answer.failed);
            (maps::RESPONSE_HEADERS, answer.map(|answer| &mut answer.head))
        }
        _ => (map, call.head.as_mut()),
    };
    Ok(f(Map::of(map, head.ok_or(NOT_FOUND)?, &call.context)?)?)
}

/// The linker of every proxy-wasm module: the functions implemented here.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", proxy_get_current_time_nanoseconds)?;
    linker.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap("env", "proxy_get_buffer_status", proxy_get_buffer_status)?;
    linker.func_wrap("env", "proxy_get_header_map_pairs", proxy_get_header_map_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", proxy_set_header_map_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", proxy_get_header_map_value)?;
    linker.func_wrap("env", "proxy_replace_header_map_value", proxy_replace_header_map_value)?;
    linker.func_wrap("env", "proxy_add_header_map_value", proxy_add_header_map_value)?;
    linker.func_wrap("env", "proxy_remove_header_map_value", proxy_remove_header_map_value)?;
    linker.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    linker.func_wrap("env", "proxy_send_local_response", proxy_send_local_response)?;
    linker.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", |caller: Caller<'_, Host>, id: u32, offset: i64| {
        metrics::increment(&caller.data().plugin, id, offset).map_or(NOT_FOUND, |()| OK)
    })?;
    linker.func_wrap("env", "proxy_record_metric", |caller: Caller<'_, Host>, id: u32, value: u64| {
        metrics::record(&caller.data().plugin, id, value).map_or(NOT_FOUND, |()| OK)
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut caller: Caller<'_, Host>, id: u32, ptr: u32| {
        let value = metrics::get(&caller.data().plugin, id).ok_or(Fault::Status(NOT_FOUND));
        answer(value.and_then(|value| write(&mut caller, ptr, &value.to_le_bytes())))
    })?;
    linker.func_wrap("env", "proxy_continue_stream", |mut caller: Caller<'_, Host>, stream: u32| {
        answer(call(&mut caller).map(|call| call.resumed |= stream == 0))
    })?;
    // One request at a time per instance: the context in effect is always the request's.
    linker.func_wrap("env", "proxy_set_effective_context", |_: u32| OK)?;
    linker.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    // Ticks run only in the instance kept for them (see `Ticks`); elsewhere the period is noted
    // and unused.
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut caller: Caller<'_, Host>, period: u32| {
        caller.data_mut().tick_period = Duration::from_millis(period.into());
        OK
    })?;
    for wasi in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(wasi, "proc_exit", |code: u32| -> wasmtime::Result<()> {
            wasmtime::bail!("the plugin exited with code {code}")
        })?;
    }
    let wasi = "wasi_snapshot_preview1";
    linker.func_wrap(wasi, "fd_write", fd_write)?;
    linker.func_wrap(wasi, "clock_time_get", clock_time_get)?;
    linker.func_wrap(wasi, "random_get", random_get)?;
    // No arguments and no environment: zero of each, and nothing to copy.
    for sizes in ["args_sizes_get", "environ_sizes_get"] {
        linker.func_wrap(wasi, sizes, |mut caller: Caller<'_, Host>, count: u32, size: u32| {
            let written = write_u32(&mut caller, count, 0).and_then(|()| write_u32(&mut caller, size, 0));
            if written.is_ok() { 0 } else { FAULT }
        })?;
    }
    for get in ["args_get", "environ_get"] {
        linker.func_wrap(wasi, get, |_: u32, _: u32| 0u32)?;
    }
    // No preopened directories: the first descriptor asked about ends the list (Go's runtime
    // asks at start-up and panics on any other answer).
    linker.func_wrap(wasi, "fd_prestat_get", |_: u32, _: u32| BADF)?;
    Ok(linker)
}

/// `linker` with a stub for every function `module` imports from `env` or WASI that is not
/// implemented: it returns `UNIMPLEMENTED` (`ENOSYS` for WASI), or traps if it returns no
/// status. Imports from elsewhere stay unresolved, and the module does not load.
pub(crate) fn with_stubs(linker: &Linker<Host>, module: &Module) -> Result<Linker<Host>, String> {
    let mut linker = linker.clone();
    let mut store = Store::new(module.engine(), Host::new("".into(), 0));
    for import in module.imports() {
        let wasmtime::ExternType::Func(ty) = import.ty() else { continue };
        let answer = match import.module() {
            "env" => UNIMPLEMENTED,
            "wasi_snapshot_preview1" | "wasi_unstable" => NOSYS,
            _ => continue,
        };
        if linker.get(&mut store, import.module(), import.name()).is_ok() {
            continue;
        }
        let status = match ty.results().collect::<Vec<_>>().as_slice() {
            [wasmtime::ValType::I32] => Some(answer),
            _ => None,
        };
        let name = format!("{}.{}", import.module(), import.name());
        linker
            .func_new(import.module(), import.name(), ty.clone(), move |_, _, results| match status {
                Some(status) => {
                    results[0] = Val::I32(status as i32);
                    Ok(())
                }
                None => wasmtime::bail!("{name} is not provided by the gateway"),
            })
            .map_err(|e| format!("cannot link {}.{}: {e}", import.module(), import.name()))?;
    }
    Ok(linker)
}

fn proxy_log(mut caller: Caller<'_, Host>, level: u32, ptr: u32, len: u32) -> wasmtime::Result<Status> {
    run(|| {
        let message = read(&mut caller, ptr, len)?;
        let message = String::from_utf8_lossy(&message);
        let plugin = &*caller.data().plugin;
        match level {
            0 => tracing::trace!(target: "sluice::filter", plugin, "{message}"),
            1 => tracing::debug!(target: "sluice::filter", plugin, "{message}"),
            2 => tracing::info!(target: "sluice::filter", plugin, "{message}"),
            3 => tracing::warn!(target: "sluice::filter", plugin, "{message}"),
            4 | 5 => tracing::error!(target: "sluice::filter", plugin, "{message}"),
            _ => return Err(Fault::Status(BAD_ARGUMENT)),
        }
        Ok(())
    })
}

fn proxy_get_log_level(mut caller: Caller<'_, Host>, ptr: u32) -> wasmtime::Result<Status> {
    use tracing::level_filters::LevelFilter;
    let level = match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    };
    answer(write_u32(&mut caller, ptr, level))
}

fn proxy_get_current_time_nanoseconds(mut caller: Caller<'_, Host>, ptr: u32) -> wasmtime::Result<Status> {
    answer(write(&mut caller, ptr, &unix_nanos().to_le_bytes()))
}

fn unix_nanos() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, Host>,
    buffer: u32,
    start: u32,
    max_size: u32,
    data_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let bytes = with_buffer(&mut caller, buffer, |bytes| {
            let start = (start as usize).min(bytes.len());
            let end = start.saturating_add(max_size as usize).min(bytes.len());
            bytes[start..end].to_vec()
        })?;
        give(&mut caller, &bytes, data_ptr, size_ptr)
    })
}

/// `proxy_get_buffer_status`: the buffer's length, and no flags.
fn proxy_get_buffer_status(
    mut caller: Caller<'_, Host>,
    buffer: u32,
    length_ptr: u32,
    flags_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let length = with_buffer(&mut caller, buffer, <[u8]>::len)?;
        write_u32(&mut caller, length_ptr, u32::try_from(length).unwrap_or(u32::MAX))?;
        write_u32(&mut caller, flags_ptr, 0)
    })
}

/// Runs `f` on buffer `buffer` of the call in hand: the plugin or VM configuration, a body,
/// or an HTTP call's answer.
fn with_buffer<R>(caller: &mut Caller<'_, Host>, buffer: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R, Fault> {
    let host = caller.data_mut();
    let bytes: &[u8] = match buffer {
        PLUGIN_CONFIGURATION => &host.configuration,
        VM_CONFIGURATION => &[],
        REQUEST_BODY | RESPONSE_BODY => host.call.as_mut().ok_or(NOT_FOUND)?.body(buffer).ok_or(NOT_FOUND)?,
        HTTP_CALL_RESPONSE_BODY => &host.call.as_ref().ok_or(NOT_FOUND)?.answer.as_ref().ok_or(NOT_FOUND)?.body,
        _ => return Err(Fault::Status(NOT_FOUND)),
    };
    Ok(f(bytes))
}

/// Replaces `size` bytes of a body from `start` with the guest's bytes: `(0, 0)` prepends, a
/// `start` at or past the end appends, `(0, length or more)` replaces it all.
fn proxy_set_buffer_bytes(
    mut caller: Caller<'_, Host>,
    buffer: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_size: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let bytes = read(&mut caller, data_ptr, data_size)?;
        let body = match buffer {
            REQUEST_BODY | RESPONSE_BODY => call(&mut caller)?.body(buffer).ok_or(NOT_FOUND)?,
            _ => return Err(Fault::Status(BAD_ARGUMENT)),
        };
        let start = (start as usize).min(body.len());
        let end = start.saturating_add(size as usize).min(body.len());
        body.splice(start..end, bytes);
        Ok(())
    })
}

fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, Host>,
    map: u32,
    data_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let pairs = with_map(&mut caller, map, |mut map| Ok(map.pairs()))?;
        give(&mut caller, &pairs, data_ptr, size_ptr)
    })
}

fn proxy_set_header_map_pairs(mut caller: Caller<'_, Host>, map: u32, ptr: u32, len: u32) -> wasmtime::Result<Status> {
    run(|| {
        let bytes = read(&mut caller, ptr, len)?;
        let pairs = maps::deserialize(&bytes)?;
        with_map(&mut caller, map, |mut map| map.set_pairs(&pairs))
    })
}

fn proxy_get_header_map_value(
    mut caller: Caller<'_, Host>,
    map: u32,
    key_ptr: u32,
    key_len: u32,
    data_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let name = read_text(&mut caller, key_ptr, key_len)?;
        let value = with_map(&mut caller, map, |mut map| map.get(&name))?;
        give(&mut caller, &value, data_ptr, size_ptr)
    })
}

fn proxy_replace_header_map_value(
    mut caller: Caller<'_, Host>,
    map: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let (name, value) = (read_text(&mut caller, key_ptr, key_len)?, read_text(&mut caller, value_ptr, value_len)?);
        with_map(&mut caller, map, |mut map| map.replace(&name, &value))
    })
}

fn proxy_add_header_map_value(
    mut caller: Caller<'_, Host>,
    map: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let (name, value) = (read_text(&mut caller, key_ptr, key_len)?, read_text(&mut caller, value_ptr, value_len)?);
        with_map(&mut caller, map, |mut map| map.add(&name, &value))
    })
}

fn proxy_remove_header_map_value(
    mut caller: Caller<'_, Host>,
    map: u32,
    key_ptr: u32,
    key_len: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let name = read_text(&mut caller, key_ptr, key_len)?;
        with_map(&mut caller, map, |mut map| map.remove(&name))
    })
}

fn proxy_get_property(
    mut caller: Caller<'_, Host>,
    path_ptr: u32,
    path_len: u32,
    data_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let path = read(&mut caller, path_ptr, path_len)?;
        let segments: Vec<&[u8]> = path.split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
        let host = caller.data();
        let value = properties::get(&host.plugin, host.call.as_ref(), &segments).ok_or(NOT_FOUND)?;
        give(&mut caller, &value, data_ptr, size_ptr)
    })
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut caller: Caller<'_, Host>,
    status: u32,
    _details_ptr: u32,
    _details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    _grpc_status: i32,
) -> wasmtime::Result<Status> {
    run(|| {
        let body = read(&mut caller, body_ptr, body_len)?;
        let headers = read(&mut caller, headers_ptr, headers_len)?;
        let headers = maps::deserialize(&headers)?.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let status = u16::try_from(status).map_err(|_| BAD_ARGUMENT)?;
        let call = call(&mut caller)?;
        // The answer replaces the upstream's: in the request phases, or in place of the
        // upstream's response while its head is in hand; not from the log phase or once the
        // response body has started.
        if !call.request_phase() && !matches!(call.head, Some(Head::Response(_))) {
            return Err(Fault::Status(UNIMPLEMENTED));
        }
        call.local_response = Some(ImmediateResponse { status, headers, body });
        Ok(())
    })
}

/// `proxy_http_call`: a call to a Service of the Ingress's namespace (see [`outbound`]),
/// answered later through `proxy_on_http_call_response` while the request waits.
#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut caller: Caller<'_, Host>,
    target_ptr: u32,
    target_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    body_ptr: u32,
    body_len: u32,
    _trailers_ptr: u32,
    _trailers_len: u32,
    timeout_ms: u32,
    token_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let target = read_text(&mut caller, target_ptr, target_len)?;
        let headers = read(&mut caller, headers_ptr, headers_len)?;
        let body = read(&mut caller, body_ptr, body_len)?;
        let request = call_request(&maps::deserialize(&headers)?, body)?;
        let timeout = std::time::Duration::from_millis(timeout_ms.into());
        let pending = outbound::start(&call(&mut caller)?.context, &target, request, timeout).map_err(|why| {
            tracing::debug!(plugin = %caller.data().plugin, "proxy_http_call: {why}");
            BAD_ARGUMENT
        })?;
        let host = caller.data_mut();
        let token = host.next_token;
        host.next_token = host.next_token.wrapping_add(1).max(1);
        host.calls.push((token, pending));
        write_u32(&mut caller, token_ptr, token)
    })
}

/// The request of an HTTP call from its header map: `:method`, `:path` and `:authority`
/// (required, as in Envoy) become the request line and Host.
fn call_request(pairs: &[(&str, &str)], body: Vec<u8>) -> Result<http::Request<bytes::Bytes>, Fault> {
    let pseudo = |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| *value);
    let (method, path, authority) = match (pseudo(":method"), pseudo(":path"), pseudo(":authority")) {
        (Some(method), Some(path), Some(authority)) => (method, path, authority),
        _ => return Err(Fault::Status(BAD_ARGUMENT)),
    };
    let mut request = http::Request::builder().method(method).uri(path).header(http::header::HOST, authority);
    for &(name, value) in pairs.iter().filter(|(name, _)| !name.starts_with(':')) {
        request = request.header(name, value);
    }
    request.body(body.into()).map_err(|_| Fault::Status(BAD_ARGUMENT))
}

/// Shared data: per plugin, for the life of the gateway process, with a version per key for
/// compare-and-swap.
static SHARED: LazyLock<Mutex<HashMap<Arc<str>, Shared>>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Shared {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
}

fn proxy_get_shared_data(
    mut caller: Caller<'_, Host>,
    key_ptr: u32,
    key_len: u32,
    data_ptr: u32,
    size_ptr: u32,
    cas_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let key = read(&mut caller, key_ptr, key_len)?;
        let found = {
            let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            shared.get(&caller.data().plugin).and_then(|s| s.entries.get(&key)).cloned()
        };
        let (value, cas) = found.ok_or(NOT_FOUND)?;
        give(&mut caller, &value, data_ptr, size_ptr)?;
        write_u32(&mut caller, cas_ptr, cas)
    })
}

fn proxy_set_shared_data(
    mut caller: Caller<'_, Host>,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
    cas: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let key = read(&mut caller, key_ptr, key_len)?;
        let value = read(&mut caller, value_ptr, value_len)?;
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let shared = shared.entry(caller.data().plugin.clone()).or_default();
        let (old_size, version) = match shared.entries.get(&key) {
            Some((_, current)) if cas != 0 && cas != *current => return Err(Fault::Status(CAS_MISMATCH)),
            Some((old, current)) => (key.len() + old.len(), current.wrapping_add(1).max(1)),
            None => (0, 1),
        };
        let bytes = shared.bytes - old_size + key.len() + value.len();
        if bytes > MAX_SHARED {
            return Err(Fault::Status(INTERNAL_FAILURE));
        }
        shared.bytes = bytes;
        shared.entries.insert(key, (value, version));
        Ok(())
    })
}

fn proxy_define_metric(
    mut caller: Caller<'_, Host>,
    kind: u32,
    ptr: u32,
    len: u32,
    id_ptr: u32,
) -> wasmtime::Result<Status> {
    run(|| {
        let name = read_text(&mut caller, ptr, len)?;
        let id = metrics::define(&caller.data().plugin, kind, &name).ok_or(BAD_ARGUMENT)?;
        write_u32(&mut caller, id_ptr, id)
    })
}

/// `fd_write`: stdout and stderr go to the log, line by line, with the plugin's name.
fn fd_write(mut caller: Caller<'_, Host>, fd: u32, iovs: u32, count: u32, written_ptr: u32) -> wasmtime::Result<u32> {
    if fd != STDOUT && fd != STDERR {
        return Ok(BADF);
    }
    let Ok(vectors) = read(&mut caller, iovs, count.saturating_mul(8)) else { return Ok(FAULT) };
    let mut written = 0u32;
    for vector in vectors.chunks_exact(8) {
        let ptr = u32::from_le_bytes(vector[..4].try_into().expect("four bytes"));
        let len = u32::from_le_bytes(vector[4..].try_into().expect("four bytes"));
        let Ok(bytes) = read(&mut caller, ptr, len) else { return Ok(FAULT) };
        caller.data_mut().wasi.output(fd, &bytes).map_err(|e| wasmtime::format_err!("{e:?}"))?;
        written = written.saturating_add(len);
    }
    Ok(if write_u32(&mut caller, written_ptr, written).is_ok() { 0 } else { FAULT })
}

fn clock_time_get(mut caller: Caller<'_, Host>, clock: u32, _precision: u64, ptr: u32) -> wasmtime::Result<u32> {
    let now = match clock {
        0 => unix_nanos(),
        1 => caller.data_mut().wasi.now()?,
        _ => return Ok(INVAL),
    };
    Ok(if write(&mut caller, ptr, &now.to_le_bytes()).is_ok() { 0 } else { FAULT })
}

fn random_get(mut caller: Caller<'_, Host>, ptr: u32, len: u32) -> wasmtime::Result<u32> {
    if len > MAX_RANDOM {
        wasmtime::bail!("asked for {len} random bytes; at most {MAX_RANDOM} at once");
    }
    let mut bytes = vec![0; len as usize];
    getrandom::fill(&mut bytes).map_err(|e| wasmtime::format_err!("no randomness: {e}"))?;
    Ok(if write(&mut caller, ptr, &bytes).is_ok() { 0 } else { FAULT })
}
