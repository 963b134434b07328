//! HTTP Basic authentication, as ingress-nginx's `auth-type: basic`: the users and their
//! password hashes come from a Secret, in the forms nginx's `auth_basic_user_file` reads.
//!
//! A request passes when its `Authorization: Basic` credentials name a user and the password
//! matches that user's hash; anything else is answered 401 with a `WWW-Authenticate`
//! challenge. Hashes are checked with `crypt3_rs` (apr1, md5-crypt, bcrypt, sha-crypt, DES
//! crypt) and `sha1` (`{SHA}`, `{SSHA}`); the final comparison is constant-time. As in nginx,
//! an unknown user is refused without hashing anything.
//!
//! Unlike nginx, a filter instance remembers the credentials it verified (a SHA-256 of the
//! user's hash entry and the password, never the password): apr1's thousand MD5 rounds, or
//! bcrypt's far more, are paid once per instance and password rather than on every request.
//! A changed hash entry is a different key, so a new Secret is checked afresh.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Config, SourceRanges};

/// The `basic-auth` plugin's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// Sent in the challenge, `Basic realm="..."`; empty by default, as in ingress-nginx.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub realm: String,
    /// Password hashes by user name.
    pub users: BTreeMap<String, String>,
    /// With `satisfy: any`: clients these ranges grant ([`SourceRanges::grants`]) go on
    /// without credentials; every other client must sign in, denied ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or_ranges: Option<SourceRanges>,
}

impl Config for BasicAuth {
    fn validate(&self) -> Result<(), String> {
        check_realm(&self.realm).map_err(|e| format!("realm: {e}"))?;
        if self.users.is_empty() {
            return Err("users: is empty, so nobody could sign in".to_owned());
        }
        for (user, hash) in &self.users {
            check_user(user).and_then(|()| check_hash(hash)).map_err(|e| format!("users: {e}"))?;
        }
        Ok(())
    }
}

impl BasicAuth {
    /// Whether a request with this `Authorization` header value may go on.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else { return false };
        let Some(hash) = self.users.get(&user) else { return false };
        let key: [u8; 32] =
            Sha256::new().chain_update(hash).chain_update([0]).chain_update(&password).finalize().into();
        if VERIFIED.with_borrow(|verified| verified.contains(&key)) {
            return true;
        }
        let admitted = verify(hash, password.as_bytes());
        if admitted {
            VERIFIED.with_borrow_mut(|verified| {
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(key);
            });
        }
        admitted
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm)
    }
}

/// Credentials verified by this instance: at most this many are remembered, then it starts over.
const MAX_VERIFIED: usize = 4096;

thread_local! {
    /// SHA-256 digests of a hash entry, a NUL and a password that matched it.
    static VERIFIED: RefCell<HashSet<[u8; 32]>> = RefCell::new(HashSet::new());
}

/// The user and password of an `Authorization: Basic` value. The scheme is case-insensitive;
/// the user ends at the first `:` (RFC 7617).
fn credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(token.trim_start()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `password` matches `hash`, in any form [`check_hash`] accepts.
fn verify(hash: &str, password: &[u8]) -> bool {
    let same = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
    if let Some(digest) = hash.strip_prefix("{SHA}") {
        let Ok(digest) = STANDARD.decode(digest) else { return false };
        same(&Sha1::digest(password), &digest)
    } else if let Some(encoded) = hash.strip_prefix("{SSHA}") {
        // The SHA-1 digest of password and salt, then the salt.
        let Ok(decoded) = STANDARD.decode(encoded) else { return false };
        let Some((digest, salt)) = decoded.split_at_checked(20) else { return false };
        same(&Sha1::new().chain_update(password).chain_update(salt).finalize(), digest)
    } else if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        same(plain.as_bytes(), password)
    } else {
        let Ok(parsed) = crypt3_rs::Hash::try_from(hash) else { return false };
        parsed.hash_with(password).is_ok_and(|computed| same(computed.as_bytes(), hash.as_bytes()))
    }
}

/// A password hash in a form nginx reads: `$apr1$` (htpasswd's default), `$1$` (md5-crypt),
/// `$2a$`/`$2b$`/`$2y$` (bcrypt), `$5$`/`$6$` (sha-crypt), 13-character DES crypt, `{SHA}`,
/// `{SSHA}` or `{PLAIN}`. The error never shows the hash.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let form = if let Some(digest) = hash.strip_prefix("{SHA}") {
        STANDARD.decode(digest).ok().filter(|d| d.len() == 20).map(drop)
    } else if let Some(encoded) = hash.strip_prefix("{SSHA}") {
        STANDARD.decode(encoded).ok().filter(|d| d.len() > 20).map(drop)
    } else if hash.starts_with("{PLAIN}") {
        Some(())
    } else {
        crypt3_rs::Hash::try_from(hash).ok().map(drop)
    };
    form.ok_or_else(|| {
        "a hash in none of the forms read: $apr1$, $1$, $2a$/$2b$/$2y$, $5$, $6$, DES crypt, {SHA}, {SSHA}, {PLAIN}"
            .to_owned()
    })
}

/// A user name: not empty, no `:` (it would end the name in a credential) or control character.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        Err(format!("{user:?} is not a user name (non-empty, no ':' or control characters)"))
    } else {
        Ok(())
    }
}

/// A realm: what a header value may hold, less `"` and `\`, which would end or escape the quoted
/// string of the challenge.
pub fn check_realm(realm: &str) -> Result<(), String> {
    crate::check::header_value(realm)?;
    if realm.contains(['"', '\\']) { Err(format!("{realm:?} holds '\"' or '\\'")) } else { Ok(()) }
}

