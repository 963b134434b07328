//! The built-in `rewrite` filter: ingress-nginx's redirects, `app-root` and `rewrite-target`.

use sluice_builtins::{Rewrite, rewrite};
use sluice_sdk::{Action, OnRequest, Request, respond};

sluice_builtins::filter_type!(RewriteFilter, Rewrite);

impl OnRequest for RewriteFilter {
    fn on_request(config: &Rewrite, request: &Request) -> Action {
        if let Some(redirect) = &config.redirect {
            return respond(redirect.status, &[("location", &redirect.location)], "");
        }
        if let Some(root) = &config.app_root
            && request.path() == "/"
        {
            // The Host header keeps the port the client used.
            let host = request.header("host").unwrap_or_else(|| request.host());
            let location = format!("{}://{host}{root}", request.scheme());
            return respond(302, &[("location", &location)], "");
        }
        if let Some(target) = &config.target
            && rewrite::applies(target, &request.route().path)
        {
            let original = request.query();
            let (path, query) = rewrite::expand(target, &request.captures(), original.as_deref());
            // Checked targets and captures of a routed path always make a valid path.
            request.set_path(&path).expect("a rewritten path is valid");
            if query != original {
                request.set_query(query.as_deref()).expect("a rewritten query is valid");
            }
        }
        if let Some(prefix) = &config.forwarded_prefix {
            request.set_header("x-forwarded-prefix", prefix).expect("checked header value");
        }
        Action::Continue
    }
}

sluice_sdk::filter!(RewriteFilter);
