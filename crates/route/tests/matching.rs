//! Matching semantics: every example of the Kubernetes Ingress documentation (path types,
//! multiple matches, host wildcards), plus Sluice's precedence rules (exact hosts, then wildcards, then
//! host-less rules; the longest path; Exact, Prefix, regex; the oldest Ingress).

use sluice_config::{HostMatch, PathMatch};
use sluice_route::{RegexCache, RouteTable};

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.into())
}
/// As the config crate stores Prefix paths: with at most one trailing slash.
fn prefix(p: &str) -> PathMatch {
    let trimmed = p.trim_end_matches('/');
    PathMatch::Prefix(if trimmed.len() + 1 < p.len() { format!("{trimmed}/") } else { p.into() })
}
fn regex(p: &str) -> PathMatch {
    PathMatch::Regex(p.into())
}

/// A table with the given paths on every host, each route named by its index.
fn table(paths: &[PathMatch]) -> RouteTable<usize> {
    let mut table = RouteTable::default();
    for (i, path) in paths.iter().enumerate() {
        table.insert(&HostMatch::Any, path, i, &RegexCache::default()).unwrap();
    }
    table
}

fn route(table: &RouteTable<usize>, host: &str, path: &str) -> Option<usize> {
    table.route(host, path).copied()
}

#[test]
fn kubernetes_docs_path_type_examples() {
    // (kind, path(s), request path, matches?) from "Examples" in the Ingress concept page.
    let cases: &[(&[PathMatch], &str, bool)] = &[
        (&[prefix("/")], "/anything/at/all", true),
        (&[exact("/foo")], "/foo", true),
        (&[exact("/foo")], "/bar", false),
        (&[exact("/foo")], "/foo/", false),
        (&[exact("/foo/")], "/foo", false),
        (&[prefix("/foo")], "/foo", true),
        (&[prefix("/foo")], "/foo/", true),
        (&[prefix("/foo/")], "/foo", true),
        (&[prefix("/foo/")], "/foo/", true),
        (&[prefix("/aaa/bb")], "/aaa/bbb", false),
        (&[prefix("/aaa/bbb")], "/aaa/bbb", true),
        (&[prefix("/aaa/bbb/")], "/aaa/bbb", true),
        (&[prefix("/aaa/bbb")], "/aaa/bbb/", true),
        (&[prefix("/aaa/bbb")], "/aaa/bbb/ccc", true),
        (&[prefix("/aaa/bbb")], "/aaa/bbbxyz", false),
        (&[prefix("/"), prefix("/aaa")], "/aaa/ccc", true),
        (&[prefix("/"), prefix("/aaa"), exact("/foo")], "/ccc", true),
        (&[prefix("/aaa")], "/ccc", false),
        (&[prefix("/foo"), exact("/foo")], "/foo", true),
    ];
    for (paths, request, want) in cases {
        assert_eq!(route(&table(paths), "example.com", request).is_some(), *want, "{paths:?} vs {request}");
    }
}

#[test]
fn kubernetes_docs_multiple_matches() {
    // Mixed: Prefix / and Prefix /aaa, request /aaa/ccc -> /aaa.
    assert_eq!(route(&table(&[prefix("/"), prefix("/aaa")]), "h", "/aaa/ccc"), Some(1));
    // Prefix /, Prefix /aaa, Exact /foo; request /ccc -> Prefix /.
    assert_eq!(route(&table(&[prefix("/"), prefix("/aaa"), exact("/foo")]), "h", "/ccc"), Some(0));
    // Prefix /foo and Exact /foo: Exact wins.
    assert_eq!(route(&table(&[prefix("/foo"), exact("/foo")]), "h", "/foo"), Some(1));
    // ... but only for the exact path.
    assert_eq!(route(&table(&[prefix("/foo"), exact("/foo")]), "h", "/foo/x"), Some(0));
}

#[test]
fn a_prefix_with_a_trailing_slash_takes_what_lies_below_it() {
    // As in ingress-nginx (its rewrite example relies on it), in either age order.
    for paths in [[prefix("/foo/bar"), prefix("/foo/bar/")], [prefix("/foo/bar/"), prefix("/foo/bar")]] {
        let t = table(&paths);
        let slashed = paths.iter().position(|p| p.as_str().ends_with('/'));
        let plain = paths.iter().position(|p| !p.as_str().ends_with('/'));
        assert_eq!(route(&t, "h", "/foo/bar/"), slashed);
        assert_eq!(route(&t, "h", "/foo/bar/x"), slashed);
        assert_eq!(route(&t, "h", "/foo/bar"), plain);
        assert_eq!(route(&t, "h", "/foo/barx"), None);
    }
    // Alone, each matches all three, as Kubernetes says.
    for path in ["/foo/bar", "/foo/bar/", "/foo/bar/x"] {
        assert_eq!(route(&table(&[prefix("/foo/bar/")]), "h", path), Some(0));
    }
}

