//! `custom-http-errors`: an answer with one of the route's statuses is replaced by what the
//! route's `default-backend` Service answers, which learns what happened from the headers
//! ingress-nginx sends its error backends (`X-Code`, `X-Format`, `X-Original-URI`,
//! `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`).

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_config::{PortRef, Target};
use sluice_filter::Route;
use sluice_route::ErrorPages;

use crate::balance;
use crate::body::{ResponseBody, Upstream};
use crate::connect::Connector;
use crate::error::ProxyError;
use crate::headers::strip_hop_by_hop;

/// Asks `default-backend` Services for error answers; one per data-plane thread.
#[derive(Debug)]
pub struct ErrorPageClient {
    client: Client<Connector, Empty<Bytes>>,
    /// For the error backend's response head.
    response: Duration,
}

/// What the error backend is told of the request, kept before it goes upstream.
pub struct Kept {
    method: http::Method,
    /// As the client sent it (before any rewrite).
    uri: Uri,
    headers: http::HeaderMap,
}

impl ErrorPageClient {
    pub fn new(connect: Duration, response: Duration, idle: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(idle).timer(TokioTimer::new());
        Self { client: builder.build(Connector::new(tcp, connect)), response }
    }

    /// Keeps what the error backend needs of a request whose head is what the upstream sees.
    pub fn keep(route: &Route, parts: &http::request::Parts) -> Option<Kept> {
        route.error_pages.as_ref()?;
        Some(Kept { method: parts.method.clone(), uri: parts.uri.clone(), headers: parts.headers.clone() })
    }

    /// The answer the client gets: `result`, or the error backend's answer when `result`'s status
    /// is one the route replaces. When the error backend fails too, `result` stands.
    pub async fn replace(
        &self,
        route: &Route,
        kept: Option<Kept>,
        result: Result<Response<ResponseBody>, ProxyError>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (Some(pages), Some(kept)) = (&route.error_pages, kept) else { return result };
        let status = match &result {
            Ok(response) => (response.status(), false),
            Err(error) => (error.status(), true),
        };
        if !pages.replaces(status.0.as_u16(), status.1) {
            return result;
        }
        match Box::pin(self.ask(route, pages, kept, status.0)).await {
            Ok(response) => {
                if let Err(error) = &result {
                    let backend = &route.backend.key;
                    tracing::warn!(%backend, "{error}; answered by the default backend (custom-http-errors)");
                }
                Ok(response)
            }
            Err(error) => {
                tracing::warn!(backend = %pages.backend.key, %error, "custom-http-errors: the default backend failed");
                result
            }
        }
    }

    async fn ask(
        &self,
        route: &Route,
        pages: &ErrorPages,
        kept: Kept,
        status: StatusCode,
    ) -> Result<Response<ResponseBody>, Box<dyn std::error::Error + Send + Sync>> {
        let (authority, active) = match &*pages.backend.target {
            Target::External { host, port } => (Authority::try_from(format!("{host}:{port}"))?, None),
            Target::Pods { .. } => {
                let (index, active) = balance::pick(&pages.backend, &[]).ok_or("no ready endpoint")?;
                (Authority::try_from(pages.backend.endpoints[index].addr.to_string())?, Some(active))
            }
        };
        // As nginx's error location: the path is `/` (the query stays), the method the client's.
        let query = kept.uri.query().map(|q| format!("/?{q}")).unwrap_or_else(|| "/".to_owned());
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(PathAndQuery::try_from(query)?);
        let mut request = Request::new(Empty::new());
        *request.method_mut() = kept.method;
        *request.uri_mut() = Uri::from_parts(uri)?;
        let mut headers = kept.headers;
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        let original = kept.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let ingress = &route.ingress.id;
        let key = &route.backend.key;
        let port = match &key.port {
            PortRef::Number(number) => Some(number.to_string()),
            PortRef::Name(name) => Some(name.clone()),
            PortRef::First => None,
        };
        let format = headers.get(header::ACCEPT).cloned();
        let sent: [(&str, Option<String>); 6] = [
            ("x-code", Some(status.as_u16().to_string())),
            ("x-original-uri", Some(original.to_owned())),
            ("x-namespace", Some(ingress.namespace.clone())),
            ("x-ingress-name", Some(ingress.name.clone())),
            ("x-service-name", Some(key.service.clone())),
            ("x-service-port", port),
        ];
        for (name, value) in sent {
            if let Some(value) = value {
                headers.insert(HeaderName::from_static(name), HeaderValue::try_from(value)?);
            }
        }
        if let Some(format) = format {
            headers.insert(HeaderName::from_static("x-format"), format);
        }
        *request.headers_mut() = headers;
        let response = tokio::time::timeout(self.response, self.client.request(request)).await??;
        let mut response = response.map(|body| Either::Left(Upstream::new(Either::Right(body), active)));
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}
