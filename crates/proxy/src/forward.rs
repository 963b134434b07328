//! The reverse proxy: route, balance, forward, stream back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use sluice_config::{BackendProtocol, PathMatch, Target};
use sluice_filter::{Exchange, RequestContext, Route, Snapshot};
use sluice_route::normalize_path;

use crate::body::{ResponseBody, Upstream, full};
use crate::error::ProxyError;
use crate::metrics::{Metrics, UpstreamError};
use crate::server::{Conn, Handler};
use crate::{balance, danger};

/// Timeouts and limits of the data path.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How long to wait for a TCP connection to an endpoint (502 after).
    pub connect_timeout: Duration,
    /// How long to wait for an upstream's response headers (504 after).
    pub response_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout: Duration,
    /// The port HTTP requests are redirected to for HTTPS (443 is left out of the URL).
    pub https_redirect_port: u16,
    /// `Strict-Transport-Security` for HTTPS responses of hosts with TLS; `None` sends none.
    pub hsts: Option<HeaderValue>,
    /// Log every request as a `sluice::access` event.
    pub access_log: bool,
    /// Peers whose X-Forwarded-* headers are believed (load balancers in front of Sluice).
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            https_redirect_port: 443,
            hsts: Some(HeaderValue::from_static("max-age=31536000; includeSubDomains")),
            access_log: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A request body on its way upstream, cut off at the route's size limit.
type UpstreamBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// A request matched to its route.
struct Routed {
    route: Arc<Route>,
    /// The host it was routed by.
    host: String,
    /// Whether the response gets `Strict-Transport-Security`: HTTPS to a host with TLS.
    hsts: bool,
    /// What the route's filters may read; `None` when it has none.
    filters: Option<RequestContext>,
}

/// Forwards requests according to the published snapshot.
#[derive(Debug)]
pub struct Proxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
    upstreams: Upstreams,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
}

/// One pooled client per backend protocol.
#[derive(Debug)]
struct Upstreams {
    http: Client<HttpConnector, UpstreamBody>,
    https: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    grpc: Client<HttpConnector, UpstreamBody>,
    grpcs: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
}

impl Upstreams {
    fn new(config: &ProxyConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.enforce_http(false);
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
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(config.idle_timeout).timer(TokioTimer::new());
        let (http, https) = (builder.build(tcp.clone()), builder.build(tls(false)));
        builder.http2_only(true);
        Self { http, https, grpc: builder.build(tcp.clone()), grpcs: builder.build(tls(true)) }
    }

    fn request(&self, protocol: BackendProtocol, request: Request<UpstreamBody>) -> ResponseFuture {
        match protocol {
            BackendProtocol::Http => self.http.request(request),
            BackendProtocol::Https => self.https.request(request),
            BackendProtocol::Grpc => self.grpc.request(request),
            BackendProtocol::Grpcs => self.grpcs.request(request),
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1); never
/// forwarded, in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Proxy {
    /// A proxy serving whatever `snapshot` holds at the time of each request.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, config: ProxyConfig, metrics: Arc<Metrics>) -> Self {
        Self { snapshot, upstreams: Upstreams::new(&config), config, metrics }
    }

