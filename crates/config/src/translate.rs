//! Ingress objects to the routing model.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use sluice_builtins::check;

use crate::annotations::{self, Reader};
use crate::backend_tls;
use crate::builtins::builtin_filters;
use crate::error::{ConfigError, ObjectRef, not_found};
use crate::filters::{FILTERS, FilterSpec, parse_filters};
use crate::index::{Referenced, namespace, secret_entry};
use crate::model::{
    Alias, BackendKey, BackendProtocol, BackendTlsSpec, CanaryRules, DefaultBackend, ErrorPagesSpec, HashKey,
    HostMatch, IngressInfo, IngressModel, LoadBalance, NextUpstream, PathMatch, PortRef, RouteSpec, TlsCertificate,
    TlsSpec, UpstreamPolicy, parse_host,
};

/// Whether `ingress` belongs to `class` (or names no class and `class` is the default).
pub(crate) fn is_ours(ingress: &Ingress, class: &str, default_class: bool) -> bool {
    let named = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).or_else(|| {
        let annotations = ingress.metadata.annotations.as_ref()?;
        annotations.get(annotations::INGRESS_CLASS).map(String::as_str)
    });
    named.map_or(default_class, |named| named == class)
}

/// Collects one Ingress's routes, reporting what is wrong with each part.
struct IngressTranslation<'o> {
    origin: &'o Arc<str>,
    model: IngressModel,
    /// `service-upstream`.
    cluster_ip: bool,
}

impl IngressTranslation<'_> {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.model.errors.push(ConfigError::field(self.origin, &self.model.info.id, field, message));
    }

    /// The backend of `field`, recorded for resolving; `None` (reported) when it is unusable.
    fn backend(&mut self, backend: &IngressBackend, field: String) -> Option<BackendKey> {
        if backend.resource.is_some() {
            self.error(format!("{field}.resource"), "resource backends are not supported; use a Service");
            return None;
        }
        let Some(service) = &backend.service else {
            self.error(format!("{field}.service"), "is required");
            return None;
        };
        let port = service.port.as_ref();
        let port = match (port.and_then(|p| p.number), port.and_then(|p| p.name.clone())) {
            (Some(number), None) => PortRef::Number(number),
            (None, Some(name)) => PortRef::Name(name),
            _ => {
                self.error(format!("{field}.service.port"), "needs exactly one of number and name");
                return None;
            }
        };
        let namespace = self.model.info.id.namespace.clone();
        let key = BackendKey { namespace, service: service.name.clone(), port, cluster_ip: self.cluster_ip };
        self.model.backends.push((format!("{field}.service"), key.clone()));
        Some(key)
    }
}

/// The annotations that change how an Ingress is translated.
struct IngressOptions {
    regex_mode: bool,
    ssl_redirect: bool,
    force_ssl_redirect: bool,
    preserve_trailing_slash: bool,
    backend_protocol: BackendProtocol,
    max_body_size: Option<u64>,
    filters: Result<Vec<FilterSpec>, String>,
    canary: Option<CanaryRules>,
    upstream: UpstreamPolicy,
    load_balance: LoadBalance,
    hash_by: Option<HashKey>,
    hash_subset: Option<usize>,
    service_upstream: bool,
    access_log: bool,
    unavailable_backend: Option<String>,
    /// Services the built-in filters call, with the fields naming them.
    filter_backends: Vec<(String, BackendKey)>,
    www_redirect: bool,
    backend_tls: Option<Arc<BackendTlsSpec>>,
    error_pages: Option<ErrorPagesSpec>,
}

