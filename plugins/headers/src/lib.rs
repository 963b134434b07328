//! The built-in `headers` filter: sets, adds and removes request and response headers.

use sluice_builtins::{HeaderOps, Headers};
use sluice_sdk::{Action, OnRequest, OnResponse, Request, Response};

sluice_builtins::filter_type!(HeadersFilter, Headers);

/// The header calls requests and responses share.
trait Target {
    fn remove(&self, name: &str);
    fn set(&self, name: &str, value: &str) -> Result<(), String>;
    fn add(&self, name: &str, value: &str) -> Result<(), String>;
}

/// Requests and responses have the same header calls, as distinct generated types.
macro_rules! header_target {
    ($($type:ty),*) => {$(
        impl Target for $type {
            fn remove(&self, name: &str) {
                self.remove_header(name);
            }
            fn set(&self, name: &str, value: &str) -> Result<(), String> {
                self.set_header(name, value)
            }
            fn add(&self, name: &str, value: &str) -> Result<(), String> {
                self.add_header(name, value)
            }
        }
    )*};
}

header_target!(Request, Response);

fn apply(ops: &HeaderOps, target: &impl Target) {
    for name in &ops.remove {
        target.remove(name);
    }
    for (name, value) in &ops.set {
        target.set(name, value).expect("checked header");
    }
    for (name, value) in &ops.add {
        target.add(name, value).expect("checked header");
    }
}

impl OnRequest for HeadersFilter {
    fn on_request(config: &Headers, request: &Request) -> Action {
        apply(&config.request, request);
        if config.response.is_empty() {
            request.skip_response();
        }
        Action::Continue
    }
}

impl OnResponse for HeadersFilter {
    fn on_response(config: &Headers, response: &Response) {
        apply(&config.response, response);
    }
}

sluice_sdk::filter!(HeadersFilter);