    /// The route for a request, and the host it was routed by; or why it goes no further:
    /// a redirect to HTTPS, or a TLS connection made for another host's certificate.
    fn route(&self, parts: &http::request::Parts, conn: &Conn) -> Result<Routed, ProxyError> {
        let host = request_host(&parts.uri, &parts.headers, parts.version)?;
        let path = normalize_path(parts.uri.path()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        // One load per request: a reload published meanwhile applies to the next request.
        let snapshot = self.snapshot.load();
        let route = snapshot.table.route(&host, &path).ok_or(ProxyError::NoRoute)?.clone();
        let tls_host = snapshot.tls.get(&host);
        match &conn.tls {
            None if route.ingress.force_ssl_redirect || (route.ingress.ssl_redirect && tls_host.is_some()) => {
                let preserve = route.ingress.preserve_trailing_slash;
                return Err(ProxyError::RedirectToHttps(self.https_location(&host, &parts.uri, preserve)?));
            }
            None => {}
            Some(tls) => {
                if let (Some(name), Some(own)) = (&tls.server_name, tls_host.and_then(|h| h.certificate.as_ref())) {
                    let negotiated = snapshot.tls.get(name).and_then(|h| h.certificate.as_ref());
                    if !negotiated.is_some_and(|negotiated| Arc::ptr_eq(negotiated, own)) {
                        return Err(ProxyError::Misdirected);
                    }
                }
            }
        }
        let filters = (!route.filters.is_empty()).then(|| RequestContext {
            client: conn.remote,
            scheme: if conn.tls.is_some() { "https" } else { "http" },
            host: Authority::try_from(host.as_str())
                .map_or_else(|_| host.to_ascii_lowercase(), |a| a.host().trim_end_matches('.').to_ascii_lowercase()),
            route: route.name.clone(),
            regex: match &route.path {
                Some(PathMatch::Regex(pattern)) => snapshot.regex(pattern).cloned(),
                _ => None,
            },
            matched_path: path.into_owned(),
            backend: route.backend.clone(),
            chosen: None,
            served: None,
        });
        let hsts = conn.tls.is_some() && tls_host.is_some();
        Ok(Routed { route, host, hsts, filters })
    }

    /// Runs the route's filters around forwarding: request phases, then the upstream unless a
    /// filter answered, then response phases.
    async fn filter_and_forward(
        &self,
        routed: Routed,
        mut parts: http::request::Parts,
        body: Incoming,
        conn: &Conn,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let Routed { route, host, filters, .. } = routed;
        let upgrade = self.upstream_head(&route, &host, &mut parts, conn)?;
        let Some(context) = filters else { return self.forward(&route, parts, body, upgrade, None).await };
        let chain = &route.filters;
        let mut exchange = Exchange::new(context, chain);
        let answer = chain.on_request(&mut exchange, &mut parts).await;
        self.skipped_filters(&mut exchange);
        let response = match answer.map_err(ProxyError::Filter)? {
            Some(answer) => answer.map(full),
            None => {
                let chosen = exchange.chosen_endpoint();
                let response = self.forward(&route, parts, body, upgrade, chosen).await?;
                let served = response.extensions().get::<UpstreamAddress>().and_then(|a| a.0.as_str().parse().ok());
                exchange.set_served(served);
                response
            }
        };
        let (mut head, body) = response.into_parts();
        let result = chain.on_response(&mut exchange, &mut head).await;
        self.skipped_filters(&mut exchange);
        result.map_err(ProxyError::Filter)?;
        Ok(Response::from_parts(head, body))
    }

    /// Logs and counts the fail-open filters that failed and were skipped.
    fn skipped_filters(&self, exchange: &mut Exchange) {
        for failure in exchange.failures.drain(..) {
            tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), "{failure}; skipped (failure: open)");
            self.metrics.filter_failure(&failure, false);
        }
    }

    /// `https://HOST[:PORT]/PATH?QUERY` for a request that arrived over plain HTTP. Like
    /// ingress-nginx, one trailing slash of the request URI is dropped (`/` becomes nothing)
    /// unless `preserve` (`preserve-trailing-slash`).
    fn https_location(&self, host: &str, uri: &Uri, preserve: bool) -> Result<HeaderValue, ProxyError> {
        let name = Authority::try_from(host).map_err(|_| ProxyError::BadRequest("invalid host".into()))?;
        let port = match self.config.https_redirect_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let target = if preserve { target } else { target.strip_suffix('/').unwrap_or(target) };
        // Lowercase, as nginx's `$host` is.
        HeaderValue::try_from(format!("https://{}{port}{target}", name.host().to_ascii_lowercase()))
            .map_err(|_| ProxyError::BadRequest("invalid redirect target".into()))
    }

    /// Makes the request head what the upstream should see, before the filters run (so that
    /// they see it too, and may change it): hop-by-hop headers removed, the Host it was routed
    /// by, X-Forwarded-*. Returns the protocol of an HTTP/1.1 Upgrade (WebSocket), which keeps
    /// its Upgrade header end to end.
    fn upstream_head(
        &self,
        route: &Route,
        host: &str,
        parts: &mut http::request::Parts,
        conn: &Conn,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        let upgrade = upgrade_protocol(&parts.headers, parts.version);
        // gRPC needs `te: trailers` end to end; it is the one TE value HTTP/2 allows.
        let h2 = matches!(route.ingress.backend_protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs);
        let te_trailers =
            h2 && parts.headers.get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        strip_hop_by_hop(&mut parts.headers);
        if te_trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = &upgrade {
            keep_upgrade(&mut parts.headers, protocol.clone());
        }
        // The backend must see the host the request was routed by: HTTP/2 and absolute-form
        // requests carry it in the URI, and there it overrides any Host header (RFC 9112 3.2.2).
        // X-Forwarded-Host keeps it when a filter changes Host (`upstream-vhost`).
        if parts.uri.authority().is_some() || !parts.headers.contains_key(header::HOST) {
            let host = HeaderValue::from_str(host).map_err(|_| ProxyError::BadRequest("invalid authority".into()))?;
            parts.headers.insert(header::HOST, host);
        }
        set_forwarding_headers(&mut parts.headers, conn, &self.config.trusted_proxies);
        Ok(upgrade)
    }

    async fn forward(
        &self,
        route: &Route,
        mut parts: http::request::Parts,
        body: Incoming,
        upgrade: Option<HeaderValue>,
        chosen: Option<usize>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // An upgraded connection is taken over once the backend answers 101.
        let mut downstream = upgrade.and_then(|_| parts.extensions.remove::<OnUpgrade>());
        let protocol = route.ingress.backend_protocol;
        // Declared too large: refused before a backend is bothered. Streamed bodies are cut off
        // at the limit as they flow (see `send`).
        let max = route.ingress.max_body_size;
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let (Some(max), Some(length)) = (max, declared)
            && length > max
        {
            return Err(ProxyError::PayloadTooLarge);
        }
        let body = Limited::new(body, max.map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX)));
        let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));

        let backend = &route.backend;
        if let Target::External { host, port } = &*backend.target {
            let authority = Authority::try_from(format!("{host}:{port}"))
                .map_err(|_| ProxyError::BadRequest("ExternalName is not a valid host".into()))?;
            let headers = std::mem::take(&mut parts.headers);
            let request = upstream_request(&parts, protocol, authority, path_and_query, headers, Either::Left(body));
            return self.send(protocol, request, None, &mut downstream, !route.filters.is_empty()).await;
        }

        // A request without a body can be sent again: if connecting to one endpoint fails
        // (a pod gone before its EndpointSlice says so), try one other.
        let retryable = body.is_end_stream() && backend.endpoints.len() > 1;
        let mut body = Some(body);
        let mut failed = None;
        loop {
            // A filter's choice goes first; if connecting to it fails, the balancer picks another.
            let picked = match (chosen, failed) {
                (Some(index), None) => balance::pin(backend, index),
                _ => balance::pick(backend, failed),
            };
            let (index, active) = picked.ok_or(ProxyError::NoEndpoint)?;
            let last = !retryable || failed.is_some();
            let (headers, body) = if last {
                (std::mem::take(&mut parts.headers), body.take().map_or(Either::Right(Empty::new()), Either::Left))
            } else {
                (parts.headers.clone(), Either::Right(Empty::new()))
            };
            let authority = Authority::try_from(backend.endpoints[index].addr.to_string())
                .expect("a socket address is a valid authority");
            let request = upstream_request(&parts, protocol, authority, path_and_query.clone(), headers, body);
            match self.send(protocol, request, Some(active), &mut downstream, !route.filters.is_empty()).await {
                Err(ProxyError::Upstream(e)) if !last && e.is_connect() => {
                    tracing::debug!(endpoint = %backend.endpoints[index].addr, "connect failed, trying another endpoint");
                    failed = Some(index);
                }
                result => return result,
            }
        }
    }

    async fn send(
        &self,
        protocol: BackendProtocol,
        request: Request<UpstreamBody>,
        mut active: Option<balance::ActiveGuard>,
        downstream: &mut Option<OnUpgrade>,
        note_upstream: bool,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let note_upstream = note_upstream || self.config.access_log;
        let upstream = note_upstream.then(|| request.uri().authority().cloned()).flatten();
        let mut response =
            tokio::time::timeout(self.config.response_timeout, self.upstreams.request(protocol, request))
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?
                .map_err(|e| {
                    if caused_by::<LengthLimitError>(&e) {
                        ProxyError::PayloadTooLarge
                    } else {
                        ProxyError::Upstream(e)
                    }
                })?;
        if let Some(upstream) = upstream {
            response.extensions_mut().insert(UpstreamAddress(upstream));
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = response.headers().get(header::UPGRADE).cloned();
        if switching && let (Some(downstream), Some(_)) = (downstream.take(), &upgrade) {
            let upstream = hyper::upgrade::on(&mut response);
            // The tunnel counts as a request on its endpoint for as long as it is open.
            tokio::spawn(tunnel(downstream, upstream, active.take()));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let (true, Some(protocol)) = (switching, upgrade) {
            keep_upgrade(&mut parts.headers, protocol);
        }
        Ok(Response::from_parts(parts, Either::Left(Upstream::new(body, active))))
    }
}

impl Handler for Proxy {
    async fn handle(&self, request: Request<Incoming>, conn: Conn) -> Response<ResponseBody> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let request_id = parts.headers.get(&X_REQUEST_ID).filter(|id| !id.is_empty() && id.len() <= 200).cloned();
        let request_id = request_id.unwrap_or_else(new_request_id);
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        let logged = self.config.access_log.then(|| (parts.method.clone(), parts.uri.clone(), parts.version));
        let (route, result, hsts) = match self.route(&parts, &conn) {
            Ok(routed) => {
                let (route, hsts) = (routed.route.clone(), routed.hsts);
                let result = self.filter_and_forward(routed, parts, body, &conn).await;
                (Some(route), result, hsts)
            }
            Err(error) => (None, Err(error), false),
        };
        let mut response = result.unwrap_or_else(|error| {
            self.report(&error, route.as_deref());
            error.into_response()
        });
        if hsts && let Some(hsts) = &self.config.hsts {
            response.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY).or_insert_with(|| hsts.clone());
        }
        let elapsed = started.elapsed();
        self.metrics.request(route.as_ref().map(|r| &r.name), response.status(), elapsed);
        if let Some((method, uri, version)) = logged {
            let upstream = response.extensions().get::<UpstreamAddress>().map(|a| a.0.as_str()).unwrap_or_default();
            let name = route.as_ref().map(|r| &r.name);
            tracing::info!(
                target: "sluice::access",
                client = %conn.remote.ip(),
                method = %method,
                uri = %uri,
                protocol = ?version,
                status = response.status().as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1e3,
                ingress = name.map_or("", |n| &n.ingress),
                host = name.map_or("", |n| &n.host),
                route = name.map_or("", |n| &n.path),
                upstream,
                tls_server_name = conn.tls.as_ref().and_then(|t| t.server_name.as_deref()).unwrap_or_default(),
                request_id = request_id.to_str().unwrap_or_default(),
            );
        }
        response
    }
}