/// Reads the annotations; a malformed value is reported (field, message) and its default used.
fn read_annotations(
    ingress: &Ingress,
    referenced: &Referenced,
    limit_status: u16,
    errors: &mut Vec<(String, String)>,
) -> IngressOptions {
    let empty = BTreeMap::new();
    let all = ingress.metadata.annotations.as_ref().unwrap_or(&empty);
    // Built-ins first, then the Ingress's own filters. A broken value anywhere fails every
    // route closed: a rewrite, redirect or guard filter must not silently disappear.
    let mut filter_errors = Vec::new();
    let mut filter_backends = Vec::new();
    let namespace = namespace(&ingress.metadata);
    let name = ingress.metadata.name.as_deref().unwrap_or_default();
    let mut filters =
        builtin_filters(all, namespace, name, referenced, limit_status, &mut filter_backends, &mut filter_errors);
    match all.get(FILTERS).map(|value| parse_filters(value)) {
        Some(Ok(specs)) => filters.extend(specs),
        Some(Err(message)) => filter_errors.push((annotations::field(FILTERS), message)),
        None => {}
    }
    // A snippet may be what guards the route (a `deny`, an auth check): refused, never run,
    // and the routes fail closed rather than open.
    for name in annotations::NGINX_SNIPPETS.iter().filter(|name| all.contains_key(**name)) {
        let message = "nginx configuration snippets are never interpreted; \
                       do this with a filter (sluice.dev/filters) instead";
        filter_errors.push((annotations::field(name), message.to_owned()));
    }
    // Access control that is not enforced yet: serving the routes anyway would expose what the
    // annotation was written to protect.
    for name in annotations::NGINX_UNENFORCED_GUARDS.iter().filter(|name| all.contains_key(**name)) {
        let message = "this access-control annotation is not supported yet, so the routes it guards \
                       are not served; remove it or guard the route with a filter (sluice.dev/filters)";
        filter_errors.push((annotations::field(name), message.to_owned()));
    }
    let filters = match filter_errors.first() {
        None => Ok(filters),
        Some((field, message)) => Err(format!("{field}: {message}")),
    };
    errors.extend(filter_errors.into_iter().map(|(field, message)| {
        (field, format!("{message}; every route of this Ingress answers 500 until it is fixed"))
    }));

    let mut r = Reader { annotations: all, errors };
    let mut flag = |name: &str, default: bool| r.parsed(name, annotations::parse_bool).unwrap_or(default);
    let use_regex = flag(annotations::NGINX_USE_REGEX, false);
    let ssl_redirect = flag(annotations::NGINX_SSL_REDIRECT, true);
    let force_ssl_redirect = flag(annotations::NGINX_FORCE_SSL_REDIRECT, false);
    let preserve_trailing_slash = flag(annotations::NGINX_PRESERVE_TRAILING_SLASH, false);
    let canary = flag(annotations::NGINX_CANARY, false);
    let service_upstream = flag(annotations::NGINX_SERVICE_UPSTREAM, false);
    let access_log = flag(annotations::NGINX_ENABLE_ACCESS_LOG, true);
    let www_redirect = flag(annotations::NGINX_FROM_TO_WWW_REDIRECT, false);
    let hash_subset = flag(annotations::NGINX_UPSTREAM_HASH_BY_SUBSET, false);
    let intercept = !flag(annotations::NGINX_DISABLE_PROXY_INTERCEPT_ERRORS, false);
    let rewrite = r.get(annotations::NGINX_REWRITE_TARGET).is_some_and(|t| !t.is_empty());
    let backend_protocol = r.parsed(annotations::NGINX_BACKEND_PROTOCOL, str::parse).unwrap_or_default();
    let max_body_size =
        r.parsed(annotations::NGINX_PROXY_BODY_SIZE, annotations::parse_size).filter(|&limit| limit > 0);
    // Accepted for what they mean here: bodies stream both ways, never buffered (see README).
    r.parsed(annotations::NGINX_PROXY_BUFFERING, annotations::parse_on_off);
    r.parsed(annotations::NGINX_PROXY_REQUEST_BUFFERING, annotations::parse_on_off);
    r.parsed(annotations::NGINX_CLIENT_BODY_BUFFER_SIZE, annotations::parse_size);
    r.checked(annotations::NGINX_PROXY_HTTP_VERSION, |v| match v.trim() {
        "1.1" => Ok(()),
        other => Err(format!("{other:?}: Sluice speaks HTTP/1.1 (or HTTP/2 for gRPC) to backends")),
    });
    let unavailable_backend = r.checked(annotations::NGINX_DEFAULT_BACKEND, check_service_name);
    let error_pages = error_pages(&mut r, intercept, unavailable_backend.is_some());
    IngressOptions {
        regex_mode: use_regex || rewrite,
        ssl_redirect,
        force_ssl_redirect,
        preserve_trailing_slash,
        backend_protocol,
        max_body_size,
        filters,
        canary: canary.then(|| canary_rules(&mut r)),
        upstream: upstream_policy(&mut r),
        load_balance: r.parsed(annotations::NGINX_LOAD_BALANCE, str::parse).unwrap_or_default(),
        hash_by: r.parsed(annotations::NGINX_UPSTREAM_HASH_BY, str::parse),
        hash_subset: hash_subset.then(|| {
            let size = |v: &str| match v.trim().parse::<usize>() {
                Ok(size) if size > 0 => Ok(size),
                _ => Err(format!("{v:?} is not a whole number of endpoints above 0")),
            };
            r.parsed(annotations::NGINX_UPSTREAM_HASH_BY_SUBSET_SIZE, size).unwrap_or(3)
        }),
        service_upstream,
        access_log,
        unavailable_backend,
        filter_backends,
        www_redirect,
        backend_tls: backend_tls::read(&mut r, referenced, namespace, backend_protocol),
        error_pages,
    }
}

