//! `loadtest`: one echo backend, then the same wrk load straight at it, through Sluice, and
//! (when installed) through nginx as a reverse proxy; prints requests/s, p50/p99 latency and
//! the CPU time the server under test spent per request (the backend for `direct`; all nginx
//! processes), and Sluice's figures relative to nginx. On a shared 2-core machine requests/s
//! moves with whatever else runs; CPU per request is the steadier comparison.
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
    cpu_us_per_request: f64,
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
    let backend = spawn(Command::new(&echo).arg(&backend_addr)).context("starting echo-pods (build the workspace)")?;
    let backend_pid = backend.id().context("echo-pods exited")?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dir = tempfile::tempdir()?;
    let manifests = sluice_tests::manifests::service("load", &[backend_addr.parse()?], &[])
        + "---\n"
        + &sluice_tests::manifests::ingress("load", "load.test", &[("/", "Prefix", "load")]);
    std::fs::write(dir.path().join("load.yaml"), manifests)?;
    let sluice = Gateway::start(dir.path(), &[]).await?;

    let mut results = vec![("direct", wrk(&args, &format!("http://{backend_addr}/"), backend_pid).await?)];
    results.push(("sluice", wrk(&args, &sluice.url("/"), sluice.child.id().context("sluice exited")?).await?));
    let _nginx = if on_path("nginx") {
        let port = free_port("127.0.0.1")?;
        let nginx = start_nginx(dir.path(), port, &backend_addr).await?;
        let pid = nginx.id().context("nginx exited")?;
        results.push(("nginx", wrk(&args, &format!("http://127.0.0.1:{port}/"), pid).await?));
        Some(nginx)
    } else {
        eprintln!("nginx is not installed (apt-get install -y nginx-light): comparing with the backend only");
        None
    };

    println!("\n{:<8} {:>12} {:>10} {:>10} {:>14}", "target", "requests/s", "p50", "p99", "CPU us/request");
    for (name, f) in &results {
        println!("{name:<8} {:>12.0} {:>10} {:>10} {:>14.1}", f.rps, f.p50, f.p99, f.cpu_us_per_request);
    }
    let find = |n: &str| results.iter().find(|(name, _)| *name == n).map(|(_, f)| f);
    if let (Some(s), Some(n)) = (find("sluice"), find("nginx")) {
        println!(
            "sluice/nginx: throughput {:.2}, CPU per request {:.2}",
            s.rps / n.rps,
            s.cpu_us_per_request / n.cpu_us_per_request
        );
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

async fn wrk(args: &Args, url: &str, server_pid: u32) -> anyhow::Result<Figures> {
    let cpu_before = cpu_seconds(server_pid)?;
    let output = Command::new("wrk")
        .args(["--latency", "-H", "Host: load.test"])
        .args(["-t", &args.threads.to_string(), "-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.duration.as_secs().max(1))])
        .arg(url)
        .output()
        .await?;
    let cpu = cpu_seconds(server_pid)? - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.split_whitespace().next().unwrap_or("").to_owned()))
    };
    let rps: f64 = field("Requests/sec:").and_then(|v| v.parse().ok()).with_context(|| format!("wrk said:\n{text}"))?;
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.parse().ok()))
        .with_context(|| format!("wrk said:\n{text}"))?;
    if text.contains("Non-2xx") {
        bail!("errors under load against {url}:\n{text}");
    }
    Ok(Figures {
        rps,
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
        cpu_us_per_request: cpu * 1e6 / requests,
    })
}

/// User plus system CPU seconds of `pid` and its child processes (nginx's workers).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    // Clock ticks per second; 100 on Linux unless the kernel was built otherwise.
    const TICKS: f64 = 100.0;
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else { continue };
        // Fields after the parenthesised command name: state, ppid, ..., utime (14), stime (15).
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let own_pid: u32 = head.split(' ').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let fields: Vec<&str> = rest.split(' ').collect();
        let ppid: u32 = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if own_pid == pid || ppid == pid {
            let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
            total += (ticks(11) + ticks(12)) / TICKS;
        }
    }
    Ok(total)
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
