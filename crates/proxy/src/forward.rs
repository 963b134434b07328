//! The request pipeline: handle -> route -> filters -> upstream -> respond.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};
use http_body::Body as _;
use http_body_util::{Either, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use ipnet::IpNet;
use sluice_config::{BackendProtocol, LoadBalance, PathMatch, Target};
use sluice_filter::{Exchange, Payload, RequestContext, Route, Snapshot};
use sluice_route::normalize_path;

use crate::balance;
use crate::body::{RequestBody, ResponseBody, Upstream, full};
use crate::error::ProxyError;
use crate::error_pages::ErrorPageClient;
use crate::filtered::{self, Start};
use crate::headers::{self, Host, X_REQUEST_ID};
use crate::metrics::Metrics;
use crate::server::{Conn, Handler};
use crate::upstream::{Outbound, ServedBy, Timeouts, TunnelOpen, Upstreams, declared_too_large};

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

/// A request matched to its route.
struct Routed {
    route: Arc<Route>,
    /// The host it was routed by.
    host: Host,
    /// Whether the response gets `Strict-Transport-Security`: HTTPS to a host with TLS.
    hsts: bool,
    /// What the route's filters may read; `None` when it has none.
    filters: Option<RequestContext>,
}

/// Forwards requests according to the published snapshot; one per data-plane thread.
#[derive(Debug)]
pub struct Proxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
    upstreams: Upstreams,
    error_pages: ErrorPageClient,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A proxy serving whatever `snapshot` holds at the time of each request.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, config: ProxyConfig, metrics: Arc<Metrics>) -> Self {
        let timeouts =
            Timeouts { connect: config.connect_timeout, response: config.response_timeout, idle: config.idle_timeout };
        let error_pages = ErrorPageClient::new(config.connect_timeout, config.response_timeout, config.idle_timeout);
        Self { snapshot, upstreams: Upstreams::new(timeouts), error_pages, config, metrics }
    }

    /// The route for a request, and the host it was routed by; or why it goes no further:
    /// a redirect to HTTPS, or a TLS connection made for another host's certificate.
    fn route(&self, parts: &http::request::Parts, conn: &Conn) -> Result<Routed, ProxyError> {
        let host = headers::request_host(&parts.uri, &parts.headers, parts.version)
            .map_err(|e| ProxyError::BadRequest(e.reason().into()))?;
        let path = normalize_path(parts.uri.path()).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        // One load per request: a reload published meanwhile applies to the next request.
        let snapshot = self.snapshot.load();
        let route = snapshot.table.route(host.as_str(), &path).ok_or(ProxyError::NoRoute)?;
        if let Some(to) = &route.redirect_host {
            return Err(www_redirect(to, &host, &parts.uri, conn));
        }
        let route = route
            .choose(
                |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
                parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()),
                |n| fastrand::u32(1..=n),
            )
            .clone();
        let tls_host = snapshot.tls.get(host.as_str());
        match &conn.tls {
            None if route.ingress.force_ssl_redirect || (route.ingress.ssl_redirect && tls_host.is_some()) => {
                let preserve = route.ingress.preserve_trailing_slash;
                let location =
                    headers::https_location(host.as_str(), self.config.https_redirect_port, &parts.uri, preserve)
                        .ok_or_else(|| ProxyError::BadRequest("invalid host".into()))?;
                return Err(ProxyError::RedirectToHttps(location));
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
            client: headers::client_address(&parts.headers, conn.remote, &self.config.trusted_proxies),
            namespace: route.filters.namespace.clone(),
            local: conn.local,
            scheme: if conn.tls.is_some() { "https" } else { "http" },
            host: host.name(),
            route: route.name.clone(),
            regex: match &route.path {
                Some(PathMatch::Regex(pattern)) => snapshot.regex(pattern).cloned(),
                _ => None,
            },
            matched_path: path.into_owned(),
            backend: route.backend.clone(),
            chosen: None,
            served: None,
            snapshot: Some(Arc::clone(&snapshot)),
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
        let upgrade = self.upstream_head(&route, &host, &mut parts, conn);
        let kept = ErrorPageClient::keep(&route, &parts);
        let balanced = |parts: &http::request::Parts| balance::choose(&route, parts, conn.remote, &host);
        let Some(context) = filters else {
            let chosen = balanced(&parts);
            let response = self.forward(&route, parts, RequestBody::Client(body), upgrade, chosen).await;
            return self.error_pages.replace(&route, kept, response).await;
        };
        let chain = &route.filters;
        let mut exchange = Exchange::new(context, chain);
        // Filters that read bodies are lent the client's; the upstream gets what they leave.
        let reads_bodies = chain.reads_bodies();
        let body = match reads_bodies {
            true => {
                exchange.lend_body(Payload::new(Limited::new(body, max_body(&route)), filtered::cap(&route)));
                None
            }
            false => Some(body),
        };
        let answer = chain.on_request(&mut exchange, &mut parts).await;
        self.skipped_filters(&mut exchange);
        let response = match answer.map_err(ProxyError::Filter)? {
            Some(answer) => answer.map(full),
            None => {
                let chosen = exchange.chosen_endpoint().or_else(|| balanced(&parts));
                let body = match body {
                    Some(body) => RequestBody::Client(body),
                    None => filtered::lent_request(&mut exchange, &mut parts.headers)?,
                };
                let response = match chain.has_body_phase(&exchange, true) && !body.is_end_stream() {
                    true => Box::pin(self.forward_filtered(&route, &mut exchange, parts, body, upgrade, chosen)).await,
                    false => self.forward(&route, parts, body, upgrade, chosen).await,
                };
                let response = self.error_pages.replace(&route, kept, response).await?;
                exchange.set_served(response.extensions().get::<ServedBy>().map(|served| served.0));
                response
            }
        };
        let (mut head, body) = response.into_parts();
        // A tunnel counts as a request in flight while it is open.
        if let Some(TunnelOpen(mut open)) = head.extensions.remove::<TunnelOpen>() {
            let holds = exchange.take_holds();
            if !holds.is_empty() {
                tokio::spawn(async move {
                    // Nothing is ever sent: this ends when the tunnel drops the sender.
                    while open.changed().await.is_ok() {}
                    drop(holds);
                });
            }
        }
        let body = match reads_bodies {
            true => {
                exchange.lend_body(Payload::new(body, filtered::cap(&route)));
                None
            }
            false => Some(body),
        };
        let result = chain.on_response(&mut exchange, &mut head).await;
        self.skipped_filters(&mut exchange);
        if let Some(answer) = result.map_err(ProxyError::Filter)? {
            return Ok(answer.map(full));
        }
        let body = match body {
            Some(body) => body,
            None => Either::Left(Upstream::lent(filtered::lent_response(&mut exchange, &mut head.headers)?)),
        };
        match body {
            // A response without a body (HEAD, 204, 304) keeps its head as it is.
            Either::Left(upstream) if !upstream.is_end_stream() && chain.has_body_phase(&exchange, false) => {
                let (chain, cap, metrics) = (route.filters.clone(), filtered::cap(&route), self.metrics.clone());
                Box::pin(filtered::response(chain, exchange, head, upstream, cap, metrics)).await
            }
            Either::Left(upstream) => {
                Ok(Response::from_parts(head, Either::Left(upstream.holding(exchange.take_holds()))))
            }
            body => Ok(Response::from_parts(head, body)),
        }
    }

    /// Forwards a request whose body goes through filters' body phases (see [`filtered`]).
    async fn forward_filtered(
        &self,
        route: &Route,
        exchange: &mut Exchange,
        mut parts: http::request::Parts,
        body: RequestBody,
        upgrade: Option<OnUpgrade>,
        chosen: Option<usize>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (chain, cap) = (&route.filters, filtered::cap(route));
        let mut body = Limited::new(body, max_body(route));
        let started = filtered::start(chain, exchange, true, &mut body, cap).await;
        self.skipped_filters(exchange);
        match started.map_err(filtered::request_error)? {
            Start::Answer(answer) => Ok(answer.map(full)),
            Start::Whole(bytes, trailers) => {
                filtered::set_length(&mut parts.headers, bytes.len(), trailers.is_some());
                self.forward(route, parts, RequestBody::whole(bytes, trailers), upgrade, chosen).await
            }
            Start::Streaming(first) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                let (upstream_body, feed) = RequestBody::filtered(first);
                let forwarding = self.forward(route, parts, upstream_body, upgrade, chosen);
                filtered::while_pumping(forwarding, filtered::pump(chain, exchange, body, feed, cap)).await
            }
        }
    }

    /// Logs and counts the fail-open filters that failed and were skipped.
    fn skipped_filters(&self, exchange: &mut Exchange) {
        filtered::skipped(exchange, &self.metrics);
    }

    /// Makes the request head what the upstream should see, before the filters run (so that
    /// they see it too, and may change it): hop-by-hop headers removed, the Host it was routed
    /// by, X-Forwarded-*. Returns the client side of an HTTP/1.1 Upgrade (WebSocket), which keeps
    /// its Upgrade header end to end.
    fn upstream_head(
        &self,
        route: &Route,
        host: &Host,
        parts: &mut http::request::Parts,
        conn: &Conn,
    ) -> Option<OnUpgrade> {
        let upgrade = headers::upgrade_protocol(&parts.headers, parts.version);
        // gRPC needs `te: trailers` end to end; it is the one TE value HTTP/2 allows.
        let h2 = matches!(route.ingress.backend_protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs);
        let te_trailers =
            h2 && parts.headers.get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        headers::strip_hop_by_hop(&mut parts.headers);
        if te_trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // The backend must see the host the request was routed by: HTTP/2 and absolute-form
        // requests carry it in the URI, and there it overrides any Host header (RFC 9112 3.2.2).
        // X-Forwarded-Host keeps it when a filter changes Host (`upstream-vhost`).
        if !matches!(host, Host::Header(_)) {
            parts.headers.insert(header::HOST, host.to_header());
        }
        headers::set_forwarding_headers(&mut parts.headers, conn, &self.config.trusted_proxies);
        let protocol = upgrade?;
        headers::keep_upgrade(&mut parts.headers, protocol);
        parts.extensions.remove::<OnUpgrade>()
    }

    async fn forward(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: RequestBody,
        upgrade: Option<OnUpgrade>,
        chosen: Option<usize>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // Declared too large: refused before a backend is bothered. Streamed bodies are cut off
        // at the limit as they flow.
        let max = route.ingress.max_body_size;
        if declared_too_large(&parts.headers, max) {
            return Err(ProxyError::PayloadTooLarge);
        }
        let body = Limited::new(body, max_body(route));
        let started = (route.ingress.load_balance == LoadBalance::Ewma).then(Instant::now);
        let response = self.upstreams.forward(route, parts, Outbound { body, upgrade, chosen }).await;
        if let (Some(started), Ok(response)) = (started, &response)
            && let Some(served) = response.extensions().get::<ServedBy>()
        {
            balance::observe(&route.backend, served.0, started.elapsed());
        }
        response
    }
}

