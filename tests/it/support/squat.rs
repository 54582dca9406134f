//! Connections that take a slot and do no work: silent TCP, an HTTP/2 preface with an empty
//! SETTINGS frame and nothing after, and an HTTP/2 caller that opens a stream with a zero
//! flow-control window and so never lets the response body through. Each is watched from
//! outside until the server closes it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h2client::{self, END_HEADERS, END_STREAM, HEADERS, PREFACE};

/// SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 §6.5.2).
const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// What kind of squatter to open.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Connects and sends nothing.
    Silent,
    /// The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    Preface,
    /// HTTP/2 with a stream window of 0, one `GET path` with this bearer token; it reads the
    /// socket (frames are counted) but never sends WINDOW_UPDATE.
    ZeroWindow { path: String, token: String },
}

/// Opens one connection of `kind` to `addr`.
pub async fn open(addr: SocketAddr, kind: &Kind) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    match kind {
        Kind::Silent => {}
        Kind::Preface => {
            stream.write_all(PREFACE).await?;
            stream.write_all(&h2client::settings(&[])).await?;
        }
        Kind::ZeroWindow { path, token } => {
            let mut out = PREFACE.to_vec();
            out.extend(h2client::settings(&[(INITIAL_WINDOW_SIZE, 0)]));
            let auth = format!("Bearer {token}");
            let block = h2client::header_block(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "gw"),
                ("authorization", &auth),
            ]);
            out.extend(h2client::frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                1,
                &block,
            ));
            stream.write_all(&out).await?;
        }
    }
    Ok(stream)
}

/// What a squatter saw until the server closed it (or the watch ended).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// HTTP/2 frame types received, in order (empty for a connection that got raw bytes only).
    pub frames: Vec<u8>,
    /// Bytes of DATA payload received.
    pub data: usize,
    /// Raw bytes received.
    pub bytes: usize,
    /// When the server closed the connection.
    pub closed_at: Option<Instant>,
}

impl Seen {
    pub fn saw(&self, kind: u8) -> bool {
        self.frames.contains(&kind)
    }
}

/// Reads until the server closes the connection or `until` passes. With `h2`, the bytes after
/// the (server-sent) start are parsed as frames.
pub async fn watch(mut stream: TcpStream, h2: bool, until: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return seen,
            Ok(Ok(0) | Err(_)) => {
                seen.closed_at = Some(Instant::now());
                return seen;
            }
            Ok(Ok(n)) => {
                seen.bytes += n;
                if h2 {
                    pending.extend_from_slice(&buf[..n]);
                    parse_frames(&mut pending, &mut seen);
                }
            }
        }
    }
}

fn parse_frames(pending: &mut Vec<u8>, seen: &mut Seen) {
    loop {
        if pending.len() < 9 {
            return;
        }
        let len = (usize::from(pending[0]) << 16)
            | (usize::from(pending[1]) << 8)
            | usize::from(pending[2]);
        if pending.len() < 9 + len {
            return;
        }
        let kind = pending[3];
        if kind == h2client::DATA {
            seen.data += len;
        }
        seen.frames.push(kind);
        pending.drain(..9 + len);
    }
}

/// The default bound for a squatter watch in tests.
pub const WATCH: Duration = Duration::from_secs(15);
