//! Header maps as proxy-wasm filters see them: Envoy's pseudo-headers (`:method`, `:path`,
//! `:authority`, `:scheme`, `:status`) before the real ones, and the ABI's serialization.

use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::abi::{BAD_ARGUMENT, NOT_FOUND, Status};
use crate::host::{Head, RequestContext, parse_header, with_path_and_query};

/// `proxy_map_type_t` values with a map here.
const REQUEST_HEADERS: u32 = 0;
pub(crate) const RESPONSE_HEADERS: u32 = 2;
pub(crate) const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

/// The header map `map` of the head in hand.
pub(crate) struct Map<'a> {
    head: &'a mut Head,
    context: &'a RequestContext,
}

impl<'a> Map<'a> {
    /// The map of type `map` in a call on `head`; other maps (trailers, gRPC metadata, HTTP
    /// call responses) are not there.
    pub fn of(map: u32, head: &'a mut Head, context: &'a RequestContext) -> Result<Self, Status> {
        let present =
            matches!((map, &*head), (REQUEST_HEADERS, Head::Request(_)) | (RESPONSE_HEADERS, Head::Response(_)));
        if !present {
            return Err(NOT_FOUND);
        }
        Ok(Self { head, context })
    }

    fn headers(&mut self) -> &mut HeaderMap {
        match self.head {
            Head::Request(parts) => &mut parts.headers,
            Head::Response(parts) => &mut parts.headers,
        }
    }

    fn pseudo(&self, name: &str) -> Option<Vec<u8>> {
        let value = match (&*self.head, name) {
            (Head::Request(parts), ":method") => parts.method.as_str().into(),
            (Head::Request(parts), ":path") => parts.uri.path_and_query().map_or("/", |p| p.as_str()).into(),
            (Head::Request(parts), ":authority") => match parts.headers.get(HOST) {
                Some(host) => host.as_bytes().to_vec(),
                None => parts.uri.authority().map_or(&*self.context.host, |a| a.as_str()).into(),
            },
            (Head::Request(_), ":scheme") => self.context.scheme.into(),
            (Head::Response(parts), ":status") => parts.status.as_str().into(),
            _ => return None,
        };
        Some(value)
    }

    fn pseudo_names(&self) -> &'static [&'static str] {
        match self.head {
            Head::Request(_) => &[":authority", ":path", ":method", ":scheme"],
            Head::Response(_) => &[":status"],
        }
    }

    /// Every pair, pseudo-headers first, serialized.
    pub fn pairs(&mut self) -> Vec<u8> {
        let pseudo: Vec<(&str, Vec<u8>)> =
            self.pseudo_names().iter().filter_map(|&name| Some((name, self.pseudo(name)?))).collect();
        let mut pairs: Vec<(&[u8], &[u8])> = pseudo.iter().map(|(name, value)| (name.as_bytes(), &value[..])).collect();
        let headers = match &*self.head {
            Head::Request(parts) => &parts.headers,
            Head::Response(parts) => &parts.headers,
        };
        pairs.extend(headers.iter().map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())));
        serialize(&pairs)
    }

    /// The value of `name` (all of them joined by `,` when it is repeated, as Envoy does).
    pub fn get(&mut self, name: &str) -> Result<Vec<u8>, Status> {
        if name.starts_with(':') {
            return self.pseudo(name).ok_or(NOT_FOUND);
        }
        let mut values = self.headers().get_all(name).iter();
        let first = values.next().ok_or(NOT_FOUND)?;
        let mut value = first.as_bytes().to_vec();
        for more in values {
            value.push(b',');
            value.extend_from_slice(more.as_bytes());
        }
        Ok(value)
    }

    /// Replaces every value of `name` with `value`.
    pub fn replace(&mut self, name: &str, value: &str) -> Result<(), Status> {
        if name.starts_with(':') {
            return self.set_pseudo(name, value);
        }
        let (name, value) = parse(name, value)?;
        self.headers().insert(name, value);
        Ok(())
    }

    /// Adds a value of `name`.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), Status> {
        if name.starts_with(':') {
            return self.set_pseudo(name, value);
        }
        let (name, value) = parse(name, value)?;
        self.headers().append(name, value);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), Status> {
        if name.starts_with(':') {
            return Err(BAD_ARGUMENT);
        }
        let name = HeaderName::try_from(name).map_err(|_| BAD_ARGUMENT)?;
        self.headers().remove(name);
        Ok(())
    }

    /// Replaces the whole map with `pairs` (pseudo-headers set, real headers replaced).
    pub fn set_pairs(&mut self, pairs: &[(&str, &str)]) -> Result<(), Status> {
        let mut headers = HeaderMap::with_capacity(pairs.len());
        for &(name, value) in pairs.iter().filter(|(name, _)| !name.starts_with(':')) {
            let (name, value) = parse(name, value)?;
            headers.append(name, value);
        }
        for &(name, value) in pairs.iter().filter(|(name, _)| name.starts_with(':')) {
            self.set_pseudo(name, value)?;
        }
        *self.headers() = headers;
        Ok(())
    }

    fn set_pseudo(&mut self, name: &str, value: &str) -> Result<(), Status> {
        match (&mut *self.head, name) {
            (Head::Request(parts), ":method") => {
                parts.method = Method::from_bytes(value.as_bytes()).map_err(|_| BAD_ARGUMENT)?;
            }
            (Head::Request(parts), ":path") => {
                let (path, query) = value.split_once('?').map_or((value, None), |(p, q)| (p, Some(q)));
                if !path.starts_with('/') {
                    return Err(BAD_ARGUMENT);
                }
                parts.uri = with_path_and_query(&parts.uri, path, query).map_err(|_| BAD_ARGUMENT)?;
            }
            (Head::Request(parts), ":authority") => {
                parts.headers.insert(HOST, HeaderValue::try_from(value).map_err(|_| BAD_ARGUMENT)?);
            }
            (Head::Response(parts), ":status") => {
                parts.status =
                    value.parse::<u16>().ok().and_then(|s| StatusCode::from_u16(s).ok()).ok_or(BAD_ARGUMENT)?;
            }
            _ => return Err(BAD_ARGUMENT),
        }
        Ok(())
    }
}

