//! `nginx.ingress.kubernetes.io/backend-protocol`: HTTPS, GRPC (h2c) and GRPCS backends,
//! including a real gRPC server whose statuses travel in HTTP/2 trailers.

use sluice_tests::manifests::{ingress, service};
use sluice_tests::tls::Certificate;
use sluice_tests::{Client, Gateway, echo_server_with};
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn with_protocol(name: &str, host: &str, service: &str, protocol: &str) -> String {
    ingress(name, host, &[("/", "Prefix", service)]).replace(
        &format!("metadata: {{name: {name}}}"),
        &format!(
            "metadata:\n  name: {name}\n  annotations: {{nginx.ingress.kubernetes.io/backend-protocol: {protocol}}}"
        ),
    )
}

#[tokio::test]
async fn speaks_https_grpc_and_grpcs_to_backends() {
    let tls_listener = TcpListener::bind("127.0.0.16:0").await.unwrap();
    let tls_backend = tls_listener.local_addr().unwrap();
    tokio::spawn(echo_server_with(tls_listener, Some(Certificate::new(&["pod.local"]).acceptor())));

    let grpc_listener = TcpListener::bind("127.0.0.17:0").await.unwrap();
    let grpc_backend = grpc_listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("sluice.test.Shop", ServingStatus::Serving).await;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(health).serve_with_incoming(incoming));

    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("secure", &[tls_backend], &[]),
        service("grpc", &[grpc_backend], &[]),
        with_protocol("https", "https.test", "secure", "HTTPS"),
        with_protocol("grpcs", "grpcs.test", "secure", "GRPCS"),
        with_protocol("grpc", "grpc.test", "grpc", "GRPC"),
        with_protocol("typo", "typo.test", "secure", "SPDY"),
    ];
    std::fs::write(dir.path().join("upstreams.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    let reply = client.get(&gateway.url("/a?b=c"), "https.test").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!((reply.json()["version"].as_str(), reply.json()["uri"].as_str()), (Some("HTTP/1.1"), Some("/a?b=c")));
    let reply = client.get(&gateway.url("/"), "grpcs.test").await.unwrap();
    assert_eq!(reply.json()["version"], "HTTP/2.0", "GRPCS: HTTP/2 over TLS");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.http))
        .unwrap()
        .origin("http://grpc.test".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let serving = health.check(HealthCheckRequest { service: "sluice.test.Shop".into() }).await.unwrap();
    assert_eq!(serving.into_inner().status, ServingStatus::Serving as i32);
    let unknown = health.check(HealthCheckRequest { service: "sluice.test.Nothing".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "grpc-status crosses the gateway in trailers: {unknown:?}");

    let config = gateway.config().await.unwrap();
    let error = config["errors"][0]["message"].as_str().unwrap();
    assert!(error.contains("\"SPDY\" is not one of HTTP, HTTPS, GRPC, GRPCS"), "{config}");
    let fallback = client.get(&gateway.url("/"), "typo.test").await.unwrap();
    assert_eq!(fallback.status, 502, "an unknown protocol falls back to HTTP, which a TLS-only backend refuses");
}

/// A backend that numbers its connections and answers by path: `/keep` keeps the connection,
/// `/close` says `Connection: close` and closes, `/http10` answers as HTTP/1.0 and closes,
/// `/big` sends a head promising 64 MiB and a little of it. Each answer names its connection
/// in `x-conn`; every connection's end is reported on `closed`.
async fn numbered_backend(listener: TcpListener, closed: tokio::sync::mpsc::UnboundedSender<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for id in 0.. {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                head.clear();
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        let _ = closed.send(id);
                        return;
                    }
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let answer = match path.as_str() {
                    "/close" => {
                        format!("HTTP/1.1 200 OK\r\nx-conn: {id}\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
                    }
                    "/http10" => format!("HTTP/1.0 200 OK\r\nx-conn: {id}\r\nContent-Length: 2\r\n\r\nok"),
                    "/big" => format!(
                        "HTTP/1.1 200 OK\r\nx-conn: {id}\r\nContent-Length: 67108864\r\n\r\n{}",
                        "x".repeat(1024)
                    ),
                    _ => format!("HTTP/1.1 200 OK\r\nx-conn: {id}\r\nContent-Length: 2\r\n\r\nok"),
                };
                if stream.write_all(answer.as_bytes()).await.is_err() || path != "/keep" && path != "/big" {
                    let _ = closed.send(id);
                    return;
                }
            }
        });
    }
}

/// Sends `GET path` on a kept-alive client connection and returns the backend connection that
/// answered (`x-conn`), reading the whole response.
async fn conn_of(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>, path: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: pooled.test\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await.unwrap();
    let (mut conn, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("x-conn:") {
            conn = value.trim().to_owned();
        } else if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    conn
}

#[tokio::test]
async fn upstream_connections_are_reused_only_when_the_response_allows() {
    let listener = TcpListener::bind("127.0.0.91:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(numbered_backend(listener, closed_tx));
    let dir = tempfile::tempdir().unwrap();
    let manifests =
        [service("pooled", &[backend], &[]), ingress("pooled", "pooled.test", &[("/", "Prefix", "pooled")])];
    std::fs::write(dir.path().join("pooled.yaml"), manifests.join("---\n")).unwrap();
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();

    // One client connection: its requests are served by one worker, and so by one pool.
    let client = tokio::net::TcpStream::connect(gateway.http).await.unwrap();
    let mut client = tokio::io::BufReader::new(client);
    let first = conn_of(&mut client, "/keep").await;
    assert_eq!(conn_of(&mut client, "/keep").await, first, "a finished keep-alive response frees its connection");
    assert_eq!(conn_of(&mut client, "/close").await, first, "the pooled connection carries the next request");
    let second = conn_of(&mut client, "/keep").await;
    assert_ne!(second, first, "not reused after Connection: close");
    assert_eq!(conn_of(&mut client, "/http10").await, second);
    let third = conn_of(&mut client, "/keep").await;
    assert_ne!(third, second, "not reused after an HTTP/1.0 response");

    // A response the client stops reading: its upstream connection is closed, not pooled.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut quitter = tokio::io::BufReader::new(tokio::net::TcpStream::connect(gateway.http).await.unwrap());
    quitter.get_mut().write_all(b"GET /big HTTP/1.1\r\nHost: pooled.test\r\n\r\n").await.unwrap();
    let mut status = String::new();
    quitter.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let big: usize = loop {
        let mut line = String::new();
        quitter.read_line(&mut line).await.unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("x-conn:") {
            break value.trim().parse().unwrap();
        }
    };
    drop(quitter);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let ended =
            tokio::time::timeout_at(deadline, closed.recv()).await.expect("the cut-off upstream connection is closed");
        if ended == Some(big) {
            break;
        }
    }
}
