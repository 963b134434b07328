//! Sluice's data path.
//!
//! A request is handled against one [`Snapshot`], loaded once when it arrives: match host and
//! path, pick a ready endpoint (power of two choices, least requests), forward over a pooled
//! upstream connection with the bodies streamed both ways, and stream the answer back. Every
//! failure becomes a response in one place ([`error`]); a reload never touches a request that
//! has started.
//!
//! The data plane runs one single-threaded runtime per core, each with its own listening socket
//! (`SO_REUSEPORT`) and upstream connection pool, like nginx's workers: a request and its
//! upstream connection never cross threads. Only the snapshot and the endpoints' load counters
//! are shared.
//!
//! [`Snapshot`]: sluice_route::Snapshot

mod admin;
mod backend_tls;
mod balance;
mod body;
mod connect;
mod error;
mod error_pages;
mod filtered;
mod forward;
mod front;
mod h1;
mod headers;
mod metrics;
mod retry;
mod server;
mod tls;
mod tunnel;
mod upstream;
mod wire;

pub use admin::{Admin, AdminState};
pub use forward::{Proxy, ProxyConfig};
pub use front::ClientLimits;
pub use metrics::Metrics;
pub use server::{Shutdown, bind_reuseport, serve};
pub use sluice_route::danger;
pub use tls::acceptor;
