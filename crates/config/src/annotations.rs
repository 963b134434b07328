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

/// ingress-nginx: how to talk to the backend: `HTTP` (default), `HTTPS`, `GRPC`, `GRPCS`.
pub const NGINX_BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// ingress-nginx: the largest request body accepted (`8m`, `512k`, `0` for no limit).
pub const NGINX_PROXY_BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";

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
