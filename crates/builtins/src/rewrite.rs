//! Redirects, `app-root` and path rewriting with regex captures, as ingress-nginx does them.

use serde::{Deserialize, Serialize};

use crate::{Config, check};

/// The `rewrite` plugin's configuration. Applied in this order: a redirect answers every
/// request; `app-root` answers requests for `/`; otherwise the path is rewritten and
/// `X-Forwarded-Prefix` set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rewrite {
    /// Every request is answered with this redirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Requests for `/` are redirected (302) to this path on the same host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    /// The path sent upstream; `$1`..`$9` are the route regex's capture groups. A `?` starts
    /// new query arguments; the request's own are appended unless the target ends with `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Sent upstream as `X-Forwarded-Prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_prefix: Option<String>,
}

/// A fixed redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub location: String,
    pub status: u16,
}

impl Config for Rewrite {
    fn validate(&self) -> Result<(), String> {
        if let Some(redirect) = &self.redirect {
            check::redirect_location(&redirect.location).map_err(|e| format!("redirect.location: {e}"))?;
            check::redirect_status(redirect.status).map_err(|e| format!("redirect.status: {e}"))?;
        }
        if let Some(root) = &self.app_root {
            check::absolute_path(root).map_err(|e| format!("app-root: {e}"))?;
        }
        if let Some(target) = &self.target {
            check_target(target).map_err(|e| format!("target: {e}"))?;
        }
        if let Some(prefix) = &self.forwarded_prefix {
            check::header_value(prefix).map_err(|e| format!("forwarded-prefix: {e}"))?;
        }
        Ok(())
    }
}

/// A rewrite target: an absolute path, or one that starts with a capture (`$1/x`).
pub fn check_target(target: &str) -> Result<(), String> {
    if target.starts_with('/') || target.starts_with('$') {
        check::absolute_path(&format!("/{target}"))
    } else {
        Err(format!("{target:?} must begin with '/' or a capture such as $1"))
    }
}

/// Whether `target` rewrites requests of the route whose path is `route` (`Regex /x`,
/// `Prefix /x`, `default`): like ingress-nginx, a target equal to the rule's path does not.
pub fn applies(target: &str, route: &str) -> bool {
    route.split_once(' ').is_none_or(|(_, path)| path != target)
}

/// The path and query a rewrite target yields, from the route regex's `captures` (group 0
/// first; a missing group is empty, as in nginx) and the request's `query`.
pub fn expand(target: &str, captures: &[Option<String>], query: Option<&str>) -> (String, Option<String>) {
    let mut out = String::with_capacity(target.len() + 16);
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(group)) => {
                chars.next();
                let group = usize::try_from(group).expect("a digit fits");
                out.push_str(captures.get(group).and_then(Option::as_deref).unwrap_or_default());
            }
            _ => out.push(c),
        }
    }
    let (mut path, query) = match out.split_once('?') {
        None => (out, query.map(str::to_owned)),
        // A trailing `?` drops the request's arguments; otherwise they follow the new ones.
        Some((path, "")) => (path.to_owned(), None),
        Some((path, new)) => {
            let query = match query {
                Some(old) if !old.is_empty() => format!("{new}&{old}"),
                _ => new.to_owned(),
            };
            (path.to_owned(), Some(query))
        }
    };
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    (path, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(groups: &[&str]) -> Vec<Option<String>> {
        groups.iter().map(|g| Some(g.to_string())).collect()
    }

    #[test]
    fn expands_like_the_ingress_nginx_examples() {
        // path `/something(/|$)(.*)`, target `/$2`
        assert_eq!(expand("/$2", &groups(&["/something", "", ""]), None), ("/".into(), None));
        assert_eq!(expand("/$2", &groups(&["/something/", "/", ""]), None), ("/".into(), None));
        assert_eq!(
            expand("/$2", &groups(&["/something/new", "/", "new"]), Some("a=1")),
            ("/new".into(), Some("a=1".into()))
        );
        assert_eq!(expand("/x/$1", &[Some("/".into()), None], None), ("/x/".into(), None));
        assert_eq!(expand("$1", &groups(&["/a/b", "a/b"]), None), ("/a/b".into(), None));
        assert_eq!(expand("/$9$", &[], None), ("/$".into(), None));
    }

    #[test]
    fn a_target_equal_to_the_rule_path_is_no_rewrite() {
        assert!(!applies("/", "Regex /"));
        assert!(!applies("/app", "Prefix /app"));
        assert!(applies("/$2", "Regex /something(/|$)(.*)"));
        assert!(applies("/", "default"));
    }

    #[test]
    fn query_arguments() {
        assert_eq!(expand("/p?x=1", &[], Some("a=1")), ("/p".into(), Some("x=1&a=1".into())));
        assert_eq!(expand("/p?x=1", &[], None), ("/p".into(), Some("x=1".into())));
        assert_eq!(expand("/p?", &[], Some("a=1")), ("/p".into(), None));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Rewrite { app_root: Some("app".into()), ..Rewrite::default() };
        assert!(bad.validate().unwrap_err().starts_with("app-root:"));
        let bad = Rewrite { redirect: Some(Redirect { location: "/x".into(), status: 200 }), ..Rewrite::default() };
        assert!(bad.validate().unwrap_err().starts_with("redirect.status:"));
        assert!(check_target("new").is_err() && check_target("/$1 x").is_err() && check_target("$1").is_ok());
        let parsed: Rewrite = crate::parse(r#"{"target":"/$2","forwarded-prefix":"/something"}"#).unwrap();
        assert_eq!(parsed.target.as_deref(), Some("/$2"));
        assert!(crate::parse::<Rewrite>(r#"{"targets":"/"}"#).is_err());
    }
}
