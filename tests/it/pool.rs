//! The upstream connection pool (issue 6), seen from the backend: keep-alive connections are
//! reused, `Connection: close` is honoured, concurrent requests get connections of their own,
//! and an HTTPS backend whose ALPN picks `h2` is spoken to over one HTTP/2 connection.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::hostile::Resetter;
use crate::support::{Gateway, GatewayConfig, JwksServer, Token, mint, rsa_key};
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#;

/// What the backend saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    /// `Host`, or for HTTP/2 the `:authority`.
    authority: String,
    target: String,
    authorization: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Plain HTTP/1.1 with keep-alive.
    KeepAlive,
    /// Plain HTTP/1.1, every response says `Connection: close`.
    CloseEach,
    /// TLS offering ALPN `h2` and `http/1.1` (hyper's auto server speaks whichever is chosen).
    Tls,
}

/// A hyper backend on `127.0.0.1:0` that counts connections and records requests.
struct Backend {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    cert_pem: Option<String>,
}

impl Backend {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let (acceptor, cert_pem) = match mode {
            Mode::Tls => {
                let (acceptor, pem) = tls_acceptor();
                (Some(acceptor), Some(pem))
            }
            Mode::KeepAlive | Mode::CloseEach => (None, None),
        };
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (Arc::clone(&connections), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let record = Arc::clone(&record);
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        record.lock().expect("record lock").push(seen_of(&req));
                        let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                        if mode == Mode::CloseEach {
                            response.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            builder.serve_connection(TokioIo::new(tls), service).await
                        }
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                    };
                });
            }
        });
        Self {
            addr,
            connections,
            seen,
            cert_pem,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/scim/v2", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("record lock").clone()
    }
}

fn seen_of(req: &Request<Incoming>) -> Seen {
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Seen {
        version: req.version(),
        authority: req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| header(http::header::HOST))
            .unwrap_or_default(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: header(http::header::AUTHORIZATION).unwrap_or_default(),
    }
}

/// A self-signed certificate for 127.0.0.1 with ALPN `h2`, `http/1.1`; returns its PEM too.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("generate a self-signed certificate");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("TLS server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        certified.cert.pem(),
    )
}

async fn gateway_for(backend: &Backend) -> (JwksServer, Gateway, crate::support::TempDir) {
    let jwks = JwksServer::start(mint::jwks(&[rsa_key()])).await;
    let dir = crate::support::TempDir::new("pool");
    let mut cfg = GatewayConfig::new(&backend.url(), &jwks.url());
    if let Some(pem) = &backend.cert_pem {
        let ca = dir.write("upstream-ca.pem", pem.as_bytes(), 0o644);
        cfg = cfg.set(
            "upstream",
            "ca_file",
            &crate::support::toml_str(&ca.to_string_lossy()),
        );
    }
    (jwks, Gateway::start(cfg).await, dir)
}

/// `n` requests at once through the gateway; every one must answer 200 with the backend's body.
async fn concurrently(gw: &Arc<Gateway>, token: &str, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (gw, token) = (Arc::clone(gw), token.to_owned());
        set.spawn(async move { (i, gw.get(&format!("/Users?i={i}"), Some(&token)).await) });
    }
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.expect("request task");
        assert_eq!(r.status, 200, "concurrent request {i}: {}", r.text());
        assert_eq!(r.body, BODY);
    }
}

/// `n` requests one after another; every one must answer 200 with the backend's body.
async fn sequentially(gw: &Gateway, token: &str, n: usize) {
    for i in 0..n {
        let r = gw.get(&format!("/Users?i={i}"), Some(token)).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.body, BODY);
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_keep_alive_connection() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (_jwks, gw, _dir) = gateway_for(&backend).await;
    let token = Token::new().sign(rsa_key());
    sequentially(&gw, &token, 25).await;
    assert_eq!(
        backend.connections(),
        1,
        "one pooled connection serves them all"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 25);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.version, Version::HTTP_11);
        assert_eq!(
            s.target,
            format!("/scim/v2/Users?i={i}"),
            "origin form, in order"
        );
        assert_eq!(s.authority, backend.addr.to_string());
        assert_eq!(s.authorization, format!("Bearer {}", gw.sentinel()));
    }
    gw.assert_logs_free_of(&[&token]);
}

#[tokio::test]
async fn connection_close_answers_are_never_reused() {
    let backend = Backend::start(Mode::CloseEach).await;
    let (_jwks, gw, _dir) = gateway_for(&backend).await;
    let token = Token::new().sign(rsa_key());
    sequentially(&gw, &token, 10).await;
    assert_eq!(
        backend.connections(),
        10,
        "a closing connection is not pooled"
    );
}

#[tokio::test]
async fn concurrent_requests_get_their_own_connections_which_are_then_reused() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (_jwks, gw, _dir) = gateway_for(&backend).await;
    let gw = Arc::new(gw);
    let token = Token::new().sign(rsa_key());
    concurrently(&gw, &token, 16).await;
    let opened = backend.connections();
    assert!(
        (1..=16).contains(&opened),
        "{opened} connections for 16 requests"
    );
    for _ in 0..3 {
        concurrently(&gw, &token, opened).await;
    }
    assert_eq!(
        backend.connections(),
        opened,
        "as many requests as idle connections open no new ones"
    );
    assert_eq!(backend.seen().len(), 16 + 3 * opened);
}

#[tokio::test]
async fn an_https_backend_that_chooses_h2_gets_one_multiplexed_connection() {
    let backend = Backend::start(Mode::Tls).await;
    let (_jwks, gw, _dir) = gateway_for(&backend).await;
    let gw = Arc::new(gw);
    let token = Token::new().sign(rsa_key());
    sequentially(&gw, &token, 5).await;
    concurrently(&gw, &token, 20).await;
    assert_eq!(
        backend.connections(),
        1,
        "HTTP/2 streams share one connection"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 25);
    for s in &seen {
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(s.authority, backend.addr.to_string());
        assert!(s.target.starts_with("/scim/v2/Users?i="), "{}", s.target);
        assert_eq!(s.authorization, format!("Bearer {}", gw.sentinel()));
    }
}

#[tokio::test]
async fn a_written_request_is_never_resent_and_its_secrets_stay_out_of_the_logs() {
    let resetter = Resetter::start().await;
    let jwks = JwksServer::start(mint::jwks(&[rsa_key()])).await;
    let gw = Gateway::start(GatewayConfig::new(&resetter.url(), &jwks.url())).await;
    let token = Token::new().sign(rsa_key());
    let auth = format!("Bearer {token}");
    for _ in 0..3 {
        let r = gw
            .request(
                "POST",
                "/Users",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/scim+json"),
                ],
                Bytes::from_static(br#"{"userName":"a"}"#),
            )
            .await;
        r.assert_scim_error(502);
    }
    assert_eq!(
        resetter.requests(),
        3,
        "each POST reached the upstream once: a written request is not retried"
    );
    // The access lines (debug logging is on) carry the upstream error text; neither they nor
    // the pool's own debug lines may hold the caller's token or the service account's key.
    gw.wait_for_logs(|l| l.contains("\"status\":502"), 3, Duration::from_secs(5))
        .await;
    gw.assert_logs_free_of(&[&token]);
}
