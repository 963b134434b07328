use std::collections::hash_map::Entry;
use std::sync::Arc;

use foldhash::HashMap;
use regex::Regex;
use sluice_config::{HostMatch, PathMatch};

use crate::host::HostMap;

/// Compiled regexes by pattern, handed from one table to the next so that a reload does not
/// compile every regex path again. Shared, never cloned: a cloned `Regex` starts a new pool of
/// match caches, and building a cache costs more than the match.
pub type RegexCache = HashMap<String, Arc<Regex>>;

/// Hosts to their routes. `T` is what a match yields (the proxy uses `Arc<Route>`).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    hosts: HostMap<HostRoutes<T>>,
    any: Option<HostRoutes<T>>,
    default: Option<T>,
}

/// The routes of one host, arranged so that a lookup costs a few hash probes.
#[derive(Debug, Clone)]
pub struct HostRoutes<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the path without trailing slash.
    prefix: HashMap<Box<str>, T>,
    /// Prefixes written with a trailing slash, keyed without it: they take the paths below
    /// them before `prefix` does (ingress-nginx's `location /foo/`).
    slashed: HashMap<Box<str>, T>,
    /// Longest pattern first; on equal length, in insertion (age) order.
    regex: Vec<RegexRoute<T>>,
    /// The Ingress default backend for requests to this host that no path matches.
    fallback: Option<T>,
}

#[derive(Debug, Clone)]
struct RegexRoute<T> {
    regex: Arc<Regex>,
    pattern_len: usize,
    value: T,
}

/// Why [`RouteTable::alias`] did not take an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasError {
    /// The alias has routes of its own (or is an alias already).
    Taken,
    /// The host it names has no routes.
    NoTarget,
}

/// Why [`RouteTable::insert`] did not take a route.
#[derive(Debug)]
pub enum InsertError<'a, T> {
    /// The same host and path is routed already; the older route is returned.
    Taken(&'a T),
    InvalidRegex(String),
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { hosts: HostMap::default(), any: None, default: None }
    }
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            prefix: HashMap::default(),
            slashed: HashMap::default(),
            regex: Vec::new(),
            fallback: None,
        }
    }
}

impl<T> RouteTable<T> {
    fn host_mut(&mut self, host: &HostMatch) -> &mut HostRoutes<T> {
        match self.hosts.get_or_insert_with(host, HostRoutes::default) {
            Some(routes) => routes,
            None => self.any.get_or_insert_with(HostRoutes::default),
        }
    }