/// The most of a request body `route` takes (`proxy-body-size`).
fn max_body(route: &Route) -> usize {
    route.ingress.max_body_size.map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX))
}

/// The 308 of `from-to-www-redirect`: the same scheme, port, path and query on host `to`.
fn www_redirect(to: &str, host: &Host, uri: &http::Uri, conn: &Conn) -> ProxyError {
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let port = Authority::try_from(host.as_str()).ok().and_then(|a| a.port_u16()).map(|p| format!(":{p}"));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::try_from(format!("{scheme}://{to}{}{path}", port.unwrap_or_default())) {
        Ok(location) => ProxyError::RedirectToHost(location),
        Err(_) => ProxyError::BadRequest("invalid request target".into()),
    }
}

impl Handler for Proxy {
    async fn handle(&self, request: Request<Incoming>, conn: Conn) -> Response<ResponseBody> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let request_id = headers::request_id(&parts.headers);
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        let logged = self.config.access_log.then(|| (parts.method.clone(), parts.uri.clone(), parts.version));
        // Kept for answering in gRPC's terms when the gateway answers itself.
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let (route, result, hsts) = match self.route(&parts, &conn) {
            Ok(routed) => {
                let (route, hsts) = (routed.route.clone(), routed.hsts);
                let result = self.filter_and_forward(routed, parts, body, &conn).await;
                (Some(route), result, hsts)
            }
            Err(error) => (None, Err(error), false),
        };
        let mut response = result.unwrap_or_else(|error| {
            error.report(&self.metrics, route.as_deref());
            error.into_response(content_type.as_ref())
        });
        if hsts && let Some(hsts) = &self.config.hsts {
            response.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY).or_insert_with(|| hsts.clone());
        }
        let elapsed = started.elapsed();
        self.metrics.request(route.as_ref().map(|r| &r.name), response.status(), elapsed);
        // `enable-access-log: "false"` leaves the route's requests out.
        if let Some((method, uri, version)) = logged
            && route.as_ref().is_none_or(|r| r.ingress.access_log)
        {
            // The pod that answered, or the ExternalName Service's name.
            let upstream = match (response.extensions().get::<ServedBy>(), route.as_deref()) {
                (Some(served), _) => served.0.to_string(),
                (None, Some(route)) => match &*route.backend.target {
                    Target::External { host, port } => format!("{host}:{port}"),
                    Target::Pods { .. } => String::new(),
                },
                (None, None) => String::new(),
            };
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
