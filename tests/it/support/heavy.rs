//! An upstream whose responses are too large to sit in socket buffers, and which counts its
//! open connections: a gateway that holds an upstream exchange for a caller who stopped
//! reading shows up here as a connection that stays open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::upstream::BASE_PATH;
use super::wire;

const SMALL: &[u8] =
    br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[]}"#;

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// Answers every request with 200 and `size` bytes of filler (Content-Length), except requests
/// for `…/Groups…`, which get a small ListResponse (a caller's ordinary request).
#[derive(Clone)]
pub struct HeavyUpstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

/// Counts a connection as open for as long as its task runs.
struct Open(Arc<Counters>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HeavyUpstream {
    pub async fn start(size: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind heavy upstream");
        let addr = listener.local_addr().expect("heavy upstream address");
        let counters = Arc::new(Counters::default());
        let body: Arc<[u8]> = vec![b' '; size].into();
        let c = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.open.fetch_add(1, Ordering::SeqCst);
                let open = Open(Arc::clone(&c));
                let body = Arc::clone(&body);
                tokio::spawn(async move {
                    let counters = Arc::clone(&open.0);
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(head)) = wire::read_head(&mut reader).await {
                        let _ = wire::read_body(&mut reader, &head, false).await;
                        counters.requests.fetch_add(1, Ordering::SeqCst);
                        let body: &[u8] = if head.start_line.contains("/Groups") {
                            SMALL
                        } else {
                            &body
                        };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(body).await.is_err()
                        {
                            break;
                        }
                    }
                    drop(open);
                });
            }
        });
        Self { addr, counters }
    }

    /// The base URL to configure as `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// Connections from the gateway that are open now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Polls (bounded) until `pred(open())`; returns whether it held in time.
    pub async fn wait_open(&self, pred: impl Fn(usize) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self.open()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
