//! Write Sluice filters in Rust.
//!
//! A filter implements [`Filter`] and exports itself with [`filter!`]; build the crate as a
//! `cdylib` for `wasm32-wasip2` and drop the `.wasm` file into the gateway's `--plugins`
//! directory. See `sdk/README.md` for a walk-through.
//!
//! ```ignore
//! use sluice_sdk::{Action, Filter, Request};
//!
//! struct AddTenant;
//!
//! impl Filter for AddTenant {
//!     type Config = String;
//!
//!     fn parse_config(config: &str) -> Result<String, String> {
//!         Ok(config.trim_matches('"').to_owned())
//!     }
//!
//!     fn on_request(tenant: &String, request: &Request) -> Action {
//!         request.set_header("x-tenant", tenant).unwrap();
//!         Action::Continue
//!     }
//! }
//!
//! sluice_sdk::filter!(AddTenant);
//! ```
//!
//! Configuration arrives as JSON text; parse it in [`Filter::parse_config`] with whatever you
//! like (serde_json, a hand-written parser). The gateway validates each attachment's
//! configuration with it when an Ingress is loaded, and on the request path the parsed value
//! is cached per configuration, so parsing happens once per instance, not once per request.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "sluice_sdk::bindings",
    });
}

pub use bindings::sluice::filter::host::{config, config_id, log};
pub use bindings::sluice::filter::types::{Action, Endpoint, ImmediateResponse, LogLevel, Request, Response, Route};

/// A filter. One value of `Config` is parsed per attachment; the phases receive it by reference.
pub trait Filter: 'static {
    /// The parsed configuration of one attachment.
    type Config: 'static;

    /// Parses an attachment's configuration (JSON text). An error is shown to the operator
    /// against the Ingress that attached the filter.
    fn parse_config(config: &str) -> Result<Self::Config, String>;

    /// Runs before the request goes upstream.
    fn on_request(_config: &Self::Config, _request: &Request) -> Action {
        Action::Continue
    }

    /// Runs before the response goes back to the client.
    fn on_response(_config: &Self::Config, _response: &Response) {}
}

/// An immediate response with `status`, `headers` and a text `body`.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Respond(ImmediateResponse {
        status,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.as_bytes().to_vec(),
    })
}

/// Bridges a [`Filter`] to the exports of the `filter` world. Used by [`filter!`].
#[doc(hidden)]
pub struct Export<F>(PhantomData<F>);

/// Parsed configurations by id. A reused instance sees the same few configurations over and
/// over; a fresh instance parses once and is thrown away.
type ConfigCache = HashMap<u64, Rc<dyn Any>>;

thread_local! {
    static CONFIGS: RefCell<ConfigCache> = RefCell::new(HashMap::new());
}

/// Beyond this many cached configurations the cache starts over, bounding guest memory.
const MAX_CACHED_CONFIGS: usize = 256;

fn with_config<F: Filter, R>(run: impl FnOnce(&F::Config) -> R) -> R {
    let id = config_id();
    let cached = CONFIGS.with_borrow(|cache| cache.get(&id).cloned());
    let parsed = match cached {
        Some(parsed) => parsed,
        None => {
            // The gateway validated this configuration before attaching the filter, so a
            // failure here is a bug in the filter: trap, and the attachment's policy applies.
            let config = F::parse_config(&config()).expect("configuration was validated at load");
            let parsed: Rc<dyn Any> = Rc::new(config);
            CONFIGS.with_borrow_mut(|cache| {
                if cache.len() >= MAX_CACHED_CONFIGS {
                    cache.clear();
                }
                cache.insert(id, parsed.clone());
            });
            parsed
        }
    };
    run(parsed.downcast_ref().expect("one filter type per component"))
}

impl<F: Filter> bindings::Guest for Export<F> {
    fn validate_config(config: String) -> Result<(), String> {
        F::parse_config(&config).map(drop)
    }

    fn on_request(request: &Request) -> Action {
        with_config::<F, _>(|config| F::on_request(config, request))
    }

    fn on_response(response: &Response) {
        with_config::<F, _>(|config| F::on_response(config, response))
    }
}

/// Exports `$filter` (a type implementing [`Filter`]) as this component's filter.
#[macro_export]
macro_rules! filter {
    ($filter:ty) => {
        type __SluiceExport = $crate::Export<$filter>;
        $crate::bindings::export_world!(__SluiceExport with_types_in $crate::bindings);
    };
}
