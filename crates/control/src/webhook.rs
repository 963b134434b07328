//! The admission webhook: `POST /validate` with an `admission.k8s.io/v1` AdmissionReview, over
//! TLS. An Ingress of our class is translated and its filters checked as the control plane
//! would, against the catalog the control plane keeps, and refused with the errors `sluice
//! check` prints. Objects it refers to that do not exist yet are warnings: objects may be
//! applied in any order. Nothing is written and nothing is loaded from a request but the
//! object itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::networking::v1::Ingress;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_config::{ConfigError, ObjectRef, TranslateOptions};
use tokio::net::TcpListener;

use crate::plugins::Modules;
use crate::shared::{SharedCatalog, Stamp};

/// The largest request accepted: ingress-nginx's limit, which an Ingress fits with room to
/// spare (the API server stores objects of at most 1.5 MB).
pub const MAX_REQUEST: usize = 9 * 1024 * 1024;
/// The API server waits 5 s (our ValidatingWebhookConfiguration's `timeoutSeconds`); an answer
/// comes before that, refusing when the checks did not finish.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a client may take for the TLS handshake and the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks Ingresses against the control plane's catalog and plugin modules.
pub struct Validator {
    catalog: SharedCatalog,
    modules: Arc<ArcSwapOption<Modules>>,
    ingress_class: String,
    limit_status: u16,
}

/// What a review request asks, as far as it is read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest>,
}

#[derive(Debug, Deserialize)]
struct AdmissionRequest {
    uid: String,
    kind: Kind,
    operation: String,
    namespace: Option<String>,
    name: Option<String>,
    object: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Kind {
    group: String,
    kind: String,
}

/// The answer, an AdmissionReview with `response` set.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    api_version: &'static str,
    kind: &'static str,
    response: Verdict,
}

#[derive(Debug, Serialize)]
struct Verdict {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    code: u16,
    message: String,
}

impl Validator {
    pub(crate) fn new(
        catalog: SharedCatalog,
        modules: Arc<ArcSwapOption<Modules>>,
        ingress_class: String,
        limit_status: u16,
    ) -> Self {
        Self { catalog, modules, ingress_class, limit_status }
    }

    /// Whether the control plane has published once, so the catalog and plugins are complete.
    pub fn ready(&self) -> bool {
        self.modules.load().is_some()
    }

    /// The answer to `review`: allowed, with warnings, or refused with every error. Anything
    /// but an Ingress being created or updated is allowed unread.
    async fn review(self: Arc<Self>, review: AdmissionReview) -> Result<Answer, String> {
        if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
            return Err(format!(
                "expected an admission.k8s.io/v1 AdmissionReview, found {} {}",
                review.api_version, review.kind
            ));
        }
        let request = review.request.ok_or("the AdmissionReview has no request")?;
        let uid = request.uid.clone();
        let ingress = request.kind.group == "networking.k8s.io" && request.kind.kind == "Ingress";
        let (errors, warnings) = match (ingress, request.operation.as_str()) {
            (true, "CREATE" | "UPDATE") => {
                let checked = tokio::time::timeout(REVIEW_TIMEOUT, self.check(request)).await;
                checked.unwrap_or_else(|_| {
                    (vec![format!("the checks did not finish within {REVIEW_TIMEOUT:?}; try again")], vec![])
                })
            }
            _ => (vec![], vec![]),
        };
        let status = (!errors.is_empty()).then(|| Status { code: 403, message: errors.join("\n") });
        let response = Verdict { uid, allowed: status.is_none(), status, warnings };
        Ok(Answer { api_version: "admission.k8s.io/v1", kind: "AdmissionReview", response })
    }

    /// The errors and the warnings about the Ingress in `request`, worded as `sluice check`
    /// words them (without a file name).
    async fn check(self: Arc<Self>, request: AdmissionRequest) -> (Vec<String>, Vec<String>) {
        let namespace = request.namespace.unwrap_or_else(|| "default".to_owned());
        let id = ObjectRef::new("Ingress", &namespace, request.name.unwrap_or_default());
        let Some(mut object) = request.object else {
            return (vec![format!("{id}: the request holds no object")], vec![]);
        };
        // The API server sets the namespace of a new object after admission.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("namespace").or_insert_with(|| Value::String(namespace.clone()));
        }
        let ingress: Ingress = match serde_path_to_error::deserialize(object) {
            Ok(ingress) => ingress,
            Err(e) => return (vec![format!("{id}: {}: {}", e.path(), e.inner())], vec![]),
        };
        let Some(modules) = self.modules.load_full() else {
            return (vec!["sluice has not loaded its configuration yet; try again".to_owned()], vec![]);
        };
        // Translating and compiling are blocking work, and the catalog is locked meanwhile.
        let this = self.clone();
        let translated = tokio::task::spawn_blocking(move || {
            let origin: Arc<str> = Arc::from("admission");
            let options = TranslateOptions { ingress_class: &this.ingress_class, limit_status: this.limit_status };
            let review = this.catalog.lock().review(&origin, &ingress, &options);
            if !review.ours {
                return None;
            }
            let info = review.model.ingresses.first().map(|ingress| ingress.info.clone());
            let snapshot = sluice_route::Snapshot::compile(review.model, &sluice_route::Snapshot::default());
            Some((info, snapshot.errors, review.warnings))
        });
        let (info, mut errors, warnings) = match translated.await {
            Ok(Some(translated)) => translated,
            Ok(None) => return (vec![], vec![]),
            Err(e) => {
                tracing::error!(ingress = %id, "checking an Ingress panicked: {e}");
                return (vec![format!("{id}: sluice failed checking it; see its log")], vec![]);
            }
        };
        if let Some(info) = info
            && let Ok(specs) = &info.filters
        {
            errors.extend(modules.check(&info, specs).await);
        }
        let text = |errors: Vec<ConfigError>| errors.iter().map(|e| e.without_origin().to_string()).collect();
        (text(errors), text(warnings))
    }
}

