use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_config::annotations::{NGINX_CANARY_BY_HEADER_PATTERN, NGINX_PROXY_SSL_SECRET, NGINX_SERVER_ALIAS};
use sluice_config::{
    BackendKey, ConfigError, HostMatch, IngressInfo, LoadBalance, Model, ObjectRef, PathMatch, RouteSpec, Target,
    UpstreamPolicy,
};

use crate::backend_tls::{self, BackendTlsCache, RouteTls};
use crate::canary::Canary;
use crate::table::{AliasError, InsertError, RegexCache, RouteTable};
use crate::tls::{CertificateCache, TlsHost, TlsTable, load_certificate};

/// One published configuration. Requests load it once and use it to the end.
///
/// `F` is what an Ingress's routes run before going upstream (the proxy's Wasm filter chains);
/// this crate only carries it, so it stays free of the Wasm runtime.
#[derive(Debug, Default)]
pub struct Snapshot<F = ()> {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub table: RouteTable<Arc<Route<F>>>,
    pub backends: HashMap<BackendKey, Arc<Backend>>,
    /// Hosts served over TLS, with their certificates.
    pub tls: TlsTable,
    /// Every Ingress of our class, sorted (whether or not it yielded routes).
    pub ingresses: Vec<ObjectRef>,
    /// Everything wrong with the configuration this snapshot was built from.
    pub errors: Vec<ConfigError>,
    /// The plugin modules the control plane knows, for `/config`.
    pub plugins: Vec<PluginInfo>,
    regexes: RegexCache,
    certificates: CertificateCache,
    backend_tls: BackendTlsCache,
}

/// A plugin module as `/config` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    /// Compiled into the gateway (not from the plugin directory).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
    /// SHA-256 of the module, when it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Why it did not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a matched request goes, and why (for logs and `/config`).
#[derive(Debug)]
pub struct Route<F = ()> {
    pub ingress: Arc<IngressInfo>,
    pub host: HostMatch,
    /// `None` for an Ingress default backend.
    pub path: Option<PathMatch>,
    pub backend: Arc<Backend>,
    /// The route as logs and metrics name it.
    pub name: RouteName,
    /// The Ingress's filters; shared by all its routes.
    pub filters: F,
    /// The canary Ingress that takes some of this route's requests.
    pub canary: Option<Canary<F>>,
    /// `from-to-www-redirect`: every request answers 308 to this host instead.
    pub redirect_host: Option<Arc<str>>,
    /// `proxy-ssl-secret`: the TLS of HTTPS and gRPCS connections to the backend; `None`
    /// accepts any certificate.
    pub backend_tls: Option<RouteTls>,
    /// `custom-http-errors`: answers the `default-backend` Service gives instead.
    pub error_pages: Option<Arc<ErrorPages>>,
}

/// Statuses whose answers a route's `default-backend` Service gives instead
/// (`custom-http-errors`).
#[derive(Debug)]
pub struct ErrorPages {
    /// Sorted.
    pub codes: Vec<u16>,
    /// Backends' answers are replaced too, not only the gateway's own.
    pub intercept: bool,
    /// Spoken to in plain HTTP, as ingress-nginx's error locations are.
    pub backend: Arc<Backend>,
}

impl ErrorPages {
    /// Whether an answer with `status` is replaced; `own`: the gateway answers itself.
    pub fn replaces(&self, status: u16, own: bool) -> bool {
        (own || self.intercept) && self.codes.binary_search(&status).is_ok()
    }
}

impl<F> Route<F> {
    /// The route a request takes: this one or its canary's. `header` reads a request header,
    /// `cookies` are the `Cookie` header values, `draw` gives a uniform random number in `1..=n`.
    pub fn choose<'a, 'r>(
        self: &'r Arc<Self>,
        header: impl FnOnce(&str) -> Option<&'a str>,
        cookies: impl IntoIterator<Item = &'a str>,
        draw: impl FnOnce(u32) -> u32,
    ) -> &'r Arc<Self> {
        match &self.canary {
            Some(canary) => {
                let value = canary.rules.header.as_deref().and_then(header);
                if canary.chooses(value, cookies, draw) { &canary.route } else { self }
            }
            None => self,
        }
    }
}

