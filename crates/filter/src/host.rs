//! The host side of `sdk/wit`: what a filter's imports do, for each version of the contract
//! (`v1`: `sluice:filter@0.1.0`, `v2`: `@0.2.0`); the accessors are the same code for both.
//!
//! A call moves the request's (or response's) head and the request context into the store,
//! runs the guest, and moves them back out: the guest reads through lazy accessors, so nothing
//! is copied into guest memory that the guest does not ask for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, Method, StatusCode};
use regex::Regex;
use sluice_route::{Backend, RouteName};
use wasmtime::bail;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::failure::MemoryCap;
use crate::payload::Payload;
use crate::shared::{Hold, MAX_KEY, Shared};
use crate::wasi::Wasi;

/// The most a call's deadline is pushed back for waiting on Services: a filter that waits
/// longer has that much less time to run.
pub const MAX_WAITED: Duration = crate::outbound::MAX_TIMEOUT;

pub(crate) mod v1;
pub(crate) mod v2;

pub use v1::sluice::filter::types::{Action, ImmediateResponse};
pub(crate) use v1::{FilterIndices as FilterIndicesV1, RequestHandle, ResponseHandle};
pub(crate) use v2::{FilterIndices as FilterIndicesV2, HANDLER};

/// What a request's filters may read about it besides its head.
#[derive(Debug)]
pub struct RequestContext {
    /// The client: the peer, or behind trusted proxies the address they forwarded for.
    pub client: SocketAddr,
    /// The chain's [`Chain::namespace`](crate::Chain::namespace).
    pub namespace: Arc<str>,
    /// The gateway's address the client connected to.
    pub local: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Lower-case, without port.
    pub host: String,
    pub route: RouteName,
    /// The route's regex, for captures.
    pub regex: Option<Arc<Regex>>,
    /// The normalized path the route was matched with.
    pub matched_path: String,
    pub backend: Arc<Backend>,
    /// The endpoint index a filter chose.
    pub chosen: Option<usize>,
    /// The endpoint that served the request.
    pub served: Option<SocketAddr>,
    /// The snapshot serving the request, where filters' calls to Services are resolved (none:
    /// calls find no Service).
    pub snapshot: Option<Arc<crate::Snapshot>>,
}

/// The head a call works on.
pub enum Head {
    Request(http::request::Parts),
    Response(http::response::Parts),
}

/// One call's inputs, moved into the store for the call.
pub struct Call {
    pub context: Box<RequestContext>,
    pub head: Head,
    pub config: Arc<str>,
    pub config_id: u64,
    /// This filter's state, from `set-state` in its request phase.
    pub state: Option<Vec<u8>>,
    /// Places the filter holds until the request ends (`limits.hold`).
    pub holds: Vec<Hold>,
    /// The request phase said the response phase has nothing to do (`skip-response`).
    pub skip_response: bool,
    /// The body of the request (or response), when the chain has filters that read bodies.
    pub body: Option<Payload>,
}

/// The data of a filter instance's store.
pub struct State {
    pub plugin: Arc<str>,
    /// What filters share across requests.
    shared: Arc<Shared>,
    pub limiter: MemoryCap,
    pub call: Option<Call>,
    /// When the call in progress is stopped: its deadline after it started, pushed back by
    /// the time it waited for Services (at most [`MAX_WAITED`] in all).
    pub deadline_at: Instant,
    /// How far `deadline_at` has been pushed back.
    pub waited: Duration,
    /// The WASI of synchronous instances.
    pub wasi: Wasi,
    /// wasmtime-wasi's context, for components that import more than [`Wasi`] offers; made on
    /// their first call into it.
    full_wasi: Option<(WasiCtx, ResourceTable)>,
}

impl State {
    pub fn new(plugin: Arc<str>, memory: usize, shared: Arc<Shared>) -> Self {
        let wasi = Wasi::new(plugin.clone());
        Self {
            wasi,
            plugin,
            shared,
            limiter: MemoryCap::new(memory),
            call: None,
            deadline_at: Instant::now(),
            waited: Duration::ZERO,
            full_wasi: None,
        }
    }

