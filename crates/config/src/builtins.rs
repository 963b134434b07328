//! Annotations that compile into the built-in filters (source ranges, CORS, rewrite, headers,
//! affinity): the
//! ingress-nginx ones existing Ingresses carry, and ours.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use sluice_builtins::{
    Affinity, Config, Cors, HeaderOps, Headers, Redirect, Rewrite, SourceRanges, check, cors, rewrite, source_ranges,
};

use crate::annotations::{self as names, Reader, parse_bool};
use crate::error::not_found;
use crate::filters::{FailurePolicy, FilterSpec, Isolation};

/// Finds a ConfigMap by namespace and name.
pub(crate) type ConfigMaps<'a> = dyn Fn(&str, &str) -> Option<&'a ConfigMap> + 'a;

/// The built-in filters `annotations` ask for, in chain order ([`sluice_builtins::ALL`]).
/// Invalid values are pushed to `errors` as (field, message); the caller fails the Ingress.
pub(crate) fn builtin_filters(
    annotations: &BTreeMap<String, String>,
    namespace: &str,
    config_maps: &ConfigMaps<'_>,
    errors: &mut Vec<(String, String)>,
) -> Vec<FilterSpec> {
    let mut reader = Reader { annotations, errors };
    let specs = [
        source_ranges_config(&mut reader).map(|c| spec(sluice_builtins::SOURCE_RANGES, &c)),
        cors_config(&mut reader).map(|c| spec(sluice_builtins::CORS, &c)),
        rewrite_config(&mut reader).map(|c| spec(sluice_builtins::REWRITE, &c)),
        headers_config(&mut reader, namespace, config_maps).map(|c| spec(sluice_builtins::HEADERS, &c)),
        affinity_config(&mut reader).map(|c| spec(sluice_builtins::AFFINITY, &c)),
    ];
    specs.into_iter().flatten().collect()
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

fn headers_config(r: &mut Reader, namespace: &str, config_maps: &ConfigMaps<'_>) -> Option<Headers> {
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
    let custom = r.parsed(names::NGINX_CUSTOM_HEADERS, |value| custom_headers(value, namespace, config_maps));
    for (name, value) in custom.into_iter().flatten() {
        // Our own annotation wins over the ConfigMap.
        response.set.entry(name).or_insert(value);
    }
    let config = Headers { request, response };
    (config != Headers::default()).then_some(config)
}

/// The headers of a `custom-headers` ConfigMap (`NAME` or `NAMESPACE/NAME`, in the Ingress's
/// own namespace): each key a header name, each value its value.
fn custom_headers(
    value: &str,
    namespace: &str,
    config_maps: &ConfigMaps<'_>,
) -> Result<BTreeMap<String, String>, String> {
    let (ns, name) = value.trim().split_once('/').unwrap_or((namespace, value.trim()));
    if ns != namespace {
        return Err(format!("ConfigMap {ns}/{name} is not in the Ingress's namespace {namespace}"));
    }
    let map = config_maps(ns, name).ok_or_else(|| not_found(format_args!("ConfigMap {ns}/{name}")))?;
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
    use super::*;

    fn run(pairs: &[(&str, &str)], maps: &[ConfigMap]) -> (Vec<FilterSpec>, Vec<(String, String)>) {
        let annotations = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = |ns: &str, name: &str| {
            maps.iter()
                .find(|m| m.metadata.namespace.as_deref() == Some(ns) && m.metadata.name.as_deref() == Some(name))
        };
        let mut errors = Vec::new();
        let specs = builtin_filters(&annotations, "shop", &lookup, &mut errors);
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
    fn compiles_in_chain_order() {
        let (specs, errors) = run(
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                ("nginx.ingress.kubernetes.io/session-cookie-max-age", "60"),
                ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
                ("nginx.ingress.kubernetes.io/upstream-vhost", "internal.example"),
                ("sluice.dev/response-headers", "set: {X-Frame-Options: DENY}\nremove: [server]"),
                ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ],
            &[],
        );
        assert_eq!(errors, vec![]);
        let plugins: Vec<&str> = specs.iter().map(|s| s.plugin.as_str()).collect();
        assert_eq!(plugins, ["cors", "rewrite", "headers", "affinity"]);
        assert_eq!(sluice_builtins::parse::<Cors>(&specs[0].config).unwrap(), Cors::default());
        assert_eq!(specs[1].config, r#"{"target":"/$2"}"#);
        let headers: Headers = sluice_builtins::parse(&specs[2].config).unwrap();
        assert_eq!(headers.request.set["host"], "internal.example");
        assert_eq!(headers.response.set["x-frame-options"], "DENY");
        assert_eq!(headers.response.remove, ["server"]);
        let affinity: Affinity = sluice_builtins::parse(&specs[3].config).unwrap();
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
