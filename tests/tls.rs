//! HTTPS on the public listener (SPEC §12): certificates made in the test (rcgen), a
//! real TLS client (rustls), HTTP/1.1 and HTTP/2 chosen by ALPN, client certificates,
//! and the refusals (plain HTTP to the TLS port, an unknown client, bad files).

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA, and certificates it signs, written as PEM files into a directory.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `name` signed by the CA: (cert file, key file, DER, key DER).
    fn issue(
        &self,
        name: &str,
    ) -> (
        PathBuf,
        PathBuf,
        CertificateDer<'static>,
        PrivateKeyDer<'static>,
    ) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (cert_file, key_file) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (
            cert_file,
            key_file,
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

fn tls_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> GateConfig {
    let mut lines = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    if let Some(ca) = client_ca {
        lines.push_str(&format!("\ntls_client_ca_file = \"{}\"", ca.display()));
    }
    GateConfig::default().set("server", &lines)
}

/// One GET over TLS to `addr` (as `localhost`), trusting `ca`, offering `alpn`, with a
/// client certificate if given: the HTTP version and status, or the failure.
async fn tls_get(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[u8],
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    path: &str,
) -> Result<(http::Version, u16), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut request = request;
        request
            .headers_mut()
            .insert("host", "localhost".parse().unwrap());
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let version = response.version();
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((version, status))
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http1_and_http2_by_alpn_and_says_so_to_the_backend() {
    let pki = Pki::new();
    let (cert, key, _, _) = pki.issue("localhost");
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, tls_config(&cert, &key, None)).await;
    let (version, status) = tls_get(gate.addr, &pki.ca, b"http/1.1", None, "/public/a")
        .await
        .unwrap();
    assert_eq!((version, status), (http::Version::HTTP_11, 200));
    assert_eq!(backend.last().headers["x-forwarded-proto"], "https");
    let (version, status) = tls_get(gate.addr, &pki.ca, b"h2", None, "/public/b")
        .await
        .unwrap();
    assert_eq!((version, status), (http::Version::HTTP_2, 200));
    assert_eq!(backend.last().headers["x-forwarded-proto"], "https");
    // Authentication works the same over TLS: no token, 401, nothing forwarded.
    let before = backend.count();
    let (_, status) = tls_get(gate.addr, &pki.ca, b"h2", None, "/api/x")
        .await
        .unwrap();
    assert_eq!(status, 401);
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let pki = Pki::new();
    let (cert, key, _, _) = pki.issue("localhost");
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, tls_config(&cert, &key, None)).await;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /public/a HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "answered in plain text: {buf:?}"
    );
    backend.assert_untouched(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_a_client_without_a_valid_certificate_is_refused() {
    let pki = Pki::new();
    let (cert, key, _, _) = pki.issue("localhost");
    let (_, _, client_cert, client_key) = pki.issue("client.example");
    let backend = Backend::start().await;
    let config = tls_config(&cert, &key, Some(&pki.path("ca.pem")));
    let gate = Gate::start_config(&backend, config).await;
    assert!(
        tls_get(gate.addr, &pki.ca, b"http/1.1", None, "/public/a")
            .await
            .is_err(),
        "a client without a certificate was served"
    );
    // A certificate from another CA.
    let other = Pki::new();
    let (_, _, stranger_cert, stranger_key) = other.issue("client.example");
    assert!(
        tls_get(
            gate.addr,
            &pki.ca,
            b"http/1.1",
            Some((stranger_cert, stranger_key)),
            "/public/a"
        )
        .await
        .is_err(),
        "a certificate of an unknown CA was accepted"
    );
    backend.assert_untouched(0);
    let (_, status) = tls_get(
        gate.addr,
        &pki.ca,
        b"h2",
        Some((client_cert, client_key)),
        "/public/a",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_certificate_files_are_one_line_naming_the_key() {
    let pki = Pki::new();
    let (cert, key, _, _) = pki.issue("localhost");
    let (_, other_key, _, _) = pki.issue("other");
    let cases = [
        (
            tls_config(&pki.path("missing.pem"), &key, None),
            "config error: server.tls_cert_file: cannot read",
        ),
        (
            tls_config(&cert, &cert, None),
            "config error: server.tls_key_file:",
        ),
        (tls_config(&cert, &other_key, None), "does not go with"),
        (
            tls_config(&key, &key, None),
            "config error: server.tls_cert_file:",
        ),
    ];
    for (config, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let text = config
            .to_string()
            .replace("{backend}", "127.0.0.1:9")
            .replace("{db}", &dir.path().join("t.db").display().to_string());
        let config = tokengate::config::Config::from_toml(&text, dir.path()).unwrap();
        let e = match tokengate::app::App::open(config).await {
            Ok(_) => panic!("started with {needle}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // Half a pair is refused at load.
    let text = GateConfig::default()
        .set("server", &format!("tls_cert_file = \"{}\"", cert.display()))
        .to_string()
        .replace("{backend}", "127.0.0.1:9")
        .replace("{db}", "/tmp/x.db");
    let e = tokengate::config::Config::from_toml(&text, Path::new(".")).unwrap_err();
    assert_eq!(e.key, "server.tls_key_file");
}

/// A TLS terminator in front of `backend`, with a certificate for `localhost` from
/// `pki`: the address of an https backend.
async fn tls_front(pki: &Pki, backend: &Backend) -> SocketAddr {
    let (_, _, cert, key) = pki.issue("localhost");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = backend.addr;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut plain = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn https_upstream(front: SocketAddr, lines: &str) -> GateConfig {
    GateConfig::default().set(
        "upstream",
        &format!("url = \"https://localhost:{}\"\n{lines}", front.port()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_backend_with_a_private_ca_is_reached_through_upstream_ca_file() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let front = tls_front(&pki, &backend).await;
    let config = https_upstream(
        front,
        &format!("ca_file = \"{}\"", pki.path("ca.pem").display()),
    );
    let gate = Gate::start_config(&backend, config).await;
    let reply = get(&gate.url("/public/over-tls"), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(backend.last().uri, "/public/over-tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_backend_whose_certificate_does_not_verify_is_a_502_never_clear_text() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let front = tls_front(&pki, &backend).await;
    let ca = format!("ca_file = \"{}\"", pki.path("ca.pem").display());
    for config in [
        // The webpki roots do not know the test CA.
        https_upstream(front, ""),
        // The certificate is for localhost, not for the name asked for.
        https_upstream(
            front,
            &format!("{ca}\ntls_server_name = \"backend.example\""),
        ),
    ] {
        let gate = Gate::start_config(&backend, config).await;
        let reply = get(&gate.url("/public/x"), &[]).await;
        assert_eq!(reply.status, 502, "{reply:?}");
    }
    backend.assert_untouched(0);
}
