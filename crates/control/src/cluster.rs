//! Objects from the Kubernetes API server: one watcher per kind, trimmed to what routing reads,
//! batched into snapshots.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::utils::{Backoff as _, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use sluice_config::{BACKEND_TLS_LABEL, BASIC_AUTH_LABEL, Manifest, Object, ObjectRef};
use sluice_filter::Snapshot;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::publish::Publisher;
use crate::reload;
use crate::shared::{CUSTOM_HEADERS_LABEL, PLUGIN_LABEL, SharedCatalog};
use crate::status::{Observed, PublishAddress, SeenIngress, StatusOptions, StatusWriter};

/// The annotation `kubectl apply` keeps a whole copy of the object in; never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Any error, for connecting.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What is watched: a name for logs, and the stream of its events.
type Watch = BoxStream<'static, (&'static str, Result<watcher::Event<Object>, watcher::Error>)>;

/// Where the objects come from: the whole cluster, or one namespace (IngressClasses are
/// cluster-wide either way).
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    namespace: Option<String>,
}

impl KubeSource {
    /// Connects with `kubeconfig`, or else as the environment says (in-cluster service account,
    /// then `KUBECONFIG` or `~/.kube/config`); watches `namespace` only when given. Requests
    /// carry `user_agent` (the API server's audit log shows it).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: Option<String>,
        user_agent: &str,
    ) -> Result<Self, BoxError> {
        let mut config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_str(user_agent)?));
        Ok(Self { client: Client::try_from(config)?, namespace })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// One watcher per kind. Secrets are only those of type `kubernetes.io/tls` or labelled for
    /// backend TLS or basic authentication; ConfigMaps only those labelled as plugin modules or custom-headers lists.
    fn watches(&self) -> Vec<Watch> {
        let config = watcher::Config::default;
        vec![
            watch("IngressClass", Api::all(self.client.clone()), config(), Object::IngressClass, keep),
            watch("Ingress", self.api(), config(), Object::Ingress, keep),
            watch("Service", self.api(), config(), Object::Service, |service: &mut Service| {
                (service.metadata.labels, service.metadata.annotations) = (None, None);
            }),
            watch("EndpointSlice", self.api(), config(), Object::EndpointSlice, |slice: &mut EndpointSlice| {
                slice.metadata.annotations = None;
                for endpoint in &mut slice.endpoints {
                    (endpoint.target_ref, endpoint.node_name, endpoint.hints) = (None, None, None);
                    endpoint.deprecated_topology = None;
                }
            }),
            watch("Secret", self.api(), config().fields("type=kubernetes.io/tls"), Object::Secret, trim_secret),
            // CAs for backend TLS, which are not `kubernetes.io/tls` Secrets: only those labelled.
            watch(
                "backend-TLS Secret",
                self.api(),
                config().labels(BACKEND_TLS_LABEL).fields("type!=kubernetes.io/tls"),
                Object::Secret,
                trim_secret,
            ),
            // Users for basic authentication; one labelled for both is the watch above's.
            watch(
                "basic-auth Secret",
                self.api(),
                config().labels(&format!("{BASIC_AUTH_LABEL},!{BACKEND_TLS_LABEL}")).fields("type!=kubernetes.io/tls"),
                Object::Secret,
                trim_secret,
            ),
            watch("plugin ConfigMap", self.api(), config().labels(PLUGIN_LABEL), Object::ConfigMap, keep),
            watch(
                "custom-headers ConfigMap",
                self.api(),
                config().labels(CUSTOM_HEADERS_LABEL),
                Object::ConfigMap,
                keep,
            ),
        ]
    }
}

/// A Secret as kept: its data, without labels and annotations.
fn trim_secret(secret: &mut Secret) {
    (secret.metadata.labels, secret.metadata.annotations) = (None, None);
}

