//! HTTP/1.1 towards upstreams as bytes: the request head written straight from the request's
//! parts, the response head parsed with `httparse`, and the response body's framing decided and
//! decoded by RFC 9112's rules. Anything a response could mean two ways is an error, never a
//! guess: it is not forwarded.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::Error;
use crate::front;

/// Response heads larger than this are refused (nginx's `proxy_buffer_size` is 4-8 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields allowed in a response head or its trailers.
const MAX_HEADERS: usize = 128;
/// A chunk-size line with its extensions.
const MAX_CHUNK_LINE: usize = 4096;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body at all.
    Empty,
    /// The request's own `Content-Length` stands.
    Length,
    /// Streamed in chunks: the length is not known in advance.
    Chunked,
}

/// The request framing for a body that is `empty` or not, given the head's headers.
pub fn request_framing(headers: &HeaderMap, empty: bool) -> RequestFraming {
    if headers.contains_key(header::CONTENT_LENGTH) {
        RequestFraming::Length
    } else if empty {
        RequestFraming::Empty
    } else {
        RequestFraming::Chunked
    }
}

/// Appends the request line and headers to `out`. The endpoint is the Host when the request
/// has none; a body-less POST, PUT or PATCH says `content-length: 0`, as HTTP/1.1 servers expect.
pub fn encode_head(parts: &http::request::Parts, framing: RequestFraming, endpoint: SocketAddr, out: &mut Vec<u8>) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "host: {endpoint}\r\n");
    }
    encode_fields(&parts.headers, out);
    match framing {
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Empty if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::Empty | RequestFraming::Length => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value` lines, one per field: a head's headers or a chunked body's trailers.
pub fn encode_fields(fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses a response head at the start of `buf`, taking it out of the buffer; `None` when the
/// head is not complete yet.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Error::Invalid("response head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many response header fields")),
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let version = if response.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let status = response.code.and_then(|code| StatusCode::from_u16(code).ok());
    let status = status.ok_or(Error::Invalid("invalid response status"))?;
    // Values share one copy of the head's bytes instead of being copied one by one (`response`
    // borrows the buffer while the fields are read, so the head cannot be split off it).
    let bytes = Bytes::copy_from_slice(&buf[..length]);
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Error::Invalid("invalid header name"))?;
        let start = field.value.as_ptr() as usize - buf.as_ptr() as usize;
        let value = HeaderValue::from_maybe_shared(bytes.slice(start..start + field.value.len()))
            .map_err(|_| Error::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    buf.advance(length);
    Ok(Some(Head { status, version, headers }))
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// It has none.
    Empty,
    /// After this many more bytes.
    Length(u64),
    /// After the last chunk and its trailers.
    Chunked(Chunk),
    /// When the upstream closes the connection.
    Close,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// The body framing of a response to `method` (RFC 9112 section 6.3). A response with both
/// `Transfer-Encoding` and `Content-Length`, or with lengths that disagree, is refused: one of
/// the two readings would let a response smuggle another.
pub fn response_framing(method: &Method, head: &Head) -> Result<Framing, Error> {
    if *method == Method::HEAD
        || head.status.is_informational()
        || matches!(head.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
    {
        return Ok(Framing::Empty);
    }
    let lengths = head.headers.get_all(header::CONTENT_LENGTH);
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        if lengths.iter().next().is_some() {
            return Err(Error::Invalid("response has both Transfer-Encoding and Content-Length"));
        }
        let chunked = last_coding_is_chunked(&head.headers)?;
        // Any other final coding (or an HTTP/1.0 response) is read until the connection closes.
        return Ok(if chunked && head.version == Version::HTTP_11 {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in lengths {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or(Error::Invalid("invalid Content-Length"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(Error::Invalid("response has differing Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

fn last_coding_is_chunked(headers: &HeaderMap) -> Result<bool, Error> {
    let values = headers.get_all(header::TRANSFER_ENCODING);
    let last = values.iter().flat_map(|v| v.as_bytes().split(|&b| b == b',')).map(<[u8]>::trim_ascii).next_back();
    match last {
        None | Some([]) => Err(Error::Invalid("empty Transfer-Encoding")),
        Some(coding) => Ok(coding.eq_ignore_ascii_case(b"chunked")),
    }
}

/// Whether the connection can carry another request after this response.
pub fn keeps_alive(head: &Head) -> bool {
    let close = head
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
    head.version == Version::HTTP_11 && !close
}

/// One step of decoding a chunked body from `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of the body.
    Data(Bytes),
    /// The body ended, with these trailers (possibly none).
    End(HeaderMap),
    /// More bytes are needed.
    More,
}