    fn call(&mut self) -> wasmtime::Result<&mut Call> {
        match &mut self.call {
            Some(call) => Ok(call),
            None => bail!("the request is not available outside a filter call"),
        }
    }

    fn request(&mut self) -> wasmtime::Result<(&mut http::request::Parts, &mut RequestContext)> {
        let call = self.call()?;
        match &mut call.head {
            Head::Request(parts) => Ok((parts, &mut call.context)),
            Head::Response(_) => bail!("the request can only be changed in the request phase"),
        }
    }

    fn response(&mut self) -> wasmtime::Result<&mut http::response::Parts> {
        match &mut self.call()?.head {
            Head::Response(parts) => Ok(parts),
            Head::Request(_) => bail!("there is no response in the request phase"),
        }
    }

    /// Starts the deadline of a call or start-up: `deadline` from now.
    pub fn start_deadline(&mut self, deadline: Duration) {
        self.deadline_at = Instant::now() + deadline;
        self.waited = Duration::ZERO;
    }

    /// Pushes the deadline back by `waited`, the time a call waited for a Service, up to
    /// [`MAX_WAITED`] in all.
    pub fn add_wait(&mut self, waited: Duration) {
        let granted = waited.min(MAX_WAITED.saturating_sub(self.waited));
        self.waited += granted;
        self.deadline_at += granted;
    }

    /// `key` among the shared keys of this plugin in the namespace of the request's Ingress.
    fn shared_key(&mut self, key: &str) -> wasmtime::Result<String> {
        if key.len() > MAX_KEY {
            bail!("a shared key is over {MAX_KEY} bytes");
        }
        let plugin = self.plugin.clone();
        let namespace = &self.call()?.context.namespace;
        Ok(format!("{plugin}\0{namespace}\0{key}"))
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, table) = self.full_wasi.get_or_insert_with(|| {
            // No preopened directories, no environment, no sockets: a filter sees only what
            // the gateway hands it.
            let ctx = WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
            (ctx, ResourceTable::new())
        });
        WasiCtxView { ctx, table }
    }
}

type Outcome<T> = wasmtime::Result<T>;

/// Header reads and writes shared by requests and responses.
mod headers {
    use super::*;

    pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    pub fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }

    pub fn all(headers: &HeaderMap) -> Vec<(String, String)> {
        headers.iter().filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
    }

    pub fn set(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = parse_header(name, value)?;
        headers.insert(name, value);
        Ok(())
    }

    pub fn add(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
        let (name, value) = parse_header(name, value)?;
        headers.append(name, value);
        Ok(())
    }

    pub fn remove(headers: &mut HeaderMap, name: &str) {
        headers.remove(name);
    }
}

/// A header from a guest's strings.
pub(crate) fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
    let value = HeaderValue::try_from(value).map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name, value))
}

