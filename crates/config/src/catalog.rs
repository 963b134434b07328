//! The objects translation reads, kept from one translation to the next so that a change costs
//! in proportion to what it touches: an Ingress is translated again when it changes, a backend
//! resolved again when its Service or EndpointSlices change. Services and EndpointSlices are
//! kept as the few fields resolving reads, not as whole objects.

use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::core::v1::{ConfigMap, LoadBalancerIngress, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations;
use crate::error::{ConfigError, ObjectRef, not_found};
use crate::manifest::{DEFAULT_NAMESPACE, Manifest, Object};
use crate::model::{BackendKey, IngressInfo, IngressModel, Model, PortRef, Target};
use crate::translate::{TranslateOptions, is_ours, translate_ingress};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Objects of one kind by namespace, then name; looked up by `&str` without allocating.
#[derive(Debug)]
pub(crate) struct Names<T>(HashMap<String, HashMap<String, T>>);

impl<T> Default for Names<T> {
    fn default() -> Self {
        Self(HashMap::default())
    }
}

impl<T> Names<T> {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.0.get(namespace)?.get(name)
    }

    fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut T> {
        self.0.get_mut(namespace)?.get_mut(name)
    }

    fn insert(&mut self, namespace: &str, name: &str, value: T) -> Option<T> {
        match self.0.get_mut(namespace) {
            Some(names) => names.insert(name.to_owned(), value),
            None => {
                self.0.entry(namespace.to_owned()).or_default().insert(name.to_owned(), value);
                None
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let names = self.0.get_mut(namespace)?;
        let removed = names.remove(name);
        if names.is_empty() {
            self.0.remove(namespace);
        }
        removed
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.0.values().flat_map(HashMap::values)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.values_mut().flat_map(HashMap::values_mut)
    }
}

impl<T: PartialEq> Names<T> {
    /// Stores `value` unless the same is stored; returns whether anything changed.
    fn replace(&mut self, namespace: &str, name: &str, value: T) -> bool {
        if self.get(namespace, name) == Some(&value) {
            return false;
        }
        self.insert(namespace, name, value);
        true
    }
}

/// The objects an Ingress's translation reads besides the Ingress itself.
#[derive(Debug, Default)]
pub(crate) struct Referenced {
    pub(crate) secrets: Names<Arc<Secret>>,
    pub(crate) config_maps: Names<Arc<ConfigMap>>,
}

/// What resolving backends reads.
#[derive(Debug, Default)]
struct Backends {
    services: Names<ServiceEntry>,
    slices: Names<SliceEntry>,
    /// EndpointSlice names by (namespace, Service name).
    by_service: Names<Vec<String>>,
}

#[derive(Debug)]
struct IngressEntry {
    origin: Arc<str>,
    ingress: Arc<Ingress>,
    /// Dropped when the Ingress, or a Secret or ConfigMap, changes.
    translated: Option<Arc<IngressModel>>,
}

/// The fields of a Service that resolving a backend reads.
#[derive(Debug, PartialEq)]
struct ServiceEntry {
    /// `spec.externalName` of an ExternalName Service (empty when missing).
    external_name: Option<String>,
    /// `spec.ports`: name and number.
    ports: Vec<(Option<String>, i32)>,
    /// `spec.clusterIP`; `None` for a headless Service.
    cluster_ip: Option<IpAddr>,
    /// `status.loadBalancer.ingress`.
    load_balancer: Vec<LoadBalancerIngress>,
}

impl ServiceEntry {
    fn new(service: &Service) -> Self {
        let spec = service.spec.as_ref();
        let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let load_balancer = service.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        Self {
            external_name: external.then(|| spec.and_then(|s| s.external_name.clone()).unwrap_or_default()),
            ports: ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
            cluster_ip: spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            load_balancer: load_balancer.and_then(|lb| lb.ingress.clone()).unwrap_or_default(),
        }
    }
}

/// An EndpointSlice with its addresses already checked.
#[derive(Debug, PartialEq)]
struct SliceEntry {
    /// The Service it belongs to; `None` for a slice without the label (an error).
    service: Option<String>,
    ports: Vec<(String, u16)>,
    endpoints: Vec<SliceEndpoint>,
    errors: Vec<ConfigError>,
}

#[derive(Debug, PartialEq)]
struct SliceEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
}

impl SliceEntry {
    fn new(origin: &Arc<str>, slice: &EndpointSlice) -> Self {
        let id = || ObjectRef::new("EndpointSlice", namespace(&slice.metadata), name(&slice.metadata));
        let mut entry = SliceEntry { service: None, ports: Vec::new(), endpoints: Vec::new(), errors: Vec::new() };
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            let message = format!("has no {SERVICE_NAME_LABEL} label, so it belongs to no Service");
            entry.errors.push(ConfigError::field(origin, &id(), "metadata.labels", message));
            return entry;
        };
        entry.service = Some(service.clone());
        if slice.address_type == "FQDN" {
            return entry;
        }
        entry.ports = (slice.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), u16::try_from(p.port?).ok()?)))
            .collect();
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            let Some(address) = endpoint.addresses.first() else { continue };
            let Ok(ip) = address.parse::<IpAddr>() else {
                let field = format!("endpoints[{i}].addresses[0]");
                entry.errors.push(ConfigError::field(
                    origin,
                    &id(),
                    field,
                    format!("{address:?} is not an IP address"),
                ));
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            entry.endpoints.push(SliceEndpoint {
                ip,
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            });
        }
        entry
    }
}

