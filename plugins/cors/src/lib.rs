//! The built-in `cors` filter: ingress-nginx's `enable-cors`, preflights answered at the gateway.

use sluice_builtins::Cors;
use sluice_builtins::cors::{Answer, PREFLIGHT_CONTENT_TYPE};
use sluice_sdk::{Action, OnRequest, OnResponse, Request, Response, respond};

sluice_builtins::filter_type!(CorsFilter, Cors);

impl OnRequest for CorsFilter {
    fn on_request(config: &Cors, request: &Request) -> Action {
        let origin = request.header("origin");
        let request_method = request.header("access-control-request-method").is_some();
        match config.answer(&request.method(), origin.as_deref(), request_method) {
            Answer::None => request.skip_response(),
            Answer::Preflight(allowed) => {
                let headers = config.headers(allowed);
                let mut headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                headers.push(("content-type", PREFLIGHT_CONTENT_TYPE));
                if allowed != "*" {
                    headers.push(("vary", "Origin"));
                }
                // The answer already carries every header: nothing for the response phase.
                request.skip_response();
                return respond(204, &headers, "");
            }
            // The response phase has no request headers: it gets the origin to send back.
            Answer::Actual(allowed) => request.set_state(allowed.as_bytes()),
        }
        Action::Continue
    }
}

impl OnResponse for CorsFilter {
    fn on_response(config: &Cors, response: &Response) {
        let state = response.state().unwrap_or_default();
        let allowed = String::from_utf8_lossy(&state);
        for (name, value) in config.headers(&allowed) {
            // The client's Origin was a valid header value, and the rest is checked.
            response.set_header(name, &value).expect("checked header");
        }
        if allowed != "*" {
            // The answer depends on the Origin: caches must keep one per origin.
            response.add_header("vary", "Origin").expect("a valid header");
        }
    }
}

sluice_sdk::filter!(CorsFilter);
