//! Targets, Host, and the pooled client seen from a counting backend.

use super::*;
use std::time::Duration;

fn config(url: &str) -> UpstreamConfig {
    let uri: Uri = url.parse().unwrap();
    UpstreamConfig {
        scheme: uri.scheme().unwrap().clone(),
        authority: uri.authority().unwrap().clone(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        url: uri,
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        ca_file: None,
        resource_types: Vec::new(),
    }
}

#[test]
fn host_header_is_the_configured_authority() {
    let host = |url: &str| host_header(&config(url).authority);
    assert_eq!(host("https://scim.example.com/v2"), "scim.example.com");
    assert_eq!(
        host("https://scim.example.com:8443/v2"),
        "scim.example.com:8443"
    );
    assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
}

#[test]
fn joins_base_path_and_drops_any_caller_authority() {
    let c = config("https://scim.internal/api/scim/v2/");
    let t = |s: &str| {
        let uri: Uri = s.parse().unwrap();
        target_path(&c.base_path, uri.path(), uri.query(), None).map(|p| p.to_string())
    };
    assert_eq!(
        t("/Users?filter=x").as_deref(),
        Some("/api/scim/v2/Users?filter=x")
    );
    assert_eq!(
        t("//attacker/x").as_deref(),
        Some("/api/scim/v2//attacker/x")
    );
    assert_eq!(
        t("http://attacker:1/Users").as_deref(),
        Some("/api/scim/v2/Users")
    );
    assert_eq!(
        t("/@attacker/x").as_deref(),
        Some("/api/scim/v2/@attacker/x")
    );
    assert_eq!(t("*"), None);
    let root = config("http://127.0.0.1:9000");
    assert_eq!(
        target_path(&root.base_path, "/v2/Users", None, None)
            .unwrap()
            .as_str(),
        "/v2/Users"
    );
    assert_eq!(target_path(&root.base_path, "", None, None).unwrap(), "/");
    let harness = "/gateway/ng/api/scim/account/{account}";
    let t = target_path(harness, "/Users", Some("count=1"), Some("acme_1")).unwrap();
    assert_eq!(t, "/gateway/ng/api/scim/account/acme_1/Users?count=1");
}

#[test]
fn target_is_origin_form() {
    let upstream = Upstream::new(&config("https://scim.internal/v2")).unwrap();
    let target = upstream.target("/Users", Some("a=1"), None).unwrap();
    assert_eq!(target.scheme(), None);
    assert_eq!(target.authority(), None);
    assert_eq!(target, "/v2/Users?a=1");
}

// The pooled client, seen from a backend that counts connections.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// HTTP/1.1 keep-alive.
    Plain,
    /// TLS offering ALPN `h2` and `http/1.1`.
    Tls,
    /// HTTP/1.1 that closes each connection after its first answer, without saying so.
    Vanishing,
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    connection: usize,
    version: Version,
    method: String,
    /// `:authority`, or `Host`.
    authority: String,
    target: String,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// Counts a connection as open for as long as its task runs.
struct Open(Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Backend {
    addr: SocketAddr,
    url: String,
    /// The TLS backend's certificate, for `upstream.ca_file`.
    ca: Option<PathBuf>,
    stats: Arc<Stats>,
}

impl Backend {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let (acceptor, ca) = match mode {
            Mode::Tls => {
                let (acceptor, ca) = tls_acceptor(addr.port());
                (Some(acceptor), Some(ca))
            }
            Mode::Plain | Mode::Vanishing => (None, None),
        };
        let s = Arc::clone(&stats);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = s.accepted.fetch_add(1, Ordering::SeqCst);
                s.open.fetch_add(1, Ordering::SeqCst);
                let open = Open(Arc::clone(&s));
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if mode == Mode::Vanishing {
                        answer_once(stream, connection, &open.0).await;
                        return;
                    }
                    let stats = Arc::clone(&open.0);
                    let service = service_fn(move |req: Request<Incoming>| {
                        stats.seen.lock().unwrap().push(seen(connection, &req));
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => Ok(()),
                        },
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                    };
                    drop(open);
                });
            }
        });
        let scheme = if ca.is_some() { "https" } else { "http" };
        Self {
            addr,
            url: format!("{scheme}://{addr}/v2"),
            ca,
            stats,
        }
    }

    fn upstream(&self, idle: Duration) -> Upstream {
        let mut config = config(&self.url);
        config.ca_file.clone_from(&self.ca);
        Upstream::with_idle_timeout(&config, idle).unwrap()
    }

    fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.stats.seen.lock().unwrap().clone()
    }

    /// Polls (bounded) until `pred(open())`; returns whether it held in time.
    async fn wait_open(&self, pred: impl Fn(usize) -> bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !pred(self.open()) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

fn seen(connection: usize, req: &Request<Incoming>) -> Seen {
    Seen {
        connection,
        version: req.version(),
        method: req.method().to_string(),
        authority: req
            .uri()
            .authority()
            .map(ToString::to_string)
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .map(|h| h.to_str().unwrap().to_owned())
            })
            .unwrap_or_default(),
        target: req.uri().path_and_query().unwrap().to_string(),
    }
}

/// Reads one request (head and `content-length` body), answers 200 `ok` as if the connection
/// would stay open, then closes it.
async fn answer_once(mut stream: tokio::net::TcpStream, connection: usize, stats: &Stats) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap(), words.next().unwrap());
    stats.seen.lock().unwrap().push(Seen {
        connection,
        version: Version::HTTP_11,
        method: method.to_owned(),
        authority: String::new(),
        target: target.to_owned(),
    });
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await;
}

