//! A fake JWKS endpoint on `127.0.0.1:0`: serves a replaceable key set, counts hits, and can be
//! switched to fail (500), hang, answer garbage, or be hostile (slow, redirecting, huge,
//! truncated, exact bytes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::wire;

/// How the endpoint answers.
#[derive(Clone, Debug)]
pub enum JwksMode {
    /// 200 with the current key set.
    Serve,
    /// This status with a small error body.
    Status(u16),
    /// Accept and read the request, never answer.
    Hang,
    /// 200 `application/json` with a body that is not JSON.
    Garbage,
    /// The current key set, after this delay.
    Delay(Duration),
    /// `302 Found` with this `Location` (a client that follows it fetches from there).
    Redirect(String),
    /// 200 `application/json` with exactly these bytes (huge, malformed, hostile documents).
    Body(Vec<u8>),
    /// A head announcing the current key set's length plus 100, half the body, then close.
    Truncated,
    /// Read the request, then close the connection without answering.
    Close,
}

struct State {
    body: Mutex<String>,
    mode: Mutex<JwksMode>,
    hits: AtomicUsize,
}

/// The running server; lives as long as the test's runtime.
#[derive(Clone)]
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
}

impl JwksServer {
    /// Starts serving `jwks_json`.
    pub async fn start(jwks_json: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let state = Arc::new(State {
            body: Mutex::new(jwks_json),
            mode: Mutex::new(JwksMode::Serve),
            hits: AtomicUsize::new(0),
        });
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, Arc::clone(&accept_state)));
            }
        });
        Self { addr, state }
    }

    /// The URL to configure as `jwt.jwks_url`.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Replaces the served key set (key rotation).
    pub fn set_jwks(&self, jwks_json: String) {
        *self.state.body.lock().expect("JWKS body lock") = jwks_json;
    }

    pub fn set_mode(&self, mode: JwksMode) {
        *self.state.mode.lock().expect("JWKS mode lock") = mode;
    }

    /// Requests received so far (counted when the request head arrives).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Ok(Some(head)) = wire::read_head(&mut reader).await else {
            return;
        };
        let _ = wire::read_body(&mut reader, &head, false).await;
        state.hits.fetch_add(1, Ordering::SeqCst);
        let mode = state.mode.lock().expect("JWKS mode lock").clone();
        let json = vec![("content-type".to_owned(), "application/json".to_owned())];
        let result = match mode {
            JwksMode::Serve => {
                let body = state.body.lock().expect("JWKS body lock").clone();
                wire::write_response(&mut write, 200, &json, body.as_bytes()).await
            }
            JwksMode::Status(status) => {
                wire::write_response(&mut write, status, &json, b"{\"error\":\"down\"}").await
            }
            JwksMode::Hang => {
                // Keep the connection open and silent for the rest of the test.
                std::future::pending::<()>().await;
                Ok(())
            }
            JwksMode::Garbage => {
                wire::write_response(&mut write, 200, &json, b"<html>\x00\xff not a key set").await
            }
            JwksMode::Delay(delay) => {
                tokio::time::sleep(delay).await;
                let body = state.body.lock().expect("JWKS body lock").clone();
                wire::write_response(&mut write, 200, &json, body.as_bytes()).await
            }
            JwksMode::Redirect(location) => {
                let headers = vec![("location".to_owned(), location)];
                wire::write_response(&mut write, 302, &headers, b"").await
            }
            JwksMode::Body(bytes) => wire::write_response(&mut write, 200, &json, &bytes).await,
            JwksMode::Truncated => {
                let body = state.body.lock().expect("JWKS body lock").clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len() + 100
                );
                let _ = write.write_all(head.as_bytes()).await;
                let _ = write.write_all(&body.as_bytes()[..body.len() / 2]).await;
                let _ = write.flush().await;
                return;
            }
            JwksMode::Close => return,
        };
        if result.is_err() {
            return;
        }
    }
}
