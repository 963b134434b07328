//! Choosing endpoints. By default, power of two choices over the endpoints' active-request
//! counts: close to least-requests without a global scan, and without herding onto one
//! endpoint after a reload. Per Ingress: round robin, EWMA of response times, or consistent
//! hashing of a request key.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header;
use sluice_builtins::affinity::cookie_value;
use sluice_config::{HashKey, HashPart, LoadBalance};
use sluice_filter::Route;
use sluice_route::{Backend, Endpoint, Ewma};

use crate::headers::Host;
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// Counts one request against an endpoint until dropped.
#[derive(Debug)]
pub struct ActiveGuard {
    backend: Arc<Backend>,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.backend.endpoints[self.index].active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint of `backend`, avoiding those in `tried` (which failed this request) while
/// there is another. `None` when the backend has no endpoints.
pub fn pick(backend: &Arc<Backend>, tried: &[usize]) -> Option<(usize, ActiveGuard)> {
    let endpoints = &backend.endpoints;
    let index = match endpoints.len() {
        0 => return None,
        1 => 0,
        n => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let load = |i: usize| (tried.contains(&i), endpoints[i].active.load(Ordering::Relaxed));
            let chosen = if load(b) < load(a) { b } else { a };
            // Both draws already failed: any untried endpoint, if one is left.
            if tried.contains(&chosen) { (0..n).find(|i| !tried.contains(i)).unwrap_or(chosen) } else { chosen }
        }
    };
    pin(backend, index)
}

/// Counts a request against endpoint `index` (one a filter chose). `None` if there is no such
/// endpoint.
pub fn pin(backend: &Arc<Backend>, index: usize) -> Option<(usize, ActiveGuard)> {
    backend.endpoints.get(index)?.active.fetch_add(1, Ordering::Relaxed);
    Some((index, ActiveGuard { backend: backend.clone(), index }))
}

/// The endpoint the route's balancing picks before sending, when that is not the default
/// least-requests choice made at send time (`None`): a hash of the request (`upstream-hash-by`),
/// round robin, or the lowest EWMA of response times (`load-balance`).
pub fn choose(route: &Route, parts: &http::request::Parts, client: SocketAddr, host: &Host) -> Option<usize> {
    let backend = &route.backend;
    let endpoints = &backend.endpoints;
    if endpoints.len() < 2 {
        return None;
    }
    if let Some(key) = &route.ingress.hash_by {
        let key = hash_key(key, parts, client, host);
        return Some(match route.ingress.hash_subset {
            Some(size) if size < endpoints.len() => rendezvous_subset(endpoints, key, size),
            _ => rendezvous(endpoints, key),
        });
    }
    match route.ingress.load_balance {
        LoadBalance::LeastRequest => None,
        LoadBalance::RoundRobin => Some(backend.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()),
        LoadBalance::Ewma => {
            let a = fastrand::usize(..endpoints.len());
            let b = (a + 1 + fastrand::usize(..endpoints.len() - 1)) % endpoints.len();
            let now = Ewma::now();
            let score = |i: usize| endpoints[i].ewma.score(now, endpoints[i].active.load(Ordering::Relaxed));
            Some(if score(b) < score(a) { b } else { a })
        }
    }
}

/// The hash of a request's `upstream-hash-by` key.
fn hash_key(key: &HashKey, parts: &http::request::Parts, client: SocketAddr, host: &Host) -> u64 {
    let mut hasher = Xxh3::new();
    for part in &key.parts {
        match part {
            HashPart::Text(text) => hasher.update(text.as_bytes()),
            HashPart::RequestUri => hasher.update(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes()),
            HashPart::Uri => hasher.update(parts.uri.path().as_bytes()),
            HashPart::Host => hasher.update(host.name().as_bytes()),
            HashPart::RemoteAddr => match client.ip() {
                IpAddr::V4(ip) => hasher.update(&ip.octets()),
                IpAddr::V6(ip) => hasher.update(&ip.octets()),
            },
            HashPart::Header(name) => {
                hasher.update(parts.headers.get(name.as_str()).map_or(&b""[..], |v| v.as_bytes()));
            }
            HashPart::Cookie(name) => {
                let cookies = parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
                hasher.update(cookie_value(cookies, name).unwrap_or_default().as_bytes());
            }
            HashPart::Arg(name) => {
                // Raw, as nginx's `$arg_NAME`.
                let query = parts.uri.query().unwrap_or_default();
                let value = query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| k == name));
                hasher.update(value.map_or("", |(_, v)| v).as_bytes());
            }
        }
    }
    hasher.digest()
}

/// Rendezvous hashing: the endpoint whose hash with `key` is highest. Going from n to n+1
/// endpoints moves 1/(n+1) of the keys, all to the new endpoint; removing one moves only its keys.
fn rendezvous(endpoints: &[Endpoint], key: u64) -> usize {
    (0..endpoints.len()).max_by_key(|&i| weight(&endpoints[i], key)).unwrap_or(0)
}

/// One of the `size` endpoints that rank highest for `key` (`0 < size < endpoints.len()`), at
/// random: the key sticks to its subset, and its load spreads within it.
fn rendezvous_subset(endpoints: &[Endpoint], key: u64, size: usize) -> usize {
    let mut ranked: Vec<(u64, usize)> = (0..endpoints.len()).map(|i| (weight(&endpoints[i], key), i)).collect();
    ranked.select_nth_unstable_by(size - 1, |a, b| b.cmp(a));
    ranked[fastrand::usize(..size)].1
}

