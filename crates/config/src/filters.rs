//! The `sluice.dev/filters` annotation: which Wasm filters run on an Ingress's routes.

use serde::{Deserialize, Serialize};

/// Attaches filters to every route of an Ingress, in order.
pub const FILTERS: &str = "sluice.dev/filters";

/// One filter attached to an Ingress's routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FilterSpec {
    /// The plugin module's name (`NAME.wasm` in the plugin directory).
    pub plugin: String,
    /// The configuration handed to the plugin, as JSON text (`null` when none is given).
    pub config: String,
    pub failure: FailurePolicy,
    pub isolation: Isolation,
    /// Where the attachment was declared (`metadata.annotations[...]`), for error messages.
    #[serde(skip)]
    pub field: String,
}

/// What a request gets when its filter cannot run (trap, deadline, memory cap, missing or
/// broken module, invalid configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Answer 500: a filter that guards something must not be skipped.
    #[default]
    Closed,
    /// Skip the filter and go on.
    Open,
}

/// How much guest state survives between requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Instances are reused, one request at a time: guest memory survives from one request
    /// to the next (cheapest).
    #[default]
    Instance,
    /// A fresh instance for every request: nothing of one request is visible to the next.
    Request,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    plugin: String,
    #[serde(default)]
    config: serde_json::Value,
    #[serde(default)]
    failure: FailurePolicy,
    #[serde(default)]
    isolation: Isolation,
}

/// Parses the annotation's value: a YAML list of `{plugin, config, failure, isolation}`.
pub fn parse_filters(value: &str) -> Result<Vec<FilterSpec>, String> {
    let entries: Vec<Entry> = serde_saphyr::from_str(value).map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            if !valid_plugin_name(&entry.plugin) {
                return Err(format!(
                    "[{i}].plugin: {:?} is not a plugin name (letters, digits, '-', '_' and '.', not starting with '.')",
                    entry.plugin
                ));
            }
            Ok(FilterSpec {
                plugin: entry.plugin,
                config: entry.config.to_string(),
                failure: entry.failure,
                isolation: entry.isolation,
                field: format!("metadata.annotations[{FILTERS}][{i}]"),
            })
        })
        .collect()
}

/// Whether `name` can name a plugin module: a plain file name, so a name never reaches outside
/// the plugin directory.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_with_defaults() {
        let specs = parse_filters(
            "- plugin: add-tenant\n  config: {header: x-tenant, value: acme}\n  failure: open\n- plugin: audit\n  isolation: request\n",
        )
        .unwrap();
        assert_eq!(specs[0].plugin, "add-tenant");
        assert_eq!(specs[0].config, r#"{"header":"x-tenant","value":"acme"}"#);
        assert_eq!(specs[0].failure, FailurePolicy::Open);
        assert_eq!(specs[0].isolation, Isolation::Instance);
        assert_eq!(specs[1].config, "null");
        assert_eq!(specs[1].failure, FailurePolicy::Closed);
        assert_eq!(specs[1].isolation, Isolation::Request);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_names() {
        assert!(parse_filters("- plugin: a\n  failures: open\n").unwrap_err().contains("failures"));
        assert!(parse_filters("- plugin: ../etc/passwd\n").unwrap_err().contains("[0].plugin"));
        assert!(parse_filters("- plugin: a\n  failure: sometimes\n").is_err());
        assert!(parse_filters("plugin: a").is_err());
    }
}
