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

/// Parses a boolean annotation the way Kubernetes tools write them.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(format!("expected \"true\" or \"false\", found {other:?}")),
    }
}