/// `uri` with its path and query replaced, keeping scheme and authority (HTTP/2 requests
/// carry them in the URI).
pub(crate) fn with_path_and_query(uri: &Uri, path: &str, query: Option<&str>) -> Result<Uri, String> {
    let text = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let path_and_query = PathAndQuery::try_from(text).map_err(|e| format!("invalid path or query: {e}"))?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// The request accessors of the contract, the same in every version: `$handle` is the
/// resource 0.1 passes (and the host ignores: the request is the call's).
macro_rules! request_accessors {
    ($($handle:ty)?) => {
        fn method(&mut self, $(_: Resource<$handle>)?) -> Outcome<String> {
            Ok(self.request()?.0.method.as_str().to_owned())
        }

        fn set_method(&mut self, $(_: Resource<$handle>,)? method: String) -> Outcome<Result<(), String>> {
            let (parts, _) = self.request()?;
            Ok(Method::from_bytes(method.as_bytes())
                .map(|method| parts.method = method)
                .map_err(|_| format!("{method:?} is not a method")))
        }

        fn scheme(&mut self, $(_: Resource<$handle>)?) -> Outcome<String> {
            Ok(self.request()?.1.scheme.to_owned())
        }

        fn host(&mut self, $(_: Resource<$handle>)?) -> Outcome<String> {
            Ok(self.request()?.1.host.clone())
        }

        fn path(&mut self, $(_: Resource<$handle>)?) -> Outcome<String> {
            Ok(self.request()?.0.uri.path().to_owned())
        }

        fn set_path(&mut self, $(_: Resource<$handle>,)? path: String) -> Outcome<Result<(), String>> {
            let (parts, _) = self.request()?;
            if !path.starts_with('/') {
                return Ok(Err(format!("{path:?} does not start with '/'")));
            }
            Ok(with_path_and_query(&parts.uri, &path, parts.uri.query()).map(|uri| parts.uri = uri))
        }

        fn query(&mut self, $(_: Resource<$handle>)?) -> Outcome<Option<String>> {
            Ok(self.request()?.0.uri.query().map(str::to_owned))
        }

        fn set_query(&mut self, $(_: Resource<$handle>,)? query: Option<String>) -> Outcome<Result<(), String>> {
            let (parts, _) = self.request()?;
            Ok(with_path_and_query(&parts.uri, parts.uri.path(), query.as_deref()).map(|uri| parts.uri = uri))
        }

        fn header(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<Option<String>> {
            Ok(headers::get(&self.request()?.0.headers, &name))
        }

        fn header_values(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<Vec<String>> {
            Ok(headers::values(&self.request()?.0.headers, &name))
        }

        fn headers(&mut self, $(_: Resource<$handle>)?) -> Outcome<Vec<(String, String)>> {
            Ok(headers::all(&self.request()?.0.headers))
        }

        fn set_header(&mut self, $(_: Resource<$handle>,)? name: String, value: String) -> Outcome<Result<(), String>> {
            Ok(headers::set(&mut self.request()?.0.headers, &name, &value))
        }

        fn add_header(&mut self, $(_: Resource<$handle>,)? name: String, value: String) -> Outcome<Result<(), String>> {
            Ok(headers::add(&mut self.request()?.0.headers, &name, &value))
        }

        fn remove_header(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<()> {
            headers::remove(&mut self.request()?.0.headers, &name);
            Ok(())
        }

        fn client_address(&mut self, $(_: Resource<$handle>)?) -> Outcome<String> {
            Ok(self.request()?.1.client.to_string())
        }

        fn route(&mut self, $(_: Resource<$handle>)?) -> Outcome<types::Route> {
            let route = &self.request()?.1.route;
            Ok(types::Route {
                ingress: route.ingress.to_string(),
                host: route.host.to_string(),
                path: route.path.to_string(),
            })
        }

        fn captures(&mut self, $(_: Resource<$handle>)?) -> Outcome<Vec<Option<String>>> {
            let context = self.request()?.1;
            let Some(regex) = &context.regex else { return Ok(Vec::new()) };
            Ok(regex
                .captures(&context.matched_path)
                .map(|captures| captures.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect())
                .unwrap_or_default())
        }

        fn endpoints(&mut self, $(_: Resource<$handle>)?) -> Outcome<Vec<types::Endpoint>> {
            let context = self.request()?.1;
            Ok(context
                .backend
                .endpoints
                .iter()
                .map(|e| types::Endpoint {
                    address: e.addr.to_string(),
                    active: e.active.load(std::sync::atomic::Ordering::Relaxed).try_into().unwrap_or(u32::MAX),
                })
                .collect())
        }

        fn choose_endpoint(&mut self, $(_: Resource<$handle>,)? index: u32) -> Outcome<Result<(), String>> {
            let context = self.request()?.1;
            let count = context.backend.endpoints.len();
            Ok(match usize::try_from(index) {
                Ok(index) if index < count => {
                    context.chosen = Some(index);
                    Ok(())
                }
                _ => Err(format!("endpoint {index} does not exist; the backend has {count}")),
            })
        }

        fn set_state(&mut self, $(_: Resource<$handle>,)? state: Vec<u8>) -> Outcome<()> {
            self.request()?;
            self.call()?.state = Some(state);
            Ok(())
        }

        fn skip_response(&mut self, $(_: Resource<$handle>)?) -> Outcome<()> {
            self.request()?;
            self.call()?.skip_response = true;
            Ok(())
        }
    };
}

/// The response accessors, as [`request_accessors`].
macro_rules! response_accessors {
    ($($handle:ty)?) => {
        fn status(&mut self, $(_: Resource<$handle>)?) -> Outcome<u16> {
            Ok(self.response()?.status.as_u16())
        }

        fn set_status(&mut self, $(_: Resource<$handle>,)? status: u16) -> Outcome<Result<(), String>> {
            let parts = self.response()?;
            Ok(StatusCode::from_u16(status)
                .map(|status| parts.status = status)
                .map_err(|_| format!("{status} is not a status code")))
        }

        fn header(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<Option<String>> {
            Ok(headers::get(&self.response()?.headers, &name))
        }

        fn header_values(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<Vec<String>> {
            Ok(headers::values(&self.response()?.headers, &name))
        }

        fn headers(&mut self, $(_: Resource<$handle>)?) -> Outcome<Vec<(String, String)>> {
            Ok(headers::all(&self.response()?.headers))
        }

        fn set_header(&mut self, $(_: Resource<$handle>,)? name: String, value: String) -> Outcome<Result<(), String>> {
            Ok(headers::set(&mut self.response()?.headers, &name, &value))
        }

        fn add_header(&mut self, $(_: Resource<$handle>,)? name: String, value: String) -> Outcome<Result<(), String>> {
            Ok(headers::add(&mut self.response()?.headers, &name, &value))
        }

        fn remove_header(&mut self, $(_: Resource<$handle>,)? name: String) -> Outcome<()> {
            headers::remove(&mut self.response()?.headers, &name);
            Ok(())
        }

        fn endpoint(&mut self, $(_: Resource<$handle>)?) -> Outcome<Option<String>> {
            self.response()?;
            Ok(self.call()?.context.served.map(|addr| addr.to_string()))
        }

        fn state(&mut self, $(_: Resource<$handle>)?) -> Outcome<Option<Vec<u8>>> {
            self.response()?;
            Ok(self.call()?.state.clone())
        }
    };
}

/// The `host` interface of every version.
macro_rules! host_functions {
    () => {
        fn log(&mut self, level: types::LogLevel, message: String) -> Outcome<()> {
            let plugin = &*self.plugin;
            match level {
                types::LogLevel::Trace => tracing::trace!(target: "sluice::filter", plugin, "{message}"),
                types::LogLevel::Debug => tracing::debug!(target: "sluice::filter", plugin, "{message}"),
                types::LogLevel::Info => tracing::info!(target: "sluice::filter", plugin, "{message}"),
                types::LogLevel::Warn => tracing::warn!(target: "sluice::filter", plugin, "{message}"),
                types::LogLevel::Error => tracing::error!(target: "sluice::filter", plugin, "{message}"),
            }
            Ok(())
        }

        fn config(&mut self) -> Outcome<String> {
            Ok(self.call()?.config.to_string())
        }

        fn config_id(&mut self) -> Outcome<u64> {
            Ok(self.call()?.config_id)
        }
    };
}

pub(crate) use {host_functions, request_accessors, response_accessors};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_push_the_deadline_back_up_to_a_bound() {
        let mut state = State::new("plugin".into(), 1 << 20, Arc::default());
        state.start_deadline(Duration::from_millis(50));
        let first = state.deadline_at;
        state.add_wait(Duration::from_secs(1));
        assert_eq!(state.deadline_at, first + Duration::from_secs(1));
        state.add_wait(MAX_WAITED);
        assert_eq!(state.deadline_at, first + MAX_WAITED, "never more than MAX_WAITED in all");
        state.start_deadline(Duration::from_millis(50));
        assert_eq!(state.waited, Duration::ZERO, "a new call starts afresh");
    }
}