/// The endpoint that answered, on responses, for the access log.
#[derive(Debug, Clone)]
struct UpstreamAddress(Authority);

impl Proxy {
    /// Logs a failure, and counts it when the upstream is to blame.
    fn report(&self, error: &ProxyError, route: Option<&Route>) {
        let kind = match error {
            ProxyError::Upstream(e) if e.is_connect() => UpstreamError::Connect,
            ProxyError::Upstream(_) => UpstreamError::Other,
            ProxyError::UpstreamTimeout => UpstreamError::Timeout,
            ProxyError::Filter(failure) => {
                let route = route.map(|r| &*r.name.ingress).unwrap_or_default();
                tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), route, "{failure}; answered 500");
                self.metrics.filter_failure(failure, true);
                return;
            }
            _ => {
                tracing::debug!("{error}");
                return;
            }
        };
        let backend = route.map(|r| r.backend.key.to_string()).unwrap_or_default();
        match error {
            ProxyError::Upstream(e) => tracing::warn!(%backend, error = %e, "{error}"),
            _ => tracing::warn!(%backend, "{error}"),
        }
        self.metrics.upstream_error(backend, kind);
    }
}

/// Whether `error` or any error beneath it is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if version == Version::HTTP_11 && asks { headers.get(header::UPGRADE).cloned() } else { None }
}

