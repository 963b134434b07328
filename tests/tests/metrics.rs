//! `/metrics`: requests by route and status class, latency, upstream errors, connections and
//! configuration figures, scraped from the real binary after real traffic.

use std::time::Duration;

use sluice_tests::manifests::{ingress, service};
use sluice_tests::{Client, Gateway, Pods, write_atomic};

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn counts_requests_errors_connections_and_reloads() {
    let mut pods = Pods::start(&["127.0.0.12"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let manifests = [service("app", &pods.addrs, &[]), ingress("shop", "m.test", &[("/", "Prefix", "app")])];
    write_atomic(&routes, &manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();
    let scrape = || async { Client::new().get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap() };

    for _ in 0..5 {
        assert_eq!(client.get(&gateway.url("/"), "m.test").await.unwrap().status, 200);
    }
    assert_eq!(client.get(&gateway.url("/status/503"), "m.test").await.unwrap().status, 503);
    assert_eq!(client.get(&gateway.url("/"), "nowhere.test").await.unwrap().status, 404);
    pods.kill(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.get(&gateway.url("/"), "m.test").await.unwrap().status, 502);

    let reply = scrape().await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = &reply.body;
    let route = r#"ingress="default/shop",host="m.test",route="Prefix /""#;
    assert_eq!(sample(text, &format!("sluice_requests_total{{{route},status=\"2xx\"}}")), Some(5.0), "{text}");
    assert_eq!(sample(text, &format!("sluice_requests_total{{{route},status=\"5xx\"}}")), Some(2.0), "{text}");
    assert_eq!(sample(text, r#"sluice_requests_total{ingress="",host="",route="",status="4xx"}"#), Some(1.0));
    assert_eq!(sample(text, &format!("sluice_request_duration_seconds_count{{{route}}}")), Some(7.0), "{text}");
    let connect_errors = r#"sluice_upstream_errors_total{backend="default/app:80",error="connect"}"#;
    assert_eq!(sample(text, connect_errors), Some(1.0), "{text}");
    assert!(sample(text, "sluice_open_connections").unwrap() >= 1.0, "the client's keep-alive connection");
    assert_eq!(sample(text, "sluice_config_generation"), Some(1.0));
    assert_eq!(sample(text, "sluice_config_errors"), Some(0.0));

    let broken = manifests.join("---\n").replace("name: app, port", "name: gone, port");
    write_atomic(&routes, &broken).unwrap();
    let mut text = String::new();
    for _ in 0..200 {
        text = scrape().await.body;
        if sample(&text, "sluice_config_generation") == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&text, "sluice_config_reloads_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "sluice_config_errors"), Some(1.0), "the missing Service");
}
