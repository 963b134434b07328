//! The built-in `rate-limit` filter: ingress-nginx's `limit-rps`, `limit-rpm` and
//! `limit-connections`, counted per client address and per Ingress (as ingress-nginx's zones
//! are) in the gateway process, answering `status` to a client over a limit.

use sluice_builtins::RateLimit;
use sluice_builtins::source_ranges::client_ip;
use sluice_sdk::limits::{self, Bucket};
use sluice_sdk::{Action, OnRequest, Request, respond};

sluice_builtins::filter_type!(RateLimitFilter, RateLimit);

impl OnRequest for RateLimitFilter {
    fn on_request(config: &RateLimit, request: &Request) -> Action {
        // The gateway's client address: behind `--trusted-proxies`, the one they forwarded for.
        let client = client_ip(&request.client_address()).expect("the gateway gives ip:port");
        if config.exempt(client) {
            return Action::Continue;
        }
        let zone = format!("{} {}", config.zone, client.to_canonical());
        let bucket = |kind: &str, per_second, capacity| Bucket { key: format!("{kind} {zone}"), per_second, capacity };
        let mut buckets = Vec::with_capacity(2);
        buckets.extend(config.rps.map(|rate| bucket("rps", rate.per_second(), rate.capacity())));
        buckets.extend(config.rpm.map(|rate| bucket("rpm", rate.per_second(), rate.capacity())));
        // A request refused by one rate costs nothing in the other, as in nginx; only one the
        // rates let through holds a place, until its response is sent.
        let rates = buckets.is_empty() || limits::take(&buckets);
        if rates && config.connections.is_none_or(|limit| limits::hold(&format!("conn {zone}"), limit)) {
            Action::Continue
        } else {
            respond(config.status, &[("content-type", "text/plain; charset=utf-8")], "too many requests\n")
        }
    }
}

sluice_sdk::filter!(RateLimitFilter);
