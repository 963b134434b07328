//! Checks on single values, shared by the gateway (naming the annotation) and the plugins.

/// A header name: an HTTP token (RFC 9110 section 5.6.2).
pub fn header_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.bytes().all(is_token) { Ok(()) } else { Err(format!("{name:?} is not a header name")) }
}

/// A header value: visible characters, spaces and tabs, no line breaks.
pub fn header_value(value: &str) -> Result<(), String> {
    if value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
        Ok(())
    } else {
        Err(format!("{value:?} holds a control character"))
    }
}

/// An absolute path such as `/app`: starts with `/`, no whitespace or control characters.
pub fn absolute_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path (it must begin with '/')"));
    }
    visible(path)
}

/// A cookie `Path`: an absolute path without `;`, which would end the attribute.
pub fn cookie_path(path: &str) -> Result<(), String> {
    absolute_path(path)?;
    if path.contains(';') { Err(format!("{path:?} holds a ';'")) } else { Ok(()) }
}

/// A redirect target: an `http(s)://` URL with a host, or an absolute path.
pub fn redirect_location(location: &str) -> Result<(), String> {
    visible(location)?;
    let rest = location.strip_prefix("https://").or_else(|| location.strip_prefix("http://"));
    match rest {
        Some(rest) if rest.split(['/', '?', '#']).next().is_some_and(|host| !host.is_empty()) => Ok(()),
        Some(_) => Err(format!("{location:?} has no host")),
        None if location.starts_with('/') && !location.starts_with("//") => Ok(()),
        None => Err(format!("{location:?} is neither an http(s) URL nor an absolute path")),
    }
}

/// A redirect status: 300 to 308.
pub fn redirect_status(status: u16) -> Result<(), String> {
    if (300..=308).contains(&status) { Ok(()) } else { Err(format!("{status} is not a redirect status (300-308)")) }
}

/// A cookie name: an HTTP token.
pub fn cookie_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.bytes().all(is_token) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"))
    }
}

/// A cookie `Domain`: a host name, optionally with a leading dot.
pub fn cookie_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_prefix('.').unwrap_or(domain);
    let label = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if name.split('.').all(label) { Ok(()) } else { Err(format!("{domain:?} is not a domain name")) }
}

fn visible(text: &str) -> Result<(), String> {
    if text.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(format!("{text:?} holds whitespace or a control character"))
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert!(header_name("x-env").is_ok());
        assert!(header_name("x env").is_err() && header_name("").is_err() && header_name("a:b").is_err());
        assert!(header_value("max-age=1; includeSubDomains").is_ok());
        assert!(header_value("a\r\nb").is_err());
        assert!(absolute_path("/app").is_ok());
        assert!(absolute_path("app").is_err() && absolute_path("/a b").is_err());
        assert!(cookie_path("/app").is_ok() && cookie_path("/a;b").is_err() && cookie_path("app").is_err());
        for ok in ["https://example.com", "http://example.com/x?y#z", "/elsewhere"] {
            assert!(redirect_location(ok).is_ok(), "{ok}");
        }
        for bad in ["example.com", "https://", "//example.com", "ftp://x", "/a b"] {
            assert!(redirect_location(bad).is_err(), "{bad}");
        }
        assert!(redirect_status(308).is_ok() && redirect_status(200).is_err() && redirect_status(309).is_err());
        assert!(cookie_name("INGRESSCOOKIE").is_ok() && cookie_name("a;b").is_err() && cookie_name("a=b").is_err());
        assert!(cookie_domain(".example.com").is_ok() && cookie_domain("a..b").is_err());
    }
}
