//! Clients for routes with TLS settings of their own (`proxy-ssl-*`): one pooled client per
//! configuration and protocol, kept by each data-plane thread, so that a connection made under
//! one configuration (its CA, its client certificate, its name) never carries another's requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_route::{BackendTls, RouteTls};

use crate::connect::Connector;
use crate::error::ProxyError;
use crate::upstream::UpstreamBody;

type TlsClient = Client<HttpsConnector<Connector>, UpstreamBody>;
/// A configuration's address and whether the client speaks HTTP/2.
type Key = (usize, bool);

/// One data-plane thread's clients, by configuration (its address, the `Arc` held so that the
/// address is not reused) and whether they speak HTTP/2.
#[derive(Debug)]
pub struct TlsClients {
    tcp: Connector,
    idle: Duration,
    clients: Mutex<HashMap<Key, (Arc<BackendTls>, TlsClient)>>,
}

impl TlsClients {
    pub fn new(tcp: Connector, idle: Duration) -> Self {
        Self { tcp, idle, clients: Mutex::default() }
    }

    /// The client for a route's TLS; `h2` for gRPCS. A route whose TLS could not be built
    /// answers 503. Clients of configurations that no snapshot holds any more are dropped when
    /// one is added.
    pub fn client(&self, tls: &RouteTls, h2: bool) -> Result<TlsClient, ProxyError> {
        let tls = tls.as_ref().map_err(|why| ProxyError::BackendTls(why.clone()))?;
        let key = (Arc::as_ptr(tls) as usize, h2);
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, client)) = clients.get(&key) {
            return Ok(client.clone());
        }
        clients.retain(|_, (held, _)| Arc::strong_count(held) > 1);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config((*tls.config).clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()));
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_timer(TokioTimer::new()).pool_idle_timeout(self.idle).timer(TokioTimer::new());
        let client = if h2 {
            client.http2_only(true).build(builder.enable_http2().wrap_connector(self.tcp.clone()))
        } else {
            client.build(builder.enable_http1().wrap_connector(self.tcp.clone()))
        };
        clients.insert(key, (tls.clone(), client.clone()));
        Ok(client)
    }
}
