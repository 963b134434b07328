//! The objects translation reads, indexed by namespace and name, and reading them.

use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::manifest::DEFAULT_NAMESPACE;

/// Objects of one kind by namespace, then name; looked up by `&str` without allocating.
#[derive(Debug)]
pub(crate) struct Names<T>(pub(crate) HashMap<String, HashMap<String, T>>);

impl<T> Default for Names<T> {
    fn default() -> Self {
        Self(HashMap::default())
    }
}

impl<T> Names<T> {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.0.get(namespace)?.get(name)
    }

    pub(crate) fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut T> {
        self.0.get_mut(namespace)?.get_mut(name)
    }

    pub(crate) fn insert(&mut self, namespace: &str, name: &str, value: T) -> Option<T> {
        match self.0.get_mut(namespace) {
            Some(names) => names.insert(name.to_owned(), value),
            None => {
                self.0.entry(namespace.to_owned()).or_default().insert(name.to_owned(), value);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let names = self.0.get_mut(namespace)?;
        let removed = names.remove(name);
        if names.is_empty() {
            self.0.remove(namespace);
        }
        removed
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.0.values().flat_map(HashMap::values)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.values_mut().flat_map(HashMap::values_mut)
    }
}

impl<T: PartialEq> Names<T> {
    /// Stores `value` unless the same is stored; returns whether anything changed.
    pub(crate) fn replace(&mut self, namespace: &str, name: &str, value: T) -> bool {
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

/// A non-empty entry of a Secret, from `data` (base64, as the API server stores it) or
/// `stringData` (plain, handy in manifest files).
pub(crate) fn secret_entry(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    let data = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
    data.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.clone().into_bytes()))
        .filter(|bytes| !bytes.is_empty())
}

pub(crate) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

pub(crate) fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}
