//! Filters written in other languages than Rust, built from source and run by the real binary.

use sluice_tests::manifests::{filtered_ingress, service};
use sluice_tests::{Client, Gateway, Pods, c_filter, plugin_cache, python_filter};

#[tokio::test]
async fn a_python_filter_changes_requests_answers_and_keeps_state() {
    let pods = Pods::start(&["127.0.0.28"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(python_filter(), plugins.path().join("tagger.wasm")).unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress(
            "py",
            "py.test",
            &[("/", "Prefix", "app")],
            "- plugin: tagger\n  config: {tag: hello, deny: badbot}\n",
        ),
        filtered_ingress("bad", "bad.test", &[("/", "Prefix", "app")], "- plugin: tagger\n  config: {deny: x}\n"),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let cache = plugin_cache();
    let args = ["--plugins", plugins.path().to_str().unwrap(), "--plugin-cache", cache.to_str().unwrap()];
    let gateway = Gateway::start(dir.path(), &args).await.unwrap();
    let client = Client::new();

    for _ in 0..3 {
        let reply = client.get(&gateway.url("/some/path?x=1"), "py.test").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["headers"]["x-python"], "hello");
        assert_eq!(reply.headers["x-filter-lang"], "python");
        assert_eq!(reply.headers["x-python-path"], "/some/path");
    }
    let denied = client
        .request(http::Method::GET, &gateway.url("/"), "py.test", &[("user-agent", "badbot/1.0")], Default::default())
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
    let pods = Pods::start(&["127.0.0.30"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(c_filter(), plugins.path().join("guard.wasm")).unwrap();
    let manifests = [
        service("app", &pods.addrs, &[]),
        filtered_ingress("c", "c.test", &[("/", "Prefix", "app")], "- plugin: guard\n"),
        filtered_ingress("bad", "bad.test", &[("/", "Prefix", "app")], "- plugin: guard\n  config: {x: 1}\n"),
    ];
    std::fs::write(dir.path().join("app.yaml"), manifests.join("---\n")).unwrap();
    let cache = plugin_cache();
    let args = ["--plugins", plugins.path().to_str().unwrap(), "--plugin-cache", cache.to_str().unwrap()];
    let gateway = Gateway::start(dir.path(), &args).await.unwrap();
    let client = Client::new();

    let reply = client.get(&gateway.url("/four"), "c.test").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["headers"]["x-c-path-length"], "5");
    assert_eq!(reply.headers["x-filter-lang"], "c");
    let private = client.get(&gateway.url("/private/x"), "c.test").await.unwrap();
    assert_eq!((private.status, private.body.as_str()), (401, "private\n"));
    assert_eq!(private.headers["x-filter-lang"], "c");
    assert_eq!(client.get(&gateway.url("/"), "bad.test").await.unwrap().status, 500);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("takes no configuration"), "{errors}");
}
