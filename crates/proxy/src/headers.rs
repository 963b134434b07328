//! The header rules of forwarding, as pure functions over header maps: which host a request is
//! for, what never crosses a hop, what the upstream learns about the client, and where plain
//! HTTP is redirected.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Uri, Version};
use ipnet::IpNet;

use crate::server::Conn;

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1); never
/// forwarded, in either direction.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why a request's host cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    NotText,
    Several,
    Missing,
}

impl HostError {
    pub fn reason(self) -> &'static str {
        match self {
            HostError::NotText => "Host header is not valid",
            HostError::Several => "more than one Host header",
            HostError::Missing => "HTTP/1.1 request without Host",
        }
    }
}

/// The host a request is for, shared with the request head it came from (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// From the URI (HTTP/2, absolute-form), which overrides any Host header (RFC 9112 3.2.2).
    Authority(Authority),
    /// From the one Host header.
    Header(HeaderValue),
    /// An HTTP/1.0 request without one.
    None,
}

impl Host {
    pub fn as_str(&self) -> &str {
        match self {
            Host::Authority(authority) => authority.as_str(),
            // Checked to be text when the request arrived.
            Host::Header(value) => value.to_str().unwrap_or_default(),
            Host::None => "",
        }
    }

    /// The host name alone, as nginx's `$host`: lowercase, without port or trailing dot.
    pub fn name(&self) -> String {
        let host = self.as_str();
        Authority::try_from(host)
            .map_or_else(|_| host.to_ascii_lowercase(), |a| a.host().trim_end_matches('.').to_ascii_lowercase())
    }

    /// The Host header the upstream gets (empty for none, as RFC 9112 3.2 asks).
    pub fn to_header(&self) -> HeaderValue {
        match self {
            Host::Authority(authority) => {
                HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value")
            }
            Host::Header(value) => value.clone(),
            Host::None => HeaderValue::from_static(""),
        }
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host(uri: &Uri, headers: &HeaderMap, version: Version) -> Result<Host, HostError> {
    if let Some(authority) = uri.authority() {
        return Ok(Host::Authority(authority.clone()));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) if host.to_str().is_ok() => Ok(Host::Header(host.clone())),
        (Some(_), None) => Err(HostError::NotText),
        (Some(_), Some(_)) => Err(HostError::Several),
        (None, _) if version == Version::HTTP_11 => Err(HostError::Missing),
        (None, _) => Ok(Host::None),
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade`).
pub fn upgrade_protocol(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks { headers.get(header::UPGRADE).cloned() } else { None }
}

/// Puts back the two hop-by-hop headers an upgrade needs on its next hop, after
/// [`strip_hop_by_hop`] removed them.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// X-Forwarded-* and X-Real-IP (X-Request-ID is settled when the request arrives).
///
/// From an untrusted peer, every forwarding header is replaced: the client could have written
/// anything. From a trusted proxy (`trusted`), its X-Forwarded-For is extended with the peer,
/// the client is the rightmost address that is not a trusted proxy (nginx's
/// `real_ip_recursive`), and its X-Forwarded-Proto, -Host and -Port stand.
pub fn set_forwarding_headers(headers: &mut HeaderMap, conn: &Conn, trusted: &[IpNet]) {
    let from_proxy = is_trusted(conn.remote.ip(), trusted);
    let (chain, real_ip) = match forwarded_for(headers, from_proxy) {
        Some(chain) => {
            let real_ip = forwarded_client(chain, trusted).and_then(|ip| HeaderValue::try_from(ip.to_string()).ok());
            let chain = HeaderValue::try_from(format!("{chain}, {}", conn.remote.ip())).ok();
            (chain, real_ip)
        }
        None => (None, None),
    };
    headers.insert(X_FORWARDED_FOR, chain.unwrap_or_else(|| conn.client_ip.clone()));
    headers.insert(X_REAL_IP, real_ip.unwrap_or_else(|| conn.client_ip.clone()));
    let keep = |headers: &HeaderMap, name: &HeaderName| from_proxy && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !keep(headers, &X_FORWARDED_PROTO) {
        let proto = if conn.tls.is_some() { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT, conn.local_port.clone());
    }
}

/// The client a request comes from, as `X-Real-IP` names it: the peer, unless the peer is a
/// trusted proxy whose `X-Forwarded-For` names a client (port 0: a forwarded address has none).
/// Filters see this address.
pub fn client_address(headers: &HeaderMap, remote: SocketAddr, trusted: &[IpNet]) -> SocketAddr {
    forwarded_for(headers, is_trusted(remote.ip(), trusted))
        .and_then(|chain| forwarded_client(chain, trusted))
        .map_or(remote, |ip| SocketAddr::new(ip, 0))
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The `X-Forwarded-For` chain of a request from a trusted proxy, if it has one.
fn forwarded_for(headers: &HeaderMap, from_proxy: bool) -> Option<&str> {
    let chain = headers.get(X_FORWARDED_FOR).filter(|_| from_proxy)?.to_str().ok()?;
    (!chain.trim().is_empty()).then_some(chain)
}

/// The rightmost address of `chain` that is not a trusted proxy (nginx's `real_ip_recursive`).
fn forwarded_client(chain: &str, trusted: &[IpNet]) -> Option<IpAddr> {
    chain.rsplit(',').filter_map(|hop| hop.trim().parse::<IpAddr>().ok()).find(|ip| !is_trusted(*ip, trusted))
}

/// The client's `X-Request-ID` if it sent a usable one, else 128 random bits as 32 hex digits.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID).filter(|id| !id.is_empty() && id.len() <= 200) {
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// `https://HOST[:PORT]/PATH?QUERY` for a request that arrived over plain HTTP; the port is
/// left out when it is 443. Like ingress-nginx, one trailing slash of the request URI is dropped
/// (`/` becomes nothing) unless `preserve` (`preserve-trailing-slash`). `None` when the host is
/// not a valid authority.
pub fn https_location(host: &str, port: u16, uri: &Uri, preserve: bool) -> Option<HeaderValue> {
    let name = Authority::try_from(host).ok()?;
    let port = match port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let target = if preserve { target } else { target.strip_suffix('/').unwrap_or(target) };
    // Lowercase, as nginx's `$host` is.
    HeaderValue::try_from(format!("https://{}{port}{target}", name.host().to_ascii_lowercase())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::TlsConn;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap())
            })
            .collect()
    }

