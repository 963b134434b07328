use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use foldhash::HashMap;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_config::{BackendKey, ConfigError, HostMatch, IngressInfo, Model, ObjectRef, PathMatch, RouteSpec, Target};

use crate::table::{InsertError, RegexCache, RouteTable};
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
    fn new(ingress: &IngressInfo, host: &HostMatch, path: Option<&PathMatch>) -> Self {
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
}

/// One pod endpoint, with the count of requests it is serving now for least-request balancing.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub active: AtomicUsize,
}

impl Backend {
    /// A backend with all endpoints idle.
    pub fn new(key: BackendKey, target: Arc<Target>) -> Self {
        let endpoints = match &*target {
            Target::Pods { endpoints, .. } => {
                endpoints.iter().map(|&addr| Endpoint { addr, active: AtomicUsize::new(0) }).collect()
            }
            Target::External { .. } => Box::default(),
        };
        Self { key, target, endpoints }
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
        let mut table = RouteTable::default();
        // Oldest first, so the oldest Ingress keeps a contested host and path. Indices are
        // sorted, not the (large) specs themselves.
        let mut routes: Vec<&RouteSpec> = translated.iter().flat_map(|ingress| &ingress.routes).collect();
        routes.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        for spec in routes {
            let route = Arc::new(Route {
                ingress: spec.ingress.clone(),
                host: spec.host.clone(),
                path: Some(spec.path.clone()),
                backend: backends[&spec.backend].clone(),
                name: RouteName::new(&spec.ingress, &spec.host, Some(&spec.path)),
                filters: chain(&spec.ingress, &mut errors),
            });
            let message = match table.insert(&spec.host, &spec.path, route, &previous.regexes) {
                Ok(()) => continue,
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

        let mut default_backends: Vec<_> = translated.iter().filter_map(|i| i.default_backend.as_ref()).collect();
        default_backends.sort_by(|a, b| a.ingress.age_order(&b.ingress));
        for default in default_backends {
            let route = Arc::new(Route {
                ingress: default.ingress.clone(),
                host: HostMatch::Any,
                path: None,
                backend: backends[&default.backend].clone(),
                name: RouteName::new(&default.ingress, &HostMatch::Any, None),
                filters: chain(&default.ingress, &mut errors),
            });
            for host in &default.hosts {
                table.set_fallback(host, route.clone());
            }
            table.set_default(route);
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
        }
    }

    /// The compiled regex of a regex path of this snapshot.
    pub fn regex(&self, pattern: &str) -> Option<&regex::Regex> {
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
                        entry
                    })
                    .collect();
                let mut entry = json!({ "host": host.to_string(), "paths": paths });
                if let Some(fallback) = routes.fallback() {
                    entry["fallback"] = json!(fallback.backend.key);
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