/// `custom-http-errors` (with `disable-proxy-intercept-errors`); they need `default-backend`,
/// as Sluice has no gateway-wide default backend to send errors to.
fn error_pages(r: &mut Reader, intercept: bool, default_backend: bool) -> Option<ErrorPagesSpec> {
    let codes = r.parsed(annotations::NGINX_CUSTOM_HTTP_ERRORS, |value| {
        let mut codes = Vec::new();
        for code in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match code.parse::<u16>() {
                Ok(status @ 400..=599) => codes.push(status),
                _ => return Err(format!("{code:?} is not a status from 400 to 599")),
            }
        }
        codes.sort_unstable();
        codes.dedup();
        Ok(codes)
    });
    match codes {
        Some(codes) if !codes.is_empty() && default_backend => Some(ErrorPagesSpec { codes, intercept }),
        Some(codes) if !codes.is_empty() => {
            let message = format!(
                "has no effect without {}: Sluice has no gateway-wide default backend to send errors to",
                annotations::NGINX_DEFAULT_BACKEND
            );
            r.error(annotations::NGINX_CUSTOM_HTTP_ERRORS, message);
            None
        }
        _ => {
            if !intercept && r.get(annotations::NGINX_CUSTOM_HTTP_ERRORS).is_none() {
                let message = format!("has no effect without {}", annotations::NGINX_CUSTOM_HTTP_ERRORS);
                r.error(annotations::NGINX_DISABLE_PROXY_INTERCEPT_ERRORS, message);
            }
            None
        }
    }
}

/// A Service name: a DNS label (RFC 1035), as Kubernetes requires.
fn check_service_name(name: &str) -> Result<(), String> {
    let label = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label { Ok(()) } else { Err(format!("{name:?} is not a Service name")) }
}

/// The `canary-*` annotations of a canary Ingress. An invalid value is reported and left out,
/// which sends fewer requests to the canary, never more.
fn canary_rules(r: &mut Reader) -> CanaryRules {
    let header = r.checked(annotations::NGINX_CANARY_BY_HEADER, check::header_name).map(|h| h.to_ascii_lowercase());
    let mut header_value = r.checked(annotations::NGINX_CANARY_BY_HEADER_VALUE, check::header_value);
    let mut header_pattern = r.checked(annotations::NGINX_CANARY_BY_HEADER_PATTERN, |pattern| {
        regex_syntax::Parser::new().parse(pattern).map(drop).map_err(|e| format!("not a valid regular expression: {e}"))
    });
    let cookie = r.checked(annotations::NGINX_CANARY_BY_COOKIE, check::cookie_name);
    let number = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("{v:?} is not a whole number"));
    // ingress-nginx reads a total below 100 as 100; refused, since it reads two ways.
    let weight_total = r
        .parsed(annotations::NGINX_CANARY_WEIGHT_TOTAL, |v| match number(v)? {
            total if total < 100 => Err(format!("{total} is below 100, which ingress-nginx would read as 100")),
            total => Ok(total),
        })
        .unwrap_or(100);
    let weight = r
        .parsed(annotations::NGINX_CANARY_WEIGHT, |v| match number(v)? {
            weight if weight > weight_total => Err(format!("{weight} is more than the total weight {weight_total}")),
            weight => Ok(weight),
        })
        .unwrap_or(0);
    if header.is_none() {
        for (name, set) in [
            (annotations::NGINX_CANARY_BY_HEADER_VALUE, header_value.take().is_some()),
            (annotations::NGINX_CANARY_BY_HEADER_PATTERN, header_pattern.take().is_some()),
        ] {
            if set {
                r.error(name, format!("has no effect without {}", annotations::NGINX_CANARY_BY_HEADER));
            }
        }
    }
    CanaryRules { header, header_value, header_pattern, cookie, weight, weight_total }
}

