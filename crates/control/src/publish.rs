use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use sluice_config::{ConfigError, Manifest, Model, TranslateOptions};
use sluice_filter::Snapshot;

use crate::plugins::{Modules, Plugins};
use crate::shared::SharedCatalog;
use crate::webhook::Validator;

/// Compiles manifests and plugin modules into snapshots and publishes them.
pub struct Publisher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    ingress_class: String,
    /// The status of a request a rate limit refuses.
    limit_status: u16,
    plugins: Plugins,
    /// The objects of every source, kept so that the next publish translates only what changed.
    catalog: SharedCatalog,
    /// The plugin modules of the last publish, for the admission webhook; `None` before the first.
    modules: Arc<ArcSwapOption<Modules>>,
}

impl Publisher {
    /// Publishes into `snapshot` the Ingresses of `ingress_class`, with filters from `plugins`;
    /// their rate limits refuse with `limit_status`.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, ingress_class: String, limit_status: u16, plugins: Plugins) -> Self {
        let (catalog, modules) = (SharedCatalog::default(), Arc::new(ArcSwapOption::empty()));
        Self { snapshot, ingress_class, limit_status, plugins, catalog, modules }
    }

    /// What the catalog is translated with.
    fn options(&self) -> TranslateOptions<'_> {
        TranslateOptions { ingress_class: &self.ingress_class, limit_status: self.limit_status }
    }

    /// The catalog this publisher translates.
    pub fn catalog(&self) -> SharedCatalog {
        self.catalog.clone()
    }

    /// What an admission webhook checks Ingresses with: this publisher's catalog and plugin
    /// modules, as of its last publish.
    pub fn validator(&self) -> Validator {
        Validator::new(self.catalog.clone(), self.modules.clone(), self.ingress_class.clone(), self.limit_status)
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
        let model = {
            let mut catalog = self.catalog.lock();
            let duplicates = catalog.sync(manifests);
            let mut model = catalog.translate(&self.options());
            model.errors.extend(duplicates.into_iter().chain(source_errors));
            model
        };
        self.publish_model(model, started).await
    }

    /// Translates the catalog as its source left it (only what changed since its last
    /// translation) and publishes the result like [`Publisher::publish`].
    pub async fn publish_catalog(&mut self) -> Arc<Snapshot> {
        let started = Instant::now();
        let model = self.catalog.lock().translate(&self.options());
        self.publish_model(model, started).await
    }

    async fn publish_model(&mut self, mut model: Model, started: Instant) -> Arc<Snapshot> {
        model.errors.extend(self.plugins.errors());
        self.plugins.validate(&model).await;
        let previous = self.snapshot.load();
        let plugins = &self.plugins;
        let mut snapshot = Snapshot::compile_with(model, &previous, |ingress, errors| plugins.chain(ingress, errors));
        snapshot.plugins = plugins.describe();
        self.modules.store(Some(Arc::new(plugins.table())));
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
