//! Plugin modules from the `--plugins` directory and from ConfigMaps labelled
//! `sluice.dev/plugin` (cluster mode), and the filter chains Ingresses attach.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use sluice_config::annotations::parse_size;
use sluice_config::{ConfigError, FailurePolicy, FilterSpec, IngressInfo, Isolation, Model, ObjectRef};
use sluice_filter::{Attachment, Chain, Engine, Limits, Plugin};
use sluice_route::PluginInfo;

use crate::shared::{PLUGIN_LABEL, Stamp};

/// Names the attachment that stands for an Ingress's invalid filter annotations.
const INVALID: &str = "invalid-annotations";

/// The loaded plugin modules: the built-ins, and `NAME.wasm` in the plugin directory with
/// optional limits in `NAME.limits.yaml` (`deadline: 20ms`, `memory: 128m`).
pub struct Plugins {
    engine: Engine,
    dir: Option<PathBuf>,
    defaults: Limits,
    /// Compiled into the binary; their names are taken.
    builtins: BTreeMap<&'static str, Result<Arc<Plugin>, String>>,
    modules: BTreeMap<String, Module>,
    /// Published as ConfigMaps (cluster mode), by plugin name.
    published: BTreeMap<String, Module>,
    /// ConfigMaps that publish a name already taken.
    published_errors: Vec<ConfigError>,
    /// Results of the plugins' own configuration checks, by module hash and configuration.
    validated: HashMap<(String, String), Result<(), String>>,
    no_filters: Arc<Chain>,
}

struct Module {
    /// Tells a change without reading: the stamps of the module and its limits file, or the
    /// ConfigMap's resourceVersion.
    stamp: (Option<Stamp>, Option<Stamp>, Option<String>),
    origin: Arc<str>,
    plugin: Result<Arc<Plugin>, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    deadline: Option<String>,
    memory: Option<String>,
}

