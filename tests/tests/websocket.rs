//! WebSocket (HTTP/1.1 Upgrade) through the real binary, staying open across reloads.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sluice_tests::manifests::{annotated_ingress, ingress, service};
use sluice_tests::{Client, Gateway, write_atomic};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket server that echoes every text message, prefixed with its address.
async fn echo_backend(listener: TcpListener) {
    let me = listener.local_addr().unwrap();
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
            while let Some(Ok(Message::Text(text))) = socket.next().await {
                if socket.send(Message::text(format!("{me} {text}"))).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test]
async fn a_websocket_stays_open_across_ten_reloads() {
    let listener = TcpListener::bind("127.0.0.14:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(echo_backend(listener));
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let version = |i: usize| {
        let paths = [("/", "Prefix", "ws"), (&format!("/v{i}") as &str, "Exact", "ws")];
        [service("ws", &[backend], &[]), ingress("ws", "ws.test", &paths)].join("---\n")
    };
    write_atomic(&routes, &version(0)).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();

    let mut request = "ws://ws.test/chat".into_client_request().unwrap();
    request.headers_mut().insert("host", "ws.test".parse().unwrap());
    let stream = tokio::net::TcpStream::connect(gateway.http).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(response.status(), 101);

    for i in 1..=10 {
        write_atomic(&routes, &version(i)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gateway.config().await.unwrap()["generation"].as_u64() != Some(i as u64 + 1) {
            assert!(std::time::Instant::now() < deadline, "reload {i} never went live");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        socket.send(Message::text(format!("after reload {i}"))).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("{backend} after reload {i}")));
    }
    socket.close(None).await.unwrap();
    let metrics = Client::new().get(&format!("http://{}/metrics", gateway.admin), "admin").await.unwrap().body;
    assert!(
        metrics
            .contains(r#"sluice_requests_total{ingress="default/ws",host="ws.test",route="Prefix /",status="1xx"} 1"#)
    );
}

#[tokio::test]
async fn an_open_websocket_counts_against_limit_connections_until_it_closes() {
    let listener = TcpListener::bind("127.0.0.15:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(echo_backend(listener));
    let dir = tempfile::tempdir().unwrap();
    let limited = annotated_ingress(
        "ws",
        "ws.test",
        &[("/", "Prefix", "ws")],
        &[("nginx.ingress.kubernetes.io/limit-connections", "1")],
    );
    write_atomic(&dir.path().join("routes.yaml"), &[service("ws", &[backend], &[]), limited].join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let open = || async {
        let mut request = "ws://ws.test/chat".into_client_request().unwrap();
        request.headers_mut().insert("host", "ws.test".parse().unwrap());
        let stream = tokio::net::TcpStream::connect(gateway.http).await.unwrap();
        tokio_tungstenite::client_async(request, stream).await
    };

    let (mut socket, response) = open().await.unwrap();
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(format!("{backend} hello")));
    let refused = open().await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");

    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    // The place comes back once the gateway has seen the tunnel close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open().await {
            Ok((_, response)) => break assert_eq!(response.status(), 101),
            Err(e) => assert!(std::time::Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
