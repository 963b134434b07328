//! Accept loops shared by the proxy and admin listeners, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::body::{ResponseBody, full};
use crate::front::{self, ClientLimits, Reject};
use crate::metrics::Metrics;
use crate::wire::{Guard, Verdicts};

/// An accepted connection: its peer, whether it is TLS, and the forwarding header values derived
/// from its two ends, computed once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct Conn {
    pub remote: SocketAddr,
    /// The gateway's own address the client connected to.
    pub local: SocketAddr,
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
        Self { remote, local, tls, client_ip, local_port: HeaderValue::from(local.port()) }
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
/// Connections and handshakes are counted in `metrics` when given. HTTP/1.1 request heads
/// pass the front door's checks ([`front`]) before hyper reads them; `limits` bound what
/// clients may send and hold.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: Shutdown,
    drain: Duration,
    metrics: Option<Arc<Metrics>>,
    tls: Option<TlsAcceptor>,
    limits: Arc<ClientLimits>,
) {
    let mut http1 = http1::Builder::new();
    // Slow clients may not hold a connection open by trickling headers, nor idle forever
    // between requests: hyper's timer runs from the end of one request to the next head.
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_headers(limits.max_headers);
    // HTTP/2: streams per connection, and a bound on streams reset before they are served
    // (rapid reset, CVE-2023-44487) or reset by us for errors, then GOAWAY.
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        .max_header_list_size(u32::try_from(limits.header_section).unwrap_or(u32::MAX));
    let builders = Arc::new(Builders { http1, http2 });
    // The per-worker connection cap: a connection holds a permit while open.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "connection limit reached; closing a new connection");
            if let Some(metrics) = &metrics {
                metrics.connection_refused();
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        let (handler, builders, shutdown, open) =
            (handler.clone(), builders.clone(), shutdown.clone(), open_tx.clone());
        let (metrics, tls, limits) = (metrics.clone(), tls.clone(), limits.clone());
        tokio::spawn(async move {
            let _open = (open, permit, metrics.as_deref().map(Metrics::connection_opened));
            let verdicts = Arc::new(Verdicts::default());
            let Some(acceptor) = tls else {
                let conn = Conn::new(remote, local, None);
                let stream = Guard::new(stream, limits, verdicts.clone(), false);
                return serve_io(&builders, shutdown, stream, None, conn, handler, verdicts).await;
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
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let conn = Conn::new(remote, local, Some(TlsConn { server_name }));
            let stream = Guard::new(stream, limits, verdicts.clone(), http2);
            let http2 = http2.then_some(true);
            serve_io(&builders, shutdown, stream, http2, conn, handler, verdicts).await;
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(drain, open_rx.recv()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Connection builders for each protocol: the protocol is known before hyper starts (see
/// `Guard::sniff`).
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// Serves one connection until it closes. Its protocol is `http2`, or else sniffed within
/// the header timeout. On shutdown it finishes the request in hand and
/// closes (idle keep-alive connections close at once). Upgraded connections (WebSocket) are
/// handed to the proxy and live on outside it. Requests the connection's guard refused are
/// answered here with the refusal (see [`crate::wire`]).
async fn serve_io<S, H>(
    builders: &Builders,
    shutdown: Shutdown,
    mut io: Guard<S>,
    http2: Option<bool>,
    conn: Conn,
    handler: Arc<H>,
    verdicts: Arc<Verdicts>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let remote = conn.remote;
    let http2 = match http2 {
        Some(http2) => http2,
        None => match tokio::time::timeout(io.header_timeout(), io.sniff()).await {
            Ok(Ok(http2)) => http2,
            _ => return,
        },
    };

    let service = service_fn(move |mut request: Request<Incoming>| {
        let (handler, conn, verdicts) = (handler.clone(), conn.clone(), verdicts.clone());
        async move {
            let number = verdicts.next_request();
            if let Some(reject) = verdicts.refused(number) {
                return Ok::<_, Infallible>(refusal(reject));
            }
            front::normalize(request.headers_mut());
            let http1 = request.version() < Version::HTTP_2;
            let unread_body = !request.body().is_end_stream();
            let upgrade = http1 && request.headers().contains_key(header::UPGRADE);
            let mut response = handler.handle(request, conn).await;
            // The body was malformed: whatever became of the request, that is the answer.
            if let Some(reject) = verdicts.refused(number) {
                response = refusal(reject);
            }
            // An answer of our own leaves the request body unread, and the connection cannot
            // be reused; a refused upgrade leaves bytes of another protocol possibly on the
            // way. Either way the client must know the connection closes.
            let own = matches!(response.body(), Either::Right(_));
            let refused_upgrade = upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS;
            if http1 && ((unread_body && own) || refused_upgrade) {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
    });
    let io = TokioIo::new(io);
    let result = if http2 {
        let connection = builders.http2.serve_connection(io, service);
        until_shutdown(shutdown, connection, |c| c.graceful_shutdown()).await
    } else {
        let connection = builders.http1.serve_connection(io, service).with_upgrades();
        until_shutdown(shutdown, connection, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %remote, "connection ended with an error");
    }
}

/// Drives `connection` to its end; on shutdown, lets it finish gracefully.
async fn until_shutdown<C>(
    mut shutdown: Shutdown,
    connection: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.fired() => {
            graceful(connection.as_mut());
            connection.await
        }
    }
}

/// The answer to a request the front door refused; the connection closes after it.
fn refusal(reject: Reject) -> Response<ResponseBody> {
    let mut response = Response::new(full(format!("bad request: {}\n", reject.reason)));
    *response.status_mut() = reject.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
