//! Cross-origin resource sharing, answered as ingress-nginx's `enable-cors` answers it.
//!
//! An allowed origin gets the same set of `Access-Control-*` headers on every response: with
//! `*`, every request (with or without an `Origin`) gets `Access-Control-Allow-Origin: *`;
//! with a list, a request whose `Origin` is on it gets that origin back. A preflight (`OPTIONS`
//! with `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered 204 by
//! the gateway; any other request goes upstream. An origin not allowed gets no CORS header.

use serde::{Deserialize, Serialize};

use crate::Config;

/// ingress-nginx's default `cors-allow-methods`.
pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// ingress-nginx's default `cors-allow-headers`.
pub const DEFAULT_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// ingress-nginx's default `cors-max-age`: 20 days, in seconds.
pub const DEFAULT_MAX_AGE: u64 = 1_728_000;
/// The `Content-Type` of ingress-nginx's preflight answer, as it writes it.
pub const PREFLIGHT_CONTENT_TYPE: &str = "text/plain charset=UTF-8";

/// The `cors` plugin's configuration; the defaults are ingress-nginx's. The lists of methods
/// and headers are sent as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cors {
    /// `*` alone (any origin), or origins `scheme://host[:port]` (the host may begin with `*.`,
    /// one label) and `null`.
    pub allow_origin: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    /// None when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub expose_headers: String,
    pub allow_credentials: bool,
    /// How long a preflight answer may be cached, in seconds.
    pub max_age: u64,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            allow_origin: vec!["*".to_owned()],
            allow_methods: DEFAULT_METHODS.to_owned(),
            allow_headers: DEFAULT_HEADERS.to_owned(),
            expose_headers: String::new(),
            allow_credentials: true,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl Config for Cors {
    fn validate(&self) -> Result<(), String> {
        if self.allow_origin.is_empty() {
            return Err("allow-origin: is empty".to_owned());
        }
        if self.allow_origin.len() > 1 && self.allow_origin.iter().any(|o| o == "*") {
            return Err("allow-origin: \"*\" stands alone".to_owned());
        }
        for origin in &self.allow_origin {
            check_origin(origin).map_err(|e| format!("allow-origin: {e}"))?;
        }
        check_methods(&self.allow_methods).map_err(|e| format!("allow-methods: {e}"))?;
        check_headers(&self.allow_headers).map_err(|e| format!("allow-headers: {e}"))?;
        if !self.expose_headers.is_empty() {
            check_expose_headers(&self.expose_headers).map_err(|e| format!("expose-headers: {e}"))?;
        }
        Ok(())
    }
}

/// What the gateway does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Not from an allowed origin: no CORS header.
    None,
    /// A preflight from an allowed origin: answered 204 with [`Cors::headers`].
    Preflight(&'a str),
    /// Any other request from an allowed origin: the response gets [`Cors::headers`].
    Actual(&'a str),
}

impl Cors {
    /// How to answer a request with this `method`, `Origin` and (whether it has one)
    /// `Access-Control-Request-Method`. The value carried is `Access-Control-Allow-Origin`'s.
    pub fn answer<'a>(&'a self, method: &str, origin: Option<&'a str>, request_method: bool) -> Answer<'a> {
        let allowed = match self.allow_origin.as_slice() {
            [any] if any == "*" => "*",
            patterns => match origin {
                Some(origin) if patterns.iter().any(|p| origin_matches(p, origin)) => origin,
                _ => return Answer::None,
            },
        };
        if method == "OPTIONS" && origin.is_some() && request_method {
            Answer::Preflight(allowed)
        } else {
            Answer::Actual(allowed)
        }
    }

    /// The headers every answer to an allowed origin carries, in ingress-nginx's order.
    pub fn headers(&self, allow_origin: &str) -> Vec<(&'static str, String)> {
        let mut headers = vec![("access-control-allow-origin", allow_origin.to_owned())];
        if self.allow_credentials {
            headers.push(("access-control-allow-credentials", "true".to_owned()));
        }
        headers.push(("access-control-allow-methods", self.allow_methods.clone()));
        headers.push(("access-control-allow-headers", self.allow_headers.clone()));
        if !self.expose_headers.is_empty() {
            headers.push(("access-control-expose-headers", self.expose_headers.clone()));
        }
        headers.push(("access-control-max-age", self.max_age.to_string()));
        headers
    }
}

/// Whether `origin` (as a client sent it) matches `pattern`, ignoring case as nginx's `~*`
/// does; `*.` in a pattern stands for one label of letters, digits and `-`.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once("*.") {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((scheme, rest)) => {
            let suffix_at = origin.len().wrapping_sub(rest.len() + 1);
            let (Some(head), Some(label), Some(tail)) = (
                origin.get(..scheme.len()),
                origin.get(scheme.len()..suffix_at),
                origin.get(suffix_at..).and_then(|t| t.strip_prefix('.')),
            ) else {
                return false;
            };
            head.eq_ignore_ascii_case(scheme)
                && tail.eq_ignore_ascii_case(rest)
                && !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
    }
}

