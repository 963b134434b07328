//! Filter chains: running a route's filters for one request, with instances reused per worker
//! thread or fresh per request, and every failure mapped to the attachment's policy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use sluice_config::{FailurePolicy, FilterSpec, Isolation};
use wasmtime::Store;
use wasmtime::component::Resource;

use crate::engine::{Plugin, START_DEADLINE, deadline_ticks};
use crate::host::sluice::filter::types::{Action, ImmediateResponse};
use crate::host::{Call, Filter, Head, RequestContext, State};

/// A live instance of a plugin.
pub(crate) struct Live {
    pub store: Store<State>,
    pub filter: Filter,
}

impl Live {
    /// A new instance; start-up code runs under `deadline`.
    pub async fn new(plugin: &Plugin, deadline: Duration) -> wasmtime::Result<Self> {
        let mut store = plugin.engine.store(plugin);
        store.set_epoch_deadline(deadline_ticks(deadline));
        let filter = plugin.pre.instantiate_async(&mut store).await?;
        Ok(Self { store, filter })
    }
}

/// Idle reusable instances of one plugin load on this thread.
struct Idle {
    plugin: Weak<Plugin>,
    instances: Vec<Live>,
}

/// Instances kept per plugin per thread. Calls on a worker thread take an instance out for
/// the call, so an instance serves one request at a time; more than one is only needed while
/// a call waits (a guest blocked in WASI).
const MAX_IDLE: usize = 4;

thread_local! {
    static IDLE: RefCell<HashMap<u64, Idle>> = RefCell::new(HashMap::new());
}

fn checkout(plugin: &Arc<Plugin>) -> Option<Live> {
    IDLE.with_borrow_mut(|idle| idle.get_mut(&plugin.id)?.instances.pop())
}

fn checkin(plugin: &Arc<Plugin>, live: Live) {
    IDLE.with_borrow_mut(|idle| {
        if !idle.contains_key(&plugin.id) {
            // A new plugin load: forget the instances of loads no snapshot uses any more.
            idle.retain(|_, entry| entry.plugin.strong_count() > 0);
        }
        let entry =
            idle.entry(plugin.id).or_insert_with(|| Idle { plugin: Arc::downgrade(plugin), instances: Vec::new() });
        if entry.instances.len() < MAX_IDLE {
            entry.instances.push(live);
        }
    });
}

/// Why a filter did not run to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The call ran past its deadline.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    Memory,
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trap,
    /// The plugin is missing, failed to load, or the configuration was rejected.
    Unavailable,
    /// The filter answered with an invalid status or header.
    InvalidResponse,
}

impl FailureKind {
    /// Classifies an error from a call into a guest.
    pub fn of(error: &wasmtime::Error) -> Self {
        if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            FailureKind::Timeout
        } else if format!("{error:?}").contains("forcing trap when growing memory") {
            FailureKind::Memory
        } else {
            FailureKind::Trap
        }
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Trap => "trap",
            FailureKind::Unavailable => "unavailable",
            FailureKind::InvalidResponse => "invalid_response",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Timeout => "exceeded its deadline",
            FailureKind::Memory => "exceeded its memory cap",
            FailureKind::Trap => "trapped",
            FailureKind::Unavailable => "is unavailable",
            FailureKind::InvalidResponse => "answered with an invalid response",
        })
    }
}

/// A filter that failed for one request.
#[derive(Debug, Clone)]
pub struct FilterFailure {
    pub plugin: Arc<str>,
    pub kind: FailureKind,
    pub detail: String,
}

impl FilterFailure {
    fn new(plugin: &Arc<str>, kind: FailureKind, detail: impl Into<String>) -> Self {
        Self { plugin: plugin.clone(), kind, detail: detail.into() }
    }

    fn of(plugin: &Arc<str>, error: &wasmtime::Error) -> Self {
        // The root cause alone: wasmtime's context adds a backtrace of guest frames.
        Self::new(plugin, FailureKind::of(error), error.root_cause().to_string())
    }
}

