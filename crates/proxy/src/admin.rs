//! The admin listener: liveness, readiness and the active configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use sluice_filter::Snapshot;

use crate::body::{ResponseBody, full};
use crate::metrics::Metrics;
use crate::server::{Conn, Handler};

/// What the admin endpoints report besides the snapshot.
#[derive(Debug, Default)]
pub struct AdminState {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl AdminState {
    /// Marks the gateway ready: the first snapshot is published.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the gateway as shutting down: `/readyz` answers 503 from now on, so load balancers
    /// and EndpointSlices stop sending new traffic while in-flight requests finish.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Serves `GET /healthz`, `/readyz`, `/metrics` and `/config`.
#[derive(Debug)]
pub struct Admin {
    snapshot: Arc<ArcSwap<Snapshot>>,
    state: Arc<AdminState>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, state: Arc<AdminState>, metrics: Arc<Metrics>) -> Self {
        Self { snapshot, state, metrics }
    }

    fn respond(&self, request: &Request<Incoming>) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n".into());
        }
        match request.uri().path() {
            "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" if self.state.ready() => (StatusCode::OK, TEXT, "ready\n".into()),
            "/readyz" if self.state.draining.load(Ordering::Acquire) => {
                (StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n".into())
            }
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n".into()),
            "/metrics" => (StatusCode::OK, OPENMETRICS, self.metrics.encode(&self.snapshot.load())),
            "/config" => {
                let description = self.snapshot.load().describe();
                let json = serde_json::to_string_pretty(&description).expect("JSON values serialize");
                (StatusCode::OK, "application/json", json + "\n")
            }
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
        }
    }
}

impl Handler for Admin {
    async fn handle(&self, request: Request<Incoming>, _conn: Conn) -> Response<ResponseBody> {
        let (status, content_type, body) = self.respond(&request);
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}
