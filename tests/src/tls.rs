//! TLS for tests: certificates, Secrets, and client connections that report what the server
//! presented.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::Reply;

/// A self-signed certificate for `names`, and its key, in PEM.
pub struct Certificate {
    pub chain_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Certificate {
    pub fn new(names: &[&str]) -> Certificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).expect("generating a test certificate");
        Certificate {
            chain_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
            der: generated.cert.der().clone(),
        }
    }

    /// A TLS acceptor serving this certificate, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.server(None, None)
    }

    /// [`Certificate::acceptor`], asking clients for a certificate `clients` issued and
    /// refusing those without one.
    pub fn acceptor_requiring_client(&self, clients: &Authority) -> tokio_rustls::TlsAcceptor {
        self.server(Some(clients), None)
    }

    /// [`Certificate::acceptor`], refusing clients that do not ask for `name` by SNI.
    pub fn acceptor_requiring_sni(&self, name: &str) -> tokio_rustls::TlsAcceptor {
        self.server(None, Some(name))
    }

    fn server(&self, clients: Option<&Authority>, sni: Option<&str>) -> tokio_rustls::TlsAcceptor {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("a PEM key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("default versions");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(clients) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(clients.der.clone()).expect("a CA certificate");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let certified = rustls::sign::CertifiedKey::from_der(
            chain.expect("a PEM chain"),
            key,
            &rustls::crypto::aws_lc_rs::default_provider(),
        )
        .expect("a matching key");
        let mut config = builder
            .with_cert_resolver(Arc::new(BySni { certified: Arc::new(certified), name: sni.map(str::to_owned) }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A `kubernetes.io/tls` Secret holding this certificate (PEM in `stringData`).
    pub fn secret(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  \
             tls.crt: |\n{}  tls.key: |\n{}",
            indent(&self.chain_pem),
            indent(&self.key_pem)
        )
    }
}

/// Serves one certificate, to clients asking for `name` by SNI when it is set.
#[derive(Debug)]
struct BySni {
    certified: Arc<rustls::sign::CertifiedKey>,
    name: Option<String>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match &self.name {
            Some(name) if hello.server_name() != Some(name.as_str()) => None,
            _ => Some(self.certified.clone()),
        }
    }
}

/// A certificate authority for tests, possibly an intermediate one: it issues certificates whose
/// PEM chain carries the intermediates up to (not including) the root.
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// This authority's certificate.
    pub pem: String,
    pub der: CertificateDer<'static>,
    /// The intermediates from this authority up, as a server sends them after its own.
    chain_pem: String,
}

impl Authority {
    /// A root CA named `name`.
    pub fn new(name: &str) -> Authority {
        Authority::made(name, None)
    }

    /// An intermediate CA named `name`, issued by this one.
    pub fn intermediate(&self, name: &str) -> Authority {
        Authority::made(name, Some(self))
    }

    fn made(name: &str, parent: Option<&Authority>) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("a key");
        let (cert, chain_pem) = match parent {
            None => (params.self_signed(&key).expect("a CA certificate"), String::new()),
            Some(parent) => {
                let cert = params.signed_by(&key, &parent.issuer).expect("an intermediate certificate");
                let chain = format!("{}{}", cert.pem(), parent.chain_pem);
                (cert, chain)
            }
        };
        Authority { pem: cert.pem(), der: cert.der().clone(), chain_pem, issuer: rcgen::Issuer::new(params, key) }
    }

    /// A certificate for `names` (a client certificate when empty), with the intermediates.
    pub fn issue(&self, names: &[&str]) -> Certificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, "sluice test");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Certificate {
            chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// An Opaque Secret with this authority as `ca.crt`, and `client`'s certificate and key as
    /// `tls.crt` and `tls.key` when given (what `proxy-ssl-secret` reads).
    pub fn secret(&self, name: &str, client: Option<&Certificate>) -> String {
        let mut secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{sluice.dev/backend-tls: \"true\"}}\nstringData:\n"
        );
        secret += &format!("  ca.crt: |\n{}", indent(&self.pem));
        if let Some(client) = client {
            secret += &format!("  tls.crt: |\n{}  tls.key: |\n{}", indent(&client.chain_pem), indent(&client.key_pem));
        }
        secret
    }
}

/// PEM as a YAML block scalar's lines.
fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One client connection, kept open across requests.
pub struct Connection {
    sender: Sender,
    /// The certificate the server presented (TLS only).
    pub peer: Option<CertificateDer<'static>>,
    /// The protocol agreed by ALPN (TLS only).
    pub alpn: Option<Vec<u8>>,
    /// The cipher suite agreed (TLS only).
    pub suite: Option<rustls::CipherSuite>,
}

impl Connection {
    /// Connects to `addr`; over TLS with SNI `server_name` when given. `h2` offers only HTTP/2
    /// (by ALPN over TLS, by prior knowledge in plain text); otherwise only HTTP/1.1.
    pub async fn open(addr: SocketAddr, server_name: Option<&str>, h2: bool) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(addr).await?;
        let Some(name) = server_name else {
            return Connection::handshake(TokioIo::new(tcp), h2, None, None, None).await;
        };
        // The tests check *which* certificate was served, not whether to trust it.
        let mut config = sluice_proxy::danger::client_config_accepting_any_certificate();
        config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = connector.connect(ServerName::try_from(name.to_owned())?, tcp).await?;
        let (_, session) = stream.get_ref();
        let peer = session.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let suite = session.negotiated_cipher_suite().map(|suite| suite.suite());
        Connection::handshake(TokioIo::new(stream), h2, peer, alpn, suite).await
    }

    async fn handshake<I>(
        io: I,
        h2: bool,
        peer: Option<CertificateDer<'static>>,
        alpn: Option<Vec<u8>>,
        suite: Option<rustls::CipherSuite>,
    ) -> anyhow::Result<Connection>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let sender = if h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Sender::H2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Sender::H1(sender)
        };
        Ok(Connection { sender, peer, alpn, suite })
    }

    /// GET `path` for `host` on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<(Reply, http::Version)> {
        let request = match self.sender {
            // HTTP/2 carries the host in the URI's authority.
            Sender::H2(_) => http::Request::get(format!("https://{host}{path}")),
            Sender::H1(_) => http::Request::get(path).header("host", host),
        };
        let request = request.body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    /// Sends `request` on this connection; returns the response, read whole, and its version.
    pub async fn send(&mut self, request: http::Request<Full<Bytes>>) -> anyhow::Result<(Reply, http::Version)> {
        let response = match &mut self.sender {
            Sender::H1(sender) => sender.send_request(request).await,
            Sender::H2(sender) => sender.send_request(request).await,
        }
        .context("sending the request")?;
        let version = response.version();
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let reply = Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into(),
        };
        Ok((reply, version))
    }
}