impl fmt::Display for FilterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter {} {}: {}", self.plugin, self.kind, self.detail)
    }
}

/// One filter attached to a route.
#[derive(Debug)]
pub struct Attachment {
    pub spec: FilterSpec,
    /// The loaded plugin, or why it cannot run (missing, broken module, rejected config).
    pub plugin: Result<Arc<Plugin>, String>,
    name: Arc<str>,
    config: Arc<str>,
    config_id: u64,
}

impl Attachment {
    pub fn new(spec: FilterSpec, plugin: Result<Arc<Plugin>, String>) -> Self {
        let mut hasher = DefaultHasher::new();
        spec.config.hash(&mut hasher);
        Self {
            name: spec.plugin.as_str().into(),
            config: spec.config.as_str().into(),
            config_id: hasher.finish(),
            spec,
            plugin,
        }
    }

    async fn invoke(
        &self,
        index: usize,
        exchange: &mut Exchange,
        head: Head,
    ) -> (Head, Result<Option<Action>, FilterFailure>) {
        let plugin = match &self.plugin {
            Ok(plugin) => plugin,
            Err(why) => return (head, Err(FilterFailure::new(&self.name, FailureKind::Unavailable, why.clone()))),
        };
        let fresh = self.spec.isolation == Isolation::Request;
        let live = match fresh {
            true => exchange.fresh[index].take(),
            false => checkout(plugin),
        };
        let mut live = match live {
            Some(live) => live,
            None => match Live::new(plugin, plugin.limits.deadline.max(START_DEADLINE)).await {
                Ok(live) => live,
                Err(e) => return (head, Err(FilterFailure::of(&self.name, &e))),
            },
        };
        let request_phase = matches!(head, Head::Request(_));
        let context = exchange.context.take().expect("the request context is back after every call");
        live.store.data_mut().call = Some(Call {
            context,
            head,
            config: self.config.clone(),
            config_id: self.config_id,
            state: exchange.states[index].take(),
            skip_response: false,
        });
        live.store.set_epoch_deadline(deadline_ticks(plugin.limits.deadline));
        let result = match request_phase {
            true => live.filter.call_on_request(&mut live.store, Resource::new_borrow(0)).await.map(Some),
            false => live.filter.call_on_response(&mut live.store, Resource::new_borrow(0)).await.map(|()| None),
        };
        let call = live.store.data_mut().call.take().expect("a call's inputs stay in the store");
        exchange.context = Some(call.context);
        exchange.states[index] = call.state;
        if request_phase {
            exchange.skip_response[index] = call.skip_response;
        }
        let result = match result {
            Ok(action) => {
                // An instance that failed is dropped: its memory may be inconsistent.
                match fresh {
                    true => exchange.fresh[index] = Some(live),
                    false => checkin(plugin, live),
                }
                Ok(action)
            }
            Err(e) => Err(FilterFailure::of(&self.name, &e)),
        };
        (call.head, result)
    }
}

/// The filters of a route, in request order.
#[derive(Debug, Default)]
pub struct Chain {
    pub filters: Box<[Attachment]>,
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            plugin: &'a str,
            hash: Option<&'a str>,
            failure: FailurePolicy,
            isolation: Isolation,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        let mut seq = serializer.serialize_seq(Some(self.filters.len()))?;
        for attachment in &self.filters {
            seq.serialize_element(&Entry {
                plugin: &attachment.spec.plugin,
                hash: attachment.plugin.as_ref().ok().map(|p| p.hash.as_str()),
                failure: attachment.spec.failure,
                isolation: attachment.spec.isolation,
                error: attachment.plugin.as_ref().err().map(String::as_str),
            })?;
        }
        seq.end()
    }
}

/// An answer a filter gives instead of the upstream's.
pub type Immediate = http::Response<Vec<u8>>;

