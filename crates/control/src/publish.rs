use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use sluice_config::{Catalog, ConfigError, Manifest, Model, TranslateOptions};
use sluice_filter::Snapshot;

use crate::plugins::Plugins;

/// Compiles manifests and plugin modules into snapshots and publishes them.
pub struct Publisher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    ingress_class: String,
    plugins: Plugins,
    /// What [`Publisher::publish`] last translated, so the next publish translates only what changed.
    catalog: Catalog,
}

impl Publisher {
    /// Publishes into `snapshot` the Ingresses of `ingress_class`, with filters from `plugins`.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, ingress_class: String, plugins: Plugins) -> Self {
        Self { snapshot, ingress_class, plugins, catalog: Catalog::default() }
    }

    /// Loads new and changed plugin modules; returns whether anything changed.
    pub fn refresh_plugins(&mut self) -> bool {
        self.plugins.refresh()
    }

    /// Loads new and changed plugin modules published as ConfigMaps; returns whether anything
    /// changed.
    pub fn set_published_plugins<'a>(
        &mut self,
        config_maps: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::ConfigMap>,
    ) -> bool {
        self.plugins.set_published(config_maps)
    }

    /// The plugin directory, for watching.
    pub fn plugin_dir(&self) -> Option<&std::path::Path> {
        self.plugins.dir()
    }

    /// Translates `manifests` (only what changed since the last publish) with `source_errors`
    /// from reading them, compiles them, checks the plugin configurations they attach, and
    /// publishes the result in one atomic swap. Returns the published snapshot.
    pub async fn publish<'a>(
        &mut self,
        manifests: impl IntoIterator<Item = &'a Manifest>,
        source_errors: impl IntoIterator<Item = ConfigError>,
    ) -> Arc<Snapshot> {
        let started = Instant::now();
        let duplicates = self.catalog.sync(manifests);
        let mut model = self.catalog.translate(&TranslateOptions { ingress_class: &self.ingress_class });
        model.errors.extend(duplicates.into_iter().chain(source_errors));
        self.publish_model(model, started).await
    }

    /// Translates `catalog` (only what changed since its last translation) and publishes the
    /// result like [`Publisher::publish`].
    pub async fn publish_catalog(&mut self, catalog: &mut Catalog) -> Arc<Snapshot> {
        let started = Instant::now();
        let model = catalog.translate(&TranslateOptions { ingress_class: &self.ingress_class });
        self.publish_model(model, started).await
    }

    async fn publish_model(&mut self, mut model: Model, started: Instant) -> Arc<Snapshot> {
        model.errors.extend(self.plugins.errors());
        self.plugins.validate(&model).await;
        let previous = self.snapshot.load();
        let plugins = &self.plugins;
        let mut snapshot = Snapshot::compile_with(model, &previous, |ingress, errors| plugins.chain(ingress, errors));
        snapshot.plugins = plugins.describe();
        let snapshot = Arc::new(snapshot);
        // Errors are sorted; log only the ones this change introduced.
        for error in snapshot.errors.iter().filter(|e| previous.errors.binary_search(e).is_err()) {
            tracing::warn!("{error}");
        }
        self.snapshot.store(snapshot.clone());
        tracing::info!(
            generation = snapshot.generation,
            backends = snapshot.backends.len(),
            errors = snapshot.errors.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "published configuration"
        );
        snapshot
    }
}
