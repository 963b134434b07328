//! Filters written in other languages than Rust, built from source and run by the real binary.

use std::path::Path;

use sluice_tests::manifests::{filtered_ingress, service};
use sluice_tests::{Client, Gateway, Pods, c_filter, js_filter, python_filter};

/// A gateway serving `module` as plugin `name` to an echo pod at `ip`: `good.test` attaches it
/// with `good` as the rest of the attachment, `bad.test` with `bad`.
struct Served {
    gateway: Gateway,
    _pods: Pods,
    _dirs: [tempfile::TempDir; 2],
}

async fn serve(ip: &str, module: &Path, name: &str, good: &str, bad: &str) -> Served {
    let pods = Pods::start(&[ip]).await.unwrap();
    let (manifests, plugins) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(module, plugins.path().join(format!("{name}.wasm"))).unwrap();
    // An interpreter's first calls (lazy imports) can outlast the default 50 ms on a loaded
    // machine; these tests check what the filters do, not how fast.
    std::fs::write(plugins.path().join(format!("{name}.limits.yaml")), "deadline: 1s\n").unwrap();
    let attach = |rest: &str| format!("- plugin: {name}\n{rest}");
    let objects = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("good", "good.test", &[("/", "Prefix", "app")], &attach(good)),
        filtered_ingress("bad", "bad.test", &[("/", "Prefix", "app")], &attach(bad)),
    ];
    std::fs::write(manifests.path().join("app.yaml"), objects.join("---\n")).unwrap();
    let gateway = Gateway::start_with_plugins(manifests.path(), plugins.path()).await.unwrap();
    Served { gateway, _pods: pods, _dirs: [manifests, plugins] }
}

#[tokio::test]
async fn a_python_filter_changes_requests_answers_and_keeps_state() {
    let served = serve(
        "127.0.0.28",
        python_filter(),
        "tagger",
        "  config: {tag: hello, deny: badbot}\n",
        "  config: {deny: x}\n",
    )
    .await;
    let gateway = &served.gateway;
    let client = Client::new();
    for _ in 0..3 {
        let reply = client.get(&gateway.url("/some/path?x=1"), "good.test").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["headers"]["x-python"], "hello");
        assert_eq!(reply.headers["x-filter-lang"], "python");
        assert_eq!(reply.headers["x-python-path"], "/some/path");
    }
    let denied = client
        .request(http::Method::GET, &gateway.url("/"), "good.test", &[("user-agent", "badbot/1.0")], Default::default())
        .await
        .unwrap();
    assert_eq!((denied.status, denied.body.as_str()), (403, "denied by python\n"));
    assert_eq!(denied.headers["x-filter-lang"], "python");

    // The Python code's own validation rejects a configuration without a tag.
    assert_eq!(client.get(&gateway.url("/"), "bad.test").await.unwrap().status, 500);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("Ingress default/bad") && errors.contains("expected {tag"), "{errors}");
}

#[tokio::test]
async fn a_c_filter_changes_requests_and_answers() {
    let served = serve("127.0.0.30", c_filter(), "guard", "", "  config: {x: 1}\n").await;
    let gateway = &served.gateway;
    let client = Client::new();

    let reply = client.get(&gateway.url("/four"), "good.test").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["headers"]["x-c-path-length"], "5");
    assert_eq!(reply.headers["x-filter-lang"], "c");
    let private = client.get(&gateway.url("/private/x"), "good.test").await.unwrap();
    assert_eq!((private.status, private.body.as_str()), (401, "private\n"));
    assert_eq!(private.headers["x-filter-lang"], "c");
    assert_eq!(client.get(&gateway.url("/"), "bad.test").await.unwrap().status, 500);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("takes no configuration"), "{errors}");
}

#[tokio::test]
async fn a_javascript_filter_keeps_instance_state_and_answers() {
    let served = serve("127.0.0.31", js_filter(), "limiter", "  config: {limit: 3}\n", "  config: {}\n").await;
    let gateway = &served.gateway;
    let client = Client::new();

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply = client.get(&gateway.url("/"), "good.test").await.unwrap();
        assert_eq!(reply.headers["x-filter-lang"], "js");
        if reply.status == 200 {
            assert_eq!(reply.json()["headers"]["x-js-method"], "GET");
        }
        statuses.push(reply.status);
    }
    // The count lives in the (reused) instance: one per worker thread, three requests each.
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");

    assert_eq!(client.get(&gateway.url("/"), "bad.test").await.unwrap().status, 500);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("expected {limit"), "{errors}");
}
