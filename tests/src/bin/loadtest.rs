//! `loadtest`: one echo backend, then the same load straight at it, through Sluice, and (when
//! installed) through nginx as a reverse proxy, in plain HTTP, HTTPS with keep-alive, HTTPS with
//! a new connection (handshake) per request, and HTTP/2 over TLS (`h2load`); prints requests/s,
//! p50/p99 latency (mean for h2load, which reports no percentiles) and the CPU time the server
//! under test spent per request (the backend for `direct`; all nginx processes), and Sluice's
//! figures relative to nginx. Plain HTTP is also run on a route with a chain of three Wasm
//! filters (the test filter `probe`: set a header; keep state for the response phase; set a
//! response header), on a route with the built-in rewrite, headers and cookie-affinity filters
//! (ingress-nginx annotations), and on routes with each access-control built-in (CORS, an
//! allowed source range, basic auth with an apr1 and a `{SHA}` user), each against the same
//! route without filters.
//!
//! Identical runs on a shared 2-core machine differ by up to 30%, so the comparison is made to
//! hold: with two or more CPUs, Sluice and nginx are pinned to CPU 0 (one worker each) and the
//! backend and load generators to CPU 1, every measurement is repeated in `--rounds` rounds in
//! which Sluice and nginx run back to back, and the ratios are paired per round (min-max) as well
//! as taken over the medians. `--baseline PATH` runs another build of Sluice (say, main's) back
//! to back with this one, for A/B figures of a change.
//!
//! Build with `cargo build --release --workspace` and run `target/release/loadtest`. Needs `wrk`
//! (`apt-get install wrk`); nginx and h2load are optional (`apt-get install nginx-light
//! nghttp2-client`).

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
    /// Rounds: each run is repeated this many times, Sluice and nginx back to back.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Do not pin the servers and the load to separate CPUs.
    #[arg(long)]
    no_pin: bool,
    /// The connection modes to run, comma-separated (all by default).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Mode::ALL)]
    modes: Vec<Mode>,
    /// Leave out the runs through Wasm filters.
    #[arg(long)]
    no_filters: bool,
    /// Only these runs through Wasm filters, by name (`rate limit,3 filters`); all by default.
    #[arg(long, value_delimiter = ',')]
    filtered: Vec<String>,
    /// Another `sluice` binary (say, main's) to run as well, back to back with this one in
    /// every round, on the same core, routes and backend: an A/B comparison.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
}

struct Figures {
    rps: f64,
    p50: String,
    p99: String,
    cpu_us_per_request: f64,
}

/// How each run's connections behave.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Mode {
    /// Plain HTTP, keep-alive.
    Http,
    /// HTTPS, keep-alive: the cost of encryption.
    Https,
    /// HTTPS, a new connection per request: the cost of handshakes.
    #[value(name = "https-new-conn")]
    Handshakes,
    /// HTTP/2 over TLS with h2load, 10 streams per connection.
    H2,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Http, Mode::Https, Mode::Handshakes, Mode::H2];

    fn label(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Https => "https",
            Mode::Handshakes => "https-new-conn",
            Mode::H2 => "h2",
        }
    }
}

