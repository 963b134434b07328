//! Route matching and recompiling with 10,000 Ingresses loaded.
//!
//! `hosts`: 10,000 Ingresses with their own host and three paths each (the common shape).
//! `one-host`: 10,000 Ingresses sharing one host with distinct prefixes, plus 20 regex paths
//! (the worst case for a per-host scan). `compile`: translating and compiling all of them, what
//! every reload costs besides reading the changed file.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_config::{Manifest, TranslateOptions, parse_manifests, translate};
use sluice_route::Snapshot;

// The allocator the binary uses, so compile figures match what a reload costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 10_000;

fn manifests(one_host: bool) -> Vec<Manifest> {
    let mut yaml = String::from("apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}\n");
    let backend = "backend: {service: {name: svc, port: {number: 80}}}";
    for i in 0..N {
        let (host, paths) = if one_host {
            let path = format!("      - {{path: /team{i}/app, pathType: Prefix, {backend}}}\n");
            ("shared.bench.test".to_owned(), path)
        } else {
            let paths = format!(
                "      - {{path: /, pathType: Prefix, {backend}}}\n      - {{path: /api, pathType: Prefix, {backend}}}\n      \
                 - {{path: /api/v{}, pathType: Exact, {backend}}}\n",
                i % 5
            );
            (format!("h{i}.bench.test"), paths)
        };
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: ing{i}}}\nspec:\n  \
             ingressClassName: sluice\n  rules:\n  - host: {host}\n    http:\n      paths:\n{paths}"
        ));
    }
    if one_host {
        for i in 0..20 {
            yaml.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: re{i}\n  \
                 annotations: {{nginx.ingress.kubernetes.io/use-regex: \"true\"}}\nspec:\n  ingressClassName: sluice\n  \
                 rules:\n  - host: shared.bench.test\n    http:\n      paths:\n      \
                 - {{path: \"/re{i}/[a-z]+/[0-9]+\", pathType: ImplementationSpecific, {backend}}}\n"
            ));
        }
    }
    let parsed = parse_manifests(&Arc::from("bench.yaml"), &yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
    parsed.manifests
}

fn compile(manifests: &[Manifest], previous: &Snapshot) -> Snapshot {
    let model = translate(manifests, &TranslateOptions::new("sluice"));
    assert!(model.errors.is_empty());
    Snapshot::compile(model, previous)
}

fn bench(c: &mut Criterion) {
    let spread = manifests(false);
    let snapshot = compile(&spread, &Snapshot::default());
    let requests: Vec<(String, &str)> = (0..1024)
        .map(|i| {
            let host = format!("h{}.bench.test", (i * 7919) % N);
            (host, ["/", "/api/users/42", "/api/v3", "/static/app.js"][i % 4])
        })
        .collect();
    let mut i = 0;
    c.bench_function("match/10k-ingresses/hosts", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            let (host, path) = &requests[i];
            black_box(snapshot.table.route(black_box(host), black_box(path)).is_some())
        })
    });

    let shared = manifests(true);
    let shared_snapshot = compile(&shared, &Snapshot::default());
    let paths: Vec<String> = (0..1024).map(|i| format!("/team{}/app/page/{i}", (i * 7919) % N)).collect();
    c.bench_function("match/10k-ingresses/one-host", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(shared_snapshot.table.route(black_box("shared.bench.test"), black_box(&paths[i])).is_some())
        })
    });

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("10k-ingresses", |b| b.iter(|| compile(black_box(&spread), &snapshot)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
