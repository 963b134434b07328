//! The built-in filters' configurations and logic.
//!
//! The gateway compiles annotations (ours and ingress-nginx's) into configurations of the
//! built-in plugins, which run as WebAssembly components from `plugins/` like any user filter.
//! This crate is what both sides share: the configuration types (the gateway serializes them,
//! the plugins deserialize them), the checks on every value (run when the Ingress is loaded,
//! so a bad value is reported against its annotation), and the plugins' pure logic, tested here
//! on the host.
//!
//! In a chain the built-ins come first, in the order of [`ALL`]: [`SOURCE_RANGES`] (a refused
//! client gets no further), [`RATE_LIMIT`] (what the rest of the chain answers counts too:
//! preflights, failed sign-ins), [`CORS`] (a preflight is answered before anything is rewritten,
//! and before credentials are asked for, which browsers never send with one), [`BASIC_AUTH`],
//! [`AUTH_URL`], [`REWRITE`], [`HEADERS`], [`AFFINITY`]; then the Ingress's own `sluice.dev/filters`.
//! Response phases run in reverse.

pub mod affinity;
pub mod auth_url;
pub mod basic_auth;
pub mod check;
pub mod cors;
pub mod headers;
pub mod rate_limit;
pub mod rewrite;
pub mod source_ranges;

use std::time::Duration;

use serde::de::DeserializeOwned;

pub use affinity::{Affinity, AffinityMode, SameSite};
pub use auth_url::AuthUrl;
pub use basic_auth::BasicAuth;
pub use cors::Cors;
pub use headers::{HeaderOps, Headers};
pub use rate_limit::RateLimit;
pub use rewrite::{Redirect, Rewrite};
pub use source_ranges::SourceRanges;

/// The client address allow and deny list plugin.
pub const SOURCE_RANGES: &str = "source-ranges";
/// The per-client request rate and concurrency limit plugin.
pub const RATE_LIMIT: &str = "rate-limit";
/// The cross-origin resource sharing plugin.
pub const CORS: &str = "cors";
/// The HTTP Basic authentication plugin.
pub const BASIC_AUTH: &str = "basic-auth";
/// The external authentication plugin (a call to an authentication Service).
pub const AUTH_URL: &str = "auth-url";
/// The rewrite and redirect plugin.
pub const REWRITE: &str = "rewrite";
/// The request and response header plugin.
pub const HEADERS: &str = "headers";
/// The cookie session affinity plugin.
pub const AFFINITY: &str = "affinity";
/// Every built-in plugin, in chain order. The gateway's build compiles `plugins/NAME` for each
/// and embeds it; the gateway loads them under these names.
pub const ALL: [&str; 8] = [SOURCE_RANGES, RATE_LIMIT, CORS, BASIC_AUTH, AUTH_URL, REWRITE, HEADERS, AFFINITY];

/// The least deadline of a built-in's calls, whatever `--filter-deadline` says. Checking a
/// password hash is slow by design (bcrypt at cost 12 took 340 ms in the sandbox): a missed deadline
/// would refuse a right password with 500.
pub fn min_deadline(plugin: &str) -> Duration {
    if plugin == BASIC_AUTH { Duration::from_secs(1) } else { Duration::ZERO }
}

/// A built-in plugin's configuration: every value checked after parsing.
pub trait Config: DeserializeOwned {
    /// Checks every value; the error names the field.
    fn validate(&self) -> Result<(), String>;
}

/// Parses and checks a configuration (JSON text): what each built-in's `parse_config` does.
pub fn parse<T: Config>(json: &str) -> Result<T, String> {
    let config: T = serde_json::from_str(json).map_err(|e| e.to_string())?;
    config.validate()?;
    Ok(config)
}

/// Declares a built-in's filter type for the plugin in `plugins/`: `struct $filter`, whose
/// `sluice_sdk::Filter` configuration is `$config`, read with [`parse`]. The plugin, which
/// depends on `sluice_sdk`, implements the phases itself.
#[macro_export]
macro_rules! filter_type {
    ($filter:ident, $config:ty) => {
        struct $filter;

        impl ::sluice_sdk::Filter for $filter {
            type Config = $config;

            fn parse_config(config: &str) -> Result<$config, String> {
                $crate::parse(config)
            }
        }
    };
}
