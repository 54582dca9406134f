//! The attacker listener (threats.md §6): a loopback port that the gateway must never connect
//! to. Tokens point `jku`/`x5u` at it, JWKS and upstream redirects name it, absolute-form targets
//! and `CONNECT` aim at it, and proxy variables in the gateway's environment name it.
//!
//! It counts every accepted connection and, to make following it tempting, answers any request
//! with 200 and a configurable body (by default a JWK Set). On drop it asserts that nothing
//! connected, unless the test is already failing or called `disarm`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::BufReader;
use tokio::net::TcpListener;

use super::wire;

struct State {
    hits: AtomicUsize,
    body: Mutex<Vec<u8>>,
}

/// A listener on `127.0.0.1:0` that must stay untouched.
pub struct Attacker {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Attacker {
    /// Starts the listener; it answers `{"keys":[]}` until `set_body` says otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind attacker listener");
        let addr = listener.local_addr().expect("attacker address");
        let state = Arc::new(State {
            hits: AtomicUsize::new(0),
            body: Mutex::new(br#"{"keys":[]}"#.to_vec()),
        });
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.hits.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, Arc::clone(&accept_state)));
            }
        });
        Self { addr, state }
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What every request is answered with (200, `application/json`).
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        *self.state.body.lock().expect("attacker body lock") = body.into();
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Asserts that nothing connected so far.
    pub fn assert_untouched(&self) {
        assert_eq!(
            self.hits(),
            0,
            "the gateway connected to the attacker listener {}",
            self.addr
        );
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_untouched();
        }
    }
}

async fn answer(stream: tokio::net::TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Ok(Some(head)) = wire::read_head(&mut reader).await {
        let _ = wire::read_body(&mut reader, &head, false).await;
        let body = state.body.lock().expect("attacker body lock").clone();
        let json = vec![("content-type".to_owned(), "application/json".to_owned())];
        if wire::write_response(&mut write, 200, &json, &body)
            .await
            .is_err()
        {
            return;
        }
    }
}
