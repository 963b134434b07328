//! The validated routing model: what the Ingresses mean, with every reference resolved.

use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::error::{ConfigError, ObjectRef};
use crate::filters::FilterSpec;

/// Everything the Ingresses of our class ask for.
#[derive(Debug, Default)]
pub struct Model {
    /// Every Ingress of our class, whether or not it yielded routes. Shared with the
    /// translation's cache: an Ingress that did not change is not translated again.
    pub ingresses: Vec<Arc<IngressModel>>,
    /// Every backend a route or default backend refers to, resolved to where traffic goes.
    pub backends: HashMap<BackendKey, Arc<Target>>,
    pub errors: Vec<ConfigError>,
}

/// One Ingress, translated.
#[derive(Debug)]
pub struct IngressModel {
    pub info: Arc<IngressInfo>,
    pub routes: Vec<RouteSpec>,
    pub default_backend: Option<DefaultBackend>,
    /// The `spec.tls` entries.
    pub tls: Vec<TlsSpec>,
    /// What is wrong with the Ingress itself (its backends' Services are checked apart).
    pub errors: Vec<ConfigError>,
    /// The backends it names, each with the field that names it.
    pub(crate) backends: Vec<(String, BackendKey)>,
}

/// One `spec.tls` entry: hosts served over TLS, with the certificate of a Secret.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub ingress: Arc<IngressInfo>,
    /// `spec.tls[i]`, for error messages.
    pub field: String,
    /// The entry's hosts, or the Ingress's rule hosts when it names none.
    pub hosts: Vec<HostMatch>,
    /// `None` when the entry names no usable Secret: its hosts get the default certificate.
    pub certificate: Option<Arc<TlsCertificate>>,
}

/// A certificate chain and private key in PEM, as a `kubernetes.io/tls` Secret holds them.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TlsCertificate {
    /// `namespace/name` of the Secret.
    pub secret: String,
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The Ingress a route came from; its age decides conflicts (oldest wins).
#[derive(Debug, PartialEq, Eq)]
pub struct IngressInfo {
    pub id: ObjectRef,
    pub origin: Arc<str>,
    pub created: Option<Timestamp>,
    /// Plain-HTTP requests to hosts with TLS are redirected to HTTPS (`ssl-redirect`).
    pub ssl_redirect: bool,
    /// Plain-HTTP requests are redirected to HTTPS even without TLS (`force-ssl-redirect`).
    pub force_ssl_redirect: bool,
    /// HTTPS redirects keep a trailing slash of the request URI (`preserve-trailing-slash`);
    /// by default one is dropped, as ingress-nginx does.
    pub preserve_trailing_slash: bool,
    /// How this Ingress's backends are spoken to (`backend-protocol`).
    pub backend_protocol: BackendProtocol,
    /// The largest request body accepted, in bytes (`proxy-body-size`); `None`: no limit.
    pub max_body_size: Option<u64>,
    /// The `sluice.dev/filters` attachments, or why the annotation is invalid (then every
    /// route of the Ingress fails closed: a filter that guards it must not be skipped).
    pub filters: Result<Vec<FilterSpec>, String>,
}

/// The protocol between the gateway and a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 in plain text.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 in plain text (h2c), as gRPC servers speak it.
    Grpc,
    /// HTTP/2 over TLS.
    Grpcs,
}

impl std::str::FromStr for BackendProtocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Ok(BackendProtocol::Http),
            "HTTPS" => Ok(BackendProtocol::Https),
            "GRPC" => Ok(BackendProtocol::Grpc),
            "GRPCS" => Ok(BackendProtocol::Grpcs),
            _ => Err(format!("{value:?} is not one of HTTP, HTTPS, GRPC, GRPCS")),
        }
    }
}

impl IngressInfo {
    /// Oldest first: by creationTimestamp (objects that have one before those that do not),
    /// then namespace/name.
    pub fn age_order(&self, other: &Self) -> Ordering {
        if std::ptr::eq(self, other) {
            return Ordering::Equal;
        }
        let key = |i: &Self| (i.created.is_none(), i.created);
        key(self).cmp(&key(other)).then_with(|| self.id.cmp(&other.id))
    }
}

/// One host + path -> backend rule of one Ingress.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub ingress: Arc<IngressInfo>,
    /// Where in the Ingress it was declared: `spec.rules[rule].http.paths[path]`.
    pub rule: usize,
    pub path_index: usize,
    pub host: HostMatch,
    pub path: PathMatch,
    pub backend: BackendKey,
}

impl RouteSpec {
    /// The field this route's path was declared in, for error messages.
    pub fn path_field(&self) -> String {
        format!("spec.rules[{}].http.paths[{}].path", self.rule, self.path_index)
    }
}

/// An Ingress's `spec.defaultBackend`: it serves requests for the Ingress's own hosts that no
/// path matches, and, for the oldest such Ingress, every request that no host matches.
#[derive(Debug, Clone)]
pub struct DefaultBackend {
    pub ingress: Arc<IngressInfo>,
    pub hosts: Vec<HostMatch>,
    pub backend: BackendKey,
}

/// Which requests a rule's `host` covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum HostMatch {
    /// No host: every request whose host no other rule names.
    Any,
    Exact(String),
    /// `*.example.com`, holding `example.com`: exactly one more label.
    Wildcard(String),
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Exact(host) => f.write_str(host),
            HostMatch::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// How a rule's path matches, after `pathType` and the Ingress's regex mode are applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "path")]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix, with at most one trailing slash: `/foo/` and `/foo` match the same
    /// paths, but where a host has both, `/foo/` takes the paths below it.
    Prefix(String),
    /// Anchored at the start, case-insensitive (ingress-nginx's `~*`).
    Regex(String),
}

impl PathMatch {
    /// The path as written, whose length decides precedence.
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) => p,
        }
    }
}

/// A Service port as an Ingress names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// A backend as routes refer to it: `namespace/service:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:", self.namespace, self.service)?;
        match &self.port {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

impl Serialize for BackendKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a backend's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Pod endpoints from EndpointSlices. `endpoints` are the ones to use: the ready ones, or,
    /// when none is ready, those still serving while terminating (as kube-proxy does), so a
    /// rollout's last pod keeps answering. `unready` are listed for operators only.
    Pods { endpoints: Vec<SocketAddr>, unready: Vec<SocketAddr> },
    /// An ExternalName Service: resolved by DNS when connecting.
    External { host: String, port: u16 },
}
