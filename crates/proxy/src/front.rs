//! The front door's HTTP/1.1 policy: which request heads and chunked framing the gateway
//! accepts from clients, decided on the raw bytes before hyper parses them (see [`crate::wire`]).
//!
//! hyper accepts some messages that backends may read another way (request smuggling): both
//! `Content-Length` and `Transfer-Encoding`, of which it silently keeps one; lists and leading
//! zeros in `Content-Length`; codings before `chunked`; chunk sizes followed by spaces. Those,
//! heads that hyper would wait on instead of rejecting, and heads over the size limits are
//! refused here with an answer and a closed connection; nothing of them reaches a backend.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};

/// Size and time limits for clients.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Longest request line, in bytes (414 beyond; nginx's `large_client_header_buffers`).
    pub request_line: usize,
    /// Longest request head, request line included, in bytes (431 beyond).
    pub header_section: usize,
    /// Most header fields in a request head (431 beyond).
    pub max_headers: usize,
    /// How long a client may take to send a request head, and how long a keep-alive
    /// connection may sit idle before its next one.
    pub header_timeout: Duration,
    /// Most connections one data-plane worker serves at once; more are closed when accepted.
    pub max_connections: usize,
    /// Most concurrent streams on one HTTP/2 connection.
    pub h2_max_streams: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            request_line: 8 * 1024,
            header_section: 32 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(60),
            max_connections: 16384,
            h2_max_streams: 128,
        }
    }
}

/// Why a request is refused before it is routed: the status, and a reason for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Reject {
    const fn bad(reason: &'static str) -> Self {
        Self { status: StatusCode::BAD_REQUEST, reason }
    }
}

/// How the body after an accepted head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (possibly none).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// An Upgrade or CONNECT: after the body, the connection may stop carrying HTTP/1.1.
    Tunnel(u64),
}

/// What [`head`] makes of the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A head may still follow: more bytes are needed.
    Partial,
    /// An accepted head of `len` bytes, and how its body is framed.
    Complete { len: usize, framing: Framing },
}

/// Judges the request head at the start of `bytes` (a partial one too: whatever is already
/// wrong is refused at once rather than waited on).
pub fn head(bytes: &[u8], limits: &ClientLimits) -> Result<Head, Reject> {
    const EMPTY: httparse::Header<'static> = httparse::EMPTY_HEADER;
    let line_end = bytes.iter().position(|&b| b == b'\n');
    if line_end.unwrap_or(bytes.len()) > limits.request_line {
        return Err(Reject { status: StatusCode::URI_TOO_LONG, reason: "request line too long" });
    }
    let mut fields = vec![EMPTY; limits.max_headers];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > limits.header_section => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "too many header fields",
            });
        }
        // httparse stops at the first bad byte, so a bare CR it reports is in the head.
        Err(e) => {
            return Err(Reject::bad(match bare_cr(bytes) {
                Some(cr) if line_end.is_none_or(|end| cr < end) => "CR without LF in the request line",
                Some(_) => "CR without LF in a header line",
                None => parse_error(e),
            }));
        }
    };
    if len > limits.header_section {
        return Err(too_large());
    }
    let framing = complete(&request)?;
    Ok(Head::Complete { len, framing })
}

fn too_large() -> Reject {
    Reject { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason: "request header section too large" }
}

fn parse_error(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header field name",
        httparse::Error::HeaderValue => "invalid header field value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::Token => "invalid method or request target",
        _ => "malformed request head",
    }
}

/// The position of a CR that is followed by something other than LF. A CR at the very end
/// may still get its LF.
fn bare_cr(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\r') {
        let at = from + at;
        match bytes.get(at + 1) {
            Some(b'\n') => from = at + 2,
            Some(_) => return Some(at),
            None => return None,
        }
    }
    None
}

