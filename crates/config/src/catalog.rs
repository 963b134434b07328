//! The objects translation reads, kept from one translation to the next so that a change costs
//! in proportion to what it touches: an Ingress is translated again when it changes
//! ([`crate::translate`]), a backend resolved again when its Service or EndpointSlices change
//! ([`crate::resolve`]).

use std::collections::hash_map::Entry;
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::core::v1::{ConfigMap, LoadBalancerIngress};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::annotations;
use crate::error::{ConfigError, ObjectRef};
use crate::index::{Names, Referenced, name, namespace};
use crate::manifest::{DEFAULT_NAMESPACE, Manifest, Object};
use crate::model::{BackendKey, IngressInfo, IngressModel, Model};
use crate::resolve::{Backends, Resolved, ServiceEntry, SliceEntry};
use crate::translate::{is_ours, translate_ingress};

/// What the translation needs to know besides the objects.
#[derive(Debug, Clone)]
pub struct TranslateOptions<'a> {
    /// The IngressClass whose Ingresses are ours.
    pub ingress_class: &'a str,
    /// The status of a request refused by a rate limit (`--limit-status`).
    pub limit_status: u16,
}

impl<'a> TranslateOptions<'a> {
    /// The Ingresses of `ingress_class`, with the other options at their defaults.
    pub fn new(ingress_class: &'a str) -> Self {
        Self { ingress_class, limit_status: sluice_builtins::rate_limit::DEFAULT_STATUS }
    }
}

/// Translates manifests into the routing model. Pure and total: every problem becomes a
/// [`ConfigError`] and only the part it is about is left out. An object defined twice is
/// reported and its first definition used.
pub fn translate<'a>(manifests: impl IntoIterator<Item = &'a Manifest>, options: &TranslateOptions<'_>) -> Model {
    let mut catalog = Catalog::default();
    let errors = catalog.sync(manifests);
    let mut model = catalog.translate(options);
    model.errors.extend(errors);
    model
}

#[derive(Debug)]
struct IngressEntry {
    origin: Arc<str>,
    ingress: Arc<Ingress>,
    /// Dropped when the Ingress, or a Secret or ConfigMap, changes.
    translated: Option<Arc<IngressModel>>,
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
    /// The `limit_status` of the kept translations.
    limit_status: u16,
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

    /// Something every Ingress's translation may read changed (when `changed`): a Secret, a
    /// ConfigMap or the rate limits' status. Every Ingress is translated again; these are few
    /// and change seldom. Returns `changed`.
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
        if options.limit_status != self.limit_status {
            self.limit_status = options.limit_status;
            self.translations_stale(true);
        }
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
            let translated = (entry.translated).get_or_insert_with(|| {
                Arc::new(translate_ingress(&entry.origin, &entry.ingress, &self.referenced, self.limit_status))
            });
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
        let mut translated = translate_ingress(origin, ingress, &self.referenced, options.limit_status);
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
        let options = TranslateOptions::new("sluice");
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
        let options = TranslateOptions::new("sluice");
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
        let fourth = catalog.translate(&TranslateOptions { limit_status: 429, ..options.clone() });
        assert!(!Arc::ptr_eq(&find(&third, "a"), &find(&fourth, "a")), "a kept a translation of another limit status");
        let fifth = catalog.translate(&TranslateOptions { limit_status: 429, ..options });
        assert!(Arc::ptr_eq(&find(&fourth, "a"), &find(&fifth, "a")), "a was translated again");
    }
}
