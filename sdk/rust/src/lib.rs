//! Write Sluice filters in Rust.
//!
//! A filter implements [`Filter`] (its configuration) and the phases it needs, [`OnRequest`]
//! and [`OnResponse`], and exports itself with [`filter!`]; build the crate as a `cdylib` for
//! `wasm32-wasip2` and drop the `.wasm` file into the gateway's `--plugins` directory. See
//! `sdk/README.md` for a walk-through.
//!
//! ```ignore
//! use sluice_sdk::{Action, Filter, OnRequest, Request};
//!
//! struct AddTenant;
//!
//! impl Filter for AddTenant {
//!     type Config = String;
//!
//!     fn parse_config(config: &str) -> Result<String, String> {
//!         Ok(config.trim_matches('"').to_owned())
//!     }
//! }
//!
//! impl OnRequest for AddTenant {
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
//!
//! [`filter!`] records which phases the filter implements in the component (a custom section,
//! `sluice:filter/phases`), and the gateway never calls a phase the filter does not have: a
//! filter with only a request phase costs one call per request, not two.

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

/// A filter's configuration. One value of `Config` is parsed per attachment; the phases
/// ([`OnRequest`], [`OnResponse`]) receive it by reference.
pub trait Filter: 'static {
    /// The parsed configuration of one attachment.
    type Config: 'static;

    /// Parses an attachment's configuration (JSON text). An error is shown to the operator
    /// against the Ingress that attached the filter.
    fn parse_config(config: &str) -> Result<Self::Config, String>;
}

/// A filter's request phase: runs before the request goes upstream.
pub trait OnRequest: Filter {
    fn on_request(config: &Self::Config, request: &Request) -> Action;
}

/// A filter's response phase: runs before the response goes back to the client.
pub trait OnResponse: Filter {
    fn on_response(config: &Self::Config, response: &Response);
}

/// An immediate response with `status`, `headers` and a text `body`.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Respond(ImmediateResponse {
        status,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.as_bytes().to_vec(),
    })
}

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

/// What [`filter!`] expands to; not for direct use.
#[doc(hidden)]
pub mod export {
    use super::*;

    /// The phases of filter `F`: an associated item of an inherent impl below exists when `F`
    /// implements the phase's trait; otherwise the one of [`Absent`] is found instead. (A path
    /// prefers inherent items, and an inherent impl whose bounds do not hold does not apply.)
    pub struct Phases<F>(PhantomData<F>);

    /// The phases a filter does not have: never called by the gateway.
    pub trait Absent {
        const REQUEST: bool = false;
        const RESPONSE: bool = false;

        fn on_request(_request: &Request) -> Action {
            Action::Continue
        }

        fn on_response(_response: &Response) {}
    }

    impl<F> Absent for Phases<F> {}

    impl<F: OnRequest> Phases<F> {
        pub const REQUEST: bool = true;

        pub fn on_request(request: &Request) -> Action {
            with_config::<F, _>(|config| F::on_request(config, request))
        }
    }

    impl<F: OnResponse> Phases<F> {
        pub const RESPONSE: bool = true;

        pub fn on_response(response: &Response) {
            with_config::<F, _>(|config| F::on_response(config, response))
        }
    }

    /// The content of the `sluice:filter/phases` section: bit 0 the request phase, bit 1 the
    /// response phase.
    pub const fn phases(request: bool, response: bool) -> [u8; 1] {
        [request as u8 | (response as u8) << 1]
    }

    pub fn validate_config<F: Filter>(config: &str) -> Result<(), String> {
        F::parse_config(config).map(drop)
    }
}

/// Exports `$filter` (a type implementing [`Filter`] and at least one of [`OnRequest`] and
/// [`OnResponse`]) as this component's filter, and records which phases it has.
#[macro_export]
macro_rules! filter {
    ($filter:ty) => {
        struct __SluiceExport;

        const _: () = {
            use $crate::export::{Absent as _, Phases};

            #[unsafe(link_section = "sluice:filter/phases")]
            #[used]
            static PHASES: [u8; 1] = $crate::export::phases(Phases::<$filter>::REQUEST, Phases::<$filter>::RESPONSE);

            impl $crate::bindings::Guest for __SluiceExport {
                fn validate_config(config: String) -> Result<(), String> {
                    $crate::export::validate_config::<$filter>(&config)
                }

                fn on_request(request: &$crate::Request) -> $crate::Action {
                    Phases::<$filter>::on_request(request)
                }

                fn on_response(response: &$crate::Response) {
                    Phases::<$filter>::on_response(response)
                }
            }
        };

        $crate::bindings::export_world!(__SluiceExport with_types_in $crate::bindings);
    };
}
