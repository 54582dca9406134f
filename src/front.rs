//! The HTTP/1 front of the proxy listener: every request head is read here before hyper reads
//! it, so that what real SCIM clients send is accepted, and every refusal is a SCIM error.
//!
//! hyper answers a head it cannot take (a bad request line, a head over its buffer, a raw `"`
//! in the query, conflicting framing) with a bare status and no body, and offers no hook to do
//! otherwise. So each connection's bytes pass through [`FrontIo`] on their way to hyper:
//!
//! - each request head is read with httparse and checked as hyper would check it (`head.rs`);
//!   the query bytes the `http` crate refuses but clients send raw are percent-encoded;
//! - each body is followed by its framing, exactly as hyper's decoder follows it
//!   (`framing.rs`), so the front knows where the next head starts; where it would read the
//!   stream differently from hyper, it stops the stream instead;
//! - a refused head, and everything after it, never reaches hyper. hyper is handed a stand-in
//!   request instead, which the connection's service ([`FrontService`]) answers with the SCIM
//!   error, its access line and its metric: in order after the responses to the requests
//!   before it, and with `Connection: close`;
//! - HTTP/2 (the preface on a plaintext connection, or ALPN) passes untouched.
//!
//! hyper's `header_read_timeout` only runs once hyper-util's protocol detection has read the
//! first bytes, which the front holds back until the first head is complete: so the front
//! times the first head itself, with the same limit, and ends the stream when it passes (as
//! hyper does, without a response).
//!
//! Bytes are read into hyper's own buffer and checked there: a body is never copied, and a head
//! only when it arrived in pieces or had to be rewritten.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::future::{self, Either, Ready};
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::{HeadError, ProxyError};
use crate::headers;
use crate::metrics::Metrics;
use crate::response::ResponseBody;
use crate::telemetry::AccessRecord;

#[cfg(test)]
mod differential;
mod framing;
mod head;

use framing::{Framer, Scan};
pub(crate) use head::MAX_HEAD_BYTES;

/// What hyper reads in place of a refused head: the connection's last request, answered by
/// [`FrontService`] without reaching the proxy.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";
/// Bytes read at a time while a head is incomplete.
const READ_CHUNK: usize = 8 * 1024;

/// Puts the front before one accepted connection: its byte stream and its service. The first
/// request head must be complete within `header_read_timeout` (`server.header_read_timeout`).
/// `http2`: TLS ALPN chose HTTP/2, so every byte passes untouched.
pub(crate) fn wrap<T, S>(
    io: T,
    service: S,
    metrics: &Arc<Metrics>,
    peer: SocketAddr,
    header_read_timeout: Duration,
    http2: bool,
) -> (FrontIo<T>, FrontService<S>) {
    let shared = Arc::new(Shared::default());
    let io = FrontIo {
        io,
        framer: Framer::new(http2),
        held: Held::default(),
        ready: 0,
        incomplete: false,
        stop: Stop::No,
        first_head: FirstHead::Due(tokio::time::Instant::now() + header_read_timeout),
        shared: Arc::clone(&shared),
    };
    let service = FrontService {
        inner: service,
        shared,
        metrics: Arc::clone(metrics),
        peer,
    };
    (io, service)
}

/// What the two halves of one connection's front share.
#[derive(Default)]
struct Shared {
    /// The head that was refused, if one was: the connection's last.
    refusal: OnceLock<Refusal>,
    /// Requests hyper has handed to the service so far.
    calls: AtomicU64,
}

/// A refused head, waiting for hyper to reach its stand-in.
struct Refusal {
    /// The stand-in's place among the requests of the connection (0 for the first).
    index: u64,
    error: HeadError,
    described: head::Described,
    at: Instant,
}

/// The connection's byte stream as hyper reads it (see the module docs).
pub(crate) struct FrontIo<T> {
    io: T,
    framer: Framer,
    /// Bytes read but not yet handed to hyper: the first `ready` are checked and go next; the
    /// rest are not checked yet (an incomplete head, or what followed a rewritten head).
    held: Held,
    ready: usize,
    /// The unchecked bytes held are an incomplete head: check again once more have arrived.
    incomplete: bool,
    /// What reading gives once the held bytes are handed over.
    stop: Stop,
    first_head: FirstHead,
    shared: Arc<Shared>,
}

