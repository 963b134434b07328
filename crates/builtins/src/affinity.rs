//! Cookie session affinity.
//!
//! The cookie never holds an address, and means the same endpoint to every gateway replica
//! without shared state, because it is only ever compared with hashes of the endpoints every
//! replica sees:
//! - `balanced`: the cookie holds a random key; the endpoint is the key's highest-scoring one
//!   by rendezvous hashing over the ready endpoints. Scaling from `c` to `n` endpoints moves
//!   only the keys a new endpoint now wins, about `(n - c) / n` of them; when an endpoint
//!   leaves, only its keys move.
//! - `persistent`: the cookie holds a hash of one endpoint's address; the request goes there
//!   for as long as it is ready, whatever else changes.
//!
//! When the sticky endpoint is gone the request goes elsewhere; in persistent mode the cookie
//! is re-issued for the endpoint that served.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::{Config, check};

/// The `affinity` plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Affinity {
    /// The cookie's name.
    pub cookie: String,
    pub mode: AffinityMode,
    /// The cookie's `Path`; by default the path of the route that matched (`/` for regex
    /// routes and default backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Max-Age`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// `Expires`, in seconds from when the cookie is issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// Leave out `SameSite=None` for clients known to reject such cookies.
    pub conditional_same_site_none: bool,
    /// `Secure` over plain HTTP too when true. A cookie issued over HTTPS is always `Secure`,
    /// as ingress-nginx does even with `session-cookie-secure: "false"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// When the sticky endpoint failed and another served the request, point the cookie there.
    pub change_on_failure: bool,
}

impl Default for Affinity {
    fn default() -> Self {
        Self {
            cookie: "INGRESSCOOKIE".to_owned(),
            mode: AffinityMode::Balanced,
            path: None,
            domain: None,
            max_age: None,
            expires: None,
            same_site: None,
            conditional_same_site_none: false,
            secure: None,
            change_on_failure: false,
        }
    }
}

/// How a session finds its endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityMode {
    /// Consistent hashing of a random key: sessions spread over new endpoints on scale-up.
    #[default]
    Balanced,
    /// The cookie names its endpoint: sessions never move while it is ready.
    Persistent,
}

impl FromStr for AffinityMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "balanced" => Ok(AffinityMode::Balanced),
            "persistent" => Ok(AffinityMode::Persistent),
            _ => Err(format!("{value:?} is not one of balanced, persistent")),
        }
    }
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

impl FromStr for SameSite {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Ok(SameSite::None),
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            _ => Err(format!("{value:?} is not one of None, Lax, Strict")),
        }
    }
}

impl Config for Affinity {
    fn validate(&self) -> Result<(), String> {
        check::cookie_name(&self.cookie).map_err(|e| format!("cookie: {e}"))?;
        if let Some(path) = &self.path {
            check::cookie_path(path).map_err(|e| format!("path: {e}"))?;
        }
        if let Some(domain) = &self.domain {
            check::cookie_domain(domain).map_err(|e| format!("domain: {e}"))?;
        }
        Ok(())
    }
}

/// What the request phase decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    /// The endpoint (index into the ready endpoints) the session sticks to.
    pub sticky: Option<usize>,
    /// The balanced key of the session (kept, or new).
    pub key: Option<String>,
    /// The client has no cookie that this mode honours: the response issues one.
    pub issue: bool,
}

/// What the request phase hands its response phase (as state bytes).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The balanced key; `None` in persistent mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Issue a cookie whatever endpoint serves.
    pub issue: bool,
    /// The sticky endpoint's address, to notice that another one served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<String>,
    /// The ready endpoints, to find a key for the one that served (balanced mode with
    /// change-on-failure only).
    pub endpoints: Vec<String>,
    /// The cookie's path, secure flag and whether it may say `SameSite=None`.
    pub path: String,
    pub secure: bool,
    pub same_site_none: bool,
}

/// Length of keys and endpoint ids: 64 bits in hex.
const ID_LEN: usize = 16;
/// Seeds the endpoint ids (any fixed value: every replica must agree on it).
const ENDPOINT_ID_SEED: u64 = 0x73_6c_75_69_63_65; // "sluice"

