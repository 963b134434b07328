//! Filter chains: running a route's filters for one request, with instances reused per worker
//! thread or fresh per request, and every failure mapped to the attachment's policy.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use sluice_config::{FailurePolicy, FilterSpec, Isolation};

use crate::engine::{Kind, Plugin};
use crate::failure::{FailureKind, FilterFailure};
use crate::host::{Action, Call, Head, ImmediateResponse, RequestContext};
use crate::instance::{self, Live};
use crate::payload::Payload;
use crate::proxy_wasm;
use crate::shared::Hold;

/// One filter attached to a route.
#[derive(Debug)]
pub struct Attachment {
    pub spec: FilterSpec,
    /// The loaded plugin, or why it cannot run (missing, broken module, rejected config).
    pub plugin: Result<Arc<Plugin>, String>,
    name: Arc<str>,
    config: Arc<str>,
    config_id: u64,
    /// Held to keep a proxy-wasm filter's ticks of this configuration running.
    _ticks: Option<Arc<proxy_wasm::Ticks>>,
}

impl Attachment {
    /// The attachment of `plugin` as `spec` says. A proxy-wasm filter's ticks for this
    /// configuration start (on the current tokio runtime) unless another attachment of it runs
    /// them already, and go on until no attachment of it is left.
    pub fn new(spec: FilterSpec, plugin: Result<Arc<Plugin>, String>) -> Self {
        let mut hasher = DefaultHasher::new();
        spec.config.hash(&mut hasher);
        let (config, config_id): (Arc<str>, _) = (spec.config.as_str().into(), hasher.finish());
        let ticks = match plugin.as_ref().map(|plugin| (plugin, &plugin.kind)) {
            Ok((plugin, Kind::ProxyWasm(code))) => code.ticks(plugin, &config, config_id),
            _ => None,
        };
        Self { name: spec.plugin.as_str().into(), config, config_id, _ticks: ticks, spec, plugin }
    }

    /// Whether the filter may read or replace bodies (`sluice:filter/body`).
    fn reads_bodies(&self) -> bool {
        self.plugin.as_ref().is_ok_and(|plugin| matches!(&plugin.kind, Kind::Component(code) if code.reads_bodies))
    }

    /// Whether the filter has the request phase (or the response phase); one that cannot run
    /// is called anyway, to fail by its policy.
    fn has_phase(&self, request: bool) -> bool {
        self.plugin.as_ref().map_or(true, |plugin| match request {
            true => plugin.phases.request,
            false => plugin.phases.response,
        })
    }

    /// The answer a filter's action gives, if any.
    fn answer(&self, action: Option<Action>) -> Result<Option<Immediate>, FilterFailure> {
        match action {
            Some(Action::Respond(response)) => immediate(response)
                .map(Some)
                .map_err(|why| FilterFailure::new(&self.name, FailureKind::InvalidResponse, why)),
            _ => Ok(None),
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
        if let Kind::ProxyWasm(code) = &plugin.kind {
            if exchange.streams.len() <= index {
                exchange.streams.resize_with(index + 1, || None);
            }
            let context = exchange.context.take().expect("the request context is back after every call");
            let stream = &mut exchange.streams[index];
            // Boxed, as the start of an instance below: the futures of these paths would
            // otherwise be part of every filtered request's future.
            let (context, head, result) =
                Box::pin(code.on_head(plugin, &self.config, self.config_id, fresh, stream, context, head)).await;
            exchange.context = Some(context);
            return (head, result);
        }
        let live = match fresh {
            true => exchange.fresh[index].take(),
            false => instance::checkout(plugin),
        };
        let mut live = match live {
            Some(live) => live,
            None => match Box::pin(instance::start(plugin)).await {
                Ok(live) => live,
                Err(failure) => return (head, Err(failure)),
            },
        };
        let request_phase = matches!(head, Head::Request(_));
        let context = exchange.context.take().expect("the request context is back after every call");
        live.state().call = Some(Call {
            context,
            head,
            config: self.config.clone(),
            config_id: self.config_id,
            state: exchange.states[index].take(),
            skip_response: false,
            holds: Vec::new(),
            body: exchange.body.take(),
        });
        let result = match request_phase {
            true => live.on_request(plugin).await.map(Some),
            false => live.on_response(plugin).await.map(|()| None),
        };
        let mut call = live.state().call.take().expect("a call's inputs stay in the store");
        exchange.holds.0.append(&mut call.holds);
        exchange.body = call.body;
        exchange.context = Some(call.context);
        exchange.states[index] = call.state;
        if request_phase {
            exchange.skip_response[index] = call.skip_response;
        }
        // An instance that failed is dropped: its memory may be inconsistent.
        if result.is_ok() {
            match fresh {
                true => exchange.fresh[index] = Some(live),
                false => instance::checkin(plugin, live),
            }
        }
        (call.head, result)
    }
}

/// The filters of a route, in request order.
#[derive(Debug, Default)]
pub struct Chain {
    pub filters: Box<[Attachment]>,
    /// The namespace of the Ingress whose filters these are (also on its canary's routes):
    /// where their shared keys and the Services they call are.
    pub namespace: Arc<str>,
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

    /// Whether a filter of the chain may read or replace bodies: the request's body (and the
    /// response's) is then lent to the [`Exchange`] for the phases ([`Exchange::lend_body`]).
    pub fn reads_bodies(&self) -> bool {
        self.filters.iter().any(Attachment::reads_bodies)
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
            if !attachment.has_phase(true) {
                continue;
            }
            let head = Head::Request(std::mem::replace(parts, empty_request()));
            let (head, result) = attachment.invoke(index, exchange, head).await;
            if let Head::Request(head) = head {
                *parts = head;
            }
            match result.and_then(|action| attachment.answer(action)) {
                Ok(None) => {}
                Ok(Some(answer)) => return Ok(Some(answer)),
                Err(failure) => exchange.failed(attachment, failure)?,
            }
        }
        Ok(None)
    }

