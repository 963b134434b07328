//! Sluice's control plane: where objects come from, and how they become the published
//! [`Snapshot`](sluice_route::Snapshot).
//!
//! Objects are kept in one [`Catalog`](sluice_config::Catalog), the [`Publisher`]'s
//! ([`SharedCatalog`]): the file source syncs it with every reload ([`Publisher::publish`]), the
//! API server's watchers change it with each event ([`Publisher::publish_catalog`]), and the
//! admission webhook ([`Validator`], [`serve_webhook`]) checks Ingresses against it. Both
//! sources run in the same reload loop (`reload.rs`), which batches their changes. Publishing
//! translates only what changed, compiles a snapshot that shares the rest with the previous
//! one, and swaps it in with one atomic store. Compiling happens on a blocking thread, never on
//! the threads serving requests.

mod cluster;
mod files;
mod plugins;
mod publish;
mod reload;
mod shared;
mod status;
mod webhook;

pub use cluster::{KubeSource, WatchMetrics, watch_kube};
pub use files::{FileSource, watch_files};
pub use plugins::Plugins;
pub use publish::Publisher;
pub use shared::{CUSTOM_HEADERS_LABEL, PLUGIN_LABEL, SharedCatalog};
pub use status::{PublishAddress, StatusOptions, StatusWriter};
pub use webhook::{MAX_REQUEST, Validator, WebhookTls, serve_webhook};
