//! Annotations that compile into the built-in filters (source ranges, rate limits, CORS, basic
//! and external authentication, rewrite, headers, affinity): the ingress-nginx ones existing Ingresses
//! carry, and ours.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_builtins::{
    Affinity, AuthUrl, BasicAuth, Config, Cors, HeaderOps, Headers, RateLimit, Redirect, Rewrite, SourceRanges,
    auth_url, basic_auth, check, cors, rate_limit, rewrite, source_ranges,
};

use crate::annotations::{self as names, Reader, parse_bool};
use crate::error::not_found;
use crate::filters::{FailurePolicy, FilterSpec, Isolation};
use crate::index::{Referenced, secret_entry};
use crate::manifest::BASIC_AUTH_LABEL;
use crate::model::{BackendKey, PortRef};

/// The built-in filters `annotations` ask for, in chain order ([`sluice_builtins::ALL`]).
/// Invalid values are pushed to `errors` as (field, message); the caller fails the Ingress.
/// Requests over a rate limit are refused with `limit_status`.
pub(crate) fn builtin_filters(
    annotations: &BTreeMap<String, String>,
    namespace: &str,
    name: &str,
    referenced: &Referenced,
    limit_status: u16,
    backends: &mut Vec<(String, BackendKey)>,
    errors: &mut Vec<(String, String)>,
) -> Vec<FilterSpec> {
    let mut reader = Reader { annotations, errors };
    let mut ranges = source_ranges_config(&mut reader);
    let limits = rate_limit_config(&mut reader, limit_status, format!("{namespace}/{name}"));
    let cors = cors_config(&mut reader);
    let mut auth = basic_auth_config(&mut reader, namespace, referenced);
    let external = auth_url_config(&mut reader, namespace);
    let any = one_of(&mut reader, names::NGINX_SATISFY, ["all", "any"]).unwrap_or(false);
    // Either suffices: one filter decides, letting a granted address in without credentials.
    if any && let Some(auth) = &mut auth {
        auth.or_ranges = ranges.take();
    }
    let specs = [
        ranges.map(|c| spec(sluice_builtins::SOURCE_RANGES, &c)),
        limits.map(|c| spec(sluice_builtins::RATE_LIMIT, &c)),
        cors.map(|c| spec(sluice_builtins::CORS, &c)),
        auth.map(|c| spec(sluice_builtins::BASIC_AUTH, &c)),
        external.map(|(c, key)| {
            backends.push((names::field(names::NGINX_AUTH_URL), key));
            spec(sluice_builtins::AUTH_URL, &c)
        }),
        rewrite_config(&mut reader).map(|c| spec(sluice_builtins::REWRITE, &c)),
        headers_config(&mut reader, namespace, referenced).map(|c| spec(sluice_builtins::HEADERS, &c)),
        affinity_config(&mut reader).map(|c| spec(sluice_builtins::AFFINITY, &c)),
    ];
    specs.into_iter().flatten().collect()
}

/// Reads `name` as one of two words: `false` for the first, `true` for the second; `None` when
/// absent or neither (reported).
fn one_of(r: &mut Reader, name: &str, [first, second]: [&str; 2]) -> Option<bool> {
    r.parsed(name, |value| match value.trim() {
        value if value == first => Ok(false),
        value if value == second => Ok(true),
        other => Err(format!("{other:?} is neither {first:?} nor {second:?}")),
    })
}

fn spec(plugin: &str, config: &impl Serialize) -> FilterSpec {
    FilterSpec {
        plugin: plugin.to_owned(),
        config: serde_json::to_string(config).expect("built-in configurations serialize"),
        // These carry routing decisions: never skipped.
        failure: FailurePolicy::Closed,
        isolation: Isolation::Instance,
        field: format!("metadata.annotations (built-in {plugin})"),
    }
}

fn source_ranges_config(r: &mut Reader) -> Option<SourceRanges> {
    // As in ingress-nginx, the old name counts only when the new one is absent or empty.
    let allow = match r.get(names::NGINX_ALLOWLIST_SOURCE_RANGE) {
        Some(value) if !value.trim().is_empty() => names::NGINX_ALLOWLIST_SOURCE_RANGE,
        _ if r.get(names::NGINX_WHITELIST_SOURCE_RANGE).is_some() => names::NGINX_WHITELIST_SOURCE_RANGE,
        _ => names::NGINX_ALLOWLIST_SOURCE_RANGE,
    };
    let allow = r.parsed(allow, source_ranges::parse_list);
    let deny = r.parsed(names::NGINX_DENYLIST_SOURCE_RANGE, source_ranges::parse_list);
    if allow.is_none() && deny.is_none() {
        return None;
    }
    Some(SourceRanges { allow: allow.unwrap_or_default(), deny: deny.unwrap_or_default() })
}