/// A route's identity in logs and metrics, formatted once when the snapshot is built so that
/// per-request use is a reference-count increment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteName {
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    /// The rule's host (`*` for none, `*.example.com` for a wildcard).
    pub host: Arc<str>,
    /// `Prefix /api`, `Exact /x`, `Regex /y(.*)`, or `default` for a default backend.
    pub path: Arc<str>,
}

impl RouteName {
    pub(crate) fn new(ingress: &IngressInfo, host: &HostMatch, path: Option<&PathMatch>) -> Self {
        let path = match path {
            Some(PathMatch::Exact(p)) => format!("Exact {p}"),
            Some(PathMatch::Prefix(p)) => format!("Prefix {p}"),
            Some(PathMatch::Regex(p)) => format!("Regex {p}"),
            None => "default".to_owned(),
        };
        let ingress = format!("{}/{}", ingress.id.namespace, ingress.id.name);
        RouteName { ingress: ingress.into(), host: host.to_string().into(), path: path.into() }
    }
}

/// A Service port and the endpoints behind it.
#[derive(Debug)]
pub struct Backend {
    pub key: BackendKey,
    /// Shared with the model it was resolved in.
    pub target: Arc<Target>,
    /// The endpoints to balance across (empty for ExternalName Services).
    pub endpoints: Box<[Endpoint]>,
    /// The next endpoint for round-robin balancing (modulo their number).
    pub next: AtomicUsize,
}

/// One pod endpoint, with what balancing measures of it: the requests it is serving now, and
/// how fast it has been answering.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub active: AtomicUsize,
    pub ewma: Ewma,
}

/// A decaying average of an endpoint's response times, as ingress-nginx's `ewma` balancer keeps:
/// a sample `age` old weighs `exp(-age / 10 s)`, and the average decays towards zero while the
/// endpoint is idle, so a once-slow endpoint is tried again. Updates race benignly (an estimate).
#[derive(Debug, Default)]
pub struct Ewma {
    /// Microseconds, as `f64` bits.
    average: AtomicU64,
    /// When it was last updated, in [`Ewma::now`]'s microseconds.
    touched: AtomicU64,
}

impl Ewma {
    const DECAY_MICROS: f64 = 10e6;

    /// Microseconds since the first call, plus one (0 is "never"): the clock of
    /// [`Ewma::observe`] and [`Ewma::score`].
    pub fn now() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// The average at `now`, decayed since the last update.
    fn decayed(&self, now: u64) -> f64 {
        let age = now.saturating_sub(self.touched.load(Ordering::Relaxed)) as f64;
        f64::from_bits(self.average.load(Ordering::Relaxed)) * (-age / Self::DECAY_MICROS).exp()
    }

    /// Adds a response time measured at `now`; the first one is the average.
    pub fn observe(&self, sample: Duration, now: u64) {
        let (touched, sample) = (self.touched.swap(now, Ordering::Relaxed), sample.as_micros() as f64);
        let weight =
            if touched == 0 { 0.0 } else { (-(now.saturating_sub(touched) as f64) / Self::DECAY_MICROS).exp() };
        let average = f64::from_bits(self.average.load(Ordering::Relaxed)) * weight + sample * (1.0 - weight);
        self.average.store(average.to_bits(), Ordering::Relaxed);
    }

    /// Lower is better: the average times the requests in flight, plus one.
    pub fn score(&self, now: u64, active: usize) -> f64 {
        self.decayed(now) * (active as f64 + 1.0)
    }
}

impl Backend {
    /// A backend with all endpoints idle.
    pub fn new(key: BackendKey, target: Arc<Target>) -> Self {
        let endpoints = match &*target {
            Target::Pods { endpoints, .. } => endpoints
                .iter()
                .map(|&addr| Endpoint { addr, active: AtomicUsize::new(0), ewma: Ewma::default() })
                .collect(),
            Target::External { .. } => Box::default(),
        };
        Self { key, target, endpoints, next: AtomicUsize::new(0) }
    }
}