/// The certificate and key the webhook serves, read again from their files when they change
/// (cert-manager and Secret volumes replace them).
pub struct WebhookTls {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

struct Loaded {
    stamps: (Option<Stamp>, Option<Stamp>),
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for WebhookTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTls").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl WebhookTls {
    /// Reads the PEM certificate chain `cert` and its key `key`.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let stamps = (Stamp::read(&cert), Stamp::read(&key));
        let certified = Arc::new(read_pair(&cert, &key)?);
        Ok(Self { cert, key, current: Mutex::new(Loaded { stamps, certified }) })
    }

    fn acceptor(self: Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(sluice_route::crypto_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for WebhookTls {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamps = (Stamp::read(&self.cert), Stamp::read(&self.key));
        if stamps != current.stamps {
            // A pair caught between its two writes does not match; the next handshake tries again.
            match read_pair(&self.cert, &self.key) {
                Ok(certified) => *current = Loaded { stamps, certified: Arc::new(certified) },
                Err(e) => tracing::warn!("webhook certificate not reloaded, the previous one is served: {e}"),
            }
        }
        Some(current.certified.clone())
    }
}

fn read_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key, &sluice_route::crypto_provider()).map_err(|e| e.to_string())
}

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve_webhook(
    listener: TcpListener,
    tls: WebhookTls,
    validator: Arc<Validator>,
) -> Result<std::convert::Infallible, String> {
    let acceptor = Arc::new(tls).acceptor()?;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("webhook: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, validator) = (acceptor.clone(), validator.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let validator = validator.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(validator, request, peer).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "webhook connection: {e}");
            }
        });
    }
}

/// Answers one request; a panic while checking answers 500 and leaves the server running.
async fn handle(validator: Arc<Validator>, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let answer = std::panic::AssertUnwindSafe(answer(validator, request)).catch_unwind().await;
    answer.unwrap_or_else(|_| {
        tracing::error!(%peer, "webhook: checking a review panicked");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "checking the review failed; see the log of sluice")
    })
}

async fn answer(validator: Arc<Validator>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/validate" {
        return plain(StatusCode::NOT_FOUND, "the webhook is at /validate");
    }
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    if !validator.ready() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "sluice has not loaded its configuration yet");
    }
    let too_large = format!("a review may hold at most {MAX_REQUEST} bytes");
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > MAX_REQUEST as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, &too_large);
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, &too_large);
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("reading the request failed: {e}")),
    };
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {e}")),
    };
    match validator.review(review).await {
        Ok(answer) => {
            let body = serde_json::to_vec(&answer).expect("an answer serializes");
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            response
        }
        Err(message) => plain(StatusCode::BAD_REQUEST, &message),
    }
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read, so the connection cannot carry another request.
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}
