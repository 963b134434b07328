//! Annotation names Sluice reads, and how their values are parsed.

use std::collections::BTreeMap;

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

/// ingress-nginx: only clients in these networks (comma-separated) are served; others get 403.
pub const NGINX_ALLOWLIST_SOURCE_RANGE: &str = "nginx.ingress.kubernetes.io/allowlist-source-range";
/// ingress-nginx: the older name of `allowlist-source-range`, which wins when both are set.
pub const NGINX_WHITELIST_SOURCE_RANGE: &str = "nginx.ingress.kubernetes.io/whitelist-source-range";
/// ingress-nginx: clients in these networks get 403, even when the allow list has them.
pub const NGINX_DENYLIST_SOURCE_RANGE: &str = "nginx.ingress.kubernetes.io/denylist-source-range";

/// ingress-nginx: requests a second each client may send, with a burst of `limit-burst-multiplier`
/// times as many.
pub const NGINX_LIMIT_RPS: &str = "nginx.ingress.kubernetes.io/limit-rps";
/// ingress-nginx: requests a minute each client may send, with a burst like `limit-rps`.
pub const NGINX_LIMIT_RPM: &str = "nginx.ingress.kubernetes.io/limit-rpm";
/// ingress-nginx: the burst of `limit-rps` and `limit-rpm`, a multiple of the limit (default 5).
pub const NGINX_LIMIT_BURST_MULTIPLIER: &str = "nginx.ingress.kubernetes.io/limit-burst-multiplier";
/// ingress-nginx: requests each client may have in flight at once.
pub const NGINX_LIMIT_CONNECTIONS: &str = "nginx.ingress.kubernetes.io/limit-connections";
/// ingress-nginx: clients in these networks (comma-separated) are not limited.
pub const NGINX_LIMIT_ALLOWLIST: &str = "nginx.ingress.kubernetes.io/limit-allowlist";
/// ingress-nginx: the older name of `limit-allowlist`, read when that is absent or empty.
pub const NGINX_LIMIT_WHITELIST: &str = "nginx.ingress.kubernetes.io/limit-whitelist";

/// ingress-nginx: answer cross-origin requests (CORS) with the `cors-*` settings.
pub const NGINX_ENABLE_CORS: &str = "nginx.ingress.kubernetes.io/enable-cors";
/// ingress-nginx: the origins CORS allows (comma-separated; default `*`).
pub const NGINX_CORS_ALLOW_ORIGIN: &str = "nginx.ingress.kubernetes.io/cors-allow-origin";
/// ingress-nginx: `Access-Control-Allow-Methods`.
pub const NGINX_CORS_ALLOW_METHODS: &str = "nginx.ingress.kubernetes.io/cors-allow-methods";
/// ingress-nginx: `Access-Control-Allow-Headers`.
pub const NGINX_CORS_ALLOW_HEADERS: &str = "nginx.ingress.kubernetes.io/cors-allow-headers";
/// ingress-nginx: `Access-Control-Expose-Headers` (default none).
pub const NGINX_CORS_EXPOSE_HEADERS: &str = "nginx.ingress.kubernetes.io/cors-expose-headers";
/// ingress-nginx: send `Access-Control-Allow-Credentials: true` (default true).
pub const NGINX_CORS_ALLOW_CREDENTIALS: &str = "nginx.ingress.kubernetes.io/cors-allow-credentials";
/// ingress-nginx: `Access-Control-Max-Age` in seconds.
pub const NGINX_CORS_MAX_AGE: &str = "nginx.ingress.kubernetes.io/cors-max-age";

