//! Power of two choices over the endpoints' active-request counts: close to least-requests
//! without a global scan, and without herding onto one endpoint after a reload.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_route::Backend;

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

/// Picks an endpoint of `backend`, avoiding `exclude` (one that just failed) when there is
/// another. `None` when the backend has no endpoints.
pub fn pick(backend: &Arc<Backend>, exclude: Option<usize>) -> Option<(usize, ActiveGuard)> {
    let endpoints = &backend.endpoints;
    let index = match (endpoints.len(), exclude) {
        (0, _) => return None,
        (1, _) => 0,
        (2, Some(failed)) => 1 - failed,
        (n, _) => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let load = |i: usize| (Some(i) == exclude, endpoints[i].active.load(Ordering::Relaxed));
            if load(b) < load(a) { b } else { a }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::{BackendKey, PortRef, Target};

    fn backend(n: u8) -> Arc<Backend> {
        let key = BackendKey { namespace: "ns".into(), service: "svc".into(), port: PortRef::Number(80) };
        let endpoints = (0..n).map(|i| ([10, 0, 0, i], 80).into()).collect();
        Arc::new(Backend::new(key, Arc::new(Target::Pods { endpoints, unready: Vec::new() })))
    }

    #[test]
    fn prefers_idle_endpoints_and_releases_on_drop() {
        let backend = backend(3);
        let held: Vec<_> = (0..30).map(|_| pick(&backend, None).unwrap()).collect();
        let loads: Vec<usize> = backend.endpoints.iter().map(|e| e.active.load(Ordering::Relaxed)).collect();
        assert_eq!(loads.iter().sum::<usize>(), 30);
        assert!(loads.iter().all(|&l| (7..=13).contains(&l)), "unbalanced: {loads:?}");
        drop(held);
        assert!(backend.endpoints.iter().all(|e| e.active.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn avoids_the_excluded_endpoint() {
        assert!(pick(&backend(0), None).is_none());
        assert_eq!(pick(&backend(1), Some(0)).unwrap().0, 0, "nothing else to try");
        let two = backend(2);
        assert!((0..20).all(|_| pick(&two, Some(0)).unwrap().0 == 1));
        let many = backend(5);
        assert!((0..50).all(|_| pick(&many, Some(2)).unwrap().0 != 2));
    }
}
