//! How a client connection arrives: plain TCP, or TLS on the public listener (SPEC §12).
//!
//! [`Tls`] is the listener's TLS setup, built from `server.tls_*` at start and on every
//! reload (certificates are re-read; a policy holds one): rustls on aws-lc-rs (the one
//! crypto provider of the binary), ALPN `h2` then `http/1.1`, and, with
//! `server.tls_client_ca_file`, a required client certificate signed by that CA.
//! [`ClientIo`] is the accepted stream either way, so that the connection code above it
//! does not care which. [`client`] is the TLS client of the backend and of an identity
//! provider.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerTls;

/// A TLS file that cannot be used: the config key at fault and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct TlsError {
    /// Dotted config key, e.g. `server.tls_cert_file`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl TlsError {
    fn new(key: &'static str, problem: impl Into<String>) -> TlsError {
        TlsError {
            key,
            problem: problem.into(),
        }
    }
}

/// The crypto provider of every TLS session: aws-lc-rs, jsonwebtoken's too.
pub fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates trusted to sign a peer's: those of `ca_file` (PEM), or Mozilla's
/// roots (webpki-roots) when none is given.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    for cert in pem_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable certificate ({e})", path.display()))?;
    }
    Ok(roots)
}

/// A TLS client trusting [`root_store`]`(ca_file)`, offering `alpn`: for an https
/// backend and an identity provider.
pub fn client(ca_file: Option<&Path>, alpn: &[u8]) -> Result<tokio_rustls::TlsConnector, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The public listener's TLS: what a handshake needs.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads the certificate chain, its key and the client CA, and checks that they fit
    /// together; every failure is one line naming the config key.
    pub fn load(settings: &ServerTls) -> Result<Tls, TlsError> {
        let chain = pem_certificates(&settings.cert_file)
            .map_err(|e| TlsError::new("server.tls_cert_file", e))?;
        if let Some(warning) = expiry_warning(&chain[0], std::time::SystemTime::now()) {
            tracing::warn!(file = %settings.cert_file.display(), "server.tls_cert_file: {warning}");
        }
        let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
            TlsError::new(
                "server.tls_key_file",
                format!(
                    "{}: no usable private key ({e})",
                    settings.key_file.display()
                ),
            )
        })?;
        let provider = crypto();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("server.tls_cert_file", format!("TLS setup: {e}")))?;
        let builder = match &settings.client_ca_file {
            Some(path) => {
                let roots = root_store(Some(path))
                    .map_err(|e| TlsError::new("server.tls_client_ca_file", e))?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| {
                    TlsError::new(
                        "server.tls_client_ca_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            TlsError::new(
                "server.tls_key_file",
                format!(
                    "{} does not go with {} ({e})",
                    settings.key_file.display(),
                    settings.cert_file.display()
                ),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake on an accepted socket.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<ClientIo> {
        let tls = self.acceptor.accept(stream).await?;
        Ok(ClientIo::Tls(Box::new(tls)))
    }
}

/// Days before its end from which a certificate is reported as expiring.
const EXPIRY_NOTICE_DAYS: u64 = 14;

/// Whether the leaf certificate is expired, or will be within [`EXPIRY_NOTICE_DAYS`], as
/// of `now`: said at start and at every reload (clients would refuse it; tokengate
/// still serves it, so that a renewal in place is a reload away).
fn expiry_warning(leaf: &CertificateDer<'_>, now: std::time::SystemTime) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).ok()?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?;
    let subject = cert.tbs_certificate.subject.to_string();
    let day = 86_400;
    if not_after <= now {
        let ago = (now - not_after).as_secs() / day;
        Some(format!(
            "the certificate of {subject} expired {ago} day(s) ago"
        ))
    } else if (not_after - now).as_secs() < EXPIRY_NOTICE_DAYS * day {
        let left = (not_after - now).as_secs() / day;
        Some(format!(
            "the certificate of {subject} expires in {left} day(s)"
        ))
    } else {
        None
    }
}

/// The certificates of a PEM file, at least one.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

/// An accepted client connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum ClientIo {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (boxed: a TLS session is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientIo {
    /// Whether the connection is HTTPS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientIo::Tls(_))
    }

    /// The subject of the client certificate (mTLS, verified by the handshake against
    /// `server.tls_client_ca_file`), as an RFC 4514 string; `None` without one.
    pub fn client_subject(&self) -> Option<String> {
        use x509_cert::der::Decode;
        let ClientIo::Tls(tls) = self else {
            return None;
        };
        let leaf = tls.get_ref().1.peer_certificates()?.first()?;
        let cert = x509_cert::Certificate::from_der(leaf).ok()?;
        Some(cert.tbs_certificate.subject.to_string())
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(s) => s.is_write_vectored(),
            ClientIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(not_after: (i32, u8, u8)) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&key).unwrap().der().clone()
    }

    /// A CA-signed certificate for `name` (its CN too): (PEM chain, PEM key, DER, key).
    fn issue(
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
        name: &str,
    ) -> (
        String,
        String,
        CertificateDer<'static>,
        PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (cert.pem(), key.serialize_pem(), cert.der().clone(), der)
    }

    #[tokio::test]
    async fn a_verified_client_certificate_gives_its_subject() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let dir = tempfile::tempdir().unwrap();
        let (server_pem, server_key, _, _) = issue(&issuer, "localhost");
        let (_, _, client_der, client_key) = issue(&issuer, "client-1");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let tls = Tls::load(&ServerTls {
            cert_file: file("server.pem", &server_pem),
            key_file: file("server.key", &server_key),
            client_ca_file: Some(file("ca.pem", &ca_cert.pem())),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let io = tls.accept(stream).await.unwrap();
            (io.is_tls(), io.client_subject())
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client_der], client_key)
            .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let _client = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (is_tls, subject) = server.await.unwrap();
        assert!(is_tls);
        assert_eq!(subject.as_deref(), Some("CN=client-1"));
    }

    #[test]
    fn an_expired_or_expiring_certificate_is_reported() {
        let at = |days: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(days * 86_400);
        // 2030-01-01 is day 21915 of the epoch.
        let cert = leaf((2030, 1, 1));
        assert_eq!(expiry_warning(&cert, at(21_000)), None);
        let soon = expiry_warning(&cert, at(21_910)).unwrap();
        assert!(soon.contains("expires in 5 day(s)"), "{soon}");
        let past = expiry_warning(&cert, at(21_925)).unwrap();
        assert!(past.contains("expired 10 day(s) ago"), "{past}");
    }
}
