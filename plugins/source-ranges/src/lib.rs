//! The built-in `source-ranges` filter: ingress-nginx's allow and deny lists of client
//! addresses, answering 403 to a client they refuse.

use sluice_builtins::SourceRanges;
use sluice_builtins::source_ranges::client_ip;
use sluice_sdk::{Action, OnRequest, Request, respond};

sluice_builtins::filter_type!(SourceRangesFilter, SourceRanges);

impl OnRequest for SourceRangesFilter {
    fn on_request(config: &SourceRanges, request: &Request) -> Action {
        // The gateway's client address: behind `--trusted-proxies`, the one they forwarded for.
        let client = client_ip(&request.client_address()).expect("the gateway gives ip:port");
        if config.admits(client) {
            Action::Continue
        } else {
            respond(403, &[("content-type", "text/plain; charset=utf-8")], "forbidden\n")
        }
    }
}

sluice_sdk::filter!(SourceRangesFilter);
