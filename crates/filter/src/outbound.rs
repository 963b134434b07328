//! Calls filters make to Services: the host machinery behind proxy-wasm's `proxy_http_call`,
//! independent of the ABI that asks for it.
//!
//! A call names a Service port in the namespace of the Ingress whose filter makes it, and is
//! resolved through the same snapshot as routes: to the ready endpoints the Service's
//! EndpointSlices gave a backend (so the Service must be one an Ingress routes to). Each call
//! runs as a task of its own with its timeout; the request that waits for it is suspended, not
//! a worker thread. A call that fails (no endpoint, refused, timed out, an answer too large)
//! comes back as an [`Answer`] without a status, never as a failure of the filter.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sluice_config::{BackendKey, PortRef};
use sluice_route::Backend;

use crate::RequestContext;

/// The largest answer body a call takes; a larger one fails the call.
pub const MAX_ANSWER: usize = 1 << 20;

/// The longest a call may take, whatever timeout the filter gives.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// A Service port a filter calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

impl Destination {
    /// Parses `SERVICE:PORT` (in `namespace`, the calling Ingress's) or Istio's cluster name
    /// `outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local`, whose namespace must be
    /// `namespace`: a filter calls only Services of its own Ingress's namespace.
    pub fn parse(target: &str, namespace: &str) -> Result<Self, String> {
        let (service, port) = match target.strip_prefix("outbound|") {
            Some(istio) => {
                let mut fields = istio.splitn(3, '|');
                let (port, _subset, host) = (fields.next(), fields.next(), fields.next());
                let host = host
                    .ok_or_else(|| format!("{target:?} is not outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local"))?;
                let host = host.strip_suffix(".svc.cluster.local").unwrap_or(host);
                let (service, in_namespace) = host.split_once('.').unwrap_or((host, namespace));
                if in_namespace != namespace {
                    return Err(format!("{target:?} is in namespace {in_namespace:?}; calls stay in {namespace:?}"));
                }
                (service, port.unwrap_or_default())
            }
            None => target.rsplit_once(':').ok_or_else(|| format!("{target:?} is not SERVICE:PORT"))?,
        };
        if service.is_empty() || !service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{service:?} in {target:?} is not a Service name"));
        }
        let port = match port.parse::<u16>() {
            Ok(number) if number > 0 => PortRef::Number(number.into()),
            // A port name has a letter (IANA service names do).
            _ if port.bytes().any(|b| b.is_ascii_alphabetic())
                && port.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                PortRef::Name(port.to_owned())
            }
            _ => return Err(format!("{port:?} in {target:?} is not a port")),
        };
        Ok(Self { namespace: namespace.to_owned(), service: service.to_owned(), port })
    }

    /// The backend the snapshot resolved for this Service port, if an Ingress routes to it.
    pub fn resolve<'b, S: std::hash::BuildHasher>(
        &self,
        backends: &'b HashMap<BackendKey, Arc<Backend>, S>,
    ) -> Option<&'b Arc<Backend>> {
        let key = |cluster_ip| BackendKey {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            port: self.port.clone(),
            cluster_ip,
        };
        backends.get(&key(false)).or_else(|| backends.get(&key(true)))
    }
}

/// What a call brought back; no status when it failed.
#[derive(Debug, Default)]
pub struct Answer {
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A call in flight.
#[derive(Debug)]
pub struct Pending(tokio::task::JoinHandle<Answer>);

impl Pending {
    /// Waits for the call's answer.
    pub async fn answer(self) -> Answer {
        self.0.await.unwrap_or_default()
    }
}

/// Starts a call by a filter of the request in `context` to `target` (as
/// [`Destination::parse`] reads it), resolved in the snapshot serving the request. Without a
/// Host, the request is for the Service's name.
pub(crate) fn start(
    context: &RequestContext,
    target: &str,
    mut request: http::Request<Bytes>,
    timeout: Duration,
) -> Result<Pending, String> {
    let namespace = &*context.namespace;
    let destination = Destination::parse(target, namespace)?;
    if !request.headers().contains_key(http::header::HOST) {
        let host = http::HeaderValue::try_from(&destination.service).map_err(|e| e.to_string())?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    let backend = context.snapshot.as_ref().and_then(|snapshot| destination.resolve(&snapshot.backends));
    let backend = backend.ok_or_else(|| {
        format!("{target:?}: the gateway knows no Service {} of namespace {namespace:?}", destination.service)
    })?;
    Ok(send(backend, request, timeout))
}

thread_local! {
    /// Each data-plane thread has its own connections, as for upstreams.
    static CLIENT: RefCell<Option<Client<HttpConnector, Full<Bytes>>>> = const { RefCell::new(None) };
}

/// Sends `request` (its URI a path; Host says the authority) to one of `backend`'s ready
/// endpoints, on a task of its own, within `timeout`. Must run inside a Tokio runtime.
pub fn send(backend: &Backend, request: http::Request<Bytes>, timeout: Duration) -> Pending {
    let endpoint = match backend.endpoints.len() {
        0 => None,
        n => Some(backend.endpoints[fastrand::usize(..n)].addr),
    };
    let client = CLIENT.with_borrow_mut(|client| {
        client
            .get_or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new()).build(connector)
            })
            .clone()
    });
    let timeout = timeout.min(MAX_TIMEOUT);
    Pending(tokio::spawn(async move {
        let Some(endpoint) = endpoint else { return Answer::default() };
        tokio::time::timeout(timeout, exchange(&client, endpoint, request)).await.ok().flatten().unwrap_or_default()
    }))
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    endpoint: SocketAddr,
    request: http::Request<Bytes>,
) -> Option<Answer> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{endpoint}{path}").parse().ok()?;
    let response = client.request(http::Request::from_parts(parts, Full::new(body))).await.ok()?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER).collect().await.ok()?.to_bytes();
    Some(Answer { status: Some(parts.status), headers: parts.headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_services_of_the_callers_namespace() {
        let parsed = Destination::parse("auth:8080", "shop").unwrap();
        assert_eq!(
            parsed,
            Destination { namespace: "shop".into(), service: "auth".into(), port: PortRef::Number(8080) }
        );
        let istio = Destination::parse("outbound|8080||auth.shop.svc.cluster.local", "shop").unwrap();
        assert_eq!(istio, parsed);
        assert_eq!(Destination::parse("auth:http", "shop").unwrap().port, PortRef::Name("http".into()));
        let elsewhere = Destination::parse("outbound|80||auth.kube-system.svc.cluster.local", "shop");
        assert!(elsewhere.unwrap_err().contains("kube-system"));
        assert!(Destination::parse("auth", "shop").is_err());
        assert!(Destination::parse("auth:0", "shop").is_err());
        assert!(Destination::parse("a/b:80", "shop").is_err());
    }
}
