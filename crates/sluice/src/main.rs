//! The `sluice` binary: command line, logging, and the wiring of sources, publisher and
//! listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};
use http::HeaderValue;
use sluice_config::ObjectRef;
use sluice_control::{
    FileSource, KubeSource, Plugins, PublishAddress, Publisher, StatusOptions, StatusWriter, WatchMetrics, WebhookTls,
    serve_webhook, watch_files, watch_kube,
};
use sluice_filter::{Engine, Limits, Snapshot};
use sluice_proxy::{
    Admin, AdminState, ClientLimits, Metrics, Proxy, ProxyConfig, Shutdown, acceptor, bind_reuseport, serve,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

mod builtins {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

// Reloads build and drop hundreds of thousands of small objects at 10k Ingresses; glibc's
// allocator spent half of a recompile consolidating free lists (measured: 136 ms vs 75 ms).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A Kubernetes ingress gateway with WebAssembly filter chains")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Validate manifests; print every error and exit 1 if there is any.
    Check {
        /// Manifest files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The IngressClass whose Ingresses are checked.
        #[arg(long, default_value = "sluice")]
        ingress_class: String,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Serve the admission webhook alone: `POST /validate` with an admission.k8s.io/v1
    /// AdmissionReview, over TLS. Ingresses of the class are checked as the gateway would
    /// check them against the objects of the source, and refused with the errors `check`
    /// prints; missing Services, Secrets and ConfigMaps are warnings.
    Webhook(Box<WebhookArgs>),
}

/// Where the objects come from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// Manifest files or directories to route from (watched; changes apply live).
    #[arg(long = "manifests", value_name = "DIR", required_unless_present = "kube", conflicts_with = "kube")]
    manifests: Vec<PathBuf>,
    /// Route from the Kubernetes API server (in-cluster service account, `--kubeconfig`, or
    /// `KUBECONFIG`), watching Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets
    /// and ConfigMaps labelled `sluice.dev/plugin` or `sluice.dev/custom-headers`.
    #[arg(long)]
    kube: bool,
    /// The kubeconfig file for `--kube`.
    #[arg(long, value_name = "PATH", requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// With `--kube`, watch this namespace only (IngressClasses are cluster-wide).
    #[arg(long, value_name = "NAMESPACE", requires = "kube")]
    watch_namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WebhookArgs {
    /// Address of the webhook's HTTPS listener.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The webhook's certificate chain, PEM (read again when it changes).
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// The key of `--tls-cert`, PEM (read again when it changes).
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    /// The IngressClass whose Ingresses are checked; others are allowed unchecked.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    ingress_class: String,
    #[command(flatten)]
    plugins: PluginArgs,
    /// How long file or API changes must settle before they are applied.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = humantime::parse_duration)]
    reload_debounce: Duration,
}

/// Where filter plugins come from and what they may use.
#[derive(Debug, clap::Args)]
struct PluginArgs {
    /// Directory of filter plugin modules: `NAME.wasm`, with optional limits in
    /// `NAME.limits.yaml` (`deadline: 20ms`, `memory: 128m`). Watched; changes apply live.
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Where compiled plugin code is cached, keyed by module hash and engine settings
    /// [default: $XDG_CACHE_HOME/sluice or ~/.cache/sluice].
    #[arg(long, value_name = "DIR")]
    plugin_cache: Option<PathBuf>,
    /// How long one filter call may run before it is stopped (per-plugin override: limits file).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime::parse_duration)]
    filter_deadline: Duration,
    /// The most memory one filter instance may use (per-plugin override: limits file).
    #[arg(long, value_name = "SIZE", default_value = "64m", value_parser = sluice_config::annotations::parse_size)]
    filter_memory: u64,
}

impl PluginArgs {
    /// The plugin registry these arguments describe (nothing loaded yet).
    fn registry(&self) -> anyhow::Result<Plugins> {
        let cache = self.plugin_cache.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
            Some(base.join("sluice"))
        });
        let engine = Engine::new(cache).map_err(|e| anyhow::anyhow!("starting the Wasm engine: {e:#}"))?;
        let memory = usize::try_from(self.filter_memory).context("--filter-memory is too large")?;
        anyhow::ensure!(memory <= sluice_filter::MAX_MEMORY, "--filter-memory is above 512m");
        let limits = Limits { deadline: self.filter_deadline, memory };
        let builtins: Vec<_> = builtins::BUILTINS
            .iter()
            .map(|&(name, bytes)| {
                let deadline = limits.deadline.max(sluice_builtins::min_deadline(name));
                (name, bytes, Limits { deadline, ..limits })
            })
            .collect();
        Ok(Plugins::new(engine, self.plugins.clone(), limits, &builtins))
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// With `--kube`, the Service whose load-balancer addresses go into our Ingresses'
    /// `.status.loadBalancer` (written by one replica, the holder of a Lease). The Lease lasts
    /// 15 s; every replica tries it every 2 s (the holder renews it), and a holder that stops
    /// (SIGTERM, SIGINT) releases it, so another takes over within 2 s.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "kube", value_parser = parse_service)]
    publish_service: Option<ObjectRef>,
    /// With `--kube`, IPs or host names to write into our Ingresses' status instead.
    #[arg(long, value_name = "ADDR,...", requires = "kube", conflicts_with = "publish_service", value_delimiter = ',')]
    publish_address: Vec<String>,
    /// Address of the plain HTTP listener.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Address of the HTTPS listener (certificates from the Ingresses' TLS Secrets, by SNI).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    https: SocketAddr,
    /// The port plain-HTTP requests to TLS hosts are redirected to (the public HTTPS port,
    /// which behind a Service is not the listener's own).
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    https_redirect_port: u16,
    /// Strict-Transport-Security for HTTPS responses of TLS hosts; empty to send none.
    #[arg(long, value_name = "VALUE", default_value = "max-age=31536000; includeSubDomains")]
    hsts: String,
    /// Also serve the admission webhook (as `sluice webhook` does) on this address, checking
    /// against this gateway's own objects and plugins.
    #[arg(long, value_name = "ADDR", requires_all = ["webhook_tls_cert", "webhook_tls_key"])]
    webhook: Option<SocketAddr>,
    /// The webhook's certificate chain, PEM (read again when it changes).
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_tls_cert: Option<PathBuf>,
    /// The key of `--webhook-tls-cert`, PEM.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_tls_key: Option<PathBuf>,
    /// Address of the admin listener (/healthz, /readyz, /metrics, /config).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// The IngressClass whose Ingresses this gateway serves.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    ingress_class: String,
    /// How long to wait for a connection to an endpoint before answering 504 (per route:
    /// `proxy-connect-timeout`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// How long to wait for an upstream's response headers before answering 504 (per route:
    /// `proxy-read-timeout`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    response_timeout: Duration,
    /// After SIGTERM, how long to keep accepting new connections while `/readyz` reports 503, so
    /// that endpoint removal reaches every load balancer first (a preStop sleep, built in).
    /// SIGINT skips it.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    shutdown_delay: Duration,
    /// How long in-flight requests may take to finish after the listeners stop.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Load balancers in front of Sluice whose X-Forwarded-* headers are believed, as CIDRs
    /// (`10.0.0.0/8,192.168.1.7/32`). From anyone else those headers are replaced.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The status of requests refused by `limit-rps`, `limit-rpm` and `limit-connections`, 400-599
    /// (ingress-nginx's `limit-req-status-code`).
    #[arg(
        long,
        value_name = "STATUS",
        default_value_t = sluice_builtins::rate_limit::DEFAULT_STATUS,
        value_parser = clap::value_parser!(u16).range(400..=599)
    )]
    limit_status: u16,
    #[command(flatten)]
    plugins: PluginArgs,
    /// Log every request (target `sluice::access`): client, method, URI, status, duration,
    /// route, upstream endpoint, request ID. Off by default: it costs CPU on every request.
    #[arg(long)]
    access_log: bool,
    /// How long file or API changes must settle before they are applied (a burst is cut off
    /// at ten times this; a watch back from an API outage applies what it missed at once).
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = humantime::parse_duration)]
    reload_debounce: Duration,
    /// How long a client may take to send a request head, and how long a keep-alive connection
    /// may sit idle between requests, before it is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    client_header_timeout: Duration,
    /// The longest request line accepted (414 beyond).
    #[arg(long, value_name = "SIZE", default_value = "8k", value_parser = sluice_config::annotations::parse_size)]
    max_request_line: u64,
    /// The largest request head accepted, request line included (431 beyond).
    #[arg(long, value_name = "SIZE", default_value = "32k", value_parser = sluice_config::annotations::parse_size)]
    max_request_head: u64,
    /// The most header fields in a request head (431 beyond).
    #[arg(long, value_name = "COUNT", default_value_t = 100)]
    max_header_fields: usize,
    /// The most client connections each data-plane worker holds open; more are closed as they
    /// are accepted (`sluice_refused_connections`).
    #[arg(long, value_name = "COUNT", default_value_t = 16384)]
    max_connections: usize,
    /// The most concurrent streams on one HTTP/2 connection.
    #[arg(long, value_name = "COUNT", default_value_t = 128)]
    http2_max_streams: u32,
}