/// The limits of `limit-rps`, `limit-rpm` and `limit-connections`, refusing with `status`; without
/// any, `limit-burst-multiplier` and `limit-allowlist` are ignored, as in ingress-nginx.
fn rate_limit_config(r: &mut Reader, status: u16, zone: String) -> Option<RateLimit> {
    let limit = |value: &str| match value.trim().parse::<u32>() {
        Ok(limit) if limit > 0 => Ok(limit),
        _ => Err(format!("{value:?} is not a whole number above 0")),
    };
    let rps = r.parsed(names::NGINX_LIMIT_RPS, limit);
    let rpm = r.parsed(names::NGINX_LIMIT_RPM, limit);
    let connections = r.parsed(names::NGINX_LIMIT_CONNECTIONS, limit);
    if rps.is_none() && rpm.is_none() && connections.is_none() {
        return None;
    }
    let multiplier =
        r.parsed(names::NGINX_LIMIT_BURST_MULTIPLIER, limit).unwrap_or(rate_limit::DEFAULT_BURST_MULTIPLIER);
    // As in ingress-nginx, the old name counts only when the new one is absent or empty.
    let allow = match r.get(names::NGINX_LIMIT_ALLOWLIST) {
        Some(value) if !value.trim().is_empty() => names::NGINX_LIMIT_ALLOWLIST,
        _ if r.get(names::NGINX_LIMIT_WHITELIST).is_some() => names::NGINX_LIMIT_WHITELIST,
        _ => names::NGINX_LIMIT_ALLOWLIST,
    };
    let allow = r.parsed(allow, |value| match value.trim() {
        "" => Ok(Vec::new()),
        list => source_ranges::parse_list(list),
    });
    Some(RateLimit {
        rps: rps.map(|limit| rate_limit::Rate { limit, burst: limit.saturating_mul(multiplier) }),
        rpm: rpm.map(|limit| rate_limit::Rate { limit, burst: limit.saturating_mul(multiplier) }),
        connections,
        allow: allow.unwrap_or_default(),
        status,
        zone,
    })
}

fn cors_config(r: &mut Reader) -> Option<Cors> {
    if !r.parsed(names::NGINX_ENABLE_CORS, parse_bool)? {
        return None;
    }
    let defaults = Cors::default();
    let list = |r: &mut Reader, name: &str, check: fn(&str) -> Result<(), String>| {
        r.parsed(name, |v| check(v.trim()).map(|()| v.trim().to_owned()))
    };
    Some(Cors {
        allow_origin: r.parsed(names::NGINX_CORS_ALLOW_ORIGIN, cors::parse_origins).unwrap_or(defaults.allow_origin),
        allow_methods: list(r, names::NGINX_CORS_ALLOW_METHODS, cors::check_methods).unwrap_or(defaults.allow_methods),
        allow_headers: list(r, names::NGINX_CORS_ALLOW_HEADERS, cors::check_headers).unwrap_or(defaults.allow_headers),
        expose_headers: list(r, names::NGINX_CORS_EXPOSE_HEADERS, cors::check_expose_headers).unwrap_or_default(),
        allow_credentials: r
            .parsed(names::NGINX_CORS_ALLOW_CREDENTIALS, parse_bool)
            .unwrap_or(defaults.allow_credentials),
        max_age: r.parsed(names::NGINX_CORS_MAX_AGE, seconds).unwrap_or(defaults.max_age),
    })
}

/// Reports each of `settings` that is present, with `message`: they mean something only with
/// an annotation that is absent. ingress-nginx would serve the route unguarded; someone meant
/// to guard it.
fn orphans(r: &mut Reader, settings: &[&str], message: &str) {
    let present: Vec<&str> = settings.iter().copied().filter(|name| r.get(name).is_some()).collect();
    for name in present {
        r.error(name, message.to_owned());
    }
}

/// The annotations that only mean something with `auth-url`.
const WITH_AUTH_URL: [&str; 7] = [
    names::NGINX_AUTH_CACHE_KEY,
    names::NGINX_AUTH_CACHE_DURATION,
    names::NGINX_AUTH_METHOD,
    names::NGINX_AUTH_RESPONSE_HEADERS,
    names::NGINX_AUTH_REQUEST_REDIRECT,
    names::NGINX_AUTH_SIGNIN,
    names::NGINX_AUTH_SIGNIN_REDIRECT_PARAM,
];

/// The `auth-url` filter's configuration, and the authentication Service's backend.
fn auth_url_config(r: &mut Reader, namespace: &str) -> Option<(AuthUrl, BackendKey)> {
    if r.get(names::NGINX_AUTH_URL).is_none() {
        orphans(r, &WITH_AUTH_URL, &format!("needs {}", names::NGINX_AUTH_URL));
        return None;
    }
    let target = r.parsed(names::NGINX_AUTH_URL, |value| auth_url::parse_url(value, namespace));
    let token = |value: &str| auth_url::check_token(value.trim()).map(|()| value.trim().to_owned());
    let method = r.parsed(names::NGINX_AUTH_METHOD, |value| token(value).map(|m| m.to_ascii_uppercase()));
    let response_headers = r.parsed(names::NGINX_AUTH_RESPONSE_HEADERS, |value| {
        value.split(',').map(|name| token(name).map(|name| name.to_ascii_lowercase())).collect()
    });
    let signin = r.parsed(names::NGINX_AUTH_SIGNIN, auth_url::parse_signin);
    let request_redirect = r.parsed(names::NGINX_AUTH_REQUEST_REDIRECT, |value| match value.trim() {
        v if v.bytes().any(|b| b.is_ascii_control()) => Err(format!("{v:?} has control characters")),
        v => Ok(v.to_owned()),
    });
    let redirect_param = r.parsed(names::NGINX_AUTH_SIGNIN_REDIRECT_PARAM, token);
    let cache_key = r.parsed(names::NGINX_AUTH_CACHE_KEY, auth_url::parse_cache_key);
    let durations = r.parsed(names::NGINX_AUTH_CACHE_DURATION, auth_url::parse_cache_durations);
    let cache = cache_key.map(|key| auth_url::Cache {
        key,
        durations: durations.unwrap_or_else(|| {
            auth_url::parse_cache_durations(auth_url::DEFAULT_CACHE_DURATION).expect("the default parses")
        }),
    });
    // An unusable URL fails the Ingress (as every error here); the filter is left out.
    let target = target?;
    let key = BackendKey {
        namespace: namespace.to_owned(),
        service: target.service.clone(),
        port: PortRef::Number(target.port.into()),
        cluster_ip: false,
    };
    let config = AuthUrl {
        service: format!("{}:{}", target.service, target.port),
        host: target.host,
        path: target.path,
        method: method.unwrap_or_else(|| "GET".to_owned()),
        response_headers: response_headers.unwrap_or_default(),
        signin,
        redirect_param: redirect_param.unwrap_or_else(|| "rd".to_owned()),
        request_redirect,
        cache,
    };
    Some((config, key))
}

