//! What a filter chain adds to a request: chains of 1, 3 and 10 trivial filters (the test
//! filter `probe` with no configuration: a call per phase, one response header set), on
//! reused instances and on fresh ones (`isolation: request`).
//!
//! `cargo bench -p sluice-filter --bench chain`

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_config::{BackendKey, FailurePolicy, FilterSpec, Isolation, PortRef, Target};
use sluice_filter::{Attachment, Chain, Engine, Exchange, Limits, RequestContext};
use sluice_route::{Backend, RouteName};

fn context(backend: &Arc<Backend>) -> RequestContext {
    RequestContext {
        client: "192.0.2.7:4000".parse().unwrap(),
        scheme: "http",
        host: "example.com".into(),
        route: RouteName { ingress: "default/web".into(), host: "example.com".into(), path: "Prefix /".into() },
        regex: None,
        matched_path: "/".into(),
        backend: backend.clone(),
        chosen: None,
        served: None,
    }
}

fn chains(c: &mut Criterion) {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let bytes = std::fs::read(sluice_tests::test_filters().join("probe.wasm")).unwrap();
    let plugin = Arc::new(engine.load("probe", &bytes, Limits::default()).unwrap());
    let endpoints: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap()];
    let key = BackendKey { namespace: "default".into(), service: "web".into(), port: PortRef::Number(80) };
    let backend = Arc::new(Backend::new(key, Arc::new(Target::Pods { endpoints, unready: Vec::new() })));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let request = http::Request::get("/hello").header("user-agent", "bench").body(()).unwrap().into_parts().0;
    let response = http::Response::new(()).into_parts().0;

    let mut group = c.benchmark_group("chain");
    for isolation in [Isolation::Instance, Isolation::Request] {
        for length in [0, 1, 3, 10] {
            let spec = FilterSpec {
                plugin: "probe".into(),
                config: "null".into(),
                failure: FailurePolicy::Closed,
                isolation,
                field: String::new(),
            };
            let filters = (0..length).map(|_| Attachment::new(spec.clone(), Ok(plugin.clone()))).collect();
            let chain = Chain { filters };
            let name = format!("{isolation:?}").to_lowercase();
            group.bench_with_input(BenchmarkId::new(name, length), &chain, |b, chain| {
                b.iter(|| {
                    runtime.block_on(async {
                        let mut exchange = Exchange::new(context(&backend), chain);
                        let mut request = request.clone();
                        chain.on_request(&mut exchange, &mut request).await.unwrap();
                        let mut response = response.clone();
                        chain.on_response(&mut exchange, &mut response).await.unwrap();
                        response
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, chains);
criterion_main!(benches);
