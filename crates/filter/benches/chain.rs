//! What a filter chain adds to a request.
//!
//! - `instance/N`, `request/N`: chains of 0, 1, 3 and 10 trivial filters with both phases (the
//!   test filter `probe` with no configuration: a call per phase, one response header set), on
//!   reused instances and on fresh ones (`isolation: request`).
//! - `one-phase/N`: chains of 1 and 3 filters with only a response phase (`tag`), reused.
//! - `headers/...`: one reused `probe` that reads one request header, reads all of them (ten),
//!   or sets three.
//! - `proxy-wasm-instance/N`, `proxy-wasm-request/N`: chains of 1 and 3 proxy-wasm filters
//!   built with the official Rust SDK (`tests/proxy-wasm/probe`) doing what `probe` does (a
//!   call per phase, one response header set), plus the log phase they have.
//! - `proxy-wasm-go/1`: the Go SDK's template (`sdk/go/template`, add-tenant) on a reused
//!   instance: a call per phase, one request header and one response header set.
//!
//! `cargo bench -p sluice-filter --bench chain`

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_config::{BackendKey, FailurePolicy, FilterSpec, Isolation, PortRef, Target};
use sluice_filter::{Attachment, Chain, Engine, Exchange, Limits, Plugin, RequestContext};
use sluice_route::{Backend, RouteName};

fn context(backend: &Arc<Backend>) -> RequestContext {
    RequestContext {
        client: "192.0.2.7:4000".parse().unwrap(),
        namespace: "default".into(),
        local: "198.51.100.1:8443".parse().unwrap(),
        scheme: "http",
        host: "example.com".into(),
        route: RouteName { ingress: "default/web".into(), host: "example.com".into(), path: "Prefix /".into() },
        regex: None,
        matched_path: "/".into(),
        backend: backend.clone(),
        chosen: None,
        served: None,
        snapshot: None,
    }
}

fn chain(plugin: &Arc<Plugin>, config: &str, isolation: Isolation, length: usize) -> Chain {
    let spec = FilterSpec {
        plugin: plugin.name.to_string(),
        config: config.into(),
        failure: FailurePolicy::Closed,
        isolation,
        field: String::new(),
    };
    let filters = (0..length).map(|_| Attachment::new(spec.clone(), Ok(plugin.clone()))).collect();
    Chain { filters, namespace: "default".into() }
}

fn chains(c: &mut Criterion) {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let load = |name: &str| {
        let bytes = std::fs::read(sluice_tests::test_filters().join(format!("{name}.wasm"))).unwrap();
        Arc::new(engine.load(name, &bytes, Limits::default()).unwrap())
    };
    let (probe, tag) = (load("probe"), load("tag"));
    let bytes = std::fs::read(sluice_tests::proxy_wasm_filters().join("pw_probe.wasm")).unwrap();
    let proxy_wasm = Arc::new(engine.load("pw-probe", &bytes, Limits::default()).unwrap());
    let bytes = std::fs::read(sluice_tests::go_filter()).unwrap();
    let go = Arc::new(engine.load("add-tenant", &bytes, Limits::default()).unwrap());
    let endpoints: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap()];
    let key =
        BackendKey { namespace: "default".into(), service: "web".into(), port: PortRef::Number(80), cluster_ip: false };
    let backend = Arc::new(Backend::new(key, Arc::new(Target::Pods { endpoints, unready: Vec::new() })));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut request = http::Request::get("/hello").header("user-agent", "bench");
    for i in 0..9 {
        request = request.header(format!("x-extra-{i}"), "some value of a header");
    }
    let request = request.body(()).unwrap().into_parts().0;
    let response = http::Response::new(()).into_parts().0;

    let mut cases = Vec::new();
    for isolation in [Isolation::Instance, Isolation::Request] {
        let name = format!("{isolation:?}").to_lowercase();
        for length in [0, 1, 3, 10] {
            cases.push((BenchmarkId::new(&name, length), chain(&probe, "null", isolation, length)));
        }
    }
    for length in [1, 3] {
        cases.push((BenchmarkId::new("one-phase", length), chain(&tag, "null", Isolation::Instance, length)));
    }
    for isolation in [Isolation::Instance, Isolation::Request] {
        let name = format!("proxy-wasm-{isolation:?}").to_lowercase();
        for length in [1, 3] {
            let config = r#"{"set_response":[["x-probe","1"]]}"#;
            cases.push((BenchmarkId::new(&name, length), chain(&proxy_wasm, config, isolation, length)));
        }
    }
    let config = r#"{"header":"x-tenant","value":"acme"}"#;
    cases.push((BenchmarkId::new("proxy-wasm-go", 1), chain(&go, config, Isolation::Instance, 1)));
    for (what, config) in [
        ("read-one", r#"{"read":"user-agent"}"#),
        ("read-all", r#"{"read_all":true}"#),
        ("set-three", r#"{"set":[["x-a","1"],["x-b","2"],["x-c","3"]]}"#),
    ] {
        cases.push((BenchmarkId::new("headers", what), chain(&probe, config, Isolation::Instance, 1)));
    }

    let mut group = c.benchmark_group("chain");
    for (id, chain) in &cases {
        group.bench_with_input(id.clone(), chain, |b, chain| {
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
    group.finish();
}

criterion_group!(benches, chains);
criterion_main!(benches);