/// A self-signed certificate for 127.0.0.1 with ALPN `h2`, `http/1.1`, its PEM in a file.
fn tls_acceptor(port: u16) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let ca = std::env::temp_dir().join(format!(
        "scimgate-upstream-{}-{port}.pem",
        std::process::id()
    ));
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca)
}

fn get(upstream: &Upstream, target: &str) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::read(Bytes::new()));
    *request.uri_mut() = upstream.target(target, None, None).unwrap();
    request
}

/// Forwards and reads the answer to its end; the status and body.
async fn exchange(upstream: &Upstream, request: Request<RequestBody>) -> (u16, Bytes) {
    let response = upstream.forward(request, Instant::now()).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_over_h2_share_one_connection() {
    // ALPN tells `h2` only once a connection is up, so each first request dials; the first
    // to learn it is h2 shakes hands, the others drop theirs and ride its connection. The
    // attacker here is load: 16 first requests at once must not leave 16 HTTP/2 connections.
    let backend = Backend::start(Mode::Tls).await;
    let upstream = Arc::new(backend.upstream(IDLE_TIMEOUT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let upstream = Arc::clone(&upstream);
        set.spawn(async move {
            let request = get(&upstream, &format!("/Users/{i}"));
            exchange(&upstream, request).await
        });
    }
    while let Some(done) = set.join_next().await {
        assert_eq!(done.unwrap(), (200, Bytes::from("ok")));
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 16);
    let carriers: BTreeSet<usize> = seen.iter().map(|s| s.connection).collect();
    assert_eq!(
        carriers.len(),
        1,
        "requests rode {carriers:?} of {} dialled",
        backend.accepted()
    );
    for s in &seen {
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(s.authority, backend.addr.to_string());
        assert!(s.target.starts_with("/v2/Users/"), "{}", s.target);
    }
    assert!(
        backend.wait_open(|n| n == 1, Duration::from_secs(5)).await,
        "the dials that lost were closed: {} of {} open",
        backend.open(),
        backend.accepted()
    );
    // Later requests find the shared connection and dial nothing.
    let dialled = backend.accepted();
    for i in 0..5 {
        let request = get(&upstream, &format!("/Groups/{i}"));
        assert_eq!(exchange(&upstream, request).await.0, 200);
    }
    assert_eq!(backend.accepted(), dialled);
}

#[tokio::test]
async fn idle_connections_are_reused_then_reaped() {
    for mode in [Mode::Plain, Mode::Tls] {
        const IDLE: Duration = Duration::from_millis(300);
        let backend = Backend::start(mode).await;
        let upstream = backend.upstream(IDLE);
        for i in 0..3 {
            let request = get(&upstream, &format!("/Users/{i}"));
            assert_eq!(exchange(&upstream, request).await.0, 200);
        }
        let version = backend.seen()[0].version;
        assert_eq!(
            backend.accepted(),
            1,
            "{version:?}: one connection serves them all"
        );
        assert_eq!(
            backend.open(),
            1,
            "{version:?}: and stays open between them"
        );
        // Nothing is sent after this: only the pool's reaper can close the idle connection.
        let idle = std::time::Instant::now();
        assert!(
            backend.wait_open(|n| n == 0, Duration::from_secs(10)).await,
            "{version:?}: an idle connection outlived the idle timeout"
        );
        assert!(
            idle.elapsed() >= IDLE,
            "{version:?}: closed after {:?}",
            idle.elapsed()
        );
        // A request after the reaping dials afresh and is answered.
        let request = get(&upstream, "/Groups");
        assert_eq!(exchange(&upstream, request).await.0, 200);
        assert_eq!(backend.accepted(), 2);
    }
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let backend = Backend::start(Mode::Vanishing).await;
    let upstream = backend.upstream(IDLE_TIMEOUT);
    let request = get(&upstream, "/Users");
    assert_eq!(exchange(&upstream, request).await.0, 200);
    assert!(backend.wait_open(|n| n == 0, Duration::from_secs(5)).await);
    // The pooled connection is gone: the POST goes out once, on a new one, and succeeds. (Had
    // it closed between checkout and write, the refused POST would be sent again on another,
    // `retry_canceled_requests`; that race is too narrow to stage here.)
    let mut request = get(&upstream, "/Users");
    *request.method_mut() = http::Method::POST;
    *request.body_mut() = RequestBody::read(Bytes::from_static(b"{}"));
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("2"));
    assert_eq!(exchange(&upstream, request).await.0, 200);
    let seen = backend.seen();
    let posts: Vec<usize> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.connection)
        .collect();
    assert_eq!(posts, [1], "the POST, once, on a second connection");
}

#[tokio::test]
async fn the_request_goes_to_the_configured_backend_whatever_its_target_says() {
    // T26: a target naming another authority (a bug upstream of `forward`, or a caller's
    // absolute-form target passed through) must not move the key there.
    let backend = Backend::start(Mode::Plain).await;
    let elsewhere = Backend::start(Mode::Plain).await;
    let upstream = backend.upstream(IDLE_TIMEOUT);
    for target in [
        format!("http://{}/steal?x=1", elsewhere.addr),
        format!("https://{}/steal?x=1", elsewhere.addr),
    ] {
        let mut request = Request::new(RequestBody::read(Bytes::new()));
        *request.uri_mut() = target.parse().unwrap();
        assert_eq!(exchange(&upstream, request).await.0, 200);
    }
    assert_eq!(elsewhere.accepted(), 0);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert_eq!(s.authority, backend.addr.to_string());
        assert_eq!(s.target, "/steal?x=1");
        assert_eq!(s.version, Version::HTTP_11);
    }
}