/// Parses `cors-allow-origin`: a comma-separated list; `*` anywhere means any origin.
pub fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect();
    for origin in &origins {
        check_origin(origin)?;
    }
    match origins.iter().any(|o| o == "*") {
        true => Ok(vec!["*".to_owned()]),
        false if origins.is_empty() => Err("names no origin".to_owned()),
        false => Ok(origins),
    }
}

/// One allowed origin: `*`, `null`, or `scheme://host[:port]` with a lower-case scheme and an
/// optional `*.` before the host (ingress-nginx's pattern, with a host required).
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let invalid =
        || format!("{origin:?} is not an origin such as https://example.com, https://*.example.com:8443 or *");
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let host_port = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "0"));
    let scheme_ok = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_lowercase());
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if scheme_ok && host_ok && port_ok { Ok(()) } else { Err(invalid()) }
}

/// `cors-allow-methods`: comma-separated methods of letters.
pub fn check_methods(methods: &str) -> Result<(), String> {
    check_list(methods, "method", |item| item.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// `cors-allow-headers`: comma-separated header names of letters, digits, `-` and `_`.
pub fn check_headers(headers: &str) -> Result<(), String> {
    check_list(headers, "header name", |item| item.bytes().all(is_header_char))
}

/// `cors-expose-headers`: like [`check_headers`], and `*` (every header).
pub fn check_expose_headers(headers: &str) -> Result<(), String> {
    check_list(headers, "header name or *", |item| item == "*" || item.bytes().all(is_header_char))
}

fn is_header_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn check_list(list: &str, what: &str, valid: impl Fn(&str) -> bool) -> Result<(), String> {
    for item in list.split(',').map(str::trim) {
        if item.is_empty() || !valid(item) {
            return Err(format!("{item:?} in {list:?} is not a {what}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(origins: &[&str]) -> Cors {
        Cors { allow_origin: origins.iter().map(|o| o.to_string()).collect(), ..Cors::default() }
    }

    #[test]
    fn any_origin_answers_every_request_with_a_star() {
        let cors = Cors::default();
        assert_eq!(cors.answer("GET", None, false), Answer::Actual("*"));
        assert_eq!(cors.answer("GET", Some("https://a.test"), false), Answer::Actual("*"));
        assert_eq!(cors.answer("OPTIONS", Some("https://a.test"), true), Answer::Preflight("*"));
        // OPTIONS without what makes it a preflight goes upstream, with the headers.
        assert_eq!(cors.answer("OPTIONS", None, true), Answer::Actual("*"));
        assert_eq!(cors.answer("OPTIONS", Some("https://a.test"), false), Answer::Actual("*"));
    }

    #[test]
    fn listed_origins_are_reflected_and_others_get_nothing() {
        let cors = listed(&["https://origin.cors.com:8080", "https://*.example.com", "null"]);
        let origin = "https://origin.cors.com:8080";
        assert_eq!(cors.answer("GET", Some(origin), false), Answer::Actual(origin));
        assert_eq!(cors.answer("OPTIONS", Some(origin), true), Answer::Preflight(origin));
        let shouted = "HTTPS://Origin.Cors.com:8080";
        assert_eq!(cors.answer("GET", Some(shouted), false), Answer::Actual(shouted));
        assert_eq!(cors.answer("GET", Some("null"), false), Answer::Actual("null"));
        for refused in [None, Some("https://origin.cors.com"), Some("http://origin.cors.com:8080"), Some("")] {
            assert_eq!(cors.answer("GET", refused, false), Answer::None, "{refused:?}");
            assert_eq!(cors.answer("OPTIONS", refused, true), Answer::None, "{refused:?}");
        }
    }

    #[test]
    fn a_wildcard_is_one_label() {
        let pattern = "https://*.example.com";
        for ok in ["https://app.example.com", "https://a-1.EXAMPLE.com"] {
            assert!(origin_matches(pattern, ok), "{ok}");
        }
        for no in [
            "https://example.com",
            "https://.example.com",
            "https://a.b.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://appexample.com",
            "https://app_x.example.com",
            "https://",
        ] {
            assert!(!origin_matches(pattern, no), "{no}");
        }
        assert!(origin_matches("http://*.bar.foo:8080", "http://x.bar.foo:8080"));
        assert!(!origin_matches("http://*.bar.foo:8080", "http://x.bar.foo"));
    }

    #[test]
    fn headers_in_ingress_nginx_order_with_its_defaults() {
        let names = |cors: &Cors| cors.headers("*").into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let cors = Cors::default();
        assert_eq!(
            cors.headers("*"),
            [
                ("access-control-allow-origin", "*".to_owned()),
                ("access-control-allow-credentials", "true".to_owned()),
                ("access-control-allow-methods", DEFAULT_METHODS.to_owned()),
                ("access-control-allow-headers", DEFAULT_HEADERS.to_owned()),
                ("access-control-max-age", "1728000".to_owned()),
            ]
        );
        let cors = Cors { allow_credentials: false, expose_headers: "X-Total, *".into(), ..Cors::default() };
        assert!(!names(&cors).contains(&"access-control-allow-credentials"));
        assert!(names(&cors).contains(&"access-control-expose-headers"));
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(
            parse_origins(" https://a.test , http://b.test:8080 ").unwrap(),
            ["https://a.test", "http://b.test:8080"]
        );
        assert_eq!(parse_origins("https://a.test, *").unwrap(), ["*"]);
        assert_eq!(parse_origins("myprotocol://*.abc.bar.foo:9000, null").unwrap().len(), 2);
        for bad in
            ["", " , ", "origin.cors.com:8080", "HTTPS://a.test", "https://", "https://a.test/path", "https://a b"]
        {
            assert!(parse_origins(bad).is_err(), "{bad:?}");
        }
        assert!(check_origin("https://a.test:").is_err() && check_origin("https://*.*.a.test").is_err());
        assert!(check_methods("PUT, GET,POST").is_ok());
        assert!(check_methods("GET;").is_err() && check_methods("GET,").is_err() && check_methods("").is_err());
        assert!(check_headers("X-Forwarded-For, X-app123_XPTO").is_ok() && check_headers("X Y").is_err());
        assert!(check_headers("*").is_err() && check_expose_headers("*, X-CustomResponseHeader").is_ok());
        let bad = Cors { allow_origin: vec!["*".into(), "https://a.test".into()], ..Cors::default() };
        assert!(bad.validate().unwrap_err().starts_with("allow-origin:"));
        let bad = Cors { allow_headers: "X$".into(), ..Cors::default() };
        assert!(bad.validate().unwrap_err().starts_with("allow-headers:"));
        let parsed: Cors = crate::parse(r#"{"allow-origin":["https://a.test"],"max-age":600}"#).unwrap();
        assert_eq!((parsed.max_age, parsed.allow_credentials), (600, true));
        assert!(crate::parse::<Cors>(r#"{"allow-origins":[]}"#).is_err());
        assert!(crate::parse::<Cors>(r#"{"allow-origin":[]}"#).is_err());
    }
}
