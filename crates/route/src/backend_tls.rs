//! TLS client configurations for backends (`proxy-ssl-*`), built when a snapshot is compiled so
//! that requests only pick one.

use std::sync::Arc;

use foldhash::HashMap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite};
use sluice_config::{BackendKey, BackendTlsSpec, Target, TlsProtocol};

use crate::danger::AcceptAnyServerCertificate;

/// How a route's HTTPS and gRPCS connections are made when its Ingress sets `proxy-ssl-secret`.
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// Verified (and sent by SNI when the config enables it).
    pub server_name: ServerName<'static>,
}

/// A route's backend TLS, or why its `proxy-ssl-secret` cannot be used (the route answers 503).
pub type RouteTls = Result<Arc<BackendTls>, Arc<str>>;

/// Built configurations by what they were built from, handed from one snapshot to the next so
/// that a reload keeps them (and the connections pooled for them) when nothing changed.
pub type BackendTlsCache = HashMap<(Arc<BackendTlsSpec>, String), RouteTls>;

/// The name a backend's certificate is checked for: `proxy-ssl-name`, or the Service's
/// `NAME.NAMESPACE.svc`, or an ExternalName Service's host.
pub fn server_name(spec: &BackendTlsSpec, key: &BackendKey, target: &Target) -> String {
    match (&spec.name, target) {
        (Some(name), _) => name.clone(),
        (None, Target::External { host, .. }) => host.clone(),
        (None, Target::Pods { .. }) => format!("{}.{}.svc", key.service, key.namespace),
    }
}

/// Builds the client configuration of `spec` for `name`.
pub fn build(spec: &BackendTlsSpec, name: &str) -> Result<BackendTls, String> {
    let material = spec.material.as_ref().map_err(Clone::clone)?;
    let mut provider = crate::tls::crypto_provider();
    if !spec.ciphers.is_empty() {
        provider.cipher_suites.retain(|suite| match suite {
            SupportedCipherSuite::Tls12(_) => spec.ciphers.iter().any(|c| suite.suite().as_str() == Some(c.as_str())),
            SupportedCipherSuite::Tls13(_) => true,
        });
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = (spec.protocols.iter())
        .map(|p| match p {
            TlsProtocol::Tls12 => &rustls::version::TLS12,
            TlsProtocol::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("proxy-ssl-protocols and proxy-ssl-ciphers leave nothing to offer: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (&material.ca_pem, spec.verify) {
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca.crt: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca.crt holds no certificate".to_owned());
            }
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("ca.crt: {e}"))?;
            Arc::new(DepthLimited { inner, depth: usize::try_from(spec.verify_depth).unwrap_or(usize::MAX) })
        }
        (None, true) => return Err("no ca.crt to verify backends by".to_owned()),
        (_, false) => Arc::new(AcceptAnyServerCertificate(provider)),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match &material.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
            if chain.is_empty() {
                return Err("tls.crt holds no certificate".to_owned());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key is not a PEM key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("tls.crt and tls.key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = spec.sni;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| format!("{name:?}: {e}"))?;
    Ok(BackendTls { config: Arc::new(config), server_name })
}

/// Verifies against the CAs with at most `depth` intermediate certificates between the backend's
/// certificate and a CA (nginx's `proxy_ssl_verify_depth`). A server sends its chain leaf first,
/// each certificate followed by its issuer, so only the first `depth` it sends are offered to
/// path building.
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<WebPkiServerVerifier>,
    depth: usize,
}

impl ServerCertVerifier for DepthLimited {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let offered = &intermediates[..self.depth.min(intermediates.len())];
        self.inner.verify_server_cert(end_entity, offered, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
