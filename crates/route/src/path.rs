use std::borrow::Cow;
use std::fmt;

/// Why a request path cannot be routed (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "path must begin with '/'",
            PathError::BadEscape => "path has an invalid percent-escape",
            PathError::AboveRoot => "path climbs above the root with '..'",
        })
    }
}

/// The form of a request path that routes are matched against, so that spellings a backend
/// treats as the same path match the same route (as nginx does before choosing a location):
/// percent-escapes of unreserved characters decoded (`/%61dmin` is `/admin`), repeated slashes
/// merged, and `.`/`..` segments resolved. Other escapes (`%2F`, `%20`) stay as they are.
/// The request itself is forwarded unchanged. Borrows when nothing needs changing.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let clean = !path.contains('%') && !path.contains("//") && !path.contains("/.");
    if clean {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "" if !last => continue,
            "." | "" => trailing_slash = last,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = last;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let start = i;
            while i < bytes.len() && bytes[i] != b'%' {
                i += 1;
            }
            out.push_str(&path[start..i]);
            continue;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        else {
            return Err(PathError::BadEscape);
        };
        let c = (hi * 16 + lo) as u8 as char;
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
            out.push(c);
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("/foo/bar", "/foo/bar"),
            ("/foo//bar", "/foo/bar"),
            ("/foo/./bar/", "/foo/bar/"),
            ("/foo/../bar", "/bar"),
            ("/foo/..", "/"),
            ("/foo/.", "/foo/"),
            ("/%61dmin", "/admin"),
            ("/a%2Fb%20c", "/a%2Fb%20c"),
            ("/x/%2e%2e/%2E/y", "/y"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(normalize_path("/plain/path"), Ok(Cow::Borrowed(_))));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a/../../b"), Err(PathError::AboveRoot));
    }
}
