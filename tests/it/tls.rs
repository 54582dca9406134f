//! The optional TLS listener (issue 2) and its certificate hot reload (issue 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{GatewayConfig, TempDir, Token, ec_key, fixture};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

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

/// One HTTPS request trusting only `trusted`; returns the status and the certificate presented.
async fn https_get(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
    token: &str,
) -> Result<(u16, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no certificate")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = http::Request::get("/Users")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok((status, presented.into_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_and_reloads_the_certificate() {
    let (_jwks, upstream, cfg) = fixture().await;
    let certs = TempDir::new("tls");
    let (cert_pem, key_pem, first_der) = self_signed();
    let cert_path = certs.write("tls.crt", cert_pem.as_bytes(), 0o644);
    let key_path = certs.write("tls.key", key_pem.as_bytes(), 0o600);
    let cfg: GatewayConfig = cfg
        .set(
            "server",
            "tls_cert_file",
            &crate::support::toml_str(&cert_path.display().to_string()),
        )
        .set(
            "server",
            "tls_key_file",
            &crate::support::toml_str(&key_path.display().to_string()),
        );
    let gw = crate::support::Gateway::start(cfg).await;
    let addr: std::net::SocketAddr = gw
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("addr");
    let token = Token::new().sign(ec_key());

    let (status, presented) = https_get(addr, &first_der, &token)
        .await
        .expect("TLS request");
    assert_eq!(status, 200);
    assert_eq!(presented, first_der);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header_one("x-forwarded-proto"), "https");

    // Rotate the files in place; the reloader re-reads them (polling) and serves the new pair.
    let (cert_pem, key_pem, second_der) = self_signed();
    std::fs::write(&key_path, key_pem).expect("write key");
    std::fs::write(&cert_path, cert_pem).expect("write cert");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if let Ok((200, presented)) = https_get(addr, &second_der, &token).await {
            assert_eq!(presented, second_der);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old certificate is no longer presented.
    assert!(https_get(addr, &first_der, &token).await.is_err());
}