/// The checks that need the whole head: target, Host, and the framing headers.
fn complete(request: &httparse::Request<'_, '_>) -> Result<Framing, Reject> {
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    let http11 = request.version == Some(1);
    let target_authority = target_authority(method, target)?;
    let (mut hosts, mut lengths, mut codings) = (0, Vec::new(), 0);
    let mut upgrade = false;
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if hosts > 1 {
                return Err(Reject::bad("more than one Host header"));
            }
            // Checked even when the target's authority overrides it: a backend may read it.
            if !valid_authority(field.value) {
                return Err(Reject::bad("Host is not a valid host[:port]"));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths.push(content_length(field.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            if codings > 1 {
                return Err(Reject::bad("more than one Transfer-Encoding header"));
            }
            if !field.value.eq_ignore_ascii_case(b"chunked") {
                return Err(Reject::bad("Transfer-Encoding other than chunked"));
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        }
    }
    if http11 && hosts == 0 {
        return Err(Reject::bad("HTTP/1.1 request without Host"));
    }
    if target_authority.is_some_and(|authority| !valid_authority(authority.as_bytes())) {
        return Err(Reject::bad("request target's authority is not a valid host[:port]"));
    }
    if codings > 0 && !http11 {
        return Err(Reject::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if codings > 0 && !lengths.is_empty() {
        return Err(Reject::bad("both Content-Length and Transfer-Encoding"));
    }
    if lengths.len() > 1 {
        return Err(Reject::bad("more than one Content-Length header"));
    }
    let length = lengths.first().copied().unwrap_or(0);
    Ok(match (codings > 0, upgrade || method == "CONNECT") {
        (true, _) => Framing::Chunked,
        (false, true) => Framing::Tunnel(length),
        (false, false) => Framing::Length(length),
    })
}

/// The authority of an absolute-form or authority-form target, after checking the target's
/// form and bytes: obs-text in a target is refused (httparse lets it through).
fn target_authority<'a>(method: &str, target: &'a str) -> Result<Option<&'a str>, Reject> {
    if !target.is_ascii() {
        return Err(Reject::bad("non-ASCII byte in the request target"));
    }
    if target.starts_with('/') {
        return Ok(None);
    }
    if target == "*" {
        return if method == "OPTIONS" { Ok(None) } else { Err(Reject::bad("asterisk target other than OPTIONS")) };
    }
    if method == "CONNECT" {
        return Ok(Some(target));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(Reject::bad("request target is not origin- or absolute-form"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Ok(Some(&rest[..end]))
}

/// `host[:port]` as RFC 9110 allows in Host: a registered name, an IPv4 address or an IPv6
/// literal, and an optional decimal port; no user info, path, list, space or empty value.
fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if !value.starts_with(b"[") || value[..colon].ends_with(b"]") => {
            (&value[..colon], Some(&value[colon + 1..]))
        }
        _ => (value, None),
    };
    let port_ok = port.is_none_or(|port| port.len() <= 5 && port.iter().all(u8::is_ascii_digit));
    let host_ok = match host {
        [b'[', literal @ .., b']'] => {
            !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => {
            !host.is_empty()
                && host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
                && !host.contains(&b',')
        }
    };
    port_ok && host_ok
}

/// A Content-Length value: digits only (no sign, space, list or hex), within `u64`.
fn content_length(value: &[u8]) -> Result<u64, Reject> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Reject::bad("Content-Length is not a decimal number"));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or(Reject::bad("Content-Length too large"))
}

/// Rewrites a Content-Length with leading zeros (`0200`) as plain decimal, so that no backend
/// reads it as octal. [`head`] has let only plain digits through.
pub fn normalize(headers: &mut HeaderMap) {
    let canonical = headers
        .get(header::CONTENT_LENGTH)
        .filter(|value| value.len() > 1 && value.as_bytes()[0] == b'0')
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = canonical {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
}

/// A chunk-size line of a chunked body, without its CRLF: `1*HEXDIG *( BWS ";" BWS name
/// [ BWS "=" BWS value ] )` (RFC 9112 section 7.1.1). Returns the chunk's size.
pub fn chunk_size(line: &[u8]) -> Result<u64, Reject> {
    const BAD: Reject = Reject::bad("invalid chunk size line");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // Sixteen hex digits hold any u64.
    if digits == 0 || digits > 16 {
        return Err(BAD);
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|_| BAD)?, 16).map_err(|_| BAD)?;
    let mut rest = &line[digits..];
    while !rest.is_empty() {
        rest = skip_ws(rest).strip_prefix(b";").ok_or(BAD)?;
        rest = skip_ws(rest);
        let name = token_len(rest);
        if name == 0 {
            return Err(BAD);
        }
        rest = &rest[name..];
        let after = skip_ws(rest);
        if let Some(value) = after.strip_prefix(b"=") {
            rest = extension_value(skip_ws(value)).ok_or(BAD)?;
        }
    }
    Ok(size)
}

/// A trailer field line of a chunked body: fields that frame or route a message may not come
/// after it.
pub fn trailer_field(line: &[u8]) -> Result<(), Reject> {
    const BAD: Reject = Reject::bad("invalid trailer field");
    let name = token_len(line);
    if name == 0 || line.get(name) != Some(&b':') {
        return Err(BAD);
    }
    let forbidden = ["transfer-encoding", "content-length", "host"];
    if forbidden.iter().any(|f| line[..name].eq_ignore_ascii_case(f.as_bytes())) {
        return Err(Reject::bad("framing or Host field in a trailer"));
    }
    if line[name + 1..].iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(BAD);
    }
    Ok(())
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &bytes[n..]
}

/// The length of the RFC 9110 token at the start of `bytes`.
fn token_len(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)).count()
}

