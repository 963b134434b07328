//! The validated routing model: what the Ingresses mean, with every reference resolved.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
    /// `server-alias`: more names for the Ingress's first host.
    pub aliases: Vec<Alias>,
    /// `from-to-www-redirect`: hosts that redirect to their `www.` twin among the rule hosts, or
    /// the other way round (`host` redirects to `target`).
    pub www_redirects: Vec<Alias>,
    /// What is wrong with the Ingress itself (its backends' Services are checked apart).
    pub errors: Vec<ConfigError>,
    /// The backends it names, each with the field that names its Service.
    pub(crate) backends: Vec<(String, BackendKey)>,
}

/// A host served exactly as another (`server-alias`), unless it has rules of its own.
#[derive(Debug, Clone)]
pub struct Alias {
    pub ingress: Arc<IngressInfo>,
    pub host: HostMatch,
    /// The first host of the Ingress's rules.
    pub target: HostMatch,
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
    /// `canary: "true"`: the routes of this Ingress are alternatives for the same host and path
    /// of a main Ingress, chosen per request by these rules.
    pub canary: Option<CanaryRules>,
    /// Timeouts and retries towards this Ingress's backends.
    pub upstream: UpstreamPolicy,
    /// How endpoints are chosen (`load-balance`), unless `hash_by` is set.
    pub load_balance: LoadBalance,
    /// `upstream-hash-by`: requests with the same key go to the same endpoint.
    pub hash_by: Option<HashKey>,
    /// `upstream-hash-by-subset`: a key maps to this many endpoints, one chosen at random.
    pub hash_subset: Option<usize>,
    /// Requests of this Ingress are logged when the access log is on (`enable-access-log`).
    pub access_log: bool,
    /// `default-backend`: serves the routes whose own Service has no ready endpoint.
    pub unavailable_backend: Option<BackendKey>,
    /// `proxy-ssl-*`: how HTTPS and gRPCS connections to this Ingress's backends are made;
    /// `None`: unverified, as ingress-nginx's default.
    pub backend_tls: Option<Arc<BackendTlsSpec>>,
    /// `custom-http-errors`: answers the `default-backend` Service gives instead.
    pub error_pages: Option<ErrorPagesSpec>,
}

/// Statuses whose answers are replaced by the `default-backend` Service's (`custom-http-errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorPagesSpec {
    /// Sorted, each once.
    pub codes: Vec<u16>,
    /// Backends' answers are replaced too, not only the gateway's own (the default;
    /// `disable-proxy-intercept-errors: "true"` turns it off).
    pub intercept: bool,
}

/// TLS towards backends (`proxy-ssl-secret` and the `proxy-ssl-*` that go with it).
#[derive(Debug, PartialEq, Eq, Hash, Serialize)]
pub struct BackendTlsSpec {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// What the Secret holds, or why it cannot be used (then the routes answer 503).
    #[serde(skip)]
    pub material: Result<BackendTlsMaterial, String>,
    /// `proxy-ssl-verify`: check the backend's certificate against `ca.crt` and the name.
    pub verify: bool,
    /// `proxy-ssl-verify-depth`: the most intermediate certificates between the backend's
    /// certificate and the CA.
    pub verify_depth: u32,
    /// `proxy-ssl-name`: the name verified (and sent as SNI); by default the Service's
    /// `NAME.NAMESPACE.svc`, or an ExternalName Service's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `proxy-ssl-server-name`: send the name as SNI.
    pub sni: bool,
    /// `proxy-ssl-protocols`.
    pub protocols: Vec<TlsProtocol>,
    /// `proxy-ssl-ciphers`: the TLS 1.2 suites offered, as OpenSSL names; empty: all rustls offers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ciphers: Vec<String>,
}