/// The deadline of the first request head. The timer is only created once the front has to
/// wait for more of it: a head that arrives whole costs no timer.
enum FirstHead {
    Due(tokio::time::Instant),
    Armed(Pin<Box<Sleep>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Read on.
    No,
    /// The peer closed: end of stream.
    Eof,
    /// A head was refused and its stand-in handed over: nothing more, ever. hyper answers the
    /// stand-in and closes without reading again.
    Stall,
    /// A chunked body broke off where hyper's decoder would fail too: a read error.
    Broken,
}

/// What to do with the bytes after the ones that pass as they were read.
enum Rest {
    /// An incomplete head: keep it, unchecked, until more bytes arrive.
    Hold,
    /// A head of `len` bytes that passes as `head`.
    Replace {
        len: usize,
        head: Vec<u8>,
    },
    Refuse(Refusal),
    Broken,
}

/// Scans `input` from its start for as long as its bytes pass as they are: how many do, and
/// what to do with the rest (`None`: every byte passes).
fn check(framer: &mut Framer, input: &[u8]) -> (usize, Option<Rest>) {
    let mut passed = 0;
    while passed < input.len() {
        let rest = match framer.scan(&input[passed..]) {
            Scan::Pass(n) if n > 0 => {
                passed += n;
                continue;
            }
            // Never returned for input that is not empty; stopping is the safe reading.
            Scan::Pass(_) | Scan::Broken => Rest::Broken,
            Scan::Partial => Rest::Hold,
            Scan::Rewrite { len, head } => Rest::Replace { len, head },
            Scan::Refuse(error) => Rest::Refuse(Refusal {
                index: framer.heads(),
                error,
                described: head::describe(&input[passed..]),
                at: Instant::now(),
            }),
        };
        return (passed, Some(rest));
    }
    (passed, None)
}

impl<T> FrontIo<T> {
    /// Acts on the check of bytes just read into hyper's buffer; returns how many of them stay
    /// there. The others move to `held`, rewritten, or are dropped.
    fn check_in_place(&mut self, new: &[u8]) -> usize {
        let (passed, rest) = check(&mut self.framer, new);
        match rest {
            None => {}
            Some(Rest::Hold) => {
                self.held.push(&new[passed..]);
                self.incomplete = true;
            }
            Some(Rest::Replace { len, head }) => {
                self.held.push(&head);
                self.ready = head.len();
                self.held.push(&new[passed + len..]);
            }
            Some(Rest::Refuse(refusal)) => self.refuse(refusal),
            Some(Rest::Broken) => self.stop = Stop::Broken,
        }
        passed
    }

    /// Checks the unchecked bytes held (`ready` is 0).
    fn check_held(&mut self) {
        let (passed, rest) = check(&mut self.framer, self.held.bytes());
        self.ready = passed;
        match rest {
            None => {}
            Some(Rest::Hold) => self.incomplete = true,
            Some(Rest::Replace { len, head }) => {
                self.held.replace(passed, len, &head);
                self.ready += head.len();
            }
            Some(Rest::Refuse(refusal)) => {
                self.held.truncate(passed);
                self.refuse(refusal);
            }
            Some(Rest::Broken) => {
                self.held.truncate(passed);
                self.stop = Stop::Broken;
            }
        }
    }

    /// Queues the stand-in after the bytes that passed, for the service to answer.
    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(error = %refusal.error, "request head refused by the HTTP/1 front");
        // The first refusal is the last request: nothing is read after it.
        let _ = self.shared.refusal.set(refusal);
        self.held.push(STAND_IN);
        self.ready = self.held.len();
        self.incomplete = false;
        self.stop = Stop::Stall;
    }
}

impl<T: AsyncRead + Unpin> FrontIo<T> {
    /// Reads more of an incomplete head into `held`.
    fn read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = ReadBuf::new(self.held.spare(READ_CHUNK));
        if Pin::new(&mut self.io).poll_read(cx, &mut buf)?.is_pending() {
            return self.wait(cx);
        }
        let n = buf.filled().len();
        if n == 0 {
            // The peer closed inside a head: none of it goes to hyper, which sees a clean end.
            self.held.clear();
            self.incomplete = false;
            self.stop = Stop::Eof;
            return Poll::Ready(Ok(()));
        }
        let seen = self.held.len().saturating_sub(3);
        self.held.grow(n);
        // As hyper does: parse an incomplete head again only once an empty line may have
        // arrived (or the size limit is reached), so a head sent a byte at a time costs linear
        // time, not quadratic.
        self.incomplete = self.framer.at_head()
            && self.held.len() < MAX_HEAD_BYTES
            && !ends_head(&self.held.bytes()[seen..]);
        Poll::Ready(Ok(()))
    }
}

