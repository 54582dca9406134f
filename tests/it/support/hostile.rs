//! Peers that misbehave below HTTP: a TLS endpoint with an untrusted self-signed certificate
//! (for the JWKS URL or the upstream, threats T35/T44) and a server that reads a request head
//! and resets the connection (T44: no retries of non-idempotent requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::BufReader;
use tokio::net::TcpListener;

use super::wire;

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTPS endpoint with a fresh self-signed certificate for 127.0.0.1 that nothing trusts
/// unless given its PEM (`cert_pem`, e.g. as `jwt.ca_file`). It answers every request that gets
/// through TLS with 200 and `body`.
#[derive(Clone)]
pub struct UntrustedTls {
    addr: SocketAddr,
    counters: Arc<Counters>,
    cert_pem: String,
}

impl UntrustedTls {
    pub async fn start(body: &str) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("generate a self-signed certificate");
        let cert_pem = certified.cert.pem();
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("TLS server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS server");
        let addr = listener.local_addr().expect("TLS server address");
        let counters = Arc::new(Counters::default());
        let (c, body) = (Arc::clone(&counters), body.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, c, body) = (acceptor.clone(), Arc::clone(&c), body.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    c.handshakes.fetch_add(1, Ordering::SeqCst);
                    let (read, mut write) = tokio::io::split(tls);
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(head)) = wire::read_head(&mut reader).await {
                        let _ = wire::read_body(&mut reader, &head, false).await;
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        let json = vec![("content-type".to_owned(), "application/json".to_owned())];
                        if wire::write_response(&mut write, 200, &json, body.as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            counters,
            cert_pem,
        }
    }

    /// The certificate, PEM-encoded (to trust it deliberately).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// TCP connections accepted (proves the gateway tried).
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that completed (must stay 0: the client must refuse the certificate).
    pub fn handshakes(&self) -> usize {
        self.counters.handshakes.load(Ordering::SeqCst)
    }

    /// HTTP requests that arrived over TLS.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request head per connection, counts it, and closes the connection unanswered.
#[derive(Clone)]
pub struct Resetter {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl Resetter {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind resetting server");
        let addr = listener.local_addr().expect("resetting server address");
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    if let Ok(Some(_)) = wire::read_head(&mut reader).await {
                        c.requests.fetch_add(1, Ordering::SeqCst);
                    }
                    // Dropping the stream closes the connection without a response.
                });
            }
        });
        Self { addr, counters }
    }

    /// A base URL like the recording upstream's.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, super::upstream::BASE_PATH)
    }

    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Request heads received.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }
}