/// The backend of `key`, or, when it has no endpoint to send to, the Ingress's `default-backend`.
/// Endpoints changing means a new snapshot, so this is decided once per snapshot.
fn serving(backends: &HashMap<BackendKey, Arc<Backend>>, ingress: &IngressInfo, key: &BackendKey) -> Arc<Backend> {
    let backend = &backends[key];
    match &ingress.unavailable_backend {
        Some(fallback) if backend.endpoints.is_empty() && matches!(*backend.target, Target::Pods { .. }) => {
            backends[fallback].clone()
        }
        _ => backend.clone(),
    }
}

impl Snapshot {
    /// [`Snapshot::compile_with`] for routes without filters.
    pub fn compile(model: Model, previous: &Snapshot) -> Snapshot {
        Snapshot::compile_with(model, previous, |_, _| ())
    }
}

impl<F: Clone + Serialize> Snapshot<F> {
    /// Builds the snapshot that follows `previous`. What did not change is shared with it:
    /// backends whose endpoints are the same keep their load counters, and regexes are not
    /// compiled again. `filters` builds an Ingress's filters (once per Ingress), adding
    /// what is wrong with them to the errors.
    pub fn compile_with(
        model: Model,
        previous: &Snapshot<F>,
        mut filters: impl FnMut(&Arc<IngressInfo>, &mut Vec<ConfigError>) -> F,
    ) -> Snapshot<F> {
        let Model { ingresses: translated, backends, mut errors } = model;
        let backends: HashMap<BackendKey, Arc<Backend>> = backends
            .into_iter()
            .map(|(key, target)| {
                let backend = match previous.backends.get(&key) {
                    Some(old) if Arc::ptr_eq(&old.target, &target) || old.target == target => old.clone(),
                    _ => Arc::new(Backend::new(key.clone(), target)),
                };
                (key, backend)
            })
            .collect();

        let mut chains: HashMap<*const IngressInfo, F> = HashMap::default();
        let mut chain = |ingress: &Arc<IngressInfo>, errors: &mut Vec<ConfigError>| {
            chains.entry(Arc::as_ptr(ingress)).or_insert_with(|| filters(ingress, errors)).clone()
        };
        let mut tls_configs = BackendTlsCache::default();
        let mut tls = |ingress: &IngressInfo, backend: &Backend, errors: &mut Vec<ConfigError>| {
            let spec = ingress.backend_tls.as_ref()?;
            let name = backend_tls::server_name(spec, &backend.key, &backend.target);
            let key = (spec.clone(), name);
            let built =
                tls_configs.get(&key).or_else(|| previous.backend_tls.get(&key)).cloned().unwrap_or_else(|| {
                    backend_tls::build(spec, &key.1).map(Arc::new).map_err(|e| {
                        // An unusable Secret is reported by the translation already.
                        if spec.material.is_ok() {
                            let field = format!("metadata.annotations[{NGINX_PROXY_SSL_SECRET}]");
                            let message = format!(
                                "Secret {}: {e}; every route of this Ingress answers 503 until it is fixed",
                                spec.secret
                            );
                            errors.push(ConfigError::field(&ingress.origin, &ingress.id, field, message));
                        }
                        Arc::from(e)
                    })
                });
            tls_configs.insert(key, built.clone());
            Some(built)
        };
        let mut pages: HashMap<*const IngressInfo, Option<Arc<ErrorPages>>> = HashMap::default();
        let mut error_pages = |ingress: &IngressInfo| {
            let build = || {
                let spec = ingress.error_pages.as_ref()?;
                let backend = backends.get(ingress.unavailable_backend.as_ref()?)?.clone();
                Some(Arc::new(ErrorPages { codes: spec.codes.clone(), intercept: spec.intercept, backend }))
            };
            pages.entry(std::ptr::from_ref(ingress)).or_insert_with(build).clone()
        };
        let mut table = RouteTable::default();
        // Oldest first, so the oldest Ingress keeps a contested host and path. Indices are
        // sorted, not the (large) specs themselves.
        let mut routes: Vec<&RouteSpec> = translated.iter().flat_map(|ingress| &ingress.routes).collect();
        routes.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        let (canaries, routes): (Vec<&RouteSpec>, Vec<&RouteSpec>) =
            routes.into_iter().partition(|spec| spec.ingress.canary.is_some());
        // One canary per host and path (as in ingress-nginx): the oldest.
        let mut canary_of: HashMap<(&HostMatch, &PathMatch), &RouteSpec> = HashMap::default();
        for spec in canaries {
            if let Some(first) = canary_of.get(&(&spec.host, &spec.path)) {
                let message = format!(
                    "host {} path {:?} has a canary already, from {}; this path is ignored",
                    spec.host,
                    spec.path.as_str(),
                    first.ingress.id
                );
                errors.push(ConfigError::field(&spec.ingress.origin, &spec.ingress.id, spec.path_field(), message));
                continue;
            }
            canary_of.insert((&spec.host, &spec.path), spec);
        }
        let mut attached = Vec::new();
        for spec in routes {
            let filters = chain(&spec.ingress, &mut errors);
            let canary = canary_of.get(&(&spec.host, &spec.path)).and_then(|canary| {
                // The main route's settings and filters, with the canary's backend.
                let backend = backends[&canary.backend].clone();
                let route = Arc::new(Route {
                    ingress: spec.ingress.clone(),
                    host: spec.host.clone(),
                    path: Some(spec.path.clone()),
                    backend_tls: tls(&spec.ingress, &backend, &mut errors),
                    error_pages: error_pages(&spec.ingress),
                    backend,
                    name: RouteName::new(&canary.ingress, &spec.host, Some(&spec.path)),
                    filters: filters.clone(),
                    canary: None,
                    redirect_host: None,
                });
                let rules = canary.ingress.canary.clone().expect("partitioned by canary rules");
                Canary::new(rules, route)
                    .map_err(|e| {
                        let field = format!("metadata.annotations[{NGINX_CANARY_BY_HEADER_PATTERN}]");
                        errors.push(ConfigError::field(&canary.ingress.origin, &canary.ingress.id, field, e));
                    })
                    .ok()
            });
            let has_canary = canary.is_some();
            let backend = serving(&backends, &spec.ingress, &spec.backend);
            let route = Arc::new(Route {
                ingress: spec.ingress.clone(),
                host: spec.host.clone(),
                path: Some(spec.path.clone()),
                backend_tls: tls(&spec.ingress, &backend, &mut errors),
                error_pages: error_pages(&spec.ingress),
                backend,
                name: RouteName::new(&spec.ingress, &spec.host, Some(&spec.path)),
                filters,
                canary,
                redirect_host: None,
            });
            let message = match table.insert(&spec.host, &spec.path, route, &previous.regexes) {
                Ok(()) => {
                    if has_canary {
                        attached.push((&spec.host, &spec.path));
                    }
                    continue;
                }
                Err(InsertError::Taken(older)) => format!(
                    "host {} path {:?} is already routed by {}; this path is ignored",
                    spec.host,
                    spec.path.as_str(),
                    older.ingress.id
                ),
                Err(InsertError::InvalidRegex(e)) => e,
            };
            errors.push(ConfigError::field(&spec.ingress.origin, &spec.ingress.id, spec.path_field(), message));
        }
        for key in attached {
            canary_of.remove(&key);
        }
        for spec in canary_of.into_values() {
            let message = format!(
                "canary for host {} path {:?}, which no other Ingress routes; a canary needs a main Ingress with \
                 the same host and path; this path is ignored",
                spec.host,
                spec.path.as_str()
            );
            errors.push(ConfigError::field(&spec.ingress.origin, &spec.ingress.id, spec.path_field(), message));
        }

        let mut default_backends: Vec<_> = translated.iter().filter_map(|i| i.default_backend.as_ref()).collect();
        default_backends.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        for default in default_backends {
            let backend = backends[&default.backend].clone();
            let route = Arc::new(Route {
                ingress: default.ingress.clone(),
                host: HostMatch::Any,
                path: None,
                backend_tls: tls(&default.ingress, &backend, &mut errors),
                error_pages: error_pages(&default.ingress),
                backend,
                name: RouteName::new(&default.ingress, &HostMatch::Any, None),
                filters: chain(&default.ingress, &mut errors),
                canary: None,
                redirect_host: None,
            });
            for host in &default.hosts {
                table.set_fallback(host, route.clone());
            }
            table.set_default(route);
        }

        // Aliases last, so that they copy every route of their host and never take a host
        // that has rules of its own. Oldest first.
        let mut aliases: Vec<_> = translated.iter().flat_map(|ingress| &ingress.aliases).collect();
        aliases.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        let mut aliased = Vec::new();
        for alias in aliases {
            let why = match table.alias(&alias.host, &alias.target) {
                Ok(()) => {
                    aliased.push(alias);
                    continue;
                }
                Err(AliasError::Taken) => format!("{} is served already (by rules or another alias)", alias.host),
                Err(AliasError::NoTarget) => format!("{} has no routes to serve {} with", alias.target, alias.host),
            };
            let field = format!("metadata.annotations[{NGINX_SERVER_ALIAS}]");
            let message = format!("{why}; this alias is ignored");
            errors.push(ConfigError::field(&alias.ingress.origin, &alias.ingress.id, field, message));
        }

        // Oldest first: the oldest Ingress keeps a host that several give certificates for.
        let mut tls: Vec<_> = translated.iter().flat_map(|ingress| &ingress.tls).collect();
        tls.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        let mut tls_table = TlsTable::default();
        let mut certificates = CertificateCache::default();
        for spec in tls {
            let certificate = spec.certificate.as_ref().and_then(|material| {
                let loaded = certificates
                    .get(material)
                    .or_else(|| previous.certificates.get(material))
                    .cloned()
                    .unwrap_or_else(|| load_certificate(material));
                certificates.insert(material.clone(), loaded.clone());
                loaded
                    .map_err(|e| {
                        let message = format!("Secret {}: {e}; the default certificate is served", material.secret);
                        let field = format!("{}.secretName", spec.field);
                        errors.push(ConfigError::field(&spec.ingress.origin, &spec.ingress.id, field, message));
                    })
                    .ok()
            });
            let host = TlsHost {
                certificate,
                secret: spec.certificate.as_ref().map(|c| c.secret.clone()),
                ingress: spec.ingress.id.clone(),
            };
            for name in &spec.hosts {
                tls_table.get_or_insert_with(name, || host.clone());
            }
        }
        // `www.` twins redirect unless they are served (by rules or an alias), as in ingress-nginx.
        let mut redirects: Vec<_> = (translated.iter())
            .flat_map(|ingress| ingress.www_redirects.iter().map(move |redirect| (ingress, redirect)))
            .collect();
        redirects.sort_by(|(_, a), (_, b)| a.ingress.age_order(&b.ingress));
        for (ingress, redirect) in redirects {
            let (HostMatch::Exact(to), Some(spec)) =
                (&redirect.target, ingress.routes.iter().find(|r| r.host == redirect.target))
            else {
                continue;
            };
            if table.has_host(&redirect.host) {
                continue;
            }
            let route = Arc::new(Route {
                ingress: redirect.ingress.clone(),
                host: redirect.host.clone(),
                path: None,
                backend: backends[&spec.backend].clone(),
                name: RouteName::new(&redirect.ingress, &redirect.host, None),
                filters: chain(&redirect.ingress, &mut errors),
                canary: None,
                redirect_host: Some(Arc::from(to.as_str())),
                backend_tls: None,
                error_pages: None,
            });
            table.set_fallback(&redirect.host, route);
        }

        // An alias is served with its host's certificate unless it has one of its own.
        for alias in aliased {
            if let Some(host) = tls_table.get_match(&alias.target).cloned() {
                tls_table.get_or_insert_with(&alias.host, || host);
            }
        }

        let regexes = table.regex_cache();
        errors.sort();
        errors.dedup();
        let mut ingresses: Vec<ObjectRef> = translated.iter().map(|ingress| ingress.info.id.clone()).collect();
        ingresses.sort();
        Snapshot {
            generation: previous.generation + 1,
            table,
            backends,
            tls: tls_table,
            ingresses,
            errors,
            plugins: Vec::new(),
            regexes,
            certificates,
            backend_tls: tls_configs,
        }
    }

