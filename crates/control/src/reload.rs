//! The control plane's one reload loop, over any [`Source`] of objects: changes are batched
//! until none has come for the debounce (a burst is cut off at ten times that, or at once when
//! the source asks), then applied and published on a blocking thread, never on the async
//! workers. A panic there is reported and the loop goes on with the next change; the last
//! published snapshot keeps serving meanwhile.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use sluice_filter::Snapshot;
use tokio::time::Instant;

use crate::publish::Publisher;

/// Where objects come from, as the reload loop sees it.
pub(crate) trait Source: Send + 'static {
    /// One change the source reports.
    type Change: Send;

    /// What the source is, for logs.
    const NAME: &'static str;

    /// The next change; `None` once the source has ended.
    fn next(&mut self) -> impl Future<Output = Option<Self::Change>> + Send;

    /// Takes in a change of the current batch; returns whether to apply the batch at once.
    fn absorb(&mut self, change: Self::Change) -> bool;

    /// Whether the batch calls for applying it.
    fn due(&self) -> bool {
        true
    }

    /// Brings the catalog and the plugins up to date with the batch (blocking work) and
    /// publishes with `publisher` when anything changed; returns the published snapshot.
    fn apply(&mut self, publisher: &mut Publisher) -> Option<Arc<Snapshot>>;

    /// Called on the loop's task after each publish.
    fn published(&mut self, _snapshot: &Arc<Snapshot>) {}
}

/// Runs the reload loop of `source` until the source ends or the returned task is aborted.
pub(crate) fn spawn<S: Source>(
    mut source: S,
    mut publisher: Publisher,
    debounce: Duration,
) -> tokio::task::JoinHandle<()> {
    let longest = debounce * 10;
    tokio::spawn(async move {
        while let Some(first) = source.next().await {
            let started = Instant::now();
            let mut at_once = source.absorb(first);
            while !at_once && started.elapsed() < longest {
                match tokio::time::timeout(debounce, source.next()).await {
                    Ok(Some(change)) => at_once = source.absorb(change),
                    _ => break,
                }
            }
            if !source.due() {
                continue;
            }
            let applied = tokio::task::spawn_blocking(move || {
                let snapshot = std::panic::catch_unwind(AssertUnwindSafe(|| source.apply(&mut publisher)));
                (source, publisher, snapshot)
            });
            let snapshot;
            (source, publisher, snapshot) = match applied.await {
                Ok(back) => back,
                Err(e) => {
                    tracing::error!(error = %e, "reloading {} failed; reloading stopped", S::NAME);
                    return;
                }
            };
            match snapshot {
                Ok(Some(snapshot)) => source.published(&snapshot),
                Ok(None) => {}
                Err(_) => tracing::error!(
                    "reloading {} panicked; the last published configuration keeps serving until the next change",
                    S::NAME
                ),
            }
        }
    })
}