/// The watcher of one kind, retrying as [`Retry`] says, with every object trimmed (by
/// [`trim`], then `trim_kind`) and wrapped as an [`Object`]. Watch bookmarks are on (the
/// `watcher::Config` default), so a watch that drops resumes where it was without a relist.
fn watch<K>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(Arc<K>) -> Object,
    trim_kind: fn(&mut K),
) -> Watch
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let events = retrying(move || watcher(api.clone(), config.clone())).modify(move |object| {
        trim(object);
        trim_kind(object);
    });
    events.map(move |event| (what, event.map(|event| map_event(event, |object| wrap(Arc::new(object)))))).boxed()
}

/// After a failed list or watch the first retry waits this long, and each further one twice
/// as long up to [`RETRY_MAX`], each with up to as much again of random jitter so that
/// replicas and kinds do not retry in step. A restarted API server is thus picked up at most
/// 2 × [`RETRY_MAX`] after it is back.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(800);
/// A watcher that has not had to wait for this long starts again from [`RETRY_FIRST`].
const RETRY_RESET: Duration = Duration::from_secs(30);

/// How a watcher carries on after each of its items. kube-runtime's own `default_backoff`
/// waits after every error, up to a minute (30 s plus jitter), even when the error is a `410
/// Gone` that asks for nothing but a relist; after an API server restart changes stalled that
/// long.
struct Retry {
    backoff: ResetTimerBackoff<ExponentialBackoff>,
    /// When a `410 Gone` was last answered with an immediate relist.
    last_gone: Option<Instant>,
}

/// What [`Retry`] says to do next.
#[derive(Debug, PartialEq)]
struct Resume {
    /// How long to wait before asking the watcher for more.
    wait: Duration,
    /// Whether to replace the watcher with a fresh one, which lists again.
    restart: bool,
}

impl Retry {
    fn new() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST)
            .with_max_delay(RETRY_MAX)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { backoff: ResetTimerBackoff::new(ExponentialBackoff::from(builder), RETRY_RESET), last_gone: None }
    }

    /// A `410 Gone` lists again at once: as a watch event (the watcher then relists itself) or
    /// as the answer to starting a watch (the watcher would retry the same resourceVersion
    /// forever, so it is replaced). Only one such relist per [`RETRY_MAX`] goes without
    /// waiting, so that a server answering 410 to every watch is not sent a list in a loop.
    /// Any other error waits for the backoff, which starts over once the watch delivers a
    /// change.
    fn after<K>(&mut self, item: &watcher::Result<watcher::Event<K>>) -> Resume {
        let restart = match item {
            Ok(event) => {
                if matches!(event, watcher::Event::Apply(_) | watcher::Event::Delete(_)) {
                    self.backoff.reset();
                }
                return Resume { wait: Duration::ZERO, restart: false };
            }
            Err(watcher::Error::WatchError(status)) if status.code == 410 => false,
            Err(watcher::Error::WatchStartFailed(kube::Error::Api(status))) if status.code == 410 => true,
            Err(_) => return Resume { wait: self.delay(), restart: false },
        };
        let now = Instant::now();
        let again = self.last_gone.replace(now).is_some_and(|at| now - at < RETRY_MAX);
        Resume { wait: if again { self.delay() } else { Duration::ZERO }, restart }
    }

    fn delay(&mut self) -> Duration {
        self.backoff.next().unwrap_or(RETRY_MAX)
    }
}

/// The events of the watcher `start` makes, paced by a [`Retry`]. The watcher never ends;
/// neither does this stream.
fn retrying<K, S>(
    start: impl Fn() -> S + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    K: Send + 'static,
{
    let events = start().boxed();
    let state = (start, events, Retry::new(), Duration::ZERO);
    futures_util::stream::unfold(state, |(start, mut events, mut retry, wait)| async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let item = events.next().await?;
        let resume = retry.after(&item);
        if resume.restart {
            events = start().boxed();
        }
        Some((item, (start, events, retry, resume.wait)))
    })
}