impl ServeArgs {
    /// What clients may send and hold open.
    fn client_limits(&self) -> anyhow::Result<ClientLimits> {
        let size = |bytes: u64, flag: &str| usize::try_from(bytes).with_context(|| format!("{flag} is too large"));
        Ok(ClientLimits {
            request_line: size(self.max_request_line, "--max-request-line")?,
            header_section: size(self.max_request_head, "--max-request-head")?,
            max_headers: self.max_header_fields,
            header_timeout: self.client_header_timeout,
            max_connections: self.max_connections,
            h2_max_streams: self.http2_max_streams,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Flushes buffered log lines when main returns.
    let access_log = matches!(&cli.command, Command::Serve(args) if args.access_log);
    // `check` prints what it found; the server's progress lines are not for it.
    let level = if matches!(cli.command, Command::Check { .. }) { "error" } else { "info" };
    let _logs = init_logging(cli.log_format, level, access_log);
    let result = match cli.command {
        Command::Check { paths, ingress_class, plugins } => check(paths, &ingress_class, &plugins),
        Command::Serve(args) => serve_command(*args).map(|()| ExitCode::SUCCESS),
        Command::Webhook(args) => webhook_command(*args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("sluice: {e:#}");
        ExitCode::FAILURE
    })
}

/// Logs to stderr through a background writer, so that a slow terminal or pipe never stalls
/// a data-plane thread: events of `level` and above unless `RUST_LOG` says otherwise.
/// `--access-log` shows its events whatever `RUST_LOG` says. Returns the guard that flushes on
/// drop.
fn init_logging(format: LogFormat, level: &str, access_log: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // rustls warns about what clients send (an IP address as SNI, as wrk and scanners do) on
    // every handshake: a log line per connection under a scan. Only errors, unless asked for.
    if !std::env::var("RUST_LOG").is_ok_and(|directives| directives.contains("rustls")) {
        filter = filter.add_directive("rustls=error".parse().expect("a valid directive"));
    }
    if access_log {
        filter = filter.add_directive("sluice::access=info".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn check(paths: Vec<PathBuf>, ingress_class: &str, plugins: &PluginArgs) -> anyhow::Result<ExitCode> {
    let mut source = FileSource::new(paths);
    source.refresh();
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let status = sluice_builtins::rate_limit::DEFAULT_STATUS;
    let mut publisher = Publisher::new(snapshot, ingress_class.to_owned(), status, plugins.registry()?);
    publisher.refresh_plugins();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let snapshot = runtime.block_on(publisher.publish(source.manifests(), source.errors().cloned()));
    for error in &snapshot.errors {
        println!("error: {error}");
    }
    let objects = source.manifests().count();
    println!("{objects} objects checked, {} errors", snapshot.errors.len());
    Ok(if snapshot.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs the gateway: the control plane and admin listener on the main thread, the data plane
/// on one single-threaded runtime per core.
fn serve_command(args: ServeArgs) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let http = bind_reuseport(args.http, workers).with_context(|| format!("binding --http {}", args.http))?;
    let https = bind_reuseport(args.https, workers).with_context(|| format!("binding --https {}", args.https))?;
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    control.block_on(run(args, http.into_iter().zip(https).collect()))
}

/// `NAMESPACE/NAME` of a Service.
fn parse_service(value: &str) -> Result<ObjectRef, String> {
    match value.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectRef::new("Service", namespace, name))
        }
        _ => Err(format!("`{value}` is not NAMESPACE/NAME")),
    }
}

/// Who this replica is and where its Lease lives: the pod's name and namespace (`POD_NAME`,
/// `POD_NAMESPACE` from the downward API, else host name and process id, and the service
/// account's namespace).
fn status_options(args: &ServeArgs) -> StatusOptions {
    let publish = match (&args.publish_service, args.publish_address.is_empty()) {
        (Some(service), _) => Some(PublishAddress::Service(service.clone())),
        (None, false) => Some(PublishAddress::Addresses(args.publish_address.clone())),
        (None, true) => None,
    };
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = read("/proc/sys/kernel/hostname").unwrap_or_else(|| "sluice".into());
        format!("{host}-{}", std::process::id())
    });
    let lease_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| read("/var/run/secrets/kubernetes.io/serviceaccount/namespace"))
        .unwrap_or_else(|| "default".into());
    StatusOptions { publish, lease_namespace, lease_name: format!("sluice-{}-leader", args.ingress_class), identity }
}

/// How long shutting down waits for the Lease to be released; after that it runs out by itself.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Per data-plane thread: its plain-HTTP and its HTTPS listening socket.
type WorkerListeners = Vec<(std::net::TcpListener, std::net::TcpListener)>;

/// The control plane's task, and the status writer when it writes status.
type Watching = (tokio::task::JoinHandle<()>, Option<StatusWriter>);

/// Loads the objects of `source` and publishes them with `publisher`, then again after every
/// change; `ready` is sent once the first snapshot is published. With `status` (cluster mode),
/// Ingress status and Events are written too.
async fn watch_source(
    source: &SourceArgs,
    mut publisher: Publisher,
    debounce: Duration,
    ready: oneshot::Sender<()>,
    status: Option<StatusOptions>,
    metrics: WatchMetrics,
) -> anyhow::Result<Watching> {
    publisher.refresh_plugins();
    if source.kube {
        let identity =
            status.as_ref().map_or_else(|| format!("webhook-{}", std::process::id()), |s| s.identity.clone());
        let agent = format!("sluice/{} ({identity})", env!("CARGO_PKG_VERSION"));
        let kube = KubeSource::connect(source.kubeconfig.as_deref(), source.watch_namespace.clone(), &agent)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API server: {e}"))?;
        Ok(watch_kube(kube, publisher, debounce, ready, status, metrics))
    } else {
        let mut files = FileSource::new(source.manifests.clone());
        files.refresh();
        publisher.publish(files.manifests(), files.errors().cloned()).await;
        let _ = ready.send(());
        Ok((watch_files(files, publisher, debounce).context("watching the manifests")?, None))
    }
}

/// Runs the admission webhook alone, until SIGTERM or SIGINT.
fn webhook_command(args: WebhookArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let tls = WebhookTls::load(args.tls_cert.clone(), args.tls_key.clone()).map_err(anyhow::Error::msg)?;
        let listener =
            TcpListener::bind(args.listen).await.with_context(|| format!("binding --listen {}", args.listen))?;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let status = sluice_builtins::rate_limit::DEFAULT_STATUS;
        let publisher = Publisher::new(snapshot, args.ingress_class.clone(), status, args.plugins.registry()?);
        let validator = Arc::new(publisher.validator());
        let (ready, _) = oneshot::channel();
        let metrics = WatchMetrics::default();
        let _watch = watch_source(&args.source, publisher, args.reload_debounce, ready, None, metrics).await?;
        tracing::info!(listen = %args.listen, "serving the admission webhook");
        tokio::select! {
            served = serve_webhook(listener, tls, validator) => {
                served.map_err(|e| anyhow::anyhow!("serving the webhook: {e}"))?;
            }
            signal = terminated() => {
                signal?;
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn run(args: ServeArgs, listeners: WorkerListeners) -> anyhow::Result<()> {
    let admin = TcpListener::bind(args.admin).await.with_context(|| format!("binding --admin {}", args.admin))?;
    let webhook = match (args.webhook, &args.webhook_tls_cert, &args.webhook_tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls = WebhookTls::load(cert.clone(), key.clone()).map_err(anyhow::Error::msg)?;
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding --webhook {addr}"))?;
            Some((listener, tls))
        }
        _ => None,
    };
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let state = Arc::new(AdminState::default());
    let publisher =
        Publisher::new(snapshot.clone(), args.ingress_class.clone(), args.limit_status, args.plugins.registry()?);
    let _webhook = webhook.map(|(listener, tls)| {
        let validator = Arc::new(publisher.validator());
        tokio::spawn(async move {
            let Err(e) = serve_webhook(listener, tls, validator).await;
            tracing::error!("the admission webhook stopped: {e}");
        })
    });
    let (ready_tx, ready) = oneshot::channel();
    let watch_metrics = WatchMetrics::default();
    let status = args.source.kube.then(|| status_options(&args));
    let (_watch, status_writer) =
        watch_source(&args.source, publisher, args.reload_debounce, ready_tx, status, watch_metrics.clone()).await?;

    let hsts = Some(args.hsts.as_str()).filter(|v| !v.is_empty()).map(HeaderValue::try_from).transpose();
    let config = ProxyConfig {
        connect_timeout: args.connect_timeout,
        response_timeout: args.response_timeout,
        https_redirect_port: args.https_redirect_port,
        hsts: hsts.context("--hsts is not a valid header value")?,
        access_log: args.access_log,
        trusted_proxies: args.trusted_proxies.clone(),
        ..ProxyConfig::default()
    };
    let tls = acceptor(snapshot.clone()).context("setting up TLS")?;
    let limits = Arc::new(args.client_limits()?);
    let (stop, shutdown) = Shutdown::new();
    let mut metrics = Metrics::default();
    watch_metrics.register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let mut workers = Vec::new();
    for (i, (http, https)) in listeners.into_iter().enumerate() {
        let (snapshot, config, shutdown, drain) =
            (snapshot.clone(), config.clone(), shutdown.clone(), args.drain_timeout);
        let (metrics, tls, limits) = (metrics.clone(), tls.clone(), limits.clone());
        let worker = std::thread::Builder::new().name(format!("sluice-worker-{i}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (http, https) = (TcpListener::from_std(http)?, TcpListener::from_std(https)?);
                let proxy = Arc::new(Proxy::new(snapshot, config, metrics.clone()));
                tokio::join!(
                    serve(http, proxy.clone(), shutdown.clone(), drain, Some(metrics.clone()), None, limits.clone()),
                    serve(https, proxy, shutdown, drain, Some(metrics), Some(tls), limits),
                );
                Ok::<_, std::io::Error>(())
            })
        });
        workers.push(worker.context("starting a data-plane thread")?);
    }
    // Ready once the first snapshot is published: at once from files, after every kind's first
    // list from the API server.
    tokio::spawn({
        let state = state.clone();
        async move {
            if ready.await.is_ok() {
                state.set_ready();
            }
        }
    });
    let admin_handler = Arc::new(Admin::new(snapshot, state.clone(), metrics));
    let admin_limits = Arc::new(ClientLimits::default());
    let admin_task = tokio::spawn(serve(admin, admin_handler, shutdown, args.drain_timeout, None, None, admin_limits));
    tracing::info!(http = %args.http, https = %args.https, admin = %args.admin, workers = workers.len(), "serving");

    let signal = terminated().await?;
    state.set_draining();
    // Status is handed to another replica at once, while this one still serves.
    let step_down = async {
        if let Some(writer) = status_writer {
            writer.stop(LEASE_RELEASE_TIMEOUT).await;
        }
    };
    let delay = async {
        if signal == SignalKind::terminate() && !args.shutdown_delay.is_zero() {
            tracing::info!(delay = ?args.shutdown_delay, "SIGTERM: not ready; still accepting while endpoints update");
            tokio::time::sleep(args.shutdown_delay).await;
        }
    };
    tokio::join!(step_down, delay);
    tracing::info!("shutting down: finishing in-flight requests");
    stop.send_replace(true);
    let joined = tokio::task::spawn_blocking(move || workers.into_iter().map(|w| w.join()).collect::<Vec<_>>()).await?;
    for result in joined {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "a data-plane thread failed"),
            Err(_) => tracing::error!("a data-plane thread panicked"),
        }
    }
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, with which one it was.
async fn terminated() -> anyhow::Result<SignalKind> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => SignalKind::terminate(),
        _ = int.recv() => SignalKind::interrupt(),
    })
}
