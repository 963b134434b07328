//! Every answer the gateway gives itself instead of a backend's (failures, and the redirect of
//! plain HTTP to HTTPS), decided in this one place: the status, the gRPC status on gRPC
//! requests, whether it is logged as the operator's concern, and how it is counted.

use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use sluice_filter::{FilterFailure, Route};

use crate::body::{ResponseBody, full};
use crate::metrics::{Metrics, UpstreamError};

/// What an upstream failure carries, for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the gateway answers a request itself.
#[derive(Debug)]
pub enum ProxyError {
    /// Not a failure: the request belongs on HTTPS, at this location (308).
    RedirectToHttps(HeaderValue),
    /// Not a failure: the host redirects to its `www.` twin or back (`from-to-www-redirect`, 308).
    RedirectToHost(HeaderValue),
    /// The request is malformed; it never reaches a backend.
    BadRequest(String),
    /// The request's host has a certificate of its own, but came over a TLS connection made
    /// for another name (421): the client must connect again for that host.
    Misdirected,
    /// No route matches and no default backend applies.
    NoRoute,
    /// The request body is larger than the route's `proxy-body-size`.
    PayloadTooLarge,
    /// The route's backend has no ready endpoint.
    NoEndpoint,
    /// No connection to the upstream could be made.
    UpstreamConnect(BoxError),
    /// The exchange with the upstream failed after connecting.
    Upstream(BoxError),
    /// The upstream's response could not be read as HTTP, or could be read two ways.
    UpstreamInvalid(BoxError),
    /// The upstream did not answer within the response timeout.
    UpstreamTimeout,
    /// The route's `proxy-ssl-secret` cannot be used (503, as ingress-nginx denies the location);
    /// the reason is in `/config`.
    BackendTls(Arc<str>),
    /// The upstream's response body failed while filters were reading it.
    UpstreamBody(BoxError),
    /// Filters held back more of the response body than the buffering cap.
    ResponseTooLarge,
    /// A fail-closed filter could not run (trap, deadline, memory cap, unavailable plugin).
    Filter(FilterFailure),
}

/// gRPC status codes the gateway answers with (grpc/doc/statuscodes.md).
mod grpc {
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RedirectToHttps(_) | ProxyError::RedirectToHost(_) => StatusCode::PERMANENT_REDIRECT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoEndpoint | ProxyError::BackendTls(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamInvalid(_)
            | ProxyError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTooLarge => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Filter(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status a gRPC client gets instead of the HTTP one; `None` for answers that stay
    /// HTTP (a redirect).
    fn grpc_status(&self) -> Option<u8> {
        Some(match self {
            ProxyError::RedirectToHttps(_) | ProxyError::RedirectToHost(_) => return None,
            ProxyError::BadRequest(_) | ProxyError::Filter(_) | ProxyError::ResponseTooLarge => grpc::INTERNAL,
            ProxyError::Misdirected
            | ProxyError::NoEndpoint
            | ProxyError::BackendTls(_)
            | ProxyError::UpstreamConnect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamInvalid(_)
            | ProxyError::UpstreamBody(_) => grpc::UNAVAILABLE,
            ProxyError::NoRoute => grpc::UNIMPLEMENTED,
            ProxyError::PayloadTooLarge => grpc::RESOURCE_EXHAUSTED,
            ProxyError::UpstreamTimeout => grpc::DEADLINE_EXCEEDED,
        })
    }

    /// How `sluice_upstream_errors_total` counts this failure, when the upstream is to blame.
    fn upstream_error(&self) -> Option<UpstreamError> {
        match self {
            ProxyError::UpstreamConnect(_) => Some(UpstreamError::Connect),
            ProxyError::Upstream(_) | ProxyError::UpstreamInvalid(_) | ProxyError::UpstreamBody(_) => {
                Some(UpstreamError::Other)
            }
            ProxyError::UpstreamTimeout => Some(UpstreamError::Timeout),
            _ => None,
        }
    }

    /// Logs the failure (at warn when the operator should look: upstreams and filters; at debug
    /// when it is the client's doing or an ordinary answer) and counts it.
    pub fn report(&self, metrics: &Metrics, route: Option<&Route>) {
        if let ProxyError::Filter(failure) = self {
            let route = route.map(|r| &*r.name.ingress).unwrap_or_default();
            tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), route, "{failure}; answered 500");
            metrics.filter_failure(failure, true);
            return;
        }
        if let ProxyError::BackendTls(why) = self {
            let route = route.map(|r| &*r.name.ingress).unwrap_or_default();
            tracing::warn!(route, reason = &**why, "{self}");
            return;
        }
        let Some(kind) = self.upstream_error() else {
            tracing::debug!("{self}");
            return;
        };
        let backend = route.map(|r| r.backend.key.to_string()).unwrap_or_default();
        match self {
            ProxyError::UpstreamConnect(e)
            | ProxyError::Upstream(e)
            | ProxyError::UpstreamInvalid(e)
            | ProxyError::UpstreamBody(e) => {
                tracing::warn!(%backend, error = %e, "{self}");
            }
            _ => tracing::warn!(%backend, "{self}"),
        }
        metrics.upstream_error(backend, kind);
    }

