//! Upgraded connections (WebSocket and any HTTP/1.1 `Upgrade`): once the backend answers 101,
//! the client's and the backend's connections are joined byte for byte.

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::balance::ActiveGuard;
use crate::h1::Connection;

/// The backend's side of a tunnel.
pub enum Backend {
    /// An upgrade through hyper's client (HTTPS backends).
    Hyper(OnUpgrade),
    /// One of our HTTP/1.1 connections, with what the backend sent after its 101.
    H1(Connection),
}

/// Copies bytes both ways between a client and a backend that switched protocols, until either
/// side closes. It does not depend on the snapshot: reloads never cut it. `_active` counts the
/// tunnel as a request on its endpoint while it is open.
pub async fn join(downstream: OnUpgrade, backend: Backend, _active: Option<ActiveGuard>) {
    let downstream = match downstream.await {
        Ok(upgraded) => TokioIo::new(upgraded),
        Err(e) => return tracing::debug!(error = %e, "protocol upgrade failed"),
    };
    match backend {
        Backend::Hyper(upstream) => match upstream.await {
            Ok(upstream) => pipe(downstream, TokioIo::new(upstream), Bytes::new()).await,
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        },
        Backend::H1(conn) => {
            let (io, early) = conn.into_parts();
            pipe(downstream, io, early).await;
        }
    }
}

/// Joins the two sides, the backend's `early` bytes (read with its 101) first.
async fn pipe(
    mut downstream: impl AsyncRead + AsyncWrite + Unpin,
    mut upstream: impl AsyncRead + AsyncWrite + Unpin,
    early: Bytes,
) {
    let result = async {
        downstream.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
    };
    if let Err(e) = result.await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
