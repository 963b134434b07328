//! proxy-wasm filters end to end: modules built with the official Rust SDK
//! (`tests/proxy-wasm/probe`), with AssemblyScript (`tests/proxy-wasm/assemblyscript`) and with
//! our Go library, attached like our own filters, in the real binary with real echo backends
//! and clients.

use std::time::{Duration, Instant};

use sluice_tests::manifests::{filtered_ingress, service};
use sluice_tests::{Client, Gateway, Pods, Reply, plugin_cache, proxy_wasm_filters, sluice_bin, test_filters};

fn plugins() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(proxy_wasm_filters().join("pw_probe.wasm"), dir.path().join("pw.wasm")).unwrap();
    std::fs::write(dir.path().join("pw.limits.yaml"), "deadline: 100ms\nmemory: 16m\n").unwrap();
    dir
}

fn header(reply: &Reply, name: &str) -> String {
    reply.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn a_proxy_wasm_filter_changes_requests_and_responses_and_answers() {
    let pods = Pods::start(&["127.0.0.61"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let filters = r#"- plugin: pw
  config: {set_request: [[x-a, "1"]], remove_request: [x-drop], set_response: [[x-b, "2"]], properties: true, deny: /admin, count: true, metric: pw_requests}
"#;
    let manifests =
        [service("app", &pods.addrs, &[]), filtered_ingress("pw", "pw.test", &[("/", "Prefix", "app")], filters)];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins();
    let (plugins_dir, cache) = (plugins.path().to_str().unwrap(), plugin_cache());
    let args = ["--plugins", plugins_dir, "--plugin-cache", cache.to_str().unwrap()];
    let (gateway, mut logs) = Gateway::start_capturing_logs(dir.path(), &args).await.unwrap();
    let client = Client::new();

    let headers = [("x-drop", "1"), ("x-request-id", "id-7")];
    let reply = client
        .request(http::Method::GET, &gateway.url("/hello?q=1"), "pw.test", &headers, Default::default())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    let seen = &echo["headers"];
    assert_eq!(seen["x-a"], "1");
    assert!(seen.get("x-drop").is_none(), "{seen}");
    assert_eq!(seen["x-prop-path"], "/hello?q=1");
    assert_eq!(seen["x-pseudo-path"], "/hello?q=1");
    assert_eq!(seen["x-prop-method"], "GET");
    assert_eq!(seen["x-prop-host"], "pw.test");
    assert_eq!(seen["x-prop-scheme"], "http");
    assert_eq!(seen["x-prop-id"], "id-7");
    assert_eq!(seen["x-prop-plugin"], "pw");
    assert!(seen["x-prop-source"].as_str().unwrap().starts_with("127.0.0.1:"), "{seen}");
    assert_eq!(seen["x-prop-destination"], gateway.http.to_string());
    assert_eq!(seen["x-prop-destination-port"], gateway.http.port().to_string());
    assert_eq!(header(&reply, "x-b"), "2");
    assert_eq!(header(&reply, "x-prop-code"), "200");

    // Shared data lives across requests (and instances), with compare-and-swap.
    let first: u64 = header(&reply, "x-count").parse().unwrap();
    let again = client.get(&gateway.url("/"), "pw.test").await.unwrap();
    assert_eq!(header(&again, "x-count").parse::<u64>().unwrap(), first + 1);

    let denied = client.get(&gateway.url("/admin/users"), "pw.test").await.unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "denied by proxy-wasm");
    assert_eq!(header(&denied, "x-denied-by"), "pw-probe");

    // The log phase runs when a request ends, and logs under the plugin's name.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("pw-probe log phase: /admin/users answered 403")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, logs.recv()).await {
            Ok(Some(line)) => lines.push(line),
            _ => panic!("no log phase line in {lines:#?}"),
        }
    }
    let line = lines.iter().find(|l| l.contains("answered 403")).unwrap();
    assert!(line.contains("pw"), "{line}");
    assert!(lines.iter().any(|l| l.contains("pw-probe log phase: /hello?q=1 answered 200")), "{lines:#?}");

    // The plugin's counter, on /metrics under its name: every request was counted.
    let metrics = client.get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap().body;
    let line = r#"sluice_plugin_counter_total{plugin="pw",metric="pw_requests"} 3"#;
    assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
}

