//! Multi-document YAML (or JSON) manifests to typed Kubernetes objects.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ConfigError, ObjectRef};

/// The kinds of object Sluice routes with, shared so that keeping one costs no copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    /// Only Secrets of type `kubernetes.io/tls`, and others labelled [`BACKEND_TLS_LABEL`] or
    /// [`BASIC_AUTH_LABEL`], are kept.
    Secret(Arc<Secret>),
    /// Header lists (`custom-headers`).
    ConfigMap(Arc<ConfigMap>),
}

impl Object {
    /// The object's identity (namespace is `default` when unset; IngressClass is cluster-wide).
    pub fn id(&self) -> ObjectRef {
        let (kind, namespace, name) = self.identity();
        ObjectRef::new(kind, namespace, name)
    }

    /// Kind, namespace and name, borrowed (no allocation).
    pub(crate) fn identity(&self) -> (&'static str, &str, &str) {
        let (kind, meta) = match self {
            Object::Ingress(o) => ("Ingress", &o.metadata),
            Object::IngressClass(o) => ("IngressClass", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Object::Secret(o) => ("Secret", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
        };
        (kind, meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE), meta.name.as_deref().unwrap_or_default())
    }
}

/// One object and where it came from (a file path, or `kube` for the API server).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub origin: Arc<str>,
    pub object: Object,
}

/// The result of reading one file.
#[derive(Debug, Default)]
pub struct Parsed {
    pub manifests: Vec<Manifest>,
    pub errors: Vec<ConfigError>,
    /// False when the text was not YAML at all, so nothing in it could be read: a source should
    /// keep serving what the file held before rather than drop it.
    pub readable: bool,
}

pub(crate) const DEFAULT_NAMESPACE: &str = "default";
/// The type of Secret that holds a certificate and its key.
pub(crate) const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The label that marks a Secret of another type (a CA alone, in `ca.crt`) that an Ingress's
/// `proxy-ssl-secret` may name.
pub const BACKEND_TLS_LABEL: &str = "sluice.dev/backend-tls";
/// The label that marks a Secret of users and password hashes that an Ingress's `auth-secret`
/// may name.
pub const BASIC_AUTH_LABEL: &str = "sluice.dev/basic-auth";

/// Parses every document of a multi-document YAML text, unwrapping `kind: List`. Objects of
/// kinds Sluice does not use are skipped silently (manifest directories hold Deployments too);
/// objects it uses but cannot read are reported, naming the field.
pub fn parse_manifests(origin: &Arc<str>, text: &str) -> Parsed {
    // The streaming reader budgets each document on its own (node counts, depth, aliases), so
    // a file may hold any number of objects while one pathological document is still refused.
    let mut reader = text.as_bytes();
    let documents: Result<Vec<Value>, _> = serde_saphyr::read(&mut reader).collect();
    let documents = match documents {
        Ok(documents) => documents,
        Err(e) => {
            let message = format!("not valid YAML: {e}");
            return Parsed { errors: vec![ConfigError::file(origin, message)], ..Parsed::default() };
        }
    };
    let mut parsed = Parsed { readable: true, ..Parsed::default() };
    for (index, document) in documents.into_iter().enumerate() {
        parse_document(origin, document, &format!("document {}", index + 1), &mut parsed);
    }
    parsed
}

fn parse_document(origin: &Arc<str>, document: Value, place: &str, out: &mut Parsed) {
    if document.is_null() {
        return;
    }
    let api_version = document.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let Some(kind) = document.get("kind").and_then(Value::as_str) else {
        out.errors.push(ConfigError::file(origin, format!("{place}: has no `kind`")));
        return;
    };
    if kind == "List" {
        let Some(Value::Array(items)) = document.get("items") else {
            out.errors.push(ConfigError::file(origin, format!("{place}: List has no `items`")));
            return;
        };
        for (index, item) in items.iter().enumerate() {
            parse_document(origin, item.clone(), &format!("{place} item {index}"), out);
        }
        return;
    }
    let object = match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => typed(origin, "Ingress", document).map(Object::Ingress),
        ("networking.k8s.io/v1", "IngressClass") => typed(origin, "IngressClass", document).map(Object::IngressClass),
        ("v1", "Service") => typed(origin, "Service", document).map(Object::Service),
        ("v1", "ConfigMap") => typed(origin, "ConfigMap", document).map(Object::ConfigMap),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(origin, "EndpointSlice", document).map(Object::EndpointSlice),
        ("v1", "Secret")
            if document.get("type").and_then(Value::as_str) == Some(TLS_SECRET_TYPE)
                || document.get("metadata").and_then(|m| m.get("labels")).is_some_and(|l| {
                    [BACKEND_TLS_LABEL, BASIC_AUTH_LABEL].iter().any(|label| l.get(label).is_some())
                }) =>
        {
            typed(origin, "Secret", document).map(Object::Secret)
        }
        (_, "Ingress" | "IngressClass" | "Service" | "EndpointSlice") => Err(Box::new(ConfigError::field(
            origin,
            &identity(kind_name(kind), &document),
            "apiVersion",
            format!("unsupported apiVersion {api_version:?} for {kind}"),
        ))),
        _ => return,
    };
    match object {
        Ok(object) => out.manifests.push(Manifest { origin: origin.clone(), object }),
        Err(e) => out.errors.push(*e),
    }
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "Ingress" => "Ingress",
        "IngressClass" => "IngressClass",
        "Service" => "Service",
        _ => "EndpointSlice",
    }
}

