//! The admission webhook end to end: the real binary (`sluice webhook`, and `sluice serve
//! --webhook`) answering AdmissionReviews over HTTPS, checking against manifest files and
//! against the fake API server.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use sluice_tests::fake_api::FakeApi;
use sluice_tests::manifests::{annotated_ingress, filtered_ingress, ingress, service};
use sluice_tests::tls::{Certificate, Connection};
use sluice_tests::{Gateway, Reply, free_port, plugin_cache, sluice_bin, test_filters};
use tokio::process::{Child, Command};

/// A certificate for the webhook, written to `dir` as `webhook.crt` and `webhook.key`.
fn certificate(dir: &Path) -> Certificate {
    let certificate = Certificate::new(&["localhost"]);
    std::fs::write(dir.join("webhook.crt"), &certificate.chain_pem).unwrap();
    std::fs::write(dir.join("webhook.key"), &certificate.key_pem).unwrap();
    certificate
}

/// The TLS arguments naming the files [`certificate`] wrote.
fn tls_args(dir: &Path, cert_flag: &str, key_flag: &str) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    vec![cert_flag.to_owned(), path("webhook.crt"), key_flag.to_owned(), path("webhook.key")]
}

/// A running `sluice webhook`, killed when dropped.
struct Webhook {
    addr: SocketAddr,
    certificate: Certificate,
    _child: Child,
}

impl Webhook {
    /// Starts `sluice webhook` reading objects from `source`, with the test filters as its
    /// plugins, and waits until it answers reviews.
    async fn start(dir: &Path, source: &[&OsStr]) -> Webhook {
        let certificate = certificate(dir);
        let addr: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1").unwrap()).into();
        let child = Command::new(sluice_bin())
            .arg("webhook")
            .args(["--listen", &addr.to_string()])
            .args(tls_args(dir, "--tls-cert", "--tls-key"))
            .args(source)
            .args([OsStr::new("--plugins"), test_filters().as_os_str()])
            .args([OsStr::new("--plugin-cache"), plugin_cache().as_os_str()])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut webhook = Webhook { addr, certificate, _child: child };
        webhook.wait_ready().await;
        webhook
    }

    /// Waits until a review is answered (not 503, not refused for want of a configuration).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(reply) = post(self.addr, review("ready", "UPDATE", json!({}))).await
                && reply.status == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "the webhook on {} did not answer within 300 s", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The answer to a review of `yaml`'s Ingress being created: its `response`.
    async fn review(&self, yaml: &str) -> Value {
        let reply = self.post(review("create", "CREATE", json_of(yaml))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert_eq!(answer["response"]["uid"], "create", "{answer}");
        answer["response"].clone()
    }

    async fn post(&self, body: impl Into<Bytes>) -> Reply {
        let mut connection = Connection::open(self.addr, Some("localhost"), false).await.unwrap();
        assert_eq!(connection.peer.as_ref(), Some(&self.certificate.der), "the webhook's certificate");
        let request = http::Request::post("/validate").header("host", "localhost").body(Full::new(body.into()));
        connection.send(request.unwrap()).await.unwrap().0
    }
}

/// POSTs `body` to `/validate` on `addr` over TLS.
async fn post(addr: SocketAddr, body: String) -> anyhow::Result<Reply> {
    let mut connection = Connection::open(addr, Some("localhost"), false).await?;
    let request = http::Request::post("/validate").header("host", "localhost").body(Full::new(Bytes::from(body)))?;
    Ok(connection.send(request).await?.0)
}

/// Writes `bytes` to `addr` over TLS (as far as the server reads them) and returns what it
/// answers.
async fn raw_tls(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let config = sluice_proxy::danger::client_config_accepting_any_certificate();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let bytes = bytes.to_vec();
    // The server may answer and close before it has read everything.
    let write = tokio::spawn(async move { writer.write_all(&bytes).await });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer).await;
    write.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The Ingress of a YAML manifest, as JSON.
fn json_of(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap()
}

/// An AdmissionReview of an Ingress `operation` on `object`, as the API server sends it.
fn review(uid: &str, operation: &str, object: Value) -> String {
    let name = object["metadata"]["name"].clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "name": name,
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "dryRun": false
        }
    })
    .to_string()
}

