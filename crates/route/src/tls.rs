//! Certificates by server name, loaded from the Secrets that Ingresses reference.

use std::sync::Arc;

use foldhash::HashMap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sluice_config::{ObjectRef, TlsCertificate};

use crate::host::HostMap;

/// A host served over TLS.
#[derive(Debug, Clone)]
pub struct TlsHost {
    /// `None`: the entry named no usable Secret, so the default certificate is served.
    pub certificate: Option<Arc<CertifiedKey>>,
    /// `namespace/name` of the Secret, for `/config`.
    pub secret: Option<String>,
    pub ingress: ObjectRef,
}

/// Hosts served over TLS, by server name.
pub type TlsTable = HostMap<TlsHost>;

/// Parsed certificates by Secret content, handed from one snapshot to the next so that a reload
/// parses only the Secrets that changed. Failures are kept too, with their message.
pub type CertificateCache = HashMap<Arc<TlsCertificate>, Result<Arc<CertifiedKey>, String>>;

/// The cryptography of every TLS configuration the gateway makes, server and client side:
/// aws-lc-rs, whose handshakes (signatures, key exchange) run faster than ring's.
pub fn crypto_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Parses a PEM chain and key, checking that the key belongs to the first certificate.
pub fn load_certificate(material: &TlsCertificate) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(&material.chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem).map_err(|e| format!("tls.key is not a PEM key: {e}"))?;
    CertifiedKey::from_der(chain, key, &crypto_provider())
        .map(Arc::new)
        .map_err(|e| format!("tls.key and tls.crt: {e}"))
}
