//! The `proxy-ssl-*` annotations: TLS towards an Ingress's HTTPS and gRPCS backends.

use std::sync::Arc;

use crate::annotations::{self, Reader};
use crate::error::not_found;
use crate::index::{Referenced, secret_entry};
use crate::manifest::{BACKEND_TLS_LABEL, TLS_SECRET_TYPE};
use crate::model::{BackendProtocol, BackendTlsMaterial, BackendTlsSpec, TlsProtocol, parse_host};

/// The TLS 1.2 cipher suites rustls offers: OpenSSL's name, then the IANA name rustls uses.
/// TLS 1.3 suites are not chosen by this list, as in OpenSSL.
pub const TLS12_CIPHERS: [(&str, &str); 6] = [
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// The annotations besides the Secret; without the Secret they do nothing, as in ingress-nginx.
const WITH_SECRET: [&str; 6] = [
    annotations::NGINX_PROXY_SSL_VERIFY,
    annotations::NGINX_PROXY_SSL_VERIFY_DEPTH,
    annotations::NGINX_PROXY_SSL_NAME,
    annotations::NGINX_PROXY_SSL_SERVER_NAME,
    annotations::NGINX_PROXY_SSL_PROTOCOLS,
    annotations::NGINX_PROXY_SSL_CIPHERS,
];

/// Reads the `proxy-ssl-*` annotations of an Ingress in `namespace`. An unusable Secret is
/// reported and kept as the reason the routes answer 503; another invalid value is reported and
/// its default used.
pub(crate) fn read(
    r: &mut Reader,
    referenced: &Referenced,
    namespace: &str,
    protocol: BackendProtocol,
) -> Option<Arc<BackendTlsSpec>> {
    let Some(secret) = r.get(annotations::NGINX_PROXY_SSL_SECRET).map(|s| s.trim().to_owned()) else {
        let present: Vec<&str> = WITH_SECRET.into_iter().filter(|name| r.get(name).is_some()).collect();
        for name in present {
            r.error(name, format!("has no effect without {}", annotations::NGINX_PROXY_SSL_SECRET));
        }
        return None;
    };
    if matches!(protocol, BackendProtocol::Http | BackendProtocol::Grpc) {
        let message = "has no effect: backend-protocol is not HTTPS or GRPCS, so backends are not spoken TLS to";
        r.error(annotations::NGINX_PROXY_SSL_SECRET, message);
    }
    let material = material(referenced, namespace, &secret);
    if let Err(message) = &material {
        let message = format!("{message}; every route of this Ingress answers 503 until it is fixed");
        r.error(annotations::NGINX_PROXY_SSL_SECRET, message);
    }
    let verify = r.parsed(annotations::NGINX_PROXY_SSL_VERIFY, annotations::parse_on_off).unwrap_or(false);
    let verify_depth = r
        .parsed(annotations::NGINX_PROXY_SSL_VERIFY_DEPTH, |v| match v.trim().parse::<u32>() {
            Ok(0) => Err("0 reads as 1 in ingress-nginx; write 1".to_owned()),
            Ok(depth) => Ok(depth),
            Err(_) => Err(format!("{v:?} is not a whole number")),
        })
        .unwrap_or(1);
    let name = r.parsed(annotations::NGINX_PROXY_SSL_NAME, |v| match parse_host(v.trim()) {
        Ok(crate::model::HostMatch::Exact(name)) => Ok(name),
        Ok(_) => Err(format!("{v:?} is a wildcard; name one server")),
        Err(message) => Err(message),
    });
    let sni = r.parsed(annotations::NGINX_PROXY_SSL_SERVER_NAME, annotations::parse_on_off).unwrap_or(false);
    let protocols = r.parsed(annotations::NGINX_PROXY_SSL_PROTOCOLS, protocols);
    let ciphers = r.parsed(annotations::NGINX_PROXY_SSL_CIPHERS, ciphers).unwrap_or_default();
    // ingress-nginx verifies nothing when the Secret has no ca.crt, whatever proxy-ssl-verify
    // says; failing closed is the safe reading.
    let material = match material {
        Ok(BackendTlsMaterial { ca_pem: None, .. }) if verify => {
            let message = format!("Secret {secret} has no ca.crt to verify backends by");
            let routes = "every route of this Ingress answers 503 until it is fixed";
            r.error(annotations::NGINX_PROXY_SSL_VERIFY, format!("{message}; {routes}"));
            Err(message)
        }
        material => material,
    };
    Some(Arc::new(BackendTlsSpec {
        secret,
        material,
        verify,
        verify_depth,
        name,
        sni,
        protocols: protocols.unwrap_or_else(|| vec![TlsProtocol::Tls12, TlsProtocol::Tls13]),
        ciphers,
    }))
}

/// The PEM entries of the Secret `value` names (`NAMESPACE/NAME`, in the Ingress's namespace).
fn material(referenced: &Referenced, namespace: &str, value: &str) -> Result<BackendTlsMaterial, String> {
    let Some((ns, name)) = value.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty()) else {
        return Err(format!("{value:?} is not NAMESPACE/NAME"));
    };
    if ns != namespace {
        return Err(format!("Secret {value} is in another namespace; only the Ingress's own ({namespace}) is read"));
    }
    let secret = referenced.secrets.get(ns, name).ok_or_else(|| {
        format!(
            "{} (unless of type {TLS_SECRET_TYPE}, it needs the label {BACKEND_TLS_LABEL})",
            not_found(format_args!("Secret {value}"))
        )
    })?;
    let (ca_pem, cert, key) =
        (secret_entry(secret, "ca.crt"), secret_entry(secret, "tls.crt"), secret_entry(secret, "tls.key"));
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(format!("Secret {value} has tls.crt but no tls.key")),
        (None, Some(_)) => return Err(format!("Secret {value} has tls.key but no tls.crt")),
    };
    if ca_pem.is_none() && client.is_none() {
        return Err(format!("Secret {value} has neither ca.crt nor tls.crt and tls.key"));
    }
    Ok(BackendTlsMaterial { ca_pem, client })
}

