//! `loadtest`: one echo backend, then the same wrk load straight at it, through Sluice, and
//! (when installed) through nginx as a reverse proxy; prints requests/s and p50/p99 latency for
//! each, and Sluice's throughput relative to nginx.
//!
//! Build with `cargo build --release --workspace` and run `target/release/loadtest`. Needs `wrk`
//! (`apt-get install wrk`); nginx is optional (`apt-get install nginx-light`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use sluice_tests::{Gateway, free_port, sluice_bin};
use tokio::process::{Child, Command};

#[derive(Parser)]
struct Args {
    /// How long each run lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
}

struct Figures {
    rps: f64,
    p50: String,
    p99: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !on_path("wrk") {
        bail!("wrk is not installed: apt-get install -y wrk");
    }
    let backend_port = free_port("127.0.0.1")?;
    let backend_addr = format!("127.0.0.1:{backend_port}");
    let echo = sluice_bin().with_file_name("echo-pods");
    let _backend = spawn(Command::new(&echo).arg(&backend_addr)).context("starting echo-pods (build the workspace)")?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dir = tempfile::tempdir()?;
    let manifests = sluice_tests::manifests::service("load", &[backend_addr.parse()?], &[])
        + "---\n"
        + &sluice_tests::manifests::ingress("load", "load.test", &[("/", "Prefix", "load")]);
    std::fs::write(dir.path().join("load.yaml"), manifests)?;
    let sluice = Gateway::start(dir.path(), &[]).await?;

    let mut results = vec![("direct", wrk(&args, &format!("http://{backend_addr}/")).await?)];
    results.push(("sluice", wrk(&args, &sluice.url("/")).await?));
    let _nginx = if on_path("nginx") {
        let port = free_port("127.0.0.1")?;
        let nginx = start_nginx(dir.path(), port, &backend_addr).await?;
        results.push(("nginx", wrk(&args, &format!("http://127.0.0.1:{port}/")).await?));
        Some(nginx)
    } else {
        eprintln!("nginx is not installed (apt-get install -y nginx-light): comparing with the backend only");
        None
    };

    println!("\n{:<8} {:>12} {:>10} {:>10}", "target", "requests/s", "p50", "p99");
    for (name, f) in &results {
        println!("{name:<8} {:>12.0} {:>10} {:>10}", f.rps, f.p50, f.p99);
    }
    let rps = |n: &str| results.iter().find(|(name, _)| *name == n).map(|(_, f)| f.rps);
    if let (Some(s), Some(n)) = (rps("sluice"), rps("nginx")) {
        println!("sluice/nginx throughput: {:.2}", s / n);
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn(command: &mut Command) -> std::io::Result<Child> {
    command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()
}

async fn wrk(args: &Args, url: &str) -> anyhow::Result<Figures> {
    let output = Command::new("wrk")
        .args(["--latency", "-H", "Host: load.test"])
        .args(["-t", &args.threads.to_string(), "-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.duration.as_secs().max(1))])
        .arg(url)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.split_whitespace().next().unwrap_or("").to_owned()))
    };
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).with_context(|| format!("wrk said:\n{text}"))?;
    if text.contains("Non-2xx") {
        bail!("errors under load against {url}:\n{text}");
    }
    Ok(Figures { rps, p50: field("50%").unwrap_or_default(), p99: field("99%").unwrap_or_default() })
}

async fn start_nginx(dir: &Path, port: u16, backend: &str) -> anyhow::Result<Child> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\nerror_log stderr error;\npid {pid};\ndaemon off;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  \
             upstream backend {{ server {backend}; keepalive 128; }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://backend;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
             proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n    }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            tmp = dir.display(),
        ),
    )?;
    let child = spawn(Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(dir))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(child)
}
