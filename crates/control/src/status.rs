//! What the gateway writes back to the cluster. Of several replicas exactly one, the holder of
//! a coordination.k8s.io Lease, writes `.status.loadBalancer.ingress` of our Ingresses (and
//! clears it from Ingresses that stop being ours) and reports their errors as Events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use sluice_config::{ConfigError, ObjectRef};
use tokio::sync::{oneshot, watch};

/// How long a Lease holds without renewal. Every replica tries the Lease every [`RENEW`]: the
/// leader renews it, the others take it once it has run out or been released.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(2);
/// The same error is reported on the same Ingress again only after this long.
const EVENT_INTERVAL: Duration = Duration::from_secs(600);
/// At most this many Events per change, so a broken bulk apply cannot flood the API server.
const EVENTS_PER_SYNC: usize = 20;

/// The address `kubectl get ingress` shows for our Ingresses.
#[derive(Debug, Clone)]
pub enum PublishAddress {
    /// The load-balancer status of this Service (`NAMESPACE/NAME`).
    Service(ObjectRef),
    /// These IPs or host names.
    Addresses(Vec<String>),
}

/// What the status writer needs to know.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub publish: Option<PublishAddress>,
    /// Where the Lease lives (the gateway's own namespace).
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease and its Events (the pod name in a cluster).
    pub identity: String,
}

/// One Ingress as last seen: its identity, uid (Events refer to it) and load-balancer status.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenIngress {
    pub id: ObjectRef,
    pub uid: Option<String>,
    pub addresses: Vec<IngressLoadBalancerIngress>,
}

/// The cluster as of the last published snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub ingresses: Vec<SeenIngress>,
    /// The Ingresses of our class.
    pub ours: Vec<ObjectRef>,
    /// The load-balancer addresses of `--publish-service`, when it is known.
    pub service_addresses: Option<Vec<IngressLoadBalancerIngress>>,
    pub errors: Vec<ConfigError>,
}

/// The task that writes status: it runs leader election and, while leading, keeps Ingress
/// status and Events in line with what it is told was published.
pub struct StatusWriter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWriter {
    /// Starts writing what `observed` says; stops when its sender is dropped.
    pub(crate) fn spawn(client: Client, options: StatusOptions, observed: watch::Receiver<Arc<Observed>>) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self { stop, task: tokio::spawn(write_status(client, options, observed, stopped)) }
    }

    /// Stops writing. The Lease, if this replica holds it, is released first, so that another
    /// replica takes it at its next try (within 2 s) instead of when it runs out (15 s after
    /// the last renewal); if that takes longer than `timeout` the writer is stopped anyway.
    pub async fn stop(self, timeout: Duration) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!(?timeout, "releasing the Lease took too long; it runs out by itself");
            abort.abort();
        }
    }
}

async fn write_status(
    client: Client,
    options: StatusOptions,
    mut observed: watch::Receiver<Arc<Observed>>,
    mut stop: oneshot::Receiver<()>,
) {
    let reporter = Reporter { controller: "sluice".into(), instance: Some(options.identity.clone()) };
    let mut writer = Writer {
        leases: Api::namespaced(client.clone(), &options.lease_namespace),
        recorder: Recorder::new(client.clone(), reporter),
        client,
        options,
        leading: false,
        lease_seen: None,
        written: HashMap::new(),
        reported: HashMap::new(),
    };
    let mut tick = tokio::time::interval(RENEW);
    loop {
        tokio::select! {
            _ = &mut stop => return writer.release().await,
            _ = tick.tick() => writer.elect().await,
            changed = observed.changed() => if changed.is_err() { return },
        }
        if writer.leading {
            let current = observed.borrow_and_update().clone();
            writer.sync(&current).await;
        }
    }
}

struct Writer {
    client: Client,
    leases: Api<Lease>,
    recorder: Recorder,
    options: StatusOptions,
    leading: bool,
    /// The other holder's lease record as last seen, and when it was first seen like that: it
    /// has expired when it stays unchanged for the lease duration (by our clock, not theirs).
    lease_seen: Option<(Option<MicroTime>, Option<String>, Instant)>,
    /// Status patches sent and not yet seen back, so a slow watch does not cause repeats.
    written: HashMap<ObjectRef, Vec<IngressLoadBalancerIngress>>,
    /// Errors reported as Events, and when.
    reported: HashMap<(ObjectRef, String), Instant>,
}

