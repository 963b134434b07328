//! `reload-bench`: how long one edited Ingress takes to serve, with 10,000 Ingresses loaded
//! (one file each, as a manifests directory or ConfigMap volume holds them), measured from the
//! file's atomic replacement to the first request the new route answers. With `--kube`, the
//! Ingresses and `--services` Services with an EndpointSlice each come from a fake API server
//! instead, and what is measured is a new Ingress, from its ADDED event to its first answer.
//! Also prints start-up time and the gateway's resident memory.
//!
//! Build with `cargo build --release --workspace` and run `target/release/reload-bench [--kube]`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use sluice_tests::fake_api::FakeApi;
use sluice_tests::manifests::{ingress, service};
use sluice_tests::{Client, Gateway, Pods, write_atomic};

#[derive(Parser)]
struct Args {
    /// Ingresses loaded.
    #[arg(long, default_value_t = 10_000)]
    ingresses: usize,
    /// Edits measured.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// Watch a fake API server instead of files.
    #[arg(long)]
    kube: bool,
    /// With `--kube`: Services (each with an EndpointSlice) the Ingresses spread over.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pods = Pods::start(&["127.0.0.1"]).await?;
    let dir = tempfile::tempdir()?;
    let host = |i: usize| format!("h{i}.bench.test");
    let base = [("/api", "Prefix", "svc")];
    let client = Client::new();
    let target = args.ingresses / 2;
    let mut latencies = Vec::new();
    // Each edit adds the path /editK, which answers 404 until the edit is live.
    let mut measure = async |k: usize, gateway: &Gateway, apply: &dyn Fn(&str) -> anyhow::Result<()>| {
        let path = format!("/edit{k}");
        let before = client.get(&gateway.url(&path), &host(target)).await?;
        anyhow::ensure!(before.status == 404, "{path} served before the edit");
        let t0 = Instant::now();
        apply(&path)?;
        // Polled every 2 ms: a tighter loop would take the CPU the gateway needs to apply it.
        while client.get(&gateway.url(&path), &host(target)).await?.status != 200 {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "edit {k} never went live");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    };
    let (gateway, startup, _api) = if args.kube {
        let api = FakeApi::start().await?;
        let services = args.services.max(1);
        for i in 0..services {
            api.apply_yaml(&service(&format!("svc{i}"), &pods.addrs, &[]));
        }
        for i in 0..args.ingresses {
            let backend = format!("svc{}", i % services);
            api.apply_yaml(&ingress(&format!("ing{i}"), &host(i), &[("/api", "Prefix", &backend)]));
        }
        let started = Instant::now();
        let gateway = Gateway::start_kube(&api.kubeconfig(dir.path())?, &[]).await?;
        let startup = started.elapsed();
        for k in 0..args.edits {
            // A new Ingress for the same host: ADDED, merged into the host's routes.
            let name = format!("new{k}");
            let add = |path: &str| {
                api.apply_yaml(&ingress(&name, &host(target), &[(path, "Exact", "svc0")]));
                Ok(())
            };
            measure(k, &gateway, &add).await?;
        }
        (gateway, startup, Some(api))
    } else {
        std::fs::write(dir.path().join("service.yaml"), service("svc", &pods.addrs, &[]))?;
        let file = |i: usize| dir.path().join(format!("ingress-{i}.yaml"));
        for i in 0..args.ingresses {
            std::fs::write(file(i), ingress(&format!("ing{i}"), &host(i), &base))?;
        }
        let started = Instant::now();
        let gateway = Gateway::start(dir.path(), &[]).await?;
        let startup = started.elapsed();
        for k in 0..args.edits {
            let edit = |path: &str| {
                write_atomic(
                    &file(target),
                    &ingress(&format!("ing{target}"), &host(target), &[base[0], (path, "Exact", "svc")]),
                )
            };
            measure(k, &gateway, &edit).await?;
            write_atomic(&file(target), &ingress(&format!("ing{target}"), &host(target), &base))?;
        }
        (gateway, startup, None)
    };
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pid = gateway.child.id().context("sluice exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_owned();
    let what = match args.kube {
        true => format!("Ingresses and {} Services with EndpointSlices from the API server", args.services.max(1)),
        false => "Ingresses in files".to_owned(),
    };
    println!("{} {what}: start-up to ready {:.0} ms; {}", args.ingresses, ms(startup), rss.replace('\t', " "));
    println!(
        "edit to live over {} edits: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    );
    Ok(())
}