fn parse(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), Status> {
    parse_header(name, value).map_err(|_| BAD_ARGUMENT)
}

/// The ABI's map serialization: the number of pairs, the sizes of each key and value, then
/// each key and value followed by a NUL byte; integers little-endian.
pub(crate) fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut bytes = Vec::with_capacity(4 + pairs.len() * 8 + data);
    bytes.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        bytes.extend_from_slice(key);
        bytes.push(0);
        bytes.extend_from_slice(value);
        bytes.push(0);
    }
    bytes
}

/// The pairs of a serialized map, as text; an empty map may be empty or a single 0 byte.
pub(crate) fn deserialize(bytes: &[u8]) -> Result<Vec<(&str, &str)>, Status> {
    if bytes.len() <= 1 {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, Status> {
        let word = bytes.get(at..at + 4).ok_or(BAD_ARGUMENT)?;
        Ok(u32::from_le_bytes(word.try_into().expect("four bytes")) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8).ok_or(BAD_ARGUMENT)?).ok_or(BAD_ARGUMENT)?;
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 10));
    for index in 0..count {
        let (key_size, value_size) = (word(4 + index * 8)?, word(8 + index * 8)?);
        let key = take(bytes, &mut data, key_size)?;
        let value = take(bytes, &mut data, value_size)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The `size` bytes at `*at` as text; moves `*at` past them and their NUL.
fn take<'b>(bytes: &'b [u8], at: &mut usize, size: usize) -> Result<&'b str, Status> {
    let end = at.checked_add(size).ok_or(BAD_ARGUMENT)?;
    let text = bytes.get(*at..end).ok_or(BAD_ARGUMENT)?;
    *at = end + 1;
    std::str::from_utf8(text).map_err(|_| BAD_ARGUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trips_and_matches_the_spec_example() {
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
        let bytes = serialize(&pairs);
        assert_eq!(bytes, b"\x02\0\0\0\x01\0\0\0\x01\0\0\0\x01\0\0\0\x02\0\0\0a\x001\0b\x0022\0");
        assert_eq!(deserialize(&bytes).unwrap(), [("a", "1"), ("b", "22")]);
        assert!(deserialize(b"\0").unwrap().is_empty());
        assert_eq!(deserialize(b"\x05\0\0\0").unwrap_err(), BAD_ARGUMENT);
        assert_eq!(deserialize(&bytes[..bytes.len() - 3]).unwrap_err(), BAD_ARGUMENT);
    }
}
