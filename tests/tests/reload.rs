//! Live reload: manifest edits while clients send requests continuously; not one may fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::manifests::{ingress, service};
use sluice_tests::{Client, Gateway, Pods, write_atomic};

#[tokio::test]
async fn twenty_edits_under_continuous_load_fail_no_request() {
    let blue = Pods::start(&["127.0.0.9"]).await.unwrap();
    let green = Pods::start(&["127.0.0.10"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let services = [service("blue", &blue.addrs, &[]), service("green", &green.addrs, &[])].join("---\n");
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    let routes = dir.path().join("routes.yaml");
    // Edit `i` points `/` at blue or green and adds a path `/v{i}` only that version has.
    let version = |i: usize| {
        let color = if i.is_multiple_of(2) { "blue" } else { "green" };
        ingress("app", "reload.test", &[("/", "Prefix", color), (&format!("/v{i}"), "Exact", color)])
    };
    write_atomic(&routes, &version(0)).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), gateway.url("/"));
        clients.push(tokio::spawn(async move {
            let client = Client::new();
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url, "reload.test").await {
                    Ok(reply) if reply.status == 200 => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        }));
    }

    let client = Client::new();
    for i in 1..=20 {
        if i == 10 {
            // A broken edit: reported, and the last good version keeps serving.
            write_atomic(&routes, "kind: [not yaml").unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        write_atomic(&routes, &version(i)).unwrap();
        let expected = if i.is_multiple_of(2) { &blue } else { &green };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = client.get(&gateway.url(&format!("/v{i}")), "reload.test").await.unwrap();
            if reply.status == 200 && reply.pod() == expected.addrs[0].to_string() {
                break;
            }
            assert!(Instant::now() < deadline, "edit {i} never went live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let old = client.get(&gateway.url(&format!("/v{}", i - 1)), "reload.test").await.unwrap();
        assert_eq!(old.json()["uri"], format!("/v{}", i - 1), "the previous edit's Exact path is gone, / serves it");
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for client in clients {
        errors.extend(client.await.unwrap());
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 200, "too little traffic to mean anything: {sent}");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} of {sent} requests failed: {errors:?}", errors.len());
    let config = gateway.config().await.unwrap();
    assert!(config["generation"].as_u64().unwrap() >= 21, "{}", config["generation"]);
    assert_eq!(config["errors"], serde_json::json!([]), "the broken edit's error is gone once fixed");
}
