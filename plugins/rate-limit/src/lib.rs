//! The built-in `rate-limit` filter: ingress-nginx's `limit-rps`, `limit-rpm` and
//! `limit-connections`, counted per client address and per Ingress (as ingress-nginx's zones
//! are) in the gateway process, answering `status` to a client over a limit.

use sluice_builtins::RateLimit;
use sluice_builtins::source_ranges::client_ip;
use sluice_sdk::{Action, OnRequest, Request, limits, respond};

sluice_builtins::filter_type!(RateLimitFilter, RateLimit);

impl OnRequest for RateLimitFilter {
    fn on_request(config: &RateLimit, request: &Request) -> Action {
        // The gateway's client address: behind `--trusted-proxies`, the one they forwarded for.
        let client = client_ip(&request.client_address()).expect("the gateway gives ip:port");
        if config.exempt(client) {
            return Action::Continue;
        }
        let zone = format!("{} {}", request.route().ingress, client.to_canonical());
        let rps =
            config.rps.is_none_or(|rate| limits::take(&format!("rps {zone}"), rate.per_second(), rate.capacity()));
        let rpm =
            config.rpm.is_none_or(|rate| limits::take(&format!("rpm {zone}"), rate.per_second(), rate.capacity()));
        // Held until the response is sent, only by a request the rates let through.
        if rps && rpm && config.connections.is_none_or(|limit| limits::hold(&format!("conn {zone}"), limit)) {
            Action::Continue
        } else {
            respond(config.status, &[("content-type", "text/plain; charset=utf-8")], "too many requests\n")
        }
    }
}

sluice_sdk::filter!(RateLimitFilter);