impl Plugins {
    /// The `builtins` (name, component, limits) and the plugins of `dir` (none without one),
    /// run by `engine` with `defaults` unless a plugin's limits file says otherwise. The
    /// built-ins are compiled here; the directory's modules are loaded by [`Plugins::refresh`].
    pub fn new(
        engine: Engine,
        dir: Option<PathBuf>,
        defaults: Limits,
        builtins: &[(&'static str, &[u8], Limits)],
    ) -> Self {
        let builtins = builtins
            .iter()
            .map(|&(name, bytes, limits)| {
                let plugin = engine.load(name, bytes, limits).map(Arc::new);
                if let Err(e) = &plugin {
                    tracing::error!(plugin = name, "built-in plugin not loaded: {e}");
                }
                (name, plugin)
            })
            .collect();
        let no_filters = Arc::new(Chain::default());
        Self {
            engine,
            dir,
            defaults,
            builtins,
            modules: BTreeMap::new(),
            published: BTreeMap::new(),
            published_errors: Vec::new(),
            validated: HashMap::new(),
            no_filters,
        }
    }

    /// The plugin directory, for watching.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Loads modules that are new or changed and forgets removed ones. Compiling happens here,
    /// off the request path; requests keep using the previous module until the snapshot that
    /// refers to the new one is published. Returns whether anything changed.
    pub fn refresh(&mut self) -> bool {
        let Some(dir) = &self.dir else { return false };
        let mut present = HashSet::new();
        let mut changed = false;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".wasm")) else {
                continue;
            };
            if !sluice_config::valid_plugin_name(name) {
                continue;
            }
            present.insert(name.to_owned());
            let limits_path = dir.join(format!("{name}.limits.yaml"));
            let stamp = (Stamp::read(&path), Stamp::read(&limits_path), None);
            if self.modules.get(name).is_some_and(|m| m.stamp == stamp) {
                continue;
            }
            let plugin = if self.builtins.contains_key(name) {
                Err(format!("{name} is the name of a built-in plugin; rename the module"))
            } else {
                self.load(name, &path, &limits_path).map(Arc::new)
            };
            if let Err(e) = &plugin {
                tracing::warn!(plugin = name, "plugin not loaded: {e}");
            }
            let origin = Arc::from(path.display().to_string());
            self.modules.insert(name.to_owned(), Module { stamp, origin, plugin });
            changed = true;
        }
        let before = self.modules.len();
        self.modules.retain(|name, _| present.contains(name));
        changed || self.modules.len() != before
    }

    /// Loads the modules published as ConfigMaps labelled `sluice.dev/plugin=NAME`: the module
    /// in `binaryData` (`NAME.wasm`, or its only key), optional limits in `data["limits.yaml"]`
    /// as in a limits file. Unchanged ConfigMaps (same resourceVersion) are not recompiled.
    /// Returns whether anything changed.
    pub fn set_published<'a>(&mut self, config_maps: impl IntoIterator<Item = &'a ConfigMap>) -> bool {
        let mut published = BTreeMap::new();
        let mut errors = Vec::new();
        for map in config_maps {
            let Some(name) = map.metadata.labels.as_ref().and_then(|l| l.get(PLUGIN_LABEL)) else { continue };
            let namespace = map.metadata.namespace.as_deref().unwrap_or("default");
            let id = ObjectRef::new("ConfigMap", namespace, map.metadata.name.as_deref().unwrap_or_default());
            let origin: Arc<str> = Arc::from(format!("ConfigMap {namespace}/{}", id.name));
            let field = format!("metadata.labels[{PLUGIN_LABEL}]");
            let taken = if !sluice_config::valid_plugin_name(name) {
                Some(format!("{name:?} is not a plugin name"))
            } else if self.builtins.contains_key(name.as_str()) || self.modules.contains_key(name) {
                Some(format!("plugin {name} is built in or in the plugin directory already"))
            } else if published.contains_key(name) {
                Some(format!("plugin {name} is published by another ConfigMap already"))
            } else {
                None
            };
            if let Some(message) = taken {
                errors.push(ConfigError::field(&origin, &id, field, message));
                continue;
            }
            let stamp = (None, None, map.metadata.resource_version.clone());
            let module = match self.published.remove(name) {
                Some(module) if stamp.2.is_some() && module.stamp == stamp => module,
                _ => {
                    let plugin = self.load_published(name, map).map(Arc::new);
                    if let Err(e) = &plugin {
                        tracing::warn!(plugin = %name, config_map = %id, "plugin not loaded: {e}");
                    }
                    Module { stamp, origin, plugin }
                }
            };
            published.insert(name.clone(), module);
        }
        let changed = published.len() != self.published.len()
            || published.iter().zip(&self.published).any(|((a, m), (b, n))| a != b || m.stamp != n.stamp)
            || errors != self.published_errors;
        self.published = published;
        self.published_errors = errors;
        changed
    }

    fn load_published(&self, name: &str, map: &ConfigMap) -> Result<Plugin, String> {
        let binary = map.binary_data.as_ref();
        let wasm = binary
            .and_then(|b| b.get(&format!("{name}.wasm")).or_else(|| (b.len() == 1).then(|| b.values().next())?));
        let Some(wasm) = wasm else {
            return Err(format!("binaryData holds no {name}.wasm"));
        };
        let limits = match map.data.as_ref().and_then(|d| d.get("limits.yaml")) {
            Some(text) => self.limits(text).map_err(|e| format!("data[limits.yaml]: {e}"))?,
            None => self.defaults,
        };
        self.engine.load(name, &wasm.0, limits)
    }

    fn load(&self, name: &str, path: &Path, limits_path: &Path) -> Result<Plugin, String> {
        let limits = match std::fs::read_to_string(limits_path) {
            Ok(text) => self.limits(&text).map_err(|e| format!("{}: {e}", limits_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.defaults,
            Err(e) => return Err(format!("{}: {e}", limits_path.display())),
        };
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        self.engine.load(name, &bytes, limits)
    }

    fn limits(&self, text: &str) -> Result<Limits, String> {
        let file: LimitsFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let deadline = file.deadline.map(|d| humantime::parse_duration(&d).map_err(|e| format!("deadline: {e}")));
        let memory = file.memory.map(|m| parse_size(&m).map_err(|e| format!("memory: {e}")));
        Ok(Limits {
            deadline: deadline.transpose()?.unwrap_or(self.defaults.deadline).max(Duration::from_millis(1)),
            memory: memory.transpose()?.map_or(self.defaults.memory, |m| usize::try_from(m).unwrap_or(usize::MAX)),
        })
    }

    /// Runs each loaded plugin's configuration check on every configuration the model
    /// attaches it with that has not been checked yet.
    pub async fn validate(&mut self, model: &Model) {
        let mut validated = HashMap::new();
        for ingress in &model.ingresses {
            for spec in ingress.info.filters.iter().flatten() {
                let Some(Ok(plugin)) = self.module(&spec.plugin).cloned() else { continue };
                let key = (plugin.hash.clone(), spec.config.clone());
                if validated.contains_key(&key) {
                    continue;
                }
                let result = match self.validated.remove(&key) {
                    Some(result) => result,
                    None => plugin.validate_config(&spec.config).await,
                };
                validated.insert(key, result);
            }
        }
        self.validated = validated;
    }

    /// The chain of an Ingress's filters. What cannot run (a missing or broken module, a
    /// rejected configuration) stays in the chain, failing by its policy, and is reported.
    pub fn chain(&self, ingress: &IngressInfo, errors: &mut Vec<ConfigError>) -> Arc<Chain> {
        let specs = match &ingress.filters {
            Ok(specs) if specs.is_empty() => return self.no_filters.clone(),
            Ok(specs) => specs,
            Err(why) => {
                // Reported by the translation; every route of the Ingress fails closed.
                let spec = FilterSpec {
                    plugin: INVALID.to_owned(),
                    config: "null".to_owned(),
                    failure: FailurePolicy::Closed,
                    isolation: Isolation::Instance,
                    field: "metadata.annotations".to_owned(),
                };
                let attachment = Attachment::new(spec, Err(format!("invalid annotation: {why}")));
                return Arc::new(Chain {
                    filters: Box::new([attachment]),
                    namespace: ingress.id.namespace.as_str().into(),
                });
            }
        };
        let filters = specs
            .iter()
            .map(|spec| {
                let plugin = self.plugin(spec);
                if let Err(why) = &plugin {
                    errors.push(attachment_error(ingress, spec, why));
                }
                Attachment::new(spec.clone(), plugin)
            })
            .collect();
        Arc::new(Chain { filters, namespace: ingress.id.namespace.as_str().into() })
    }

    fn plugin(&self, spec: &FilterSpec) -> Result<Arc<Plugin>, String> {
        let plugin = loaded(&spec.plugin, self.module(&spec.plugin))?;
        match self.validated.get(&(plugin.hash.clone(), spec.config.clone())) {
            Some(Err(why)) => Err(rejected(&spec.plugin, why)),
            // Not validated means `validate` has not seen this model; it always runs first.
            _ => Ok(plugin),
        }
    }

    /// Every module by name, for checks away from the control loop (the admission webhook).
    pub(crate) fn table(&self) -> Modules {
        let builtins = self.builtins.iter().map(|(name, plugin)| ((*name).to_owned(), plugin.clone()));
        // The directory's modules win over published ones; the built-ins over both.
        let modules = self.published.iter().chain(&self.modules).map(|(name, m)| (name.clone(), m.plugin.clone()));
        Modules(modules.chain(builtins).collect())
    }

    /// A built-in, the directory's or a published module of that name.
    fn module(&self, name: &str) -> Option<&Result<Arc<Plugin>, String>> {
        let module = self.modules.get(name).or_else(|| self.published.get(name));
        self.builtins.get(name).or_else(|| module.map(|m| &m.plugin))
    }

    /// The modules, for `/config`: built-ins first.
    pub fn describe(&self) -> Vec<PluginInfo> {
        let builtins = self.builtins.iter().map(|(name, plugin)| (*name, plugin, true));
        let modules = self.modules.iter().chain(&self.published);
        let modules = modules.map(|(name, module)| (name.as_str(), &module.plugin, false));
        builtins
            .chain(modules)
            .map(|(name, plugin, builtin)| PluginInfo {
                name: name.to_owned(),
                builtin,
                hash: plugin.as_ref().ok().map(|p| p.hash.clone()),
                error: plugin.as_ref().err().cloned(),
            })
            .collect()
    }

    /// Modules that failed to load, as configuration errors.
    pub fn errors(&self) -> impl Iterator<Item = ConfigError> + '_ {
        let origin: Arc<str> = Arc::from("built-in plugins");
        let builtins = self.builtins.iter().filter_map(move |(name, plugin)| {
            plugin.as_ref().err().map(|e| ConfigError::file(&origin, format!("built-in plugin {name} not loaded: {e}")))
        });
        let modules = self.modules.values().chain(self.published.values()).filter_map(|m| {
            m.plugin.as_ref().err().map(|e| ConfigError::file(&m.origin, format!("plugin not loaded: {e}")))
        });
        builtins.chain(modules).chain(self.published_errors.iter().cloned())
    }
}