/// Sets the CPUs this process, and so whatever it starts from now on, may run on. The runtime is
/// single-threaded, so every child is spawned from the thread pinned here.
fn pin_self(cpu: Option<&str>) -> anyhow::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -p -c {cpu} failed");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !on_path("wrk") {
        bail!("wrk is not installed: apt-get install -y wrk");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cpus >= 2 && on_path("taskset");
    let (server_cpu, load_cpu) = if pin { (Some("0"), Some("1")) } else { (None, None) };
    if pin {
        eprintln!("pinning: Sluice and nginx on CPU 0, backend and load on CPU 1");
    }
    pin_self(load_cpu)?;
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
    for (name, path, annotations) in ACCESS_ROUTES {
        let mut annotations = annotations.to_vec();
        annotations.push(("nginx.ingress.kubernetes.io/ssl-redirect", "false"));
        let ingress =
            sluice_tests::manifests::annotated_ingress(name, "load.test", &[(path, "Prefix", "load")], &annotations);
        std::fs::write(dir.path().join(format!("{name}.yaml")), ingress)?;
    }
    // The users of the basic-auth route (passwords `secret-apr1`, `secret-sha`).
    let users =
        [("user-apr1", "$apr1$Zbx7wQch$V1s6qIeZipTO/mOq2pBpJ1"), ("user-sha", "{SHA}mYaP0lMpbAbqlz+/QP6oV6SzMLc=")];
    let users = sluice_tests::manifests::basic_auth_secret("load-users", &users);
    std::fs::write(dir.path().join("users.yaml"), users)?;
    let plugins = tempfile::tempdir()?;
    std::fs::copy(sluice_tests::test_filters().join("probe.wasm"), plugins.path().join("probe.wasm"))?;
    let plugin_args = ["--plugins", plugins.path().to_str().context("UTF-8 path")?];
    pin_self(server_cpu)?;
    let sluice = Gateway::start(dir.path(), &plugin_args).await?;
    let mut gateways = vec![("sluice", sluice)];
    if let Some(bin) = &args.baseline {
        gateways.push(("baseline", Gateway::start_binary(bin, dir.path(), &plugin_args).await?));
    }
    let sluice = &gateways[0].1;
    let nginx = if on_path("nginx") {
        let (port, tls_port) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        let workers = if pin { 1 } else { cpus };
        let child = start_nginx(dir.path(), workers, port, tls_port, &backend_addr, &cert_file, &key_file).await?;
        Some((Nginx(child), port, tls_port))
    } else {
        eprintln!("nginx is not installed (apt-get install -y nginx-light): comparing with the backend only");
        None
    };
    pin_self(load_cpu)?;
    let h2load = on_path("h2load");
    if !h2load {
        eprintln!("h2load is not installed (apt-get install -y nghttp2-client): no HTTP/2 runs");
    }
    // wrk counts only statuses above 399 as errors: make sure the routes answer 200, not a redirect.
    let unfiltered = Filtered { name: "", what: "", path: "/", headers: &[] };
    for Filtered { path, headers, .. } in std::iter::once(&unfiltered).chain(FILTERED) {
        let headers: Vec<(&str, &str)> = headers.iter().filter_map(|header| header.split_once(": ")).collect();
        let (client, url) = (sluice_tests::Client::new(), sluice.url(path));
        let reply = client.request(http::Method::GET, &url, "load.test", &headers, Default::default()).await?;
        anyhow::ensure!(reply.status == 200, "{path} answered {}: {}", reply.status, reply.body);
    }

    let direct = Load::Wrk(&[]);
    let mut results = Results::default();
    results.add("direct http", run(&args, direct, &format!("http://{backend_addr}/"), backend_pid).await?);
    for round in 1..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        for &mode in &args.modes {
            let load = match mode {
                Mode::H2 if !h2load => continue,
                Mode::H2 => Load::H2load,
                Mode::Handshakes => Load::Wrk(&["Connection: close"]),
                Mode::Http | Mode::Https => direct,
            };
            for (name, gateway) in &gateways {
                let url = match mode {
                    Mode::Http => gateway.url("/"),
                    _ => format!("https://{}/", gateway.https),
                };
                let pid = gateway.child.id().context("sluice exited")?;
                results.add(&format!("{name} {}", mode.label()), run(&args, load, &url, pid).await?);
            }
            if let Some((child, port, tls_port)) = &nginx {
                let url = match mode {
                    Mode::Http => format!("http://127.0.0.1:{port}/"),
                    _ => format!("https://127.0.0.1:{tls_port}/"),
                };
                let pid = child.0.id().context("nginx exited")?;
                results.add(&format!("nginx {}", mode.label()), run(&args, load, &url, pid).await?);
            }
        }
        if args.no_filters {
            continue;
        }
        for (name, gateway) in &gateways {
            let pid = gateway.child.id().context("sluice exited")?;
            for filtered in
                FILTERED.iter().filter(|f| args.filtered.is_empty() || args.filtered.iter().any(|n| n == f.name))
            {
                let (load, url) = (Load::Wrk(filtered.headers), gateway.url(filtered.path));
                results.add(&format!("{name} http {}", filtered.name), run(&args, load, &url, pid).await?);
            }
        }
    }
    results.print();
    Ok(())
}

/// A plain HTTP run on a route with filters, compared with the route without.
struct Filtered {
    name: &'static str,
    /// What the route runs, for the comparison's line.
    what: &'static str,
    path: &'static str,
    /// Extra request headers (`Name: value`).
    headers: &'static [&'static str],
}