impl Writer {
    /// Takes or renews the Lease; `leading` says whether this replica holds it.
    async fn elect(&mut self) {
        let was_leading = self.leading;
        self.leading = match self.try_lease().await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot reach the Lease");
                // A leader that cannot renew steps down before its lease can run out.
                was_leading && self.lease_seen.as_ref().is_some_and(|(_, _, at)| at.elapsed() < LEASE_DURATION / 2)
            }
        };
        if self.leading != was_leading {
            tracing::info!(identity = %self.options.identity, leading = self.leading, "leader election");
            self.written.clear();
        }
    }

    async fn try_lease(&mut self) -> Result<bool, kube::Error> {
        let name = &self.options.lease_name;
        let me = &self.options.identity;
        let now = MicroTime(Timestamp::now());
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or_else(|| Some(now.clone())),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = self.leases.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
                spec: Some(spec(0, None)),
            };
            return self.write_lease(self.leases.create(&PostParams::default(), &lease).await);
        };
        let current = lease.spec.clone().unwrap_or_default();
        let holder = current.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = current.lease_transitions.unwrap_or(0);
        if holder.as_ref() == Some(me) {
            lease.spec = Some(spec(transitions, current.acquire_time));
        } else {
            let record = (current.renew_time.clone(), holder.clone());
            let unchanged =
                self.lease_seen.as_ref().is_some_and(|(renew, holder, _)| (renew, holder) == (&record.0, &record.1));
            if !unchanged {
                self.lease_seen = Some((record.0, record.1, Instant::now()));
            }
            let expired = self.lease_seen.as_ref().is_some_and(|(_, _, at)| at.elapsed() > LEASE_DURATION);
            if holder.is_some() && !expired {
                return Ok(false);
            }
            lease.spec = Some(spec(transitions + 1, None));
        }
        // Replace carries the resourceVersion read: of two replicas racing, one gets a conflict.
        self.write_lease(self.leases.replace(name, &PostParams::default(), &lease).await)
    }

    /// Gives the Lease up if this replica holds it, as client-go's `ReleaseOnCancel` does: no
    /// holder, a one-second duration. The others take a Lease without holder at once.
    async fn release(&mut self) {
        let name = &self.options.lease_name;
        let me = &self.options.identity;
        let released = async {
            let Some(mut lease) = self.leases.get_opt(name).await? else { return Ok(false) };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_ref() != Some(me) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.leases.replace(name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match released.await {
            Ok(true) => tracing::info!(identity = %me, "leader election: released the Lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot release the Lease; it runs out by itself"),
        }
        self.leading = false;
    }

    /// Whether a Lease write won; a conflict means another replica's write came first.
    fn write_lease(&mut self, result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match result {
            Ok(_) => {
                self.lease_seen = Some((None, Some(self.options.identity.clone()), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn sync(&mut self, observed: &Observed) {
        self.sync_status(observed).await;
        self.report(observed).await;
    }

    /// Writes our address into our Ingresses and clears it from the others.
    async fn sync_status(&mut self, observed: &Observed) {
        let address = match &self.options.publish {
            None => return,
            Some(PublishAddress::Addresses(addresses)) => addresses.iter().map(|a| load_balancer(a)).collect(),
            // Not known yet (or not watched): write nothing rather than clear what is there.
            Some(PublishAddress::Service(_)) => match &observed.service_addresses {
                Some(addresses) => addresses.clone(),
                None => return,
            },
        };
        let ours: HashSet<&ObjectRef> = observed.ours.iter().collect();
        for ingress in &observed.ingresses {
            let want = if ours.contains(&ingress.id) {
                address.clone()
            } else if !ingress.addresses.is_empty() && ingress.addresses == address {
                // Ours before (it carries our address), not any more.
                Vec::new()
            } else {
                continue;
            };
            if ingress.addresses == want {
                self.written.remove(&ingress.id);
                continue;
            }
            if self.written.get(&ingress.id) == Some(&want) {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ingress.id.namespace);
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": want}}});
            match api.patch_status(&ingress.id.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.written.insert(ingress.id.clone(), want);
                }
                Err(e) => tracing::warn!(ingress = %ingress.id, error = %e, "cannot write the Ingress status"),
            }
        }
    }

    /// Reports the errors of Ingresses as Warning Events, each (Ingress, message) at most once
    /// per [`EVENT_INTERVAL`].
    async fn report(&mut self, observed: &Observed) {
        self.reported.retain(|_, at| at.elapsed() < EVENT_INTERVAL);
        let uids: HashMap<&ObjectRef, &Option<String>> = observed.ingresses.iter().map(|i| (&i.id, &i.uid)).collect();
        let mut sent = 0;
        for error in &observed.errors {
            let Some(id) = error.object.as_ref().filter(|id| id.kind == "Ingress") else { continue };
            let key = (id.clone(), error.message.clone());
            if sent == EVENTS_PER_SYNC || self.reported.contains_key(&key) {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                namespace: Some(id.namespace.clone()),
                name: Some(id.name.clone()),
                uid: uids.get(id).and_then(|uid| (*uid).clone()),
                ..ObjectReference::default()
            };
            let mut note = error.to_string();
            note.truncate(note.floor_char_boundary(1000));
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidConfiguration".into(),
                note: Some(note),
                action: "Route".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => {
                    self.reported.insert(key, Instant::now());
                    sent += 1;
                }
                Err(e) => {
                    tracing::warn!(ingress = %id, error = %e, "cannot report an Event");
                    return;
                }
            }
        }
    }
}

/// An address as a status entry: an IP, or else a host name.
fn load_balancer(address: &str) -> IngressLoadBalancerIngress {
    match address.parse::<std::net::IpAddr>() {
        Ok(_) => IngressLoadBalancerIngress { ip: Some(address.to_owned()), ..Default::default() },
        Err(_) => IngressLoadBalancerIngress { hostname: Some(address.to_owned()), ..Default::default() },
    }
}
