//! HTTP/2 toward the gateway (prior knowledge, cleartext): the `h2` crate for well-formed
//! multi-stream exchanges, and a raw frame writer/reader for floods the crate would refuse to
//! send (CONTINUATION, empty DATA, HEADERS+RST_STREAM; threats T34).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{REQUEST_TIMEOUT, Response};

/// An HTTP/2 connection through the `h2` crate; its driver task ends with the connection.
#[derive(Clone)]
pub struct H2 {
    send: h2::client::SendRequest<Bytes>,
}

impl H2 {
    /// Connects with prior knowledge (the gateway's listener speaks both HTTP/1.1 and h2c).
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (send, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send })
    }

    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as the client currently applies it.
    pub fn max_send_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// One request on a new stream: `headers` may repeat names; `trailers`, if any, follow
    /// the body. Bounded by `REQUEST_TIMEOUT`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        trailers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let exchange = async {
            let mut send = self
                .send
                .clone()
                .ready()
                .await
                .map_err(|e| format!("h2 ready: {e}"))?;
            let uri = if path.starts_with('/') {
                format!("http://scimgate.test{path}")
            } else {
                path.to_owned()
            };
            let mut builder = http::Request::builder().method(method).uri(uri);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder
                .body(())
                .map_err(|e| format!("build request: {e}"))?;
            let end_now = body.is_empty() && trailers.is_empty();
            let (response, mut stream) = send
                .send_request(request, end_now)
                .map_err(|e| format!("h2 send_request: {e}"))?;
            if !end_now {
                let no_trailers = trailers.is_empty();
                if !body.is_empty() {
                    stream
                        .send_data(body, no_trailers)
                        .map_err(|e| format!("h2 send_data: {e}"))?;
                }
                if !no_trailers {
                    stream
                        .send_trailers(header_map(trailers)?)
                        .map_err(|e| format!("h2 send_trailers: {e}"))?;
                }
            }
            let response = response.await.map_err(|e| format!("h2 response: {e}"))?;
            let (parts, mut body) = response.into_parts();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: bytes,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("h2 {method} {path}: no response within {REQUEST_TIMEOUT:?}"))?
    }

    /// Opens a stream and resets it at once (Rapid Reset, CVE-2023-44487).
    pub async fn open_and_reset(&self, path: &str, headers: &[(&str, &str)]) -> Result<(), String> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| format!("h2 ready: {e}"))?;
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!("http://scimgate.test{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).map_err(|e| e.to_string())?;
        let (_response, mut stream) = send
            .send_request(request, false)
            .map_err(|e| format!("h2 send_request: {e}"))?;
        stream.send_reset(h2::Reason::CANCEL);
        Ok(())
    }
}

fn header_map(pairs: &[(&str, &str)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        map.append(name, value);
    }
    Ok(map)
}

// === raw frames ===

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload (RFC 9113 §4.1).
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload too long");
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with the given (id, value) pairs.
pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the pattern bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK header block of literal fields without indexing, no Huffman (RFC 7541 §6.2.2).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A raw HTTP/2 connection: preface and an empty SETTINGS already sent.
pub struct RawH2 {
    pub stream: TcpStream,
}

/// A frame as read back.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(PREFACE).await?;
        stream.write_all(&settings(&[])).await?;
        Ok(Self { stream })
    }

    /// Writes bytes (frames); an error means the server closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one frame within `timeout`; `None` on EOF, reset or timeout.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            self.stream.read_exact(&mut head).await.ok()?;
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.ok()?;
            Some(Frame {
                kind: head[3],
                payload,
            })
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }

    /// Reads frames until the connection ends or `timeout` passes; returns them and whether the
    /// server closed the connection.
    pub async fn drain(&mut self, timeout: Duration) -> (Vec<Frame>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return (frames, false);
            }
            match self.read_frame(left).await {
                Some(f) => frames.push(f),
                None => return (frames, tokio::time::Instant::now() < deadline),
            }
        }
    }
}

/// The server's first SETTINGS frame as (id, value) pairs.
pub fn settings_params(frame: &Frame) -> Vec<(u16, u32)> {
    frame
        .payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}
