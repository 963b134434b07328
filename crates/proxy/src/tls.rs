//! TLS termination: certificates chosen per handshake from the active snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::CipherSuite;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sluice_filter::Snapshot;
use tokio_rustls::TlsAcceptor;

/// Picks the certificate for a handshake from the snapshot in force at that moment, so a
/// rotated Secret applies to the next handshake without touching open connections. Names
/// without a certificate get the default one.
#[derive(Debug)]
struct SniResolver {
    snapshot: Arc<ArcSwap<Snapshot>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or_default();
        let certificate = self.snapshot.load().tls.get(name).and_then(|host| host.certificate.clone());
        if certificate.is_none() {
            tracing::debug!(server_name = name, "no certificate for this name; serving the default one");
        }
        Some(certificate.unwrap_or_else(|| self.default.clone()))
    }
}

/// A TLS acceptor (TLS 1.2 and 1.3; ALPN `h2` and `http/1.1`) whose certificates come from
/// `snapshot`, with a self-signed default certificate generated now for unknown names.
pub fn acceptor(snapshot: Arc<ArcSwap<Snapshot>>) -> Result<TlsAcceptor, rustls::Error> {
    let mut provider = sluice_route::crypto_provider();
    // AES-128-GCM first, in the server's order: its suites hash with SHA-256, which runs on
    // the CPU's SHA extensions, where the SHA-384 of the AES-256 suites (the order clients
    // such as OpenSSL send) runs in plain code; the key schedule of every handshake hashes.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let provider = Arc::new(provider);
    let generated = rcgen::generate_simple_self_signed(vec!["sluice.invalid".to_owned()])
        .map_err(|e| rustls::Error::General(format!("generating the default certificate: {e}")))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let default = Arc::new(CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider)?);
    tracing::info!("generated a self-signed default certificate for names without one");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { snapshot, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Returning clients resume instead of repeating the full handshake: stateless tickets
    // (keys rotate every 6 hours) for TLS 1.3 and most 1.2 clients, and a per-process session
    // cache for the rest. rustls issues no tickets unless asked; nginx does by default.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(64 * 1024);
    Ok(TlsAcceptor::from(Arc::new(config)))
}