/// `proxy-ssl-protocols`: space-separated TLS versions.
fn protocols(value: &str) -> Result<Vec<TlsProtocol>, String> {
    let mut protocols = value.split_whitespace().map(str::parse).collect::<Result<Vec<TlsProtocol>, _>>()?;
    protocols.sort();
    protocols.dedup();
    if protocols.is_empty() {
        return Err("is empty; name TLSv1.2, TLSv1.3 or both".to_owned());
    }
    Ok(protocols)
}

/// `proxy-ssl-ciphers` in OpenSSL's notation, as the IANA names of the TLS 1.2 suites it selects
/// from those rustls offers; empty for all of them. `DEFAULT`, `ALL` and `HIGH` select all,
/// `!NAME` and `-NAME` drop one; names of suites rustls does not implement (and exclusions of
/// classes such as `!aNULL` or `!MD5`, which it never offers) select nothing.
fn ciphers(value: &str) -> Result<Vec<String>, String> {
    let mut selected: Vec<&str> = Vec::new();
    for token in value.split([':', ',', ' ']).map(str::trim).filter(|t| !t.is_empty()) {
        if !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_-!@=".contains(&b)) {
            return Err(format!("{token:?} is not an OpenSSL cipher name"));
        }
        let iana = |name: &str| TLS12_CIPHERS.iter().find(|(openssl, _)| *openssl == name).map(|(_, iana)| *iana);
        match token.strip_prefix(['!', '-']) {
            Some(excluded) => selected.retain(|s| Some(*s) != iana(excluded)),
            None if matches!(token, "DEFAULT" | "ALL" | "HIGH") => {
                selected = TLS12_CIPHERS.iter().map(|(_, iana)| *iana).collect();
            }
            None => {
                if let Some(suite) = iana(token.trim_start_matches('+'))
                    && !selected.contains(&suite)
                {
                    selected.push(suite);
                }
            }
        }
    }
    if selected.is_empty() {
        let offered: Vec<&str> = TLS12_CIPHERS.iter().map(|(openssl, _)| *openssl).collect();
        return Err(format!(
            "{value:?} selects no cipher suite Sluice offers; the TLS 1.2 suites are {}",
            offered.join(":")
        ));
    }
    if selected.len() == TLS12_CIPHERS.len() {
        return Ok(Vec::new());
    }
    Ok(selected.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_tls12_and_tls13() {
        assert_eq!(protocols("TLSv1.3 TLSv1.2"), Ok(vec![TlsProtocol::Tls12, TlsProtocol::Tls13]));
        assert_eq!(protocols(" TLSv1.3 "), Ok(vec![TlsProtocol::Tls13]));
        assert!(protocols("TLSv1.1 TLSv1.2").unwrap_err().contains("TLSv1.1 is not offered"));
        assert!(protocols("tls13").unwrap_err().contains("not one of TLSv1.2, TLSv1.3"));
        assert!(protocols("").is_err());
    }

    #[test]
    fn ciphers_in_openssl_notation() {
        assert_eq!(ciphers("DEFAULT"), Ok(vec![]));
        assert_eq!(ciphers("HIGH:!aNULL:!MD5"), Ok(vec![]), "nginx's usual list selects everything rustls offers");
        assert_eq!(
            ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256"),
            Ok(vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()]),
            "a suite rustls lacks selects nothing; a repeat counts once"
        );
        assert_eq!(ciphers("ALL:!ECDHE-RSA-AES128-GCM-SHA256").unwrap().len(), 5);
        assert!(ciphers("AES128-SHA:DES-CBC3-SHA").unwrap_err().contains("selects no cipher suite"));
        assert!(ciphers("RC4;rm").is_err());
    }
}