/// A backend resolved: where its traffic goes, and why it goes nowhere when it cannot be resolved.
#[derive(Debug)]
struct Resolved {
    target: Arc<Target>,
    error: Option<String>,
}

/// The objects Sluice routes with, indexed, with what was translated from them. Both sources
/// feed one: the file source anew for each reload, the API server's watchers with each event.
#[derive(Debug, Default)]
pub struct Catalog {
    ingresses: Names<IngressEntry>,
    classes: HashMap<String, Arc<IngressClass>>,
    referenced: Referenced,
    backends: Backends,
    /// Every backend the last translation resolved, until its Service or EndpointSlices change.
    resolved: HashMap<BackendKey, Resolved>,
    /// Services changed since the last translation, whose backends are resolved again.
    changed_services: Names<()>,
}

impl Catalog {
    /// Makes the catalog hold exactly `manifests`, changing only what differs from what it
    /// holds. An object defined twice is reported and its first definition used.
    pub fn sync<'a>(&mut self, manifests: impl IntoIterator<Item = &'a Manifest>) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut seen: HashMap<(&'static str, &str, &str), &Arc<str>> = HashMap::default();
        for manifest in manifests {
            match seen.entry(manifest.object.identity()) {
                Entry::Occupied(first) => {
                    let message = format!("defined again; the definition in {} is used", first.get());
                    errors.push(ConfigError::field(&manifest.origin, &manifest.object.id(), "metadata.name", message));
                }
                Entry::Vacant(slot) => {
                    slot.insert(&manifest.origin);
                    self.apply(manifest.clone());
                }
            }
        }
        let gone: Vec<ObjectRef> = self
            .identities()
            .filter(|id| !seen.contains_key(id))
            .map(|(kind, ns, name)| ObjectRef::new(kind, ns, name))
            .collect();
        for id in gone {
            self.remove(&id);
        }
        errors
    }

    /// Kind, namespace and name of every object held.
    fn identities(&self) -> impl Iterator<Item = (&'static str, &str, &str)> {
        fn of<'a, T>(
            kind: &'static str,
            names: &'a Names<T>,
        ) -> impl Iterator<Item = (&'static str, &'a str, &'a str)> {
            names.0.iter().flat_map(move |(ns, names)| names.keys().map(move |name| (kind, ns.as_str(), name.as_str())))
        }
        let classes = self.classes.keys().map(|name| ("IngressClass", DEFAULT_NAMESPACE, name.as_str()));
        (of("Ingress", &self.ingresses).chain(classes).chain(of("Service", &self.backends.services)))
            .chain(of("EndpointSlice", &self.backends.slices))
            .chain(of("Secret", &self.referenced.secrets))
            .chain(of("ConfigMap", &self.referenced.config_maps))
    }

    /// Adds or replaces an object; returns whether anything changed.
    pub fn apply(&mut self, manifest: Manifest) -> bool {
        let Manifest { origin, object } = manifest;
        match object {
            Object::Ingress(ingress) => {
                let (ns, name) = (namespace(&ingress.metadata), name(&ingress.metadata));
                let same = |e: &IngressEntry| {
                    (Arc::ptr_eq(&e.ingress, &ingress) || e.ingress == ingress) && e.origin == origin
                };
                if self.ingresses.get(ns, name).is_some_and(same) {
                    return false;
                }
                let entry = IngressEntry { origin: origin.clone(), ingress: ingress.clone(), translated: None };
                self.ingresses.insert(ns, name, entry);
                true
            }
            Object::IngressClass(class) => {
                let name = name(&class.metadata).to_owned();
                self.classes.insert(name, class.clone()).is_none_or(|previous| previous != class)
            }
            Object::Service(service) => {
                let (ns, name) = (namespace(&service.metadata), name(&service.metadata));
                let changed = self.backends.services.replace(ns, name, ServiceEntry::new(&service));
                if changed {
                    self.changed_services.insert(ns, name, ());
                }
                changed
            }
            Object::EndpointSlice(slice) => {
                let (ns, name) = (namespace(&slice.metadata), name(&slice.metadata));
                let entry = SliceEntry::new(&origin, &slice);
                if self.backends.slices.get(ns, name) == Some(&entry) {
                    return false;
                }
                self.remove_slice(ns, name);
                if let Some(service) = &entry.service {
                    self.changed_services.insert(ns, service, ());
                    match self.backends.by_service.get_mut(ns, service) {
                        Some(slices) => slices.push(name.to_owned()),
                        None => _ = self.backends.by_service.insert(ns, service, vec![name.to_owned()]),
                    }
                }
                self.backends.slices.insert(ns, name, entry);
                true
            }
            Object::Secret(secret) => {
                let (ns, name) = (namespace(&secret.metadata), name(&secret.metadata));
                let changed = self.referenced.secrets.replace(ns, name, secret.clone());
                self.translations_stale(changed)
            }
            Object::ConfigMap(map) => {
                let (ns, name) = (namespace(&map.metadata), name(&map.metadata));
                let changed = self.referenced.config_maps.replace(ns, name, map.clone());
                self.translations_stale(changed)
            }
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn remove(&mut self, id: &ObjectRef) -> bool {
        let (ns, name) = (id.namespace.as_str(), id.name.as_str());
        match id.kind {
            "Ingress" => self.ingresses.remove(ns, name).is_some(),
            "IngressClass" => self.classes.remove(name).is_some(),
            "Service" => {
                self.changed_services.insert(ns, name, ());
                self.backends.services.remove(ns, name).is_some()
            }
            "EndpointSlice" => self.remove_slice(ns, name),
            "Secret" => {
                let removed = self.referenced.secrets.remove(ns, name).is_some();
                self.translations_stale(removed)
            }
            _ => {
                let removed = self.referenced.config_maps.remove(ns, name).is_some();
                self.translations_stale(removed)
            }
        }
    }

    fn remove_slice(&mut self, ns: &str, name: &str) -> bool {
        let Some(entry) = self.backends.slices.remove(ns, name) else { return false };
        if let Some(service) = &entry.service {
            self.changed_services.insert(ns, service, ());
            if let Some(slices) = self.backends.by_service.get_mut(ns, service) {
                slices.retain(|slice| slice != name);
                if slices.is_empty() {
                    self.backends.by_service.remove(ns, service);
                }
            }
        }
        true
    }

    /// A Secret or ConfigMap changed (when `changed`): any Ingress may read it, so every one is
    /// translated again. Both are few and change seldom. Returns `changed`.
    fn translations_stale(&mut self, changed: bool) -> bool {
        if changed {
            self.ingresses.values_mut().for_each(|entry| entry.translated = None);
        }
        changed
    }

    /// Every Ingress, of any class, with its namespace and name.
    pub fn ingresses(&self) -> impl Iterator<Item = (&str, &str, &Ingress)> {
        let ingresses = self.ingresses.0.iter();
        ingresses
            .flat_map(|(ns, names)| names.iter().map(|(name, entry)| (ns.as_str(), name.as_str(), &*entry.ingress)))
    }

    /// Every ConfigMap.
    pub fn config_maps(&self) -> impl Iterator<Item = &Arc<ConfigMap>> {
        self.referenced.config_maps.values()
    }

    /// The `status.loadBalancer.ingress` of a Service; `None` when there is no such Service.
    pub fn service_load_balancer(&self, namespace: &str, name: &str) -> Option<&[LoadBalancerIngress]> {
        self.backends.services.get(namespace, name).map(|service| service.load_balancer.as_slice())
    }

    /// The model of the Ingresses of `options.ingress_class`. Pure like [`crate::translate`]:
    /// every problem becomes a [`ConfigError`] and only the part it is about is left out.
    pub fn translate(&mut self, options: &TranslateOptions<'_>) -> Model {
        let default_class = self.is_default(options);
        let changed = std::mem::take(&mut self.changed_services);
        if !changed.0.is_empty() {
            self.resolved.retain(|key, _| changed.get(&key.namespace, &key.service).is_none());
        }
        let mut model = Model::default();
        for slice in self.backends.slices.values() {
            model.errors.extend_from_slice(&slice.errors);
        }
        for entry in self.ingresses.values_mut() {
            if !is_ours(&entry.ingress, options.ingress_class, default_class) {
                continue;
            }
            let translated = (entry.translated)
                .get_or_insert_with(|| Arc::new(translate_ingress(&entry.origin, &entry.ingress, &self.referenced)));
            model.errors.extend_from_slice(&translated.errors);
            for (field, key) in &translated.backends {
                if !self.resolved.contains_key(key) {
                    self.resolved.insert(key.clone(), self.backends.resolve(key));
                }
                let resolved = &self.resolved[key];
                if let Some(message) = &resolved.error {
                    model.errors.push(unresolved(&translated.info, field, message));
                }
                if !model.backends.contains_key(key) {
                    model.backends.insert(key.clone(), resolved.target.clone());
                }
            }
            model.ingresses.push(translated.clone());
        }
        // Forget the backends no Ingress names any more.
        self.resolved.retain(|key, _| model.backends.contains_key(key));
        model
    }
}

/// An Ingress checked on its own against a [`Catalog`], as an admission webhook does before the
/// Ingress is stored.
#[derive(Debug)]
pub struct Review {
    /// Whether the Ingress belongs to the IngressClass asked about; nothing else is checked
    /// when it does not.
    pub ours: bool,
    /// The Ingress alone, with the backends it names. Its `errors` are what is wrong with the
    /// Ingress itself.
    pub model: Model,
    /// What the Ingress refers to that is not there (yet): a Service, its port, a Secret or a
    /// ConfigMap. Objects may be applied in any order, so these do not make the Ingress wrong.
    pub warnings: Vec<ConfigError>,
}

impl Catalog {
    /// Translates `ingress` as [`Catalog::translate`] would if it replaced the stored Ingress of
    /// its name, without changing the catalog: the same errors, with those about objects that
    /// are missing moved to [`Review::warnings`].
    pub fn review(&self, origin: &Arc<str>, ingress: &Ingress, options: &TranslateOptions<'_>) -> Review {
        let mut review = Review {
            ours: is_ours(ingress, options.ingress_class, self.is_default(options)),
            model: Model::default(),
            warnings: Vec::new(),
        };
        if !review.ours {
            return review;
        }
        let mut translated = translate_ingress(origin, ingress, &self.referenced);
        let (missing, errors) =
            std::mem::take(&mut translated.errors).into_iter().partition(ConfigError::is_missing_object);
        (translated.errors, review.warnings) = (errors, missing);
        for (field, key) in &translated.backends {
            let resolved = self.backends.resolve(key);
            if let Some(message) = &resolved.error {
                review.warnings.push(unresolved(&translated.info, field, message));
            }
            review.model.backends.entry(key.clone()).or_insert(resolved.target);
        }
        review.model.errors = translated.errors.clone();
        review.model.ingresses.push(Arc::new(translated));
        review
    }

    /// Whether the IngressClass of `options` is marked the cluster's default.
    fn is_default(&self, options: &TranslateOptions<'_>) -> bool {
        self.classes.get(options.ingress_class).is_some_and(|class| {
            let value = class.metadata.annotations.as_ref().and_then(|a| a.get(annotations::DEFAULT_CLASS));
            value.is_some_and(|v| annotations::parse_bool(v) == Ok(true))
        })
    }
}

/// The error for a backend that cannot be resolved.
fn unresolved(info: &IngressInfo, field: &str, message: &str) -> ConfigError {
    let message = format!("{message}; requests to this backend get 503");
    ConfigError::field(&info.origin, &info.id, field, message)
}

impl Backends {
    fn resolve(&self, key: &BackendKey) -> Resolved {
        match self.target(key) {
            Ok(target) => Resolved { target: Arc::new(target), error: None },
            // Kept with no endpoints (503) so the route comes alive when the Service appears.
            Err(error) => {
                let target = Target::Pods { endpoints: Vec::new(), unready: Vec::new() };
                Resolved { target: Arc::new(target), error: Some(error) }
            }
        }
    }

    fn target(&self, key: &BackendKey) -> Result<Target, String> {
        let Some(service) = self.services.get(&key.namespace, &key.service) else {
            return Err(not_found(format_args!("Service {}/{}", key.namespace, key.service)));
        };
        let port = match &key.port {
            PortRef::Number(n) => service.ports.iter().find(|(_, number)| number == n),
            PortRef::Name(wanted) => service.ports.iter().find(|(name, _)| name.as_ref() == Some(wanted)),
            PortRef::First => service.ports.first(),
        };
        if let Some(host) = &service.external_name {
            if host.is_empty() {
                return Err(format!("ExternalName Service {}/{} has no spec.externalName", key.namespace, key.service));
            }
            let number = match (&key.port, port) {
                (_, Some((_, number))) => *number,
                (PortRef::Number(n), None) => *n,
                (PortRef::Name(_) | PortRef::First, None) => return Err(missing_port(key)),
            };
            let port = u16::try_from(number).map_err(|_| format!("port {number} is out of range"))?;
            return Ok(Target::External { host: host.clone(), port });
        }
        let Some((port_name, number)) = port else { return Err(missing_port(key)) };
        if key.cluster_ip {
            let ip = service.cluster_ip.ok_or_else(|| {
                format!(
                    "Service {}/{} has no ClusterIP (headless), which service-upstream needs",
                    key.namespace, key.service
                )
            })?;
            let port = u16::try_from(*number).map_err(|_| format!("port {number} is out of range"))?;
            return Ok(Target::Pods { endpoints: vec![SocketAddr::new(ip, port)], unready: Vec::new() });
        }
        let port_name = port_name.as_deref().unwrap_or_default();
        let (mut ready, mut terminating, mut unready) = (Vec::new(), Vec::new(), Vec::new());
        let slices = self.by_service.get(&key.namespace, &key.service).into_iter().flatten();
        for slice in slices.filter_map(|name| self.slices.get(&key.namespace, name)) {
            let Some(&(_, number)) = slice.ports.iter().find(|(name, _)| name == port_name) else { continue };
            for endpoint in &slice.endpoints {
                let addr = SocketAddr::new(endpoint.ip, number);
                match endpoint {
                    SliceEndpoint { ready: true, .. } => ready.push(addr),
                    SliceEndpoint { serving: true, terminating: true, .. } => terminating.push(addr),
                    _ => unready.push(addr),
                }
            }
        }
        let endpoints = if ready.is_empty() {
            terminating
        } else {
            unready.extend(terminating);
            ready
        };
        Ok(Target::Pods { endpoints: sorted(endpoints), unready: sorted(unready) })
    }
}

fn missing_port(key: &BackendKey) -> String {
    let port = match &key.port {
        PortRef::Number(n) => format!("port {n}"),
        PortRef::Name(name) => format!("port named {name:?}"),
        PortRef::First => "port".to_owned(),
    };
    format!("Service {}/{} has no {port}", key.namespace, key.service)
}

fn sorted(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

pub(crate) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_manifests, translate};

    fn object(yaml: &str) -> Manifest {
        let parsed = parse_manifests(&Arc::from("test.yaml"), yaml);
        assert_eq!(parsed.errors, vec![]);
        parsed.manifests.into_iter().next().unwrap()
    }

    fn ingress(name: &str, host: &str, paths: &[(&str, &str)]) -> Manifest {
        let paths: String = paths
            .iter()
            .map(|(path, service)| {
                format!("    - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n")
            })
            .collect();
        object(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\n\
             spec:\n ingressClassName: sluice\n tls: [{{hosts: [{host}], secretName: cert}}]\n\
             \x20rules:\n - host: {host}\n   http:\n    paths:\n{paths}"
        ))
    }

    fn service(name: &str) -> Manifest {
        object(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n"))
    }

    fn slice(name: &str, service: &str, ready: &[bool]) -> Manifest {
        let endpoints: Vec<String> = (ready.iter().enumerate())
            .map(|(i, ready)| format!("{{addresses: [10.0.0.{i}], conditions: {{ready: {ready}}}}}"))
            .collect();
        object(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
             metadata: {{name: {name}, labels: {{kubernetes.io/service-name: {service}}}}}\n\
             ports: [{{port: 8080}}]\nendpoints: [{}]\n",
            endpoints.join(", ")
        ))
    }

    fn secret(certificate: &str) -> Manifest {
        object(&format!(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: cert}}\n\
             stringData: {{tls.crt: {certificate}, tls.key: key}}\n"
        ))
    }

    /// What a model routes to, in an order that does not depend on hashing.
    fn summary(model: &Model) -> String {
        let mut routes: Vec<String> = (model.ingresses.iter())
            .flat_map(|i| {
                let routes = i.routes.iter().map(|r| format!("{} {} {:?} {}", r.ingress.id, r.host, r.path, r.backend));
                let tls = i.tls.iter().map(|t| format!("{} {:?} {:?}", t.ingress.id, t.hosts, t.certificate));
                routes.chain(tls).collect::<Vec<_>>()
            })
            .collect();
        routes.sort();
        let mut backends: Vec<String> =
            model.backends.iter().map(|(key, target)| format!("{key} {target:?}")).collect();
        backends.sort();
        let mut errors = model.errors.clone();
        errors.sort();
        format!("{routes:#?}\n{backends:#?}\n{errors:#?}")
    }

    #[test]
    fn a_catalog_kept_across_changes_translates_like_a_fresh_one() {
        let options = TranslateOptions { ingress_class: "sluice" };
        let mut objects: Vec<Manifest> = vec![
            service("web"),
            slice("web-1", "web", &[true, false]),
            secret("one"),
            ingress("a", "a.test", &[("/", "web")]),
            ingress("b", "b.test", &[("/", "api"), ("/web", "web")]),
        ];
        let mut catalog = Catalog::default();
        for object in &objects {
            assert!(catalog.apply(object.clone()));
        }
        // Synced with the whole list each time, as the file source does.
        let mut synced = Catalog::default();
        // Each step changes the objects; the kept catalogs must agree with translating them anew.
        let steps: Vec<fn(&mut Vec<Manifest>)> = vec![
            |_| {},
            |o| o[1] = slice("web-1", "web", &[true, true]),
            |o| o.extend([service("api"), slice("api-1", "api", &[true])]),
            |o| o[2] = secret("two"),
            |o| o[3] = ingress("a", "a.test", &[("/", "web"), ("/v2", "api")]),
            |o| _ = o.remove(4),
            |o| o[1] = slice("web-1", "api", &[false]),
            |o| _ = o.remove(1),
            |o| _ = o.remove(0),
        ];
        for (i, step) in steps.iter().enumerate() {
            let before = objects.clone();
            step(&mut objects);
            for gone in before.iter().filter(|b| objects.iter().all(|o| o.object.id() != b.object.id())) {
                assert!(catalog.remove(&gone.object.id()));
            }
            for object in &objects {
                let changed = catalog.apply(object.clone());
                assert_eq!(changed, !before.contains(object), "step {i}: {:?}", object.object.id());
            }
            let fresh = summary(&translate(&objects, &options));
            assert_eq!(summary(&catalog.translate(&options)), fresh, "step {i}");
            assert_eq!(synced.sync(&objects), vec![]);
            assert_eq!(summary(&synced.translate(&options)), fresh, "step {i}, synced");
        }
    }

    #[test]
    fn an_ingress_is_translated_again_only_when_it_or_what_it_reads_changes() {
        let options = TranslateOptions { ingress_class: "sluice" };
        let mut catalog = Catalog::default();
        for object in [service("web"), ingress("a", "a.test", &[("/", "web")]), ingress("b", "b.test", &[("/", "web")])]
        {
            catalog.apply(object);
        }
        let first = catalog.translate(&options);
        let find =
            |model: &Model, name: &str| model.ingresses.iter().find(|i| i.info.id.name == name).cloned().unwrap();
        catalog.apply(slice("web-1", "web", &[true]));
        catalog.apply(ingress("b", "b.test", &[("/b", "web")]));
        let second = catalog.translate(&options);
        assert!(Arc::ptr_eq(&find(&first, "a"), &find(&second, "a")), "a was translated again");
        assert!(!Arc::ptr_eq(&find(&first, "b"), &find(&second, "b")), "b was not translated again");
        let endpoints = |model: &Model| format!("{:?}", model.backends.values().collect::<Vec<_>>());
        assert_ne!(endpoints(&first), endpoints(&second), "the new EndpointSlice was not resolved");
        catalog.apply(secret("one"));
        let third = catalog.translate(&options);
        assert!(!Arc::ptr_eq(&find(&second, "a"), &find(&third, "a")), "a kept a translation that read Secrets");
    }
}