impl<T> FrontIo<T> {
    /// The connection has nothing to read for now. Until the first head has passed, hyper
    /// is not timing it (see the module docs): when its deadline passes, the stream ends.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framer.heads() > 0 || self.framer.is_tunnel() {
            return Poll::Pending;
        }
        if let FirstHead::Due(at) = self.first_head {
            self.first_head = FirstHead::Armed(Box::pin(tokio::time::sleep_until(at)));
        }
        let FirstHead::Armed(timer) = &mut self.first_head else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::debug!("no complete request head within server.header_read_timeout");
        self.held.clear();
        self.ready = 0;
        self.incomplete = false;
        self.stop = Stop::Eof;
        Poll::Ready(Ok(()))
    }
}

/// Whether `bytes` hold an empty line (`\n\n` or `\n\r\n`), as every complete head does.
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

impl<T: AsyncRead + Unpin> AsyncRead for FrontIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready > 0 {
                let n = this.ready.min(dst.remaining());
                dst.put_slice(&this.held.bytes()[..n]);
                this.held.consume(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.stop {
                Stop::No => {}
                Stop::Eof => return Poll::Ready(Ok(())),
                Stop::Stall => return Poll::Pending,
                Stop::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )));
                }
            }
            if !this.held.is_empty() {
                if this.incomplete {
                    ready!(this.read_more(cx))?;
                } else {
                    this.check_held();
                }
                continue;
            }
            if this.framer.is_tunnel() {
                return Pin::new(&mut this.io).poll_read(cx, dst);
            }
            // Nothing held: read straight into hyper's buffer and check the bytes there.
            let before = dst.filled().len();
            if Pin::new(&mut this.io).poll_read(cx, dst)?.is_pending() {
                ready!(this.wait(cx))?;
                continue;
            }
            if dst.filled().len() == before {
                this.stop = Stop::Eof;
                continue;
            }
            let passed = this.check_in_place(&dst.filled()[before..]);
            dst.set_filled(before + passed);
            if passed > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrontIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Bytes held back from hyper: `buf[start..end]`. The buffer is allocated only when a head
/// arrives in pieces or is rewritten, and freed again when it grew past a few reads.
#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Held {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        if self.buf.len() > 2 * READ_CHUNK {
            self.buf = Vec::new();
        }
    }

    fn truncate(&mut self, len: usize) {
        self.end = self.start + len.min(self.len());
    }

    /// At least `n` writable bytes after the held ones; `grow` then counts those written.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.buf.len() - self.end < n && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
        &mut self.buf[self.end..]
    }

    fn grow(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    fn push(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.grow(bytes.len());
    }

    /// Replaces the `len` held bytes at `at` with `with`.
    fn replace(&mut self, at: usize, len: usize, with: &[u8]) {
        let held = self.bytes();
        let mut out = Vec::with_capacity(held.len() - len + with.len());
        out.extend_from_slice(&held[..at]);
        out.extend_from_slice(with);
        out.extend_from_slice(&held[at + len..]);
        self.end = out.len();
        self.start = 0;
        self.buf = out;
    }
}

/// The connection's service: the proxy's, except for the stand-in of a refused head, which is
/// answered here (see the module docs).
pub(crate) struct FrontService<S> {
    inner: S,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
}

impl<S> Service<Request<Incoming>> for FrontService<S>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<ResponseBody>, Infallible>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // hyper calls the service once per head it parsed, in order, and the front hands it
        // exactly the heads it passed: the stand-in's call is the one at the refusal's index.
        let index = self.shared.calls.fetch_add(1, Ordering::Relaxed);
        match self.shared.refusal.get() {
            Some(refusal) if refusal.index == index => {
                Either::Right(future::ready(Ok(self.answer(refusal))))
            }
            _ => Either::Left(self.inner.call(req)),
        }
    }
}