    /// The compiled regex of a regex path of this snapshot.
    pub fn regex(&self, pattern: &str) -> Option<&Arc<regex::Regex>> {
        self.regexes.get(pattern)
    }

    /// The snapshot as JSON for `/config` and golden tests: hosts with their routes in
    /// precedence order, backends with their endpoints, and errors.
    pub fn describe(&self) -> Value {
        let mut hosts: Vec<_> = self.table.hosts().collect();
        hosts.sort_by(|(a, _), (b, _)| a.cmp(b));
        let hosts: Vec<Value> = hosts
            .into_iter()
            .map(|(host, routes)| {
                let paths: Vec<Value> = routes
                    .paths()
                    .into_iter()
                    .map(|(path, route)| {
                        let mut entry = json!({
                            "path": path,
                            "ingress": route.ingress.id.to_string(),
                            "backend": route.backend.key,
                        });
                        let filters = json!(route.filters);
                        if !(filters.is_null() || filters.as_array().is_some_and(Vec::is_empty)) {
                            entry["filters"] = filters;
                        }
                        let ingress = &route.ingress;
                        if ingress.upstream != UpstreamPolicy::default() {
                            entry["upstream"] = json!(ingress.upstream);
                        }
                        if let Some(key) = &ingress.hash_by {
                            entry["hash_by"] = json!(key);
                            if let Some(size) = ingress.hash_subset {
                                entry["hash_subset"] = json!(size);
                            }
                        } else if ingress.load_balance != LoadBalance::default() {
                            entry["load_balance"] = json!(ingress.load_balance);
                        }
                        if let Some(spec) = &ingress.backend_tls {
                            let mut tls = json!(spec);
                            match &route.backend_tls {
                                Some(Ok(built)) => tls["server_name"] = json!(built.server_name.to_str()),
                                Some(Err(why)) => tls["unusable"] = json!(&**why),
                                None => {}
                            }
                            entry["backend_tls"] = tls;
                        }
                        if let Some(pages) = &route.error_pages {
                            entry["error_pages"] = json!({
                                "codes": pages.codes,
                                "intercept": pages.intercept,
                                "backend": pages.backend.key,
                            });
                        }
                        if let Some(canary) = &route.canary {
                            entry["canary"] = json!({
                                "ingress": &*canary.route.name.ingress,
                                "backend": canary.route.backend.key,
                                "rules": canary.rules,
                            });
                        }
                        entry
                    })
                    .collect();
                let mut entry = json!({ "host": host.to_string(), "paths": paths });
                match routes.fallback().map(|route| &**route) {
                    Some(Route { redirect_host: Some(to), .. }) => entry["redirect"] = json!(&**to),
                    Some(fallback) => entry["fallback"] = json!(fallback.backend.key),
                    None => {}
                }
                entry
            })
            .collect();
        // A JSON object keeps its keys sorted.
        let backends: serde_json::Map<String, Value> =
            self.backends.iter().map(|(key, backend)| (key.to_string(), json!(backend.target))).collect();
        let mut tls: Vec<_> = self.tls.iter().collect();
        tls.sort_by(|(a, _), (b, _)| a.cmp(b));
        let tls: Vec<Value> = tls
            .into_iter()
            .map(|(host, tls)| json!({ "host": host.to_string(), "secret": tls.secret, "ingress": tls.ingress.to_string() }))
            .collect();
        json!({
            "generation": self.generation,
            "hosts": hosts,
            "tls": tls,
            "default_backend": self.table.default_route().map(|r| json!({
                "ingress": r.ingress.id.to_string(),
                "backend": r.backend.key,
            })),
            "backends": backends,
            "plugins": self.plugins,
            "errors": self.errors,
        })
    }
}