    /// Adds a route. Insert oldest first: the first route for a host and path keeps it.
    /// Regexes found in `compiled` are reused.
    pub fn insert(
        &mut self,
        host: &HostMatch,
        path: &PathMatch,
        value: T,
        compiled: &RegexCache,
    ) -> Result<(), InsertError<'_, T>> {
        let routes = self.host_mut(host);
        let (map, key) = match path {
            PathMatch::Exact(p) => (&mut routes.exact, p.as_str()),
            PathMatch::Prefix(p) if p.len() > 1 && p.ends_with('/') => (&mut routes.slashed, p.trim_end_matches('/')),
            PathMatch::Prefix(p) => (&mut routes.prefix, p.as_str()),
            PathMatch::Regex(pattern) => {
                if let Some(i) = routes.regex.iter().position(|r| r.regex.as_str() == anchored(pattern)) {
                    return Err(InsertError::Taken(&routes.regex[i].value));
                }
                let regex = match compiled.get(pattern) {
                    Some(regex) => regex.clone(),
                    None => Regex::new(&anchored(pattern))
                        .map(Arc::new)
                        .map_err(|e| InsertError::InvalidRegex(e.to_string()))?,
                };
                let at = routes.regex.partition_point(|r| r.pattern_len >= pattern.len());
                routes.regex.insert(at, RegexRoute { regex, pattern_len: pattern.len(), value });
                return Ok(());
            }
        };
        match map.entry(key.into()) {
            Entry::Occupied(taken) => Err(InsertError::Taken(taken.into_mut())),
            Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    /// Sets what serves requests for `host` that no path matches, unless set already.
    pub fn set_fallback(&mut self, host: &HostMatch, value: T) {
        self.host_mut(host).fallback.get_or_insert(value);
    }

    /// Sets what serves requests that no host matches, unless set already.
    pub fn set_default(&mut self, value: T) {
        self.default.get_or_insert(value);
    }

    /// Whether `host` itself has routes (no wildcard matching).
    pub fn has_host(&self, host: &HostMatch) -> bool {
        self.hosts.get_match(host).is_some()
    }

    /// Serves `alias` as `target` is served now; call once every route is in.
    pub fn alias(&mut self, alias: &HostMatch, target: &HostMatch) -> Result<(), AliasError>
    where
        T: Clone,
    {
        if *alias == HostMatch::Any || self.hosts.get_match(alias).is_some() {
            return Err(AliasError::Taken);
        }
        let routes = self.hosts.get_match(target).ok_or(AliasError::NoTarget)?.clone();
        self.hosts.get_or_insert_with(alias, || routes);
        Ok(())
    }

    /// The route for a request. `host` is the Host header or authority (any case, port and
    /// trailing dot allowed); `path` must be normalized (see [`crate::normalize_path`]).
    pub fn route(&self, host: &str, path: &str) -> Option<&T> {
        match self.hosts.get(host).or(self.any.as_ref()) {
            Some(routes) => routes.route(path).or(routes.fallback.as_ref()).or(self.default.as_ref()),
            None => self.default.as_ref(),
        }
    }

    /// Every host with its routes, for reporting.
    pub fn hosts(&self) -> impl Iterator<Item = (HostMatch, &HostRoutes<T>)> {
        self.hosts.iter().chain(self.any.iter().map(|r| (HostMatch::Any, r)))
    }

    /// The regexes this table uses, for building the next one.
    pub fn regex_cache(&self) -> RegexCache {
        let hosts = self.hosts.values().chain(self.any.iter());
        let routes = hosts.flat_map(|h| h.regex.iter());
        routes.map(|r| (unanchored(r.regex.as_str()).to_owned(), r.regex.clone())).collect()
    }

    /// What serves requests no host matches.
    pub fn default_route(&self) -> Option<&T> {
        self.default.as_ref()
    }
}

impl<T> HostRoutes<T> {
    /// The best path match: longest path string, then Exact > Prefix > regex.
    pub fn route(&self, path: &str) -> Option<&T> {
        // (length, rank): ties in length go to the higher rank.
        let mut best: Option<((usize, u8), &T)> = self.exact.get(path).map(|v| ((path.len(), 2), v));
        if best.is_none() && !(self.prefix.is_empty() && self.slashed.is_empty()) {
            best = self.longest_prefix(path).map(|(len, v)| ((len, 1), v));
        }
        let beaten = best.map_or(0, |((len, _), _)| len + 1);
        let regex = self.regex.iter().take_while(|r| r.pattern_len >= beaten).find(|r| r.regex.is_match(path));
        regex.map(|r| &r.value).or(best.map(|(_, v)| v))
    }

    /// Element-wise longest prefix: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
    /// Of `/foo` and `/foo/`, the first takes `/foo` and the second what lies below.
    fn longest_prefix(&self, path: &str) -> Option<(usize, &T)> {
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            let (first, second) = if path.len() > candidate.len() {
                (&self.slashed, &self.prefix)
            } else {
                (&self.prefix, &self.slashed)
            };
            if let Some(v) = first.get(key).or_else(|| second.get(key)) {
                return Some((key.len(), v));
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }

    /// The routes in precedence order, with their paths.
    pub fn paths(&self) -> Vec<(PathMatch, &T)> {
        let exact = self.exact.iter().map(|(p, v)| (PathMatch::Exact(p.to_string()), v));
        let prefix = self.prefix.iter().map(|(p, v)| (PathMatch::Prefix(p.to_string()), v));
        let prefix = prefix.chain(self.slashed.iter().map(|(p, v)| (PathMatch::Prefix(format!("{p}/")), v)));
        let regex = self.regex.iter().map(|r| (PathMatch::Regex(unanchored(r.regex.as_str()).to_owned()), &r.value));
        let mut all: Vec<_> = exact.chain(prefix).chain(regex).collect();
        let rank = |p: &PathMatch| match p {
            PathMatch::Exact(_) => 2,
            PathMatch::Prefix(_) => 1,
            PathMatch::Regex(_) => 0,
        };
        // Stable: regexes of one length stay in age order.
        all.sort_by(|(a, _), (b, _)| {
            (b.as_str().len(), rank(b)).cmp(&(a.as_str().len(), rank(a))).then_with(|| match (a, b) {
                (PathMatch::Regex(_), PathMatch::Regex(_)) => std::cmp::Ordering::Equal,
                _ => a.as_str().cmp(b.as_str()),
            })
        });
        all
    }

    /// The Ingress default backend for this host.
    pub fn fallback(&self) -> Option<&T> {
        self.fallback.as_ref()
    }
}

const REGEX_PREFIX: &str = "(?i)^(?:";

/// ingress-nginx's `location ~* ^PATH`: case-insensitive, anchored at the start only.
fn anchored(pattern: &str) -> String {
    format!("{REGEX_PREFIX}{pattern})")
}

fn unanchored(regex: &str) -> &str {
    &regex[REGEX_PREFIX.len()..regex.len() - 1]
}
