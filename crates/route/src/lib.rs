//! The compiled form of the routing model, and request matching against it.
//!
//! [`RouteTable`] answers "which route serves this host and path" with Sluice's precedence:
//! exact hosts before `*.` wildcards before host-less rules; within a host the
//! longest path string wins, Exact before Prefix before regex on equal length, and the oldest
//! Ingress wins what is left (conflicts are resolved when the table is built, not per request).
//! [`Snapshot`] is one immutable, published configuration: the table, the backends and the
//! errors found while building it.

mod backend_tls;
mod canary;
pub mod danger;
mod host;
mod path;
mod snapshot;
mod table;
mod tls;

pub use backend_tls::{BackendTls, BackendTlsCache, RouteTls};
pub use canary::Canary;
pub use host::HostMap;
pub use path::{PathError, normalize_path};
pub use snapshot::{Backend, Endpoint, ErrorPages, Ewma, PluginInfo, Route, RouteName, Snapshot};
pub use table::{AliasError, HostRoutes, InsertError, RegexCache, RouteTable};
pub use tls::{CertificateCache, TlsHost, TlsTable, crypto_provider, load_certificate};
