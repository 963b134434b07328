//! The built-in `auth-url` filter: ingress-nginx's external authentication. Each request
//! first goes, headers only, to the authentication Service, whose answer lets it through
//! (with headers from the answer, and its cookies on the response) or answers the client.

use sluice_builtins::AuthUrl;
use sluice_builtins::auth_url::{Kept, Original, Outcome};
use sluice_builtins::source_ranges::client_ip;
use sluice_sdk::http::{self, OutboundRequest};
use sluice_sdk::{Action, OnRequest, OnResponse, Request, Response, respond, store};

sluice_builtins::filter_type!(AuthUrlFilter, AuthUrl);

/// How long the authentication Service may take to answer, as nginx's default
/// `proxy_read_timeout`. The wait does not count against the filter's deadline.
const TIMEOUT_MS: u32 = 60_000;

impl OnRequest for AuthUrlFilter {
    fn on_request(config: &AuthUrl, request: &Request) -> Action {
        let (method, scheme, host, headers) = (request.method(), request.scheme(), request.host(), request.headers());
        let uri = match request.query() {
            Some(query) => format!("{}?{query}", request.path()),
            None => request.path(),
        };
        // The gateway's client address: behind `--trusted-proxies`, the one they forwarded for.
        let client = client_ip(&request.client_address()).expect("the gateway gives ip:port").to_string();
        let original =
            Original { method: &method, scheme: &scheme, host: &host, uri: &uri, client: &client, headers: &headers };
        let call = OutboundRequest {
            service: config.service.clone(),
            method: config.method.clone(),
            path: config.path.clone(),
            headers: config.request_headers(&original),
            body: Vec::new(),
            timeout_ms: TIMEOUT_MS,
        };
        // With a cache key, a kept answer stands in for the call while it lasts.
        // Answers are kept per host and route (as ingress-nginx keeps them per location).
        let cache = config.cache.as_ref().and_then(|cache| {
            let scope = format!("{host} {} {}{}", request.route().path, config.service, config.path);
            cache.key(&original, &scope).map(|key| (cache, format!("auth {key}")))
        });
        let kept = cache
            .as_ref()
            .and_then(|(_, key)| store::get(key))
            .and_then(|entry| serde_json::from_slice::<Kept>(&entry.value).ok());
        let answer = kept.or_else(|| {
            let answer = http::call(&call).ok().map(|answer| config.kept(answer.status, &answer.headers));
            if let (Some((cache, key)), Some(answer)) = (&cache, &answer)
                && let Some(seconds) = cache.seconds(answer.status)
                && answer.cacheable()
            {
                let value = serde_json::to_vec(answer).expect("an answer serializes");
                // A full store keeps nothing more: every request is checked, as without a cache.
                let _ = store::set(key, &value, None, Some(seconds.saturating_mul(1000)));
            }
            answer
        });
        match config.outcome(answer.as_ref().map(|kept| (kept.status, kept.headers.as_slice())), &original) {
            Outcome::Allow { headers, cookies } => {
                for (name, value) in headers {
                    match value {
                        Some(value) => request.set_header(&name, &value).expect("a header the answer carried"),
                        None => request.remove_header(&name),
                    }
                }
                // The cookies go on the response; header values hold no line breaks.
                match cookies.is_empty() {
                    true => request.skip_response(),
                    false => request.set_state(cookies.join("\n").as_bytes()),
                }
                Action::Continue
            }
            Outcome::Respond { status, headers, body } => {
                request.skip_response();
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                respond(status, &headers, body)
            }
        }
    }
}

impl OnResponse for AuthUrlFilter {
    fn on_response(_: &AuthUrl, response: &Response) {
        let state = response.state().unwrap_or_default();
        for cookie in String::from_utf8_lossy(&state).lines() {
            response.add_header("set-cookie", cookie).expect("a cookie the answer carried");
        }
    }
}

sluice_sdk::filter!(AuthUrlFilter);
