//! The built-in filters end to end: ingress-nginx's source-range, CORS, basic authentication,
//! rewrite, redirect, header and cookie affinity annotations on the real binary, with real echo
//! pods and real clients.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_tests::manifests::{annotated_ingress, basic_auth_secret, ingress, service};
use sluice_tests::{Client, Gateway, Pods, Reply, basic_authorization, test_filters, write_atomic};

const REWRITE_TARGET: &str = "nginx.ingress.kubernetes.io/rewrite-target";

async fn get(client: &Client, gateway: &Gateway, path: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    client.request(http::Method::GET, &gateway.url(path), host, headers, Default::default()).await.unwrap()
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).map(|v| v.to_str().unwrap())
}

fn write(dir: &Path, manifests: &[String]) {
    write_atomic(&dir.join("app.yaml"), &manifests.join("---\n")).unwrap();
}

/// The one configuration error the gateway reports.
async fn only_error(gateway: &Gateway) -> serde_json::Value {
    let config = gateway.config().await.unwrap();
    let errors = config["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].clone()
}

#[tokio::test]
async fn rewrites_and_redirects_as_ingress_nginx_documents_them() {
    let pods = Pods::start(&["127.0.0.40", "127.0.0.41"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let regex = [("/something(/|$)(.*)", "ImplementationSpecific", "app")];
    let app = [("/", "Prefix", "app")];
    let manifests = [
        service("app", &pods.addrs, &[]),
        annotated_ingress(
            "rewrite",
            "rewrite.test",
            &regex,
            &[(REWRITE_TARGET, "/$2"), ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/something")],
        ),
        annotated_ingress("root", "root.test", &app, &[("nginx.ingress.kubernetes.io/app-root", "/app1")]),
        annotated_ingress(
            "moved",
            "moved.test",
            &app,
            &[("nginx.ingress.kubernetes.io/permanent-redirect", "https://new.example.com/landing")],
        ),
        annotated_ingress(
            "moved308",
            "moved308.test",
            &app,
            &[
                ("nginx.ingress.kubernetes.io/permanent-redirect", "https://new.example.com/"),
                ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
            ],
        ),
        annotated_ingress(
            "away",
            "away.test",
            &app,
            &[("nginx.ingress.kubernetes.io/temporal-redirect", "/maintenance")],
        ),
        annotated_ingress("broken", "broken.test", &app, &[("nginx.ingress.kubernetes.io/app-root", "app1")]),
        ingress("plain", "plain.test", &app),
    ];
    write(dir.path(), &manifests);
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    // The rewrite-target example of the ingress-nginx documentation, query string kept.
    for (path, upstream) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
        ("/something/new/deeper?page=2", "/new/deeper?page=2"),
        ("/SOMETHING/case", "/case"),
    ] {
        let reply = get(&client, &gateway, path, "rewrite.test", &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let echo = reply.json();
        assert_eq!(echo["uri"], upstream, "{path}");
        assert_eq!(echo["headers"]["x-forwarded-prefix"], "/something");
    }

    // app-root: `/` answers 302 to the app root on the same host; other paths pass.
    let root = get(&client, &gateway, "/", "root.test:8080", &[]).await;
    assert_eq!((root.status, header(&root, "location")), (302, Some("http://root.test:8080/app1")));
    assert_eq!(get(&client, &gateway, "/app1/x", "root.test", &[]).await.json()["uri"], "/app1/x");

    // Redirects answer every path, with their default or configured status.
    let moved = get(&client, &gateway, "/any/path?q=1", "moved.test", &[]).await;
    assert_eq!((moved.status, header(&moved, "location")), (301, Some("https://new.example.com/landing")));
    let moved = get(&client, &gateway, "/", "moved308.test", &[]).await;
    assert_eq!((moved.status, header(&moved, "location")), (308, Some("https://new.example.com/")));
    let away = get(&client, &gateway, "/cart", "away.test", &[]).await;
    assert_eq!((away.status, header(&away, "location")), (302, Some("/maintenance")));

    // An invalid value fails that Ingress closed and says why; the others keep serving.
    assert_eq!(get(&client, &gateway, "/", "broken.test", &[]).await.status, 500);
    assert_eq!(get(&client, &gateway, "/", "plain.test", &[]).await.status, 200);
    let error = only_error(&gateway).await;
    assert_eq!(error["object"], "Ingress default/broken");
    assert_eq!(error["field"], "metadata.annotations[nginx.ingress.kubernetes.io/app-root]");
    assert!(error["message"].as_str().unwrap().contains("is not an absolute path"), "{error}");
    let config = gateway.config().await.unwrap();
    let builtins: Vec<&str> = config["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["builtin"] == true && p["hash"].is_string())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        builtins,
        ["affinity", "auth-url", "basic-auth", "cors", "headers", "rate-limit", "rewrite", "source-ranges"]
    );
}

#[tokio::test]
async fn headers_are_set_added_and_removed_on_both_sides_before_user_filters() {
    let pods = Pods::start(&["127.0.0.42", "127.0.0.43"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = [("/", "Prefix", "app")];
    let custom = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: security-headers}\n\
                  data: {X-Frame-Options: SAMEORIGIN, X-Content-Type-Options: nosniff}\n";
    let manifests = [
        service("app", &pods.addrs, &[]),
        custom.to_owned(),
        annotated_ingress(
            "headers",
            "headers.test",
            &app,
            &[
                (
                    "sluice.dev/request-headers",
                    "remove: [x-debug]\nset: {x-env: prod, x-order: builtin}\nadd: {x-tag: gateway}",
                ),
                (
                    "sluice.dev/response-headers",
                    "remove: [content-type]\nset: {x-frame-options: DENY}\nadd: {x-served: sluice}",
                ),
                ("nginx.ingress.kubernetes.io/custom-headers", "default/security-headers"),
                ("nginx.ingress.kubernetes.io/upstream-vhost", "internal.app.svc"),
                ("sluice.dev/filters", "- plugin: probe\n  config: {set: [[x-order, user]]}"),
            ],
        ),
    ];
    write(dir.path(), &manifests);
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(test_filters().join("probe.wasm"), plugins.path().join("probe.wasm")).unwrap();
    let gateway = Gateway::start_with_plugins(dir.path(), plugins.path()).await.unwrap();
    let client = Client::new();

    let reply = get(&client, &gateway, "/", "headers.test", &[("x-debug", "1"), ("x-tag", "client")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    let seen = &echo["headers"];
    assert!(seen.get("x-debug").is_none());
    assert_eq!(seen["x-env"], "prod");
    assert_eq!(seen["x-tag"], "client, gateway", "added after the client's value");
    assert_eq!(seen["host"], "internal.app.svc");
    assert_eq!(seen["x-forwarded-host"], "headers.test", "the client's host stays visible");
    assert_eq!(seen["x-order"], "user", "user filters run after the built-ins");
    assert_eq!(header(&reply, "content-type"), None);
    assert_eq!(header(&reply, "x-frame-options"), Some("DENY"), "our annotation wins over the ConfigMap");
    assert_eq!(header(&reply, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&reply, "x-served"), Some("sluice"));
}

async fn send(client: &Client, gateway: &Gateway, method: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    client.request(method, &gateway.url("/api/items"), host, headers, Default::default()).await.unwrap()
}

/// The CORS headers of a reply, by name.
fn cors_headers(reply: &Reply) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_responses_for_allowed_origins_only() {
    let pods = Pods::start(&["127.0.0.72"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = [("/api", "Prefix", "app")];
    let enable = ("nginx.ingress.kubernetes.io/enable-cors", "true");
    let manifests = [
        service("app", &pods.addrs, &[]),
        // ingress-nginx's defaults; the preflight is answered before the rewrite.
        annotated_ingress("open", "open.test", &api, &[enable, (REWRITE_TARGET, "/v2")]),
        annotated_ingress(
            "listed",
            "listed.test",
            &api,
            &[
                enable,
                (
                    "nginx.ingress.kubernetes.io/cors-allow-origin",
                    "https://app.example.com, https://*.example.org:8443",
                ),
                ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET, POST"),
                ("nginx.ingress.kubernetes.io/cors-allow-headers", "Authorization, X-Requested-With"),
                ("nginx.ingress.kubernetes.io/cors-expose-headers", "X-Total-Count"),
                ("nginx.ingress.kubernetes.io/cors-allow-credentials", "false"),
                ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
            ],
        ),
        annotated_ingress(
            "broken",
            "broken.test",
            &api,
            &[enable, ("nginx.ingress.kubernetes.io/cors-allow-origin", "origin.example.com:8080")],
        ),
    ];
    write(dir.path(), &manifests);
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();
    let defaults = |origin: &str| {
        let pairs = [
            ("access-control-allow-credentials", "true"),
            (
                "access-control-allow-headers",
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
            ),
            ("access-control-allow-methods", "GET, PUT, POST, DELETE, PATCH, OPTIONS"),
            ("access-control-allow-origin", origin),
            ("access-control-max-age", "1728000"),
        ];
        pairs.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
    };

    // `*`: every response carries the headers, with or without an Origin.
    for origin in [None, Some("https://anyone.test")] {
        let headers: Vec<_> = origin.map(|o| ("origin", o)).into_iter().collect();
        let reply = send(&client, &gateway, "GET", "open.test", &headers).await;
        assert_eq!((reply.status, reply.json()["uri"].as_str()), (200, Some("/v2")), "{origin:?}");
        assert_eq!(cors_headers(&reply), defaults("*"), "{origin:?}");
        assert_eq!(header(&reply, "vary"), None);
    }
    // A preflight is answered by the gateway: 204, no body, nothing upstream.
    let preflight = [("origin", "https://anyone.test"), ("access-control-request-method", "PUT")];
    let reply = send(&client, &gateway, "OPTIONS", "open.test", &preflight).await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    assert_eq!(cors_headers(&reply), defaults("*"));
    assert_eq!(header(&reply, "content-type"), Some("text/plain charset=UTF-8"));
    // An OPTIONS that is no preflight goes upstream, and gets the headers.
    let reply = send(&client, &gateway, "OPTIONS", "open.test", &[("origin", "https://anyone.test")]).await;
    assert_eq!((reply.status, reply.json()["method"].as_str()), (200, Some("OPTIONS")));
    assert_eq!(cors_headers(&reply), defaults("*"));

    // A list: an allowed origin is sent back, with the Ingress's settings and no credentials.
    let listed = |origin: &str| {
        let pairs = [
            ("access-control-allow-headers", "Authorization, X-Requested-With"),
            ("access-control-allow-methods", "GET, POST"),
            ("access-control-allow-origin", origin),
            ("access-control-expose-headers", "X-Total-Count"),
            ("access-control-max-age", "600"),
        ];
        pairs.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
    };
    for origin in ["https://app.example.com", "https://tenant-7.example.org:8443", "HTTPS://APP.example.com"] {
        let reply = send(&client, &gateway, "POST", "listed.test", &[("origin", origin)]).await;
        assert_eq!(reply.status, 200, "{origin}: {}", reply.body);
        assert_eq!(cors_headers(&reply), listed(origin), "{origin}");
        assert_eq!(header(&reply, "vary"), Some("Origin"), "{origin}");
        let preflight = [("origin", origin), ("access-control-request-method", "POST")];
        let reply = send(&client, &gateway, "OPTIONS", "listed.test", &preflight).await;
        assert_eq!((reply.status, reply.body.as_str()), (204, ""), "{origin}");
        assert_eq!(cors_headers(&reply), listed(origin), "{origin}");
    }
    // Origins not on the list get no CORS header; their preflights go upstream unanswered.
    for origin in [
        "https://evil.test",
        "http://app.example.com",
        "https://app.example.com.evil.test",
        "https://a.b.example.org:8443",
        "https://tenant-7.example.org",
    ] {
        let reply = send(&client, &gateway, "GET", "listed.test", &[("origin", origin)]).await;
        assert_eq!((reply.status, cors_headers(&reply)), (200, vec![]), "{origin}");
        let preflight = [("origin", origin), ("access-control-request-method", "POST")];
        let reply = send(&client, &gateway, "OPTIONS", "listed.test", &preflight).await;
        assert_eq!(reply.json()["method"], "OPTIONS", "{origin}: the backend answers");
        assert_eq!(cors_headers(&reply), vec![], "{origin}");
    }
    let reply = send(&client, &gateway, "GET", "listed.test", &[]).await;
    assert_eq!((reply.status, cors_headers(&reply)), (200, vec![]), "no Origin, no CORS");

    // An origin without a scheme is an error (ingress-nginx skips it): the Ingress fails closed.
    assert_eq!(send(&client, &gateway, "GET", "broken.test", &[]).await.status, 500);
    let error = only_error(&gateway).await;
    assert_eq!(error["object"], "Ingress default/broken");
    assert_eq!(error["field"], "metadata.annotations[nginx.ingress.kubernetes.io/cors-allow-origin]");
}

/// The status of a GET of `host`, sent on behalf of `forwarded_for` (`X-Forwarded-For`).
async fn status_from(client: &Client, gateway: &Gateway, host: &str, forwarded_for: Option<&str>) -> u16 {
    let headers: Vec<_> = forwarded_for.map(|chain| ("x-forwarded-for", chain)).into_iter().collect();
    let reply = get(client, gateway, "/", host, &headers).await;
    if reply.status == 403 {
        assert_eq!(reply.body, "forbidden\n");
    }
    reply.status
}

#[tokio::test]
async fn source_ranges_refuse_clients_by_the_address_trusted_proxies_forwarded_for() {
    let pods = Pods::start(&["127.0.0.74"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = [("/", "Prefix", "app")];
    let allow = "nginx.ingress.kubernetes.io/allowlist-source-range";
    let deny = "nginx.ingress.kubernetes.io/denylist-source-range";
    let manifests = [
        service("app", &pods.addrs, &[]),
        annotated_ingress("local", "local.test", &app, &[(allow, "127.0.0.0/8")]),
        annotated_ingress(
            "office",
            "office.test",
            &app,
            &[("nginx.ingress.kubernetes.io/whitelist-source-range", "10.0.0.0/8, 192.0.2.1")],
        ),
        annotated_ingress("blocked", "blocked.test", &app, &[(deny, "127.0.0.1, 203.0.113.0/24")]),
        annotated_ingress("both", "both.test", &app, &[(allow, "10.0.0.0/8"), (deny, "10.9.0.0/16")]),
        // Refused before a preflight is answered.
        annotated_ingress(
            "cors",
            "cors.test",
            &app,
            &[(allow, "10.0.0.0/8"), ("nginx.ingress.kubernetes.io/enable-cors", "true")],
        ),
        annotated_ingress("broken", "broken.test", &app, &[(allow, "10.0.0.0/33")]),
    ];
    write(dir.path(), &manifests);
    // The test client connects from 127.0.0.1: a trusted proxy to this gateway, a client to the other.
    let behind = Gateway::start(dir.path(), &["--trusted-proxies", "127.0.0.1/32"]).await.unwrap();
    let direct = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    for (host, forwarded_for, expected) in [
        // Without a forwarded address the trusted proxy is the client.
        ("local.test", None, 200),
        ("local.test", Some("10.1.2.3"), 403),
        ("office.test", None, 403),
        ("office.test", Some("10.1.2.3"), 200),
        ("office.test", Some("192.0.2.1"), 200),
        ("office.test", Some("192.0.2.2"), 403),
        // The rightmost address that is not a trusted proxy is the client.
        ("office.test", Some("10.1.2.3, 198.51.100.4"), 403),
        ("office.test", Some("198.51.100.4, 10.1.2.3"), 200),
        ("blocked.test", None, 403),
        ("blocked.test", Some("203.0.113.5"), 403),
        ("blocked.test", Some("198.51.100.4"), 200),
        // The deny list wins over the allow list.
        ("both.test", Some("10.1.1.1"), 200),
        ("both.test", Some("10.9.1.1"), 403),
    ] {
        assert_eq!(status_from(&client, &behind, host, forwarded_for).await, expected, "{host} for {forwarded_for:?}");
    }
    // A client that is no trusted proxy cannot claim another address.
    assert_eq!(status_from(&client, &direct, "local.test", Some("10.1.2.3")).await, 200);
    assert_eq!(status_from(&client, &direct, "office.test", Some("10.1.2.3")).await, 403);
    assert_eq!(status_from(&client, &direct, "blocked.test", Some("198.51.100.4")).await, 403);

    let preflight = [("origin", "https://app.test"), ("access-control-request-method", "GET")];
    assert_eq!(send(&client, &direct, "OPTIONS", "cors.test", &preflight).await.status, 403);

    // An invalid range fails the Ingress closed rather than open.
    assert_eq!(status_from(&client, &direct, "broken.test", None).await, 500);
    assert_eq!(only_error(&direct).await["field"], format!("metadata.annotations[{allow}]"));
}

/// The htpasswd file of the built-ins' unit tests: one user per hash form, `user-FORM` with the
/// password `secret-FORM`.
const HTPASSWD: &str = include_str!("../../crates/builtins/testdata/htpasswd");

/// `secret-bcrypt-10` hashed by bcrypt at cost 10 (Python's `crypt`).
const BCRYPT_10: &str = "$2y$10$/n0jrF5AG0snCfp9fH6cVOtui9mU/Naj9sytrFu1jVdptSS30BbtK";

/// The status of a GET of `host` with these credentials, checking a 401's challenge.
async fn status_as(
    client: &Client,
    gateway: &Gateway,
    host: &str,
    credentials: Option<(&str, &str)>,
    realm: &str,
) -> u16 {
    let authorization = credentials.map(|(user, password)| basic_authorization(user, password));
    let headers: Vec<_> = authorization.iter().map(|value| ("authorization", value.as_str())).collect();
    let reply = get(client, gateway, "/", host, &headers).await;
    match reply.status {
        401 => assert_eq!(header(&reply, "www-authenticate"), Some(format!("Basic realm=\"{realm}\"").as_str())),
        // The credentials go upstream, as with nginx's auth_basic.
        200 => assert_eq!(reply.json()["headers"]["authorization"], authorization.unwrap()),
        _ => {}
    }
    reply.status
}

#[tokio::test]
async fn basic_auth_checks_every_htpasswd_form_and_fails_closed_without_its_secret() {
    let pods = Pods::start(&["127.0.0.75"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = [("/", "Prefix", "app")];
    let (auth_type, auth_secret_name) =
        ("nginx.ingress.kubernetes.io/auth-type", "nginx.ingress.kubernetes.io/auth-secret");
    let basic_with = |secret: &'static str| [(auth_type, "basic"), (auth_secret_name, secret)];
    let (allow, satisfy) =
        ("nginx.ingress.kubernetes.io/allowlist-source-range", "nginx.ingress.kubernetes.io/satisfy");
    let apr1 = HTPASSWD.lines().find_map(|line| line.strip_prefix("user-apr1:")).unwrap();
    let mut manifests = vec![
        service("app", &pods.addrs, &[]),
        // Above htpasswd's default cost: slower than the default filter deadline (50 ms).
        basic_auth_secret("staff", &[("auth", &format!("{HTPASSWD}user-bcrypt-10:{BCRYPT_10}\n"))]),
        basic_auth_secret("staff-map", &[("ann", apr1), ("bob", "{SHA}mYaP0lMpbAbqlz+/QP6oV6SzMLc=")]),
        annotated_ingress(
            "file",
            "file.test",
            &app,
            &[basic_with("staff")[0], basic_with("staff")[1], ("nginx.ingress.kubernetes.io/auth-realm", "Staff only")],
        ),
        annotated_ingress(
            "map",
            "map.test",
            &app,
            &[
                (auth_type, "basic"),
                (auth_secret_name, "default/staff-map"),
                ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-map"),
            ],
        ),
        // A preflight is answered before credentials are asked for; a refused client gets no further.
        annotated_ingress(
            "cors",
            "cors.test",
            &app,
            &[basic_with("staff")[0], basic_with("staff")[1], ("nginx.ingress.kubernetes.io/enable-cors", "true")],
        ),
        annotated_ingress(
            "ranges",
            "ranges.test",
            &app,
            &[basic_with("staff")[0], basic_with("staff")[1], (allow, "10.0.0.0/8")],
        ),
        // `satisfy: any`: an address the ranges grant needs no credentials; any other signs in.
        annotated_ingress(
            "either-local",
            "either-local.test",
            &app,
            &[basic_with("staff")[0], basic_with("staff")[1], (allow, "127.0.0.0/8"), (satisfy, "any")],
        ),
        annotated_ingress(
            "either-office",
            "either-office.test",
            &app,
            &[basic_with("staff")[0], basic_with("staff")[1], (allow, "10.0.0.0/8"), (satisfy, "any")],
        ),
        annotated_ingress("missing", "missing.test", &app, &basic_with("later")),
        annotated_ingress("typo", "typo.test", &app, &[(auth_type, "basci"), (auth_secret_name, "staff")]),
    ];
    write(dir.path(), &manifests);
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    let forms = [
        "apr1",
        "md5",
        "bcrypt-2y",
        "bcrypt-2a",
        "bcrypt-2b",
        "bcrypt-10",
        "sha256",
        "sha512",
        "des",
        "sha",
        "ssha",
        "plain",
    ];
    for form in forms {
        let (user, password) = (format!("user-{form}"), format!("secret-{form}"));
        assert_eq!(
            status_as(&client, &gateway, "file.test", Some((&user, &password)), "Staff only").await,
            200,
            "{form}"
        );
        assert_eq!(
            status_as(&client, &gateway, "file.test", Some((&user, "wrong")), "Staff only").await,
            401,
            "{form}"
        );
    }
    assert_eq!(status_as(&client, &gateway, "file.test", None, "Staff only").await, 401);
    assert_eq!(status_as(&client, &gateway, "file.test", Some(("nobody", "secret-sha")), "Staff only").await, 401);
    let refused = get(&client, &gateway, "/", "file.test", &[("authorization", "Bearer abc")]).await;
    assert_eq!((refused.status, refused.body.as_str()), (401, "authorization required\n"));

    // auth-map: each key a user; the realm is empty by default, as in ingress-nginx.
    assert_eq!(status_as(&client, &gateway, "map.test", Some(("ann", "secret-apr1")), "").await, 200);
    assert_eq!(status_as(&client, &gateway, "map.test", Some(("bob", "secret-sha")), "").await, 200);
    assert_eq!(status_as(&client, &gateway, "map.test", Some(("bob", "secret-apr1")), "").await, 401);
    assert_eq!(status_as(&client, &gateway, "map.test", None, "").await, 401);

    let preflight = [("origin", "https://app.test"), ("access-control-request-method", "GET")];
    assert_eq!(send(&client, &gateway, "OPTIONS", "cors.test", &preflight).await.status, 204);
    assert_eq!(status_as(&client, &gateway, "cors.test", None, "").await, 401);
    assert_eq!(status_as(&client, &gateway, "ranges.test", Some(("user-sha", "secret-sha")), "").await, 403);
    assert_eq!(get(&client, &gateway, "/", "either-local.test", &[]).await.status, 200);
    assert_eq!(status_as(&client, &gateway, "either-office.test", None, "").await, 401);
    assert_eq!(status_as(&client, &gateway, "either-office.test", Some(("user-sha", "secret-sha")), "").await, 200);
    assert_eq!(status_as(&client, &gateway, "either-office.test", Some(("user-sha", "wrong")), "").await, 401);

    // A missing Secret and an invalid annotation fail their Ingress closed, each reported
    // against the Ingress and the annotation.
    assert_eq!(status_as(&client, &gateway, "missing.test", Some(("user-sha", "secret-sha")), "").await, 500);
    assert_eq!(status_as(&client, &gateway, "typo.test", Some(("user-sha", "secret-sha")), "").await, 500);
    let config = gateway.config().await.unwrap();
    let errors: Vec<(&str, &str)> = config["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["object"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("Ingress default/missing", "metadata.annotations[nginx.ingress.kubernetes.io/auth-secret]"),
            ("Ingress default/typo", "metadata.annotations[nginx.ingress.kubernetes.io/auth-type]"),
        ]
    );
    let check = std::process::Command::new(sluice_tests::sluice_bin()).arg("check").arg(dir.path()).output().unwrap();
    let out = String::from_utf8(check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("Ingress default/missing: metadata.annotations[nginx.ingress.kubernetes.io/auth-secret]: Secret default/later not found"), "{out}");

    // The Secret appears: the route serves its users.
    manifests.push(basic_auth_secret("later", &[("auth", "late:{SHA}mYaP0lMpbAbqlz+/QP6oV6SzMLc=")]));
    write(dir.path(), &manifests);
    eventually("the new Secret guards its route", || async {
        status_as(&client, &gateway, "missing.test", Some(("late", "secret-sha")), "").await == 200
    })
    .await;
    assert_eq!(status_as(&client, &gateway, "missing.test", None, "").await, 401);
}

/// Cookie affinity: an Ingress per mode and option set, over the same pods.
fn affinity_manifests(ready: &[std::net::SocketAddr], not_ready: &[std::net::SocketAddr]) -> Vec<String> {
    let app = [("/", "Prefix", "app")];
    let cookie = ("nginx.ingress.kubernetes.io/affinity", "cookie");
    let persistent = ("nginx.ingress.kubernetes.io/affinity-mode", "persistent");
    let change = ("nginx.ingress.kubernetes.io/session-cookie-change-on-failure", "true");
    vec![
        service("app", ready, not_ready),
        annotated_ingress("balanced", "balanced.test", &[("/shop", "Prefix", "app")], &[cookie]),
        annotated_ingress("persistent", "persistent.test", &app, &[cookie, persistent]),
        annotated_ingress("change", "change.test", &app, &[cookie, persistent, change]),
        annotated_ingress(
            "attributes",
            "attributes.test",
            &app,
            &[
                cookie,
                ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
                ("nginx.ingress.kubernetes.io/session-cookie-path", "/"),
                ("nginx.ingress.kubernetes.io/session-cookie-domain", ".attributes.test"),
                ("nginx.ingress.kubernetes.io/session-cookie-max-age", "172800"),
                ("nginx.ingress.kubernetes.io/session-cookie-expires", "172800"),
                ("nginx.ingress.kubernetes.io/session-cookie-samesite", "None"),
                ("nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none", "true"),
                ("nginx.ingress.kubernetes.io/session-cookie-secure", "true"),
            ],
        ),
    ]
}

/// `NAME=VALUE` of a `Set-Cookie`.
fn issued(reply: &Reply, name: &str) -> Option<String> {
    let cookie = header(reply, "set-cookie")?;
    let pair = cookie.split(';').next()?;
    pair.strip_prefix(&format!("{name}=")).map(str::to_owned)
}

/// Where each of `keys` (balanced cookies) goes.
async fn placements(client: &Client, gateway: &Gateway, keys: &[String]) -> Vec<String> {
    let mut pods = Vec::new();
    for key in keys {
        let cookie = format!("INGRESSCOOKIE={key}");
        let reply = get(client, gateway, "/shop", "balanced.test", &[("cookie", &cookie)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(header(&reply, "set-cookie"), None, "a valid key is kept");
        pods.push(reply.pod());
    }
    pods
}

/// Repeats `check` until it holds (the gateway reloads a rewritten manifest), for at most 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cookie_affinity_sticks_fails_over_and_rebalances_across_replicas() {
    let pods = Pods::start(&["127.0.0.44", "127.0.0.45", "127.0.0.46", "127.0.0.47"]).await.unwrap();
    let (first3, fourth) = (&pods.addrs[..3], &pods.addrs[3..]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &affinity_manifests(first3, fourth));
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let other = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    // Stickiness: the first answer issues a cookie; 100 requests with it reach one pod, on
    // either replica.
    for host in ["balanced.test", "persistent.test"] {
        let path = if host == "balanced.test" { "/shop/cart" } else { "/" };
        let first = get(&client, &gateway, path, host, &[]).await;
        let set_cookie = header(&first, "set-cookie").unwrap().to_owned();
        let expected_path = if host == "balanced.test" { "; Path=/shop; HttpOnly" } else { "; Path=/; HttpOnly" };
        assert!(set_cookie.ends_with(expected_path), "{set_cookie}");
        let value = issued(&first, "INGRESSCOOKIE").unwrap();
        assert!(pods.addrs.iter().all(|a| !value.contains(&a.ip().to_string())), "the cookie shows no address");
        let cookie = format!("INGRESSCOOKIE={value}");
        let mut seen = HashSet::new();
        for i in 0..100 {
            let replica = if i % 2 == 0 { &gateway } else { &other };
            let reply = get(&client, replica, path, host, &[("cookie", &cookie)]).await;
            assert_eq!(header(&reply, "set-cookie"), None);
            seen.insert(reply.pod());
        }
        assert_eq!(seen.len(), 1, "{host}: {seen:?}");
        assert!(seen.contains(&first.pod()));
    }

    // Cookie attributes, and SameSite=None left out for a client known to reject it.
    let reply = get(&client, &gateway, "/", "attributes.test", &[]).await;
    let cookie = header(&reply, "set-cookie").unwrap();
    let expires = cookie.split("; Expires=").nth(1).unwrap().split(';').next().unwrap();
    let expires = httpdate::parse_http_date(expires).unwrap();
    let ahead = expires.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(172_700) && ahead <= Duration::from_secs(172_800), "{cookie}");
    let without_expiry = cookie.replace(&format!("; Expires={}", httpdate::fmt_http_date(expires)), "");
    assert!(without_expiry.starts_with("route="), "{cookie}");
    assert!(
        without_expiry.ends_with("; Path=/; Domain=.attributes.test; Max-Age=172800; SameSite=None; Secure; HttpOnly"),
        "{cookie}"
    );
    let chrome60 =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.90 Safari/537.36";
    let old = get(&client, &gateway, "/", "attributes.test", &[("user-agent", chrome60)]).await;
    assert!(!header(&old, "set-cookie").unwrap().contains("SameSite"));

    // Balanced mode: keys spread over the pods; scaling from 3 to 4 moves about a quarter of
    // them, each to the new pod, and both replicas agree on every placement.
    let keys: Vec<String> = (0..400).map(|_| format!("{:016x}", fastrand::u64(..))).collect();
    let before = placements(&client, &gateway, &keys).await;
    assert_eq!(before, placements(&client, &other, &keys).await);
    let mut spread: HashMap<&String, usize> = HashMap::new();
    before.iter().for_each(|pod| *spread.entry(pod).or_default() += 1);
    assert!(spread.len() == 3 && spread.values().all(|&n| n > 80), "{spread:?}");
    let first = get(&client, &gateway, "/", "persistent.test", &[]).await;
    let persistent_cookie = format!("INGRESSCOOKIE={}", issued(&first, "INGRESSCOOKIE").unwrap());
    let persistent_pod = get(&client, &gateway, "/", "persistent.test", &[("cookie", &persistent_cookie)]).await.pod();

    write(dir.path(), &affinity_manifests(&pods.addrs, &[]));
    let new_pod = pods.addrs[3].to_string();
    for replica in [&gateway, &other] {
        eventually("the fourth pod serves", || async {
            placements(&client, replica, &keys[..40]).await.contains(&new_pod)
        })
        .await;
    }
    let after = placements(&client, &gateway, &keys).await;
    assert_eq!(after, placements(&client, &other, &keys).await);
    let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(moved.iter().all(|&i| after[i] == new_pod), "keys only move to the new pod");
    assert!((50..=150).contains(&moved.len()), "{} of 400 keys moved; about 100 expected", moved.len());
    // Persistent mode never rebalances.
    for _ in 0..20 {
        let reply = get(&client, &gateway, "/", "persistent.test", &[("cookie", &persistent_cookie)]).await;
        assert_eq!(reply.pod(), persistent_pod);
    }

    // Failover: the sticky pod stops being ready; its requests go elsewhere and the persistent
    // cookie is re-issued for the pod that served, which then sticks.
    let sticky: std::net::SocketAddr = persistent_pod.parse().unwrap();
    let rest: Vec<_> = pods.addrs.iter().copied().filter(|a| *a != sticky).collect();
    write(dir.path(), &affinity_manifests(&rest, &[sticky]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let reissued = loop {
        let reply = get(&client, &gateway, "/", "persistent.test", &[("cookie", &persistent_cookie)]).await;
        assert_eq!(reply.status, 200);
        if reply.pod() != persistent_pod {
            break (issued(&reply, "INGRESSCOOKIE").expect("the cookie is re-issued"), reply.pod());
        }
        assert!(Instant::now() < deadline, "the sticky pod kept serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (value, pod) = reissued;
    let cookie = format!("INGRESSCOOKIE={value}");
    for _ in 0..20 {
        let reply = get(&client, &gateway, "/", "persistent.test", &[("cookie", &cookie)]).await;
        assert_eq!((reply.pod(), header(&reply, "set-cookie")), (pod.clone(), None));
    }
    // Balanced sessions of the pod that left carry on elsewhere.
    let cut = placements(&client, &gateway, &keys).await;
    assert!(cut.iter().all(|p| *p != persistent_pod));
}

#[tokio::test]
async fn change_on_failure_repoints_the_cookie_when_its_pod_fails() {
    let mut pods = Pods::start(&["127.0.0.48", "127.0.0.49"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &affinity_manifests(&pods.addrs, &[]));
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    // Cookies naming pod 0, for an Ingress with and one without change-on-failure.
    let mut cookies = HashMap::new();
    for host in ["change.test", "persistent.test"] {
        for _ in 0..50 {
            let reply = get(&client, &gateway, "/", host, &[]).await;
            if reply.pod() == pods.addrs[0].to_string() {
                cookies.insert(host, format!("INGRESSCOOKIE={}", issued(&reply, "INGRESSCOOKIE").unwrap()));
                break;
            }
        }
    }
    // Pod 0 dies before its EndpointSlice says so: the request is retried on pod 1.
    pods.kill(0);
    // Let the gateway see its pooled connections to pod 0 close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let survivor = pods.addrs[1].to_string();
    let reply = get(&client, &gateway, "/", "change.test", &[("cookie", &cookies["change.test"])]).await;
    assert_eq!(reply.pod(), survivor);
    let repointed = format!("INGRESSCOOKIE={}", issued(&reply, "INGRESSCOOKIE").expect("the cookie is changed"));
    let next = get(&client, &gateway, "/", "change.test", &[("cookie", &repointed)]).await;
    assert_eq!((next.pod(), header(&next, "set-cookie")), (survivor.clone(), None));
    // Without change-on-failure the cookie keeps naming pod 0.
    let reply = get(&client, &gateway, "/", "persistent.test", &[("cookie", &cookies["persistent.test"])]).await;
    assert_eq!((reply.pod(), header(&reply, "set-cookie")), (survivor, None));
}

#[tokio::test]
async fn matches_ingress_nginx_where_it_differed() {
    let pods = Pods::start(&["127.0.0.48", "127.0.0.49"]).await.unwrap();
    let (a, b) = (&pods.addrs[..1], &pods.addrs[1..]);
    let dir = tempfile::tempdir().unwrap();
    let certificate = sluice_tests::tls::Certificate::new(&["secure.test"]);
    let cookie = ("nginx.ingress.kubernetes.io/affinity", "cookie");
    let manifests = [
        service("a", a, &[]),
        service("b", b, &[]),
        certificate.secret("secure"),
        // An empty X-Forwarded-Prefix sends no header.
        annotated_ingress(
            "prefix",
            "prefix.test",
            &[("/", "Prefix", "a")],
            &[("nginx.ingress.kubernetes.io/x-forwarded-prefix", "")],
        ),
        // A rewrite target equal to the rule's path rewrites nothing.
        annotated_ingress("same", "same.test", &[("/", "ImplementationSpecific", "a")], &[(REWRITE_TARGET, "/")]),
        // `/foo/bar/` takes what lies below it from `/foo/bar`.
        ingress("slash", "slash.test", &[("/foo/bar", "Prefix", "a"), ("/foo/bar/", "Prefix", "b")]),
        // Over HTTPS the affinity cookie is Secure, whatever session-cookie-secure says.
        annotated_ingress(
            "secure",
            "secure.test",
            &[("/", "Prefix", "a")],
            &[cookie, ("nginx.ingress.kubernetes.io/session-cookie-secure", "false")],
        )
        .replace("  rules:\n", "  tls: [{hosts: [\"secure.test\"], secretName: secure}]\n  rules:\n"),
    ];
    write(dir.path(), &manifests);
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();

    let reply = get(&client, &gateway, "/x", "prefix.test", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["headers"].get("x-forwarded-prefix").is_none(), "{}", reply.body);

    let reply = get(&client, &gateway, "/a/b?c=1", "same.test", &[]).await;
    assert_eq!(reply.json()["uri"], "/a/b?c=1");

    let (a, b) = (a[0].to_string(), b[0].to_string());
    for (path, pod) in [("/foo/bar", &a), ("/foo/bar/", &b), ("/foo/bar/baz", &b)] {
        assert_eq!(&get(&client, &gateway, path, "slash.test", &[]).await.pod(), pod, "{path}");
    }

    let mut https = sluice_tests::tls::Connection::open(gateway.https, Some("secure.test"), false).await.unwrap();
    let (reply, _) = https.get("secure.test", "/").await.unwrap();
    let set_cookie = header(&reply, "set-cookie").unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let plain = get(&client, &gateway, "/", "secure.test", &[]).await;
    assert_eq!(plain.status, 308, "plain HTTP to a TLS host is redirected");
}

/// The statuses of `count` GETs of `path` on `host` one after another, sent on behalf of
/// `client` (`X-Forwarded-For`), with how long they took.
async fn burst(
    client: &Client,
    gateway: &Gateway,
    host: &str,
    path: &str,
    forwarded_for: &str,
    count: usize,
) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let reply = get(client, gateway, path, host, &[("x-forwarded-for", forwarded_for)]).await;
        if reply.status != 200 {
            assert_eq!(reply.body, "too many requests\n");
        }
        statuses.push(reply.status);
    }
    (statuses, started.elapsed())
}

#[tokio::test]
async fn rate_limits_refuse_a_client_past_its_burst_and_its_requests_in_flight() {
    let pods = Pods::start(&["127.0.0.76"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = [("/", "Prefix", "app")];
    let rps = "nginx.ingress.kubernetes.io/limit-rps";
    let multiplier = "nginx.ingress.kubernetes.io/limit-burst-multiplier";
    let manifests = [
        service("app", &pods.addrs, &[]),
        // 2 a second with a burst of 4: 5 at once.
        annotated_ingress(
            "rps",
            "rps.test",
            &app,
            &[(rps, "2"), (multiplier, "2"), ("nginx.ingress.kubernetes.io/limit-allowlist", "10.9.0.0/16")],
        ),
        // 1 a minute with the default burst of 5: 6 at once.
        annotated_ingress("rpm", "rpm.test", &app, &[("nginx.ingress.kubernetes.io/limit-rpm", "1")]),
        annotated_ingress("conn", "conn.test", &app, &[("nginx.ingress.kubernetes.io/limit-connections", "1")]),
        annotated_ingress("broken", "broken.test", &app, &[(rps, "ten")]),
    ];
    write(dir.path(), &manifests);
    let args = ["--trusted-proxies", "127.0.0.1/32", "--limit-status", "429"];
    let gateway = Gateway::start(dir.path(), &args).await.unwrap();
    let client = Client::new();

    let (statuses, took) = burst(&client, &gateway, "rps.test", "/", "10.1.0.1", 20).await;
    assert_eq!(statuses[..5], [200; 5], "the burst is admitted");
    // Tokens come back at 2 a second while the loop runs.
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refilled = (took.as_secs_f64() * 2.0).ceil() as usize;
    assert!(admitted <= 5 + refilled, "{admitted} admitted in {took:?}: {statuses:?}");
    assert!(statuses.contains(&429), "the status of --limit-status: {statuses:?}");
    // Each client address has its own bucket; allowlisted ones have none.
    assert_eq!(burst(&client, &gateway, "rps.test", "/", "10.1.0.2", 1).await.0, [200]);
    assert_eq!(burst(&client, &gateway, "rps.test", "/", "10.9.0.1", 30).await.0, [200; 30]);

    let (statuses, _) = burst(&client, &gateway, "rpm.test", "/", "10.1.0.1", 8).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429], "6 at once, then 1 a minute");

    // One request in flight per client: a second waits for the first's response.
    let slow = {
        let (client, url) = (client.clone(), gateway.url("/sleep/1500"));
        tokio::spawn(async move {
            let headers = [("x-forwarded-for", "10.1.0.1")];
            client.request(http::Method::GET, &url, "conn.test", &headers, Default::default()).await.unwrap().status
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(burst(&client, &gateway, "conn.test", "/", "10.1.0.1", 1).await.0, [429], "while one is in flight");
    assert_eq!(burst(&client, &gateway, "conn.test", "/", "10.1.0.2", 1).await.0, [200], "another client");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(burst(&client, &gateway, "conn.test", "/", "10.1.0.1", 3).await.0, [200; 3], "held until the response");

    // An invalid limit fails the Ingress closed.
    assert_eq!(get(&client, &gateway, "/", "broken.test", &[]).await.status, 500);
    assert_eq!(only_error(&gateway).await["field"], format!("metadata.annotations[{rps}]"));
}

/// An authentication Service for `auth-url`, on `ip`. By the request's `Authorization`:
/// `Bearer good` gets 200 with `X-User: alice` and, in `X-Auth-*`, what the request told it;
/// `Bearer slow` the same after 300 ms; `Bearer cookie` the same with a `Set-Cookie`; `Bearer forbidden` 403; `Bearer broken` 502; anything
/// else 401 with a challenge. `X-Auth-Calls` counts the requests it has answered.
async fn auth_service(ip: &str) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    async fn answer(request: http::Request<hyper::body::Incoming>) -> Result<http::Response<String>, hyper::Error> {
        let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let seen = |name: &str| request.headers().get(name).map_or("", |v| v.to_str().unwrap()).to_owned();
        let authorization = seen("authorization");
        if authorization == "Bearer slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let status = match authorization.as_str() {
            "Bearer good" | "Bearer slow" | "Bearer cookie" => 200,
            "Bearer forbidden" => 403,
            "Bearer broken" => 502,
            _ => 401,
        };
        let mut answer = http::Response::builder()
            .status(status)
            .header("x-user", "alice")
            .header("x-auth-method", request.method().as_str())
            .header("x-auth-original-url", seen("x-original-url"))
            .header("x-auth-original-method", seen("x-original-method"))
            .header("x-auth-redirect", seen("x-auth-request-redirect"))
            .header("x-auth-host", seen("host"))
            .header("x-auth-calls", calls.to_string());
        if status == 401 {
            answer = answer.header("www-authenticate", "Bearer realm=\"shop\"");
        }
        if authorization == "Bearer cookie" {
            answer = answer.header("set-cookie", "auth=fresh; Path=/");
        }
        Ok(answer.body("auth says hello".to_owned()).unwrap())
    }

    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = server.serve_connection(TokioIo::new(stream), service_fn(answer)).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn auth_url_asks_the_authentication_service_and_fails_closed_without_it() {
    let pods = Pods::start(&["127.0.0.78"]).await.unwrap();
    let auth = auth_service("127.0.0.79").await;
    let dir = tempfile::tempdir().unwrap();
    let app = [("/", "Prefix", "app")];
    let url = "nginx.ingress.kubernetes.io/auth-url";
    let copied = (
        "nginx.ingress.kubernetes.io/auth-response-headers",
        "X-User, X-Auth-Method, X-Auth-Original-Url, X-Auth-Original-Method, X-Auth-Redirect, X-Auth-Host, X-Missing",
    );
    let manifests = [
        service("app", &pods.addrs, &[]),
        service("auth", &[auth], &[]),
        annotated_ingress(
            "guarded",
            "guarded.test",
            &app,
            &[(url, "http://auth.default.svc.cluster.local/verify?v=1"), copied],
        ),
        annotated_ingress(
            "signin",
            "signin.test",
            &app,
            &[
                (url, "http://auth/verify"),
                ("nginx.ingress.kubernetes.io/auth-signin", "https://login.test/start"),
                ("nginx.ingress.kubernetes.io/auth-method", "post"),
                copied,
            ],
        ),
        annotated_ingress(
            "cached",
            "cached.test",
            &app,
            &[
                (url, "http://auth/verify"),
                ("nginx.ingress.kubernetes.io/auth-response-headers", "X-Auth-Calls"),
                ("nginx.ingress.kubernetes.io/auth-cache-key", "$http_authorization"),
                ("nginx.ingress.kubernetes.io/auth-cache-duration", "200 1m"),
            ],
        ),
        annotated_ingress("nobody", "nobody.test", &app, &[(url, "http://nobody/verify")]),
        annotated_ingress("elsewhere", "elsewhere.test", &app, &[(url, "http://auth.other.svc.cluster.local/")]),
    ];
    write(dir.path(), &manifests);
    let gateway = Gateway::start(dir.path(), &[]).await.unwrap();
    let client = Client::new();
    let bearer = |token: &'static str| ("authorization", token);

    // Let through, with the listed headers of the answer; a client's own are replaced or removed.
    let forged = [bearer("Bearer good"), ("x-user", "mallory"), ("x-missing", "forged")];
    let reply = get(&client, &gateway, "/cart?id=1", "guarded.test", &forged).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sent = &reply.json()["headers"];
    assert_eq!(sent["x-user"], "alice");
    assert_eq!(sent["x-auth-method"], "GET");
    assert_eq!(sent["x-auth-original-url"], "http://guarded.test/cart?id=1");
    assert_eq!(sent["x-auth-original-method"], "GET");
    assert_eq!(sent["x-auth-redirect"], "/cart?id=1");
    assert_eq!(sent["x-auth-host"], "auth.default.svc.cluster.local");
    assert_eq!(sent["authorization"], "Bearer good", "the request keeps its own credentials");
    assert!(sent.get("x-missing").is_none(), "{sent}");
    // The answer's cookies go to the client, as ingress-nginx passes them on.
    let refreshed = get(&client, &gateway, "/", "guarded.test", &[bearer("Bearer cookie")]).await;
    assert_eq!(header(&refreshed, "set-cookie"), Some("auth=fresh; Path=/"));
    assert_eq!(header(&reply, "set-cookie"), None);
    // The wait for the Service does not count against the filter's 50 ms deadline.
    assert_eq!(get(&client, &gateway, "/", "guarded.test", &[bearer("Bearer slow")]).await.status, 200);

    let refused = get(&client, &gateway, "/", "guarded.test", &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(header(&refused, "www-authenticate"), Some("Bearer realm=\"shop\""));
    assert_eq!(get(&client, &gateway, "/", "guarded.test", &[bearer("Bearer forbidden")]).await.status, 403);
    assert_eq!(get(&client, &gateway, "/", "guarded.test", &[bearer("Bearer broken")]).await.status, 500);

    // With a sign-in page, a 401 is a redirect there; the request's URL goes along.
    let redirected = get(&client, &gateway, "/deep/path?a=1", "signin.test", &[]).await;
    assert_eq!(redirected.status, 302);
    assert_eq!(
        header(&redirected, "location"),
        Some("https://login.test/start?rd=http://signin.test/deep/path%3Fa%3D1")
    );
    let reply = get(&client, &gateway, "/", "signin.test", &[bearer("Bearer good")]).await;
    assert_eq!(reply.json()["headers"]["x-auth-method"], "POST");

    // With a cache, an answer stands for its key while it lasts; another key asks again.
    let calls = async |token| {
        let reply = get(&client, &gateway, "/", "cached.test", &[bearer(token)]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["headers"]["x-auth-calls"].as_str().unwrap().parse::<u32>().unwrap()
    };
    let first = calls("Bearer good").await;
    assert_eq!((calls("Bearer good").await, calls("Bearer good").await), (first, first), "kept");
    assert!(calls("Bearer slow").await > first, "another key");
    let cookie = calls("Bearer cookie").await;
    assert!(calls("Bearer cookie").await > cookie, "an answer setting cookies is not kept");

    // Without its Service, or with one the gateway may not call, the route fails closed.
    assert_eq!(get(&client, &gateway, "/", "nobody.test", &[bearer("Bearer good")]).await.status, 500);
    assert_eq!(get(&client, &gateway, "/", "elsewhere.test", &[bearer("Bearer good")]).await.status, 500);
    let config = gateway.config().await.unwrap();
    let errors: Vec<_> = config["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["object"].to_string(), e["field"].to_string()))
        .collect();
    let field = format!("\"metadata.annotations[{url}]\"");
    assert!(errors.contains(&("\"Ingress default/elsewhere\"".to_owned(), field.clone())), "{errors:?}");
    assert!(errors.contains(&("\"Ingress default/nobody\"".to_owned(), field)), "{errors:?}");
}
