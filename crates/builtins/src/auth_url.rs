//! External authentication, as ingress-nginx's `auth-url` (nginx's `auth_request`): before a
//! request goes on, a request with its headers (not its body) goes to an authentication
//! Service, whose answer decides. 2xx lets it through, with the headers listed in
//! `auth-response-headers` copied from the answer; 401 goes back to the client (or, with
//! `auth-signin`, becomes a redirect to the sign-in page); 403 goes back; anything else, or no
//! answer at all, is 500.
//!
//! The Service is one of the Ingress's namespace, named by the URL's host
//! (`http://SERVICE.NAMESPACE.svc.cluster.local:PORT/path`, or `http://SERVICE:PORT/path`).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Config;
use crate::affinity::cookie_value;

/// The `auth-url` plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUrl {
    /// The authentication Service, `SERVICE:PORT`.
    pub service: String,
    /// The Host of the authentication request: the URL's.
    pub host: String,
    /// The path and query of the authentication request.
    pub path: String,
    /// `auth-method`; GET, as nginx's subrequests, by default.
    pub method: String,
    /// `auth-response-headers`, lower-case: copied from a 2xx answer into the request, and
    /// removed from the request when the answer lacks them (a client cannot send its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// `auth-signin`: where a 401 is redirected, the request's URL in `redirect_param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<String>,
    /// `auth-signin-redirect-param`.
    pub redirect_param: String,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` of the authentication request
    /// (the request's URI by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    /// `auth-cache-key` and `auth-cache-duration`: answers kept, so that the Service is asked
    /// once per key while they last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
}

/// Answers of the authentication Service kept per key (in the gateway process's store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Text with nginx variables ([`parse_cache_key`]), expanded per request.
    pub key: String,
    /// How long an answer of each status is kept, in seconds; others are not.
    pub durations: Vec<(u16, u64)>,
}

/// ingress-nginx's `auth-cache-duration` when `auth-cache-key` is set alone.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// The nginx variables a cache key may hold (besides `$http_NAME` and `$cookie_NAME`).
const VARIABLES: [&str; 5] = ["remote_addr", "host", "request_uri", "uri", "args"];

/// The parts of text with nginx variables: text, and variables by name.
fn key_parts(template: &str) -> impl Iterator<Item = Result<&str, &str>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if let Some(after) = rest.strip_prefix('$') {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            let (name, tail) = after.split_at(end);
            rest = tail;
            return Some(Err(name));
        }
        let end = rest.find('$').unwrap_or(rest.len());
        let (text, tail) = rest.split_at(end);
        rest = tail;
        Some(Ok(text))
    })
}

/// Checks an `auth-cache-key`: text with `$remote_addr`, `$host`, `$request_uri`, `$uri`,
/// `$args`, `$http_NAME` (a request header) and `$cookie_NAME`.
pub fn parse_cache_key(value: &str) -> Result<String, String> {
    let value = value.trim();
    for part in key_parts(value) {
        if let Err(name) = part
            && !(VARIABLES.contains(&name)
                || name.strip_prefix("http_").is_some_and(|n| !n.is_empty())
                || name.strip_prefix("cookie_").is_some_and(|n| !n.is_empty()))
        {
            return Err(format!(
                "${name} in {value:?} is not a variable Sluice knows: $remote_addr, $host, $request_uri, $uri, \
                 $args, $http_NAME and $cookie_NAME"
            ));
        }
    }
    if value.is_empty() { Err("the key is empty".to_owned()) } else { Ok(value.to_owned()) }
}

/// Reads an `auth-cache-duration`: comma-separated entries of statuses and a time
/// (`200 202 10m, 401 30s`; `s`, `m`, `h` or `d`, seconds without a unit).
pub fn parse_cache_durations(value: &str) -> Result<Vec<(u16, u64)>, String> {
    let mut durations = Vec::new();
    for entry in value.split(',') {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let bad = || format!("{entry:?} is not statuses and a time, such as \"200 202 401 5m\"");
        let (time, statuses) = words.split_last().filter(|(_, statuses)| !statuses.is_empty()).ok_or_else(bad)?;
        let (number, unit) = time.split_at(time.find(|c: char| !c.is_ascii_digit()).unwrap_or(time.len()));
        let scale = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let seconds = number.parse::<u64>().map_err(|_| bad())?.saturating_mul(scale);
        for status in statuses {
            match status.parse::<u16>() {
                Ok(status @ 100..=599) => durations.push((status, seconds)),
                _ => return Err(bad()),
            }
        }
    }
    Ok(durations)
}

impl Cache {
    /// The key of `request`'s answer on the route `scope` (its host and path, as
    /// ingress-nginx keys answers per location): a SHA-256 of the parts, each with its length,
    /// so that no two expansions meet. None, and no answer is kept or used, when a variable
    /// is empty: a client without the credential must never share an answer.
    pub fn key(&self, request: &Original, scope: &str) -> Option<String> {
        fn values<'a>(headers: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> {
            headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        let (path, query) = request.uri.split_once('?').unwrap_or((request.uri, ""));
        let mut digest = Sha256::new();
        let mut part = |bytes: &[u8]| {
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        part(scope.as_bytes());
        for piece in key_parts(&self.key) {
            let value = match piece {
                Ok(text) => text.to_owned(),
                Err("remote_addr") => request.client.to_owned(),
                Err("host") => request.host.to_owned(),
                Err("request_uri") => request.uri.to_owned(),
                Err("uri") => path.to_owned(),
                Err("args") => query.to_owned(),
                Err(name) => match name.strip_prefix("http_") {
                    // Every value, as the Service sees every one.
                    Some(header) => values(request.headers, &header.replace('_', "-")).collect::<Vec<_>>().join(", "),
                    None => {
                        let cookies = values(request.headers, "cookie");
                        cookie_value(cookies, name.strip_prefix("cookie_").unwrap_or(name))
                            .unwrap_or_default()
                            .to_owned()
                    }
                },
            };
            if piece.is_err() && value.is_empty() {
                return None;
            }
            part(value.as_bytes());
        }
        Some(digest.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// How long an answer of `status` is kept, if at all.
    pub fn seconds(&self, status: u16) -> Option<u64> {
        self.durations.iter().find(|(s, _)| *s == status).map(|(_, seconds)| *seconds)
    }
}

/// An answer as the cache keeps it: what [`AuthUrl::outcome`] reads of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl AuthUrl {
    /// What of an answer the outcome reads: its status and the headers it uses.
    pub fn kept(&self, status: u16, headers: &[(String, String)]) -> Kept {
        let wanted = |name: &str| {
            ["www-authenticate", "set-cookie"].iter().any(|n| name.eq_ignore_ascii_case(n))
                || self.response_headers.iter().any(|h| h.eq_ignore_ascii_case(name))
        };
        Kept { status, headers: headers.iter().filter(|(name, _)| wanted(name)).cloned().collect() }
    }
}

impl Kept {
    /// Whether the answer may be kept for other requests: not one that sets cookies (nginx's
    /// cache keeps none either), which are for the client it answered.
    pub fn cacheable(&self) -> bool {
        !self.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
    }
}

/// Where an `auth-url` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub port: u16,
    /// The URL's host, for the Host header (without the port, as nginx sends it).
    pub host: String,
    /// The path and query.
    pub path: String,
}

/// Reads an `auth-url` of an Ingress of `namespace`.
pub fn parse_url(value: &str, namespace: &str) -> Result<Target, String> {
    let form = "http://SERVICE.NAMESPACE.svc.cluster.local:PORT/PATH or http://SERVICE:PORT/PATH";
    let uri: http::Uri = value.trim().parse().map_err(|e| format!("{value:?} is not a URL ({e}); use {form}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("{value:?}: the scheme {other:?} is not supported; use {form}")),
        None => return Err(format!("{value:?} is not an absolute URL; use {form}")),
    }
    let authority = uri.authority().ok_or_else(|| format!("{value:?} has no host; use {form}"))?;
    let host = authority.host().to_ascii_lowercase();
    let name = host.strip_suffix(".cluster.local").unwrap_or(&host);
    let name = name.strip_suffix(".svc").unwrap_or(name);
    let (service, in_namespace) = name.split_once('.').unwrap_or((name, namespace));
    if in_namespace != namespace {
        return Err(format!(
            "{value:?} names a Service of namespace {in_namespace:?}; the gateway calls only Services of the \
             Ingress's namespace, {namespace:?} (and no hosts outside the cluster); use {form}"
        ));
    }
    if service.is_empty() || !service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(format!("{value:?}: {service:?} is not a Service name; use {form}"));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(Target {
        service: service.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        host: authority.host().to_owned(),
        path: if path.is_empty() { "/".to_owned() } else { path.to_owned() },
    })
}

impl Config for AuthUrl {
    fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path: {:?} does not start with '/'", self.path));
        }
        check_token(&self.method).map_err(|e| format!("method: {e}"))?;
        for name in &self.response_headers {
            check_token(name).map_err(|e| format!("response_headers: {e}"))?;
        }
        check_token(&self.redirect_param).map_err(|e| format!("redirect_param: {e}"))
    }
}

/// The variables an `auth-signin` URL may hold, as in ingress-nginx's examples.
const SIGNIN_VARIABLES: [&str; 5] = ["scheme", "host", "http_host", "request_uri", "escaped_request_uri"];

/// Reads an `auth-signin`: an absolute URL or a path, with `$scheme`, `$host`, `$http_host`,
/// `$request_uri` and `$escaped_request_uri`.
pub fn parse_signin(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !(value.starts_with("http://") || value.starts_with("https://") || value.starts_with('/')) {
        return Err(format!("{value:?} is not a URL (http://, https://) or a path (/)"));
    }
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{value:?} has spaces or control characters"));
    }
    for part in key_parts(value) {
        if let Err(name) = part
            && !SIGNIN_VARIABLES.contains(&name)
        {
            return Err(format!(
                "${name} in {value:?} is not a variable Sluice knows here: $scheme, $host, $http_host, \
                 $request_uri and $escaped_request_uri"
            ));
        }
    }
    Ok(value.to_owned())
}

/// Checks a method, header name or parameter name: letters, digits and `-`, `_`, `.`.
pub fn check_token(value: &str) -> Result<(), String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a name of letters, digits, '-', '_' and '.'"))
    }
}

/// What the filter knows of the request it guards.
#[derive(Debug)]
pub struct Original<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The Host the client asked for.
    pub host: &'a str,
    /// The path and query, as the client sent them.
    pub uri: &'a str,
    /// The client's address (an IP address).
    pub client: &'a str,
    pub headers: &'a [(String, String)],
}

/// Request headers never sent to the authentication Service: they describe the client's
/// connection or body, or are set anew.
const NOT_FORWARDED: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-connection",
    "x-forwarded-proto",
    "x-original-url",
    "x-original-method",
];

impl Original<'_> {
    /// The URL the client asked for.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.uri)
    }
}

/// What the authentication Service's answer means for the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on, with these request headers set (`Some`) or removed (`None`); the response gets
    /// the `Set-Cookie` values, as ingress-nginx passes the authentication answer's on.
    Allow { headers: Vec<(String, Option<String>)>, cookies: Vec<String> },
    /// Answer the client instead.
    Respond { status: u16, headers: Vec<(String, String)>, body: &'static str },
}

/// Characters escaped in the request URI put into the sign-in URL, as nginx's
/// `$escaped_request_uri` escapes them.
const URI_ESCAPED: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'&').add(b'+').add(b'<').add(b'>').add(b'?').add(b'=');

impl AuthUrl {
    /// The headers of the authentication request for `request`: its own but those about its
    /// connection and body, and what ingress-nginx adds.
    pub fn request_headers(&self, request: &Original) -> Vec<(String, String)> {
        let forwarded = request.headers.iter().filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()));
        let mut headers: Vec<(String, String)> = forwarded
            .filter(|(name, _)| !matches!(name.as_str(), "x-real-ip" | "x-forwarded-for" | "x-auth-request-redirect"))
            .cloned()
            .collect();
        let redirect = self.request_redirect.as_deref().unwrap_or(request.uri);
        headers.extend([
            ("host".to_owned(), self.host.clone()),
            ("x-original-url".to_owned(), request.url()),
            ("x-original-method".to_owned(), request.method.to_owned()),
            ("x-sent-from".to_owned(), "nginx-ingress-controller".to_owned()),
            ("x-real-ip".to_owned(), request.client.to_owned()),
            ("x-forwarded-for".to_owned(), request.client.to_owned()),
            ("x-auth-request-redirect".to_owned(), redirect.to_owned()),
        ]);
        headers
    }

    /// What the answer (`status` and headers; none when the call got none) means for the
    /// request to `request`.
    pub fn outcome(&self, answer: Option<(u16, &[(String, String)])>, request: &Original) -> Outcome {
        let text = [("content-type".to_owned(), "text/plain; charset=utf-8".to_owned())];
        let header = |headers: &[(String, String)], name: &str| {
            headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        };
        match answer {
            Some((200..=299, answered)) => {
                let copied = self.response_headers.iter().map(|name| (name.clone(), header(answered, name)));
                // A client's `x_user` reaches backends that read it as `X-User` (CGI, Rack): gone.
                let forged = request.headers.iter().filter(|(name, _)| {
                    name.contains('_')
                        && self.response_headers.iter().any(|h| h.eq_ignore_ascii_case(&name.replace('_', "-")))
                });
                let headers = copied.chain(forged.map(|(name, _)| (name.clone(), None))).collect();
                let cookies =
                    answered.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.clone());
                Outcome::Allow { headers, cookies: cookies.collect() }
            }
            Some((401, headers)) => match &self.signin {
                Some(signin) => {
                    let location = self.signin_location(signin, request);
                    Outcome::Respond { status: 302, headers: vec![("location".to_owned(), location)], body: "" }
                }
                None => {
                    // As nginx's auth_request, the challenge comes along.
                    let challenge = header(headers, "www-authenticate").map(|v| ("www-authenticate".to_owned(), v));
                    let headers = text.into_iter().chain(challenge).collect();
                    Outcome::Respond { status: 401, headers, body: "authorization required\n" }
                }
            },
            Some((403, _)) => Outcome::Respond { status: 403, headers: text.into(), body: "forbidden\n" },
            _ => Outcome::Respond { status: 500, headers: text.into(), body: "internal server error\n" },
        }
    }

    /// The sign-in URL, its variables expanded, with the request's URL in `redirect_param`
    /// unless it has that parameter already.
    fn signin_location(&self, signin: &str, request: &Original) -> String {
        let escaped = utf8_percent_encode(request.uri, URI_ESCAPED).to_string();
        let signin: String = key_parts(signin)
            .map(|part| match part {
                Ok(text) => text,
                Err("scheme") => request.scheme,
                Err("host" | "http_host") => request.host,
                Err("request_uri") => request.uri,
                Err("escaped_request_uri") => &escaped,
                // Refused by `parse_signin`.
                Err(_) => "",
            })
            .collect();
        let param = &self.redirect_param;
        let given = |separator| signin.contains(&format!("{separator}{param}="));
        if given('?') || given('&') {
            return signin;
        }
        let separator = if signin.contains('?') { '&' } else { '?' };
        format!("{signin}{separator}{param}={}://{}{escaped}", request.scheme, request.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthUrl {
        let target = parse_url("http://auth.shop.svc.cluster.local:8080/verify?v=1", "shop").unwrap();
        AuthUrl {
            service: format!("{}:{}", target.service, target.port),
            host: target.host,
            path: target.path,
            method: "GET".into(),
            response_headers: vec!["x-user".into(), "x-groups".into()],
            signin: None,
            redirect_param: "rd".into(),
            request_redirect: None,
            cache: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn urls_name_services_of_the_ingress_namespace() {
        let target = parse_url("http://auth.shop.svc.cluster.local:8080/verify?v=1", "shop").unwrap();
        let expected = Target {
            service: "auth".into(),
            port: 8080,
            host: "auth.shop.svc.cluster.local".into(),
            path: "/verify?v=1".into(),
        };
        assert_eq!(target, expected);
        for (url, service, port, path) in [
            ("http://auth/", "auth", 80, "/"),
            ("http://auth:9000", "auth", 9000, "/"),
            ("http://auth.shop/x", "auth", 80, "/x"),
            ("http://auth.shop.svc:81/x", "auth", 81, "/x"),
        ] {
            let target = parse_url(url, "shop").unwrap();
            assert_eq!((target.service.as_str(), target.port, target.path.as_str()), (service, port, path), "{url}");
        }
        for (url, why) in [
            ("https://auth.shop.svc/x", "scheme"),
            ("http://auth.other.svc.cluster.local/x", "namespace \"other\""),
            ("http://auth.example.com/x", "namespace \"example.com\""),
            ("/verify", "not an absolute URL"),
            ("http://Auth_1/", "not a Service name"),
            ("http://$host/oauth2/auth", "not a Service name"),
        ] {
            let error = parse_url(url, "shop").unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn the_authentication_request_carries_the_request_headers_and_ingress_nginx_ones() {
        let request_headers = headers(&[
            ("authorization", "Bearer t"),
            ("cookie", "s=1"),
            ("content-length", "12"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-original-url", "forged"),
            ("host", "shop.test"),
        ]);
        let original = Original {
            method: "POST",
            scheme: "https",
            host: "shop.test",
            uri: "/cart?id=1",
            client: "192.0.2.7",
            headers: &request_headers,
        };
        let sent = config().request_headers(&original);
        assert_eq!(
            sent,
            headers(&[
                ("authorization", "Bearer t"),
                ("cookie", "s=1"),
                ("host", "auth.shop.svc.cluster.local"),
                ("x-original-url", "https://shop.test/cart?id=1"),
                ("x-original-method", "POST"),
                ("x-sent-from", "nginx-ingress-controller"),
                ("x-real-ip", "192.0.2.7"),
                ("x-forwarded-for", "192.0.2.7"),
                ("x-auth-request-redirect", "/cart?id=1"),
            ])
        );
        let redirect = AuthUrl { request_redirect: Some("https://shop.test/home".into()), ..config() };
        assert!(
            redirect
                .request_headers(&original)
                .contains(&("x-auth-request-redirect".into(), "https://shop.test/home".into()))
        );
    }

    #[test]
    fn answers_decide_as_ingress_nginx() {
        let original = Original {
            method: "GET",
            scheme: "https",
            host: "shop.test",
            uri: "/a b?x=1&y=2",
            client: "192.0.2.7",
            headers: &headers(&[("x_user", "mallory"), ("x_other", "kept")]),
        };
        let answer = headers(&[("X-User", "alice"), ("www-authenticate", "Bearer realm=\"shop\"")]);
        let allowed = config().outcome(Some((204, &answer)), &original);
        let expected = [("x-user", Some("alice")), ("x-groups", None), ("x_user", None)];
        let expected = expected.iter().map(|(n, v)| (n.to_string(), v.map(str::to_owned))).collect();
        assert_eq!(allowed, Outcome::Allow { headers: expected, cookies: vec![] }, "a forged x_user goes too");
        let cookies = headers(&[("set-cookie", "a=1"), ("Set-Cookie", "b=2"), ("x-user", "alice")]);
        let Outcome::Allow { cookies: passed, .. } = config().outcome(Some((200, &cookies)), &original) else {
            panic!("2xx lets through");
        };
        assert_eq!(passed, ["a=1", "b=2"], "the answer's cookies go to the client");
        assert!(!config().kept(200, &cookies).cacheable() && config().kept(200, &answer).cacheable());
        let Outcome::Respond { status: 401, headers: sent, .. } = config().outcome(Some((401, &answer)), &original)
        else {
            panic!("401 goes back");
        };
        assert!(sent.contains(&("www-authenticate".into(), "Bearer realm=\"shop\"".into())));
        let signin = AuthUrl { signin: Some("https://login.test/start?app=shop".into()), ..config() };
        let Outcome::Respond { status: 302, headers: sent, .. } = signin.outcome(Some((401, &answer)), &original)
        else {
            panic!("401 redirects to the sign-in page");
        };
        assert_eq!(
            sent,
            headers(&[("location", "https://login.test/start?app=shop&rd=https://shop.test/a%20b%3Fx%3D1%26y%3D2")])
        );
        let own = AuthUrl { signin: Some("https://login.test/?rd=/home".into()), ..config() };
        assert!(
            matches!(own.outcome(Some((401, &answer)), &original), Outcome::Respond { status: 302, headers, .. } if headers[0].1 == "https://login.test/?rd=/home")
        );
        let variables = AuthUrl {
            signin: Some(parse_signin("https://$host/oauth2/start?rd=$escaped_request_uri").unwrap()),
            ..config()
        };
        assert!(
            matches!(variables.outcome(Some((401, &answer)), &original), Outcome::Respond { status: 302, headers, .. } if headers[0].1 == "https://shop.test/oauth2/start?rd=/a%20b%3Fx%3D1%26y%3D2")
        );
        assert!(parse_signin("https://$host/start?u=$remote_user").unwrap_err().contains("$remote_user"));
        assert!(parse_signin("login").is_err() && parse_signin("/login\r\nx: y").is_err());
        assert!(matches!(signin.outcome(Some((403, &answer)), &original), Outcome::Respond { status: 403, .. }));
        for failed in [Some((302, &answer[..])), Some((500, &answer[..])), None] {
            assert!(matches!(config().outcome(failed, &original), Outcome::Respond { status: 500, .. }));
        }
    }

    #[test]
    fn cache_keys_expand_nginx_variables() {
        let cache = Cache {
            key: parse_cache_key("$remote_addr|$http_authorization|$cookie_session|$host$uri?$args").unwrap(),
            durations: parse_cache_durations(DEFAULT_CACHE_DURATION).unwrap(),
        };
        let sent = headers(&[("authorization", "Bearer t"), ("cookie", "a=1; session=s2")]);
        let original = Original {
            method: "GET",
            scheme: "https",
            host: "shop.test",
            uri: "/p?q=1",
            client: "192.0.2.7",
            headers: &sent,
        };
        let key = cache.key(&original, "shop.test Prefix /").unwrap();
        assert_eq!(key.len(), 64, "a SHA-256");
        let with = |headers: &[(String, String)], scope: &str| cache.key(&Original { headers, ..original }, scope);
        assert_eq!(with(&sent, "shop.test Prefix /"), Some(key.clone()), "the same request, the same key");
        assert_ne!(with(&sent, "shop.test Prefix /admin"), Some(key.clone()), "another route");
        let other = headers(&[("authorization", "Bearer u"), ("cookie", "a=1; session=s2")]);
        assert_ne!(with(&other, "shop.test Prefix /"), Some(key.clone()));
        // A variable without a value: no key, so no answer is shared by clients without one.
        let split = headers(&[("authorization", "Bearer t"), ("cookie", "a=1"), ("cookie", "session=s2")]);
        assert_eq!(with(&split, "shop.test Prefix /"), Some(key), "every Cookie field is read");
        assert_eq!(with(&headers(&[("cookie", "session=s2")]), "shop.test Prefix /"), None);
        assert_eq!(cache.durations, [(200, 300), (202, 300), (401, 300)]);
        assert_eq!((cache.seconds(401), cache.seconds(403)), (Some(300), None));
        assert_eq!(parse_cache_durations("200 10m, 401 30s,403 1h").unwrap(), [(200, 600), (401, 30), (403, 3600)]);
        for bad in ["5m", "200", "200 5x", "2000 5m", "ok 5m"] {
            assert!(parse_cache_durations(bad).is_err(), "{bad}");
        }
        assert!(parse_cache_key("$remote_user").unwrap_err().contains("$remote_user"));
        assert!(parse_cache_key(" ").is_err() && parse_cache_key("$http_").is_err());
        let answer = headers(&[("X-User", "alice"), ("set-cookie", "x=1"), ("server", "auth")]);
        let kept = Kept { status: 200, headers: headers(&[("X-User", "alice"), ("set-cookie", "x=1")]) };
        assert_eq!(config().kept(200, &answer), kept, "what the outcome reads");
    }

    #[test]
    fn configurations_are_checked() {
        assert!(config().validate().is_ok());
        assert!(AuthUrl { method: "G ET".into(), ..config() }.validate().is_err());
        assert!(AuthUrl { response_headers: vec!["x:y".into()], ..config() }.validate().is_err());
        assert!(AuthUrl { path: "verify".into(), ..config() }.validate().is_err());
    }
}