fn immediate(response: ImmediateResponse) -> Result<Immediate, String> {
    let status = StatusCode::from_u16(response.status).map_err(|_| format!("status {}", response.status))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for (name, value) in &response.headers {
        let (name, value) = crate::host::parse_header(name, value)?;
        headers.append(name, value);
    }
    let mut answer = http::Response::new(response.body);
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

fn empty_request() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

fn empty_response() -> http::response::Parts {
    http::Response::new(()).into_parts().0
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the request phases in order. `Ok(Some(_))` is a filter's immediate answer;
    /// `Err` is a failure of a fail-closed filter (answer 500). Failures of fail-open filters
    /// are collected in [`Exchange::failures`].
    pub async fn on_request(
        &self,
        exchange: &mut Exchange,
        parts: &mut http::request::Parts,
    ) -> Result<Option<Immediate>, FilterFailure> {
        for (index, attachment) in self.filters.iter().enumerate() {
            exchange.ran = index + 1;
            let head = Head::Request(std::mem::replace(parts, empty_request()));
            let (head, result) = attachment.invoke(index, exchange, head).await;
            if let Head::Request(head) = head {
                *parts = head;
            }
            let result = result.and_then(|action| match action {
                Some(Action::Respond(response)) => immediate(response)
                    .map(Some)
                    .map_err(|why| FilterFailure::new(&attachment.name, FailureKind::InvalidResponse, why)),
                _ => Ok(None),
            });
            match result {
                Ok(None) => {}
                Ok(Some(answer)) => return Ok(Some(answer)),
                Err(failure) => exchange.failed(attachment, failure)?,
            }
        }
        Ok(None)
    }

    /// Runs the response phases of the filters whose request phase ran, in reverse order.
    pub async fn on_response(
        &self,
        exchange: &mut Exchange,
        parts: &mut http::response::Parts,
    ) -> Result<(), FilterFailure> {
        for index in (0..exchange.ran).rev() {
            if exchange.skip_response[index] {
                continue;
            }
            let attachment = &self.filters[index];
            let head = Head::Response(std::mem::replace(parts, empty_response()));
            let (head, result) = attachment.invoke(index, exchange, head).await;
            if let Head::Response(head) = head {
                *parts = head;
            }
            if let Err(failure) = result {
                exchange.failed(attachment, failure)?;
            }
        }
        Ok(())
    }
}

/// One request's passage through a chain: its context, the state filters keep between
/// phases, and fresh instances kept for the response phase.
pub struct Exchange {
    context: Option<Box<RequestContext>>,
    states: Vec<Option<Vec<u8>>>,
    /// Filters whose request phase asked not to be called for the response.
    skip_response: Vec<bool>,
    fresh: Vec<Option<Live>>,
    ran: usize,
    /// Failures of fail-open filters, which were skipped.
    pub failures: Vec<FilterFailure>,
}

impl Exchange {
    pub fn new(context: RequestContext, chain: &Chain) -> Self {
        let filters = chain.filters.len();
        Self {
            context: Some(Box::new(context)),
            states: vec![None; filters],
            skip_response: vec![false; filters],
            fresh: (0..filters).map(|_| None).collect(),
            ran: 0,
            failures: Vec::new(),
        }
    }

    fn context(&mut self) -> &mut RequestContext {
        self.context.as_mut().expect("the request context is back after every call")
    }

    /// The endpoint (index into the backend's endpoints) a filter chose.
    pub fn chosen_endpoint(&mut self) -> Option<usize> {
        self.context().chosen
    }

    /// Tells the response phases which endpoint served the request.
    pub fn set_served(&mut self, endpoint: Option<SocketAddr>) {
        self.context().served = endpoint;
    }

    fn failed(&mut self, attachment: &Attachment, failure: FilterFailure) -> Result<(), FilterFailure> {
        match attachment.spec.failure {
            FailurePolicy::Closed => Err(failure),
            FailurePolicy::Open => {
                self.failures.push(failure);
                Ok(())
            }
        }
    }
}