    /// The response for this error: its status and a one-line plain-text reason; for a gRPC
    /// request, a trailers-only gRPC answer (HTTP 200 with `grpc-status` and `grpc-message`),
    /// as gRPC clients expect from a proxy.
    pub fn into_response(self, content_type: Option<&HeaderValue>) -> Response<ResponseBody> {
        let grpc = is_grpc(content_type).then(|| self.grpc_status()).flatten();
        let reason = self.to_string();
        let mut response = Response::new(full(if grpc.is_some() { String::new() } else { format!("{reason}\n") }));
        let headers = response.headers_mut();
        if let Some(code) = grpc {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
            headers.insert("grpc-message", HeaderValue::try_from(reason).expect("reasons are plain text"));
            return response;
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        *response.status_mut() = self.status();
        if let ProxyError::RedirectToHttps(location) | ProxyError::RedirectToHost(location) = self {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

/// Whether a request's content type is gRPC's (`application/grpc`, `application/grpc+proto`...).
fn is_grpc(content_type: Option<&HeaderValue>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::RedirectToHttps(_) => f.write_str("this host is served over HTTPS"),
            ProxyError::RedirectToHost(_) => f.write_str("this host redirects to another"),
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::Misdirected => f.write_str("this connection's TLS name does not cover this host"),
            ProxyError::NoRoute => f.write_str("no route for this host and path"),
            ProxyError::PayloadTooLarge => f.write_str("request body too large"),
            ProxyError::NoEndpoint => f.write_str("no ready endpoint for this backend"),
            ProxyError::UpstreamConnect(_) => f.write_str("upstream connection failed"),
            ProxyError::Upstream(_) => f.write_str("upstream request failed"),
            ProxyError::UpstreamInvalid(_) => f.write_str("upstream sent an invalid response"),
            ProxyError::UpstreamTimeout => f.write_str("upstream timed out"),
            ProxyError::BackendTls(_) => f.write_str("this route's backend TLS settings cannot be used"),
            ProxyError::UpstreamBody(_) => f.write_str("upstream response body failed"),
            ProxyError::ResponseTooLarge => f.write_str("response body too large for the route's filters"),
            // The plugin's name only: details stay in the log.
            ProxyError::Filter(failure) => write!(f, "filter {} failed", failure.plugin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRPC: HeaderValue = HeaderValue::from_static("application/grpc+proto");

    #[test]
    fn grpc_requests_get_trailers_only_answers() {
        let response = ProxyError::NoEndpoint.into_response(Some(&GRPC));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "no ready endpoint for this backend");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
        let timeout = ProxyError::UpstreamTimeout.into_response(Some(&GRPC));
        assert_eq!(timeout.headers()["grpc-status"], "4");
        let redirect = ProxyError::RedirectToHttps(HeaderValue::from_static("https://x/")).into_response(Some(&GRPC));
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT, "a redirect stays HTTP");
    }

    #[test]
    fn other_requests_get_the_http_status_and_a_reason() {
        let response = ProxyError::NoEndpoint.into_response(None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("grpc-status").is_none());
        let not_grpc = HeaderValue::from_static("application/grpcx");
        assert_eq!(ProxyError::NoRoute.into_response(Some(&not_grpc)).status(), StatusCode::NOT_FOUND);
    }
}
