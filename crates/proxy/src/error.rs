//! Every answer the gateway gives itself instead of a backend's (failures, and the redirect of
//! plain HTTP to HTTPS), turned into a response in this one place.

use std::fmt;

use http::{HeaderValue, Response, StatusCode, header};
use sluice_filter::FilterFailure;

use crate::body::{ResponseBody, full};

/// Why the gateway answers a request itself.
#[derive(Debug)]
pub enum ProxyError {
    /// Not a failure: the request belongs on HTTPS, at this location (308).
    RedirectToHttps(HeaderValue),
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
    /// The upstream could not be reached or failed mid-response.
    Upstream(hyper_util::client::legacy::Error),
    /// The upstream did not answer within the response timeout.
    UpstreamTimeout,
    /// A fail-closed filter could not run (trap, deadline, memory cap, unavailable plugin).
    Filter(FilterFailure),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RedirectToHttps(_) => StatusCode::PERMANENT_REDIRECT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Filter(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response for this error: its status and a one-line plain-text reason.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let mut response = Response::new(full(format!("{self}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let ProxyError::RedirectToHttps(location) = self {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::RedirectToHttps(_) => f.write_str("this host is served over HTTPS"),
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::Misdirected => f.write_str("this connection's TLS name does not cover this host"),
            ProxyError::NoRoute => f.write_str("no route for this host and path"),
            ProxyError::PayloadTooLarge => f.write_str("request body too large"),
            ProxyError::NoEndpoint => f.write_str("no ready endpoint for this backend"),
            ProxyError::Upstream(e) if e.is_connect() => f.write_str("upstream connection failed"),
            ProxyError::Upstream(_) => f.write_str("upstream request failed"),
            ProxyError::UpstreamTimeout => f.write_str("upstream timed out"),
            // The plugin's name only: details stay in the log.
            ProxyError::Filter(failure) => write!(f, "filter {} failed", failure.plugin),
        }
    }
}
