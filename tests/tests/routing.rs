//! Routing through the real `sluice` binary to real backends on loopback.

use std::collections::HashMap;

use bytes::Bytes;
use http::Method;
use sluice_tests::manifests::{ingress, service};
use sluice_tests::{App, Client, Gateway, Pods, raw_request};

struct Setup {
    _dir: tempfile::TempDir,
    web: Pods,
    api: Pods,
    gateway: Gateway,
}

/// Three pods of `web`; `api` with one ready and one not-ready pod; `empty` with no ready pod;
/// routes on `shop.test` and `*.shop.test`, an Ingress default backend, and an Ingress of
/// another class.
async fn setup() -> Setup {
    let web = Pods::start(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await.unwrap();
    let api = Pods::start(&["127.0.0.5", "127.0.0.6"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("web", &web.addrs, &[]),
        service("api", &api.addrs[..1], &api.addrs[1..]),
        service("empty", &[], &web.addrs),
        ingress(
            "shop",
            "shop.test",
            &[("/", "Prefix", "web"), ("/api", "Prefix", "api"), ("/down", "Prefix", "empty")],
        ),
        ingress("exact", "shop.test", &[("/api/status", "Exact", "web")]),
        ingress("wild", "*.shop.test", &[("/", "Prefix", "api")]),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: fallback}\nspec:\n  \
         ingressClassName: sluice\n  defaultBackend: {service: {name: api, port: {number: 80}}}\n"
            .to_owned(),
        ingress("other-class", "other.test", &[("/", "Prefix", "web")])
            .replace("ingressClassName: sluice", "ingressClassName: nginx"),
    ];
    std::fs::write(dir.path().join("all.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    Setup { _dir: dir, web, api, gateway }
}

#[tokio::test]
async fn routes_by_host_and_path_with_precedence() {
    let setup = setup().await;
    let (web, api, gateway) = (&setup.web, &setup.api, &setup.gateway);
    let client = Client::new();
    let get = |path: &str, host: &str| {
        let (client, url, host) = (client.clone(), gateway.url(path), host.to_owned());
        async move { client.get(&url, &host).await.unwrap() }
    };
    let is_web = |pod: String| web.addrs.iter().any(|a| a.to_string() == pod);
    let api_pod = api.addrs[0].to_string();

    let reply = get("/products?page=2", "shop.test").await;
    assert_eq!(reply.status, 200);
    assert!(is_web(reply.pod()));
    assert_eq!(reply.json()["uri"], "/products?page=2", "path and query are forwarded unchanged");

    assert_eq!(get("/api/v1", "shop.test").await.pod(), api_pod);
    assert!(is_web(get("/API", "Shop.Test:8080").await.pod()), "host ignores case and port; paths are case-sensitive");
    assert!(is_web(get("/api/status", "shop.test").await.pod()), "Exact /api/status beats Prefix /api");
    assert!(is_web(get("/apiary", "shop.test").await.pod()), "Prefix /api does not match /apiary");
    assert_eq!(get("/%61pi", "shop.test").await.pod(), api_pod, "escapes of plain characters match as decoded");
    assert_eq!(get("/", "eu.shop.test").await.pod(), api_pod, "wildcard host");
    assert_eq!(get("/", "a.eu.shop.test").await.pod(), api_pod, "two labels deep: the default backend");
    assert_eq!(get("/", "unknown.test").await.pod(), api_pod, "default backend");
    assert_eq!(get("/", "other.test").await.pod(), api_pod, "another class's Ingress is not routed");
}

#[tokio::test]
async fn balances_across_ready_endpoints_only() {
    let setup = setup().await;
    let (web, api, gateway) = (&setup.web, &setup.api, &setup.gateway);
    let client = Client::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(client.get(&gateway.url("/"), "shop.test").await.unwrap().pod()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(web.addrs.iter().all(|a| counts[&a.to_string()] >= 50), "unbalanced: {counts:?}");

    for _ in 0..50 {
        let reply = client.get(&gateway.url("/api"), "shop.test").await.unwrap();
        assert_eq!(reply.pod(), api.addrs[0].to_string(), "the not-ready pod got traffic");
    }
    let reply = client.get(&gateway.url("/down"), "shop.test").await.unwrap();
    assert_eq!(reply.status, 503, "no ready endpoint: {}", reply.body);
}

#[tokio::test]
async fn sets_forwarding_headers_and_strips_hop_by_hop_ones() {
    let setup = setup().await;
    let gateway = &setup.gateway;
    let client = Client::new();
    let headers = [
        ("connection", "keep-alive, x-internal"),
        ("x-internal", "secret"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-custom", "kept"),
    ];
    let reply = client.request(Method::GET, &gateway.url("/"), "shop.test", &headers, Bytes::new()).await.unwrap();
    let seen = &reply.json()["headers"];
    assert_eq!(seen["host"], "shop.test", "Host is preserved");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "a client's own X-Forwarded-For is not believed");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.test");
    assert_eq!(seen["x-forwarded-port"], gateway.http.port().to_string());
    assert_eq!(seen["x-custom"], "kept");
    let id = seen["x-request-id"].as_str().unwrap();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "request id {id:?}");
    for hop in ["connection", "x-internal", "keep-alive", "proxy-authorization"] {
        assert!(seen.get(hop).is_none(), "{hop} was forwarded");
    }
    let given = [("x-request-id", "abc-123")];
    let reply = client.request(Method::GET, &gateway.url("/"), "shop.test", &given, Bytes::new()).await.unwrap();
    assert_eq!(reply.json()["headers"]["x-request-id"], "abc-123", "a client's request id is kept");
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_reach_a_backend() {
    let setup = setup().await;
    let gateway = &setup.gateway;
    let cases: [&[u8]; 6] = [
        b"GET /../etc/passwd HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ];
    let absolute = b"GET http://shop.test/abs HTTP/1.1\r\nHost: unknown.test\r\nConnection: close\r\n\r\n";
    let answer = raw_request(gateway.http, absolute).await.unwrap();
    assert!(
        answer.contains("\"host\":\"shop.test\""),
        "absolute-form: the URI's host is routed and forwarded: {answer}"
    );
    for case in cases {
        let answer = raw_request(gateway.http, case).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{:?} got {answer:?}", String::from_utf8_lossy(case));
        assert!(!answer.contains("\"pod\""), "reached a backend: {answer}");
    }
}

#[tokio::test]
async fn streams_request_and_response_bodies() {
    let setup = setup().await;
    let gateway = &setup.gateway;
    let body = Bytes::from(vec![b'x'; 4 << 20]);
    let reply = Client::new().request(Method::POST, &gateway.url("/upload"), "shop.test", &[], body).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_len"], 4 << 20);
}

#[tokio::test]
async fn upstream_failures_timeouts_external_names_and_no_route() {
    let mut pods = Pods::start(&["127.0.0.7", "127.0.0.8"]).await.unwrap();
    let local = Pods::start(&["127.0.0.1"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let external = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: outside}}\nspec:\n  type: ExternalName\n  \
         externalName: localhost\n  ports: [{{port: {}}}]\n",
        local.port()
    );
    let external_ingress = ingress("ext", "ext.test", &[("/", "Prefix", "outside")])
        .replace("port: {number: 80}", &format!("port: {{number: {}}}", local.port()));
    let manifests = [
        service("pair", &pods.addrs, &[]),
        service("single", &pods.addrs[..1], &[]),
        ingress(
            "routes",
            "edge.test",
            &[("/pair", "Prefix", "pair"), ("/single", "Prefix", "single"), ("/sleep", "Prefix", "pair")],
        ),
        external,
        external_ingress,
    ];
    std::fs::write(dir.path().join("edge.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &["--response-timeout", "300ms"]).await.unwrap();
    let client = Client::new();

    assert_eq!(client.get(&gateway.url("/nothing"), "edge.test").await.unwrap().status, 404);
    assert_eq!(client.get(&gateway.url("/"), "unknown.test").await.unwrap().status, 404);
    assert_eq!(client.get(&gateway.url("/sleep/2000"), "edge.test").await.unwrap().status, 504);
    let reply = client.get(&gateway.url("/"), "ext.test").await.unwrap();
    assert_eq!(reply.pod(), local.addrs[0].to_string(), "ExternalName resolved by DNS");

    pods.kill(0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(client.get(&gateway.url("/single"), "edge.test").await.unwrap().status, 502);
    for _ in 0..20 {
        // The dead pod is still listed: a request without a body is retried on the other.
        let reply = client.get(&gateway.url("/pair"), "edge.test").await.unwrap();
        assert_eq!(reply.pod(), pods.addrs[1].to_string());
    }
}

#[tokio::test]
async fn bodies_over_proxy_body_size_get_413() {
    let pods = Pods::start(&["127.0.0.19"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let annotated = |name: &str, host: &str, size: &str| {
        ingress(name, host, &[("/", "Prefix", "app")]).replace(
            &format!("metadata: {{name: {name}}}"),
            &format!(
                "metadata:\n  name: {name}\n  annotations: {{nginx.ingress.kubernetes.io/proxy-body-size: \"{size}\"}}"
            ),
        )
    };
    let manifests = [
        service("app", &pods.addrs, &[]),
        annotated("small", "small.test", "1k"),
        annotated("odd", "odd.test", "lots"),
    ];
    std::fs::write(dir.path().join("limits.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();
    let post = |host: &'static str, size: usize| {
        let (client, url) = (client.clone(), gateway.url("/upload"));
        async move { client.request(Method::POST, &url, host, &[], Bytes::from(vec![b'x'; size])).await.unwrap() }
    };

    assert_eq!(post("small.test", 1024).await.status, 200, "exactly at the limit");
    let refused = post("small.test", 2000).await;
    assert_eq!(refused.status, 413);
    assert!(!refused.body.contains("\"pod\""), "a declared oversize body reached the backend");
    let chunk = format!("{:x}\r\n{}\r\n", 1500, "y".repeat(1500));
    let streamed = format!(
        "POST /upload HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let answer = raw_request(gateway.http, streamed.as_bytes()).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "a streamed oversize body: {answer}");

    assert_eq!(post("odd.test", 100_000).await.status, 200, "an unreadable size sets no limit");
    let config = gateway.config().await.unwrap();
    let message = config["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("\"lots\" is not a size such as 512k or 8m"), "{config}");
}

#[tokio::test]
async fn trusted_proxies_extend_x_forwarded_for_and_keep_their_headers() {
    let app = App::start("127.0.0.20", "lb.test").await.unwrap();
    let gateway = Gateway::start(app.manifests(), &["--trusted-proxies", "127.0.0.0/8,10.0.0.0/8"]).await.unwrap();
    let headers = [
        ("x-forwarded-for", "203.0.113.9, 6.6.6.6, 10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
        ("x-forwarded-port", "443"),
    ];
    let reply = Client::new().request(Method::GET, &gateway.url("/"), "lb.test", &headers, Bytes::new()).await.unwrap();
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 6.6.6.6, 10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-real-ip"], "6.6.6.6", "the rightmost address that is not a trusted proxy");
    assert_eq!(seen["x-forwarded-proto"], "https", "the load balancer terminated TLS");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["x-forwarded-port"], "443");

    let reply = Client::new().get(&gateway.url("/"), "lb.test").await.unwrap();
    let seen = &reply.json()["headers"];
    assert_eq!(
        (seen["x-forwarded-for"].as_str(), seen["x-forwarded-proto"].as_str()),
        (Some("127.0.0.1"), Some("http"))
    );
}
