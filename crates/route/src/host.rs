use std::borrow::Cow;

use foldhash::HashMap;
use sluice_config::HostMatch;

/// Values by host name: exact names, and `*.` wildcards keyed by their parent domain, which
/// match exactly one more label. Exact names win.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<Box<str>, T>,
    wildcard: HashMap<Box<str>, T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        Self { exact: HashMap::default(), wildcard: HashMap::default() }
    }
}

impl<T> HostMap<T> {
    /// The value for a request's host: any case, with or without port and trailing dot.
    pub fn get(&self, host: &str) -> Option<&T> {
        let host = normalize_host(host);
        self.exact.get(host.as_ref()).or_else(|| {
            let (first, parent) = host.split_once('.')?;
            if first.is_empty() { None } else { self.wildcard.get(parent) }
        })
    }

    /// The value for `host`, inserted by `make` if absent. `None` for [`HostMatch::Any`].
    pub fn get_or_insert_with(&mut self, host: &HostMatch, make: impl FnOnce() -> T) -> Option<&mut T> {
        let (map, name) = match host {
            HostMatch::Any => return None,
            HostMatch::Exact(name) => (&mut self.exact, name),
            HostMatch::Wildcard(parent) => (&mut self.wildcard, parent),
        };
        Some(map.entry(name.as_str().into()).or_insert_with(make))
    }

    /// The value stored for `host` itself (no wildcard matching); `None` for [`HostMatch::Any`].
    pub fn get_match(&self, host: &HostMatch) -> Option<&T> {
        match host {
            HostMatch::Any => None,
            HostMatch::Exact(name) => self.exact.get(name.as_str()),
            HostMatch::Wildcard(parent) => self.wildcard.get(parent.as_str()),
        }
    }

    /// Every host with its value.
    pub fn iter(&self) -> impl Iterator<Item = (HostMatch, &T)> {
        let exact = self.exact.iter().map(|(h, v)| (HostMatch::Exact(h.to_string()), v));
        exact.chain(self.wildcard.iter().map(|(h, v)| (HostMatch::Wildcard(h.to_string()), v)))
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact.values().chain(self.wildcard.values())
    }
}

/// `Example.COM.:8080` -> `example.com`; borrows when nothing changes.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