#[tokio::test]
async fn rejected_configurations_and_hostile_modules_fail_by_their_policy() {
    let pods = Pods::start(&["127.0.0.62"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("loop", r#"{hostile: loop}"#),
        ("bomb", r#"{hostile: memory}"#),
        ("trap", r#"{hostile: trap}"#),
        ("invalid", r#"{reject: true}"#),
    ];
    let mut manifests = vec![service("app", &pods.addrs, &[])];
    for (name, config) in cases {
        for policy in ["closed", "open"] {
            let filters = format!(
                "- plugin: pw\n  config: {config}\n  failure: {policy}\n- plugin: pw\n  config: {{set_response: [[x-after, \"1\"]]}}\n"
            );
            let (ingress, host) = (format!("{name}-{policy}"), format!("{name}-{policy}.test"));
            manifests.push(filtered_ingress(&ingress, &host, &[("/", "Prefix", "app")], &filters));
        }
    }
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();

    for (name, _) in cases {
        let started = Instant::now();
        let closed = client.get(&gateway.url("/"), &format!("{name}-closed.test")).await.unwrap();
        assert_eq!(closed.status, 500, "{name}, closed: {}", closed.body);
        assert!(started.elapsed() < Duration::from_secs(2), "{name} took {:?}", started.elapsed());
        let open = client.get(&gateway.url("/"), &format!("{name}-open.test")).await.unwrap();
        assert_eq!(open.status, 200, "{name}, open: {}", open.body);
        assert_eq!(header(&open, "x-after"), "1", "{name}: the next filter runs");
    }

    let config = gateway.config().await.unwrap();
    let errors = config["errors"].to_string();
    for expected in [
        "Ingress default/invalid-closed",
        "metadata.annotations[sluice.dev/filters][0]",
        "proxy_on_configure returned false",
    ] {
        assert!(errors.contains(expected), "{expected} not in {errors}");
    }
    let metrics = client.get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap().body;
    for kind in ["timeout", "memory", "trap", "unavailable"] {
        let counted = metrics.lines().any(|l| {
            l.starts_with("sluice_filter_failures_total{")
                && l.contains("plugin=\"pw\"")
                && l.contains(&format!("kind=\"{kind}\""))
        });
        assert!(counted, "no {kind} failures of pw counted:\n{metrics}");
    }

    // `sluice check --plugins` reports the rejected configuration and fails.
    let output = std::process::Command::new(sluice_bin())
        .args(["check", dir.path().to_str().unwrap(), "--plugins", plugins.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("proxy_on_configure returned false") && stdout.contains("Ingress default/invalid-open"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_go_filter_built_from_the_sdk_template_serves_requests() {
    let pods = Pods::start(&["127.0.0.63"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let filters = "- plugin: add-tenant\n  config: {header: x-tenant, value: acme}\n";
    let manifests =
        [service("app", &pods.addrs, &[]), filtered_ingress("go", "go.test", &[("/", "Prefix", "app")], filters)];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(sluice_tests::go_filter(), plugins.path().join("add-tenant.wasm")).unwrap();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let reply = Client::new().get(&gateway.url("/"), "go.test").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["headers"]["x-tenant"], "acme");
    assert_eq!(header(&reply, "x-served-for"), "acme");
}

#[tokio::test]
async fn an_assemblyscript_filter_changes_headers_both_ways_and_reads_properties() {
    let pods = Pods::start(&["127.0.0.93"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The runtime finds its root context by the plugin's name (`plugin_root_id`): as-probe.
    let filters = "- plugin: as-probe\n  config: tenant=acme\n";
    let manifests =
        [service("app", &pods.addrs, &[]), filtered_ingress("as", "as.test", &[("/", "Prefix", "app")], filters)];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(sluice_tests::assemblyscript_filter(), plugins.path().join("as-probe.wasm")).unwrap();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();

    for _ in 0..3 {
        let reply = client
            .request(http::Method::POST, &gateway.url("/a/b?c=d"), "as.test", &[("x-drop", "1")], "body".into())
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let seen = &reply.json()["headers"];
        assert_eq!(seen["x-as-path"], "/a/b?c=d");
        assert_eq!(seen["x-as-method"], "POST");
        assert_eq!(seen["x-as-root-id"], "as-probe");
        assert!(seen.get("x-drop").is_none(), "{seen}");
        assert_eq!(reply.json()["body_head"], "body");
        assert_eq!(header(&reply, "x-as-config"), "tenant=acme");
        assert_eq!(header(&reply, "x-as-config-length"), "11");
        assert_eq!(header(&reply, "x-as-status"), "200");
        assert!(reply.headers.get("content-type").is_none(), "{:?}", reply.headers);
    }
}

#[tokio::test]
async fn proxy_wasm_filters_rewrite_buffered_bodies_and_stream_the_others() {
    let pods = Pods::start(&["127.0.0.64"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = [
        (
            "rewrite",
            "- plugin: pw\n  config: {rewrite_request: [ping, pong-pong], rewrite_response: [body_head, BODY_HEAD]}\n",
        ),
        ("upper", "- plugin: pw\n  config: {upper_request: true}\n"),
        ("deny", "- plugin: pw\n  config: {deny_body: forbidden}\n"),
        ("plain", "- plugin: pw\n  config: {replace_status: 404}\n"),
        // A component reads the body whole in its request phase; the proxy-wasm body phase
        // then runs on what it left.
        (
            "mixed",
            "- plugin: bodies\n  config: {upper: true}\n- plugin: pw\n  config: {rewrite_request: [PING, pong]}\n",
        ),
    ];
    let mut manifests = vec![service("app", &pods.addrs, &[])];
    for (name, filters) in routes {
        manifests.push(filtered_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], filters));
    }
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins();
    std::fs::copy(test_filters().join("bodies.wasm"), plugins.path().join("bodies.wasm")).unwrap();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();
    let post = |host: &'static str, body: Vec<u8>| {
        let (client, url) = (&client, gateway.url("/post"));
        async move { client.request(http::Method::POST, &url, host, &[], body.into()).await.unwrap() }
    };

    // Buffered both ways: the request body is rewritten whole and goes on with its new length;
    // so does the response.
    let reply = post("rewrite.test", b"ping ping".to_vec()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains(r#""BODY_HEAD":"pong-pong pong-pong""#), "{}", reply.body);
    assert!(reply.body.contains(r#""body_len":19"#), "{}", reply.body);
    assert_eq!(header(&reply, "content-length"), reply.body.len().to_string());

    // Over the buffering cap (1 MiB): 413, and the upstream never sees it.
    let reply = post("rewrite.test", vec![b'a'; 1_300_000]).await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    // A filter that does not pause streams the body, chunk by chunk, however large.
    let mut big = vec![b'x'; 3_000_000];
    big[..5].copy_from_slice(b"hello");
    let reply = post("upper.test", big).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    assert_eq!(echo["body_len"], 3_000_000);
    assert!(echo["body_head"].as_str().unwrap().starts_with("HELLOXXX"), "{echo}");

    // An answer from the request body phase replaces the upstream's.
    let denied = post("deny.test", b"something forbidden here".to_vec()).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.body, "body denied by proxy-wasm");
    let allowed = post("deny.test", b"something fine".to_vec()).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.json()["body_head"], "something fine");

    let echo = post("mixed.test", b"ping".to_vec()).await.json();
    assert_eq!((echo["body_head"].as_str(), echo["headers"]["x-body-read"].as_str()), (Some("pong"), Some("4")));

    // A filter whose body phases just continue leaves bodies as they are.
    let reply = post("plain.test", b"as it was".to_vec()).await;
    assert_eq!(reply.json()["body_head"], "as it was");

    // An answer from the response phase replaces the upstream's.
    let replaced = client.get(&gateway.url("/status/404"), "plain.test").await.unwrap();
    assert_eq!((replaced.status, replaced.body.as_str()), (502, "replaced by proxy-wasm"));
    assert_eq!(header(&replaced, "x-replaced-by"), "pw-probe");
}

#[tokio::test]
async fn an_ext_auth_filter_pauses_requests_until_its_auth_service_answers() {
    let pods = Pods::start(&["127.0.0.65"]).await.unwrap();
    let auth = Pods::start(&["127.0.0.66"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = [
        ("short", "auth:80"),
        ("istio", "outbound|80||auth.default.svc.cluster.local"),
        ("unknown", "nobody:80"),
        ("elsewhere", "outbound|80||auth.other.svc.cluster.local"),
    ];
    // The auth Service is routed to by an Ingress of its own: that is what resolves it.
    let mut manifests = vec![
        service("app", &pods.addrs, &[]),
        service("auth", &auth.addrs, &[]),
        sluice_tests::manifests::ingress("auth", "auth.internal", &[("/", "Prefix", "auth")]),
    ];
    for (name, target) in routes {
        let filters = format!("- plugin: pw\n  config: {{auth: \"{target}\"}}\n");
        manifests.push(filtered_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], &filters));
    }
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();

    for host in ["short.test", "istio.test"] {
        // The auth Service answers 200: the request goes on, with what the filter took from the answer.
        let allowed = client.get(&gateway.url("/hello"), host).await.unwrap();
        assert_eq!(allowed.status, 200, "{host}: {}", allowed.body);
        let echo = allowed.json();
        assert_eq!(echo["pod"], pods.addrs[0].to_string());
        assert_eq!(echo["headers"]["x-auth-pod"], auth.addrs[0].to_string(), "{host}");
        // It answers 401: the filter denies.
        let denied = client.get(&gateway.url("/status/401"), host).await.unwrap();
        assert_eq!(denied.status, 403, "{host}: {}", denied.body);
        assert_eq!(denied.body, "auth said 401");
    }

    // No answer within the call's timeout (2 s): the filter sees no status and denies.
    let started = Instant::now();
    let slow = client.get(&gateway.url("/sleep/4000"), "short.test").await.unwrap();
    assert_eq!(slow.body, "auth said none");
    assert!(started.elapsed() < Duration::from_millis(3500), "{:?}", started.elapsed());

    // Services that no route resolves, or of another namespace, cannot be called.
    for host in ["unknown.test", "elsewhere.test"] {
        let refused = client.get(&gateway.url("/hello"), host).await.unwrap();
        assert_eq!(refused.status, 500, "{host}: {}", refused.body);
        assert_eq!(refused.body, "auth call refused: BadArgument");
    }
}

#[tokio::test]
async fn a_go_filter_calls_services_and_rewrites_bodies() {
    let pods = Pods::start(&["127.0.0.95"]).await.unwrap();
    let auth = Pods::start(&["127.0.0.96"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = [
        ("auth", r#"{auth: "auth:80"}"#),
        ("nobody", r#"{auth: "nobody:80"}"#),
        ("body", "{request_body: [ping, pong], response_body: [pong, PONG]}"),
    ];
    // The auth Service is routed to by an Ingress of its own: that is what resolves it.
    let mut manifests = vec![
        service("app", &pods.addrs, &[]),
        service("auth", &auth.addrs, &[]),
        sluice_tests::manifests::ingress("auth-service", "auth.internal", &[("/", "Prefix", "auth")]),
    ];
    for (name, config) in routes {
        let filters = format!("- plugin: go-probe\n  config: {config}\n");
        manifests.push(filtered_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], &filters));
    }
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(sluice_tests::go_probe_filter(), plugins.path().join("go-probe.wasm")).unwrap();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();

    // The auth Service answers 200: the request goes on, with what the filter read of the answer.
    let allowed = client.get(&gateway.url("/hello"), "auth.test").await.unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let echo = allowed.json();
    assert_eq!(echo["pod"], pods.addrs[0].to_string());
    assert_eq!(echo["headers"]["x-auth-pod"], auth.addrs[0].to_string());
    // It answers 401: the filter denies.
    let denied = client.get(&gateway.url("/status/401"), "auth.test").await.unwrap();
    assert_eq!((denied.status, denied.body.as_str()), (403, "auth said 401"));
    assert_eq!(header(&denied, "x-denied-by"), "go-probe");
    // No answer within the call's timeout: no status.
    let slow = client.get(&gateway.url("/sleep/4000"), "auth.test").await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (403, "auth said 0"));
    // A Service no route resolves cannot be called.
    let refused = client.get(&gateway.url("/"), "nobody.test").await.unwrap();
    assert_eq!((refused.status, refused.body.as_str()), (500, "auth call refused"));

    // Bodies held to their end and rewritten both ways: the upstream sees "pong pong", the
    // client its echo with "PONG PONG".
    let reply =
        client.request(http::Method::POST, &gateway.url("/post"), "body.test", &[], "ping ping".into()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains(r#""body_head":"PONG PONG""#), "{}", reply.body);
    assert!(reply.body.contains(r#""body_len":9"#), "{}", reply.body);
}

#[tokio::test]
async fn ticks_run_off_the_request_path_and_stop_with_their_configuration() {
    let pods = Pods::start(&["127.0.0.94"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The root context counts a tick into shared data every 50 ms; responses read the count.
    let write = |config: &str| {
        let filters = format!("- plugin: pw\n  config: {config}\n");
        let manifests = [
            service("app", &pods.addrs, &[]),
            filtered_ingress("ticks", "ticks.test", &[("/", "Prefix", "app")], &filters),
        ];
        sluice_tests::write_atomic(&dir.path().join("app.yaml"), &manifests.join("---\n")).unwrap();
    };
    write("{ticks: [50, ticks]}");
    // A second configuration's ticks spin past the deadline (100 ms) every time.
    let spinning = filtered_ingress(
        "spin",
        "spin.test",
        &[("/", "Prefix", "app")],
        "- plugin: pw\n  config: {ticks: [20, spun], hostile_tick: true}\n",
    );
    std::fs::write(dir.path().join("spin.yaml"), spinning).unwrap();
    let plugins = plugins();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();
    let ticks = || {
        let (client, url) = (&client, gateway.url("/"));
        async move {
            let reply = client.get(&url, "ticks.test").await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            header(&reply, "x-ticks").parse::<u64>().unwrap_or(0)
        }
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let count = ticks().await;
        if count >= 3 {
            break count;
        }
        assert!(Instant::now() < deadline, "only {count} ticks in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = ticks().await;
    assert!(later >= first + 3, "{first} ticks, then {later} 500 ms later");
    // Ticks that fail are counted; requests of that configuration are served meanwhile.
    assert_eq!(client.get(&gateway.url("/"), "spin.test").await.unwrap().status, 200);
    let metrics = client.get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap().body;
    let timeouts = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"sluice_plugin_tick_failures_total{plugin="pw",kind="timeout"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(timeouts.is_some_and(|n| n >= 1), "no failed ticks counted in\n{metrics}");

    // Replaced by a configuration that reads the count but does not tick: the ticks stop.
    let generation = gateway.config().await.unwrap()["generation"].as_u64().unwrap();
    write("{ticks: [0, ticks]}");
    while gateway.config().await.unwrap()["generation"].as_u64().unwrap() == generation {
        assert!(Instant::now() < deadline + Duration::from_secs(10), "the new configuration was not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = ticks().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ticks().await, stopped, "ticks went on after their configuration was replaced");
}