/// What follows a chunk extension's token or quoted-string value.
fn extension_value(bytes: &[u8]) -> Option<&[u8]> {
    if let Some(quoted) = bytes.strip_prefix(b"\"") {
        let mut i = 0;
        while i < quoted.len() {
            match quoted[i] {
                b'"' => return Some(&quoted[i + 1..]),
                b'\\' if quoted.get(i + 1).is_some_and(|&b| b == b'\t' || b >= 0x20) => i += 2,
                b'\t' | 0x20..=0x7e | 0x80..=0xff if quoted[i] != b'\\' => i += 1,
                _ => return None,
            }
        }
        return None;
    }
    let n = token_len(bytes);
    (n > 0).then(|| &bytes[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(bytes: &str) -> Result<Head, Reject> {
        head(bytes.as_bytes(), &ClientLimits::default())
    }

    fn reason(bytes: &str) -> &'static str {
        judge(bytes).expect_err("refused").reason
    }

    #[test]
    fn plain_requests_pass_with_their_framing() {
        let get = "GET /a?b HTTP/1.1\r\nHost: example.com\r\n\r\n";
        assert_eq!(judge(get), Ok(Head::Complete { len: get.len(), framing: Framing::Length(0) }));
        let post = "POST / HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 0200\r\n\r\nbody";
        assert_eq!(judge(post), Ok(Head::Complete { len: post.len() - 4, framing: Framing::Length(200) }));
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(judge(chunked), Ok(Head::Complete { len: chunked.len(), framing: Framing::Chunked }));
        let ws = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(judge(ws), Ok(Head::Complete { len: ws.len(), framing: Framing::Tunnel(0) }));
        let old = "GET / HTTP/1.0\r\n\r\n";
        assert_eq!(judge(old), Ok(Head::Complete { len: old.len(), framing: Framing::Length(0) }));
        let absolute = "GET http://a.example:80/x HTTP/1.1\r\nHost: b\r\n\r\n";
        assert!(matches!(judge(absolute), Ok(Head::Complete { .. })));
        assert!(matches!(judge("OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), Ok(Head::Complete { .. })));
    }

    #[test]
    fn partial_heads_wait_unless_already_wrong() {
        assert_eq!(judge("GET /0123456789 HTTP/1.1\r"), Ok(Head::Partial));
        assert_eq!(judge("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(Head::Partial));
        assert_eq!(reason("GET /0123456789 HTTP/1.1\rHost"), "CR without LF in the request line");
        assert_eq!(reason("GET / HTTP/1.1\r\nHost: a\r\r"), "CR without LF in a header line");
    }

    #[test]
    fn smuggling_framings_are_refused() {
        let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(reason(both), "both Content-Length and Transfer-Encoding");
        let both = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(reason(both), "both Content-Length and Transfer-Encoding");
        for te in ["gzip, chunked", "chunked, identity", "xchunked", "chunked ,", "\"chunked\""] {
            let request = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(reason(&request), "Transfer-Encoding other than chunked", "{te}");
        }
        for cl in ["+5", "-5", "5 5", "0x5", "5,5", "99999999999999999999", ""] {
            let request = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
            assert!(judge(&request).is_err(), "{cl}");
        }
    }

    #[test]
    fn hosts_must_be_one_valid_authority() {
        for host in ["a@b", "a/b", "", "a,b", "a b", "a:b", "a:123456", "[::1", "a:80:80"] {
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(judge(&request).is_err(), "{host:?}");
        }
        assert_eq!(reason("GET http://a/ HTTP/1.1\r\n\r\n"), "HTTP/1.1 request without Host");
        assert_eq!(
            reason("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            "request target's authority is not a valid host[:port]"
        );
    }

    #[test]
    fn limits_answer_414_and_431() {
        let limits = ClientLimits { request_line: 16, header_section: 64, max_headers: 2, ..ClientLimits::default() };
        let status = |bytes: &str| head(bytes.as_bytes(), &limits).expect_err("refused").status.as_u16();
        assert_eq!(status("GET /0123456789abcdef"), 414);
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "y".repeat(64))), 431);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), 431);
    }

    #[test]
    fn chunk_size_lines_follow_the_grammar() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"5;name=value ; q=\"a b\""), Ok(5));
        for bad in ["", "5 ", "5;", "5; =x", "-5", "0x5", "5;a=", "5;a=\"x", "12345678901234567"] {
            assert!(chunk_size(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(trailer_field(b"Transfer-Encoding: chunked").is_err());
        assert!(trailer_field(b"Checksum: abc").is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Random bytes: no panic, and a complete head lies within the bytes.
        #[test]
        fn random_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(Head::Complete { len, .. }) = head(&bytes, &ClientLimits::default()) {
                proptest::prop_assert!(len <= bytes.len());
            }
            let _ = chunk_size(&bytes);
            let _ = trailer_field(&bytes);
        }

        /// A valid chunked request with random bytes put in somewhere: no panic; what is still
        /// accepted is a complete head whose framing is one of the declared ones.
        #[test]
        fn damaged_requests(
            at in 0usize..96,
            inserted in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..8),
        ) {
            let mut bytes = b"POST /a?b HTTP/1.1\r\nHost: a.test:80\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n5\r\nhello\r\n".to_vec();
            let at = at.min(bytes.len());
            bytes.splice(at..at, inserted);
            match head(&bytes, &ClientLimits::default()) {
                Ok(Head::Complete { len, framing }) => {
                    proptest::prop_assert!(len <= bytes.len());
                    proptest::prop_assert!(matches!(framing, Framing::Chunked | Framing::Length(_) | Framing::Tunnel(_)));
                    let text = String::from_utf8_lossy(&bytes[..len]).to_ascii_lowercase();
                    proptest::prop_assert!(!(text.contains("content-length") && text.contains("transfer-encoding")));
                }
                Ok(Head::Partial) | Err(_) => {}
            }
        }
    }

    #[test]
    fn normalize_rewrites_leading_zeros() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0200"));
        normalize(&mut headers);
        assert_eq!(headers[header::CONTENT_LENGTH], "200");
    }
}
