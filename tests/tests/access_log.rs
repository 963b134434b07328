//! `--access-log --log-format json`: one structured event per request.

use std::time::Duration;

use http::Method;
use sluice_tests::{App, Client, Gateway};

#[tokio::test]
async fn logs_each_request_as_a_json_event() {
    let app = App::start("127.0.0.18", "log.test").await.unwrap();
    let args = ["--access-log", "--log-format", "json"];
    let (gateway, mut logs) = Gateway::start_capturing_logs(app.manifests(), &args).await.unwrap();

    let headers = [("x-request-id", "trace-42")];
    let reply = Client::new()
        .request(Method::POST, &gateway.url("/cart?item=7"), "log.test", &headers, "{}".into())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(Client::new().get(&gateway.url("/"), "nowhere.test").await.unwrap().status, 404);

    let mut events = Vec::new();
    while events.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(5), logs.recv()).await.expect("no access log").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["target"] == "sluice::access" {
            events.push(event["fields"].clone());
        }
    }
    let first = &events[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["uri"], "/cart?item=7");
    assert_eq!(first["status"], 200);
    assert_eq!(first["ingress"], "default/app");
    assert_eq!(first["host"], "log.test");
    assert_eq!(first["route"], "Prefix /");
    assert_eq!(first["upstream"], app.pods.addrs[0].to_string());
    assert_eq!(first["request_id"], "trace-42", "the client's request id is logged and forwarded");
    assert_eq!(first["client"], "127.0.0.1");
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!((events[1]["status"].as_u64(), events[1]["route"].as_str()), (Some(404), Some("")));
    assert_eq!(events[1]["request_id"].as_str().map(str::len), Some(32), "a generated id");
}
