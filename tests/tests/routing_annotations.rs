//! ingress-nginx's routing annotations against real backends: canaries, per-route timeouts,
//! `proxy-next-upstream`, and snippets refused.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use sluice_tests::manifests::{annotated_ingress, ingress, service};
use sluice_tests::{Client, Gateway, Pods, Reply, free_port};
use tokio::net::TcpListener;

/// Writes `manifests` to a fresh directory and starts a gateway on it.
async fn gateway(manifests: &[String]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routing.yaml"), manifests.join("---\n")).unwrap();
    (Gateway::start(dir.path(), &[]).await.unwrap(), dir)
}

/// GETs `path` from `gateway` as `host` with `headers`, expecting `status`.
async fn get(gateway: &Gateway, host: &str, path: &str, headers: &[(&str, &str)], status: u16) -> Reply {
    let reply = Client::new().request(Method::GET, &gateway.url(path), host, headers, Bytes::new()).await.unwrap();
    assert_eq!(reply.status, status, "{host}{path}: {}", reply.body);
    reply
}

/// The error messages in `/config`.
async fn errors(gateway: &Gateway) -> Vec<String> {
    let config = gateway.config().await.unwrap();
    let errors = config["errors"].as_array().unwrap();
    errors.iter().map(|e| format!("{} {}: {}", e["object"], e["field"], e["message"])).collect()
}

#[tokio::test]
async fn canary_by_header_cookie_and_weight() {
    let (stable, canary) = (Pods::start(&["127.0.0.41"]).await.unwrap(), Pods::start(&["127.0.0.42"]).await.unwrap());
    let main = |name: &str, host: &str| ingress(name, host, &[("/", "Prefix", "stable")]);
    let manifests = [
        service("stable", &stable.addrs, &[]),
        service("canary", &canary.addrs, &[]),
        main("main", "shop.test"),
        annotated_ingress(
            "shop-canary",
            "shop.test",
            &[("/", "Prefix", "canary")],
            &[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
                ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
                ("nginx.ingress.kubernetes.io/canary-weight", "30"),
            ],
        ),
        main("pinned", "pinned.test"),
        annotated_ingress(
            "pinned-canary",
            "pinned.test",
            &[("/", "Prefix", "canary")],
            &[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "X-Version"),
                ("nginx.ingress.kubernetes.io/canary-by-header-value", "v2"),
            ],
        ),
        main("matched", "matched.test"),
        annotated_ingress(
            "matched-canary",
            "matched.test",
            &[("/", "Prefix", "canary")],
            &[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "X-Version"),
                ("nginx.ingress.kubernetes.io/canary-by-header-pattern", "^v[2-9]$"),
                ("nginx.ingress.kubernetes.io/canary-weight", "100"),
            ],
        ),
        annotated_ingress(
            "lonely-canary",
            "lonely.test",
            &[("/", "Prefix", "canary")],
            &[("nginx.ingress.kubernetes.io/canary", "true"), ("nginx.ingress.kubernetes.io/canary-weight", "100")],
        ),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let (stable, canary) = (stable.addrs[0].to_string(), canary.addrs[0].to_string());
    let pod = async |host: &str, headers: &[(&str, &str)]| get(&gateway, host, "/", headers, 200).await.pod();

    for _ in 0..10 {
        assert_eq!(pod("shop.test", &[("x-canary", "always")]).await, canary);
        assert_eq!(pod("shop.test", &[("x-canary", "never"), ("cookie", "canary=always")]).await, stable);
        assert_eq!(pod("shop.test", &[("cookie", "a=1; canary=always")]).await, canary);
        assert_eq!(pod("shop.test", &[("x-canary", "maybe"), ("cookie", "canary=never")]).await, stable);
        assert_eq!(pod("pinned.test", &[("x-version", "v2")]).await, canary);
        assert_eq!(pod("pinned.test", &[("x-version", "always")]).await, stable, "only the value counts");
        assert_eq!(pod("matched.test", &[("x-version", "v3")]).await, canary);
        assert_eq!(pod("matched.test", &[("x-version", "v1")]).await, canary, "no match falls through to the weight");
    }
    // Weight 30 of 100: about 60 of 200 (binomial, standard deviation 6.5).
    let mut to_canary = 0;
    for _ in 0..200 {
        to_canary += usize::from(pod("shop.test", &[("x-canary", "other")]).await == canary);
    }
    assert!((25..=100).contains(&to_canary), "{to_canary} of 200 went to a canary of weight 30");

    get(&gateway, "lonely.test", "/", &[], 404).await;
    let errors = errors(&gateway).await;
    assert!(
        errors.iter().any(|e| e.contains("lonely-canary") && e.contains("a canary needs a main Ingress")),
        "{errors:#?}"
    );
}

