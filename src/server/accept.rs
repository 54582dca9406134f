//! What happens to a connection before hyper sees it: taking it off the listen queue without
//! spinning when that fails, and telling HTTP/1 from the HTTP/2 preface within a deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// First pause after a failed accept; it doubles with each failure in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause: how late a listener notices that file descriptors are free again.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Paces `accept` after failures. EMFILE, ENFILE and ENOBUFS leave the connection in the listen
/// queue, so the listener stays readable and an immediate retry fails again: without a pause the
/// loop spins at full speed for as long as the shortage lasts.
pub(crate) struct Backoff {
    listener: &'static str,
    next: Duration,
    failing: bool,
}

impl Backoff {
    pub(crate) fn new(listener: &'static str) -> Self {
        Self {
            listener,
            next: FIRST_PAUSE,
            failing: false,
        }
    }

    /// Accepts the next connection, pausing after each failure (5 ms doubling up to 1 s).
    pub(crate) async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    if self.failing {
                        tracing::info!(listener = self.listener, "accepting connections again");
                    }
                    self.failing = false;
                    self.next = FIRST_PAUSE;
                    return accepted;
                }
                // The peer gave up while queued: that connection is gone, the next may be fine.
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(listener = self.listener, error = %e, "accept failed; backing off until it succeeds");
                    }
                    self.failing = true;
                    tokio::time::sleep(self.next).await;
                    self.next = (self.next * 2).min(MAX_PAUSE);
                }
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The HTTP version a plaintext connection speaks, known from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Waits, at most `limit`, until the client has sent enough to tell HTTP/1 from the HTTP/2
/// preface. `None`: it sent nothing, only part of the preface, or closed. hyper's own timeouts
/// only start once a protocol is chosen, so a silent connection would otherwise stay open.
pub(crate) async fn sniff(stream: &TcpStream, limit: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; PREFACE.len()];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && !PREFACE.starts_with(&buf[..n]) => return Some(Protocol::Http1),
            Ok(Ok(n)) if n == PREFACE.len() => return Some(Protocol::Http2),
            // A partial preface: peek returns at once with the same bytes, so pace the retries.
            Ok(Ok(n)) if n > 0 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Ok(_) | Err(_)) | Err(_) => return None,
        }
    }
}
