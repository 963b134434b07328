//! The built-in `basic-auth` filter: ingress-nginx's `auth-type: basic`, answering 401 with a
//! challenge to a request without the credentials of a user it knows. With `satisfy: any`, a
//! client the source ranges grant goes on without them.

use sluice_builtins::BasicAuth;
use sluice_builtins::source_ranges::client_ip;
use sluice_sdk::{Action, OnRequest, Request, respond};

sluice_builtins::filter_type!(BasicAuthFilter, BasicAuth);

impl OnRequest for BasicAuthFilter {
    fn on_request(config: &BasicAuth, request: &Request) -> Action {
        let granted = config.or_ranges.as_ref().is_some_and(|ranges| {
            // The gateway's client address: behind `--trusted-proxies`, the one they forwarded for.
            let client = client_ip(&request.client_address()).expect("the gateway gives ip:port");
            ranges.grants(client)
        });
        // Credentials are never logged: a refusal says nothing about why.
        if granted || config.admits(request.header("authorization").as_deref()) {
            Action::Continue
        } else {
            let challenge = config.challenge();
            let headers = [("www-authenticate", challenge.as_str()), ("content-type", "text/plain; charset=utf-8")];
            respond(401, &headers, "authorization required\n")
        }
    }
}

sluice_sdk::filter!(BasicAuthFilter);
