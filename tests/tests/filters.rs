//! Wasm filter chains end to end: the real binary with plugin modules from `tests/filters`,
//! real echo backends and real clients.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::manifests::{filtered_ingress, service};
use sluice_tests::{Client, Gateway, Pods, Reply, sluice_bin, test_filters, write_atomic};

/// A plugin directory holding `modules` as `(name, test filter)`.
fn plugins(modules: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, filter) in modules {
        std::fs::copy(test_filters().join(format!("{filter}.wasm")), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

fn values(reply: &Reply, name: &str) -> Vec<String> {
    reply.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

async fn start(manifests: &Path, plugins: &Path) -> Gateway {
    Gateway::start_with_plugins(manifests, plugins).await.unwrap()
}

#[tokio::test]
async fn chains_run_in_order_answer_choose_endpoints_and_carry_state() {
    let pods = Pods::start(&["127.0.0.21", "127.0.0.22", "127.0.0.23"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chain = r#"- plugin: probe
  config: {name: a, prefix: /a, set: [[x-a, "1"]]}
- plugin: probe
  config: {name: b, prefix: /b, set: [[x-a, "2"], [x-b, "1"]], remove: [x-drop], served: true}
- plugin: probe
  config: {name: c, skip_response: true}
"#;
    let pick = "- plugin: probe\n  config: {pick: x-endpoint, served: true}\n  isolation: request\n";
    let deny = "- plugin: probe\n  config: {respond: 403, body: denied}\n- plugin: probe\n  config: {name: never}\n";
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("chain", "chain.test", &[("/", "Prefix", "app")], chain),
        filtered_ingress("pick", "pick.test", &[("/", "Prefix", "app")], pick),
        filtered_ingress("deny", "deny.test", &[("/", "Prefix", "app")], deny),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("probe", "probe")]);
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();

    // Request phases in order (b's prefix goes in front of a's), response phases in reverse,
    // each with the state its own request phase kept.
    let reply = client
        .request(http::Method::GET, &gateway.url("/hello?q=1"), "chain.test", &[("x-drop", "1")], Default::default())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    assert_eq!(echo["uri"], "/b/a/hello?q=1");
    assert_eq!(echo["headers"]["x-a"], "2");
    assert_eq!(echo["headers"]["x-b"], "1");
    assert!(echo["headers"].get("x-drop").is_none());
    assert_eq!(echo["headers"]["x-chain"], "a, b, c");
    // c asked not to be called for the response (`skip-response`).
    assert_eq!(values(&reply, "x-chain-response"), ["b", "a"]);
    assert_eq!(values(&reply, "x-served-by"), [reply.pod()]);

    // A filter chooses the endpoint: every request goes where the header says.
    let mut chosen = Vec::new();
    for index in 0..3 {
        for _ in 0..10 {
            let headers = [("x-endpoint", index.to_string())];
            let headers: Vec<_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let reply = client
                .request(http::Method::GET, &gateway.url("/"), "pick.test", &headers, Default::default())
                .await
                .unwrap();
            assert_eq!(values(&reply, "x-served-by"), [reply.pod()]);
            chosen.push((index, reply.pod()));
        }
    }
    for index in 0..3 {
        let pods: std::collections::BTreeSet<_> = chosen.iter().filter(|(i, _)| *i == index).map(|(_, p)| p).collect();
        assert_eq!(pods.len(), 1, "endpoint {index} was not sticky: {pods:?}");
    }
    let distinct: std::collections::BTreeSet<_> = chosen.iter().map(|(_, p)| p).collect();
    assert_eq!(distinct.len(), 3);

    // A filter answers; the next filter and the backend are skipped.
    let reply = client.get(&gateway.url("/"), "deny.test").await.unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, "denied");
    assert_eq!(values(&reply, "x-route"), ["default/deny"]);
    assert!(values(&reply, "x-chain-response").is_empty());
}

#[tokio::test]
async fn isolation_request_gives_every_request_a_fresh_instance() {
    let pods = Pods::start(&["127.0.0.24"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress(
            "reused",
            "reused.test",
            &[("/", "Prefix", "app")],
            "- plugin: probe\n  config: {count: true}\n",
        ),
        filtered_ingress(
            "fresh",
            "fresh.test",
            &[("/", "Prefix", "app")],
            "- plugin: probe\n  config: {count: true}\n  isolation: request\n",
        ),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("probe", "probe")]);
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();
    let mut reused = Vec::new();
    for _ in 0..10 {
        let fresh = client.get(&gateway.url("/"), "fresh.test").await.unwrap();
        assert_eq!(values(&fresh, "x-instance-requests"), ["1"]);
        let reply = client.get(&gateway.url("/"), "reused.test").await.unwrap();
        reused.push(values(&reply, "x-instance-requests")[0].parse::<u32>().unwrap());
    }
    // Instances are per worker thread; ten requests over a kept-alive connection reach one.
    assert!(reused.iter().max().unwrap() >= &5, "{reused:?}");
}

#[tokio::test]
async fn filters_share_a_store_across_instances_and_routes_of_a_namespace_only() {
    let pods = Pods::start(&["127.0.0.26"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tally = |isolation| format!("- plugin: probe\n  config: {{tally: hits}}\n  isolation: {isolation}\n");
    // The same key, in another namespace and by another plugin: other counts.
    let other = |manifest: String| {
        manifest
            .replace("metadata: {name: ", "metadata: {namespace: other, name: ")
            .replace("metadata:\n  name: ", "metadata:\n  namespace: other\n  name: ")
    };
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("one", "one.test", &[("/", "Prefix", "app")], &tally("instance")),
        filtered_ingress("two", "two.test", &[("/", "Prefix", "app")], &tally("request")),
        other(service("app", &pods.addrs, &[])),
        other(filtered_ingress("three", "three.test", &[("/", "Prefix", "app")], &tally("instance"))),
        filtered_ingress("four", "four.test", &[("/", "Prefix", "app")], "- plugin: probe2\n  config: {tally: hits}\n"),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("probe", "probe"), ("probe2", "probe")]);
    let gateway = Arc::new(start(dir.path(), plugins.path()).await);
    let client = Client::new();
    // Requests in parallel, over both routes (reused and fresh instances on every worker
    // thread), each add one with compare-and-swap: no count is lost or given twice.
    let tasks = (0..8).map(|task| {
        let (client, gateway) = (client.clone(), gateway.clone());
        tokio::spawn(async move {
            let mut counts = Vec::new();
            for i in 0..10 {
                let host = if (task + i) % 2 == 0 { "one.test" } else { "two.test" };
                let reply = client.get(&gateway.url("/"), host).await.unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
                counts.push(reply.json()["headers"]["x-tally"].as_str().unwrap().parse::<u32>().unwrap());
            }
            counts
        })
    });
    let mut counts = Vec::new();
    for task in tasks {
        counts.extend(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=80).collect::<Vec<_>>());
    for host in ["three.test", "four.test"] {
        let reply = client.get(&gateway.url("/"), host).await.unwrap();
        assert_eq!(reply.json()["headers"]["x-tally"], "1", "{host}: {}", reply.body);
    }
}

/// The echo in a reply whose body the `bodies` filter appended to.
fn unappended(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(reply.body.strip_suffix(" (appended)").expect("appended")).unwrap()
}

#[tokio::test]
async fn filters_read_and_replace_whole_bodies_and_leave_the_others_streaming() {
    let pods = Pods::start(&["127.0.0.25"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = [
        ("upper", "- plugin: bodies\n  config: {upper: true, append: \" (appended)\"}\n"),
        ("deny", "- plugin: bodies\n  config: {deny: forbidden}\n"),
        ("replace", "- plugin: bodies\n  config: {replace: replaced}\n"),
        // A second reader sees what the first left.
        ("twice", "- plugin: bodies\n  config: {upper: true}\n- plugin: bodies\n  config: {deny: SECRET}\n"),
    ];
    let mut manifests = vec![service("app", &pods.addrs, &[])];
    for (name, filters) in routes {
        manifests.push(filtered_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], filters));
    }
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("bodies", "bodies")]);
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();
    let post = |host: &'static str, body: Vec<u8>| {
        let (client, url) = (&client, gateway.url("/post"));
        async move { client.request(http::Method::POST, &url, host, &[], body.into()).await.unwrap() }
    };

    // Read and replaced both ways; each goes on with a Content-Length of its new size.
    let reply = post("upper.test", b"hello body".to_vec()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(values(&reply, "x-response-body-read"), [(reply.body.len() - " (appended)".len()).to_string()]);
    assert_eq!(values(&reply, "content-length"), [reply.body.len().to_string()]);
    let echo = unappended(&reply);
    assert_eq!(echo["body_head"], "HELLO BODY");
    assert_eq!(echo["headers"]["x-body-read"], "10");

    // A filter answers from what the body says; the upstream never sees it.
    let denied = post("deny.test", b"something forbidden".to_vec()).await;
    assert_eq!((denied.status, denied.body.as_str()), (403, "denied by its body"));
    let allowed = post("deny.test", b"something fine".to_vec()).await;
    assert_eq!(allowed.json()["body_head"], "something fine");
    assert_eq!(post("twice.test", b"a secret".to_vec()).await.status, 403);

    // Replaced without being read.
    let echo = post("replace.test", b"the original".to_vec()).await.json();
    assert_eq!((echo["body_head"].as_str(), echo["body_len"].as_u64()), (Some("replaced"), Some(8)));

    // Over the cap (1 MiB) with a Content-Length: the filter is told, nothing is read, and the
    // body goes on as it came.
    let mut big = vec![b'x'; 2_000_000];
    big[..5].copy_from_slice(b"hello");
    let echo = unappended(&post("upper.test", big).await);
    assert_eq!(
        (echo["body_len"].as_u64(), echo["headers"]["x-body-read"].as_str()),
        (Some(2_000_000), Some("too-large"))
    );
    assert!(echo["body_head"].as_str().unwrap().starts_with("helloxxx"), "{echo}");

    // Over the cap found out while reading a chunked body: what was read goes first, then the
    // rest, none of it lost.
    let chunk = "y".repeat(600_000);
    let chunked = format!(
        "POST /post HTTP/1.1\r\nhost: upper.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\nhello\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let answer = sluice_tests::raw_request(gateway.http, chunked.as_bytes()).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body_len":1200005"#), "{answer}");
    assert!(answer.contains(r#""x-body-read":"too-large""#), "{answer}");
    assert!(answer.contains(r#""body_head":"helloyyy"#), "{answer}");

    // A request without a body reads as empty.
    let reply = client.get(&gateway.url("/"), "upper.test").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn a_module_swapped_under_load_drops_no_request() {
    let pods = Pods::start(&["127.0.0.25"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("swap", "swap.test", &[("/", "Prefix", "app")], "- plugin: swap\n"),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("swap", "probe")]);
    let gateway = start(dir.path(), plugins.path()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, sent, url) = (stop.clone(), sent.clone(), gateway.url("/"));
        clients.push(tokio::spawn(async move {
            let client = Client::new();
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url, "swap.test").await {
                    Ok(reply) if reply.status == 200 => {
                        let version = values(&reply, "x-filter");
                        if version != ["probe"] && version != ["tag"] {
                            bad.push(format!("{version:?}"));
                        }
                    }
                    other => bad.push(format!("{other:?}")),
                }
            }
            bad
        }));
    }
    let client = Client::new();
    let module = plugins.path().join("swap.wasm");
    for (round, version) in ["tag", "probe", "tag", "probe", "tag"].into_iter().enumerate() {
        let staged = plugins.path().join(".staged");
        std::fs::copy(test_filters().join(format!("{version}.wasm")), &staged).unwrap();
        std::fs::rename(&staged, &module).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = client.get(&gateway.url("/"), "swap.test").await.unwrap();
            if values(&reply, "x-filter") == [version] {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: {version} never went live");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Keep each version under load for a while before swapping it out.
        let live = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < live + 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut bad = Vec::new();
    for client in clients {
        bad.extend(client.await.unwrap());
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 100, "only {sent} requests");
    assert!(
        bad.is_empty(),
        "{} of {sent} requests failed or came from neither version: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[tokio::test]
async fn hostile_and_broken_modules_fail_only_their_routes() {
    let pods = Pods::start(&["127.0.0.26"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins(&[("probe", "probe"), ("needs-import", "needs_import")]);
    std::fs::write(plugins.path().join("junk.wasm"), b"\0asm not really").unwrap();
    std::fs::write(plugins.path().join("probe.limits.yaml"), "deadline: 20ms\nmemory: 32m\n").unwrap();
    let cases = [
        ("loop", "probe", r#"{fail: loop}"#),
        ("bomb", "probe", r#"{fail: bomb}"#),
        ("trap", "probe", r#"{fail: trap}"#),
        ("invalid", "probe", r#"{reject: true}"#),
        ("junk", "junk", "null"),
        ("import", "needs-import", "null"),
        ("absent", "absent", "null"),
    ];
    let mut manifests = vec![service("app", &pods.addrs, &[])];
    for (name, plugin, config) in cases {
        for policy in ["closed", "open"] {
            let filters = format!(
                "- plugin: {plugin}\n  config: {config}\n  failure: {policy}\n- plugin: probe\n  config: {{name: after}}\n"
            );
            manifests.push(filtered_ingress(
                &format!("{name}-{policy}"),
                &format!("{name}-{policy}.test"),
                &[("/", "Prefix", "app")],
                &filters,
            ));
        }
    }
    manifests.push(filtered_ingress(
        "fine",
        "fine.test",
        &[("/", "Prefix", "app")],
        "- plugin: probe\n  config: {name: fine}\n",
    ));
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();

    for (name, _, _) in cases {
        let started = Instant::now();
        let closed = client.get(&gateway.url("/"), &format!("{name}-closed.test")).await.unwrap();
        assert_eq!(closed.status, 500, "{name}, closed: {}", closed.body);
        assert!(started.elapsed() < Duration::from_secs(2), "{name} took {:?}", started.elapsed());
        let open = client.get(&gateway.url("/"), &format!("{name}-open.test")).await.unwrap();
        assert_eq!(open.status, 200, "{name}, open: {}", open.body);
        assert_eq!(values(&open, "x-chain-response"), ["after"], "{name}: the next filter runs");
        let fine = client.get(&gateway.url("/"), "fine.test").await.unwrap();
        assert_eq!((fine.status, values(&fine, "x-chain-response")), (200, vec!["fine".to_owned()]), "after {name}");
    }

    let config = gateway.config().await.unwrap();
    let errors = config["errors"].to_string();
    for expected in [
        "Ingress default/invalid-closed",
        "metadata.annotations[sluice.dev/filters][0]",
        "rejected on purpose",
        "plugin junk failed to load",
        "plugin needs-import failed to load",
        "plugin absent is not loaded",
    ] {
        assert!(errors.contains(expected), "{expected} not in {errors}");
    }
    let plugins_listed = config["plugins"].to_string();
    assert!(plugins_listed.contains("\"hash\""), "{plugins_listed}");

    let metrics = client.get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap().body;
    for kind in ["timeout", "memory", "trap", "unavailable"] {
        for policy in ["closed", "open"] {
            let line = metrics.lines().find(|l| {
                l.starts_with("sluice_filter_failures_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains(&format!("policy=\"{policy}\""))
            });
            assert!(line.is_some(), "no {kind}/{policy} failures counted:\n{metrics}");
        }
    }

    // `sluice check` reports the same problems and fails.
    let output = std::process::Command::new(sluice_bin())
        .args(["check", dir.path().to_str().unwrap(), "--plugins", plugins.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("rejected on purpose") && stdout.contains("Ingress default/invalid-open"), "{stdout}");
}

#[tokio::test]
async fn an_invalid_filters_annotation_fails_its_ingress_closed() {
    let pods = Pods::start(&["127.0.0.27"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("typo", "typo.test", &[("/", "Prefix", "app")], "- plugin: probe\n  failur: open\n"),
        filtered_ingress("fine", "fine.test", &[("/", "Prefix", "app")], "- plugin: probe\n"),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("probe", "probe")]);
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();
    assert_eq!(client.get(&gateway.url("/"), "typo.test").await.unwrap().status, 500);
    assert_eq!(client.get(&gateway.url("/"), "fine.test").await.unwrap().status, 200);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("Ingress default/typo") && errors.contains("failur"), "{errors}");
    write_atomic(&dir.path().join("app.yaml"), &manifests.join("---\n").replace("failur:", "failure:")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&gateway.url("/"), "typo.test").await.unwrap().status != 200 {
        assert!(Instant::now() < deadline, "the fixed annotation never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_sdk_template_works_as_its_readme_says() {
    let pods = Pods::start(&["127.0.0.29"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let filters = "- plugin: add-tenant\n  config: {header: x-tenant, value: acme}\n";
    let manifests =
        [service("app", &pods.addrs, &[]), filtered_ingress("shop", "shop.test", &[("/", "Prefix", "app")], filters)];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let plugins = plugins(&[("add-tenant", "add_tenant")]);
    let gateway = start(dir.path(), plugins.path()).await;
    let client = Client::new();
    let reply = client.get(&gateway.url("/"), "shop.test").await.unwrap();
    assert_eq!(reply.json()["headers"]["x-tenant"], "acme");
    assert_eq!(values(&reply, "x-served-for"), ["acme"]);
    let spoofed = client
        .request(http::Method::GET, &gateway.url("/"), "shop.test", &[("x-tenant", "evil")], Default::default())
        .await
        .unwrap();
    assert_eq!(spoofed.status, 400);
}
