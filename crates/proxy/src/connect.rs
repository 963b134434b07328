//! TCP connections to backends, within the connect timeout of the route being served
//! (`proxy-connect-timeout`), or the gateway's. One pooled client serves every route, so the
//! route's timeout travels with the request's task rather than in the connector.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

tokio::task_local! {
    static CONNECT_TIMEOUT: Duration;
}

/// Runs `future` (a request through the pooled client) with connections it opens bounded by
/// `timeout`.
pub async fn within<F: Future>(timeout: Duration, future: F) -> F::Output {
    CONNECT_TIMEOUT.scope(timeout, future).await
}

/// [`HttpConnector`] with the connect timeout of the task that asks for the connection.
#[derive(Debug, Clone)]
pub struct Connector {
    inner: HttpConnector,
    /// For connections opened outside [`within`].
    default: Duration,
}

impl Connector {
    pub fn new(mut inner: HttpConnector, default: Duration) -> Self {
        inner.set_connect_timeout(None);
        Self { inner, default }
    }
}

/// A failed connect; a timeout shows as an [`std::io::Error`] of kind `TimedOut` beneath it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Read when the client first polls the connect, which it does on the request's task.
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(self.default);
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out").into()),
            }
        })
    }
}
