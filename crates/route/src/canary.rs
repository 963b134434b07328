//! Canary routes: a second Ingress for the same host and path takes some of its requests, as
//! ingress-nginx's `canary-*` annotations say. The choice is made per request from the request
//! alone (and a random draw for weights), so replicas need no shared state.

use std::sync::Arc;

use regex::Regex;
use sluice_builtins::affinity::cookie_value;
use sluice_config::CanaryRules;

use crate::snapshot::Route;

/// The canary of a route: its rules and the route requests take when chosen.
#[derive(Debug)]
pub struct Canary<F = ()> {
    pub rules: CanaryRules,
    /// `canary-by-header-pattern`, compiled.
    pattern: Option<Regex>,
    /// The main route with the canary's backend (and the canary Ingress's name in logs).
    pub route: Arc<Route<F>>,
}

impl<F> Canary<F> {
    /// `rules` with its pattern compiled; the error is the regex's.
    pub fn new(rules: CanaryRules, route: Arc<Route<F>>) -> Result<Self, String> {
        let pattern = rules.header_pattern.as_deref().map(Regex::new).transpose().map_err(|e| e.to_string())?;
        Ok(Self { rules, pattern, route })
    }

    /// Whether a request goes to the canary. `header` is the value of the `canary-by-header`
    /// header (`None` when absent or not text), `cookies` the `Cookie` header values, `draw` a
    /// uniform random number in `1..=n`. Precedence: header, then cookie, then weight; a value
    /// other than those that decide falls through to the next rule.
    pub fn chooses<'a>(
        &self,
        header: Option<&str>,
        cookies: impl IntoIterator<Item = &'a str>,
        draw: impl FnOnce(u32) -> u32,
    ) -> bool {
        let rules = &self.rules;
        if let Some(value) = header.filter(|_| rules.header.is_some()) {
            let decided = match (&rules.header_value, &self.pattern) {
                (Some(wanted), _) => (value == wanted.as_str()).then_some(true),
                (None, Some(pattern)) => pattern.is_match(value).then_some(true),
                (None, None) if value == "always" => Some(true),
                (None, None) if value == "never" => Some(false),
                (None, None) => None,
            };
            if let Some(decided) = decided {
                return decided;
            }
        }
        if let Some(name) = &rules.cookie {
            match cookie_value(cookies, name) {
                Some("always") => return true,
                Some("never") => return false,
                _ => {}
            }
        }
        rules.weight > 0 && draw(rules.weight_total) <= rules.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(rules: CanaryRules) -> Canary {
        use sluice_config::{BackendKey, HostMatch, IngressInfo, ObjectRef, PortRef, Target};
        let ingress = Arc::new(IngressInfo {
            id: ObjectRef::new("Ingress", "default", "canary"),
            origin: Arc::from("test"),
            created: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            preserve_trailing_slash: false,
            backend_protocol: Default::default(),
            max_body_size: None,
            filters: Ok(Vec::new()),
            canary: None,
            upstream: Default::default(),
            load_balance: Default::default(),
            hash_by: None,
            hash_subset: None,
            access_log: true,
            unavailable_backend: None,
            backend_tls: None,
            error_pages: None,
        });
        let key = BackendKey {
            namespace: "default".into(),
            service: "v2".into(),
            port: PortRef::Number(80),
            cluster_ip: false,
        };
        let target = Arc::new(Target::Pods { endpoints: Vec::new(), unready: Vec::new() });
        let route = Arc::new(Route {
            name: crate::RouteName::new(&ingress, &HostMatch::Any, None),
            ingress,
            host: HostMatch::Any,
            path: None,
            backend: Arc::new(crate::Backend::new(key, target)),
            filters: (),
            canary: None,
            redirect_host: None,
            backend_tls: None,
            error_pages: None,
        });
        Canary::new(rules, route).unwrap()
    }

    fn rules() -> CanaryRules {
        CanaryRules {
            header: Some("x-canary".into()),
            header_value: None,
            header_pattern: None,
            cookie: Some("canary".into()),
            weight: 0,
            weight_total: 100,
        }
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary(CanaryRules { weight: 100, ..rules() });
        let never = |_: u32| -> u32 { unreachable!("no draw when a header or cookie decides") };
        assert!(c.chooses(Some("always"), [], never));
        assert!(!c.chooses(Some("never"), ["canary=always"], never), "the header wins over the cookie");
        assert!(!c.chooses(None, ["a=b; canary=never"], never), "the cookie wins over the weight");
        assert!(c.chooses(Some("other"), ["canary=maybe"], |_| 100), "other values fall through to the weight");
        let c = canary(rules());
        assert!(!c.chooses(Some("sometimes"), ["canary=whatever"], never), "weight 0: never, without a draw");
    }

    #[test]
    fn header_value_and_pattern() {
        let c = canary(CanaryRules { header_value: Some("v2".into()), header_pattern: Some("^x".into()), ..rules() });
        assert!(c.chooses(Some("v2"), [], |_| 1));
        assert!(!c.chooses(Some("always"), [], |_| 1), "with a value, always means nothing");
        assert!(c.chooses(Some("always"), ["canary=always"], |_| 1), "a mismatch falls through");
        let c = canary(CanaryRules { header_pattern: Some("^(beta|alpha)-".into()), ..rules() });
        assert!(c.chooses(Some("beta-7"), [], |_| 1));
        assert!(!c.chooses(Some("gamma"), [], |_| 1));
        assert!(c.chooses(Some("never"), ["canary=always"], |_| 1), "with a pattern, never means nothing");
    }

    #[test]
    fn weight_is_a_share_of_the_total() {
        let c = canary(CanaryRules { weight: 30, weight_total: 1000, ..rules() });
        let chosen = (1..=1000).filter(|&n| c.chooses(None, [], |total| (n - 1) % total + 1)).count();
        assert_eq!(chosen, 30);
    }
}
