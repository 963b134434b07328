//! Sending a request to its route's backend: picking the endpoint, the connection that carries
//! the request, further attempts on other endpoints, timeouts and the body limit, and what comes
//! back.
//!
//! Plain HTTP/1.1 to pods, the bulk of the traffic, goes over connections of our own ([`h1`]),
//! pooled per data-plane thread. HTTPS, gRPC and ExternalName backends go through hyper-util's
//! pooled client, one per thread and backend protocol.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_config::{BackendProtocol, Target};
use sluice_filter::Route;

use crate::backend_tls::TlsClients;
use crate::balance::{self, ActiveGuard};
use crate::body::{RequestBody, ResponseBody, Upstream};
use crate::connect::{self, Connector};
use crate::error::ProxyError;
use crate::headers::{keep_upgrade, strip_hop_by_hop};
use crate::retry::{self, Attempts, Outcome};
use crate::tunnel::{self, Backend};
use crate::{danger, h1};

/// A request body on its way upstream, cut off at the route's size limit.
pub type UpstreamBody = Either<Limited<RequestBody>, Empty<Bytes>>;

/// The endpoint that answered, on responses from pods.
#[derive(Debug, Clone, Copy)]
pub struct ServedBy(pub SocketAddr);

/// On a response that switched protocols: its sender goes when the tunnel it opened closes.
#[derive(Clone)]
pub struct TunnelOpen(pub tokio::sync::watch::Receiver<()>);

/// Timeouts of upstream exchanges.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a TCP connection to an endpoint (502 after).
    pub connect: Duration,
    /// For the response headers (504 after).
    pub response: Duration,
    /// How long an idle connection is kept.
    pub idle: Duration,
}

/// Sends requests to backends; one per data-plane thread.
#[derive(Debug)]
pub struct Upstreams {
    timeouts: Timeouts,
    http: Client<Connector, UpstreamBody>,
    https: Client<HttpsConnector<Connector>, UpstreamBody>,
    grpc: Client<Connector, UpstreamBody>,
    grpcs: Client<HttpsConnector<Connector>, UpstreamBody>,
    /// For routes with TLS settings of their own.
    tls: TlsClients,
}

/// What [`Upstreams::forward`] needs of the request besides its head.
pub struct Outbound {
    /// The body, already limited to the route's maximum.
    pub body: Limited<RequestBody>,
    /// The client side of an HTTP/1.1 Upgrade, taken over once the backend answers 101.
    pub upgrade: Option<OnUpgrade>,
    /// The endpoint a filter chose, by index.
    pub chosen: Option<usize>,
}

impl Upstreams {
    pub fn new(timeouts: Timeouts) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let tcp = Connector::new(tcp, timeouts.connect);
        let tls = |h2: bool| {
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(danger::client_config_accepting_any_certificate())
                .https_or_http();
            if h2 {
                builder.enable_http2().wrap_connector(tcp.clone())
            } else {
                builder.enable_http1().wrap_connector(tcp.clone())
            }
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(timeouts.idle).timer(TokioTimer::new());
        let (http, https) = (builder.build(tcp.clone()), builder.build(tls(false)));
        builder.http2_only(true);
        let grpcs = builder.build(tls(true));
        let own_tls = TlsClients::new(tcp.clone(), timeouts.idle);
        Self { timeouts, http, https, grpc: builder.build(tcp), grpcs, tls: own_tls }
    }

    /// Sends the request to the route's backend and returns the response head with its body
    /// streaming; the request head is already what the upstream should see.
    pub async fn forward(
        &self,
        route: &Route,
        parts: http::request::Parts,
        outbound: Outbound,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let protocol = route.ingress.backend_protocol;
        match &*route.backend.target {
            Target::External { host, port } => {
                let authority = Authority::try_from(format!("{host}:{port}"))
                    .map_err(|_| ProxyError::BadRequest("ExternalName is not a valid host".into()))?;
                let request = client_request(parts, protocol, authority, Either::Left(outbound.body));
                let mut upgrade = outbound.upgrade;
                Box::pin(self.through_client(route, request, None, &mut upgrade)).await
            }
            Target::Pods { .. } => self.to_pods(route, parts, outbound).await,
        }
    }