/// Decodes what `buf` holds of a chunked body, advancing `state`.
pub fn decode_chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, Error> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::More) };
                // The front door's reading of a chunk-size line: the same rules both ways.
                let size = front::chunk_size(&buf[..end]).map_err(|_| Error::Invalid("invalid chunk size"))?;
                buf.advance(end + 2);
                *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                *state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Decoded::End(HeaderMap::new()));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (length, trailers) = match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((length, fields))) => (length, trailer_map(fields)?),
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        return Err(Error::Invalid("trailers too large"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                    Err(_) => return Err(Error::Invalid("malformed trailers")),
                };
                buf.advance(length);
                return Ok(Decoded::End(trailers));
            }
        }
    }
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Error::Invalid("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| Error::Invalid("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The position of the first CRLF in `buf`, within `max` bytes; a bare LF is an error.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, Error> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(0) => Err(Error::Invalid("bare LF in chunked body")),
        Some(lf) if buf[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(Error::Invalid("bare LF in chunked body")),
        None if buf.len() >= max => Err(Error::Invalid("chunk-size line too long")),
        None => Ok(None),
    }
}

/// Appends the line that starts a chunk of `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse_head(&mut BytesMut::from(raw)).unwrap().unwrap()
    }

    fn framing(raw: &str) -> Result<Framing, Error> {
        response_framing(&Method::GET, &head(raw))
    }

    #[test]
    fn the_request_head_is_written_from_its_parts() {
        let (mut parts, ()) = http::Request::post("http://x/a?b=1").body(()).unwrap().into_parts();
        parts.headers.insert("x-one", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_head(&parts, RequestFraming::Empty, "10.0.0.1:80".parse().unwrap(), &mut out);
        assert_eq!(out, b"POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\nx-one: 1\r\ncontent-length: 0\r\n\r\n");
        parts.headers.insert(header::HOST, HeaderValue::from_static("shop"));
        out.clear();
        encode_head(&parts, RequestFraming::Chunked, "10.0.0.1:80".parse().unwrap(), &mut out);
        assert_eq!(out, b"POST /a?b=1 HTTP/1.1\r\nx-one: 1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn fields_are_written_one_line_each() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("abc"));
        trailers.append("x-sum", HeaderValue::from_static("def"));
        let mut out = Vec::new();
        encode_fields(&trailers, &mut out);
        assert_eq!(out, b"x-sum: abc\r\nx-sum: def\r\n");
    }

    #[test]
    fn heads_parse_only_when_complete() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
        assert!(parse_head(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"x-a: b\r\n\r\nhi");
        let parsed = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(parsed.status, StatusCode::OK);
        assert_eq!(parsed.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hi", "the body stays in the buffer");
        assert!(matches!(parse_head(&mut BytesMut::from("HTTP/1.1 2x0 OK\r\n\r\n")), Err(Error::Invalid(_))));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").unwrap(), Framing::Length(5));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n").unwrap(), Framing::Length(5));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n").unwrap(), Framing::Close);
        assert_eq!(framing("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n").unwrap(), Framing::Empty);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n").unwrap(), Framing::Close);
        let head_request = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(response_framing(&Method::HEAD, &head_request).unwrap(), Framing::Empty);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: \r\n\r\n",
        ] {
            assert!(framing(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn connections_close_after_http_1_0_or_when_asked() {
        assert!(keeps_alive(&head("HTTP/1.1 200 OK\r\n\r\n")));
        assert!(!keeps_alive(&head("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\n\r\n")));
        assert!(!keeps_alive(&head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n")));
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let mut state = Chunk::Size;
        let mut buf = BytesMut::from("5;ext=1\r\nhel");
        assert_eq!(decode_chunked(&mut state, &mut buf).unwrap(), Decoded::Data(Bytes::from("hel")));
        assert_eq!(decode_chunked(&mut state, &mut buf).unwrap(), Decoded::More);
        buf.extend_from_slice(b"lo\r\n0\r\nx-sum: 9\r\n");
        assert_eq!(decode_chunked(&mut state, &mut buf).unwrap(), Decoded::Data(Bytes::from("lo")));
        assert_eq!(decode_chunked(&mut state, &mut buf).unwrap(), Decoded::More);
        buf.extend_from_slice(b"\r\nNEXT");
        let Decoded::End(trailers) = decode_chunked(&mut state, &mut buf).unwrap() else { panic!("not the end") };
        assert_eq!(trailers["x-sum"], "9");
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunk_headers_are_hex() {
        for (len, line) in [(0, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n"), (0x1f2e, "1f2e\r\n")] {
            let mut out = Vec::new();
            chunk_header(len, &mut out);
            assert_eq!(out, line.as_bytes());
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for raw in ["zz\r\n", "5\nhello", "5\r\nhelloXY", "11111111111111111\r\n"] {
            let (mut state, mut buf) = (Chunk::Size, BytesMut::from(raw));
            let result = std::iter::repeat_with(|| decode_chunked(&mut state, &mut buf)).take(4).find(Result::is_err);
            assert!(result.is_some(), "{raw:?} accepted");
        }
    }
}
