//! Annotation names Sluice reads, and how their values are parsed.

/// Names the IngressClass of an Ingress (the pre-`ingressClassName` way).
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// On an IngressClass: Ingresses without a class belong to this one.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// ingress-nginx: `ImplementationSpecific` paths of this Ingress are regular expressions.
pub const NGINX_USE_REGEX: &str = "nginx.ingress.kubernetes.io/use-regex";
/// ingress-nginx: rewrite the matched path; like `use-regex`, it makes paths regexes.
pub const NGINX_REWRITE_TARGET: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// ingress-nginx: send plain-HTTP requests for hosts with TLS to HTTPS (308); default true.
pub const NGINX_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
/// ingress-nginx: redirect to HTTPS even when the host has no certificate of its own.
pub const NGINX_FORCE_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";
/// ingress-nginx: keep a trailing slash in HTTPS redirects (by default one is dropped).
pub const NGINX_PRESERVE_TRAILING_SLASH: &str = "nginx.ingress.kubernetes.io/preserve-trailing-slash";

/// ingress-nginx: how to talk to the backend: `HTTP` (default), `HTTPS`, `GRPC`, `GRPCS`.
pub const NGINX_BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// ingress-nginx: the largest request body accepted (`8m`, `512k`, `0` for no limit).
pub const NGINX_PROXY_BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";

/// ingress-nginx: redirect requests for `/` to this path (302).
pub const NGINX_APP_ROOT: &str = "nginx.ingress.kubernetes.io/app-root";
/// ingress-nginx: send this value upstream as `X-Forwarded-Prefix`.
pub const NGINX_X_FORWARDED_PREFIX: &str = "nginx.ingress.kubernetes.io/x-forwarded-prefix";
/// ingress-nginx: answer every request with a redirect to this URL (301 by default).
pub const NGINX_PERMANENT_REDIRECT: &str = "nginx.ingress.kubernetes.io/permanent-redirect";
/// ingress-nginx: the status of `permanent-redirect`.
pub const NGINX_PERMANENT_REDIRECT_CODE: &str = "nginx.ingress.kubernetes.io/permanent-redirect-code";
/// ingress-nginx: answer every request with a redirect to this URL (302 by default).
pub const NGINX_TEMPORAL_REDIRECT: &str = "nginx.ingress.kubernetes.io/temporal-redirect";
/// ingress-nginx: the status of `temporal-redirect`.
pub const NGINX_TEMPORAL_REDIRECT_CODE: &str = "nginx.ingress.kubernetes.io/temporal-redirect-code";

/// ingress-nginx: session affinity; `cookie` is the one kind.
pub const NGINX_AFFINITY: &str = "nginx.ingress.kubernetes.io/affinity";
/// ingress-nginx: `balanced` (default) or `persistent`.
pub const NGINX_AFFINITY_MODE: &str = "nginx.ingress.kubernetes.io/affinity-mode";
/// ingress-nginx: the affinity cookie's name (default `INGRESSCOOKIE`).
pub const NGINX_SESSION_COOKIE_NAME: &str = "nginx.ingress.kubernetes.io/session-cookie-name";
/// ingress-nginx: the affinity cookie's `Path`.
pub const NGINX_SESSION_COOKIE_PATH: &str = "nginx.ingress.kubernetes.io/session-cookie-path";
/// ingress-nginx: the affinity cookie's `Domain`.
pub const NGINX_SESSION_COOKIE_DOMAIN: &str = "nginx.ingress.kubernetes.io/session-cookie-domain";
/// ingress-nginx: the affinity cookie's `Max-Age` in seconds.
pub const NGINX_SESSION_COOKIE_MAX_AGE: &str = "nginx.ingress.kubernetes.io/session-cookie-max-age";
/// ingress-nginx: the affinity cookie's `Expires`, in seconds from now.
pub const NGINX_SESSION_COOKIE_EXPIRES: &str = "nginx.ingress.kubernetes.io/session-cookie-expires";
/// ingress-nginx: the affinity cookie's `SameSite` (`None`, `Lax`, `Strict`).
pub const NGINX_SESSION_COOKIE_SAMESITE: &str = "nginx.ingress.kubernetes.io/session-cookie-samesite";
/// ingress-nginx: leave out `SameSite=None` for clients that reject it.
pub const NGINX_SESSION_COOKIE_CONDITIONAL_SAMESITE_NONE: &str =
    "nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none";
/// ingress-nginx: the affinity cookie's `Secure` (default: whether the request is HTTPS).
pub const NGINX_SESSION_COOKIE_SECURE: &str = "nginx.ingress.kubernetes.io/session-cookie-secure";
/// ingress-nginx: re-point the cookie when its endpoint failed and another one served.
pub const NGINX_SESSION_COOKIE_CHANGE_ON_FAILURE: &str = "nginx.ingress.kubernetes.io/session-cookie-change-on-failure";

/// ingress-nginx: response headers from a ConfigMap (`NAMESPACE/NAME`).
pub const NGINX_CUSTOM_HEADERS: &str = "nginx.ingress.kubernetes.io/custom-headers";
/// ingress-nginx: the `Host` header sent upstream.
pub const NGINX_UPSTREAM_VHOST: &str = "nginx.ingress.kubernetes.io/upstream-vhost";

/// Header changes on requests: YAML `{remove: [...], set: {...}, add: {...}}`.
pub const REQUEST_HEADERS: &str = "sluice.dev/request-headers";
/// Header changes on responses, like [`REQUEST_HEADERS`].
pub const RESPONSE_HEADERS: &str = "sluice.dev/response-headers";

/// Parses an nginx size: bytes, or a number with `k`, `m` or `g` (any case).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let malformed = || format!("{value:?} is not a size such as 512k or 8m (units: k, m, g)");
    let (digits, shift) = match value.char_indices().last() {
        Some((i, 'k' | 'K')) => (&value[..i], 10),
        Some((i, 'm' | 'M')) => (&value[..i], 20),
        Some((i, 'g' | 'G')) => (&value[..i], 30),
        _ => (value, 0),
    };
    let number: u64 = digits.parse().map_err(|_| malformed())?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("{value:?} is too large"))
}

/// Parses a boolean annotation the way Kubernetes tools write them.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(format!("expected \"true\" or \"false\", found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("8k"), Ok(8 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size(" 2g "), Ok(2 << 30));
        assert!(parse_size("8mb").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999g").is_err());
    }
}
