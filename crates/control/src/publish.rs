use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use sluice_config::{ConfigError, Manifest, TranslateOptions, translate};
use sluice_route::Snapshot;

/// Compiles manifests into snapshots and publishes them.
#[derive(Debug)]
pub struct Publisher {
    snapshot: Arc<ArcSwap<Snapshot>>,
    ingress_class: String,
}

impl Publisher {
    /// Publishes into `snapshot` the Ingresses of `ingress_class`.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, ingress_class: String) -> Self {
        Self { snapshot, ingress_class }
    }

    /// Translates and compiles `manifests` (with `source_errors` from reading them) and
    /// publishes the result in one atomic swap. Returns the published snapshot.
    pub fn publish<'a>(
        &self,
        manifests: impl IntoIterator<Item = &'a Manifest>,
        source_errors: impl IntoIterator<Item = ConfigError>,
    ) -> Arc<Snapshot> {
        let started = Instant::now();
        let mut model = translate(manifests, &TranslateOptions { ingress_class: &self.ingress_class });
        model.errors.extend(source_errors);
        let previous = self.snapshot.load();
        let snapshot = Arc::new(Snapshot::compile(model, &previous));
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