impl<S> FrontService<S> {
    /// The SCIM error for a refused head, with its metric and access line. The access line
    /// names what could be read of the request line: method `-` and an empty path when nothing
    /// could.
    fn answer(&self, refusal: &Refusal) -> Response<ResponseBody> {
        let request_id = refusal
            .described
            .request_id
            .clone()
            .unwrap_or_else(headers::fresh_request_id);
        let mut line = Request::new(());
        *line.method_mut() = refusal.described.method.clone().unwrap_or_else(|| {
            Method::from_bytes(b"-").expect("`-` is an HTTP token, so a valid method")
        });
        *line.uri_mut() = refusal
            .described
            .target
            .clone()
            .unwrap_or_else(|| Uri::from_static("-"));
        let mut record = AccessRecord::new(&line, &request_id, self.peer);
        let error = ProxyError::Head(refusal.error);
        record.fail(&error);
        let (outcome, mut response) = error.respond();
        let fields = response.headers_mut();
        fields.insert(headers::REQUEST_ID, request_id);
        fields.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        let elapsed = refusal.at.elapsed();
        self.metrics.request(outcome, elapsed.as_secs_f64());
        record.finish(outcome, response.status(), elapsed);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feeds `input` through a `FrontIo` in writes of `step` bytes, reading with a buffer of
    /// `read` bytes; returns what hyper would have read, and the error that ended it, if any.
    async fn through(input: &[u8], step: usize, read: usize) -> (Vec<u8>, Option<io::Error>) {
        let (client, server) = tokio::io::duplex(64);
        let metrics = Arc::new(Metrics::new().unwrap());
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let (mut io, _service) = wrap(server, (), &metrics, peer, Duration::from_secs(5), false);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            let mut client = client;
            for piece in input.chunks(step.max(1)) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut out = Vec::new();
        let mut buf = vec![0u8; read];
        let error = loop {
            if io.stop == Stop::Stall && io.ready == 0 {
                // After a refusal's stand-in, reading never completes.
                assert!(io.read(&mut buf).now_or_never().is_none());
                break None;
            }
            match io.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e),
            }
        };
        drop(writer);
        (out, error)
    }

    #[tokio::test]
    async fn what_hyper_reads_does_not_depend_on_how_the_bytes_arrive() {
        let input = "POST /Users HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\
             GET /Users?filter=userName+eq+\"a\" HTTP/1.1\r\n\r\n\
             POST /Users HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n\
             GET /Users?x=1 HTTP/1.1\r\n\r\n";
        let expected = input.replace("+\"a\"", "+%22a%22");
        for (step, read) in [(input.len(), 8192), (1, 8192), (1, 1), (5, 3), (64, 7)] {
            let (out, error) = through(input.as_bytes(), step, read).await;
            assert!(error.is_none(), "{error:?}");
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{step}/{read}");
        }
    }

    #[tokio::test]
    async fn a_refused_head_is_replaced_by_the_stand_in_and_nothing_after_it() {
        let first = "GET /Users HTTP/1.1\r\n\r\n";
        let input = format!(
            "{first}GET /Users HTTP/1.1\r\nX: a\r\n b\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
        );
        for (step, read) in [(input.len(), 8192), (1, 1), (7, 5)] {
            let (out, error) = through(input.as_bytes(), step, read).await;
            assert!(error.is_none());
            let mut expected = first.as_bytes().to_vec();
            expected.extend_from_slice(STAND_IN);
            assert_eq!(out, expected, "{step}/{read}");
        }
    }

    #[tokio::test]
    async fn a_broken_chunked_body_ends_in_a_read_error() {
        let input =
            "POST /Users HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}x\r\n0\r\n\r\n";
        for (step, read) in [(input.len(), 8192), (1, 1)] {
            let (out, error) = through(input.as_bytes(), step, read).await;
            assert_eq!(out, &input.as_bytes()[..input.find('x').unwrap()]);
            assert_eq!(error.unwrap().kind(), io::ErrorKind::InvalidData);
        }
    }

    #[tokio::test]
    async fn a_head_cut_off_by_the_peer_never_reaches_hyper() {
        let input = "GET /Users HTTP/1.1\r\n\r\nGET /Users HTTP/1.1\r\nHost:";
        let (out, error) = through(input.as_bytes(), 3, 8192).await;
        assert!(error.is_none());
        assert_eq!(out, b"GET /Users HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn an_empty_line_is_found_across_read_boundaries() {
        assert!(ends_head(b"a\r\n\r\n"));
        assert!(ends_head(b"\n\n"));
        assert!(ends_head(b"\n\r\n"));
        assert!(!ends_head(b"a\r\nb\r\n\r"));
        assert!(!ends_head(b"\r\n"));
    }
}
