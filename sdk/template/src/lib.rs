//! Sets a request header on every request of the routes it is attached to, e.g.
//!
//! ```yaml
//! sluice.dev/filters: |
//!   - plugin: add-tenant
//!     config: {header: x-tenant, value: acme}
//! ```
use serde::Deserialize;
use sluice_sdk::{Action, Filter, OnRequest, OnResponse, Request, Response, respond};

/// The attachment's `config`, checked when the Ingress is loaded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    header: String,
    value: String,
}

struct AddTenant;

impl Filter for AddTenant {
    type Config = Config;

    fn parse_config(config: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if config.header.is_empty() {
            return Err("header must not be empty".into());
        }
        Ok(config)
    }
}

impl OnRequest for AddTenant {
    fn on_request(config: &Config, request: &Request) -> Action {
        // A client may not pick its own tenant.
        if request.header(&config.header).is_some() {
            return respond(400, &[("content-type", "text/plain")], "tenant header not allowed\n");
        }
        match request.set_header(&config.header, &config.value) {
            Ok(()) => Action::Continue,
            Err(e) => respond(500, &[], &e),
        }
    }
}

impl OnResponse for AddTenant {
    fn on_response(config: &Config, response: &Response) {
        let _ = response.set_header("x-served-for", &config.value);
    }
}

sluice_sdk::filter!(AddTenant);