/// The PEM entries of a `proxy-ssl-secret` Secret.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BackendTlsMaterial {
    /// `ca.crt`: the CAs a backend's certificate is verified against.
    pub ca_pem: Option<Vec<u8>>,
    /// `tls.crt` and `tls.key`: the client certificate shown to backends that ask for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// A TLS version towards backends (`proxy-ssl-protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl std::str::FromStr for TlsProtocol {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "TLSv1.2" => Ok(TlsProtocol::Tls12),
            "TLSv1.3" => Ok(TlsProtocol::Tls13),
            "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {
                Err(format!("{value} is not offered: Sluice speaks TLSv1.2 and TLSv1.3 to backends"))
            }
            other => Err(format!("{other:?} is not one of TLSv1.2, TLSv1.3")),
        }
    }
}

/// How a backend's endpoints share requests (`load-balance`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// Power of two choices over in-flight requests.
    #[default]
    LeastRequest,
    RoundRobin,
    /// Power of two choices over a decaying average of response times, times in-flight requests.
    Ewma,
}

impl std::str::FromStr for LoadBalance {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "round_robin" => Ok(LoadBalance::RoundRobin),
            "ewma" => Ok(LoadBalance::Ewma),
            other => Err(format!("{other:?} is not one of round_robin, ewma")),
        }
    }
}

/// What `upstream-hash-by` hashes: text and nginx variables, concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HashKey {
    /// As written, for `/config`.
    pub source: String,
    #[serde(skip)]
    pub parts: Vec<HashPart>,
}

/// One piece of a [`HashKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPart {
    Text(String),
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$host`: the host the request was routed by, lowercase, without port.
    Host,
    /// `$remote_addr`: the client address.
    RemoteAddr,
    /// `$http_NAME`: a request header (`_` in NAME stands for `-`), lowercase.
    Header(String),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$arg_NAME`: a query argument.
    Arg(String),
}

impl std::str::FromStr for HashKey {
    type Err = String;

    /// nginx's `$name` and `${name}`; any other text is literal.
    fn from_str(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(HashPart::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 1..];
            let (name, next) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced.find('}').ok_or_else(|| format!("{source:?}: unclosed \"${{\""))?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            parts.push(variable(name).ok_or_else(|| {
                format!(
                    "${name} is not a variable Sluice hashes by: $request_uri, $uri, $host, $remote_addr, \
                     $http_NAME, $cookie_NAME, $arg_NAME"
                )
            })?);
            rest = next;
        }
        if !rest.is_empty() {
            parts.push(HashPart::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(HashKey { source: source.to_owned(), parts })
    }
}

fn variable(name: &str) -> Option<HashPart> {
    let named = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty()).map(str::to_ascii_lowercase);
    Some(match name {
        "request_uri" => HashPart::RequestUri,
        "uri" | "document_uri" => HashPart::Uri,
        "host" => HashPart::Host,
        "remote_addr" | "binary_remote_addr" => HashPart::RemoteAddr,
        _ => {
            if let Some(header) = named("http_") {
                HashPart::Header(header.replace('_', "-"))
            } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|n| !n.is_empty()) {
                HashPart::Cookie(cookie.to_owned())
            } else {
                HashPart::Arg(named("arg_")?)
            }
        }
    })
}

/// When a request goes to a canary instead of the main route: a header, then a cookie, then a
/// weighted coin (ingress-nginx's precedence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryRules {
    /// `canary-by-header`, lowercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `canary-by-header-value`: the one value that selects the canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: a regex (unanchored) the value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_pattern: Option<String>,
    /// `canary-by-cookie`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `canary-weight` out of `canary-weight-total`.
    pub weight: u32,
    pub weight_total: u32,
}

/// Per-route timeouts and retries (`proxy-*-timeout`, `proxy-next-upstream*`); `None`
/// timeouts are the gateway's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamPolicy {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub connect_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub read_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub send_timeout: Option<Duration>,
    pub next_upstream: NextUpstream,
}

/// Durations in `/config` as whole seconds, as the annotations give them.
fn seconds<S: serde::Serializer>(duration: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    duration.map(|d| d.as_secs()).serialize(s)
}

/// Which failures send a request on to another endpoint, and how often (`proxy-next-upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NextUpstream {
    pub when: RetryConditions,
    /// The most attempts in all, the first included; 0 means as many as there are endpoints.
    pub tries: u32,
    /// No new attempt starts this long after the first; `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    /// ingress-nginx's defaults: `error timeout`, 3 tries, no time limit.
    fn default() -> Self {
        Self { when: RetryConditions::ERROR.with(RetryConditions::TIMEOUT), tries: 3, timeout: None }
    }
}

