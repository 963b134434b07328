//! Kubernetes objects in, Sluice's validated routing model out.
//!
//! This crate is pure: it never touches the network, the clock or the file system. Sources (files,
//! the API server) hand it [`Manifest`]s, which a [`Catalog`] keeps between translations:
//! [`Catalog::translate`] turns them into a [`Model`] plus a list of [`ConfigError`]s, translating
//! again only the Ingresses a change touches. [`translate`] does the same for a one-off set of
//! manifests (`sluice check`, tests). An error names the file, the object and the field it is about, and only the
//! broken part is dropped: every other Ingress, rule and path keeps working.

mod backend_tls;
mod builtins;
mod catalog;
mod error;
mod filters;
mod index;
mod manifest;
mod model;
mod resolve;
mod translate;

pub mod annotations;

pub use backend_tls::TLS12_CIPHERS;

pub use catalog::{Catalog, Review, TranslateOptions, translate};
pub use error::{ConfigError, ObjectRef};
pub use filters::{FILTERS, FailurePolicy, FilterSpec, Isolation, parse_filters, valid_plugin_name};
pub use manifest::{BACKEND_TLS_LABEL, BASIC_AUTH_LABEL, Manifest, Object, Parsed, parse_manifests};
pub use model::{
    Alias, BackendKey, BackendProtocol, BackendTlsMaterial, BackendTlsSpec, CanaryRules, DefaultBackend,
    ErrorPagesSpec, HashKey, HashPart, HostMatch, IngressInfo, IngressModel, LoadBalance, Model, NextUpstream,
    PathMatch, PortRef, RetryConditions, RouteSpec, Target, TlsCertificate, TlsProtocol, TlsSpec, UpstreamPolicy,
};