/// The annotations that only mean something with `auth-type`.
const WITH_AUTH_TYPE: [&str; 3] = [names::NGINX_AUTH_SECRET, names::NGINX_AUTH_SECRET_TYPE, names::NGINX_AUTH_REALM];

fn basic_auth_config(r: &mut Reader, namespace: &str, referenced: &Referenced) -> Option<BasicAuth> {
    let Some(kind) = r.get(names::NGINX_AUTH_TYPE).map(str::trim) else {
        orphans(r, &WITH_AUTH_TYPE, &format!("has no effect without {}: basic", names::NGINX_AUTH_TYPE));
        return None;
    };
    if kind != "basic" {
        let message = match kind {
            "digest" => "digest authentication is not supported; use \"basic\"".to_owned(),
            other => format!("{other:?} is not an authentication type; the one supported is \"basic\""),
        };
        r.error(names::NGINX_AUTH_TYPE, message);
        return None;
    }
    let map = one_of(r, names::NGINX_AUTH_SECRET_TYPE, ["auth-file", "auth-map"]).unwrap_or(false);
    let realm = r.checked(names::NGINX_AUTH_REALM, basic_auth::check_realm).unwrap_or_default();
    if r.get(names::NGINX_AUTH_SECRET).is_none() {
        r.error(names::NGINX_AUTH_SECRET, format!("is required with {}: basic", names::NGINX_AUTH_TYPE));
        return None;
    }
    let users = r.parsed(names::NGINX_AUTH_SECRET, |value| auth_users(value, namespace, referenced, map))?;
    Some(BasicAuth { realm, users, or_ranges: None })
}

/// The users of the `auth-secret` Secret (`NAME` or `NAMESPACE/NAME`, in the Ingress's own
/// namespace): an htpasswd file in its key `auth`, or with `map` each key a user.
fn auth_users(
    value: &str,
    namespace: &str,
    referenced: &Referenced,
    map: bool,
) -> Result<BTreeMap<String, String>, String> {
    let (ns, name) = own_namespace(value, namespace, "Secret")?;
    let secret = referenced.secrets.get(ns, name).ok_or_else(|| {
        format!(
            "{} (unless of type kubernetes.io/tls, it needs the label {BASIC_AUTH_LABEL})",
            not_found(format_args!("Secret {ns}/{name}"))
        )
    })?;
    let users = if map {
        let data = secret.data.iter().flatten().map(|(user, hash)| (user, hash.0.clone()));
        let string_data = secret.string_data.iter().flatten().map(|(user, hash)| (user, hash.clone().into_bytes()));
        let mut users = BTreeMap::new();
        for (user, hash) in data.chain(string_data) {
            let hash = String::from_utf8(hash).map_err(|_| format!("Secret {ns}/{name}: {user}: is not text"))?;
            // `kubectl create secret --from-file` keeps the file's last line break.
            let hash = hash.trim_end_matches(['\r', '\n']);
            basic_auth::check_user(user)
                .and_then(|()| basic_auth::check_hash(hash))
                .map_err(|e| format!("Secret {ns}/{name}: {user}: {e}"))?;
            users.entry(user.clone()).or_insert_with(|| hash.to_owned());
        }
        users
    } else {
        let file = secret_entry(secret, "auth").ok_or_else(|| format!("Secret {ns}/{name} has no auth"))?;
        let file = String::from_utf8(file).map_err(|_| format!("Secret {ns}/{name}: auth is not text"))?;
        basic_auth::parse_htpasswd(&file).map_err(|e| format!("Secret {ns}/{name}: auth: {e}"))?
    };
    if users.is_empty() {
        return Err(format!("Secret {ns}/{name} has no users"));
    }
    Ok(users)
}

/// The namespace and name of `value` (`NAME` or `NAMESPACE/NAME`), an object of `kind` that
/// must be in the Ingress's own `namespace`.
fn own_namespace<'a>(value: &'a str, namespace: &'a str, kind: &str) -> Result<(&'a str, &'a str), String> {
    let (ns, name) = value.trim().split_once('/').unwrap_or((namespace, value.trim()));
    if ns != namespace {
        return Err(format!("{kind} {ns}/{name} is not in the Ingress's namespace {namespace}"));
    }
    Ok((ns, name))
}

fn rewrite_config(r: &mut Reader) -> Option<Rewrite> {
    let redirect = |r: &mut Reader, location: &str, code: &str, default: u16| {
        let location = r.checked(location, check::redirect_location)?;
        let status = match r.get(code) {
            None => default,
            Some(_) => r.parsed(code, |v| {
                let status = v.trim().parse().map_err(|_| format!("{v:?} is not a status code"))?;
                check::redirect_status(status).map(|()| status)
            })?,
        };
        Some(Redirect { location, status })
    };
    // As in ingress-nginx, a temporal redirect wins when both are set.
    let temporal = redirect(r, names::NGINX_TEMPORAL_REDIRECT, names::NGINX_TEMPORAL_REDIRECT_CODE, 302);
    let permanent = redirect(r, names::NGINX_PERMANENT_REDIRECT, names::NGINX_PERMANENT_REDIRECT_CODE, 301);
    let config = Rewrite {
        redirect: temporal.or(permanent),
        app_root: r.checked(names::NGINX_APP_ROOT, check::absolute_path),
        target: r.checked(names::NGINX_REWRITE_TARGET, rewrite::check_target),
        // ingress-nginx sends no header for an empty value.
        forwarded_prefix: r.checked(names::NGINX_X_FORWARDED_PREFIX, check::header_value).filter(|p| !p.is_empty()),
    };
    (config != Rewrite::default()).then_some(config)
}

