//! A minimal HTTP/1.1 reader and writer for the fake JWKS server, the recording upstream and the
//! raw test client.
//!
//! Hand-rolled on purpose: the fixtures must see the request exactly as it crossed the wire
//! (header names in their case and order, duplicates, chunked framing, a body cut short), which a
//! real HTTP library normalises away.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Upper bound for one head line; fixtures are not a place to absorb hostile input.
const MAX_LINE: usize = 64 * 1024;

/// A request or response head: the start line and the header fields in wire order.
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Every value of the header `name` (case-insensitive), in wire order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    fn is_chunked(&self) -> bool {
        self.all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Every value of `name` among `headers` (case-insensitive), in order.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A body as received: its bytes, whether framing completed, and trailer fields (chunked only).
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub complete: bool,
    pub trailers: Vec<(String, String)>,
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; `None` at a clean EOF.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "line not terminated",
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads header fields up to the empty line.
async fn read_fields<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r).await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside header section",
            )
        })?;
        if line.is_empty() {
            return Ok(headers);
        }
        match line.split_once(':') {
            Some((name, value)) => headers.push((name.to_owned(), value.trim().to_owned())),
            None => headers.push((line, String::new())),
        }
    }
}

/// Reads a message head; `None` if the peer closed the connection before sending anything.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let start_line = loop {
        match read_line(r).await? {
            None => return Ok(None),
            // RFC 9112 §2.2: ignore at least one empty line before the request line.
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let headers = read_fields(r).await?;
    Ok(Some(Head {
        start_line,
        headers,
    }))
}

/// Reads the body that `head` announces. A request without Content-Length or chunked coding
/// has no body; for a response (`until_eof`) such a body runs to the end of the connection.
/// A connection that ends early yields what arrived, with `complete == false`.
pub async fn read_body<R: AsyncBufRead + Unpin>(r: &mut R, head: &Head, until_eof: bool) -> Body {
    let mut body = Body::default();
    if head.is_chunked() {
        body.complete = read_chunked(r, &mut body).await.unwrap_or(false);
    } else if let Some(len) = head.content_length() {
        let mut chunk = vec![0u8; 64 * 1024];
        while body.bytes.len() < len {
            let want = chunk.len().min(len - body.bytes.len());
            match r.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return body,
                Ok(n) => body.bytes.extend_from_slice(&chunk[..n]),
            }
        }
        body.complete = true;
    } else if until_eof {
        body.complete = r.read_to_end(&mut body.bytes).await.is_ok();
    } else {
        body.complete = true;
    }
    body
}

async fn read_chunked<R: AsyncBufRead + Unpin>(
    r: &mut R,
    body: &mut Body,
) -> std::io::Result<bool> {
    loop {
        let Some(line) = read_line(r).await? else {
            return Ok(false);
        };
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Ok(false);
        };
        if size == 0 {
            body.trailers = read_fields(r).await?;
            return Ok(true);
        }
        let start = body.bytes.len();
        body.bytes.resize(start + size, 0);
        if r.read_exact(&mut body.bytes[start..]).await.is_err() {
            body.bytes.truncate(start);
            return Ok(false);
        }
        match read_line(r).await? {
            Some(l) if l.is_empty() => {}
            _ => return Ok(false),
        }
    }
}

/// Writes a complete response with a Content-Length.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A response read by the raw client.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: Head,
    pub body: Body,
}

/// Sends `request` bytes exactly as given on a fresh connection and reads one response
/// (bounded by `timeout`). The request should carry `Connection: close` if its body framing
/// is not otherwise clear.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        let request = request.to_vec();
        // Write concurrently with reading: the server may answer before it has read everything.
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&request).await;
            let _ = write.flush().await;
            write
        });
        let mut reader = tokio::io::BufReader::new(read);
        let head = loop {
            let head = read_head(&mut reader).await?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response")
            })?;
            // Skip interim 1xx responses.
            if !head
                .start_line
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .starts_with('1')
            {
                break head;
            }
        };
        let status = head
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!("bad status line {:?}", head.start_line))
            })?;
        let body = read_body(&mut reader, &head, true).await;
        writer.abort();
        Ok(RawResponse { status, head, body })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "raw exchange timed out"))?
}

/// Reads one response (skipping interim 1xx) from `reader`; `None` on a clean EOF before it.
pub async fn read_response<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<RawResponse>> {
    let head = loop {
        let Some(head) = read_head(reader).await? else {
            return Ok(None);
        };
        if !head
            .start_line
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .starts_with('1')
        {
            break head;
        }
    };
    let status = head
        .start_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {:?}", head.start_line)))?;
    let body = read_body(reader, &head, true).await;
    Ok(Some(RawResponse { status, head, body }))
}

/// What `exchange_all` saw: every response in order, and whether the server closed the
/// connection (EOF or reset) before the deadline.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub responses: Vec<RawResponse>,
    pub closed: bool,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Writes `request` (which may hold several pipelined or smuggled messages) on a fresh
/// connection and reads responses until the server closes the connection or `timeout` passes.
/// Responses are read by their own framing, so every status the server sent is seen.
pub async fn exchange_all(
    addr: std::net::SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<Exchange> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        let _ = write.flush().await;
        // Keep the write side open: a half-close would let the server drop pending work.
        std::future::pending::<()>().await;
        drop(write);
    });
    let exchange = read_until_closed(&mut tokio::io::BufReader::new(read), timeout).await;
    writer.abort();
    Ok(exchange)
}

/// Reads responses by their own framing until the server closes the connection, a body
/// breaks off, or `timeout` passes (then `closed` is false).
pub async fn read_until_closed<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> Exchange {
    let mut responses = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let closed = loop {
        match tokio::time::timeout_at(deadline, read_response(reader)).await {
            Err(_) => break false,
            Ok(Ok(Some(r))) => {
                let incomplete = !r.body.complete;
                responses.push(r);
                if incomplete {
                    break true;
                }
            }
            Ok(Ok(None) | Err(_)) => break true,
        }
    };
    Exchange { responses, closed }
}

/// One client connection driven step by step: write, read a response, check for close.
pub struct RawConn {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawConn {
    pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: tokio::io::BufReader::new(read),
            writer,
        })
    }

    /// Writes `bytes` as they are; an error means the server already closed.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Reads one response within `timeout`.
    pub async fn response(&mut self, timeout: Duration) -> std::io::Result<RawResponse> {
        tokio::time::timeout(timeout, read_response(&mut self.reader))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"))
    }

    /// Reads the next response head as it is, interim 1xx included (the body is not read).
    pub async fn head(&mut self, timeout: Duration) -> std::io::Result<Head> {
        tokio::time::timeout(timeout, read_head(&mut self.reader))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response head"))??
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"))
    }

    /// Waits up to `timeout` for the server to close the connection; returns whether it did.
    /// Bytes that arrive meanwhile are discarded.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.reader.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}