/// The message a refusal carries.
fn refusal(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403, "{response}");
    response["status"]["message"].as_str().unwrap().to_owned()
}

fn warnings(response: &Value) -> Vec<String> {
    let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
    warnings.iter().map(|w| w.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn refuses_each_kind_of_broken_ingress_with_the_words_of_check() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("app.yaml"), service("app", &[], &[])).unwrap();
    let webhook = Webhook::start(dir.path(), &[OsStr::new("--manifests"), manifests.as_os_str()]).await;
    let paths = [("/", "Prefix", "app")];

    let fine = webhook.review(&ingress("web", "web.test", &paths)).await;
    assert_eq!(fine["allowed"], true, "{fine}");
    assert_eq!(warnings(&fine), Vec::<String>::new());

    // A Service that is not there yet does not make the Ingress wrong: objects come in any order.
    let early = webhook.review(&ingress("early", "early.test", &[("/", "Prefix", "later")])).await;
    assert_eq!(early["allowed"], true, "{early}");
    assert_eq!(
        warnings(&early),
        ["Ingress default/early: spec.rules[0].http.paths[0].backend.service: Service default/later not found; \
             requests to this backend get 503"]
    );

    let timeout = [("nginx.ingress.kubernetes.io/proxy-connect-timeout", "soon")];
    let regex = [("nginx.ingress.kubernetes.io/use-regex", "true")];
    let snippet = [("nginx.ingress.kubernetes.io/configuration-snippet", "deny all;")];
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad annotation value",
            annotated_ingress("timeout", "t.test", &paths, &timeout),
            "Ingress default/timeout: metadata.annotations[nginx.ingress.kubernetes.io/proxy-connect-timeout]: ",
        ),
        (
            "bad regex",
            annotated_ingress("regex", "r.test", &[("/(unclosed", "ImplementationSpecific", "app")], &regex),
            "Ingress default/regex: spec.rules[0].http.paths[0].path: \"/(unclosed\" is not a valid regular expression",
        ),
        (
            "unknown plugin",
            filtered_ingress("absent", "a.test", &paths, "- plugin: absent\n"),
            "Ingress default/absent: metadata.annotations[sluice.dev/filters][0]: plugin absent is not loaded",
        ),
        (
            "plugin configuration rejected",
            filtered_ingress("rejected", "p.test", &paths, "- plugin: probe\n  config: {reject: true}\n"),
            "Ingress default/rejected: metadata.annotations[sluice.dev/filters][0]: plugin probe rejects the configuration",
        ),
        (
            "snippet",
            annotated_ingress("snippet", "s.test", &paths, &snippet),
            "Ingress default/snippet: metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]: \
             nginx configuration snippets are never interpreted",
        ),
    ];
    for (what, yaml, expected) in &cases {
        let response = webhook.review(yaml).await;
        let message = refusal(&response);
        assert!(message.starts_with(expected), "{what}: {message}");

        // `sluice check` prints the same words, after the file's name.
        let file = dir.path().join("check.yaml");
        std::fs::write(&file, format!("{yaml}---\n{}", service("app", &[], &[]))).unwrap();
        let output = std::process::Command::new(sluice_bin())
            .arg("check")
            .arg(&file)
            .args([OsStr::new("--plugins"), test_filters().as_os_str()])
            .args([OsStr::new("--plugin-cache"), plugin_cache().as_os_str()])
            .output()
            .unwrap();
        let printed = String::from_utf8(output.stdout).unwrap();
        let prefix = format!("error: {}: ", file.display());
        let checked: Vec<&str> = printed.lines().filter_map(|line| line.strip_prefix(&prefix)).collect();
        assert_eq!(checked, message.lines().collect::<Vec<_>>(), "{what}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!stderr.contains("published configuration"), "{what}: check logs like a server: {stderr}");
    }

    // Another class's Ingress, and deletions, are not ours to check.
    let other = annotated_ingress("other", "o.test", &paths, &snippet)
        .replace("ingressClassName: sluice", "ingressClassName: nginx");
    let response = webhook.review(&other).await;
    assert_eq!(response["allowed"], true, "{response}");
    let yaml = annotated_ingress("snippet", "s.test", &paths, &snippet);
    let deleted = webhook.post(review("delete", "DELETE", json_of(&yaml))).await;
    assert_eq!(serde_json::from_str::<Value>(&deleted.body).unwrap()["response"]["allowed"], true, "{}", deleted.body);
}

