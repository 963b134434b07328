//! The built-in `affinity` filter: cookie session affinity (see `sluice_builtins::affinity`).

use std::time::SystemTime;

use sluice_builtins::affinity::{self, Pending};
use sluice_builtins::{Affinity, AffinityMode};
use sluice_sdk::{Action, OnRequest, OnResponse, Request, Response};

sluice_builtins::filter_type!(AffinityFilter, Affinity);

fn new_key() -> String {
    affinity::key_from(fastrand::u64(..))
}

impl OnRequest for AffinityFilter {
    fn on_request(config: &Affinity, request: &Request) -> Action {
        let endpoints: Vec<String> = request.endpoints().into_iter().map(|e| e.address).collect();
        let addresses: Vec<&str> = endpoints.iter().map(String::as_str).collect();
        let cookies = request.header_values("cookie");
        let cookie = affinity::cookie_value(cookies.iter().map(String::as_str), &config.cookie);
        let decision = config.decide(cookie, &addresses, new_key);
        if let Some(index) = decision.sticky {
            request.choose_endpoint(u32::try_from(index).expect("few endpoints")).expect("a listed endpoint");
        }
        // The common case, a client with a good cookie, ends here: no state, no cookie.
        if !decision.issue && !config.change_on_failure {
            request.skip_response();
            return Action::Continue;
        }
        let rekey = config.change_on_failure && config.mode == AffinityMode::Balanced;
        let pending = Pending {
            sticky: decision.sticky.map(|i| endpoints[i].clone()),
            key: decision.key,
            issue: decision.issue,
            path: affinity::route_cookie_path(&request.route().path).to_owned(),
            secure: request.scheme() == "https",
            same_site_none: config.allows_same_site_none(request.header("user-agent").as_deref()),
            endpoints: if rekey { endpoints } else { Vec::new() },
        };
        request.set_state(&serde_json::to_vec(&pending).expect("serializable"));
        Action::Continue
    }
}

impl OnResponse for AffinityFilter {
    fn on_response(config: &Affinity, response: &Response) {
        let (Some(state), Some(served)) = (response.state(), response.endpoint()) else { return };
        let pending: Pending = serde_json::from_slice(&state).expect("state written by on_request");
        if let Some(value) = config.value_to_issue(&pending, &served, new_key) {
            let cookie = config.set_cookie(&value, &pending, SystemTime::now());
            response.add_header("set-cookie", &cookie).expect("a valid cookie");
        }
    }
}

sluice_sdk::filter!(AffinityFilter);