/// The rendezvous weight of `endpoint` for `key`.
fn weight(endpoint: &Endpoint, key: u64) -> u64 {
    let ip = match endpoint.addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    let mut bytes = [0u8; 18];
    bytes[..16].copy_from_slice(&ip.octets());
    bytes[16..].copy_from_slice(&endpoint.addr.port().to_be_bytes());
    xxh3_64_with_seed(&bytes, key)
}

/// Records how long an endpoint took to answer, for `ewma` balancing.
pub fn observe(backend: &Backend, served: SocketAddr, took: Duration) {
    if let Some(endpoint) = backend.endpoints.iter().find(|e| e.addr == served) {
        endpoint.ewma.observe(took, Ewma::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::{BackendKey, PortRef, Target};

    fn backend(n: u8) -> Arc<Backend> {
        let key =
            BackendKey { namespace: "ns".into(), service: "svc".into(), port: PortRef::Number(80), cluster_ip: false };
        let endpoints = (0..n).map(|i| ([10, 0, 0, i], 80).into()).collect();
        Arc::new(Backend::new(key, Arc::new(Target::Pods { endpoints, unready: Vec::new() })))
    }

    #[test]
    fn prefers_idle_endpoints_and_releases_on_drop() {
        let backend = backend(3);
        let held: Vec<_> = (0..30).map(|_| pick(&backend, &[]).unwrap()).collect();
        let loads: Vec<usize> = backend.endpoints.iter().map(|e| e.active.load(Ordering::Relaxed)).collect();
        assert_eq!(loads.iter().sum::<usize>(), 30);
        assert!(loads.iter().all(|&l| (7..=13).contains(&l)), "unbalanced: {loads:?}");
        drop(held);
        assert!(backend.endpoints.iter().all(|e| e.active.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn avoids_endpoints_already_tried() {
        assert!(pick(&backend(0), &[]).is_none());
        assert_eq!(pick(&backend(1), &[0]).unwrap().0, 0, "nothing else to try");
        let two = backend(2);
        assert!((0..20).all(|_| pick(&two, &[0]).unwrap().0 == 1));
        let many = backend(5);
        assert!((0..50).all(|_| pick(&many, &[2]).unwrap().0 != 2));
        assert!((0..50).all(|_| pick(&many, &[0, 1, 3, 4]).unwrap().0 == 2), "the one left");
    }

    fn addrs(n: u8) -> Box<[Endpoint]> {
        backend(n)
            .endpoints
            .iter()
            .map(|e| Endpoint { addr: e.addr, active: Default::default(), ewma: Ewma::default() })
            .collect()
    }

    #[test]
    fn rendezvous_moves_only_what_scaling_must() {
        let (four, five) = (addrs(4), addrs(5));
        let (mut moved, mut spread) = (0, [0; 4]);
        for key in 0..2000u64 {
            let (before, after) = (rendezvous(&four, key), rendezvous(&five, key));
            spread[before] += 1;
            if before != after {
                assert_eq!(after, 4, "a key moved between old endpoints");
                moved += 1;
            }
        }
        assert!((300..=500).contains(&moved), "{moved} of 2000 keys moved to the fifth endpoint (expected about 400)");
        assert!(spread.iter().all(|&n| (400..=600).contains(&n)), "uneven: {spread:?}");
    }

    #[test]
    fn a_subset_is_the_top_ranked_endpoints() {
        let five = addrs(5);
        for key in 0..50u64 {
            let mut top: Vec<usize> = (0..5).collect();
            top.sort_by_key(|&i| std::cmp::Reverse(weight(&five[i], key)));
            let chosen: std::collections::BTreeSet<usize> = (0..60).map(|_| rendezvous_subset(&five, key, 2)).collect();
            assert_eq!(chosen, top[..2].iter().copied().collect(), "key {key}");
            assert_eq!(rendezvous(&five, key), top[0]);
        }
    }

    #[test]
    fn hash_keys_read_the_request() {
        let key = |source: &str, uri: &str, headers: &[(&str, &str)]| {
            let mut request = http::Request::builder().uri(uri);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            let host = Host::Header(http::HeaderValue::from_static("Shop.Test:8080"));
            hash_key(&source.parse().unwrap(), &parts, ([10, 0, 0, 1], 1234).into(), &host)
        };
        assert_eq!(key("$request_uri", "/a?b=1", &[]), key("$request_uri", "/a?b=1", &[("x", "y")]));
        assert_ne!(key("$request_uri", "/a?b=1", &[]), key("$request_uri", "/a?b=2", &[]));
        assert_eq!(key("$uri", "/a?b=1", &[]), key("$uri", "/a?b=2", &[]));
        assert_eq!(key("$host", "/", &[]), key("shop.test", "/", &[]), "$host is lowercase, without port");
        assert_eq!(key("$http_x_user", "/", &[("x-user", "7")]), key("7", "/", &[]));
        assert_eq!(key("${cookie_sid}-x", "/", &[("cookie", "a=1; sid=42")]), key("42-x", "/", &[]));
        assert_eq!(key("$arg_id$remote_addr", "/?x=1&id=5", &[]), key("$arg_id$remote_addr", "/?id=5", &[]));
    }

    #[test]
    fn ewma_prefers_the_faster_endpoint_until_it_decays() {
        let (slow, fast) = (Ewma::default(), Ewma::default());
        slow.observe(Duration::from_millis(200), 1_000);
        fast.observe(Duration::from_millis(5), 1_000);
        assert!(fast.score(2_000, 0) < slow.score(2_000, 0));
        assert!(fast.score(2_000, 99) > slow.score(2_000, 0), "in-flight requests count");
        assert!(slow.score(1_000_000_000, 0) < 1.0, "an idle endpoint's average decays");
    }
}