#[test]
fn longest_path_string_wins_across_types() {
    let t = table(&[prefix("/api"), regex("/api/v[0-9]+"), exact("/api/v1/x"), regex("/ap.")]);
    assert_eq!(route(&t, "h", "/api/v2/users"), Some(1), "a longer regex beats a shorter prefix");
    assert_eq!(route(&t, "h", "/api/v1/x"), Some(1), "a 12-character regex beats a 9-character exact path");
    assert_eq!(route(&t, "h", "/api/x"), Some(0), "on equal length, Prefix beats regex");
    assert_eq!(route(&t, "h", "/apx"), Some(3));
}

#[test]
fn regexes_are_case_insensitive_anchored_at_the_start_and_oldest_first() {
    let t = table(&[regex("/a.c"), regex("/ab."), prefix("/")]);
    assert_eq!(route(&t, "h", "/ABC/def"), Some(0), "equal length: the older regex wins");
    assert_eq!(route(&t, "h", "/abd"), Some(1));
    assert_eq!(route(&t, "h", "/x/abc"), Some(2), "not anchored at the end, but at the start");
}

#[test]
fn a_second_route_for_the_same_host_and_path_is_refused() {
    let mut t = table(&[prefix("/a"), prefix("/b/"), regex("/r")]);
    assert!(t.insert(&HostMatch::Any, &prefix("/a"), 9, &RegexCache::default()).is_err());
    assert!(t.insert(&HostMatch::Any, &prefix("/b//"), 9, &RegexCache::default()).is_err());
    assert!(t.insert(&HostMatch::Any, &prefix("/a/"), 9, &RegexCache::default()).is_ok(), "see trailing slash");
    assert!(t.insert(&HostMatch::Any, &regex("/r"), 9, &RegexCache::default()).is_err());
    assert!(t.insert(&HostMatch::Any, &exact("/a"), 9, &RegexCache::default()).is_ok());
}

fn host_table() -> RouteTable<&'static str> {
    let mut t = RouteTable::default();
    let none = RegexCache::default();
    let exact_host = HostMatch::Exact("foo.bar.com".into());
    t.insert(&exact_host, &prefix("/"), "foo.bar.com", &none).unwrap();
    t.insert(&HostMatch::Wildcard("bar.com".into()), &prefix("/"), "*.bar.com", &none).unwrap();
    t.insert(&HostMatch::Exact("api.com".into()), &prefix("/v1"), "api.com/v1", &none).unwrap();
    t.set_fallback(&HostMatch::Exact("api.com".into()), "api.com fallback");
    t.insert(&HostMatch::Exact("web.com".into()), &prefix("/v1"), "web.com/v1", &none).unwrap();
    t.insert(&HostMatch::Any, &prefix("/any"), "hostless", &none).unwrap();
    t.set_default("default backend");
    t
}

#[test]
fn kubernetes_docs_host_wildcards() {
    let t = host_table();
    // From the docs: *.foo.com matches bar.foo.com, not baz.bar.foo.com, not foo.com.
    assert_eq!(t.route("baz.bar.com", "/"), Some(&"*.bar.com"));
    assert_eq!(t.route("foo.bar.com", "/"), Some(&"foo.bar.com"), "exact beats wildcard");
    assert_eq!(t.route("baz.foo.bar.com", "/any"), Some(&"hostless"), "one label only");
    assert_eq!(t.route("bar.com", "/any"), Some(&"hostless"));
}

#[test]
fn hosts_ignore_case_port_and_trailing_dot() {
    let t = host_table();
    assert_eq!(t.route("FOO.Bar.COM:8080", "/"), Some(&"foo.bar.com"));
    assert_eq!(t.route("foo.bar.com.", "/"), Some(&"foo.bar.com"));
    assert_eq!(t.route("[::1]:80", "/any"), Some(&"hostless"));
}

#[test]
fn unmatched_paths_fall_back_to_the_host_then_the_default_backend() {
    let t = host_table();
    assert_eq!(t.route("api.com", "/v2"), Some(&"api.com fallback"));
    assert_eq!(t.route("web.com", "/v2"), Some(&"default backend"));
    assert_eq!(t.route("web.com", "/any"), Some(&"default backend"), "host-less rules do not apply to named hosts");
    assert_eq!(t.route("other.org", "/"), Some(&"default backend"));
    let mut no_default = RouteTable::default();
    no_default.insert(&HostMatch::Exact("a.com".into()), &prefix("/x"), 1, &RegexCache::default()).unwrap();
    assert_eq!(no_default.route("a.com", "/y"), None);
    assert_eq!(no_default.route("b.com", "/x"), None);
}