/// Puts back the two hop-by-hop headers an upgrade needs on its next hop, after
/// [`strip_hop_by_hop`] removed them.
fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Copies bytes both ways between a client and a backend that switched protocols, until either
/// side closes. It does not depend on the snapshot: reloads never cut it.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, _active: Option<balance::ActiveGuard>) {
    match tokio::try_join!(downstream, upstream) {
        Ok((downstream, upstream)) => {
            let (mut downstream, mut upstream) = (TokioIo::new(downstream), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form) or the Host header.
fn request_host(uri: &Uri, headers: &HeaderMap, version: Version) -> Result<String, ProxyError> {
    if let Some(authority) = uri.authority() {
        return Ok(authority.as_str().to_owned());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => {
            host.to_str().map(str::to_owned).map_err(|_| ProxyError::BadRequest("Host header is not valid".into()))
        }
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host header".into())),
        (None, _) if version == Version::HTTP_11 => Err(ProxyError::BadRequest("HTTP/1.1 request without Host".into())),
        (None, _) => Ok(String::new()),
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// X-Forwarded-* and X-Real-IP (X-Request-ID is settled when the request arrives).
///
/// From an untrusted peer, every forwarding header is replaced: the client could have written
/// anything. From a trusted proxy (`trusted`), its X-Forwarded-For is extended with the peer,
/// the client is the rightmost address that is not a trusted proxy (nginx's
/// `real_ip_recursive`), and its X-Forwarded-Proto, -Host and -Port stand.
fn set_forwarding_headers(headers: &mut HeaderMap, conn: &Conn, trusted: &[IpNet]) {
    let from_proxy = trusted.iter().any(|net| net.contains(&conn.remote.ip()));
    let forwarded_for = from_proxy
        .then(|| headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()).map(str::to_owned))
        .flatten()
        .filter(|chain| !chain.trim().is_empty());
    let (chain, real_ip) = match forwarded_for {
        Some(chain) => {
            let client = chain
                .rsplit(',')
                .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                .find(|ip| !trusted.iter().any(|net| net.contains(ip)));
            let real_ip = client.and_then(|ip| HeaderValue::try_from(ip.to_string()).ok());
            let chain = HeaderValue::try_from(format!("{chain}, {}", conn.remote.ip())).ok();
            (chain, real_ip)
        }
        None => (None, None),
    };
    headers.insert(X_FORWARDED_FOR, chain.unwrap_or_else(|| conn.client_ip.clone()));
    headers.insert(X_REAL_IP, real_ip.unwrap_or_else(|| conn.client_ip.clone()));
    let keep = |headers: &HeaderMap, name: &HeaderName| from_proxy && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !keep(headers, &X_FORWARDED_PROTO) {
        let proto = if conn.tls.is_some() { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT, conn.local_port.clone());
    }
}

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

fn upstream_request(
    parts: &http::request::Parts,
    protocol: BackendProtocol,
    authority: Authority,
    path_and_query: PathAndQuery,
    headers: HeaderMap,
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
    uri.path_and_query = Some(path_and_query);
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request
}