impl Affinity {
    /// Finds the session's endpoint among the ready `endpoints` from its `cookie` value.
    /// `new_key` makes a random key for a balanced session that has none.
    pub fn decide(&self, cookie: Option<&str>, endpoints: &[&str], new_key: impl FnOnce() -> String) -> Decision {
        let valid = cookie.filter(|c| c.len() == ID_LEN && c.bytes().all(|b| b.is_ascii_hexdigit()));
        match self.mode {
            AffinityMode::Balanced => {
                let key = valid.map_or_else(new_key, str::to_owned);
                Decision { sticky: key_endpoint(&key, endpoints), key: Some(key), issue: valid.is_none() }
            }
            AffinityMode::Persistent => {
                let sticky = valid.and_then(|id| endpoints.iter().position(|e| endpoint_id(e) == id));
                Decision { sticky, key: None, issue: sticky.is_none() }
            }
        }
    }

    /// The cookie value to issue once `served` has answered, if any. `new_key` makes random
    /// keys while looking for one that leads to `served` (balanced mode, change-on-failure).
    pub fn value_to_issue(
        &self,
        pending: &Pending,
        served: &str,
        mut new_key: impl FnMut() -> String,
    ) -> Option<String> {
        let failed_over = self.change_on_failure && pending.sticky.as_deref().is_some_and(|s| s != served);
        if !pending.issue && !failed_over {
            return None;
        }
        match self.mode {
            AffinityMode::Persistent => Some(endpoint_id(served)),
            AffinityMode::Balanced if !failed_over => pending.key.clone(),
            AffinityMode::Balanced => {
                let endpoints: Vec<&str> = pending.endpoints.iter().map(String::as_str).collect();
                let index = endpoints.iter().position(|e| *e == served)?;
                // Each try wins with probability 1/n.
                (0..32 * endpoints.len()).map(|_| new_key()).find(|key| key_endpoint(key, &endpoints) == Some(index))
            }
        }
    }

    /// The `Set-Cookie` value for `value`, issued at `now`.
    pub fn set_cookie(&self, value: &str, pending: &Pending, now: SystemTime) -> String {
        let mut cookie = format!("{}={value}; Path={}", self.cookie, self.path.as_deref().unwrap_or(&pending.path));
        if let Some(domain) = &self.domain {
            cookie.push_str("; Domain=");
            cookie.push_str(domain);
        }
        if let Some(max_age) = self.max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
        }
        if let Some(expires) = self.expires {
            let at = now + Duration::from_secs(expires.min(u64::from(u32::MAX)));
            cookie.push_str(&format!("; Expires={}", httpdate::fmt_http_date(at)));
        }
        match self.same_site {
            Some(SameSite::None) if pending.same_site_none => cookie.push_str("; SameSite=None"),
            Some(SameSite::None) | None => {}
            Some(SameSite::Lax) => cookie.push_str("; SameSite=Lax"),
            Some(SameSite::Strict) => cookie.push_str("; SameSite=Strict"),
        }
        if pending.secure || self.secure == Some(true) {
            cookie.push_str("; Secure");
        }
        cookie.push_str("; HttpOnly");
        cookie
    }

    /// Whether a client with this `User-Agent` gets `SameSite=None`.
    pub fn allows_same_site_none(&self, user_agent: Option<&str>) -> bool {
        !(self.conditional_same_site_none && user_agent.is_some_and(same_site_none_incompatible))
    }
}

/// A random key in the form cookies carry, from 64 random bits.
pub fn key_from(bits: u64) -> String {
    format!("{bits:016x}")
}

/// The opaque id of an endpoint address in persistent cookies.
pub fn endpoint_id(address: &str) -> String {
    key_from(xxh3_64_with_seed(address.as_bytes(), ENDPOINT_ID_SEED))
}

/// The endpoint a balanced key leads to: the highest rendezvous-hash score.
pub fn key_endpoint(key: &str, endpoints: &[&str]) -> Option<usize> {
    let seed = u64::from_str_radix(key, 16).unwrap_or_else(|_| xxh3_64_with_seed(key.as_bytes(), 0));
    (0..endpoints.len()).max_by_key(|&i| xxh3_64_with_seed(endpoints[i].as_bytes(), seed))
}