/// Drops what routing never reads and costs memory on every object: managed fields, owner
/// references and the copy `kubectl apply` keeps in an annotation.
fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    (meta.managed_fields, meta.owner_references) = (None, None);
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// For kinds with nothing more to trim.
fn keep<K>(_: &mut K) {}

fn map_event<K>(event: watcher::Event<K>, wrap: impl Fn(K) -> Object) -> watcher::Event<Object> {
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
    match event {
        Apply(object) => Apply(wrap(object)),
        Delete(object) => Delete(wrap(object)),
        Init => Init,
        InitApply(object) => InitApply(wrap(object)),
        InitDone => InitDone,
    }
}

/// The latest version of every watched object, and which watchers have finished their first
/// list.
struct Store {
    /// The publisher's.
    catalog: SharedCatalog,
    /// Per watcher: the objects of a relist in progress, swapped in whole when it completes.
    relisting: HashMap<&'static str, HashMap<ObjectRef, Manifest>>,
    /// Per watcher: what its last complete list held, to drop what a relist no longer has.
    listed: HashMap<&'static str, Vec<ObjectRef>>,
    /// The watchers that hold each ConfigMap: one carrying both ConfigMap labels is watched
    /// twice, and stays until neither watcher has it.
    config_maps: HashMap<ObjectRef, Vec<&'static str>>,
}

impl Store {
    fn new(catalog: SharedCatalog) -> Self {
        let (relisting, listed, config_maps) = (HashMap::new(), HashMap::new(), HashMap::new());
        Self { catalog, relisting, listed, config_maps }
    }

    /// Applies one watch event; returns whether the objects changed.
    fn apply(&mut self, what: &'static str, event: watcher::Event<Object>, origin: &Arc<str>) -> bool {
        let manifest = |object: Object| Manifest { origin: origin.clone(), object };
        match event {
            watcher::Event::Init => {
                self.relisting.insert(what, HashMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                let relist = self.relisting.entry(what).or_default();
                relist.insert(object.id(), manifest(object));
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relisting.remove(what).unwrap_or_default();
                let mut changed = false;
                let catalog = self.catalog.clone();
                let mut catalog = catalog.lock();
                for gone in self.listed.insert(what, fresh.keys().cloned().collect()).unwrap_or_default() {
                    if !fresh.contains_key(&gone) && self.release(what, &gone) {
                        changed |= catalog.remove(&gone);
                    }
                }
                for (id, manifest) in fresh {
                    self.hold(what, id);
                    changed |= catalog.apply(manifest);
                }
                changed
            }
            watcher::Event::Apply(object) => {
                self.hold(what, object.id());
                self.catalog.lock().apply(manifest(object))
            }
            watcher::Event::Delete(object) => {
                let id = object.id();
                self.release(what, &id) && self.catalog.lock().remove(&id)
            }
        }
    }

    /// Records that watcher `what` has `id` (kept for ConfigMaps only).
    fn hold(&mut self, what: &'static str, id: ObjectRef) {
        if id.kind == "ConfigMap" {
            let holders = self.config_maps.entry(id).or_default();
            if !holders.contains(&what) {
                holders.push(what);
            }
        }
    }

    /// Records that watcher `what` no longer has `id`; returns whether no watcher has it.
    fn release(&mut self, what: &'static str, id: &ObjectRef) -> bool {
        let Some(holders) = self.config_maps.get_mut(id) else { return true };
        holders.retain(|holder| *holder != what);
        let gone = holders.is_empty();
        if gone {
            self.config_maps.remove(id);
        }
        gone
    }
}

/// Watches the API server and publishes a snapshot after each burst of changes, once nothing
/// has changed for `debounce`. The first snapshot is published when every watcher has listed
/// its kind, and then `ready` is sent. Until then, and whenever the API server is away, the last
/// published snapshot keeps serving; a watcher that comes back has what it missed published at
/// once. With `status`, Ingress status and Events are written too (by the Lease holder among
/// the replicas), until the returned [`StatusWriter`] is stopped. The watchers live in the
/// returned task; abort it to stop.
pub fn watch_kube(
    source: KubeSource,
    publisher: Publisher,
    debounce: Duration,
    ready: oneshot::Sender<()>,
    status: Option<StatusOptions>,
    metrics: WatchMetrics,
) -> (tokio::task::JoinHandle<()>, Option<StatusWriter>) {
    let watches = source.watches();
    let kinds = watches.len();
    let (feed, writer) = status
        .map(|options| {
            let (sender, observed) = watch::channel(Arc::new(Observed::default()));
            let service = match &options.publish {
                Some(PublishAddress::Service(service)) => Some(service.clone()),
                _ => None,
            };
            let writer = StatusWriter::spawn(source.client.clone(), options, observed);
            (StatusFeed { sender, service }, writer)
        })
        .unzip();
    let watches = futures_util::stream::select_all(watches);
    let outages = Outages { since: HashMap::new(), metrics };
    let store = Store::new(publisher.catalog());
    let origin: Arc<str> = Arc::from("kube");
    let watching =
        Watching { events: watches, kinds, store, outages, origin, changed: false, ready: Some(ready), status: feed };
    (reload::spawn(watching, publisher, debounce), writer)
}

/// How long each watch took to recover from an outage, for `/metrics`.
#[derive(Debug, Clone)]
pub struct WatchMetrics {
    reconnects: Family<WatchLabels, Histogram>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
}

impl Default for WatchMetrics {
    fn default() -> Self {
        // 0.1 s to ~3.4 min.
        Self { reconnects: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.1, 2.0, 12))) }
    }
}