fn headers_config(r: &mut Reader, namespace: &str, referenced: &Referenced) -> Option<Headers> {
    let ops = |r: &mut Reader, name: &str| {
        r.parsed(name, |value| {
            let ops: HeaderOps = serde_saphyr::from_str(value).map_err(|e| e.to_string())?;
            let ops = ops.normalize();
            ops.validate()?;
            Ok(ops)
        })
        .unwrap_or_default()
    };
    let mut request = ops(r, names::REQUEST_HEADERS);
    let mut response = ops(r, names::RESPONSE_HEADERS);
    if let Some(host) = r.checked(names::NGINX_UPSTREAM_VHOST, |v| {
        if v.is_empty() { Err("is empty".to_owned()) } else { check::header_value(v) }
    }) {
        request.set.insert("host".to_owned(), host);
    }
    let custom = r.parsed(names::NGINX_CUSTOM_HEADERS, |value| custom_headers(value, namespace, referenced));
    for (name, value) in custom.into_iter().flatten() {
        // Our own annotation wins over the ConfigMap.
        response.set.entry(name).or_insert(value);
    }
    let config = Headers { request, response };
    (config != Headers::default()).then_some(config)
}

/// The headers of a `custom-headers` ConfigMap (`NAME` or `NAMESPACE/NAME`, in the Ingress's
/// own namespace): each key a header name, each value its value.
fn custom_headers(value: &str, namespace: &str, referenced: &Referenced) -> Result<BTreeMap<String, String>, String> {
    let (ns, name) = own_namespace(value, namespace, "ConfigMap")?;
    let map = referenced.config_maps.get(ns, name).ok_or_else(|| not_found(format_args!("ConfigMap {ns}/{name}")))?;
    let mut headers = BTreeMap::new();
    for (key, value) in map.data.iter().flatten() {
        check::header_name(key)
            .and_then(|()| check::header_value(value))
            .map_err(|e| format!("ConfigMap {ns}/{name}: data.{key}: {e}"))?;
        headers.insert(key.to_ascii_lowercase(), value.clone());
    }
    Ok(headers)
}

fn affinity_config(r: &mut Reader) -> Option<Affinity> {
    let kind = r.get(names::NGINX_AFFINITY)?;
    if kind != "cookie" {
        r.error(names::NGINX_AFFINITY, format!("{kind:?} is not supported; the only affinity is \"cookie\""));
        return None;
    }
    let defaults = Affinity::default();
    Some(Affinity {
        cookie: r.checked(names::NGINX_SESSION_COOKIE_NAME, check::cookie_name).unwrap_or(defaults.cookie),
        mode: r.parsed(names::NGINX_AFFINITY_MODE, str::parse).unwrap_or(defaults.mode),
        path: r.checked(names::NGINX_SESSION_COOKIE_PATH, check::cookie_path),
        domain: r.checked(names::NGINX_SESSION_COOKIE_DOMAIN, check::cookie_domain),
        max_age: r.parsed(names::NGINX_SESSION_COOKIE_MAX_AGE, seconds),
        expires: r.parsed(names::NGINX_SESSION_COOKIE_EXPIRES, seconds),
        same_site: r.parsed(names::NGINX_SESSION_COOKIE_SAMESITE, str::parse),
        conditional_same_site_none: r
            .parsed(names::NGINX_SESSION_COOKIE_CONDITIONAL_SAMESITE_NONE, parse_bool)
            .unwrap_or(false),
        secure: r.parsed(names::NGINX_SESSION_COOKIE_SECURE, parse_bool),
        change_on_failure: r.parsed(names::NGINX_SESSION_COOKIE_CHANGE_ON_FAILURE, parse_bool).unwrap_or(false),
    })
}

