//! Accept loops shared by the proxy and admin listeners, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::body::ResponseBody;
use crate::metrics::Metrics;

/// An accepted connection: its peer, whether it is TLS, and the forwarding header values derived
/// from its two ends, computed once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct Conn {
    pub remote: SocketAddr,
    /// Set on TLS connections: the server name the client asked for (SNI), if any.
    pub tls: Option<TlsConn>,
    /// The peer's IP, for `X-Forwarded-For` and `X-Real-IP`.
    pub client_ip: HeaderValue,
    /// The listener's port, for `X-Forwarded-Port`.
    pub local_port: HeaderValue,
}

/// What a TLS connection was opened for.
#[derive(Debug, Clone)]
pub struct TlsConn {
    pub server_name: Option<Arc<str>>,
}

impl Conn {
    pub(crate) fn new(remote: SocketAddr, local: SocketAddr, tls: Option<TlsConn>) -> Self {
        let client_ip = HeaderValue::try_from(remote.ip().to_string()).expect("an IP address is a valid header value");
        Self { remote, tls, client_ip, local_port: HeaderValue::from(local.port()) }
    }
}

/// Something that answers requests on a listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>, conn: Conn) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// Tells listeners to stop accepting and drain; cloned into each one.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the function that fires it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    async fn fired(&mut self) {
        // An error means the sender is gone: treat it as shutting down too.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`, so that each data-plane
/// thread accepts on its own socket and the kernel spreads connections across them. Port 0
/// is resolved by the first socket and shared by the others.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// How long a client may take to complete a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 and HTTP/2 on `listener` (over TLS with `tls`, negotiating the protocol by
/// ALPN; in plain text, HTTP/2 by prior knowledge) until `shutdown` fires, then stops
/// accepting, lets connections finish their requests for up to `drain`, and returns.
/// Connections and handshakes are counted in `metrics` when given.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: Shutdown,
    drain: Duration,
    metrics: Option<Arc<Metrics>>,
    tls: Option<TlsAcceptor>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slow clients may not hold a connection open by trickling headers.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Every connection task holds a sender; when all are dropped, draining is done.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.fired() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        let (handler, builder, shutdown, open) = (handler.clone(), builder.clone(), shutdown.clone(), open_tx.clone());
        let (metrics, tls) = (metrics.clone(), tls.clone());
        tokio::spawn(async move {
            let _open = (open, metrics.as_deref().map(Metrics::connection_opened));
            let Some(acceptor) = tls else {
                let conn = Conn::new(remote, local, None);
                return serve_io(&builder, shutdown, TokioIo::new(stream), conn, handler).await;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                failed => {
                    tracing::debug!(%remote, ?failed, "TLS handshake failed");
                    if let Some(metrics) = &metrics {
                        metrics.tls_handshake(false);
                    }
                    return;
                }
            };
            if let Some(metrics) = &metrics {
                metrics.tls_handshake(true);
            }
            let server_name = stream.get_ref().1.server_name().map(Arc::from);
            let conn = Conn::new(remote, local, Some(TlsConn { server_name }));
            serve_io(&builder, shutdown, TokioIo::new(stream), conn, handler).await;
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(drain, open_rx.recv()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Serves one connection until it closes. On shutdown it finishes the request in hand and
/// closes (idle keep-alive connections close at once). Upgraded connections (WebSocket) are
/// handed to the proxy and live on outside it.
async fn serve_io<I, H>(
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: Shutdown,
    io: I,
    conn: Conn,
    handler: Arc<H>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Handler,
{
    let remote = conn.remote;
    let service = service_fn(move |request| {
        let (handler, conn) = (handler.clone(), conn.clone());
        async move { Ok::<_, Infallible>(handler.handle(request, conn).await) }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.fired() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %remote, "connection ended with an error");
    }
}