    fn conn(remote: &str, tls: bool) -> Conn {
        let tls = tls.then_some(TlsConn { server_name: None });
        Conn::new(remote.parse().unwrap(), "127.0.0.1:8443".parse().unwrap(), tls)
    }

    #[test]
    fn host_comes_from_the_authority_then_the_single_host_header() {
        let h = headers(&[("host", "from-header")]);
        let absolute: Uri = "http://from-uri:81/x".parse().unwrap();
        assert_eq!(request_host(&absolute, &h, Version::HTTP_11).unwrap().as_str(), "from-uri:81");
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin, &h, Version::HTTP_11).unwrap().as_str(), "from-header");
        let mut two = h.clone();
        two.append(header::HOST, HeaderValue::from_static("other"));
        assert_eq!(request_host(&origin, &two, Version::HTTP_11), Err(HostError::Several));
        assert_eq!(request_host(&origin, &HeaderMap::new(), Version::HTTP_11), Err(HostError::Missing));
        assert_eq!(request_host(&origin, &HeaderMap::new(), Version::HTTP_10), Ok(Host::None));
        let binary = [(header::HOST, HeaderValue::from_bytes(b"h\xffst").unwrap())].into_iter().collect();
        assert_eq!(request_host(&origin, &binary, Version::HTTP_11), Err(HostError::NotText));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret , Upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "basic x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, headers(&[("x-kept", "yes")]));
    }

    #[test]
    fn upgrades_need_http11_connection_upgrade_and_an_upgrade_header() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(upgrade_protocol(&ws, Version::HTTP_11), Some(HeaderValue::from_static("websocket")));
        assert_eq!(upgrade_protocol(&ws, Version::HTTP_10), None);
        assert_eq!(upgrade_protocol(&headers(&[("upgrade", "websocket")]), Version::HTTP_11), None);
        assert_eq!(upgrade_protocol(&headers(&[("connection", "upgrade")]), Version::HTTP_11), None);
        let mut stripped = ws.clone();
        strip_hop_by_hop(&mut stripped);
        keep_upgrade(&mut stripped, HeaderValue::from_static("websocket"));
        assert_eq!(stripped, headers(&[("connection", "upgrade"), ("upgrade", "websocket")]));
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_forwarding_headers() {
        let mut h = headers(&[
            ("host", "shop.test"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-port", "1"),
        ]);
        set_forwarding_headers(&mut h, &conn("10.0.0.9:5000", false), &["192.168.0.0/16".parse().unwrap()]);
        let expected = headers(&[
            ("host", "shop.test"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-real-ip", "10.0.0.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "shop.test"),
            ("x-forwarded-port", "8443"),
        ]);
        assert_eq!(h, expected);
    }

    #[test]
    fn a_trusted_proxy_extends_the_chain_and_its_forwarding_headers_stand() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = headers(&[
            ("host", "shop.test"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
        ]);
        set_forwarding_headers(&mut h, &conn("10.0.0.9:5000", true), &trusted);
        let expected = headers(&[
            ("host", "shop.test"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1, 10.0.0.9"),
            ("x-real-ip", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("x-forwarded-port", "8443"),
        ]);
        assert_eq!(h, expected);
        // Without a chain of its own, the trusted peer is the client.
        let mut bare = headers(&[("host", "shop.test")]);
        set_forwarding_headers(&mut bare, &conn("10.0.0.9:5000", true), &trusted);
        assert_eq!(bare.get(X_REAL_IP).unwrap(), "10.0.0.9");
        assert_eq!(bare.get(X_FORWARDED_PROTO).unwrap(), "https");
    }

    #[test]
    fn the_client_address_is_the_one_x_real_ip_names() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = "10.0.0.9:5000".parse().unwrap();
        let chain = headers(&[("x-forwarded-for", "203.0.113.7, 6.6.6.6, 10.1.1.1")]);
        assert_eq!(client_address(&chain, peer, &trusted), "6.6.6.6:0".parse().unwrap());
        let all_trusted = headers(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(client_address(&all_trusted, peer, &trusted), peer);
        assert_eq!(client_address(&HeaderMap::new(), peer, &trusted), peer);
        let untrusted = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_address(&chain, untrusted, &trusted), untrusted, "only a trusted proxy forwards");
        assert_eq!(client_address(&chain, peer, &[]), peer);
    }

    #[test]
    fn request_ids_are_kept_when_usable_and_made_otherwise() {
        let id = request_id(&headers(&[("x-request-id", "abc")]));
        assert_eq!(id, "abc");
        for sent in [headers(&[("x-request-id", "")]), headers(&[("x-request-id", &"x".repeat(201))]), HeaderMap::new()]
        {
            let made = request_id(&sent);
            assert_eq!(made.len(), 32);
            assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit), "{made:?}");
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn https_locations_lowercase_the_host_drop_port_443_and_one_trailing_slash() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        assert_eq!(https_location("Shop.Test:8080", 443, &uri, false).unwrap(), "https://shop.test/a/b?c=d");
        assert_eq!(https_location("shop.test", 8443, &uri, false).unwrap(), "https://shop.test:8443/a/b?c=d");
        assert_eq!(https_location("bad host", 443, &uri, false), None);
        let slash: Uri = "/a/".parse().unwrap();
        assert_eq!(https_location("shop.test", 443, &slash, false).unwrap(), "https://shop.test/a");
        assert_eq!(https_location("shop.test", 443, &slash, true).unwrap(), "https://shop.test/a/");
        let root: Uri = "/".parse().unwrap();
        assert_eq!(https_location("shop.test", 443, &root, false).unwrap(), "https://shop.test");
    }
}