    /// To a pod, and on to others as the route's `proxy-next-upstream` allows. Only requests
    /// without a body get more than one attempt: the body streams upstream and is not kept.
    async fn to_pods(
        &self,
        route: &Route,
        parts: http::request::Parts,
        outbound: Outbound,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (backend, policy) = (&route.backend, &route.ingress.upstream.next_upstream);
        let started = Instant::now();
        let mut attempts = Attempts {
            made: 0,
            endpoints: backend.endpoints.len(),
            elapsed: Duration::ZERO,
            body: !outbound.body.is_end_stream(),
        };
        let most = retry::max_attempts(policy, &parts.method, &attempts);
        let (mut upgrade, mut tried) = (outbound.upgrade, Vec::new());
        let (mut head, mut body) = (Some(parts), Some(outbound.body));
        loop {
            let picked = match (outbound.chosen, tried.is_empty()) {
                (Some(index), true) => balance::pin(backend, index),
                _ => balance::pick(backend, &tried),
            };
            let (index, active) = picked.ok_or(ProxyError::NoEndpoint)?;
            let endpoint = backend.endpoints[index].addr;
            attempts.made += 1;
            let last = attempts.made >= most;
            let body = match last {
                true => Either::Left(body.take().expect("only the last attempt sends the body")),
                false => Either::Right(Empty::new()),
            };
            let parts = head.as_ref().expect("the head is kept until the last attempt");
            let result = if route.ingress.backend_protocol == BackendProtocol::Http {
                self.through_h1(route, endpoint, parts, body, active, &mut upgrade).await
            } else {
                let parts = if last { head.take().expect("kept until now") } else { clone_head(parts) };
                let authority =
                    Authority::try_from(endpoint.to_string()).expect("a socket address is a valid authority");
                let request = client_request(parts, route.ingress.backend_protocol, authority, body);
                Box::pin(self.through_client(route, request, Some(active), &mut upgrade)).await
            };
            attempts.elapsed = started.elapsed();
            if !last
                && let Some(outcome) = outcome(&result)
                && let Some(parts) = &head
                && retry::try_again(policy, &parts.method, outcome, &attempts)
            {
                tracing::debug!(%endpoint, ?outcome, "trying another endpoint");
                tried.push(index);
                continue;
            }
            return result.map(|mut response| {
                response.extensions_mut().insert(ServedBy(endpoint));
                response
            });
        }
    }

    /// Over one of this thread's own HTTP/1.1 connections to `endpoint`.
    async fn through_h1(
        &self,
        route: &Route,
        endpoint: SocketAddr,
        parts: &http::request::Parts,
        body: UpstreamBody,
        active: ActiveGuard,
        downstream: &mut Option<OnUpgrade>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let policy = &route.ingress.upstream;
        let timeouts = h1::Timeouts {
            connect: policy.connect_timeout.unwrap_or(self.timeouts.connect),
            read: policy.read_timeout.unwrap_or(self.timeouts.response),
            idle: self.timeouts.idle,
        };
        let mut response = h1::send(endpoint, parts, body, timeouts).await.map_err(from_h1)?;
        let backend = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
            .then(|| response.body_mut().take_connection())
            .flatten()
            .map(Backend::H1);
        Ok(switch(response.map(Either::Left), backend, downstream, Some(active)))
    }

    /// Over hyper-util's pooled clients (HTTPS, gRPC, ExternalName). Callers box its future: it
    /// is several times larger than the plain-HTTP path's, and every request's future would
    /// otherwise carry (and move) its size.
    async fn through_client(
        &self,
        route: &Route,
        request: Request<UpstreamBody>,
        active: Option<ActiveGuard>,
        downstream: &mut Option<OnUpgrade>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let sent = match (route.ingress.backend_protocol, &route.backend_tls) {
            (protocol @ (BackendProtocol::Https | BackendProtocol::Grpcs), Some(tls)) => {
                self.tls.client(tls, protocol == BackendProtocol::Grpcs)?.request(request)
            }
            (BackendProtocol::Http, _) => self.http.request(request),
            (BackendProtocol::Https, _) => self.https.request(request),
            (BackendProtocol::Grpc, _) => self.grpc.request(request),
            (BackendProtocol::Grpcs, _) => self.grpcs.request(request),
        };
        let policy = &route.ingress.upstream;
        let read = policy.read_timeout.unwrap_or(self.timeouts.response);
        let mut response =
            connect::within(policy.connect_timeout.unwrap_or(self.timeouts.connect), head(sent, read)).await?;
        let backend = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
            .then(|| Backend::Hyper(hyper::upgrade::on(&mut response)));
        Ok(switch(response.map(Either::Right), backend, downstream, active))
    }
}

