//! TLS to PostgreSQL (SPEC §12): `sslmode` in `store.postgres_url` means what it means to
//! libpq, on rustls (aws-lc-rs, the binary's one crypto provider).
//!
//! - `disable`: clear text; `prefer` (libpq's default): TLS when the server offers it,
//!   its certificate not verified;
//! - `require`: TLS or no connection, the certificate not verified (libpq's meaning,
//!   unless a root certificate is given: then as `verify-ca`);
//! - `verify-ca`: TLS, the certificate chain verified against `sslrootcert` (a PEM file,
//!   libpq's parameter), or Mozilla's roots;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host: what the
//!   README recommends.
//!
//! tokio-postgres itself parses only `disable|prefer|require`, so [`split`] reads
//! `sslmode` and `sslrootcert` out of the URL first and hands it `require` for the
//! verifying modes.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing (`prefer`, `require` without a root certificate).
    Nothing,
    /// The chain, not the name (`verify-ca`, or `require` with `sslrootcert`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// How much is verified.
    pub verify: Verify,
    /// `sslrootcert`: the CA certificates trusted instead of Mozilla's roots.
    pub root: Option<PathBuf>,
}

/// Splits `sslmode` and `sslrootcert` out of a URL (`postgres://…?…` or `key=value …`):
/// the URL tokio-postgres can parse, and the TLS settings.
pub fn split(url: &str) -> Result<(String, TlsSettings), String> {
    let mut mode = None;
    let mut root = None;
    let rewritten = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://"))
    {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_string()),
                Some(("sslrootcert", v)) => root = Some(percent_decode(v)?),
                _ => kept.push(pair.to_string()),
            }
        }
        if let Some(m) = &mode {
            kept.push(format!("sslmode={}", tokio_mode(m)?));
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_string()),
                Some(("sslrootcert", v)) => root = Some(v.to_string()),
                _ => kept.push(word.to_string()),
            }
        }
        if let Some(m) = &mode {
            kept.push(format!("sslmode={}", tokio_mode(m)?));
        }
        kept.join(" ")
    };
    let verify = match mode.as_deref() {
        Some("verify-full") => Verify::Full,
        Some("verify-ca") => Verify::Chain,
        Some("require") if root.is_some() => Verify::Chain,
        _ => Verify::Nothing,
    };
    Ok((
        rewritten,
        TlsSettings {
            verify,
            root: root.map(PathBuf::from),
        },
    ))
}

/// The `sslmode` tokio-postgres is given for a libpq one.
fn tokio_mode(mode: &str) -> Result<&'static str, String> {
    match mode {
        "disable" => Ok("disable"),
        "prefer" | "allow" => Ok("prefer"),
        "require" | "verify-ca" | "verify-full" => Ok("require"),
        other => Err(format!(
            "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
        )),
    }
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("sslrootcert has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "sslrootcert is not UTF-8".to_string())
}

/// The TLS connector for these settings.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    let provider = crate::transport::crypto();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match settings.verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let roots = crate::transport::root_store(settings.root.as_deref())
                .map_err(|e| format!("sslrootcert: {e}"))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = if settings.verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `require` without a root: the session is encrypted and its handshake signed, the
/// certificate is not checked (libpq's meaning of `require`).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is verified, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_out_of_both_url_forms() {
        let (url, tls) = split(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=2&sslmode=require");
        assert_eq!(tls.verify, Verify::Full);
        assert_eq!(tls.root, Some(PathBuf::from("/etc/ca.pem")));
        let (url, tls) = split("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(url, "host=h user=u sslmode=require");
        assert_eq!(tls.verify, Verify::Chain);
        let (url, tls) = split("postgres://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), tls.verify),
            ("postgres://u@h/db", Verify::Nothing)
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=require").unwrap().1.verify,
            Verify::Nothing
        );
        assert!(split("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
