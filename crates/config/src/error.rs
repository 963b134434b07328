use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Identifies one Kubernetes object in messages: `Ingress default/web`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &'static str, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A problem with the configuration, precise enough to fix without guessing: where it came
/// from (file), which object, which field or annotation, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConfigError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub object: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

fn display<S: serde::Serializer>(object: &Option<ObjectRef>, s: S) -> Result<S::Ok, S::Error> {
    match object {
        Some(object) => s.collect_str(object),
        None => s.serialize_none(),
    }
}

impl ConfigError {
    /// An error about a whole file (unreadable, not YAML).
    pub fn file(origin: &Arc<str>, message: impl Into<String>) -> Self {
        Self { origin: Some(origin.clone()), object: None, field: None, message: message.into() }
    }

    /// An error about one field (or annotation) of one object.
    pub fn field(origin: &Arc<str>, object: &ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: Some(origin.clone()),
            object: Some(object.clone()),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// The message for a referenced object that does not exist: `Secret default/cert not found`.
/// [`ConfigError::is_missing_object`] recognizes it.
pub(crate) fn not_found(what: impl fmt::Display) -> String {
    format!("{what}{NOT_FOUND}")
}

const NOT_FOUND: &str = " not found";

impl ConfigError {
    /// Whether the error is about an object that is referred to and missing (made by
    /// `not_found`), which applying that object mends.
    pub fn is_missing_object(&self) -> bool {
        self.message.contains(NOT_FOUND)
    }

    /// The error without the file or source it came from, for a reader who knows it.
    pub fn without_origin(&self) -> Self {
        Self { origin: None, ..self.clone() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