/// A set of nginx `proxy_next_upstream` conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryConditions(u16);

impl RetryConditions {
    /// Connecting, sending the request or reading the response head failed.
    pub const ERROR: Self = Self(1);
    /// Connecting or waiting for the response head timed out.
    pub const TIMEOUT: Self = Self(1 << 1);
    /// The response head was malformed.
    pub const INVALID_HEADER: Self = Self(1 << 2);
    /// Requests whose method is not idempotent (POST, LOCK, PATCH) may be retried too.
    pub const NON_IDEMPOTENT: Self = Self(1 << 3);
    /// The statuses that may be retried, in the bit order after the four above.
    pub const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];
    const NAMES: [&str; 4] = ["error", "timeout", "invalid_header", "non_idempotent"];

    /// The condition for a response status, if nginx has one.
    pub fn status(status: u16) -> Option<Self> {
        Self::STATUSES.iter().position(|&s| s == status).map(|i| Self(1 << (4 + i)))
    }

    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, other: Self) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names, in nginx's spelling.
    pub fn names(self) -> Vec<String> {
        let flags = Self::NAMES.iter().enumerate().map(|(i, name)| (1 << i, (*name).to_owned()));
        let statuses = Self::STATUSES.iter().enumerate().map(|(i, status)| (1 << (4 + i), format!("http_{status}")));
        flags.chain(statuses).filter(|(bit, _)| self.0 & bit != 0).map(|(_, name)| name).collect()
    }
}

impl std::str::FromStr for RetryConditions {
    type Err = String;

    /// nginx's list: `error timeout http_503 ...`, or `off` alone.
    fn from_str(value: &str) -> Result<Self, String> {
        let mut set = Self::default();
        let words: Vec<&str> = value.split_whitespace().collect();
        if words == ["off"] {
            return Ok(set);
        }
        for word in &words {
            let condition = match Self::NAMES.iter().position(|n| n == word) {
                Some(i) => Self(1 << i),
                None => {
                    word.strip_prefix("http_").and_then(|s| s.parse().ok()).and_then(Self::status).ok_or_else(|| {
                        format!(
                            "{word:?} is not one of error, timeout, invalid_header, http_500, http_502, http_503, \
                         http_504, http_403, http_404, http_429, non_idempotent, off (alone)"
                        )
                    })?
                }
            };
            set = set.with(condition);
        }
        if words.is_empty() {
            return Err("is empty; use \"off\" for no retries".to_owned());
        }
        Ok(set)
    }
}

impl Serialize for RetryConditions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
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
    /// The Service's first port (a Service named by an annotation, which names no port).
    First,
}

/// A backend as routes refer to it: `namespace/service:port`, with ` via ClusterIP` for
/// `service-upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
    /// `service-upstream`: to the Service's ClusterIP (kube-proxy balances), not its endpoints.
    pub cluster_ip: bool,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:", self.namespace, self.service)?;
        match &self.port {
            PortRef::Number(n) => write!(f, "{n}")?,
            PortRef::Name(name) => f.write_str(name)?,
            PortRef::First => f.write_str("first")?,
        }
        if self.cluster_ip { f.write_str(" via ClusterIP") } else { Ok(()) }
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

/// Validates a rule host: a lowercase DNS name, or `*.` and one; never an IP address.
pub(crate) fn parse_host(host: &str) -> Result<HostMatch, String> {
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.contains('*') {
        return Err(format!("{host:?}: a wildcard may only be the whole first label (`*.example.com`)"));
    }
    if host.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a valid lowercase DNS name"));
    }
    if name.parse::<IpAddr>().is_ok()
        || name.split('.').next_back().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{host:?}: IP addresses are not allowed as hosts"));
    }
    Ok(if wildcard { HostMatch::Wildcard(name.to_owned()) } else { HostMatch::Exact(name.to_owned()) })
}