const FILTERED: &[Filtered] = &[
    Filtered { name: "3 filters", what: "3-filter chain", path: "/filtered", headers: &[] },
    // Rewrite + headers + affinity: clients that keep their session, and clients that each
    // start one (a new key and a Set-Cookie on every response).
    Filtered {
        name: "built-ins",
        what: "rewrite+headers+affinity (sessions kept)",
        path: "/builtins/x",
        headers: &["Cookie: INGRESSCOOKIE=0123456789abcdef"],
    },
    Filtered {
        name: "built-ins new",
        what: "rewrite+headers+affinity (new sessions)",
        path: "/builtins/x",
        headers: &[],
    },
    Filtered {
        name: "cors",
        what: "CORS (simple request)",
        path: "/cors",
        headers: &["Origin: https://app.load.test"],
    },
    Filtered { name: "source ranges", what: "allowlist source range", path: "/ranges", headers: &[] },
    // A limit no run reaches: what counting each request costs.
    Filtered { name: "rate limit", what: "rate limit (rps + connections)", path: "/limited", headers: &[] },
    // Every request first asks the backend (as its authentication Service), which says yes.
    Filtered { name: "auth url", what: "auth-url (a call to the backend first)", path: "/external", headers: &[] },
    // `user-apr1:secret-apr1`: 1,000 rounds of MD5 per request, as nginx does.
    Filtered {
        name: "basic auth apr1",
        what: "basic auth (apr1)",
        path: "/basic",
        headers: &["Authorization: Basic dXNlci1hcHIxOnNlY3JldC1hcHIx"],
    },
    // `user-sha:secret-sha`: one SHA-1.
    Filtered {
        name: "basic auth sha",
        what: "basic auth ({SHA})",
        path: "/basic",
        headers: &["Authorization: Basic dXNlci1zaGE6c2VjcmV0LXNoYQ=="],
    },
];

/// An Ingress's annotations: name, value.
type Annotations = &'static [(&'static str, &'static str)];

/// The Ingresses of the access-control runs: name, path prefix and annotations.
const ACCESS_ROUTES: &[(&str, &str, Annotations)] = &[
    (
        "cors",
        "/cors",
        &[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "https://app.load.test"),
        ],
    ),
    ("ranges", "/ranges", &[("nginx.ingress.kubernetes.io/whitelist-source-range", "127.0.0.0/8, 10.0.0.0/8")]),
    ("external", "/external", &[("nginx.ingress.kubernetes.io/auth-url", "http://load/verify")]),
    (
        "limited",
        "/limited",
        &[
            ("nginx.ingress.kubernetes.io/limit-rps", "100000000"),
            ("nginx.ingress.kubernetes.io/limit-connections", "100000"),
        ],
    ),
    (
        "basic",
        "/basic",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "load-users"),
            ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-map"),
        ],
    ),
];

/// Every run's figures, by name, in the order of the rounds.
#[derive(Default)]
struct Results(Vec<(String, Vec<Figures>)>);

impl Results {
    fn add(&mut self, name: &str, figures: Figures) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, runs)) => runs.push(figures),
            None => self.0.push((name.to_owned(), vec![figures])),
        }
    }

    fn runs(&self, name: &str) -> Option<&[Figures]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, runs)| runs.as_slice())
    }

    fn print(&self) {
        println!(
            "\n{:<26} {:>12} {:>10} {:>10} {:>14} {:>6}",
            "target (median run)", "requests/s", "p50", "p99", "CPU us/request", "runs"
        );
        for (name, runs) in &self.0 {
            let f = median_run(runs);
            println!(
                "{name:<26} {:>12.0} {:>10} {:>10} {:>14.1} {:>6}",
                f.rps,
                f.p50,
                f.p99,
                f.cpu_us_per_request,
                runs.len()
            );
        }
        for mode in Mode::ALL {
            let label = mode.label();
            if let Some((rps, cpu)) = self.paired(&format!("sluice {label}"), &format!("nginx {label}")) {
                println!("sluice/nginx {label:<15} throughput {rps}, CPU per request {cpu}");
            }
        }
        for run in FILTERED {
            if let Some((rps, cpu)) = self.paired(&format!("sluice http {}", run.name), "sluice http") {
                println!("sluice {} / no filters: throughput {rps}, CPU per request {cpu}", run.what);
            }
        }
        if let Some((rps, _)) = self.paired("sluice https", "sluice http") {
            println!("sluice https/http keep-alive throughput: {rps}");
        }
        let runs = self.0.iter().map(|(name, _)| name.as_str());
        for name in runs.filter_map(|name| name.strip_prefix("baseline ")) {
            if let Some((rps, cpu)) = self.paired(&format!("sluice {name}"), &format!("baseline {name}")) {
                println!("sluice/baseline {name:<22} throughput {rps}, CPU per request {cpu}");
            }
        }
        println!("(ratios: of the medians, then [min-max] of the rounds' pairs)");
    }

    /// `a` over `b`: requests/s and CPU per request, of the medians and per round.
    fn paired(&self, a: &str, b: &str) -> Option<(String, String)> {
        let (a, b) = (self.runs(a)?, self.runs(b)?);
        let ratio = |of: fn(&Figures) -> f64| {
            let (x, y) = (of(median_run(a)), of(median_run(b)));
            let mut rounds: Vec<f64> = a.iter().zip(b).map(|(x, y)| of(x) / of(y)).collect();
            rounds.sort_by(f64::total_cmp);
            let (min, max) = (rounds.first().copied().unwrap_or(f64::NAN), rounds.last().copied().unwrap_or(f64::NAN));
            format!("{:.2} [{min:.2}-{max:.2}]", x / y)
        };
        Some((ratio(|f| f.rps), ratio(|f| f.cpu_us_per_request)))
    }
}