/// Waits for a response head within `timeout`; a body over the route's limit shows up here as
/// the upstream write failing, a connect timeout as a timeout (504, as nginx answers).
async fn head(sent: ResponseFuture, timeout: Duration) -> Result<Response<Incoming>, ProxyError> {
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) if caused_by::<LengthLimitError>(&e) => Err(ProxyError::PayloadTooLarge),
        Ok(Err(e)) if e.is_connect() && timed_out(&e) => Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamConnect(e.into())),
        Ok(Err(e)) if caused_by_parse(&e) => Err(ProxyError::UpstreamInvalid(e.into())),
        Ok(Err(e)) => Err(ProxyError::Upstream(e.into())),
        Ok(Ok(response)) => Ok(response),
    }
}

/// The gateway's answer to a failed HTTP/1.1 exchange.
fn from_h1(error: h1::Error) -> ProxyError {
    match error {
        h1::Error::ConnectTimeout | h1::Error::ReadTimeout => ProxyError::UpstreamTimeout,
        h1::Error::Connect(_) => ProxyError::UpstreamConnect(error.into()),
        h1::Error::Invalid(_) => ProxyError::UpstreamInvalid(error.into()),
        h1::Error::RequestBody(e) if caused_by::<LengthLimitError>(&*e) => ProxyError::PayloadTooLarge,
        h1::Error::RequestBody(_) | h1::Error::Io(_) | h1::Error::Closed => ProxyError::Upstream(error.into()),
    }
}

/// How an attempt ended, for deciding on another; `None` when another cannot help (the
/// request body was too large).
fn outcome(result: &Result<Response<ResponseBody>, ProxyError>) -> Option<Outcome> {
    match result {
        Ok(response) => Some(Outcome::Status(response.status().as_u16())),
        Err(ProxyError::UpstreamTimeout) => Some(Outcome::Timeout),
        Err(ProxyError::UpstreamInvalid(_)) => Some(Outcome::InvalidHeader),
        Err(ProxyError::UpstreamConnect(_) | ProxyError::Upstream(_)) => Some(Outcome::Error),
        Err(_) => None,
    }
}

fn caused_by_parse(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .any(|e| e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse))
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let io = std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<std::io::Error>());
    io.is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}

/// The response as the client gets it: if it switches protocols and the client asked to, the
/// two connections are joined (the tunnel counts as a request on its endpoint while open);
/// hop-by-hop headers are removed except those an upgrade needs. A 101 the client did not ask
/// for is passed on, and the backend's connection closed.
fn switch(
    response: Response<Either<h1::Body, Incoming>>,
    backend: Option<Backend>,
    downstream: &mut Option<OnUpgrade>,
    mut active: Option<ActiveGuard>,
) -> Response<ResponseBody> {
    let protocol = backend.is_some().then(|| response.headers().get(header::UPGRADE).cloned()).flatten();
    // The client's side of an upgrade is kept for a later attempt unless this one switches.
    let mut open = None;
    if let (Some(backend), Some(downstream), Some(_)) = (backend, downstream.take_if(|_| protocol.is_some()), &protocol)
    {
        let (tunnel, closed) = tokio::sync::watch::channel(());
        let active = active.take();
        tokio::spawn(async move {
            tunnel::join(downstream, backend, active).await;
            drop(tunnel);
        });
        open = Some(TunnelOpen(closed));
    }
    let mut response = response.map(|body| Either::Left(Upstream::new(body, active)));
    if let Some(open) = open {
        response.extensions_mut().insert(open);
    }
    strip_hop_by_hop(response.headers_mut());
    if let Some(protocol) = protocol {
        keep_upgrade(response.headers_mut(), protocol);
    }
    response
}

/// A copy of a request head for a second attempt (extensions are not needed upstream).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// The absolute-form request hyper-util's client routes by.
fn client_request(
    parts: http::request::Parts,
    protocol: BackendProtocol,
    authority: Authority,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let (scheme, version) = match protocol {
        BackendProtocol::Http => (Scheme::HTTP, Version::HTTP_11),
        BackendProtocol::Https => (Scheme::HTTPS, Version::HTTP_11),
        BackendProtocol::Grpc => (Scheme::HTTP, Version::HTTP_2),
        BackendProtocol::Grpcs => (Scheme::HTTPS, Version::HTTP_2),
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    *request.version_mut() = version;
    *request.headers_mut() = parts.headers;
    request
}

/// Whether `error` or any error beneath it is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

/// Whether a Content-Length declares more than `max` bytes.
pub fn declared_too_large(headers: &http::HeaderMap, max: Option<u64>) -> bool {
    let declared = || headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok();
    max.is_some_and(|max| declared().is_some_and(|length| length > max))
}