/// Best-effort identity of an object that may not deserialize, for error messages. A name that
/// is not a string (`name: y`, which YAML 1.1 reads as a boolean) is shown as it was read.
fn identity(kind: &'static str, document: &Value) -> ObjectRef {
    let meta = document.get("metadata");
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let name = match meta.and_then(|m| m.get("name")) {
        Some(Value::String(name)) => name.clone(),
        Some(scalar @ (Value::Bool(_) | Value::Number(_))) => scalar.to_string(),
        _ => "<unnamed>".to_owned(),
    };
    ObjectRef::new(kind, text("namespace").unwrap_or(DEFAULT_NAMESPACE), name)
}

/// What is wrong with `metadata.name` as found, if anything: what was found, and what was expected.
fn not_a_name(found: Option<&Value>) -> Option<String> {
    let unquoted = "; quote it to make it a string";
    match found {
        Some(Value::String(_)) => None,
        None | Some(Value::Null) => Some("is required: expected a string, found none".to_owned()),
        Some(Value::Bool(value)) => Some(format!(
            "expected a string, found the boolean {value} (YAML 1.1 reads y, n, yes, no, on and off as booleans){unquoted}"
        )),
        Some(Value::Number(value)) => Some(format!("expected a string, found the number {value}{unquoted}")),
        Some(Value::Array(_)) => Some("expected a string, found a list".to_owned()),
        Some(Value::Object(_)) => Some("expected a string, found a mapping".to_owned()),
    }
}

fn typed<T: DeserializeOwned>(
    origin: &Arc<str>,
    kind: &'static str,
    document: Value,
) -> Result<Arc<T>, Box<ConfigError>> {
    let id = identity(kind, &document);
    if let Some(found) = not_a_name(document.get("metadata").and_then(|m| m.get("name"))) {
        return Err(Box::new(ConfigError::field(origin, &id, "metadata.name", found)));
    }
    serde_path_to_error::deserialize(document).map(Arc::new).map_err(|e| {
        let field = e.path().to_string();
        Box::new(ConfigError::field(origin, &id, field, e.into_inner().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_manifests(&Arc::from("test.yaml"), text)
    }

    #[test]
    fn a_name_that_is_not_a_string_is_reported_as_found() {
        let parsed = parse(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: y}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: 42}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {}\n",
        );
        let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "test.yaml: Ingress default/true: metadata.name: expected a string, found the boolean true"
            ),
            "{errors:?}"
        );
        assert!(errors[0].ends_with("quote it to make it a string"), "{errors:?}");
        assert_eq!(
            errors[1],
            "test.yaml: Service default/42: metadata.name: expected a string, found the number 42; quote it to make it a string"
        );
        assert_eq!(
            errors[2],
            "test.yaml: Service default/<unnamed>: metadata.name: is required: expected a string, found none"
        );
    }

    #[test]
    fn reads_multiple_documents_and_lists_and_skips_other_kinds() {
        let parsed = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: x}\n",
        );
        assert!(parsed.readable);
        assert_eq!(parsed.errors, vec![]);
        let ids: Vec<String> = parsed.manifests.iter().map(|m| m.object.id().to_string()).collect();
        assert_eq!(ids, ["Service default/a", "Service x/b"]);
    }

    #[test]
    fn names_the_field_of_a_bad_object_and_keeps_the_others() {
        let parsed = parse(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad, namespace: shop}\n\
             spec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        pathType: 7\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n",
        );
        assert_eq!(parsed.manifests.len(), 1);
        let error = parsed.errors[0].to_string();
        assert!(error.starts_with("test.yaml: Ingress shop/bad: spec.rules[0].http.paths[0].pathType: "), "{error}");
    }

    #[test]
    fn reads_files_with_thousands_of_documents() {
        let one = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
        let text: Vec<String> = (0..5000).map(|i| one.replace("name: s", &format!("name: s{i}"))).collect();
        let parsed = parse(&text.join("---\n"));
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.manifests.len(), 5000);
    }

    #[test]
    fn reports_syntax_errors_as_unreadable() {
        let parsed = parse("kind: [unclosed\n");
        assert!(!parsed.readable);
        assert!(parsed.errors[0].to_string().starts_with("test.yaml: not valid YAML"));
    }

    #[test]
    fn rejects_removed_api_versions() {
        let parsed = parse("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n");
        assert_eq!(
            parsed.errors[0].to_string(),
            "test.yaml: Ingress default/old: apiVersion: unsupported apiVersion \"extensions/v1beta1\" for Ingress"
        );
    }
}