    /// Runs the response phases of the filters whose request phase ran, in reverse order.
    /// `Ok(Some(_))` is a filter's answer in place of the upstream's (proxy-wasm filters may
    /// give one in the response phase); the response phases after it are skipped.
    pub async fn on_response(
        &self,
        exchange: &mut Exchange,
        parts: &mut http::response::Parts,
    ) -> Result<Option<Immediate>, FilterFailure> {
        for index in (0..exchange.ran).rev() {
            let attachment = &self.filters[index];
            if exchange.skip_response[index] || !attachment.has_phase(false) {
                continue;
            }
            let head = Head::Response(std::mem::replace(parts, empty_response()));
            let (head, result) = attachment.invoke(index, exchange, head).await;
            if let Head::Response(head) = head {
                *parts = head;
            }
            match result.and_then(|action| attachment.answer(action)) {
                Ok(None) => {}
                Ok(Some(answer)) => return Ok(Some(answer)),
                Err(failure) => exchange.failed(attachment, failure)?,
            }
        }
        Ok(None)
    }
}

/// What the body phases made of a chunk of a request or response body.
#[derive(Debug)]
pub enum BodyStep {
    /// The bytes that go on now; empty while a filter holds the body back (buffers it).
    Pass(Vec<u8>),
    /// A filter answered instead of the upstream (in the request body phase).
    Respond(Immediate),
}

/// Why the body phases stopped a body.
#[derive(Debug)]
pub enum BodyError {
    /// A filter buffered more of the body than the cap allows.
    TooLarge,
    /// A fail-closed filter failed.
    Failed(FilterFailure),
}

impl Chain {
    /// Whether a filter the request went through has a body phase for the request (or the
    /// response): proxy-wasm filters exporting `proxy_on_request_body` (`_response_body`).
    /// Without one the body streams through untouched.
    pub fn has_body_phase(&self, exchange: &Exchange, request: bool) -> bool {
        exchange.streams.iter().flatten().any(|stream| stream.has_body(request))
    }

    /// Runs the body phases on the next `chunk` of the request body (in order) or of the
    /// response body (in reverse order). A filter that pauses keeps what it was given, up to
    /// `cap` bytes, and the filters after it get nothing until it lets go; at the end of the
    /// stream every filter lets go. Failures of fail-open filters skip the filter (and are
    /// collected in [`Exchange::failures`]).
    pub fn on_body(
        &self,
        exchange: &mut Exchange,
        request: bool,
        chunk: Vec<u8>,
        end_of_stream: bool,
        cap: usize,
    ) -> Result<BodyStep, BodyError> {
        let mut bytes = chunk;
        let order: Box<dyn Iterator<Item = usize>> = match request {
            true => Box::new(0..exchange.streams.len()),
            false => Box::new((0..exchange.streams.len()).rev()),
        };
        for index in order {
            let Some(stream) = exchange.streams[index].as_mut().filter(|stream| stream.has_body(request)) else {
                continue;
            };
            let context = exchange.context.take().expect("the request context is back after every call");
            let (context, out) = stream.on_body(request, &bytes, end_of_stream, cap, context);
            exchange.context = Some(context);
            let attachment = &self.filters[index];
            match out {
                Ok(proxy_wasm::BodyOut::Pass(passed)) => bytes = passed,
                Ok(proxy_wasm::BodyOut::Held) => return Ok(BodyStep::Pass(Vec::new())),
                Ok(proxy_wasm::BodyOut::Respond(response)) => match immediate(response) {
                    Ok(answer) => return Ok(BodyStep::Respond(answer)),
                    Err(why) => {
                        let failure = FilterFailure::new(&attachment.name, FailureKind::InvalidResponse, why);
                        exchange.failed(attachment, failure).map_err(BodyError::Failed)?;
                    }
                },
                Err(proxy_wasm::BodyFault::TooLarge) => return Err(BodyError::TooLarge),
                Err(proxy_wasm::BodyFault::Failed(failure, left)) => {
                    // The instance is dropped; the body goes on past a fail-open filter.
                    exchange.streams[index] = None;
                    exchange.failed(attachment, failure).map_err(BodyError::Failed)?;
                    bytes = left;
                }
            }
        }
        Ok(BodyStep::Pass(bytes))
    }
}

/// Places filters hold (`limits.hold`) until a request ends: given back when dropped.
#[derive(Debug, Default)]
pub struct Holds(Vec<Hold>);

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    /// The requests' contexts in proxy-wasm filters, by filter (empty without such filters).
    streams: Vec<Option<proxy_wasm::Stream>>,
    ran: usize,
    /// Places filters hold until the request ends.
    holds: Holds,
    /// The body lent to the phases running now.
    body: Option<Payload>,
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
            streams: Vec::new(),
            ran: 0,
            holds: Holds::default(),
            body: None,
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

    /// The places filters hold until the request ends, to keep with a response body that
    /// streams on after the exchange is over.
    pub fn take_holds(&mut self) -> Holds {
        std::mem::take(&mut self.holds)
    }

    /// Lends the request's body to the request phases (or the response's to the response
    /// phases), for filters to read and replace.
    pub fn lend_body(&mut self, body: Payload) {
        self.body = Some(body);
    }

    /// The lent body, as the phases left it.
    pub fn take_body(&mut self) -> Option<Payload> {
        self.body.take()
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

impl Drop for Exchange {
    /// Ends the request in the proxy-wasm filters it went through (their log phase).
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            proxy_wasm::finish(&mut self.streams, context);
        }
    }
}