/// The `proxy-*-timeout` and `proxy-next-upstream*` annotations; invalid ones are reported and
/// the defaults used.
fn upstream_policy(r: &mut Reader) -> UpstreamPolicy {
    let seconds = annotations::parse_seconds;
    let defaults = NextUpstream::default();
    let whole = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("{v:?} is not a whole number"));
    let next_upstream = NextUpstream {
        when: r.parsed(annotations::NGINX_PROXY_NEXT_UPSTREAM, str::parse).unwrap_or(defaults.when),
        tries: r.parsed(annotations::NGINX_PROXY_NEXT_UPSTREAM_TRIES, whole).unwrap_or(defaults.tries),
        timeout: r
            .parsed(annotations::NGINX_PROXY_NEXT_UPSTREAM_TIMEOUT, |v| match whole(v)? {
                0 => Ok(None),
                _ => seconds(v).map(Some),
            })
            .unwrap_or(defaults.timeout),
    };
    UpstreamPolicy {
        connect_timeout: r.parsed(annotations::NGINX_PROXY_CONNECT_TIMEOUT, seconds),
        read_timeout: r.parsed(annotations::NGINX_PROXY_READ_TIMEOUT, seconds),
        send_timeout: r.parsed(annotations::NGINX_PROXY_SEND_TIMEOUT, seconds),
        next_upstream,
    }
}