#[tokio::test]
async fn refuses_what_is_not_a_review_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let webhook = Webhook::start(dir.path(), &[OsStr::new("--manifests"), manifests.as_os_str()]).await;

    let malformed = webhook.post("{\"apiVersion\": ").await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(malformed.body.starts_with("not an AdmissionReview: "), "{}", malformed.body);
    let not_json = webhook.post(vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    let wrong_kind = webhook.post(json!({"apiVersion": "v1", "kind": "Pod"}).to_string()).await;
    assert_eq!(wrong_kind.status, 400, "{}", wrong_kind.body);

    // 9 MB at most, as ingress-nginx's webhook: refused before the body is read, whether the
    // head announces it or it arrives in chunks.
    let too_long = 9 * 1024 * 1024 + 1;
    let head = format!("POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {too_long}\r\n\r\n");
    let answer = raw_tls(webhook.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    let mut chunked = b"POST /validate HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    chunked.extend(format!("{too_long:x}\r\n").as_bytes());
    chunked.extend(vec![b' '; too_long]);
    let answer = raw_tls(webhook.addr, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");

    let mut connection = Connection::open(webhook.addr, Some("localhost"), false).await.unwrap();
    let (elsewhere, _) = connection.get("localhost", "/mutate").await.unwrap();
    assert_eq!(elsewhere.status, 404);

    // Still answering.
    let response = webhook.review(&ingress("web", "", &[("/", "Prefix", "app")])).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn in_cluster_it_sees_the_services_the_api_server_holds() {
    let api = FakeApi::start().await.unwrap();
    api.apply_yaml(&service("app", &[], &[]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let webhook = Webhook::start(dir.path(), &Gateway::kube(&kubeconfig)).await;

    let known = webhook.review(&ingress("web", "web.test", &[("/", "Prefix", "app")])).await;
    assert_eq!((known["allowed"].clone(), warnings(&known)), (json!(true), vec![]), "{known}");
    let early = ingress("early", "early.test", &[("/", "Prefix", "later")]);
    let response = webhook.review(&early).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(warnings(&response)[0].contains("Service default/later not found"), "{response}");

    api.apply_yaml(&service("later", &[], &[]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !warnings(&webhook.review(&early).await).is_empty() {
        assert!(Instant::now() < deadline, "the webhook never saw Service default/later");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The API server does not hold what is reviewed: nothing was written.
    assert!(api.get("Ingress", "default", "early").is_none());
}

#[tokio::test]
async fn the_gateway_serves_the_webhook_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("app.yaml"), service("app", &[], &[])).unwrap();
    certificate(dir.path());
    let addr: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1").unwrap()).into();
    let mut args = vec!["--webhook".to_owned(), addr.to_string()];
    args.extend(tls_args(dir.path(), "--webhook-tls-cert", "--webhook-tls-key"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _gateway = Gateway::start(&manifests, &args).await.unwrap();

    let fine = review("fine", "CREATE", json_of(&ingress("web", "", &[("/", "Prefix", "app")])));
    let reply = post(addr, fine).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&reply.body).unwrap()["response"]["allowed"], true, "{}", reply.body);
    let snippet = [("nginx.ingress.kubernetes.io/server-snippet", "return 200;")];
    let yaml = annotated_ingress("snippet", "", &[("/", "Prefix", "app")], &snippet);
    let reply = post(addr, review("snippet", "CREATE", json_of(&yaml))).await.unwrap();
    let response = &serde_json::from_str::<Value>(&reply.body).unwrap()["response"];
    assert!(refusal(response).contains("snippets are never interpreted"), "{response}");
}