/// ingress-nginx: HTTP authentication; `basic` is the one type supported.
pub const NGINX_AUTH_TYPE: &str = "nginx.ingress.kubernetes.io/auth-type";
/// ingress-nginx: the Secret (`NAME` or `NAMESPACE/NAME`, the Ingress's own namespace) with
/// the users and their password hashes.
pub const NGINX_AUTH_SECRET: &str = "nginx.ingress.kubernetes.io/auth-secret";
/// ingress-nginx: `auth-file` (default: an htpasswd file in the Secret's key `auth`) or
/// `auth-map` (each key a user, its value the password hash).
pub const NGINX_AUTH_SECRET_TYPE: &str = "nginx.ingress.kubernetes.io/auth-secret-type";
/// ingress-nginx: the realm of the `WWW-Authenticate` challenge (default empty).
pub const NGINX_AUTH_REALM: &str = "nginx.ingress.kubernetes.io/auth-realm";
/// ingress-nginx: `all` (default) or `any`: whether the source ranges and the credentials are
/// both needed, or either suffices.
pub const NGINX_SATISFY: &str = "nginx.ingress.kubernetes.io/satisfy";

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

/// ingress-nginx: this Ingress's routes are canaries of the main Ingress's same host and path.
pub const NGINX_CANARY: &str = "nginx.ingress.kubernetes.io/canary";
/// ingress-nginx: the request header that sends a request to the canary (`always`) or not (`never`).
pub const NGINX_CANARY_BY_HEADER: &str = "nginx.ingress.kubernetes.io/canary-by-header";
/// ingress-nginx: the `canary-by-header` value that sends a request to the canary.
pub const NGINX_CANARY_BY_HEADER_VALUE: &str = "nginx.ingress.kubernetes.io/canary-by-header-value";
/// ingress-nginx: a regex the `canary-by-header` value must match to go to the canary.
pub const NGINX_CANARY_BY_HEADER_PATTERN: &str = "nginx.ingress.kubernetes.io/canary-by-header-pattern";
/// ingress-nginx: the cookie that sends a request to the canary (`always`) or not (`never`).
pub const NGINX_CANARY_BY_COOKIE: &str = "nginx.ingress.kubernetes.io/canary-by-cookie";
/// ingress-nginx: the share of other requests sent to the canary, out of `canary-weight-total`.
pub const NGINX_CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
/// ingress-nginx: what `canary-weight` is a share of (default 100).
pub const NGINX_CANARY_WEIGHT_TOTAL: &str = "nginx.ingress.kubernetes.io/canary-weight-total";

/// ingress-nginx: seconds to wait for a connection to an endpoint.
pub const NGINX_PROXY_CONNECT_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-connect-timeout";
/// ingress-nginx: seconds to wait for the upstream's response.
pub const NGINX_PROXY_READ_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-read-timeout";
/// ingress-nginx: seconds to wait for the upstream to take the request.
pub const NGINX_PROXY_SEND_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-send-timeout";
/// ingress-nginx: which failures send a request on to another endpoint.
pub const NGINX_PROXY_NEXT_UPSTREAM: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream";
/// ingress-nginx: the most endpoints one request is tried on (0: no limit).
pub const NGINX_PROXY_NEXT_UPSTREAM_TRIES: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream-tries";
/// ingress-nginx: seconds after which a failed request is not tried again (0: no limit).
pub const NGINX_PROXY_NEXT_UPSTREAM_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream-timeout";

/// ingress-nginx: `round_robin` or `ewma` (default: power of two choices over in-flight requests).
pub const NGINX_LOAD_BALANCE: &str = "nginx.ingress.kubernetes.io/load-balance";
/// ingress-nginx: consistent hashing of requests to endpoints by this key (text and variables).
pub const NGINX_UPSTREAM_HASH_BY: &str = "nginx.ingress.kubernetes.io/upstream-hash-by";

/// ingress-nginx: more host names (comma-separated) served as the Ingress's first host.
pub const NGINX_SERVER_ALIAS: &str = "nginx.ingress.kubernetes.io/server-alias";

