//! Limiting each client's requests, as ingress-nginx's `limit-rps`, `limit-rpm` and
//! `limit-connections` do (nginx's `limit_req ... nodelay` and `limit_conn`, keyed by the
//! client address).
//!
//! `limit_req zone=... burst=B nodelay` admits B + 1 requests at once (the first, and B in
//! excess of the rate), then `limit` a second (a minute for `limit-rpm`) as the excess drains:
//! a token bucket holding B + 1 tokens ([`Rate::capacity`]), refilled at [`Rate::per_second`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::source_ranges::networks;

/// The status of a refused request unless `--limit-status` says otherwise: ingress-nginx's
/// `limit-req-status-code` and `limit-conn-status-code`.
pub const DEFAULT_STATUS: u16 = 503;
/// ingress-nginx's default `limit-burst-multiplier`.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// The `rate-limit` plugin's configuration; every limit is per client address. A client in
/// `allow` is never limited; any other gets `status` when one of the limits refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<Rate<1>>,
    /// Requests a minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Rate<60>>,
    /// Requests in flight at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty", with = "networks")]
    pub allow: Vec<IpNet>,
    pub status: u16,
    /// What a client's requests count against together, with its address: the Ingress
    /// (`namespace/name`), as ingress-nginx keeps a zone per Ingress.
    pub zone: String,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { rps: None, rpm: None, connections: None, allow: Vec::new(), status: DEFAULT_STATUS, zone: String::new() }
    }
}

/// `limit` requests each `PERIOD` seconds, with `burst` more admitted at once (nginx's
/// `burst`; none by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate<const PERIOD: u32> {
    pub limit: u32,
    #[serde(default)]
    pub burst: u32,
}

impl<const PERIOD: u32> Rate<PERIOD> {
    /// How many tokens the bucket gains a second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.limit) / f64::from(PERIOD)
    }

    /// How many tokens the bucket holds: the first request and `burst` more.
    pub fn capacity(&self) -> u32 {
        self.burst.saturating_add(1)
    }
}

impl Config for RateLimit {
    fn validate(&self) -> Result<(), String> {
        if self.rps.is_none() && self.rpm.is_none() && self.connections.is_none() {
            return Err("none of rps, rpm and connections is set".to_owned());
        }
        let limits =
            [("rps", self.rps.map(|r| r.limit)), ("rpm", self.rpm.map(|r| r.limit)), ("connections", self.connections)];
        if let Some((field, _)) = limits.iter().find(|(_, limit)| *limit == Some(0)) {
            return Err(format!("{field}: the limit is 0"));
        }
        if !(400..=599).contains(&self.status) {
            return Err(format!("status: {} is not a status from 400 to 599", self.status));
        }
        Ok(())
    }
}

impl RateLimit {
    /// Whether `client` is exempt from every limit.
    pub fn exempt(&self, client: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as `::ffff:a.b.c.d`.
        let client = client.to_canonical();
        self.allow.iter().any(|net| net.contains(&client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source_ranges::parse_list;

    #[test]
    fn buckets_admit_the_burst_then_the_rate() {
        let rps = Rate::<1> { limit: 10, burst: 50 };
        assert_eq!((rps.per_second(), rps.capacity()), (10.0, 51));
        let rpm = Rate::<60> { limit: 30, burst: 0 };
        assert_eq!((rpm.per_second(), rpm.capacity()), (0.5, 1));
        assert_eq!(Rate::<1> { limit: 1, burst: u32::MAX }.capacity(), u32::MAX);
    }

    #[test]
    fn the_allow_list_exempts() {
        let limit = RateLimit {
            rps: Some(Rate { limit: 1, burst: 5 }),
            allow: parse_list("10.0.0.0/8, ::1").unwrap(),
            ..RateLimit::default()
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(limit.exempt(ip("10.1.2.3")) && limit.exempt(ip("::1")));
        assert!(limit.exempt(ip("::ffff:10.1.2.3")), "an IPv4-mapped address is its IPv4 address");
        assert!(!limit.exempt(ip("192.0.2.1")) && !RateLimit::default().exempt(ip("10.1.2.3")));
    }

    #[test]
    fn values_are_checked() {
        let parsed: RateLimit =
            crate::parse(r#"{"rps":{"limit":5,"burst":25},"rpm":{"limit":100},"allow":["10.0.0.0/8"]}"#).unwrap();
        assert_eq!(parsed.rps, Some(Rate { limit: 5, burst: 25 }));
        assert_eq!((parsed.rpm, parsed.status), (Some(Rate { limit: 100, burst: 0 }), DEFAULT_STATUS));
        assert_eq!(crate::parse::<RateLimit>(&serde_json::to_string(&parsed).unwrap()).unwrap(), parsed);
        let with = |json: &str| crate::parse::<RateLimit>(json).map(|_| ());
        assert_eq!(with(r#"{"connections":3,"status":429}"#), Ok(()));
        assert!(with("{}").unwrap_err().contains("none of"));
        assert!(with(r#"{"rpm":{"limit":0}}"#).unwrap_err().starts_with("rpm:"));
        assert!(with(r#"{"rps":{"limit":1},"connections":0}"#).unwrap_err().starts_with("connections:"));
        for status in [200, 399, 600] {
            assert!(with(&format!(r#"{{"rps":{{"limit":1}},"status":{status}}}"#)).unwrap_err().starts_with("status:"));
        }
        assert!(with(r#"{"rps":{"limit":1,"bursts":2}}"#).is_err());
        assert!(with(r#"{"rps":{"limit":-1}}"#).is_err());
        assert!(with(r#"{"rps":{"limit":1},"allow":["10.0.0.0/40"]}"#).is_err());
    }
}
