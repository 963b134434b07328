//! Allowing and denying clients by address, as ingress-nginx's `allowlist-source-range` and
//! `denylist-source-range` do (nginx's `deny` rules, then `allow` rules and `deny all`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Config;

/// The `source-ranges` plugin's configuration. A client in `deny` is refused; otherwise, when
/// `allow` is not empty, only clients in it are served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceRanges {
    #[serde(skip_serializing_if = "Vec::is_empty", with = "networks")]
    pub allow: Vec<IpNet>,
    #[serde(skip_serializing_if = "Vec::is_empty", with = "networks")]
    pub deny: Vec<IpNet>,
}

/// Networks as their text (`10.0.0.0/8`). Not ipnet's `serde` feature: turning it on would
/// rebuild the wasmtime crates that share ipnet.
pub(crate) mod networks {
    use super::*;

    pub fn serialize<S: Serializer>(nets: &[IpNet], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts.iter().map(|text| text.parse().map_err(serde::de::Error::custom)).collect()
    }
}

impl Config for SourceRanges {
    fn validate(&self) -> Result<(), String> {
        // Parsing checked each network; without any, the filter would guard nothing.
        if self.allow.is_empty() && self.deny.is_empty() {
            Err("allow and deny are both empty".to_owned())
        } else {
            Ok(())
        }
    }
}

impl SourceRanges {
    /// Whether a request from `client` may go on.
    pub fn admits(&self, client: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as `::ffff:a.b.c.d`.
        let client = client.to_canonical();
        !self.deny.iter().any(|net| net.contains(&client))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client)))
    }

    /// Whether the ranges alone let `client` in where either they or a sign-in suffices
    /// (`satisfy: any`): as nginx's rules (deny rules, then allow rules) decide, an allow rule
    /// matches it and no deny rule does. A deny list alone never does.
    pub fn grants(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        !self.deny.iter().any(|net| net.contains(&client)) && self.allow.iter().any(|net| net.contains(&client))
    }
}

/// The IP of a client address as the gateway gives it to filters (`ip:port`; behind
/// `--trusted-proxies`, the address they forwarded for); `None` for anything else.
pub fn client_ip(address: &str) -> Option<IpAddr> {
    address.parse::<SocketAddr>().ok().map(|address| address.ip())
}

/// Parses a comma-separated list of networks (`10.0.0.0/24`) and addresses (`172.10.0.1`, a
/// network of one), as ingress-nginx reads its source-range annotations. Host bits are
/// dropped: `10.0.0.1/8` is `10.0.0.0/8`.
pub fn parse_list(value: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim) {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!("{item:?} is not an address or a network such as 10.0.0.0/8 (a comma-separated list)")
            })?,
        };
        nets.push(net);
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn deny_wins_then_allow_decides() {
        let ranges = SourceRanges {
            allow: parse_list("10.0.0.0/8, 2001:db8::/32").unwrap(),
            deny: parse_list("10.9.0.0/16").unwrap(),
        };
        assert!(ranges.admits(ip("10.1.2.3")) && ranges.admits(ip("2001:db8::1")));
        assert!(!ranges.admits(ip("10.9.0.1")), "denied although allowed");
        assert!(!ranges.admits(ip("192.0.2.1")) && !ranges.admits(ip("2001:db9::1")));
        assert!(ranges.admits(ip("::ffff:10.1.2.3")), "an IPv4-mapped address is its IPv4 address");
        let deny_only = SourceRanges { allow: vec![], deny: parse_list("192.0.2.7").unwrap() };
        assert!(!deny_only.admits(ip("192.0.2.7")) && deny_only.admits(ip("192.0.2.8")));
        assert!(SourceRanges::default().admits(ip("192.0.2.1")));
        assert!(ranges.grants(ip("10.1.2.3")) && ranges.grants(ip("::ffff:10.1.2.3")));
        assert!(!ranges.grants(ip("10.9.0.1")) && !ranges.grants(ip("192.0.2.1")));
        assert!(!deny_only.grants(ip("192.0.2.8")), "not denied is not granted");
        assert!(SourceRanges::default().validate().is_err() && deny_only.validate().is_ok());
    }

    #[test]
    fn lists_parse_like_ingress_nginx() {
        let nets = parse_list("10.0.0.1/8, 172.10.0.1,::1").unwrap();
        assert_eq!(
            nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "172.10.0.1/32", "::1/128"]
        );
        for bad in ["", "10.0.0.0/8,", "10.0.0.0/33", "10.0.0", "example.com", "10.0.0.0/8 10.1.0.0/16"] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
        let parsed: SourceRanges = crate::parse(r#"{"allow":["10.0.0.0/8"],"deny":["10.9.0.0/16"]}"#).unwrap();
        assert_eq!(parsed.allow, parse_list("10.0.0.0/8").unwrap());
        assert!(crate::parse::<SourceRanges>(r#"{"allow":["10.0.0.0/40"]}"#).is_err());
        assert!(crate::parse::<SourceRanges>(r#"{"allowed":[]}"#).is_err());
    }

    #[test]
    fn client_addresses() {
        assert_eq!(client_ip("192.0.2.1:5000"), Some(ip("192.0.2.1")));
        assert_eq!(client_ip("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(client_ip("[::ffff:10.0.0.1]:80"), Some(ip("::ffff:10.0.0.1")));
        for bad in ["192.0.2.1", "2001:db8::1", "", "example.com:80"] {
            assert_eq!(client_ip(bad), None, "{bad:?}");
        }
    }
}
