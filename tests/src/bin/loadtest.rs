//! `loadtest`: one echo backend, then the same wrk load straight at it, through Sluice, and
//! (when installed) through nginx as a reverse proxy, in plain HTTP, HTTPS with keep-alive, and
//! HTTPS with a new connection (handshake) per request; prints requests/s, p50/p99 latency and
//! the CPU time the server under test spent per request (the backend for `direct`; all nginx
//! processes), and Sluice's figures relative to nginx. Plain HTTP is also run on a route with a
//! chain of three Wasm filters (the test filter `probe`: set a header; keep state for the
//! response phase; set a response header), and on a route with the built-in rewrite, headers
//! and cookie-affinity filters (ingress-nginx annotations), against the same route without
//! filters. On a shared 2-core machine requests/s
//! moves with whatever else runs; CPU per request is the steadier comparison.
//!
//! Build with `cargo build --release --workspace` and run `target/release/loadtest`. Needs `wrk`
//! (`apt-get install wrk`); nginx is optional (`apt-get install nginx-light`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use sluice_tests::tls::Certificate;
use sluice_tests::{Gateway, free_port, on_path, sluice_bin};
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

/// How each run's connections behave.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Plain HTTP, keep-alive.
    Http,
    /// HTTPS, keep-alive: the cost of encryption.
    Https,
    /// HTTPS, a new connection per request: the cost of handshakes.
    Handshakes,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Https => "https",
            Mode::Handshakes => "https-new-conn",
        }
    }
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

    // One certificate for both proxies; plain HTTP is not redirected so both modes can be run.
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new(&["load.test"]);
    let (cert_file, key_file) = (dir.path().join("load.crt"), dir.path().join("load.key"));
    std::fs::write(&cert_file, &certificate.chain_pem)?;
    std::fs::write(&key_file, &certificate.key_pem)?;
    let ingress = sluice_tests::manifests::ingress("load", "load.test", &[("/", "Prefix", "load")])
        .replace(
            "metadata: {name: load}",
            "metadata:\n  name: load\n  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: \"false\"}",
        )
        .replace("  rules:\n", "  tls: [{hosts: [load.test], secretName: load-tls}]\n  rules:\n");
    let manifests = [
        sluice_tests::manifests::service("load", &[backend_addr.parse()?], &[]),
        certificate.secret("load-tls"),
        ingress,
    ];
    let chain = "- plugin: probe\n  config: {set: [[x-tenant, acme]]}\n- plugin: probe\n  config: {name: audit}\n\
                 - plugin: probe\n  config: {}\n";
    let filtered =
        sluice_tests::manifests::filtered_ingress("filtered", "load.test", &[("/filtered", "Prefix", "load")], chain)
            .replace("  annotations:\n", "  annotations:\n    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n");
    std::fs::write(dir.path().join("load.yaml"), manifests.join("---\n"))?;
    std::fs::write(dir.path().join("filtered.yaml"), filtered)?;
    let builtins = sluice_tests::manifests::annotated_ingress(
        "builtins",
        "load.test",
        &[("/builtins(/|$)(.*)", "ImplementationSpecific", "load")],
        &[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("sluice.dev/request-headers", "set: {x-env: load}"),
            ("sluice.dev/response-headers", "set: {x-frame-options: DENY}"),
        ],
    );
    std::fs::write(dir.path().join("builtins.yaml"), builtins)?;
    let plugins = tempfile::tempdir()?;
    std::fs::copy(sluice_tests::test_filters().join("probe.wasm"), plugins.path().join("probe.wasm"))?;
    let plugin_args = ["--plugins", plugins.path().to_str().context("UTF-8 path")?];
    let sluice = Gateway::start(dir.path(), &plugin_args).await?;
    let sluice_pid = sluice.child.id().context("sluice exited")?;

    let mut results =
        vec![("direct http".to_owned(), wrk(&args, &format!("http://{backend_addr}/"), &[], backend_pid).await?)];
    let sluice_urls = [(Mode::Http, sluice.url("/")), (Mode::Https, format!("https://{}/", sluice.https))];
    let nginx = if on_path("nginx") {
        let (port, tls_port) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        let child = start_nginx(dir.path(), port, tls_port, &backend_addr, &cert_file, &key_file).await?;
        Some((child, port, tls_port))
    } else {
        eprintln!("nginx is not installed (apt-get install -y nginx-light): comparing with the backend only");
        None
    };
    // wrk counts only statuses above 399 as errors: make sure the routes answer 200, not a redirect.
    for path in ["/", "/filtered", "/builtins/x"] {
        let reply = sluice_tests::Client::new().get(&sluice.url(path), "load.test").await?;
        anyhow::ensure!(reply.status == 200, "{path} answered {}: {}", reply.status, reply.body);
    }
    results.push(("sluice http 3 filters".to_owned(), wrk(&args, &sluice.url("/filtered"), &[], sluice_pid).await?));
    // Rewrite + headers + affinity: clients that keep their session, and clients that each
    // start one (a new key and a Set-Cookie on every response).
    let session = "Cookie: INGRESSCOOKIE=0123456789abcdef";
    let url = sluice.url("/builtins/x");
    results.push(("sluice http built-ins".to_owned(), wrk(&args, &url, &[session], sluice_pid).await?));
    results.push(("sluice http built-ins new".to_owned(), wrk(&args, &url, &[], sluice_pid).await?));
    for mode in [Mode::Http, Mode::Https, Mode::Handshakes] {
        let url = &sluice_urls[usize::from(mode != Mode::Http)].1;
        let close: &[&str] = if mode == Mode::Handshakes { &["Connection: close"] } else { &[] };
        results.push((format!("sluice {}", mode.label()), wrk(&args, url, close, sluice_pid).await?));
        if let Some((child, port, tls_port)) = &nginx {
            let url = match mode {
                Mode::Http => format!("http://127.0.0.1:{port}/"),
                _ => format!("https://127.0.0.1:{tls_port}/"),
            };
            let pid = child.id().context("nginx exited")?;
            results.push((format!("nginx {}", mode.label()), wrk(&args, &url, close, pid).await?));
        }
    }

    if let Some((child, ..)) = nginx {
        stop_nginx(child).await;
    }

    println!("\n{:<22} {:>12} {:>10} {:>10} {:>14}", "target", "requests/s", "p50", "p99", "CPU us/request");
    for (name, f) in &results {
        println!("{name:<22} {:>12.0} {:>10} {:>10} {:>14.1}", f.rps, f.p50, f.p99, f.cpu_us_per_request);
    }
    let find = |n: String| results.iter().find(|(name, _)| *name == n).map(|(_, f)| f);
    for mode in [Mode::Http, Mode::Https, Mode::Handshakes] {
        if let (Some(s), Some(n)) = (find(format!("sluice {}", mode.label())), find(format!("nginx {}", mode.label())))
        {
            let (rps, cpu) = (s.rps / n.rps, s.cpu_us_per_request / n.cpu_us_per_request);
            println!("sluice/nginx {:<15} throughput {rps:.2}, CPU per request {cpu:.2}", mode.label());
        }
    }
    if let (Some(filtered), Some(http)) = (find("sluice http 3 filters".into()), find("sluice http".into())) {
        let added = (filtered.cpu_us_per_request - http.cpu_us_per_request) / 3.0;
        println!(
            "sluice 3-filter chain / no filters: throughput {:.2}, CPU per filter per request {added:.1} us",
            filtered.rps / http.rps
        );
    }
    for (name, label) in [("sluice http built-ins", "sessions kept"), ("sluice http built-ins new", "new sessions")] {
        if let (Some(builtins), Some(http)) = (find(name.into()), find("sluice http".into())) {
            println!(
                "sluice rewrite+headers+affinity ({label}) / no filters: throughput {:.2}, CPU per request +{:.1} us",
                builtins.rps / http.rps,
                builtins.cpu_us_per_request - http.cpu_us_per_request
            );
        }
    }
    if let (Some(https), Some(http)) = (find("sluice https".into()), find("sluice http".into())) {
        println!("sluice https/http keep-alive throughput: {:.2}", https.rps / http.rps);
    }
    Ok(())
}

fn spawn(command: &mut Command) -> std::io::Result<Child> {
    command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()
}

/// Runs wrk against `url` with extra request `headers` (`Name: value`).
async fn wrk(args: &Args, url: &str, headers: &[&str], server_pid: u32) -> anyhow::Result<Figures> {
    let cpu_before = cpu_seconds(server_pid)?;
    let mut command = Command::new("wrk");
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
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

/// nginx's workers outlive a killed master: ask the master to stop them (SIGQUIT) and wait.
async fn stop_nginx(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-QUIT", &pid.to_string()]).status().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

async fn start_nginx(
    dir: &Path,
    port: u16,
    tls_port: u16,
    backend: &str,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Child> {
    let conf = dir.join("nginx.conf");
    let location = "location / {\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      \
                    proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
                    proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n    }";
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\nerror_log stderr error;\npid {pid};\ndaemon off;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  \
             upstream backend {{ server {backend}; keepalive 128; }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    {location}\n  }}\n  \
             server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    {location}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            tmp = dir.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    let child = spawn(Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(dir))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(child)
}