impl WatchMetrics {
    /// Adds the metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "watch_reconnect_seconds",
            "Time from a watch's first failure to its next event, by watched kind",
            self.reconnects.clone(),
        );
    }
}

/// The watchers that are failing, and since when.
struct Outages {
    since: HashMap<&'static str, Instant>,
    metrics: WatchMetrics,
}

impl Outages {
    fn failed(&mut self, what: &'static str, error: &watcher::Error) {
        if self.since.contains_key(what) {
            tracing::debug!(watch = what, error = %error, "watching the API server failed again; retrying");
        } else {
            self.since.insert(what, Instant::now());
            tracing::warn!(watch = what, error = %error, "watching the API server failed; retrying");
        }
    }

    /// Whether `event` ends an outage of watcher `what`: it is the end of a relist or a change
    /// seen on a resumed watch (the start of a relist comes before anything is asked of the
    /// server, its objects before the list is whole).
    fn recovered<K>(&mut self, what: &'static str, event: &watcher::Event<K>) -> bool {
        use watcher::Event::{Apply, Delete, InitDone};
        if !matches!(event, InitDone | Apply(_) | Delete(_)) {
            return false;
        }
        let Some(since) = self.since.remove(what) else { return false };
        let seconds = since.elapsed().as_secs_f64();
        self.metrics.reconnects.get_or_create(&WatchLabels { kind: what }).observe(seconds);
        tracing::info!(watch = what, seconds, "watch of {what} reconnected after {seconds:.1} s");
        true
    }
}

/// Where the status writer learns what was published.
struct StatusFeed {
    sender: watch::Sender<Arc<Observed>>,
    /// `--publish-service`, whose load-balancer addresses are ours.
    service: Option<ObjectRef>,
}