/// The value of cookie `name` in `Cookie` header values.
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(n, v)| (n == name).then(|| v.trim_matches('"')))
}

/// The default cookie path for a route described as `Prefix /api`, `Exact /x`, `Regex ...`
/// or `default`: the path for Prefix and Exact, `/` otherwise.
pub fn route_cookie_path(route: &str) -> &str {
    match route.split_once(' ') {
        Some(("Prefix" | "Exact", path)) => path,
        _ => "/",
    }
}

/// Clients that reject or mishandle `SameSite=None` (Chromium's list of known incompatible
/// clients): iOS 12, Safari on macOS 10.14, Chrome 51 to 66, UC Browser before 12.13.2.
pub fn same_site_none_incompatible(user_agent: &str) -> bool {
    let version_after = |marker: &str| -> Vec<u32> {
        user_agent.split(marker).nth(1).map_or_else(Vec::new, |rest| {
            let version = rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap_or_default();
            version.split('.').map_while(|n| n.parse().ok()).collect()
        })
    };
    let ios12 = user_agent.contains("iPhone OS 12_") || user_agent.contains("iPad; CPU OS 12_");
    let macos_safari = user_agent.contains("Macintosh; Intel Mac OS X 10_14")
        && user_agent.contains("Safari/")
        && user_agent.contains("Version/")
        && !user_agent.contains("Chrome/")
        && !user_agent.contains("Chromium/");
    let chrome = version_after("Chrome/").first().is_some_and(|major| (51..=66).contains(major));
    let uc = version_after("UCBrowser/");
    let old_uc = !uc.is_empty() && uc.as_slice() < [12, 13, 2].as_slice();
    ios12 || macos_safari || chrome || old_uc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    #[test]
    fn balanced_keys_move_about_n_minus_c_over_n_on_scale_up() {
        let (before, after) = (addresses(4), addresses(5));
        let before: Vec<&str> = before.iter().map(String::as_str).collect();
        let after: Vec<&str> = after.iter().map(String::as_str).collect();
        let keys: Vec<String> = (0..10_000u64).map(|i| key_from(xxh3_64_with_seed(&i.to_le_bytes(), 7))).collect();
        let moved = keys.iter().filter(|k| key_endpoint(k, &before) != key_endpoint(k, &after)).count();
        // (5 - 4) / 5 = 20%; every key that moved went to the new endpoint.
        assert!((1_700..2_300).contains(&moved), "{moved} of 10000 moved");
        assert!(
            keys.iter()
                .all(|k| key_endpoint(k, &before) == key_endpoint(k, &after) || key_endpoint(k, &after) == Some(4))
        );
        // Spread: each of the five endpoints gets 15-25%.
        let mut counts = [0; 5];
        keys.iter().for_each(|k| counts[key_endpoint(k, &after).unwrap()] += 1);
        assert!(counts.iter().all(|c| (1_500..2_500).contains(c)), "{counts:?}");
    }

    #[test]
    fn decisions() {
        let endpoints = ["10.0.0.1:80", "10.0.0.2:80"];
        let balanced = Affinity::default();
        let fresh = balanced.decide(None, &endpoints, || key_from(42));
        assert!(fresh.issue && fresh.key.as_deref() == Some("000000000000002a") && fresh.sticky.is_some());
        let kept = balanced.decide(Some("000000000000002a"), &endpoints, || unreachable!());
        assert_eq!(kept, Decision { issue: false, ..fresh });
        let junk = balanced.decide(Some("10.0.0.1"), &endpoints, || key_from(1));
        assert!(junk.issue, "values that are not keys are replaced");

        let persistent = Affinity { mode: AffinityMode::Persistent, ..Affinity::default() };
        let id = endpoint_id(endpoints[1]);
        assert!(!id.contains("10.0"));
        assert_eq!(persistent.decide(Some(&id), &endpoints, || unreachable!()).sticky, Some(1));
        let gone = persistent.decide(Some(&id), &endpoints[..1], || unreachable!());
        assert_eq!(gone, Decision { sticky: None, key: None, issue: true });
        let pending = Pending { issue: true, ..Pending::default() };
        assert_eq!(
            persistent.value_to_issue(&pending, endpoints[0], || unreachable!()),
            Some(endpoint_id(endpoints[0]))
        );
    }

    #[test]
    fn change_on_failure_points_the_cookie_at_the_endpoint_that_served() {
        let endpoints = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let config = Affinity { change_on_failure: true, ..Affinity::default() };
        let pending = Pending {
            key: Some(key_from(1)),
            sticky: Some(endpoints[0].into()),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..Pending::default()
        };
        let mut bits = 0;
        let key = config.value_to_issue(&pending, endpoints[2], || {
            bits += 1;
            key_from(xxh3_64_with_seed(&[bits], 3))
        });
        assert_eq!(key_endpoint(&key.unwrap(), &endpoints), Some(2));
        let same = config.value_to_issue(&pending, endpoints[0], || unreachable!());
        assert_eq!(same, None, "served by the sticky endpoint: nothing to change");
        let unchanged = Affinity::default().value_to_issue(&pending, endpoints[2], || unreachable!());
        assert_eq!(unchanged, None);
    }

    #[test]
    fn set_cookie_attributes() {
        let pending = Pending { path: "/app".into(), secure: true, same_site_none: true, ..Pending::default() };
        let plain = Affinity::default().set_cookie("k", &pending, SystemTime::UNIX_EPOCH);
        assert_eq!(plain, "INGRESSCOOKIE=k; Path=/app; Secure; HttpOnly");
        let full = Affinity {
            cookie: "route".into(),
            path: Some("/".into()),
            domain: Some(".example.com".into()),
            max_age: Some(60),
            expires: Some(3600),
            same_site: Some(SameSite::None),
            secure: Some(false),
            ..Affinity::default()
        };
        assert_eq!(
            full.set_cookie("k", &pending, SystemTime::UNIX_EPOCH),
            "route=k; Path=/; Domain=.example.com; Max-Age=60; Expires=Thu, 01 Jan 1970 01:00:00 GMT; SameSite=None; Secure; HttpOnly",
            "secure: false does not take Secure off a cookie issued over HTTPS"
        );
        let plain_http = Pending { path: "/app".into(), same_site_none: true, ..Pending::default() };
        assert!(!full.set_cookie("k", &plain_http, SystemTime::UNIX_EPOCH).contains("Secure"));
        let forced = Affinity { secure: Some(true), ..Affinity::default() };
        assert!(forced.set_cookie("k", &plain_http, SystemTime::UNIX_EPOCH).contains("; Secure"));
        let old_chrome = Pending { same_site_none: false, ..pending };
        assert!(!full.set_cookie("k", &old_chrome, SystemTime::UNIX_EPOCH).contains("SameSite"));
    }

    #[test]
    fn helpers() {
        assert_eq!(cookie_value(["a=1; INGRESSCOOKIE=\"xyz\"", "b=2"], "INGRESSCOOKIE"), Some("xyz"));
        assert_eq!(cookie_value(["b=2"], "INGRESSCOOKIE"), None);
        assert_eq!(route_cookie_path("Prefix /api"), "/api");
        assert_eq!(route_cookie_path("Regex /a(.*)"), "/");
        assert_eq!(route_cookie_path("default"), "/");
        let chrome60 =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.90 Safari/537.36";
        let chrome120 =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let ios12 = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
        let uc = "Mozilla/5.0 (Linux; U; Android 8.0.0) UCBrowser/12.10.8.1172 Mobile Safari/537.36";
        assert!(
            same_site_none_incompatible(chrome60)
                && same_site_none_incompatible(ios12)
                && same_site_none_incompatible(uc)
        );
        assert!(!same_site_none_incompatible(chrome120) && !same_site_none_incompatible("curl/8.5.0"));
        let conditional = Affinity { conditional_same_site_none: true, ..Affinity::default() };
        assert!(!conditional.allows_same_site_none(Some(chrome60)) && conditional.allows_same_site_none(None));
        assert!(Affinity::default().allows_same_site_none(Some(chrome60)));
    }
}
