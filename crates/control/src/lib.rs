//! Sluice's control plane: where objects come from, and how they become the published
//! [`Snapshot`](sluice_route::Snapshot).
//!
//! Objects are kept in a [`Catalog`](sluice_config::Catalog): the [`Publisher`]'s own for
//! manifest files ([`Publisher::publish`]), the watch store's in cluster mode
//! ([`Publisher::publish_catalog`]). Publishing translates only what changed, compiles a
//! snapshot that shares the rest with the previous one, and swaps it in with one atomic store.
//! Compiling happens on a blocking thread, never on the threads serving requests.

mod cluster;
mod files;
mod plugins;
mod publish;
mod status;

pub use cluster::{CUSTOM_HEADERS_LABEL, KubeSource, PLUGIN_LABEL, WatchMetrics, watch_kube};
pub use files::{FileSource, watch_files};
pub use plugins::Plugins;
pub use publish::Publisher;
pub use status::{PublishAddress, StatusOptions, StatusWriter};