/// ingress-nginx: send to the Service's ClusterIP instead of its endpoints.
pub const NGINX_SERVICE_UPSTREAM: &str = "nginx.ingress.kubernetes.io/service-upstream";
/// ingress-nginx: log this Ingress's requests (default true, when the access log is on).
pub const NGINX_ENABLE_ACCESS_LOG: &str = "nginx.ingress.kubernetes.io/enable-access-log";
/// ingress-nginx: buffer responses (`on`/`off`); accepted, responses always stream.
pub const NGINX_PROXY_BUFFERING: &str = "nginx.ingress.kubernetes.io/proxy-buffering";
/// ingress-nginx: buffer request bodies before sending (`on`/`off`); accepted, they always stream.
pub const NGINX_PROXY_REQUEST_BUFFERING: &str = "nginx.ingress.kubernetes.io/proxy-request-buffering";
/// ingress-nginx: the request body buffer (a size); accepted, bodies are not buffered.
pub const NGINX_CLIENT_BODY_BUFFER_SIZE: &str = "nginx.ingress.kubernetes.io/client-body-buffer-size";
/// ingress-nginx: the HTTP version to backends; `1.1`, which Sluice speaks, is accepted.
pub const NGINX_PROXY_HTTP_VERSION: &str = "nginx.ingress.kubernetes.io/proxy-http-version";

/// ingress-nginx: a Service (its first port) for routes whose Service has no ready endpoint.
pub const NGINX_DEFAULT_BACKEND: &str = "nginx.ingress.kubernetes.io/default-backend";

/// ingress-nginx: `upstream-hash-by` maps a key to a few endpoints, one of them chosen at random.
pub const NGINX_UPSTREAM_HASH_BY_SUBSET: &str = "nginx.ingress.kubernetes.io/upstream-hash-by-subset";
/// ingress-nginx: how many endpoints a key maps to with `upstream-hash-by-subset` (default 3).
pub const NGINX_UPSTREAM_HASH_BY_SUBSET_SIZE: &str = "nginx.ingress.kubernetes.io/upstream-hash-by-subset-size";
/// ingress-nginx: requests for `example.com` redirect to the rule host `www.example.com`, or
/// the other way round.
pub const NGINX_FROM_TO_WWW_REDIRECT: &str = "nginx.ingress.kubernetes.io/from-to-www-redirect";

/// ingress-nginx: a Secret (`NAMESPACE/NAME`, the Ingress's own namespace) with `ca.crt` to
/// verify HTTPS backends by, and `tls.crt` and `tls.key` to show them.
pub const NGINX_PROXY_SSL_SECRET: &str = "nginx.ingress.kubernetes.io/proxy-ssl-secret";
/// ingress-nginx: verify the backend's certificate (`on`/`off`, default `off`).
pub const NGINX_PROXY_SSL_VERIFY: &str = "nginx.ingress.kubernetes.io/proxy-ssl-verify";
/// ingress-nginx: the most intermediate certificates in a verified chain (default 1).
pub const NGINX_PROXY_SSL_VERIFY_DEPTH: &str = "nginx.ingress.kubernetes.io/proxy-ssl-verify-depth";
/// ingress-nginx: the name the backend's certificate is verified for, and sent as SNI.
pub const NGINX_PROXY_SSL_NAME: &str = "nginx.ingress.kubernetes.io/proxy-ssl-name";
/// ingress-nginx: send the name by SNI (`on`/`off`, default `off`).
pub const NGINX_PROXY_SSL_SERVER_NAME: &str = "nginx.ingress.kubernetes.io/proxy-ssl-server-name";
/// ingress-nginx: TLS versions towards backends (`TLSv1.2 TLSv1.3`).
pub const NGINX_PROXY_SSL_PROTOCOLS: &str = "nginx.ingress.kubernetes.io/proxy-ssl-protocols";
/// ingress-nginx: TLS 1.2 cipher suites towards backends, in OpenSSL's notation.
pub const NGINX_PROXY_SSL_CIPHERS: &str = "nginx.ingress.kubernetes.io/proxy-ssl-ciphers";

/// ingress-nginx: statuses (400-599, comma-separated) answered by the `default-backend` Service
/// instead, which is told what happened in `X-Code`, `X-Original-URI` and the like.
pub const NGINX_CUSTOM_HTTP_ERRORS: &str = "nginx.ingress.kubernetes.io/custom-http-errors";
/// ingress-nginx: `custom-http-errors` replaces only the gateway's own error answers, not those
/// of backends.
pub const NGINX_DISABLE_PROXY_INTERCEPT_ERRORS: &str = "nginx.ingress.kubernetes.io/disable-proxy-intercept-errors";

