//! Upgraded connections (WebSocket and any HTTP/1.1 `Upgrade`): once the backend answers 101,
//! the client's and the backend's connections are joined byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::balance::ActiveGuard;

/// Copies bytes both ways between a client and a backend that switched protocols, until either
/// side closes. It does not depend on the snapshot: reloads never cut it. `_active` counts the
/// tunnel as a request on its endpoint while it is open.
pub async fn join(downstream: OnUpgrade, upstream: OnUpgrade, _active: Option<ActiveGuard>) {
    match tokio::try_join!(downstream, upstream) {
        Ok((downstream, upstream)) => {
            let (mut downstream, mut upstream) = (TokioIo::new(downstream), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
    }
}