/// Translates one Ingress, whatever its class; its rate limits refuse with `limit_status`.
pub(crate) fn translate_ingress(
    origin: &Arc<str>,
    ingress: &Ingress,
    referenced: &Referenced,
    limit_status: u16,
) -> IngressModel {
    let id = ObjectRef::new("Ingress", namespace(&ingress.metadata), ingress.metadata.name.clone().unwrap_or_default());
    let created = ingress.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut annotation_errors = Vec::new();
    let options = read_annotations(ingress, referenced, limit_status, &mut annotation_errors);
    let unavailable_backend = options.unavailable_backend.as_ref().map(|name| BackendKey {
        namespace: id.namespace.clone(),
        service: name.clone(),
        port: PortRef::First,
        cluster_ip: options.service_upstream,
    });
    let info = IngressInfo {
        id,
        origin: origin.clone(),
        created,
        ssl_redirect: options.ssl_redirect,
        force_ssl_redirect: options.force_ssl_redirect,
        preserve_trailing_slash: options.preserve_trailing_slash,
        backend_protocol: options.backend_protocol,
        max_body_size: options.max_body_size,
        filters: options.filters,
        canary: options.canary,
        upstream: options.upstream,
        load_balance: options.load_balance,
        hash_by: options.hash_by,
        hash_subset: options.hash_subset,
        access_log: options.access_log,
        unavailable_backend,
        backend_tls: options.backend_tls,
        error_pages: options.error_pages,
    };
    let model = IngressModel {
        info: Arc::new(info),
        routes: Vec::new(),
        default_backend: None,
        tls: Vec::new(),
        aliases: Vec::new(),
        www_redirects: Vec::new(),
        errors: Vec::new(),
        backends: Vec::new(),
    };
    let mut tr = IngressTranslation { origin, model, cluster_ip: options.service_upstream };
    if let Some(key) = &tr.model.info.unavailable_backend {
        let field = annotations::field(annotations::NGINX_DEFAULT_BACKEND);
        tr.model.backends.push((field, key.clone()));
    }
    tr.model.backends.extend(options.filter_backends);
    for (field, message) in annotation_errors {
        tr.error(field, message);
    }
    let Some(spec) = &ingress.spec else { return tr.model };
    let regex_mode = options.regex_mode;

    let mut hosts = Vec::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostMatch::Any,
            Some(host) => match parse_host(host) {
                Ok(host) => host,
                Err(message) => {
                    tr.error(format!("spec.rules[{i}].host"), message);
                    continue;
                }
            },
        };
        hosts.push(host.clone());
        let paths = rule.http.as_ref().map(|http| http.paths.as_slice()).unwrap_or_default();
        for (j, path) in paths.iter().enumerate() {
            let field = || format!("spec.rules[{i}].http.paths[{j}]");
            let matcher = match parse_path(path.path.as_deref(), &path.path_type, regex_mode) {
                Ok(matcher) => matcher,
                Err((subfield, message)) => {
                    tr.error(format!("{}.{subfield}", field()), message);
                    continue;
                }
            };
            let Some(backend) = tr.backend(&path.backend, format!("{}.backend", field())) else { continue };
            let route = RouteSpec {
                ingress: tr.model.info.clone(),
                rule: i,
                path_index: j,
                host: host.clone(),
                path: matcher,
                backend,
            };
            tr.model.routes.push(route);
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        let field = format!("spec.tls[{i}]");
        let mut tls_hosts = Vec::new();
        for (j, host) in tls.hosts.iter().flatten().enumerate() {
            match parse_host(host) {
                Ok(host) => tls_hosts.push(host),
                Err(message) => tr.error(format!("{field}.hosts[{j}]"), message),
            }
        }
        if tls.hosts.as_ref().is_none_or(Vec::is_empty) {
            tls_hosts = hosts.iter().filter(|h| **h != HostMatch::Any).cloned().collect();
        }
        let certificate = match tls.secret_name.as_deref().filter(|name| !name.is_empty()) {
            // No Secret: the hosts are served over TLS with the default certificate.
            None => None,
            Some(name) => match tls_certificate(referenced, &tr.model.info.id.namespace, name) {
                Ok(certificate) => Some(Arc::new(certificate)),
                Err(message) => {
                    tr.error(format!("{field}.secretName"), format!("{message}; the default certificate is served"));
                    None
                }
            },
        };
        tr.model.tls.push(TlsSpec { ingress: tr.model.info.clone(), field, hosts: tls_hosts, certificate });
    }
    if let Some(value) = ingress.metadata.annotations.as_ref().and_then(|a| a.get(annotations::NGINX_SERVER_ALIAS)) {
        let field = annotations::field(annotations::NGINX_SERVER_ALIAS);
        match hosts.iter().find(|h| **h != HostMatch::Any) {
            None => tr.error(field, "the Ingress has no rule with a host to be an alias of"),
            Some(target) => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match parse_host(name) {
                        Ok(host) => {
                            let alias = Alias { ingress: tr.model.info.clone(), host, target: target.clone() };
                            tr.model.aliases.push(alias);
                        }
                        Err(message) => tr.error(field.clone(), message),
                    }
                }
            }
        }
    }
    if options.www_redirect {
        for target in hosts.iter().filter_map(|h| if let HostMatch::Exact(name) = h { Some(name) } else { None }) {
            let twin = match target.strip_prefix("www.") {
                Some(apex) => apex.to_owned(),
                None => format!("www.{target}"),
            };
            let host = HostMatch::Exact(twin);
            let redirect = Alias { ingress: tr.model.info.clone(), host, target: HostMatch::Exact(target.clone()) };
            tr.model.www_redirects.push(redirect);
        }
    }
    if spec.default_backend.is_some() && tr.model.info.canary.is_some() {
        let message = "a canary Ingress's defaultBackend is not used; the main Ingress's applies";
        tr.error("spec.defaultBackend", message);
    } else if let Some(backend) = &spec.default_backend
        && let Some(backend) = tr.backend(backend, "spec.defaultBackend".to_owned())
    {
        tr.model.default_backend = Some(DefaultBackend { ingress: tr.model.info.clone(), hosts, backend });
    }
    tr.model
}