/// ingress-nginx: external authentication: each request is first sent (headers only) to this
/// URL, a Service of the Ingress's namespace, whose answer decides.
pub const NGINX_AUTH_URL: &str = "nginx.ingress.kubernetes.io/auth-url";
/// ingress-nginx: the method of the authentication request (GET by default).
pub const NGINX_AUTH_METHOD: &str = "nginx.ingress.kubernetes.io/auth-method";
/// ingress-nginx: headers (comma-separated) copied from the authentication answer upstream.
pub const NGINX_AUTH_RESPONSE_HEADERS: &str = "nginx.ingress.kubernetes.io/auth-response-headers";
/// ingress-nginx: the `X-Auth-Request-Redirect` of the authentication request.
pub const NGINX_AUTH_REQUEST_REDIRECT: &str = "nginx.ingress.kubernetes.io/auth-request-redirect";
/// ingress-nginx: where a request the authentication Service answers 401 is redirected.
pub const NGINX_AUTH_SIGNIN: &str = "nginx.ingress.kubernetes.io/auth-signin";
/// ingress-nginx: the query parameter of the sign-in URL that carries the request's URL.
pub const NGINX_AUTH_SIGNIN_REDIRECT_PARAM: &str = "nginx.ingress.kubernetes.io/auth-signin-redirect-param";

/// ingress-nginx: the key authentication answers are kept by (text with nginx variables).
pub const NGINX_AUTH_CACHE_KEY: &str = "nginx.ingress.kubernetes.io/auth-cache-key";
/// ingress-nginx: how long kept answers last, by status (`200 202 401 5m`).
pub const NGINX_AUTH_CACHE_DURATION: &str = "nginx.ingress.kubernetes.io/auth-cache-duration";

/// ingress-nginx annotations that paste nginx configuration text: never interpreted.
pub const NGINX_SNIPPETS: [&str; 5] = [
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "nginx.ingress.kubernetes.io/server-snippet",
    "nginx.ingress.kubernetes.io/auth-snippet",
    "nginx.ingress.kubernetes.io/stream-snippet",
    "nginx.ingress.kubernetes.io/modsecurity-snippet",
];

/// ingress-nginx annotations that restrict who may reach a route and that Sluice does not
/// enforce yet: the routes fail closed rather than serve what they were meant to guard.
pub const NGINX_UNENFORCED_GUARDS: [&str; 1] = ["nginx.ingress.kubernetes.io/auth-tls-verify-client"];

/// Header changes on requests: YAML `{remove: [...], set: {...}, add: {...}}`.
pub const REQUEST_HEADERS: &str = "sluice.dev/request-headers";
/// Header changes on responses, like [`REQUEST_HEADERS`].
pub const RESPONSE_HEADERS: &str = "sluice.dev/response-headers";

/// Reads the annotations of one Ingress; every invalid value is an error naming its field.
pub(crate) struct Reader<'a> {
    pub(crate) annotations: &'a BTreeMap<String, String>,
    pub(crate) errors: &'a mut Vec<(String, String)>,
}

impl Reader<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.annotations.get(name).map(String::as_str)
    }

    pub(crate) fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push((field(name), message.into()));
    }

    /// The value of `name` parsed by `parse`, `None` when absent or invalid (reported).
    pub(crate) fn parsed<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.get(name)?;
        parse(value).map_err(|message| self.error(name, message)).ok()
    }

    /// The value of `name` when `check` accepts it.
    pub(crate) fn checked(&mut self, name: &str, check: impl FnOnce(&str) -> Result<(), String>) -> Option<String> {
        self.parsed(name, |value| check(value).map(|()| value.to_owned()))
    }
}

pub(crate) fn field(annotation: &str) -> String {
    format!("metadata.annotations[{annotation}]")
}

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

/// Parses nginx's `on`/`off`.
pub fn parse_on_off(value: &str) -> Result<bool, String> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected \"on\" or \"off\", found {other:?}")),
    }
}

/// Parses a whole number of seconds, at least one (ingress-nginx's timeout annotations).
pub fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".to_owned()),
        Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
        Err(_) => Err(format!("{value:?} is not a whole number of seconds")),
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
