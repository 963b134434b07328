//! SIGTERM: `/readyz` turns 503 at once, new connections are still served for the shutdown
//! delay and refused after it, requests in flight finish, then the gateway exits 0.

use std::time::Duration;

use sluice_tests::{App, Client, Gateway};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let app = App::start("127.0.0.11", "slow.test").await.unwrap();
    let mut gateway = Gateway::start(app.manifests(), &["--shutdown-delay", "400ms"]).await.unwrap();
    let readyz = format!("http://{}/readyz", gateway.admin);

    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = gateway.url("/sleep/1500");
            tokio::spawn(async move { Client::new().get(&url, "slow.test").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = gateway.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    // Within the shutdown delay: not ready, but still serving new connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(Client::new().get(&readyz, "admin").await.unwrap().status, 503, "still ready while draining");
    let during_delay = Client::new().get(&gateway.url("/"), "slow.test").await.unwrap();
    assert_eq!(during_delay.status, 200, "a new connection during the shutdown delay was not served");

    // After the delay, while the slow requests are still running: new connections are refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tokio::net::TcpStream::connect(gateway.http).await.is_err(), "still accepting after the delay");

    for request in in_flight {
        let reply = request.await.unwrap().expect("an in-flight request failed during shutdown");
        assert_eq!(reply.status, 200);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
}
