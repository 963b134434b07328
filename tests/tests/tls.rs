//! HTTPS through the real binary: certificates by SNI (exact, wildcard, default), rotation
//! without closing connections, redirects of plain HTTP, HSTS, 421, HTTP/2 and h2c.

use std::time::{Duration, Instant};

use sluice_tests::manifests::{ingress, service};
use sluice_tests::tls::{Certificate, Connection};
use sluice_tests::{Client, Gateway, Pods, write_atomic};

fn tls_ingress(name: &str, host: &str, secret: Option<&str>, annotations: &str) -> String {
    let secret = secret.map(|s| format!(", secretName: {s}")).unwrap_or_default();
    ingress(name, host, &[("/", "Prefix", "web")])
        .replace("metadata: {name: ", &format!("metadata:\n  annotations: {{{annotations}}}\n  name: "))
        .replace("}\nspec:\n", "\nspec:\n")
        .replace("  rules:\n", &format!("  tls: [{{hosts: [\"{host}\"]{secret}}}]\n  rules:\n"))
}

struct Setup {
    _dir: tempfile::TempDir,
    _pods: Pods,
    gateway: Gateway,
    a: Certificate,
    b: Certificate,
    wild: Certificate,
    secrets: std::path::PathBuf,
}

async fn setup(args: &[&str]) -> Setup {
    let pods = Pods::start(&["127.0.0.13"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, wild) = (Certificate::new(&["a.test"]), Certificate::new(&["b.test"]), Certificate::new(&["*.w.test"]));
    let secrets = dir.path().join("secrets.yaml");
    write_atomic(&secrets, &[a.secret("a"), b.secret("b"), wild.secret("wild")].join("---\n")).unwrap();
    let manifests = [
        service("web", &pods.addrs, &[]),
        tls_ingress("a", "a.test", Some("a"), ""),
        tls_ingress("b", "b.test", Some("b"), ""),
        tls_ingress("wild", "*.w.test", Some("wild"), ""),
        tls_ingress("no-redirect", "c.test", Some("a"), "nginx.ingress.kubernetes.io/ssl-redirect: \"false\""),
        ingress("forced", "d.test", &[("/", "Prefix", "web")]).replace(
            "metadata: {name: forced}",
            "metadata:\n  name: forced\n  annotations: {nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"}",
        ),
        ingress("plain", "e.test", &[("/", "Prefix", "web")]),
        ingress("kept", "f.test", &[("/", "Prefix", "web")]).replace(
            "metadata: {name: kept}",
            "metadata:\n  name: kept\n  annotations: {nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\", \
             nginx.ingress.kubernetes.io/preserve-trailing-slash: \"true\"}",
        ),
    ];
    std::fs::write(dir.path().join("routes.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), args).await.unwrap();
    Setup { _dir: dir, _pods: pods, gateway, a, b, wild, secrets }
}

#[tokio::test]
async fn serves_certificates_by_server_name_with_a_default_for_unknown_names() {
    let setup = setup(&[]).await;
    let https = setup.gateway.https;
    for (name, expected) in [("a.test", &setup.a), ("b.test", &setup.b), ("x.w.test", &setup.wild)] {
        let mut connection = Connection::open(https, Some(name), false).await.unwrap();
        assert_eq!(connection.peer.as_ref(), Some(&expected.der), "certificate for {name}");
        // The client lists AES-256 first; the server's order puts AES-128 (SHA-256) first.
        assert_eq!(connection.suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        let (reply, _) = connection.get(name, "/").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "https");
        assert_eq!(reply.headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
    }
    let unknown = Connection::open(https, Some("unknown.test"), false).await.unwrap();
    let served = unknown.peer.unwrap();
    assert!(![&setup.a.der, &setup.b.der, &setup.wild.der].contains(&&served), "unknown names get the default");

    // A host with its own certificate, asked for over a.test's connection: 421.
    let mut connection = Connection::open(https, Some("a.test"), false).await.unwrap();
    assert_eq!(connection.get("b.test", "/").await.unwrap().0.status, 421);
    // A host without a certificate of its own may share the connection.
    assert_eq!(connection.get("e.test", "/").await.unwrap().0.status, 200);

    let metrics = Client::new().get(&format!("http://{}/metrics", setup.gateway.admin), "admin").await.unwrap().body;
    let ok = metrics.lines().find_map(|l| l.strip_prefix("sluice_tls_handshakes_total{result=\"ok\"} "));
    assert!(ok.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 5.0), "{metrics}");
}

#[tokio::test]
async fn redirects_plain_http_to_https_as_ingress_nginx_does() {
    let setup = setup(&["--https-redirect-port", "8443"]).await;
    let client = Client::new();
    let url = setup.gateway.url("/shop/cart?item=1&n=2");
    let reply = client.get(&url, "a.test").await.unwrap();
    assert_eq!(reply.status, 308);
    assert_eq!(reply.headers["location"], "https://a.test:8443/shop/cart?item=1&n=2");
    assert!(reply.headers.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let reply = client.get(&setup.gateway.url("/"), "A.TEST:80").await.unwrap();
    assert_eq!(
        reply.headers["location"], "https://a.test:8443",
        "the port of the Host header is not kept; one trailing slash is dropped"
    );
    let reply = client.get(&setup.gateway.url("/shop/"), "a.test").await.unwrap();
    assert_eq!(reply.headers["location"], "https://a.test:8443/shop");
    let reply = client.get(&setup.gateway.url("/shop/?q=1"), "a.test").await.unwrap();
    assert_eq!(reply.headers["location"], "https://a.test:8443/shop/?q=1", "only a slash that ends the URI");
    let kept = client.get(&setup.gateway.url("/x/"), "f.test").await.unwrap();
    assert_eq!(kept.headers["location"], "https://f.test:8443/x/", "preserve-trailing-slash");
    assert_eq!(client.get(&setup.gateway.url("/"), "x.w.test").await.unwrap().status, 308, "wildcard TLS host");
    assert_eq!(client.get(&setup.gateway.url("/"), "c.test").await.unwrap().status, 200, "ssl-redirect: false");
    let forced = client.get(&setup.gateway.url("/x"), "d.test").await.unwrap();
    assert_eq!((forced.status, forced.headers["location"].to_str().unwrap()), (308, "https://d.test:8443/x"));
    assert_eq!(client.get(&setup.gateway.url("/"), "e.test").await.unwrap().status, 200, "no TLS, no redirect");
}

#[tokio::test]
async fn a_rotated_secret_applies_to_new_handshakes_and_keeps_open_connections() {
    let setup = setup(&[]).await;
    let https = setup.gateway.https;
    let mut open = Connection::open(https, Some("a.test"), false).await.unwrap();
    assert_eq!(open.peer.as_ref(), Some(&setup.a.der));
    assert_eq!(open.get("a.test", "/").await.unwrap().0.status, 200);

    let rotated = Certificate::new(&["a.test"]);
    let secrets = [rotated.secret("a"), setup.b.secret("b"), setup.wild.secret("wild")].join("---\n");
    write_atomic(&setup.secrets, &secrets).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = Connection::open(https, Some("a.test"), false).await.unwrap();
        if fresh.peer.as_ref() == Some(&rotated.der) {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(open.get("a.test", "/").await.unwrap().0.status, 200, "the open connection was disturbed");
    }
}

#[tokio::test]
async fn speaks_http2_over_tls_by_alpn_and_h2c_by_prior_knowledge() {
    let setup = setup(&[]).await;
    let mut tls = Connection::open(setup.gateway.https, Some("a.test"), true).await.unwrap();
    assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]));
    for _ in 0..3 {
        let (reply, version) = tls.get("a.test", "/h2").await.unwrap();
        assert_eq!((reply.status, version), (200, http::Version::HTTP_2), "{}", reply.body);
        assert_eq!(reply.json()["headers"]["host"], "a.test", "the :authority becomes Host upstream");
    }
    let mut h2c = Connection::open(setup.gateway.http, None, true).await.unwrap();
    let (reply, version) = h2c.get("e.test", "/h2c").await.unwrap();
    assert_eq!((reply.status, version), (200, http::Version::HTTP_2), "{}", reply.body);
}