/// The run with the median requests/s.
fn median_run(runs: &[Figures]) -> &Figures {
    let mut sorted: Vec<&Figures> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted[sorted.len() / 2]
}

/// The load generator of a run.
#[derive(Clone, Copy)]
enum Load<'a> {
    /// wrk, with extra request headers (`Name: value`).
    Wrk(&'a [&'a str]),
    /// h2load: HTTP/2, ALPN over TLS.
    H2load,
}

async fn run(args: &Args, load: Load<'_>, url: &str, server_pid: u32) -> anyhow::Result<Figures> {
    match load {
        Load::Wrk(headers) => wrk(args, url, headers, server_pid).await,
        Load::H2load => h2load(args, url, server_pid).await,
    }
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
        .args(["-t", "1", "-c", &args.connections.to_string()])
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

/// Runs h2load against `url`: `--connections` HTTP/2 connections with 10 streams each.
async fn h2load(args: &Args, url: &str, server_pid: u32) -> anyhow::Result<Figures> {
    let cpu_before = cpu_seconds(server_pid)?;
    let output = Command::new("h2load")
        .args(["-H", ":authority: load.test", "-t", "1", "-m", "10"])
        .args(["-c", &args.connections.to_string(), "-D", &args.duration.as_secs().max(1).to_string()])
        .arg(url)
        .output()
        .await?;
    let cpu = cpu_seconds(server_pid)? - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    // "finished in 10.00s, 12345.67 req/s, 1.2MB/s", "requests: N total, N started, N done,
    // N succeeded, N failed, ...", "time for request: MIN MAX MEAN SD +/- SD".
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .with_context(|| format!("h2load said:\n{text}"))?;
    let counts: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .map(|l| l.split(", ").filter_map(|part| part.split(' ').next()?.parse().ok()).collect())
        .with_context(|| format!("h2load said:\n{text}"))?;
    let (succeeded, failed) = (counts.get(3).copied().unwrap_or(0), counts.get(4).copied().unwrap_or(0));
    if failed > 0 || succeeded == 0 {
        bail!("errors under load against {url}:\n{text}");
    }
    let mean = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("time for request:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default();
    Ok(Figures {
        rps,
        p50: format!("{mean} mean"),
        p99: "-".to_owned(),
        cpu_us_per_request: cpu * 1e6 / succeeded as f64,
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

/// nginx as a reverse proxy. Its workers outlive a killed master, so when dropped (also when a
/// run fails midway) the master is asked to stop them (SIGQUIT) and waited for.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return };
        let _ = std::process::Command::new("kill").args(["-QUIT", &pid.to_string()]).status();
        for _ in 0..100 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn start_nginx(
    dir: &Path,
    workers: usize,
    port: u16,
    tls_port: u16,
    backend: &str,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Child> {
    let conf = dir.join("nginx.conf");
    // The protocols Sluice offers, and ingress-nginx's default `ssl-protocols`: nginx before
    // 1.23.4 leaves TLS 1.3 out unless asked, and a TLS 1.2 resumption skips the key exchange
    // that a TLS 1.3 one makes, so handshake figures would compare different protocols.
    let location = "location / {\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      \
                    proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
                    proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n    }";
    std::fs::write(
        &conf,
        format!(
            "worker_processes {workers};\nerror_log stderr error;\npid {pid};\ndaemon off;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  \
             upstream backend {{ server {backend}; keepalive 128; }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    {location}\n  }}\n  \
             server {{\n    listen 127.0.0.1:{tls_port} ssl http2;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    {location}\n  }}\n}}\n",
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
