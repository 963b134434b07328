//! Prometheus metrics of the data path, exposed on the admin listener's `/metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sluice_filter::{FilterFailure, MetricKind, PluginMetric, Snapshot};
use sluice_route::RouteName;

/// Labels of a request: its route and the class of its status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    ingress: Arc<str>,
    host: Arc<str>,
    route: Arc<str>,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    ingress: Arc<str>,
    host: Arc<str>,
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    backend: String,
    error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FilterLabels {
    plugin: Arc<str>,
    kind: &'static str,
    policy: &'static str,
}

/// How an upstream failed, for `sluice_upstream_errors_total`.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    Connect,
    Timeout,
    Other,
}

/// The metrics proxy-wasm filters define, labelled with the plugin's name and the metric's;
/// and their failed ticks, by plugin and kind of failure.
#[derive(Debug)]
struct PluginMetrics;

impl Collector for PluginMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let failures = sluice_filter::tick_failures();
        if !failures.is_empty() {
            let help = "proxy-wasm ticks that failed, by plugin and kind of failure";
            let mut family = encoder.encode_descriptor("plugin_tick_failures", help, None, MetricType::Counter)?;
            for (plugin, kind, count) in failures {
                let labels = [("plugin", plugin.to_string()), ("kind", kind.as_str().to_owned())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let metrics = sluice_filter::plugin_metrics();
        let labels = |m: &PluginMetric| [("plugin", m.plugin.to_string()), ("metric", m.name.clone())];
        let of = |kind| metrics.iter().filter(move |m| m.kind == kind);
        if of(MetricKind::Counter).next().is_some() {
            let help = "Counters proxy-wasm plugins define, by plugin and metric name";
            let mut family = encoder.encode_descriptor("plugin_counter", help, None, MetricType::Counter)?;
            for metric in of(MetricKind::Counter) {
                let value = u64::try_from(metric.value).unwrap_or(0);
                ConstCounter::new(value).encode(family.encode_family(&labels(metric))?)?;
            }
        }
        if of(MetricKind::Gauge).next().is_some() {
            let help = "Gauges proxy-wasm plugins define, by plugin and metric name";
            let mut family = encoder.encode_descriptor("plugin_gauge", help, None, MetricType::Gauge)?;
            for metric in of(MetricKind::Gauge) {
                ConstGauge::new(metric.value).encode(family.encode_family(&labels(metric))?)?;
            }
        }
        for (name, help, sum) in [
            ("plugin_histogram_count", "Values recorded in proxy-wasm plugins' histograms", false),
            ("plugin_histogram_sum", "Sum of the values recorded in proxy-wasm plugins' histograms", true),
        ] {
            if of(MetricKind::Histogram).next().is_some() {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for metric in of(MetricKind::Histogram) {
                    let value = if sum { u64::try_from(metric.value).unwrap_or(0) } else { metric.count };
                    ConstCounter::new(value).encode(family.encode_family(&labels(metric))?)?;
                }
            }
        }
        Ok(())
    }
}

/// An open downstream connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Requests that matched no route are counted under this name.
static UNROUTED: LazyLock<RouteName> =
    LazyLock::new(|| RouteName { ingress: "".into(), host: "".into(), path: "".into() });

/// Routes whose metric handles a thread keeps; past this many (reloads leave names behind),
/// the cache starts over.
const CACHED_ROUTES: usize = 4096;

/// Which [`Metrics`] a cached handle belongs to: never reused within a process.
static METRICS_IDS: AtomicU64 = AtomicU64::new(0);

/// A thread's handles on one route's series, so that counting a request takes no lock on the
/// families and hashes no label text (the families hash with SipHash under a lock).
struct RouteCells {
    /// Keeps the name's allocations, whose addresses are the key, from being reused.
    _name: RouteName,
    /// By status class, 1xx to 5xx.
    requests: [Option<Counter>; 5],
    duration: Option<Histogram>,
}

/// (the [`Metrics`]' id, the addresses of the route name's three parts)
type CellKey = (u64, [usize; 3]);

thread_local! {
    static CELLS: RefCell<HashMap<CellKey, RouteCells, foldhash::fast::RandomState>> = RefCell::default();
}

/// The gateway's metrics; one instance shared by every listener.
#[derive(Debug)]
pub struct Metrics {
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    filter_failures: Family<FilterLabels, Counter>,
    open_connections: Gauge,
    refused_connections: Counter,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    config_generation: Gauge,
    config_errors: Gauge,
    config_reloads: Counter,
    reloads_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::default();
        // 0.5 ms to ~16 s.
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let upstream_errors = Family::default();
        let filter_failures = Family::default();
        let (open_connections, config_generation, config_errors) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let (config_reloads, refused_connections) = (Counter::default(), Counter::default());
        let tls_handshakes = Family::default();
        let mut registry = Registry::with_prefix("sluice");
        registry.register("requests", "Requests by route and status class", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            duration.clone(),
        );
        registry.register("upstream_errors", "Upstream failures by backend and kind", upstream_errors.clone());
        registry.register(
            "filter_failures",
            "Filters that failed for a request, by plugin, kind (trap, timeout, memory, unavailable, invalid_response) and policy",
            filter_failures.clone(),
        );
        registry.register("open_connections", "Downstream connections open now", open_connections.clone());
        registry.register(
            "refused_connections",
            "Connections closed as accepted because a worker had its maximum open",
            refused_connections.clone(),
        );
        registry.register("tls_handshakes", "TLS handshakes by result", tls_handshakes.clone());
        registry.register("config_generation", "Generation of the active configuration", config_generation.clone());
        registry.register("config_errors", "Errors in the active configuration", config_errors.clone());
        registry.register("config_reloads", "Configurations published after the first", config_reloads.clone());
        registry.register_collector(Box::new(PluginMetrics));
        Self {
            id: METRICS_IDS.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            upstream_errors,
            filter_failures,
            open_connections,
            refused_connections,
            tls_handshakes,
            config_generation,
            config_errors,
            config_reloads,
            reloads_seen: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Where other parts of the gateway (the control plane) add their metrics before serving;
    /// `/metrics` shows them with these, under the same `sluice_` prefix.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one answered request. `route` is `None` when nothing matched.
    pub fn request(&self, route: Option<&RouteName>, status: StatusCode, elapsed: Duration) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let name = route.unwrap_or(&UNROUTED);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let address = |part: &Arc<str>| Arc::as_ptr(part).cast::<u8>() as usize;
        let key = (self.id, [address(&name.ingress), address(&name.host), address(&name.path)]);
        CELLS.with_borrow_mut(|cells| {
            if cells.len() >= CACHED_ROUTES && !cells.contains_key(&key) {
                cells.clear();
            }
            let cell = cells.entry(key).or_insert_with(|| RouteCells {
                _name: name.clone(),
                requests: Default::default(),
                duration: None,
            });
            let labels =
                || RouteLabels { ingress: name.ingress.clone(), host: name.host.clone(), route: name.path.clone() };
            let requests = cell.requests[class].get_or_insert_with(|| {
                let RouteLabels { ingress, host, route } = labels();
                self.requests.get_or_create(&RequestLabels { ingress, host, route, status: CLASSES[class] }).clone()
            });
            requests.inc();
            if route.is_some() {
                let duration = cell.duration.get_or_insert_with(|| self.duration.get_or_create(&labels()).clone());
                duration.observe(elapsed.as_secs_f64());
            }
        });
    }

    /// Counts a downstream connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// Counts a connection closed at once for the connection limit.
    pub fn connection_refused(&self) {
        self.refused_connections.inc();
    }

    /// Counts a TLS handshake.
    pub fn tls_handshake(&self, succeeded: bool) {
        let result = if succeeded { "ok" } else { "failed" };
        self.tls_handshakes.get_or_create(&HandshakeLabels { result }).inc();
    }

    /// Counts an upstream failure of `backend`.
    pub fn upstream_error(&self, backend: String, error: UpstreamError) {
        let error = match error {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Other => "other",
        };
        self.upstream_errors.get_or_create(&UpstreamLabels { backend, error }).inc();
    }

    /// Counts a filter that failed for a request; `closed` when the request was answered 500.
    pub fn filter_failure(&self, failure: &FilterFailure, closed: bool) {
        let policy = if closed { "closed" } else { "open" };
        let labels = FilterLabels { plugin: failure.plugin.clone(), kind: failure.kind.as_str(), policy };
        self.filter_failures.get_or_create(&labels).inc();
    }

    /// The metrics in Prometheus text format, with the configuration figures read from the
    /// active snapshot.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        self.config_generation.set(i64::try_from(snapshot.generation).unwrap_or(i64::MAX));
        self.config_errors.set(i64::try_from(snapshot.errors.len()).unwrap_or(i64::MAX));
        let reloads = snapshot.generation.saturating_sub(1);
        let seen = self.reloads_seen.swap(reloads, Ordering::AcqRel);
        self.config_reloads.inc_by(reloads.saturating_sub(seen));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(ingress: &str, path: &str) -> RouteName {
        RouteName { ingress: ingress.into(), host: "shop.test".into(), path: path.into() }
    }

    fn text(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    fn requests(text: &str, ingress: &str, path: &str, class: &str) -> u64 {
        let line = format!(
            "sluice_requests_total{{ingress=\"{ingress}\",host=\"shop.test\",route=\"{path}\",status=\"{class}\"}} "
        );
        text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |count| count.parse().unwrap())
    }

    #[test]
    fn requests_count_by_route_and_status_class_through_each_threads_handles() {
        let (metrics, other) = (Metrics::default(), Metrics::default());
        let (api, web) = (name("shop/api", "Prefix /api"), name("shop/web", "Prefix /"));
        let ms = Duration::from_millis(1);
        for status in [200, 204, 404, 503, 999] {
            metrics.request(Some(&api), StatusCode::from_u16(status).unwrap(), ms);
        }
        metrics.request(Some(&web), StatusCode::OK, ms);
        // The same name in new allocations (after a reload) counts in the same series.
        metrics.request(Some(&name("shop/api", "Prefix /api")), StatusCode::OK, ms);
        metrics.request(None, StatusCode::NOT_FOUND, ms);
        other.request(Some(&api), StatusCode::OK, ms);

        let text = text(&metrics);
        let counts = ["2xx", "4xx", "5xx"].map(|class| requests(&text, "shop/api", "Prefix /api", class));
        assert_eq!(counts, [3, 1, 2], "{text}");
        assert_eq!(requests(&text, "shop/web", "Prefix /", "2xx"), 1);
        assert!(text.contains("sluice_requests_total{ingress=\"\",host=\"\",route=\"\",status=\"4xx\"} 1"), "{text}");
        let durations =
            "sluice_request_duration_seconds_count{ingress=\"shop/api\",host=\"shop.test\",route=\"Prefix /api\"} 6";
        assert!(text.contains(durations), "{text}");
        // Another registry's handles are its own.
        assert_eq!(requests(&self::text(&other), "shop/api", "Prefix /api", "2xx"), 1);

        // Past the cache's size the handles are looked up again; no count is lost.
        for i in 0..CACHED_ROUTES {
            metrics.request(Some(&name(&format!("ns/{i}"), "Prefix /")), StatusCode::OK, ms);
        }
        metrics.request(Some(&api), StatusCode::OK, ms);
        let text = self::text(&metrics);
        assert_eq!(requests(&text, "shop/api", "Prefix /api", "2xx"), 4);
        assert_eq!(requests(&text, "ns/7", "Prefix /", "2xx"), 1);
    }
}
