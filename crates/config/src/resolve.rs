//! Backends resolved: from a Service and its EndpointSlices to where traffic goes. Services and
//! EndpointSlices are kept as the few fields resolving reads, not as whole objects.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::{ConfigError, ObjectRef, not_found};
use crate::index::{Names, name, namespace};
use crate::model::{BackendKey, PortRef, Target};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What resolving backends reads.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    pub(crate) services: Names<ServiceEntry>,
    pub(crate) slices: Names<SliceEntry>,
    /// EndpointSlice names by (namespace, Service name).
    pub(crate) by_service: Names<Vec<String>>,
}

/// The fields of a Service that resolving a backend reads.
#[derive(Debug, PartialEq)]
pub(crate) struct ServiceEntry {
    /// `spec.externalName` of an ExternalName Service (empty when missing).
    external_name: Option<String>,
    /// `spec.ports`: name and number.
    ports: Vec<(Option<String>, i32)>,
    /// `spec.clusterIP`; `None` for a headless Service.
    cluster_ip: Option<IpAddr>,
    /// `status.loadBalancer.ingress`.
    pub(crate) load_balancer: Vec<LoadBalancerIngress>,
}

impl ServiceEntry {
    pub(crate) fn new(service: &Service) -> Self {
        let spec = service.spec.as_ref();
        let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let load_balancer = service.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        Self {
            external_name: external.then(|| spec.and_then(|s| s.external_name.clone()).unwrap_or_default()),
            ports: ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
            cluster_ip: spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            load_balancer: load_balancer.and_then(|lb| lb.ingress.clone()).unwrap_or_default(),
        }
    }
}

/// An EndpointSlice with its addresses already checked.
#[derive(Debug, PartialEq)]
pub(crate) struct SliceEntry {
    /// The Service it belongs to; `None` for a slice without the label (an error).
    pub(crate) service: Option<String>,
    ports: Vec<(String, u16)>,
    endpoints: Vec<SliceEndpoint>,
    pub(crate) errors: Vec<ConfigError>,
}

#[derive(Debug, PartialEq)]
struct SliceEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
}

impl SliceEntry {
    pub(crate) fn new(origin: &Arc<str>, slice: &EndpointSlice) -> Self {
        let id = || ObjectRef::new("EndpointSlice", namespace(&slice.metadata), name(&slice.metadata));
        let mut entry = SliceEntry { service: None, ports: Vec::new(), endpoints: Vec::new(), errors: Vec::new() };
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            let message = format!("has no {SERVICE_NAME_LABEL} label, so it belongs to no Service");
            entry.errors.push(ConfigError::field(origin, &id(), "metadata.labels", message));
            return entry;
        };
        entry.service = Some(service.clone());
        if slice.address_type == "FQDN" {
            return entry;
        }
        entry.ports = (slice.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), u16::try_from(p.port?).ok()?)))
            .collect();
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            let Some(address) = endpoint.addresses.first() else { continue };
            let Ok(ip) = address.parse::<IpAddr>() else {
                let field = format!("endpoints[{i}].addresses[0]");
                entry.errors.push(ConfigError::field(
                    origin,
                    &id(),
                    field,
                    format!("{address:?} is not an IP address"),
                ));
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            entry.endpoints.push(SliceEndpoint {
                ip,
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            });
        }
        entry
    }
}

/// A backend resolved: where its traffic goes, and why it goes nowhere when it cannot be resolved.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) target: Arc<Target>,
    pub(crate) error: Option<String>,
}

impl Backends {
    pub(crate) fn resolve(&self, key: &BackendKey) -> Resolved {
        match self.target(key) {
            Ok(target) => Resolved { target: Arc::new(target), error: None },
            // Kept with no endpoints (503) so the route comes alive when the Service appears.
            Err(error) => {
                let target = Target::Pods { endpoints: Vec::new(), unready: Vec::new() };
                Resolved { target: Arc::new(target), error: Some(error) }
            }
        }
    }

    fn target(&self, key: &BackendKey) -> Result<Target, String> {
        let Some(service) = self.services.get(&key.namespace, &key.service) else {
            return Err(not_found(format_args!("Service {}/{}", key.namespace, key.service)));
        };
        let port = match &key.port {
            PortRef::Number(n) => service.ports.iter().find(|(_, number)| number == n),
            PortRef::Name(wanted) => service.ports.iter().find(|(name, _)| name.as_ref() == Some(wanted)),
            PortRef::First => service.ports.first(),
        };
        if let Some(host) = &service.external_name {
            if host.is_empty() {
                return Err(format!("ExternalName Service {}/{} has no spec.externalName", key.namespace, key.service));
            }
            let number = match (&key.port, port) {
                (_, Some((_, number))) => *number,
                (PortRef::Number(n), None) => *n,
                (PortRef::Name(_) | PortRef::First, None) => return Err(missing_port(key)),
            };
            let port = u16::try_from(number).map_err(|_| format!("port {number} is out of range"))?;
            return Ok(Target::External { host: host.clone(), port });
        }
        let Some((port_name, number)) = port else { return Err(missing_port(key)) };
        if key.cluster_ip {
            let ip = service.cluster_ip.ok_or_else(|| {
                format!(
                    "Service {}/{} has no ClusterIP (headless), which service-upstream needs",
                    key.namespace, key.service
                )
            })?;
            let port = u16::try_from(*number).map_err(|_| format!("port {number} is out of range"))?;
            return Ok(Target::Pods { endpoints: vec![SocketAddr::new(ip, port)], unready: Vec::new() });
        }
        let port_name = port_name.as_deref().unwrap_or_default();
        let (mut ready, mut terminating, mut unready) = (Vec::new(), Vec::new(), Vec::new());
        let slices = self.by_service.get(&key.namespace, &key.service).into_iter().flatten();
        for slice in slices.filter_map(|name| self.slices.get(&key.namespace, name)) {
            let Some(&(_, number)) = slice.ports.iter().find(|(name, _)| name == port_name) else { continue };
            for endpoint in &slice.endpoints {
                let addr = SocketAddr::new(endpoint.ip, number);
                match endpoint {
                    SliceEndpoint { ready: true, .. } => ready.push(addr),
                    SliceEndpoint { serving: true, terminating: true, .. } => terminating.push(addr),
                    _ => unready.push(addr),
                }
            }
        }
        let endpoints = if ready.is_empty() {
            terminating
        } else {
            unready.extend(terminating);
            ready
        };
        Ok(Target::Pods { endpoints: sorted(endpoints), unready: sorted(unready) })
    }
}

fn missing_port(key: &BackendKey) -> String {
    let port = match &key.port {
        PortRef::Number(n) => format!("port {n}"),
        PortRef::Name(name) => format!("port named {name:?}"),
        PortRef::First => "port".to_owned(),
    };
    format!("Service {}/{} has no {port}", key.namespace, key.service)
}

fn sorted(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}
