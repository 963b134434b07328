//! The Wasm filter host: the only crate that names wasmtime.
//!
//! A plugin is a WebAssembly component of the `sluice:filter/filter` world (`sdk/wit`). The
//! [`Engine`] compiles each module once per content (and caches the compiled code on disk),
//! links it against the host side of the contract and WASI without files, environment or
//! sockets, and keeps the result as a [`Plugin`]. A component that needs no more WASI than
//! clocks, randomness and stdout/stderr is linked with our own synchronous WASI and called like
//! a function; one that imports more gets wasmtime-wasi's and is called on a fiber. Only the
//! phases a component declares are called. A route's [`Chain`] runs its attached filters for
//! each request: every call has a deadline (epoch interruption) and every instance a memory
//! cap, and a failure applies its attachment's policy: fail closed (500) or open (skip).
//!
//! Instances are reused across requests by default, one request at a time per instance and
//! a few idle ones per worker thread; `isolation: request` gives each request a fresh instance
//! from the pooling allocator. State from the request phase to the response phase is kept by
//! the host ([`Exchange`]), so it works the same in both modes.

mod chain;
mod clock;
mod engine;
mod failure;
mod host;
mod idle;
mod instance;
pub mod outbound;
mod payload;
mod proxy_wasm;
mod shared;
mod wasi;

pub use chain::{Attachment, BodyError, BodyStep, Chain, Exchange, Holds, Immediate};
pub use engine::{Engine, Limits, MAX_MEMORY, Phases, Plugin};
pub use failure::{FailureKind, FilterFailure};
pub use host::RequestContext;
pub use payload::{BoxError, Payload};
pub use proxy_wasm::{MetricKind, PluginMetric, plugin_metrics, tick_failures};

/// The configuration the gateway publishes: routes with their filter chains.
pub type Snapshot = sluice_route::Snapshot<std::sync::Arc<Chain>>;
/// A route with its filter chain.
pub type Route = sluice_route::Route<std::sync::Arc<Chain>>;