/// The users of an htpasswd file, `USER:HASH` a line, as nginx reads one: blank lines and lines
/// starting with `#` are skipped, the hash ends at the line's end or a further `:`, and the
/// first line of a user counts. Errors name the line, never its hash.
pub fn parse_htpasswd(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", index + 1);
        let (user, rest) = line.split_once(':').ok_or_else(|| at("no ':' between user and hash".to_owned()))?;
        let hash = rest.split(':').next().unwrap_or_default();
        check_user(user).and_then(|()| check_hash(hash)).map_err(at)?;
        users.entry(user.to_owned()).or_insert_with(|| hash.to_owned());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One user per form, `user-FORM` with the password `secret-FORM`. Made with `openssl passwd`
    /// (`-apr1`, `-1`, `-5`, `-6`), Python's `crypt` (bcrypt, DES) and `hashlib` (`{SHA}`, `{SSHA}`).
    const HTPASSWD: &str = include_str!("../testdata/htpasswd");

    fn header(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    fn auth() -> BasicAuth {
        BasicAuth { realm: "Staff only".to_owned(), users: parse_htpasswd(HTPASSWD).unwrap(), or_ranges: None }
    }

    #[test]
    fn every_form_checks_its_password() {
        let auth = auth();
        auth.validate().unwrap();
        let forms = ["apr1", "md5", "bcrypt-2y", "bcrypt-2a", "bcrypt-2b", "sha256", "sha512", "des", "sha", "ssha"];
        assert_eq!(auth.users.len(), forms.len() + 1, "{:?}", auth.users.keys());
        for form in forms {
            let user = format!("user-{form}");
            assert!(auth.admits(Some(&header(&user, &format!("secret-{form}")))), "{form}");
            assert!(!auth.admits(Some(&header(&user, "secret-other"))), "{form}: a wrong password");
            assert!(!auth.admits(Some(&header(&user, ""))), "{form}: an empty password");
        }
        assert!(auth.admits(Some(&header("user-plain", "secret-plain"))));
    }

    #[test]
    fn a_remembered_password_holds_only_for_the_hash_it_matched() {
        let auth = auth();
        let apr1 = header("user-apr1", "secret-apr1");
        assert!(auth.admits(Some(&apr1)));
        assert!(auth.admits(Some(&apr1)), "remembered");
        assert!(!auth.admits(Some(&header("user-apr1", "secret-apr2"))));
        // The Secret changes the user's hash: the old password is checked afresh, and fails.
        let changed = BasicAuth {
            realm: String::new(),
            users: [("user-apr1".into(), auth.users["user-md5"].clone())].into(),
            or_ranges: None,
        };
        assert!(!changed.admits(Some(&apr1)));
        assert!(changed.admits(Some(&header("user-apr1", "secret-md5"))));
    }

    #[test]
    fn credentials_are_read_as_nginx_reads_them() {
        let auth = auth();
        let right = header("user-sha", "secret-sha");
        assert!(auth.admits(Some(&right.replace("Basic", "basic"))));
        assert!(!auth.admits(None));
        assert!(!auth.admits(Some("")));
        assert!(!auth.admits(Some(&right.replace("Basic", "Bearer"))));
        assert!(!auth.admits(Some("Basic not-base64!")));
        assert!(!auth.admits(Some(&header("nobody", "secret-sha"))));
        assert!(!auth.admits(Some(&format!("Basic {}", STANDARD.encode("user-sha")))), "no ':'");
        // The password may hold ':'; the user may not.
        let colon = BasicAuth { realm: String::new(), users: parse_htpasswd("a:{PLAIN}b:c").unwrap(), or_ranges: None };
        assert_eq!(colon.users["a"], "{PLAIN}b", "the hash ends at a further ':'");
        assert_eq!(colon.challenge(), "Basic realm=\"\"");
        assert_eq!(auth.challenge(), "Basic realm=\"Staff only\"");
    }

    #[test]
    fn htpasswd_files_parse_like_nginx_and_errors_hide_hashes() {
        let users = parse_htpasswd("# staff\n\nann:{PLAIN}one\r\nann:{PLAIN}two\nbob:{PLAIN}x:comment\n").unwrap();
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            [("ann".to_owned(), "{PLAIN}one".to_owned()), ("bob".to_owned(), "{PLAIN}x".to_owned())]
        );
        for (text, line) in [("ann:{PLAIN}a\nbob\n", 2), ("ann:$9$secrethash", 1), (":{PLAIN}a", 1), ("a:{SHA}abc", 1)]
        {
            let error = parse_htpasswd(text).unwrap_err();
            assert!(error.starts_with(&format!("line {line}: ")), "{error}");
            assert!(!error.contains("secrethash") && !error.contains("abc"), "{error}");
        }
        assert_eq!(parse_htpasswd("# nobody\n").unwrap().len(), 0);
    }

    #[test]
    fn configurations_are_checked() {
        let parsed: BasicAuth = crate::parse(r#"{"realm":"r","users":{"ann":"{PLAIN}x"}}"#).unwrap();
        assert_eq!(parsed.realm, "r");
        for bad in [
            r#"{"users":{}}"#,
            r#"{"realm":"a\"b","users":{"ann":"{PLAIN}x"}}"#,
            r#"{"users":{"ann":"plaintext"}}"#,
            r#"{"users":{"a:b":"{PLAIN}x"}}"#,
            r#"{"user":{"ann":"{PLAIN}x"}}"#,
        ] {
            assert!(crate::parse::<BasicAuth>(bad).is_err(), "{bad}");
        }
        assert!(check_realm("Authentication Required - foo").is_ok() && check_realm("a\\b").is_err());
    }
}
