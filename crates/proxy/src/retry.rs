//! Whether a failed attempt is tried again on another endpoint: nginx's `proxy_next_upstream`
//! with `proxy_next_upstream_tries` and `proxy_next_upstream_timeout`.

use std::time::Duration;

use http::Method;
use sluice_config::{NextUpstream, RetryConditions};

/// How an attempt ended, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connecting, sending the request or reading the response head failed.
    Error,
    /// Connecting or waiting for the response head took too long.
    Timeout,
    /// The response head was malformed.
    InvalidHeader,
    /// The upstream answered with this status.
    Status(u16),
}

/// What is known about the request when an attempt has failed.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    /// Attempts made so far, the failed one included.
    pub made: u32,
    /// The backend's endpoints: each is tried at most once.
    pub endpoints: usize,
    /// Since the first attempt started.
    pub elapsed: Duration,
    /// The request has a body. It streams upstream as it arrives and is not kept, so it
    /// cannot be sent again.
    pub body: bool,
}

/// The most attempts a request can get: one for a request with a body, otherwise the policy's
/// tries (0: no limit), never more than there are endpoints.
pub fn max_attempts(policy: &NextUpstream, method: &Method, attempts: &Attempts) -> u32 {
    let idempotent = !matches!(method.as_str(), "POST" | "PATCH" | "LOCK");
    if attempts.body || policy.when.is_empty() || !(idempotent || policy.when.contains(RetryConditions::NON_IDEMPOTENT))
    {
        return 1;
    }
    let endpoints = u32::try_from(attempts.endpoints).unwrap_or(u32::MAX).max(1);
    if policy.tries == 0 { endpoints } else { policy.tries.min(endpoints) }
}

/// Whether the request is tried again on another endpoint after `outcome`.
pub fn try_again(policy: &NextUpstream, method: &Method, outcome: Outcome, attempts: &Attempts) -> bool {
    let condition = match outcome {
        Outcome::Error => Some(RetryConditions::ERROR),
        Outcome::Timeout => Some(RetryConditions::TIMEOUT),
        Outcome::InvalidHeader => Some(RetryConditions::INVALID_HEADER),
        Outcome::Status(status) => RetryConditions::status(status),
    };
    condition.is_some_and(|c| policy.when.contains(c))
        && attempts.made < max_attempts(policy, method, attempts)
        && policy.timeout.is_none_or(|limit| attempts.elapsed < limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(made: u32) -> Attempts {
        Attempts { made, endpoints: 5, elapsed: Duration::from_millis(10), body: false }
    }

    fn policy(when: &str, tries: u32) -> NextUpstream {
        NextUpstream { when: when.parse().unwrap(), tries, timeout: None }
    }

    #[test]
    fn the_default_retries_errors_and_timeouts_three_times() {
        let default = NextUpstream::default();
        let get = Method::GET;
        assert!(try_again(&default, &get, Outcome::Error, &attempts(1)));
        assert!(try_again(&default, &get, Outcome::Timeout, &attempts(2)));
        assert!(!try_again(&default, &get, Outcome::Timeout, &attempts(3)), "three tries in all");
        assert!(!try_again(&default, &get, Outcome::Status(503), &attempts(1)), "statuses only when listed");
        assert!(!try_again(&default, &get, Outcome::InvalidHeader, &attempts(1)));
    }

    #[test]
    fn statuses_when_listed() {
        let p = policy("http_503 http_429", 0);
        assert!(try_again(&p, &Method::GET, Outcome::Status(503), &attempts(4)), "0 tries: every endpoint");
        assert!(!try_again(&p, &Method::GET, Outcome::Status(503), &attempts(5)), "but each only once");
        assert!(try_again(&p, &Method::GET, Outcome::Status(429), &attempts(1)));
        assert!(!try_again(&p, &Method::GET, Outcome::Status(500), &attempts(1)));
        assert!(!try_again(&p, &Method::GET, Outcome::Error, &attempts(1)));
        assert!(!try_again(&policy("off", 0), &Method::GET, Outcome::Error, &attempts(1)));
    }

    #[test]
    fn never_a_body_and_not_post_unless_asked() {
        let with_body = Attempts { body: true, ..attempts(1) };
        let all = policy("error http_502 non_idempotent", 3);
        assert!(!try_again(&all, &Method::PUT, Outcome::Error, &with_body), "the body is gone");
        assert_eq!(max_attempts(&all, &Method::PUT, &with_body), 1);
        let p = policy("error", 3);
        assert!(!try_again(&p, &Method::POST, Outcome::Error, &attempts(1)));
        assert!(!try_again(&p, &Method::PATCH, Outcome::Error, &attempts(1)));
        assert!(try_again(&all, &Method::POST, Outcome::Error, &attempts(1)));
        assert!(try_again(&p, &Method::DELETE, Outcome::Error, &attempts(1)));
    }

    #[test]
    fn stops_after_the_time_limit() {
        let p = NextUpstream { timeout: Some(Duration::from_secs(2)), ..policy("error", 0) };
        assert!(try_again(&p, &Method::GET, Outcome::Error, &attempts(1)));
        let late = Attempts { elapsed: Duration::from_secs(2), ..attempts(1) };
        assert!(!try_again(&p, &Method::GET, Outcome::Error, &late));
    }

    #[test]
    fn conditions_parse_as_nginx_writes_them() {
        assert_eq!("off".parse::<RetryConditions>(), Ok(RetryConditions::default()));
        let set: RetryConditions = "error timeout http_504 non_idempotent".parse().unwrap();
        assert_eq!(set.names(), ["error", "timeout", "non_idempotent", "http_504"]);
        for bad in ["", "error off", "http_418", "timeouts"] {
            assert!(bad.parse::<RetryConditions>().is_err(), "{bad:?} accepted");
        }
    }
}
