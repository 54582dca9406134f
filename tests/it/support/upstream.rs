//! A recording upstream on `127.0.0.1:0`: keeps every request exactly as received (method,
//! target, header fields in wire order with duplicates, body, trailers), answers 200 JSON by
//! default, and can answer another status or delay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::TcpListener;

use super::wire;

/// The path prefix of the upstream base URL the gateway is configured with.
pub const BASE_PATH: &str = "/scim/v2";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target (path and query), as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body's framing completed (false: the connection ended mid-body).
    pub complete: bool,
    pub trailers: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of `name` (case-insensitive), in wire order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    /// The only value of `name`; panics if it is missing or repeated.
    pub fn header_one(&self, name: &str) -> &str {
        let all = self.header_all(name);
        assert_eq!(
            all.len(),
            1,
            "upstream expected exactly one {name:?} header, got {all:?}; all headers: {:?}",
            self.header_names()
        );
        all[0]
    }

    /// Header names as received.
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Whether any header's name equals `name` after lowercasing and mapping `_` to `-`.
    pub fn has_header_like(&self, name: &str) -> bool {
        let want = normalize(name);
        self.headers.iter().any(|(n, _)| normalize(n) == want)
    }
}

fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// How the upstream answers.
#[derive(Clone, Debug)]
pub struct Behavior {
    pub status: u16,
    pub delay: Duration,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            status: 200,
            delay: Duration::ZERO,
            body: br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#.to_vec(),
            headers: vec![("content-type".into(), "application/scim+json".into())],
        }
    }
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    hits: AtomicUsize,
    behavior: Mutex<Behavior>,
}

/// The running upstream; lives as long as the test's runtime.
#[derive(Clone)]
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            hits: AtomicUsize::new(0),
            behavior: Mutex::new(Behavior::default()),
        });
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, Arc::clone(&accept_state)));
            }
        });
        Self { addr, state }
    }

    /// The base URL to configure as `upstream.url` (with a base path, to check path joining).
    pub fn url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// `host:port`, what the gateway must send as `Host`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// A base URL on a loopback port where nothing listens.
    pub fn down_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
        let addr = listener.local_addr().expect("probe address");
        drop(listener);
        format!("http://{addr}{BASE_PATH}")
    }

    pub fn set_status(&self, status: u16) {
        self.state.behavior.lock().expect("behavior lock").status = status;
    }

    /// Waits this long after reading a request before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.state.behavior.lock().expect("behavior lock").delay = delay;
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().expect("behavior lock") = behavior;
    }

    /// Request heads received so far (counted as soon as a head arrives, before its body).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests recorded so far (recorded once the body ended or the connection broke).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// The only recorded request; panics if there is not exactly one.
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(
            all.len(),
            1,
            "expected exactly one upstream request, got {}",
            all.len()
        );
        all.into_iter().next().expect("one request")
    }

    /// Polls (bounded) until every head counted by `hits()` is also recorded: a request whose
    /// body broke off is recorded only when the gateway drops that upstream connection.
    pub async fn settled(&self) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all = self.requests();
            if all.len() >= self.hits() {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "upstream counted {} head(s) but recorded {}",
                self.hits(),
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls (bounded) until `hits() >= n`.
    pub async fn wait_for_hits(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.hits() < n {
            assert!(
                Instant::now() < deadline,
                "upstream saw {} request(s), waited for {n}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Ok(Some(head)) = wire::read_head(&mut reader).await else {
            return;
        };
        state.hits.fetch_add(1, Ordering::SeqCst);
        let body = wire::read_body(&mut reader, &head, false).await;
        let mut parts = head.start_line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let complete = body.complete;
        state
            .requests
            .lock()
            .expect("requests lock")
            .push(Recorded {
                method,
                target,
                headers: head.headers,
                body: body.bytes,
                complete,
                trailers: body.trailers,
            });
        if !complete {
            return;
        }
        let behavior = state.behavior.lock().expect("behavior lock").clone();
        if !behavior.delay.is_zero() {
            tokio::time::sleep(behavior.delay).await;
        }
        if wire::write_response(
            &mut write,
            behavior.status,
            &behavior.headers,
            &behavior.body,
        )
        .await
        .is_err()
        {
            return;
        }
    }
}
