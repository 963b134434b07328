//! Setting, adding and removing request and response headers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Config, check};

/// The `headers` plugin's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Headers {
    /// Applied to the request before it goes upstream.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    /// Applied to the response before it goes to the client.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

/// Header changes, applied in the order `remove`, `set`, `add`. Names are lower-case.
/// This is also the value of `sluice.dev/request-headers` and `sluice.dev/response-headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers removed (every value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Headers set, replacing every value they had.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Values added after the ones a header already has.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Lower-cases every name, so that set and remove find headers whatever case was written.
    pub fn normalize(mut self) -> Self {
        let lower = |map: BTreeMap<String, String>| map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        self.remove.iter_mut().for_each(|name| name.make_ascii_lowercase());
        self.set = lower(self.set);
        self.add = lower(self.add);
        self
    }
}

impl Config for HeaderOps {
    fn validate(&self) -> Result<(), String> {
        for name in &self.remove {
            check::header_name(name).map_err(|e| format!("remove: {e}"))?;
        }
        for (list, map) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in map {
                check::header_name(name).map_err(|e| format!("{list}: {e}"))?;
                check::header_value(value).map_err(|e| format!("{list}.{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Config for Headers {
    fn validate(&self) -> Result<(), String> {
        self.request.validate().map_err(|e| format!("request.{e}"))?;
        self.response.validate().map_err(|e| format!("response.{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_and_normalizes() {
        let ops: HeaderOps = crate::parse(r#"{"set":{"X-Env":"prod"},"remove":["X-Debug"]}"#).unwrap();
        let ops = ops.normalize();
        assert_eq!(ops.set.get("x-env").map(String::as_str), Some("prod"));
        assert_eq!(ops.remove, ["x-debug"]);
        assert!(!ops.is_empty() && HeaderOps::default().is_empty());
        let bad: Result<Headers, _> = crate::parse(r#"{"response":{"add":{"x-a":"1\r\nx-b: 2"}}}"#);
        assert!(bad.unwrap_err().starts_with("response.add.x-a:"));
        assert!(crate::parse::<HeaderOps>(r#"{"sett":{}}"#).is_err());
    }
}