impl StatusFeed {
    fn send(&self, store: &Store, snapshot: &Snapshot) {
        let catalog = store.catalog.lock();
        let ingresses = (catalog.ingresses())
            .map(|(namespace, name, ingress)| SeenIngress {
                id: ObjectRef::new("Ingress", namespace, name),
                uid: ingress.metadata.uid.clone(),
                addresses: (ingress.status.as_ref())
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let service = self.service.as_ref().and_then(|id| catalog.service_load_balancer(&id.namespace, &id.name));
        let service_addresses = service.map(|entries| {
            let address = |e: &LoadBalancerIngress| IngressLoadBalancerIngress {
                ip: e.ip.clone(),
                hostname: e.hostname.clone(),
                ..Default::default()
            };
            entries.iter().map(address).collect()
        });
        let observed = Observed {
            ingresses,
            ours: snapshot.ingresses.clone(),
            service_addresses,
            errors: snapshot.errors.clone(),
        };
        self.sender.send_if_modified(|current| {
            let changed = **current != observed;
            if changed {
                *current = Arc::new(observed);
            }
            changed
        });
    }
}

/// The API server's watchers as the reload loop drives them. Each event changes the catalog
/// as it comes; a batch is cut short when a watcher is back from an outage, so what changed
/// meanwhile is not held back any longer.
struct Watching {
    events: SelectAll<Watch>,
    /// How many watchers there are: the first snapshot waits for each one's first list.
    kinds: usize,
    store: Store,
    outages: Outages,
    origin: Arc<str>,
    /// Whether the objects changed since the last publish.
    changed: bool,
    /// Told once the first snapshot is published.
    ready: Option<oneshot::Sender<()>>,
    status: Option<StatusFeed>,
}

impl reload::Source for Watching {
    type Change = (&'static str, Result<watcher::Event<Object>, watcher::Error>);

    const NAME: &'static str = "the API server's objects";

    fn next(&mut self) -> impl Future<Output = Option<Self::Change>> + Send {
        self.events.next()
    }

    fn absorb(&mut self, (what, event): Self::Change) -> bool {
        match event {
            Ok(event) => {
                let recovered = self.outages.recovered(what, &event);
                self.changed |= self.store.apply(what, event, &self.origin);
                recovered
            }
            Err(e) => {
                self.outages.failed(what, &e);
                false
            }
        }
    }

    /// The first snapshot is published when every kind has listed, even an empty cluster.
    fn due(&self) -> bool {
        (self.changed || self.ready.is_some()) && self.store.listed.len() >= self.kinds
    }

    fn apply(&mut self, publisher: &mut Publisher) -> Option<Arc<Snapshot>> {
        self.changed = false;
        let maps: Vec<_> = self.store.catalog.lock().config_maps().cloned().collect();
        publisher.set_published_plugins(maps.iter().map(|map| &**map));
        Some(tokio::runtime::Handle::current().block_on(publisher.publish_catalog()))
    }

    fn published(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(status) = &self.status {
            status.send(&self.store, snapshot);
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn config_map() -> Object {
        let mut map = ConfigMap::default();
        map.metadata.name = Some("both".into());
        map.metadata.namespace = Some("default".into());
        let labels = [(PLUGIN_LABEL, "probe"), (CUSTOM_HEADERS_LABEL, "true")];
        map.metadata.labels = Some(labels.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect());
        Object::ConfigMap(Arc::new(map))
    }

    fn gone() -> Box<kube::core::Status> {
        Box::new(kube::core::Status { code: 410, reason: "Expired".into(), ..kube::core::Status::default() })
    }

    fn refused() -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Service("connection refused".into()))
    }

    #[test]
    fn connection_errors_back_off_briefly_and_a_410_relists_at_once() {
        let mut retry = Retry::new();
        let mut after = |item: watcher::Result<watcher::Event<Object>>| retry.after(&item);
        // Doubling from 100 ms, each with up to as much again of jitter, capped at 0.8 s (1.6 s with jitter).
        let waits: Vec<Duration> = (0..8).map(|_| after(Err(refused())).wait).collect();
        let (first, last) = (waits[0], waits[7]);
        assert!(RETRY_FIRST <= first && first < 2 * RETRY_FIRST, "{waits:?}");
        assert!(RETRY_MAX <= last && last < 2 * RETRY_MAX, "{waits:?}");
        // A 410 in the watch asks only for a relist, which the watcher does itself.
        assert_eq!(after(Err(watcher::Error::WatchError(gone()))), Resume { wait: Duration::ZERO, restart: false });
        // A second one right after waits for the backoff rather than list in a loop.
        let again = after(Err(watcher::Error::WatchError(gone())));
        assert!(!again.restart && again.wait >= RETRY_MAX, "{again:?}");
        // A change seen starts the backoff over.
        assert_eq!(after(Ok(watcher::Event::Apply(config_map()))), Resume { wait: Duration::ZERO, restart: false });
        let wait = after(Err(refused())).wait;
        assert!(wait < 2 * RETRY_FIRST, "{wait:?}");
    }

    #[test]
    fn a_watch_refused_as_gone_is_started_over() {
        let mut retry = Retry::new();
        let refused_gone = || Err(watcher::Error::WatchStartFailed(kube::Error::Api(gone())));
        assert_eq!(retry.after::<Object>(&refused_gone()), Resume { wait: Duration::ZERO, restart: true });
        // Once the last one is a while ago, a 410 relists at once again.
        retry.last_gone = Some(Instant::now() - RETRY_MAX);
        assert_eq!(retry.after::<Object>(&refused_gone()), Resume { wait: Duration::ZERO, restart: true });
    }

    #[test]
    fn a_relisted_watcher_reports_its_outage_once() {
        let metrics = WatchMetrics::default();
        let mut outages = Outages { since: HashMap::new(), metrics: metrics.clone() };
        outages.failed("Ingress", &refused());
        outages.since.insert("Ingress", Instant::now() - Duration::from_millis(1500));
        outages.failed("Ingress", &refused());
        // The start of a relist and its objects are not a recovery; the end of the list is.
        assert!(!outages.recovered("Ingress", &watcher::Event::<Object>::Init));
        assert!(!outages.recovered("Ingress", &watcher::Event::InitApply(config_map())));
        assert!(!outages.recovered("Service", &watcher::Event::<Object>::InitDone));
        assert!(outages.recovered("Ingress", &watcher::Event::<Object>::InitDone));
        assert!(!outages.recovered("Ingress", &watcher::Event::<Object>::InitDone));
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("watch_reconnect_seconds_count{kind=\"Ingress\"} 1\n"), "{text}");
        let sum = text.lines().find_map(|line| line.strip_prefix("watch_reconnect_seconds_sum{kind=\"Ingress\"} "));
        let seconds: f64 = sum.expect("a sum").parse().unwrap();
        assert!((1.5..5.0).contains(&seconds), "{text}");
    }

    #[test]
    fn a_config_map_both_config_map_watchers_see_stays_until_neither_has_it() {
        let origin: Arc<str> = Arc::from("kube");
        let (plugins, headers) = ("plugin ConfigMap", "custom-headers ConfigMap");
        let mut store = Store::new(SharedCatalog::default());
        let count = |store: &Store| store.catalog.lock().config_maps().count();
        for what in [plugins, headers] {
            store.apply(what, watcher::Event::Init, &origin);
            store.apply(what, watcher::Event::InitApply(config_map()), &origin);
            store.apply(what, watcher::Event::InitDone, &origin);
        }
        assert_eq!(count(&store), 1);
        // One label removed: that watcher deletes it, the other still has it.
        assert!(!store.apply(plugins, watcher::Event::Delete(config_map()), &origin));
        assert_eq!(count(&store), 1);
        // A relist of the other watcher that still lists it keeps it; one that no longer does drops it.
        store.apply(headers, watcher::Event::Init, &origin);
        store.apply(headers, watcher::Event::InitApply(config_map()), &origin);
        assert!(!store.apply(headers, watcher::Event::InitDone, &origin));
        assert_eq!(count(&store), 1);
        store.apply(headers, watcher::Event::Init, &origin);
        assert!(store.apply(headers, watcher::Event::InitDone, &origin));
        assert_eq!(count(&store), 0);
    }
}