/// A whole number of seconds, zero included.
fn seconds(value: &str) -> Result<u64, String> {
    value.trim().parse().map_err(|_| format!("{value:?} is not a whole number of seconds"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    use super::*;
    use crate::index::{name, namespace};

    fn run(pairs: &[(&str, &str)], maps: &[ConfigMap]) -> (Vec<FilterSpec>, Vec<(String, String)>) {
        run_with(pairs, maps, &[])
    }

    /// The built-ins of `pairs`, with these ConfigMaps and Secrets in the cluster.
    fn run_with(
        pairs: &[(&str, &str)],
        maps: &[ConfigMap],
        secrets: &[Secret],
    ) -> (Vec<FilterSpec>, Vec<(String, String)>) {
        let annotations = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut referenced = Referenced::default();
        for map in maps {
            let (ns, name) = (namespace(&map.metadata), name(&map.metadata));
            referenced.config_maps.insert(ns, name, Arc::new(map.clone()));
        }
        for secret in secrets {
            let (ns, name) = (namespace(&secret.metadata), name(&secret.metadata));
            referenced.secrets.insert(ns, name, Arc::new(secret.clone()));
        }
        let mut errors = Vec::new();
        let specs = builtin_filters(&annotations, "shop", "app", &referenced, 503, &mut Vec::new(), &mut errors);
        (specs, errors)
    }

    /// The configuration of the first built-in `pairs` ask for, which must all be valid.
    fn first_config<T: Config>(pairs: &[(&str, &str)]) -> Option<T> {
        let (specs, errors) = run(pairs, &[]);
        assert_eq!(errors, vec![]);
        specs.first().map(|spec| sluice_builtins::parse(&spec.config).unwrap())
    }

    #[test]
    fn nothing_asked_nothing_attached() {
        assert_eq!(run(&[("nginx.ingress.kubernetes.io/use-regex", "true")], &[]), (vec![], vec![]));
    }

    #[test]
    fn auth_url_settings_and_the_service_it_calls() {
        let url = "nginx.ingress.kubernetes.io/auth-url";
        let annotations: BTreeMap<String, String> = [
            (url, "http://auth.shop.svc.cluster.local:8080/verify?v=1"),
            ("nginx.ingress.kubernetes.io/auth-method", "post"),
            ("nginx.ingress.kubernetes.io/auth-response-headers", "X-User, X-Groups"),
            ("nginx.ingress.kubernetes.io/auth-signin", "https://login.example.com/start"),
            ("nginx.ingress.kubernetes.io/auth-signin-redirect-param", "next"),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "$remote_addr$http_authorization"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (mut backends, mut errors) = (Vec::new(), Vec::new());
        let specs =
            builtin_filters(&annotations, "shop", "app", &Referenced::default(), 503, &mut backends, &mut errors);
        assert_eq!(errors, vec![]);
        let config: AuthUrl = sluice_builtins::parse(&specs[0].config).unwrap();
        assert_eq!((config.service.as_str(), config.path.as_str()), ("auth:8080", "/verify?v=1"));
        assert_eq!((config.method.as_str(), config.redirect_param.as_str()), ("POST", "next"));
        assert_eq!(config.response_headers, ["x-user", "x-groups"]);
        assert_eq!(config.signin.as_deref(), Some("https://login.example.com/start"));
        let cache = config.cache.unwrap();
        assert_eq!(
            (cache.key.as_str(), cache.durations),
            ("$remote_addr$http_authorization", vec![(200, 300), (202, 300), (401, 300)])
        );
        let key = BackendKey {
            namespace: "shop".into(),
            service: "auth".into(),
            port: PortRef::Number(8080),
            cluster_ip: false,
        };
        assert_eq!(backends, [(format!("metadata.annotations[{url}]"), key)]);

        for (pairs, field) in [
            (&[(url, "http://auth.other.svc/verify")][..], url),
            (
                &[(url, "http://auth/"), ("nginx.ingress.kubernetes.io/auth-signin", "login")][..],
                "nginx.ingress.kubernetes.io/auth-signin",
            ),
            (
                &[(url, "http://auth/"), ("nginx.ingress.kubernetes.io/auth-response-headers", "x-a, x b")][..],
                "nginx.ingress.kubernetes.io/auth-response-headers",
            ),
            (
                &[(url, "http://auth/"), ("nginx.ingress.kubernetes.io/auth-cache-key", "$remote_user")][..],
                "nginx.ingress.kubernetes.io/auth-cache-key",
            ),
            // Settings without the URL: the route was meant to be guarded.
            (
                &[("nginx.ingress.kubernetes.io/auth-signin", "https://login.example.com/")][..],
                "nginx.ingress.kubernetes.io/auth-signin",
            ),
        ] {
            let (_, errors) = run(pairs, &[]);
            assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
            assert_eq!(errors[0].0, format!("metadata.annotations[{field}]"));
        }
    }

    #[test]
    fn compiles_in_chain_order() {
        let (specs, errors) = run(
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                ("nginx.ingress.kubernetes.io/session-cookie-max-age", "60"),
                ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
                ("nginx.ingress.kubernetes.io/upstream-vhost", "internal.example"),
                ("sluice.dev/response-headers", "set: {X-Frame-Options: DENY}\nremove: [server]"),
                ("nginx.ingress.kubernetes.io/enable-cors", "true"),
                ("nginx.ingress.kubernetes.io/limit-rps", "10"),
                ("nginx.ingress.kubernetes.io/denylist-source-range", "192.0.2.0/24"),
                ("nginx.ingress.kubernetes.io/auth-url", "http://auth/verify"),
            ],
            &[],
        );
        assert_eq!(errors, vec![]);
        let plugins: Vec<&str> = specs.iter().map(|s| s.plugin.as_str()).collect();
        assert_eq!(plugins, ["source-ranges", "rate-limit", "cors", "auth-url", "rewrite", "headers", "affinity"]);
        assert_eq!(plugins, sluice_builtins::ALL.into_iter().filter(|p| *p != "basic-auth").collect::<Vec<_>>());
        assert_eq!(specs[1].config, r#"{"rps":{"limit":10,"burst":50},"status":503,"zone":"shop/app"}"#);
        assert_eq!(sluice_builtins::parse::<Cors>(&specs[2].config).unwrap(), Cors::default());
        assert_eq!(specs[4].config, r#"{"target":"/$2"}"#);
        let headers: Headers = sluice_builtins::parse(&specs[5].config).unwrap();
        assert_eq!(headers.request.set["host"], "internal.example");
        assert_eq!(headers.response.set["x-frame-options"], "DENY");
        assert_eq!(headers.response.remove, ["server"]);
        let affinity: Affinity = sluice_builtins::parse(&specs[6].config).unwrap();
        assert_eq!((affinity.cookie.as_str(), affinity.max_age), ("INGRESSCOOKIE", Some(60)));
    }

    #[test]
    fn source_ranges() {
        let ranges = first_config::<SourceRanges>;
        let list = |value| source_ranges::parse_list(value).unwrap();
        let allow = "nginx.ingress.kubernetes.io/allowlist-source-range";
        let whitelist = "nginx.ingress.kubernetes.io/whitelist-source-range";
        let deny = "nginx.ingress.kubernetes.io/denylist-source-range";
        let both = ranges(&[(allow, "10.0.0.0/8, 192.0.2.1"), (deny, "10.9.0.0/16")]).unwrap();
        assert_eq!((both.allow, both.deny), (list("10.0.0.0/8,192.0.2.1"), list("10.9.0.0/16")));
        assert_eq!(ranges(&[(whitelist, "10.0.0.0/8")]).unwrap().allow, list("10.0.0.0/8"));
        // The new name wins over the old one; an empty new one leaves it to the old one.
        assert_eq!(ranges(&[(allow, "10.0.0.0/8"), (whitelist, "bad")]).unwrap().allow, list("10.0.0.0/8"));
        assert_eq!(ranges(&[(allow, ""), (whitelist, "10.0.0.0/8")]).unwrap().allow, list("10.0.0.0/8"));
        assert_eq!(ranges(&[(deny, "::1")]).unwrap().allow, vec![]);
        let (specs, errors) = run(&[(allow, "10.0.0.0/8"), ("nginx.ingress.kubernetes.io/enable-cors", "true")], &[]);
        assert_eq!(errors, vec![]);
        assert_eq!(specs.iter().map(|s| s.plugin.as_str()).collect::<Vec<_>>(), ["source-ranges", "cors"]);
    }

    #[test]
    fn rate_limits() {
        let limits = first_config::<RateLimit>;
        let list = |value| source_ranges::parse_list(value).unwrap();
        let rps = "nginx.ingress.kubernetes.io/limit-rps";
        let rpm = "nginx.ingress.kubernetes.io/limit-rpm";
        let multiplier = "nginx.ingress.kubernetes.io/limit-burst-multiplier";
        let connections = "nginx.ingress.kubernetes.io/limit-connections";
        let allow = "nginx.ingress.kubernetes.io/limit-allowlist";
        let whitelist = "nginx.ingress.kubernetes.io/limit-whitelist";
        let all = limits(&[(rps, "10"), (rpm, " 300 "), (multiplier, "2"), (connections, "4"), (allow, "10.0.0.0/8")]);
        let expected = RateLimit {
            rps: Some(rate_limit::Rate { limit: 10, burst: 20 }),
            rpm: Some(rate_limit::Rate { limit: 300, burst: 600 }),
            connections: Some(4),
            allow: list("10.0.0.0/8"),
            status: 503,
            zone: "shop/app".to_owned(),
        };
        assert_eq!(all, Some(expected));
        let rpm_only = limits(&[(rpm, "60")]).unwrap();
        assert_eq!((rpm_only.rps, rpm_only.rpm), (None, Some(rate_limit::Rate { limit: 60, burst: 300 })));
        let connections_only = limits(&[(connections, "1"), (multiplier, "3")]).unwrap();
        assert_eq!((connections_only.connections, connections_only.rps), (Some(1), None));
        // The new name wins over the old one; an empty new one leaves it to the old one.
        assert_eq!(limits(&[(rps, "1"), (whitelist, "::1")]).unwrap().allow, list("::1"));
        assert_eq!(limits(&[(rps, "1"), (allow, "::1"), (whitelist, "bad")]).unwrap().allow, list("::1"));
        assert_eq!(limits(&[(rps, "1"), (allow, " "), (whitelist, "10.0.0.0/8")]).unwrap().allow, list("10.0.0.0/8"));
        assert_eq!(limits(&[(rps, "1"), (allow, "")]).unwrap().allow, vec![]);
        // Without a limit, the other two are ignored, as in ingress-nginx.
        assert_eq!(run(&[(multiplier, "0"), (allow, "bad"), (whitelist, "bad")], &[]), (vec![], vec![]));
        // The status is the gateway's.
        let annotations = [(rps.to_owned(), "1".to_owned())].into();
        let mut errors = Vec::new();
        let specs =
            builtin_filters(&annotations, "shop", "app", &Referenced::default(), 429, &mut Vec::new(), &mut errors);
        assert_eq!(errors, vec![]);
        assert_eq!(sluice_builtins::parse::<RateLimit>(&specs[0].config).unwrap().status, 429);
    }

    #[test]
    fn cors_settings() {
        let cors = first_config::<Cors>;
        assert_eq!(cors(&[("nginx.ingress.kubernetes.io/enable-cors", "false")]), None);
        assert_eq!(cors(&[("nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.test")]), None);
        let set = cors(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.test, https://*.b.test:8443"),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", " PUT, GET "),
            ("nginx.ingress.kubernetes.io/cors-allow-headers", "X-Forwarded-For, X-app123-XPTO"),
            ("nginx.ingress.kubernetes.io/cors-expose-headers", "*, X-CustomResponseHeader"),
            ("nginx.ingress.kubernetes.io/cors-allow-credentials", "false"),
            ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
        ]);
        let expected = Cors {
            allow_origin: vec!["https://a.test".into(), "https://*.b.test:8443".into()],
            allow_methods: "PUT, GET".into(),
            allow_headers: "X-Forwarded-For, X-app123-XPTO".into(),
            expose_headers: "*, X-CustomResponseHeader".into(),
            allow_credentials: false,
            max_age: 600,
        };
        assert_eq!(set, Some(expected));
    }

    /// A Secret of namespace `shop` labelled for basic authentication.
    fn secret(name: &str, string_data: &[(&str, &str)]) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {BASIC_AUTH_LABEL: "true"}},
            "stringData": string_data.iter().copied().collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn basic_auth_from_a_secret() {
        let secrets = [
            secret("file", &[("auth", "# staff\nann:{PLAIN}one\nbob:$apr1$Zbx7wQch$V1s6qIeZipTO/mOq2pBpJ1\n")]),
            secret("map", &[("ann", "{PLAIN}one\n"), ("bob", "{SHA}mYaP0lMpbAbqlz+/QP6oV6SzMLc=")]),
        ];
        let auth = |pairs: &[(&str, &str)]| {
            let (specs, errors) = run_with(pairs, &[], &secrets);
            assert_eq!(errors, vec![]);
            let plugins: Vec<&str> = specs.iter().map(|s| s.plugin.as_str()).collect();
            assert_eq!(plugins, ["cors", "basic-auth", "rewrite"], "between CORS and rewrites");
            sluice_builtins::parse::<BasicAuth>(&specs[1].config).unwrap()
        };
        let chain =
            [("nginx.ingress.kubernetes.io/enable-cors", "true"), ("nginx.ingress.kubernetes.io/app-root", "/app")];
        let file = auth(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "file"),
            chain[0],
            chain[1],
        ]);
        assert_eq!(file.realm, "");
        assert_eq!(file.users.keys().collect::<Vec<_>>(), ["ann", "bob"]);
        let map = auth(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "shop/map"),
            ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-map"),
            ("nginx.ingress.kubernetes.io/auth-realm", "Staff only"),
            chain[0],
            chain[1],
        ]);
        assert_eq!((map.realm.as_str(), map.users["ann"].as_str()), ("Staff only", "{PLAIN}one"));
        assert_eq!(map.users.len(), 2);
    }

    #[test]
    fn basic_auth_errors_name_their_annotation_and_fail_closed() {
        let secrets = [
            secret("file", &[("auth", "ann:{PLAIN}one")]),
            secret("nokey", &[("users", "ann:{PLAIN}one")]),
            secret("badhash", &[("auth", "ann:not-a-hash")]),
            secret("empty", &[("auth", "# nobody")]),
        ];
        let auth_type = "nginx.ingress.kubernetes.io/auth-type";
        let auth_secret = "nginx.ingress.kubernetes.io/auth-secret";
        let basic = (auth_type, "basic");
        // The annotations, the field of the one error, and what its message says.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 11] = [
            (&[(auth_type, "digest"), (auth_secret, "file")], auth_type, "not supported"),
            (&[(auth_type, "ntlm"), (auth_secret, "file")], auth_type, "not an authentication type"),
            (&[basic], auth_secret, "is required"),
            (&[basic, (auth_secret, "missing")], auth_secret, "Secret shop/missing not found"),
            (&[basic, (auth_secret, "other/file")], auth_secret, "not in the Ingress's namespace"),
            (&[basic, (auth_secret, "nokey")], auth_secret, "has no auth"),
            (&[basic, (auth_secret, "badhash")], auth_secret, "line 1: a hash in none of the forms"),
            (&[basic, (auth_secret, "empty")], auth_secret, "has no users"),
            (
                &[basic, (auth_secret, "file"), ("nginx.ingress.kubernetes.io/auth-secret-type", "htpasswd")],
                "nginx.ingress.kubernetes.io/auth-secret-type",
                "neither",
            ),
            (
                &[basic, (auth_secret, "file"), ("nginx.ingress.kubernetes.io/auth-realm", "a \"b\"")],
                "nginx.ingress.kubernetes.io/auth-realm",
                "holds",
            ),
            (&[(auth_secret, "file")], auth_secret, "has no effect without"),
        ];
        for (pairs, field, message) in cases {
            let (_, errors) = run_with(pairs, &[], &secrets);
            assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
            assert_eq!(errors[0].0, format!("metadata.annotations[{field}]"), "{pairs:?}");
            assert!(errors[0].1.contains(message), "{pairs:?}: {}", errors[0].1);
        }
        // A map's bad entry names its user, never its hash.
        let map = [secret("map", &[("ann", "secret-looking")])];
        let (_, errors) = run_with(
            &[basic, (auth_secret, "map"), ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-map")],
            &[],
            &map,
        );
        assert!(
            errors[0].1.starts_with("Secret shop/map: ann: ") && !errors[0].1.contains("secret-looking"),
            "{errors:?}"
        );
    }

    #[test]
    fn satisfy_any_lets_the_ranges_or_the_credentials_suffice() {
        let secrets = [secret("file", &[("auth", "ann:{PLAIN}one")])];
        let basic = [
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "file"),
            ("nginx.ingress.kubernetes.io/allowlist-source-range", "10.0.0.0/8"),
        ];
        let plugins = |specs: &[FilterSpec]| specs.iter().map(|s| s.plugin.clone()).collect::<Vec<_>>();
        let (all, errors) = run_with(&basic, &[], &secrets);
        assert_eq!((plugins(&all), errors), (vec!["source-ranges".to_owned(), "basic-auth".to_owned()], vec![]));
        let satisfy = "nginx.ingress.kubernetes.io/satisfy";
        let (any, errors) = run_with(&[basic[0], basic[1], basic[2], (satisfy, "any")], &[], &secrets);
        assert_eq!((plugins(&any), errors), (vec!["basic-auth".to_owned()], vec![]), "one filter decides");
        let auth: BasicAuth = sluice_builtins::parse(&any[0].config).unwrap();
        assert_eq!(auth.or_ranges.unwrap().allow, source_ranges::parse_list("10.0.0.0/8").unwrap());
        // Without both checks there is nothing to choose between.
        let (ranges_only, errors) = run_with(&[basic[2], (satisfy, "any")], &[], &secrets);
        assert_eq!((plugins(&ranges_only), errors), (vec!["source-ranges".to_owned()], vec![]));
        let (_, errors) = run_with(&[basic[0], basic[1], (satisfy, "either")], &[], &secrets);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, format!("metadata.annotations[{satisfy}]"));
    }

    #[test]
    fn redirects() {
        let (specs, _) = run(
            &[
                ("nginx.ingress.kubernetes.io/permanent-redirect", "https://example.com/new"),
                ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
            ],
            &[],
        );
        let rewrite: Rewrite = sluice_builtins::parse(&specs[0].config).unwrap();
        assert_eq!(rewrite.redirect, Some(Redirect { location: "https://example.com/new".into(), status: 308 }));
        let (specs, _) = run(
            &[
                ("nginx.ingress.kubernetes.io/permanent-redirect", "https://example.com/p"),
                ("nginx.ingress.kubernetes.io/temporal-redirect", "/t"),
            ],
            &[],
        );
        let rewrite: Rewrite = sluice_builtins::parse(&specs[0].config).unwrap();
        assert_eq!(rewrite.redirect, Some(Redirect { location: "/t".into(), status: 302 }));
    }

    #[test]
    fn invalid_values_name_their_annotation() {
        let cases = [
            ("nginx.ingress.kubernetes.io/app-root", "app"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "new/$1"),
            ("nginx.ingress.kubernetes.io/permanent-redirect", "example.com"),
            ("nginx.ingress.kubernetes.io/affinity", "ip"),
            ("sluice.dev/request-headers", "set: {bad name: x}"),
            ("sluice.dev/response-headers", "sett: {}"),
            ("nginx.ingress.kubernetes.io/custom-headers", "shop/missing"),
            ("nginx.ingress.kubernetes.io/custom-headers", "other/headers"),
            ("nginx.ingress.kubernetes.io/enable-cors", "yes"),
            ("nginx.ingress.kubernetes.io/allowlist-source-range", "10.0.0.0/33"),
            ("nginx.ingress.kubernetes.io/allowlist-source-range", ""),
            ("nginx.ingress.kubernetes.io/whitelist-source-range", "10.0.0.0/8,"),
            ("nginx.ingress.kubernetes.io/denylist-source-range", "example.com"),
            ("nginx.ingress.kubernetes.io/limit-rps", "0"),
            ("nginx.ingress.kubernetes.io/limit-rps", "1.5"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "-1"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "99999999999"),
            ("nginx.ingress.kubernetes.io/limit-connections", "many"),
        ];
        for (name, value) in cases {
            let (_, errors) = run(&[(name, value)], &[]);
            assert_eq!(errors.len(), 1, "{name}: {value}");
            assert_eq!(errors[0].0, format!("metadata.annotations[{name}]"));
        }
        let affinity = [
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-samesite", "Sometimes"),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "1h"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "sticky"),
            ("nginx.ingress.kubernetes.io/permanent-redirect", "/x"),
            ("nginx.ingress.kubernetes.io/permanent-redirect-code", "200"),
        ];
        let fields: Vec<String> = run(&affinity, &[]).1.into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields.len(), 4, "{fields:?}");
        let limits = [
            ("nginx.ingress.kubernetes.io/limit-rps", "5"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "0"),
            ("nginx.ingress.kubernetes.io/limit-allowlist", "10.0.0.0/8, 10.1"),
        ];
        let fields: Vec<String> = run(&limits, &[]).1.into_iter().map(|(f, _)| f).collect();
        let expected: Vec<String> =
            limits[1..].iter().map(|(name, _)| format!("metadata.annotations[{name}]")).collect();
        assert_eq!(fields, expected);
        let (_, errors) = run(&[limits[0], ("nginx.ingress.kubernetes.io/limit-whitelist", "example.com")], &[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "metadata.annotations[nginx.ingress.kubernetes.io/limit-whitelist]");
        let cors = [
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "origin.cors.com:8080, https://a.test"),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET; DELETE"),
            ("nginx.ingress.kubernetes.io/cors-allow-headers", "$http_x"),
            ("nginx.ingress.kubernetes.io/cors-expose-headers", ""),
            ("nginx.ingress.kubernetes.io/cors-allow-credentials", "1"),
            ("nginx.ingress.kubernetes.io/cors-max-age", "-1"),
        ];
        let fields: Vec<String> = run(&cors, &[]).1.into_iter().map(|(f, _)| f).collect();
        let expected: Vec<String> = cors[1..].iter().map(|(name, _)| format!("metadata.annotations[{name}]")).collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn custom_headers_from_a_config_map() {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "headers", "namespace": "shop"},
            "data": {"X-Custom": "1", "x-frame-options": "SAMEORIGIN"}
        }))
        .unwrap();
        let pairs = [
            ("nginx.ingress.kubernetes.io/custom-headers", "shop/headers"),
            ("sluice.dev/response-headers", "set: {x-frame-options: DENY}"),
        ];
        let (specs, errors) = run(&pairs, &[map]);
        assert_eq!(errors, vec![]);
        let headers: Headers = sluice_builtins::parse(&specs[0].config).unwrap();
        assert_eq!(headers.response.set["x-custom"], "1");
        assert_eq!(headers.response.set["x-frame-options"], "DENY");
    }
}
