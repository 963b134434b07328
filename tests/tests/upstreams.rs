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