/// The certificate and key of a `kubernetes.io/tls` Secret, from `data` (base64, as the API
/// server stores it) or `stringData` (plain PEM, handy in manifest files).
fn tls_certificate(referenced: &Referenced, namespace: &str, name: &str) -> Result<TlsCertificate, String> {
    let secret = referenced
        .secrets
        .get(namespace, name)
        .ok_or_else(|| not_found(format_args!("Secret {namespace}/{name} of type kubernetes.io/tls")))?;
    let entry = |key: &str| secret_entry(secret, key).ok_or_else(|| format!("Secret {namespace}/{name} has no {key}"));
    Ok(TlsCertificate {
        secret: format!("{namespace}/{name}"),
        chain_pem: entry("tls.crt")?,
        key_pem: entry("tls.key")?,
    })
}

/// Applies `pathType` (and the Ingress's regex mode) to a path. Errors name the sub-field.
fn parse_path(path: Option<&str>, path_type: &str, regex_mode: bool) -> Result<PathMatch, (&'static str, String)> {
    let absolute = |path: Option<&str>| match path {
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        Some(p) => Err(("path", format!("{p:?} must begin with '/'"))),
        None => Err(("path", "is required for this pathType".to_owned())),
    };
    match path_type {
        "Exact" => absolute(path).map(PathMatch::Exact),
        "Prefix" => absolute(path).map(|p| PathMatch::Prefix(trim_prefix(p))),
        "ImplementationSpecific" if regex_mode => {
            let pattern = path.unwrap_or("/");
            regex_syntax::Parser::new().parse(pattern).map_err(|e| {
                let (kind, at) = match &e {
                    regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span().start.offset),
                    regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span().start.offset),
                    other => (other.to_string(), 0),
                };
                ("path", format!("{pattern:?} is not a valid regular expression: {kind} at offset {at}"))
            })?;
            Ok(PathMatch::Regex(pattern.to_owned()))
        }
        "ImplementationSpecific" => absolute(path.or(Some("/"))).map(|p| PathMatch::Prefix(trim_prefix(p))),
        other => Err(("pathType", format!("{other:?} is not one of Exact, Prefix, ImplementationSpecific"))),
    }
}

/// `/foo//` is `/foo/`. `/foo/` and `/foo` match the same paths, but are kept apart: like
/// ingress-nginx, a host with both sends `/foo/...` to the one with the slash.
fn trim_prefix(path: String) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() + 1 < path.len() { format!("{trimmed}/") } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(parse_host("foo.bar.com"), Ok(HostMatch::Exact("foo.bar.com".into())));
        assert_eq!(parse_host("*.bar.com"), Ok(HostMatch::Wildcard("bar.com".into())));
        for bad in ["Foo.com", "*.*.com", "a.*.com", "foo..com", "-a.com", "10.0.0.1", "foo_bar.com", "*"] {
            assert!(parse_host(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path(Some("/foo/"), "Prefix", false), Ok(PathMatch::Prefix("/foo/".into())));
        assert_eq!(parse_path(Some("/foo//"), "Prefix", false), Ok(PathMatch::Prefix("/foo/".into())));
        assert_eq!(parse_path(Some("//"), "Prefix", false), Ok(PathMatch::Prefix("/".into())));
        assert_eq!(parse_path(Some("/"), "Prefix", false), Ok(PathMatch::Prefix("/".into())));
        assert_eq!(parse_path(Some("/foo/"), "Exact", false), Ok(PathMatch::Exact("/foo/".into())));
        assert_eq!(parse_path(None, "ImplementationSpecific", false), Ok(PathMatch::Prefix("/".into())));
        assert_eq!(
            parse_path(Some("/api(/|$)(.*)"), "ImplementationSpecific", true),
            Ok(PathMatch::Regex("/api(/|$)(.*)".into()))
        );
        // Regex mode applies to ImplementationSpecific only.
        assert_eq!(parse_path(Some("/a"), "Prefix", true), Ok(PathMatch::Prefix("/a".into())));
        assert_eq!(parse_path(Some("/a("), "ImplementationSpecific", true).unwrap_err().0, "path");
        assert_eq!(parse_path(Some("foo"), "Exact", false).unwrap_err().0, "path");
        assert_eq!(parse_path(Some("/"), "Glob", false).unwrap_err().0, "pathType");
    }
}
