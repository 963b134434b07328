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
/// Calls to Services of the Ingress's namespace; the request waits without holding a thread.
pub use bindings::sluice::filter::http;
/// Counting across requests: token buckets and places held while a request runs, shared by
/// every instance and worker thread of the gateway process (each replica counts for itself).
pub use bindings::sluice::filter::limits;
/// A small key-value store with compare-and-swap, shared as [`limits`] is.
pub use bindings::sluice::filter::store;
pub use bindings::sluice::filter::types::{Action, Endpoint, ImmediateResponse, LogLevel, Route};

/// Why a body could not be read ([`Request::body`], [`Response::body`]).
pub use bindings::sluice::filter::body::BodyError;

use bindings::sluice::filter::{body, request, response};

/// Delegates each listed method to the function of the same name in `$interface`.
macro_rules! accessors {
    ($interface:ident: $($(#[$doc:meta])* fn $name:ident($($arg:ident: $type:ty),*) $(-> $out:ty)?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self, $($arg: $type),*) $(-> $out)? {
                $interface::$name($($arg),*)
            }
        )*
    };
}

/// The request in a request phase: what the gateway received, as the filters before this one
/// left it. Every accessor copies only what it returns.
pub struct Request(());

/// The header accessors requests and responses share.
macro_rules! header_accessors {
    ($interface:ident) => {
        accessors! { $interface:
            /// The first value of a header.
            fn header(name: &str) -> Option<String>;
            /// Every value of a header, in order.
            fn header_values(name: &str) -> Vec<String>;
            /// Every header, in order.
            fn headers() -> Vec<(String, String)>;
            /// Replaces every value of a header.
            fn set_header(name: &str, value: &str) -> Result<(), String>;
            /// Adds a value to a header.
            fn add_header(name: &str, value: &str) -> Result<(), String>;
            fn remove_header(name: &str);
        }
    };
}

impl Request {
    header_accessors!(request);

    accessors! { request:
        fn method() -> String;
        fn set_method(method: &str) -> Result<(), String>;
        /// `http` or `https`.
        fn scheme() -> String;
        /// The host the client asked for, lower-case, without port.
        fn host() -> String;
        /// The path as the client sent it (percent-encoded).
        fn path() -> String;
        /// Sets the path the upstream receives; must start with `/`.
        fn set_path(path: &str) -> Result<(), String>;
        /// The query string without `?`, if any.
        fn query() -> Option<String>;
        fn set_query(query: Option<&str>) -> Result<(), String>;
        /// The client's address (`ip:port`): behind trusted proxies, the one they forwarded for.
        fn client_address() -> String;
        fn route() -> Route;
        /// For a regex path: the capture groups of the match, group 0 first.
        fn captures() -> Vec<Option<String>>;
        /// The ready endpoints of the route's backend.
        fn endpoints() -> Vec<Endpoint>;
        /// Sends the request to `endpoints()[index]` instead of letting the balancer choose.
        fn choose_endpoint(index: u32) -> Result<(), String>;
        /// Keeps bytes for this filter's response phase of the same request.
        fn set_state(state: &[u8]);
        /// This filter has nothing to do in its response phase for this request.
        fn skip_response();
    }

    /// The whole request body (up to the route's `proxy-body-size`, at most 1 MiB). The
    /// request waits for the client to send it, without holding a gateway thread; a filter
    /// that never asks leaves the body streaming through untouched. Over the cap it is
    /// [`BodyError::TooLarge`] and the body goes on as it came.
    pub fn body(&self) -> Result<Vec<u8>, BodyError> {
        body::request_body()
    }

    /// Replaces the request body; the upstream gets a Content-Length of its size.
    pub fn set_body(&self, body: &[u8]) {
        body::set_request_body(body)
    }
}

/// The response in a response phase: from the upstream, or an immediate response.
pub struct Response(());

impl Response {
    header_accessors!(response);

    accessors! { response:
        fn status() -> u16;
        fn set_status(status: u16) -> Result<(), String>;
        /// The endpoint (`ip:port`) that served the request; none for an immediate response or
        /// an ExternalName backend.
        fn endpoint() -> Option<String>;
        /// What this filter's request phase kept with [`Request::set_state`].
        fn state() -> Option<Vec<u8>>;
    }

    /// The whole response body, as [`Request::body`].
    pub fn body(&self) -> Result<Vec<u8>, BodyError> {
        body::response_body()
    }

    /// Replaces the response body; the client gets a Content-Length of its size.
    pub fn set_body(&self, body: &[u8]) {
        body::set_response_body(body)
    }
}

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

    /// The request and response of the call in progress.
    pub const REQUEST: Request = Request(());
    pub const RESPONSE: Response = Response(());

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

            impl $crate::bindings::exports::sluice::filter::handler::Guest for __SluiceExport {
                fn validate_config(config: String) -> Result<(), String> {
                    $crate::export::validate_config::<$filter>(&config)
                }

                fn on_request() -> $crate::Action {
                    Phases::<$filter>::on_request(&$crate::export::REQUEST)
                }

                fn on_response() {
                    Phases::<$filter>::on_response(&$crate::export::RESPONSE)
                }
            }
        };

        $crate::bindings::export_world!(__SluiceExport with_types_in $crate::bindings);
    };
}
