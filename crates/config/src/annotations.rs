//! Annotation names Sluice reads, and how their values are parsed.

/// Names the IngressClass of an Ingress (the pre-`ingressClassName` way).
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// On an IngressClass: Ingresses without a class belong to this one.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// ingress-nginx: `ImplementationSpecific` paths of this Ingress are regular expressions.
pub const NGINX_USE_REGEX: &str = "nginx.ingress.kubernetes.io/use-regex";
/// ingress-nginx: rewrite the matched path; like `use-regex`, it makes paths regexes.
pub const NGINX_REWRITE_TARGET: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// Parses a boolean annotation the way Kubernetes tools write them.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(format!("expected \"true\" or \"false\", found {other:?}")),
    }
}