/// A server answering every request with `status` after `delay`, and a body naming its address.
async fn status_server(listener: TcpListener, status: u16, delay: Duration) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let pod = listener.local_addr().unwrap().to_string();
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let pod = pod.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_| {
                let body = serde_json::json!({ "pod": pod }).to_string();
                let mut response = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
                *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, hyper::Error>(response)
                }
            });
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// An echo pod and a pod answering `status` after `delay` on `ips`, sharing one port as a
/// Service's pods do.
async fn echo_and_other(ips: [&str; 2], status: u16, delay: Duration) -> [SocketAddr; 2] {
    for _ in 0..20 {
        let port = free_port(ips[0]).unwrap();
        let (Ok(healthy), Ok(failing)) =
            (TcpListener::bind((ips[0], port)).await, TcpListener::bind((ips[1], port)).await)
        else {
            continue;
        };
        let addrs = [healthy.local_addr().unwrap(), failing.local_addr().unwrap()];
        tokio::spawn(sluice_tests::echo_server(healthy));
        tokio::spawn(status_server(failing, status, delay));
        return addrs;
    }
    panic!("no common free port on {ips:?}")
}

#[tokio::test]
async fn next_upstream_retries_what_it_is_told_and_never_a_body() {
    let [healthy, failing] = echo_and_other(["127.0.0.43", "127.0.0.44"], 503, Duration::ZERO).await;
    let retry = |name: &str, extra: &[(&str, &str)]| {
        let mut annotations = vec![("nginx.ingress.kubernetes.io/proxy-next-upstream", "error timeout http_503")];
        annotations.extend_from_slice(extra);
        annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "flaky")], &annotations)
    };
    let manifests = [
        service("flaky", &[healthy, failing], &[]),
        retry("retried", &[]),
        retry("once", &[("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "1")]),
        ingress("plain", "plain.test", &[("/", "Prefix", "flaky")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let client = Client::new();
    let statuses = |host: &'static str, method: Method, body: &'static str| {
        let (client, url) = (client.clone(), gateway.url("/x"));
        async move {
            let mut statuses = Vec::new();
            for _ in 0..30 {
                let reply = client.request(method.clone(), &url, host, &[], Bytes::from(body)).await.unwrap();
                statuses.push(reply.status);
            }
            statuses
        }
    };
    assert!(statuses("retried.test", Method::GET, "").await.iter().all(|&s| s == 200), "503 tried on the other pod");
    assert!(statuses("retried.test", Method::PUT, "payload").await.contains(&503), "a body is never sent twice");
    assert!(statuses("retried.test", Method::POST, "").await.contains(&503), "POST needs non_idempotent");
    assert!(statuses("once.test", Method::GET, "").await.contains(&503), "one try: no retry");
    assert!(statuses("plain.test", Method::GET, "").await.contains(&503), "the default retries errors, not 503");
}

#[tokio::test]
async fn per_route_read_and_connect_timeouts() {
    let pods = Pods::start(&["127.0.0.45"]).await.unwrap();
    // A listener that never accepts, its queue filled: further connections hang in SYN_SENT.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 46], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let stuck: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(stuck)).await
        {
            fillers.push(stream);
        }
    }
    let manifests = [
        service("app", &pods.addrs, &[]),
        service("stuck", &[stuck], &[]),
        annotated_ingress(
            "impatient",
            "impatient.test",
            &[("/", "Prefix", "app")],
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")],
        ),
        ingress("patient", "patient.test", &[("/", "Prefix", "app")]),
        annotated_ingress(
            "connect",
            "connect.test",
            &[("/", "Prefix", "stuck")],
            &[("nginx.ingress.kubernetes.io/proxy-connect-timeout", "1")],
        ),
        annotated_ingress(
            "typo",
            "typo.test",
            &[("/", "Prefix", "app")],
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1m")],
        ),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let started = Instant::now();
    get(&gateway, "impatient.test", "/sleep/3000", &[], 504).await;
    assert!(started.elapsed() < Duration::from_millis(2500), "read timeout of 1 s took {:?}", started.elapsed());
    get(&gateway, "impatient.test", "/sleep/100", &[], 200).await;
    get(&gateway, "patient.test", "/sleep/1500", &[], 200).await; // the gateway's 60 s

    let started = Instant::now();
    get(&gateway, "connect.test", "/", &[], 504).await; // a connect timeout, as nginx answers
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "connect timeout 1 s took {took:?}"
    );

    get(&gateway, "typo.test", "/sleep/1500", &[], 200).await; // reported, and the default used
    let errors = errors(&gateway).await;
    let named =
        |e: &&String| e.contains("default/typo") && e.contains("[nginx.ingress.kubernetes.io/proxy-read-timeout]");
    assert!(errors.iter().filter(named).any(|e| e.contains("is not a whole number of seconds")), "{errors:#?}");
    drop(fillers);
}

#[tokio::test]
async fn snippets_are_refused_and_fail_their_ingress_closed() {
    let pods = Pods::start(&["127.0.0.47"]).await.unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        annotated_ingress(
            "snippet",
            "snippet.test",
            &[("/", "Prefix", "app")],
            &[("nginx.ingress.kubernetes.io/configuration-snippet", "deny all;")],
        ),
        ingress("clean", "clean.test", &[("/", "Prefix", "app")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    get(&gateway, "snippet.test", "/", &[], 500).await; // the snippet may have been a guard
    get(&gateway, "clean.test", "/", &[], 200).await;
    let errors = errors(&gateway).await;
    assert!(
        errors.iter().any(|e| e.contains("configuration-snippet") && e.contains("sluice.dev/filters")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn hash_by_round_robin_and_ewma() {
    let pods = Pods::start(&["127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"]).await.unwrap();
    let [fast, slow] = echo_and_other(["127.0.0.55", "127.0.0.56"], 200, Duration::from_millis(150)).await;
    let balanced = |name: &str, service: &str, annotation: &str, value: &str| {
        annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", service)], &[(annotation, value)])
    };
    let manifests = |hashed: &[SocketAddr]| {
        [
            service("hashed", hashed, &[]),
            service("three", &pods.addrs[..3], &[]),
            service("uneven", &[fast, slow], &[]),
            balanced("hashed", "hashed", "nginx.ingress.kubernetes.io/upstream-hash-by", "$http_x_user"),
            balanced("rr", "three", "nginx.ingress.kubernetes.io/load-balance", "round_robin"),
            balanced("ewma", "uneven", "nginx.ingress.kubernetes.io/load-balance", "ewma"),
            balanced("typo", "three", "nginx.ingress.kubernetes.io/upstream-hash-by", "$server_name"),
            annotated_ingress(
                "subset",
                "subset.test",
                &[("/", "Prefix", "three")],
                &[
                    ("nginx.ingress.kubernetes.io/upstream-hash-by", "$http_x_user"),
                    ("nginx.ingress.kubernetes.io/upstream-hash-by-subset", "true"),
                    ("nginx.ingress.kubernetes.io/upstream-hash-by-subset-size", "2"),
                ],
            ),
        ]
        .join("---\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routing.yaml");
    std::fs::write(&file, manifests(&pods.addrs[..3])).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let pod = async |host: &str, user: String| get(&gateway, host, "/", &[("x-user", user.as_str())], 200).await.pod();

    // The same key, the same pod; keys spread over the pods.
    let mut placed = Vec::new();
    for user in 0..40 {
        let first = pod("hashed.test", user.to_string()).await;
        assert_eq!(pod("hashed.test", user.to_string()).await, first, "user {user} moved");
        placed.push(first);
    }
    let mut distinct = placed.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 2, "40 keys on one pod: {distinct:?}");
    // A fourth pod takes about a quarter of the keys, and only keys move to it.
    sluice_tests::write_atomic(&file, &manifests(&pods.addrs)).unwrap();
    let fourth = pods.addrs[3].to_string();
    for _ in 0..100 {
        let config = gateway.config().await.unwrap();
        if config["backends"]["default/hashed:80"]["pods"]["endpoints"].as_array().is_some_and(|e| e.len() == 4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut moved = 0;
    for (user, before) in placed.iter().enumerate() {
        let now = pod("hashed.test", user.to_string()).await;
        if &now != before {
            assert_eq!(now, fourth, "user {user} moved between pods that were there before");
            moved += 1;
        }
    }
    assert!((1..=25).contains(&moved), "{moved} of 40 keys moved to the fourth pod (expected about 10)");

    // Subsets of 2 of the 3 pods: a key spreads over its two, and keys have different pairs.
    let mut pairs = std::collections::BTreeSet::new();
    for user in 0..10 {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            seen.insert(pod("subset.test", user.to_string()).await);
        }
        assert_eq!(seen.len(), 2, "user {user} saw {seen:?}");
        pairs.insert(seen);
    }
    assert!(pairs.len() >= 2, "every key had the same subset: {pairs:?}");

    // Round robin: in turn, exactly.
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30 {
        *counts.entry(pod("rr.test", String::new()).await).or_insert(0) += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10], "{counts:?}");

    // EWMA: the pod answering in 150 ms soon gets almost nothing.
    let mut to_fast = 0;
    for _ in 0..40 {
        to_fast += usize::from(pod("ewma.test", String::new()).await == fast.to_string());
    }
    assert!(to_fast >= 34, "{to_fast} of 40 went to the fast pod");

    let errors = errors(&gateway).await;
    assert!(errors.iter().any(|e| e.contains("$server_name is not a variable")), "{errors:#?}");
}

#[tokio::test]
async fn server_alias_serves_the_first_host_unless_taken() {
    let (main, own) = (Pods::start(&["127.0.0.57"]).await.unwrap(), Pods::start(&["127.0.0.58"]).await.unwrap());
    let manifests = [
        service("main", &main.addrs, &[]),
        service("own", &own.addrs, &[]),
        annotated_ingress(
            "main",
            "main.test",
            &[("/", "Prefix", "main")],
            &[("nginx.ingress.kubernetes.io/server-alias", "alias.test, *.wild.test, own.test")],
        ),
        ingress("api", "main.test", &[("/api", "Prefix", "own")]),
        ingress("own", "own.test", &[("/", "Prefix", "own")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let pod = async |host: &str, path: &str| get(&gateway, host, path, &[], 200).await.pod();
    let (main, own) = (main.addrs[0].to_string(), own.addrs[0].to_string());
    assert_eq!(pod("alias.test", "/x").await, main);
    assert_eq!(pod("ALIAS.test:8080", "/x").await, main);
    assert_eq!(pod("a.wild.test", "/").await, main);
    assert_eq!(pod("alias.test", "/api/v1").await, own, "an alias is the whole host, other Ingresses' paths too");
    assert_eq!(pod("own.test", "/x").await, own, "a host with rules of its own is not taken by an alias");
    get(&gateway, "b.a.wild.test", "/", &[], 404).await;
    let errors = errors(&gateway).await;
    assert!(errors.iter().any(|e| e.contains("own.test is served already")), "{errors:#?}");
}

#[tokio::test]
async fn service_upstream_access_log_and_accepted_buffering() {
    // 127.0.0.59 stands for the Service's ClusterIP, 127.0.0.60 for its one endpoint.
    let pods = Pods::start(&["127.0.0.59", "127.0.0.60"]).await.unwrap();
    let port = pods.port();
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec: {{clusterIP: 127.0.0.59, ports: [{{port: {port}}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-1\n  \
         labels: {{kubernetes.io/service-name: app}}\naddressType: IPv4\nports: [{{port: {port}}}]\n\
         endpoints:\n- addresses: [\"127.0.0.60\"]\n"
    );
    let on_port = |manifest: String| manifest.replace("number: 80", &format!("number: {port}"));
    let annotated = |name: &str, annotations: &[(&str, &str)]| {
        on_port(annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], annotations))
    };
    let manifests = [
        service,
        annotated("direct", &[("nginx.ingress.kubernetes.io/service-upstream", "true")]),
        on_port(ingress("pods", "pods.test", &[("/", "Prefix", "app")])),
        annotated(
            "quiet",
            &[
                ("nginx.ingress.kubernetes.io/enable-access-log", "false"),
                ("nginx.ingress.kubernetes.io/proxy-buffering", "on"),
                ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off"),
                ("nginx.ingress.kubernetes.io/client-body-buffer-size", "16k"),
                ("nginx.ingress.kubernetes.io/proxy-http-version", "1.1"),
            ],
        ),
        annotated(
            "typos",
            &[
                ("nginx.ingress.kubernetes.io/proxy-buffering", "yes"),
                ("nginx.ingress.kubernetes.io/proxy-http-version", "1.0"),
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routing.yaml"), manifests.join("---\n")).unwrap();
    let args = ["--access-log", "--log-format", "json"];
    let (gateway, mut logs) = Gateway::start_capturing_logs(dir.path(), &args).await.unwrap();
    let pod = async |host: &str| get(&gateway, host, "/", &[], 200).await.pod();
    assert_eq!(pod("direct.test").await, format!("127.0.0.59:{port}"), "service-upstream: the ClusterIP");
    assert_eq!(pod("quiet.test").await, format!("127.0.0.60:{port}"));
    assert_eq!(pod("pods.test").await, format!("127.0.0.60:{port}"));
    assert_eq!(pod("typos.test").await, format!("127.0.0.60:{port}"), "invalid values are reported, not fatal");

    let mut hosts = Vec::new();
    while hosts.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(5), logs.recv()).await.expect("no access log").unwrap();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if event["target"] == "sluice::access" {
            hosts.push(event["fields"]["host"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(hosts, ["direct.test", "pods.test", "typos.test"], "quiet.test is not logged");
    let errors = errors(&gateway).await;
    for (annotation, message) in
        [("proxy-buffering", "expected \\\"on\\\" or \\\"off\\\""), ("proxy-http-version", "speaks HTTP/1.1")]
    {
        assert!(errors.iter().any(|e| e.contains(annotation) && e.contains(message)), "{annotation}: {errors:#?}");
    }
}

#[tokio::test]
async fn default_backend_serves_routes_without_endpoints() {
    let fallback = Pods::start(&["127.0.0.61"]).await.unwrap();
    let with_default = [("nginx.ingress.kubernetes.io/default-backend", "fallback")];
    let manifests = [
        service("fallback", &fallback.addrs, &[]),
        service("empty", &[], &[]),
        annotated_ingress("covered", "covered.test", &[("/", "Prefix", "empty")], &with_default),
        ingress("bare", "bare.test", &[("/", "Prefix", "empty")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    assert_eq!(get(&gateway, "covered.test", "/x", &[], 200).await.pod(), fallback.addrs[0].to_string());
    get(&gateway, "bare.test", "/x", &[], 503).await;
}

#[tokio::test]
async fn from_to_www_redirect_sends_the_twin_host_over() {
    let pods = Pods::start(&["127.0.0.62"]).await.unwrap();
    let www = [("nginx.ingress.kubernetes.io/from-to-www-redirect", "true")];
    let manifests = [
        service("app", &pods.addrs, &[]),
        annotated_ingress("www", "www.shop.test", &[("/", "Prefix", "app")], &www),
        annotated_ingress("apex", "blog.test", &[("/", "Prefix", "app")], &www),
        annotated_ingress("both", "both.test", &[("/", "Prefix", "app")], &www),
        ingress("both-www", "www.both.test", &[("/", "Prefix", "app")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let location = async |host: &str, path: &str| {
        get(&gateway, host, path, &[], 308).await.headers["location"].to_str().unwrap().to_owned()
    };
    assert_eq!(location("shop.test", "/a/b?c=d").await, "http://www.shop.test/a/b?c=d");
    assert_eq!(location("Shop.Test:8080", "/").await, "http://www.shop.test:8080/");
    assert_eq!(location("www.blog.test", "/post").await, "http://blog.test/post");
    get(&gateway, "www.shop.test", "/", &[], 200).await;
    get(&gateway, "www.both.test", "/", &[], 200).await; // a twin with rules of its own is served
}

/// An echo pod over TLS with `acceptor`, on `ip`.
async fn tls_pod(ip: &str, acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sluice_tests::echo_server_with(listener, Some(acceptor)));
    addr
}

#[tokio::test]
async fn proxy_ssl_verifies_backends_with_their_own_ca_and_shows_a_client_certificate() {
    use sluice_tests::tls::Authority;
    let (ca, other_ca, clients) = (Authority::new("backend CA"), Authority::new("other CA"), Authority::new("clients"));
    let server = ca.issue(&["secure.default.svc", "mutual.default.svc", "pod.internal"]);
    // Two intermediates between the CA and the pod's certificate.
    let deep = ca.intermediate("first").intermediate("second").issue(&["deep.default.svc"]);
    let plain = tls_pod("127.0.0.81", server.acceptor()).await;
    let mutual = tls_pod("127.0.0.82", server.acceptor_requiring_client(&clients)).await;
    let by_sni = tls_pod("127.0.0.83", server.acceptor_requiring_sni("pod.internal")).await;
    let chained = tls_pod("127.0.0.84", deep.acceptor()).await;

    let https = |name: &str, service: &str, annotations: &[(&str, &str)]| {
        let prefixed: Vec<(String, &str)> =
            annotations.iter().map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), *v)).collect();
        let mut all: Vec<(&str, &str)> = prefixed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        all.push(("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS"));
        annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", service)], &all)
    };
    let verified = |secret: &'static str| [("proxy-ssl-secret", secret), ("proxy-ssl-verify", "on")];
    let manifests = [
        service("secure", &[plain], &[]),
        service("mutual", &[mutual], &[]),
        service("named", &[by_sni], &[]),
        service("deep", &[chained], &[]),
        ca.secret("right-ca", None),
        other_ca.secret("wrong-ca", None),
        ca.secret("with-client", Some(&clients.issue(&[]))),
        https("verified", "secure", &verified("default/right-ca")),
        https("wrong", "secure", &verified("default/wrong-ca")),
        https("unverified", "secure", &[("proxy-ssl-secret", "default/wrong-ca"), ("proxy-ssl-verify", "off")]),
        https("mtls", "mutual", &verified("default/with-client")),
        https("no-client-cert", "mutual", &verified("default/right-ca")),
        https(
            "misnamed",
            "secure",
            &[verified("default/right-ca").as_slice(), &[("proxy-ssl-name", "other.internal")]].concat(),
        ),
        https(
            "sni",
            "named",
            &[
                verified("default/right-ca").as_slice(),
                &[("proxy-ssl-name", "pod.internal"), ("proxy-ssl-server-name", "on")],
            ]
            .concat(),
        ),
        https(
            "no-sni",
            "named",
            &[verified("default/right-ca").as_slice(), &[("proxy-ssl-name", "pod.internal")]].concat(),
        ),
        https("depth-one", "deep", &verified("default/right-ca")),
        https(
            "depth-two",
            "deep",
            &[verified("default/right-ca").as_slice(), &[("proxy-ssl-verify-depth", "2")]].concat(),
        ),
        https(
            "tls13",
            "secure",
            &[verified("default/right-ca").as_slice(), &[("proxy-ssl-protocols", "TLSv1.3")]].concat(),
        ),
        // The pod's key is ECDSA: a TLS 1.2 list of RSA suites leaves nothing to agree on.
        https(
            "ecdsa-suite",
            "secure",
            &[
                ("proxy-ssl-secret", "default/right-ca"),
                ("proxy-ssl-protocols", "TLSv1.2"),
                ("proxy-ssl-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"),
            ],
        ),
        https(
            "rsa-suites",
            "secure",
            &[
                ("proxy-ssl-secret", "default/right-ca"),
                ("proxy-ssl-protocols", "TLSv1.2"),
                ("proxy-ssl-ciphers", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"),
            ],
        ),
        https("missing", "secure", &verified("default/absent")),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    for (host, status) in [
        ("verified", 200),
        ("wrong", 502),
        ("unverified", 200),
        ("mtls", 200),
        ("no-client-cert", 502),
        ("misnamed", 502),
        ("sni", 200),
        ("no-sni", 502),
        ("depth-one", 502),
        ("depth-two", 200),
        ("tls13", 200),
        ("ecdsa-suite", 200),
        ("rsa-suites", 502),
        ("missing", 503),
    ] {
        // Twice: the second request may reuse the connection the first opened.
        for _ in 0..2 {
            get(&gateway, &format!("{host}.test"), "/", &[], status).await;
        }
    }
    let errors = errors(&gateway).await;
    assert!(
        errors.iter().any(|e| e.contains("default/missing")
            && e.contains("proxy-ssl-secret")
            && e.contains("Secret default/absent not found")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn custom_http_errors_ask_the_default_backend_with_ingress_nginx_headers() {
    let (app, pages) = (Pods::start(&["127.0.0.86"]).await.unwrap(), Pods::start(&["127.0.0.87"]).await.unwrap());
    // An endpoint that refuses connections: the gateway answers 502 itself.
    let closed = TcpListener::bind("127.0.0.88:0").await.unwrap();
    let refused = closed.local_addr().unwrap();
    drop(closed);
    let annotated = |name: &str, service: &str, annotations: &[(&str, &str)]| {
        let prefixed: Vec<(String, &str)> =
            annotations.iter().map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), *v)).collect();
        let all: Vec<(&str, &str)> = prefixed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", service)], &all)
    };
    let manifests = [
        service("app", &app.addrs, &[]),
        service("pages", &pages.addrs, &[]),
        service("down", &[refused], &[]),
        annotated("intercepted", "app", &[("custom-http-errors", "404, 503,502"), ("default-backend", "pages")]),
        annotated(
            "own-only",
            "app",
            &[("custom-http-errors", "404"), ("default-backend", "pages"), ("disable-proxy-intercept-errors", "true")],
        ),
        annotated(
            "down",
            "down",
            &[("custom-http-errors", "502"), ("default-backend", "pages"), ("disable-proxy-intercept-errors", "true")],
        ),
        annotated("nowhere", "app", &[("custom-http-errors", "404")]),
    ];
    let (gateway, _dir) = gateway(&manifests).await;
    let (app, pages) = (app.addrs[0].to_string(), pages.addrs[0].to_string());

    let headers = [("accept", "application/json"), ("x-request-id", "req-15")];
    let reply = get(&gateway, "intercepted.test", "/status/404?q=1", &headers, 200).await;
    let json = reply.json();
    assert_eq!(reply.pod(), pages, "the default backend answered");
    assert_eq!(json["uri"], "/?q=1", "the error backend is asked for /, the query kept");
    let sent = &json["headers"];
    for (name, value) in [
        ("x-code", "404"),
        ("x-format", "application/json"),
        ("x-original-uri", "/status/404?q=1"),
        ("x-namespace", "default"),
        ("x-ingress-name", "intercepted"),
        ("x-service-name", "app"),
        ("x-service-port", "80"),
        ("x-request-id", "req-15"),
    ] {
        assert_eq!(sent[name], value, "{name}: {sent}");
    }
    assert_eq!(get(&gateway, "intercepted.test", "/status/503", &[], 200).await.json()["headers"]["x-code"], "503");
    assert_eq!(get(&gateway, "intercepted.test", "/status/500", &[], 500).await.pod(), app, "500 is not listed");
    assert_eq!(get(&gateway, "intercepted.test", "/", &[], 200).await.pod(), app);

    // disable-proxy-intercept-errors: the backend's own 404 reaches the client; the gateway's
    // own 502 still goes to the error backend.
    assert_eq!(get(&gateway, "own-only.test", "/status/404", &[], 404).await.pod(), app);
    let replaced = get(&gateway, "down.test", "/", &[], 200).await;
    assert_eq!((replaced.pod(), replaced.json()["headers"]["x-code"].as_str()), (pages.clone(), Some("502")));

    get(&gateway, "nowhere.test", "/status/404", &[], 404).await;
    let errors = errors(&gateway).await;
    assert!(
        errors.iter().any(|e| e.contains("default/nowhere")
            && e.contains("custom-http-errors")
            && e.contains("has no effect without")),
        "{errors:#?}"
    );
}