/// The plugin modules by name, as the control plane last published them.
#[derive(Default)]
pub(crate) struct Modules(BTreeMap<String, Result<Arc<Plugin>, String>>);

impl Modules {
    /// The errors of attaching `specs` to `ingress`: modules that are missing or did not load,
    /// and configurations the plugin rejects (checked here, in fresh instances), worded as
    /// the control plane words them.
    pub(crate) async fn check(&self, ingress: &IngressInfo, specs: &[FilterSpec]) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for spec in specs {
            let checked = match loaded(&spec.plugin, self.0.get(&spec.plugin)) {
                Ok(plugin) => plugin.validate_config(&spec.config).await.map_err(|why| rejected(&spec.plugin, &why)),
                Err(why) => Err(why),
            };
            if let Err(why) = checked {
                errors.push(attachment_error(ingress, spec, &why));
            }
        }
        errors
    }
}

/// The module of plugin `name`, or why there is none.
fn loaded(name: &str, module: Option<&Result<Arc<Plugin>, String>>) -> Result<Arc<Plugin>, String> {
    match module {
        None => Err(format!("plugin {name} is not loaded (no {name}.wasm in the plugin directory or ConfigMap)")),
        Some(Err(e)) => Err(format!("plugin {name} failed to load: {e}")),
        Some(Ok(plugin)) => Ok(plugin.clone()),
    }
}

fn rejected(name: &str, why: &str) -> String {
    format!("plugin {name} rejects the configuration: {why}")
}

/// The error for a filter of `ingress` that cannot run, and what that does to its routes.
fn attachment_error(ingress: &IngressInfo, spec: &FilterSpec, why: &str) -> ConfigError {
    let effect = match spec.failure {
        FailurePolicy::Closed => "its routes answer 500",
        FailurePolicy::Open => "the filter is skipped",
    };
    ConfigError::field(&ingress.origin, &ingress.id, spec.field.clone(), format!("{why}; {effect}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_in_that_does_not_load_is_an_error_and_keeps_its_name() {
        let engine = Engine::new(None).unwrap();
        let mut plugins =
            Plugins::new(engine, None, Limits::default(), &[("rewrite", b"not a component", Limits::default())]);
        let errors: Vec<String> = plugins.errors().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("built-in plugins: built-in plugin rewrite not loaded: "), "{errors:?}");
        assert!(!plugins.refresh(), "no plugin directory");
        assert_eq!(plugins.describe()[0].name, "rewrite");
        assert!(plugins.describe()[0].builtin);
    }
}
