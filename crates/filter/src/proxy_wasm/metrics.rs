//! Metrics proxy-wasm filters define (`proxy_define_metric` and friends): kept per plugin name
//! for the life of the gateway process (so a counter survives a module swap), and read by the
//! gateway's `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

/// The most metrics one plugin may define.
const MAX_PER_PLUGIN: usize = 1000;

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Recorded values, shown as their count and sum.
    Histogram,
}

/// A metric's value now.
#[derive(Debug, Clone)]
pub struct PluginMetric {
    pub plugin: Arc<str>,
    pub name: String,
    pub kind: MetricKind,
    /// The counter's or gauge's value, or the histogram's sum.
    pub value: i64,
    /// How many values a histogram recorded.
    pub count: u64,
}

struct Entry {
    plugin: Arc<str>,
    name: String,
    kind: MetricKind,
    value: AtomicI64,
    count: AtomicU64,
}

/// Ids are indices.
static METRICS: LazyLock<RwLock<Vec<Entry>>> = LazyLock::new(RwLock::default);

/// The values of every metric plugins defined.
pub fn plugin_metrics() -> Vec<PluginMetric> {
    let metrics = METRICS.read().unwrap_or_else(|e| e.into_inner());
    metrics
        .iter()
        .map(|entry| PluginMetric {
            plugin: entry.plugin.clone(),
            name: entry.name.clone(),
            kind: entry.kind,
            value: entry.value.load(Ordering::Relaxed),
            count: entry.count.load(Ordering::Relaxed),
        })
        .collect()
}

/// The id of `plugin`'s metric `name` (defined now if it is new); `None` if `kind` is not a
/// metric type, the name is taken by a metric of another kind, or the plugin has too many.
pub(crate) fn define(plugin: &Arc<str>, kind: u32, name: &str) -> Option<u32> {
    let kind = match kind {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return None,
    };
    let mut metrics = METRICS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = metrics.iter().position(|e| e.plugin == *plugin && e.name == name) {
        return (metrics[id].kind == kind).then(|| u32::try_from(id).ok()).flatten();
    }
    if metrics.iter().filter(|e| e.plugin == *plugin).count() >= MAX_PER_PLUGIN {
        return None;
    }
    let entry = Entry {
        plugin: plugin.clone(),
        name: name.to_owned(),
        kind,
        value: AtomicI64::new(0),
        count: AtomicU64::new(0),
    };
    metrics.push(entry);
    u32::try_from(metrics.len() - 1).ok()
}

/// Runs `f` on `plugin`'s metric `id`; `None` if it has none of that id.
fn with<R>(plugin: &str, id: u32, f: impl FnOnce(&Entry) -> R) -> Option<R> {
    let metrics = METRICS.read().unwrap_or_else(|e| e.into_inner());
    let entry = metrics.get(usize::try_from(id).ok()?).filter(|e| &*e.plugin == plugin)?;
    Some(f(entry))
}

/// Adds `offset` to a counter or gauge; `None` if there is no such metric or it is a histogram
/// (or a counter would go down).
pub(crate) fn increment(plugin: &str, id: u32, offset: i64) -> Option<()> {
    with(plugin, id, |entry| match entry.kind {
        MetricKind::Counter if offset < 0 => None,
        MetricKind::Counter | MetricKind::Gauge => {
            entry.value.fetch_add(offset, Ordering::Relaxed);
            Some(())
        }
        MetricKind::Histogram => None,
    })?
}

/// Sets a gauge (or counter) to `value`, or records it in a histogram.
pub(crate) fn record(plugin: &str, id: u32, value: u64) -> Option<()> {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    with(plugin, id, |entry| match entry.kind {
        MetricKind::Counter | MetricKind::Gauge => entry.value.store(value, Ordering::Relaxed),
        MetricKind::Histogram => {
            entry.value.fetch_add(value, Ordering::Relaxed);
            entry.count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// A counter's or gauge's value, or a histogram's sum.
pub(crate) fn get(plugin: &str, id: u32) -> Option<u64> {
    with(plugin, id, |entry| u64::try_from(entry.value.load(Ordering::Relaxed)).unwrap_or(0))
}
