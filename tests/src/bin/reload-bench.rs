//! `reload-bench`: how long one edited Ingress takes to serve, with 10,000 Ingresses loaded
//! (one file each, as a manifests directory or ConfigMap volume holds them), measured from the
//! file's atomic replacement to the first request the new route answers. Also prints start-up
//! time and the gateway's resident memory.
//!
//! Build with `cargo build --release --workspace` and run `target/release/reload-bench`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pods = Pods::start(&["127.0.0.1"]).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("service.yaml"), service("svc", &pods.addrs, &[]))?;
    let file = |i: usize| dir.path().join(format!("ingress-{i}.yaml"));
    let host = |i: usize| format!("h{i}.bench.test");
    let base = [("/api", "Prefix", "svc")];
    for i in 0..args.ingresses {
        std::fs::write(file(i), ingress(&format!("ing{i}"), &host(i), &base))?;
    }

    let started = Instant::now();
    let gateway = Gateway::start(dir.path(), &[]).await?;
    let startup = started.elapsed();
    let client = Client::new();
    let target = args.ingresses / 2;
    let mut latencies = Vec::new();
    for k in 0..args.edits {
        // /editK answers 404 until the edit adding it is live.
        let path = format!("/edit{k}");
        let before = client.get(&gateway.url(&path), &host(target)).await?;
        anyhow::ensure!(before.status == 404, "{path} served before the edit");
        let edited = ingress(&format!("ing{target}"), &host(target), &[base[0], (path.as_str(), "Exact", "svc")]);
        let t0 = Instant::now();
        write_atomic(&file(target), &edited)?;
        loop {
            if client.get(&gateway.url(&path), &host(target)).await?.status == 200 {
                break;
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "edit {k} never went live");
        }
        latencies.push(t0.elapsed());
        write_atomic(&file(target), &ingress(&format!("ing{target}"), &host(target), &base))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pid = gateway.child.id().context("sluice exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_owned();
    println!("{} Ingresses: start-up to ready {:.0} ms; {}", args.ingresses, ms(startup), rss.replace('\t', " "));
    println!(
        "edit to live over {} edits: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    );
    Ok(())
}
