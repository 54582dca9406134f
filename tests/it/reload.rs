//! Hot reload's promises (issue 15 §3): a failed reload changes nothing, not even the listener's
//! certificate; reading the watched files never stalls requests, even on a one-thread runtime
//! with a Secret mount that does not answer; the CA files are watched like every other named
//! file, and a changed CA is used.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::observe::{metric, replace_file, scrape};
use crate::support::{Gateway, JwksMode, JwksServer, TempDir, Token, ec_key, fixture, toml_str};

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
fn self_signed() -> (String, String, CertificateDer<'static>) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let der = certified.cert.der().clone();
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        der,
    )
}

/// Polls `/metrics` (bounded) until `series` is at least `want`; returns the scrape.
async fn wait_metric(gw: &Gateway, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(gw).await;
        if metric(&text, series).is_some_and(|v| v >= want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {want}:\n{text}\nlogs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The certificate the TLS listener presents (trusting anything: this only looks).
async fn presented_certificate(addr: SocketAddr) -> CertificateDer<'static> {
    #[derive(Debug)]
    struct LookOnly(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for LookOnly {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LookOnly(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the TLS listener");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("a certificate")
        .into_owned()
}

/// Every step of a reload after reading the files can still fail (the runtime build, the new
/// key source); when one does, the listener keeps the certificate it had, as it keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_listener_certificate() {
    let (jwks, _upstream, cfg) = fixture().await;
    let broken_jwks = JwksServer::start(String::new()).await;
    broken_jwks.set_mode(JwksMode::Status(500));
    let certs = TempDir::new("atomic-tls");
    let (cert_pem, key_pem, first) = self_signed();
    let cert_path = certs.write("first.crt", cert_pem.as_bytes(), 0o644);
    let key_path = certs.write("first.key", key_pem.as_bytes(), 0o600);
    let cfg = cfg
        .set(
            "server",
            "tls_cert_file",
            &toml_str(&cert_path.display().to_string()),
        )
        .set(
            "server",
            "tls_key_file",
            &toml_str(&key_path.display().to_string()),
        );
    let gw = Gateway::start(cfg).await;
    assert_eq!(presented_certificate(gw.proxy_addr).await, first);
    let original = std::fs::read_to_string(&gw.config_path).expect("config");

    // Each broken config also names a new, valid certificate pair.
    let not_a_ca = certs.write("not-a-ca.pem", b"this is no PEM certificate\n", 0o644);
    let unloadable_jwks = |text: String| text.replace(&jwks.url(), &broken_jwks.url());
    let unusable_upstream_ca = |text: String| {
        let line = format!("ca_file = {}\n", toml_str(&not_a_ca.display().to_string()));
        text.replacen("[upstream]\n", &format!("[upstream]\n{line}"), 1)
    };
    let breakages: [(&str, &dyn Fn(String) -> String); 2] = [
        ("the new JWKS URL answers 500", &unloadable_jwks),
        (
            "the upstream CA file holds no certificate",
            &unusable_upstream_ca,
        ),
    ];
    for (i, (label, break_it)) in breakages.into_iter().enumerate() {
        let (cert_pem, key_pem, _) = self_signed();
        let new_cert = certs.write(&format!("new-{i}.crt"), cert_pem.as_bytes(), 0o644);
        let new_key = certs.write(&format!("new-{i}.key"), key_pem.as_bytes(), 0o600);
        let text = break_it(
            original
                .replace(
                    &toml_str(&cert_path.display().to_string()),
                    &toml_str(&new_cert.display().to_string()),
                )
                .replace(
                    &toml_str(&key_path.display().to_string()),
                    &toml_str(&new_key.display().to_string()),
                ),
        );
        assert!(text.contains(&new_cert.display().to_string()), "{label}");
        replace_file(&gw.config_path, text.as_bytes(), 0o644);
        wait_metric(
            &gw,
            r#"scimgate_config_reloads_total{result="failure"}"#,
            (i + 1) as f64,
        )
        .await;
        assert_eq!(
            presented_certificate(gw.proxy_addr).await,
            first,
            "{label}: a failed reload swapped the listener's certificate"
        );
    }
    let text = scrape(&gw).await;
    assert_eq!(
        metric(&text, r#"scimgate_config_reloads_total{result="success"}"#),
        Some(0.0),
        "{text}"
    );
}

/// Opens `fifo` for writing without blocking: succeeds only while a reader has it open.
#[cfg(target_os = "linux")]
fn open_writer_if_read(fifo: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(fifo)
        .ok()
}

/// A Secret mount that stops answering (here: the key file replaced by a FIFO nobody writes)
/// must not stall requests while the reloader reads it, even with `worker_threads = 1`, where a
/// blocking read on the runtime thread would stop everything.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_key_file_read_does_not_stall_requests() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("runtime", "worker_threads", "1")).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);

    let key_file = gw.dir().join("provisioner.key");
    let fifo = gw.dir().join("provisioner.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    std::fs::rename(&fifo, &key_file).expect("put the FIFO in place of the key file");

    // The reloader's next poll opens the FIFO and waits for data that does not come while the
    // test holds the write end open without writing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let writer = loop {
        if let Some(w) = open_writer_if_read(&key_file) {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the reloader never read the key file; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for i in 0..3 {
        let answered = tokio::time::timeout(
            Duration::from_secs(3),
            crate::support::send(
                gw.proxy_addr,
                "GET",
                "/Users",
                &[("authorization", &format!("Bearer {token}"))],
                Bytes::new(),
            ),
        )
        .await;
        let status = answered
            .unwrap_or_else(|_| panic!("request {i} stalled while the reloader reads a FIFO"))
            .expect("request");
        assert_eq!(status.status, 200, "request {i}");
        let admin = tokio::time::timeout(Duration::from_secs(3), gw.admin_get("/healthz")).await;
        assert!(
            matches!(admin, Ok(Ok(ref r)) if r.status == 200),
            "the admin port stalled"
        );
    }
    assert_eq!(upstream.hits(), 4);
    drop(writer);
}

/// A TLS upstream whose certificate the test replaces; one request per connection, so every
/// request makes the gateway verify the certificate anew.
struct TlsUpstream {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

impl TlsUpstream {
    async fn start(cert_pem: &str, key_pem: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let config = Arc::new(Mutex::new(Self::server_config(cert_pem, key_pem)));
        let current = Arc::clone(&config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let config = Arc::clone(&current.lock().expect("config lock"));
                tokio::spawn(async move {
                    let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                    else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { addr, config }
    }

    fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        Arc::new(config)
    }

    fn set_certificate(&self, cert_pem: &str, key_pem: &str) {
        *self.config.lock().expect("config lock") = Self::server_config(cert_pem, key_pem);
    }
}

/// The CA files are named files like the keys: a change to one is a reload, and the reloaded
/// gateway trusts the new CA (the upstream client is rebuilt, not kept for its unchanged path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_ca_files_are_reloaded_and_used() {
    let (jwks, _upstream, cfg) = fixture().await;
    let (first_pem, first_key, _) = self_signed();
    let upstream = TlsUpstream::start(&first_pem, &first_key).await;
    let cas = TempDir::new("ca-files");
    let upstream_ca = cas.write("upstream-ca.pem", first_pem.as_bytes(), 0o644);
    // The JWKS is plain http on loopback: its CA file is read and watched, never needed.
    let (jwt_pem, _, _) = self_signed();
    let jwt_ca = cas.write("jwt-ca.pem", jwt_pem.as_bytes(), 0o644);
    let cfg = cfg
        .set(
            "upstream",
            "url",
            &toml_str(&format!(
                "https://localhost:{}/scim/v2",
                upstream.addr.port()
            )),
        )
        .set(
            "upstream",
            "ca_file",
            &toml_str(&upstream_ca.display().to_string()),
        )
        .set("jwt", "ca_file", &toml_str(&jwt_ca.display().to_string()));
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    let get = || async {
        let auth = format!("Bearer {token}");
        let mut r = crate::support::send(
            gw.proxy_addr,
            "GET",
            "/Users",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .expect("request");
        r.body.clear();
        r.status
    };
    assert_eq!(get().await, 200, "{}", gw.logs().join("\n"));

    // The upstream moves to a certificate the configured CA does not vouch for.
    let (second_pem, second_key, _) = self_signed();
    upstream.set_certificate(&second_pem, &second_key);
    assert_eq!(
        get().await,
        502,
        "an untrusted upstream certificate is refused"
    );

    // The jwt CA file changes: that alone is a reload, and the key cache is rebuilt with the
    // new CA (it must load before it takes over: one more JWKS fetch).
    let fetches_before = jwks.hits();
    let (other_pem, _, _) = self_signed();
    replace_file(&jwt_ca, other_pem.as_bytes(), 0o644);
    wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
    )
    .await;
    assert!(
        jwks.hits() > fetches_before,
        "the key cache was not rebuilt"
    );

    // The upstream CA file now holds the new certificate: reloaded, and trusted from then on.
    replace_file(&upstream_ca, second_pem.as_bytes(), 0o644);
    wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        2.0,
    )
    .await;
    assert_eq!(get().await, 200, "{}", gw.logs().join("\n"));
}
