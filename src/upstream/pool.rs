//! The upstream connection pool: keep-alive HTTP/1.1 connections, or one shared HTTP/2
//! connection when TLS ALPN chose `h2`, for the single backend an `Upstream` talks to.
//!
//! hyper's connection API does the HTTP; this file only decides which connection a request
//! rides. It replaces hyper-util's general client, whose per-request costs (a pool keyed by
//! scheme and authority, connect-future parts cloned for every request, a boxed response
//! future, a task spawned per response to return the connection) measured 7,100 more
//! instructions per request on the benchmark (+13 %; bench/README.md). Each connection keeps
//! its own task: driving it from the request instead measured slower.
//!
//! An HTTP/1.1 connection goes back to the idle list when its response body has been read to
//! the end ([`UpstreamBody`]); a body dropped early takes its connection with it, which hyper
//! then closes. A request that a connection refused before writing a byte (it had closed
//! while idle) is retried on a fresh connection: nothing reached the upstream, so any method
//! may be retried. Idle connections are closed once `idle_timeout` old, by a reaper task that
//! runs while any are idle. Only one connection at a time does the HTTP/2 handshake: until ALPN
//! has answered, concurrent first requests each dial, and those that learn `h2` while another
//! connection shakes hands wait for it and close their own.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_service::Service;

use super::UpstreamError;
use crate::body::RequestBody;
use crate::text::error_chain;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type H2Sender = http2::SendRequest<RequestBody>;

/// Idle HTTP/1.1 connections kept per upstream; beyond this a finished connection is closed.
const MAX_IDLE: usize = 256;
/// HTTP/1.1 read buffer, which bounds both the response head (a larger one fails as the
/// upstream being unavailable, like nginx's default `proxy_buffer_size`) and each read of the
/// body. hyper's default grows reads to 400 KiB; a response the caller is not reading holds at
/// most two reads (one queued for the caller, one in the buffer), so this is what a stalled
/// caller pins per upstream exchange until its deadline.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Connections to one backend.
pub(super) struct Pool {
    connector: Connector,
    /// `scheme://authority/`: what the connector dials.
    dial: Uri,
    shared: Arc<Shared>,
}

struct Shared {
    idle: Mutex<IdleList>,
    /// The multiplexed connection, once ALPN has chosen HTTP/2.
    h2: Mutex<H2>,
    /// An idle connection this old is closed instead of reused.
    idle_timeout: Duration,
}

#[derive(Default)]
struct IdleList {
    /// Most recently used last, so the warmest connection is reused first and the stale ones
    /// collect at the front, where check-in and the reaper trim them.
    conns: Vec<Idle>,
    /// Whether the reaper task runs: from the first idle connection (or HTTP/2 connection)
    /// until none is left. Read and written under this lock only.
    reaper: bool,
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

enum H2 {
    Absent,
    /// One connection is in its HTTP/2 handshake; these requests wait for its sender.
    Handshaking(Vec<oneshot::Sender<H2Sender>>),
    /// `used`: when a request last took it, for the reaper.
    Ready {
        sender: H2Sender,
        used: Instant,
    },
}

/// The response body from the upstream. Reading it to the end returns its HTTP/1.1 connection
/// to the pool.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

/// An HTTP/1.1 connection on loan to one response.
struct Checkin {
    sender: http1::SendRequest<RequestBody>,
    shared: Arc<Shared>,
}

/// A connection ready for one request.
enum Conn {
    H1(http1::SendRequest<RequestBody>),
    H2(H2Sender),
}

impl Pool {
    pub(super) fn new(
        connector: Connector,
        scheme: Scheme,
        authority: Authority,
        idle_timeout: Duration,
    ) -> Self {
        let dial = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Self {
            connector,
            dial,
            shared: Arc::new(Shared {
                idle: Mutex::default(),
                h2: Mutex::new(H2::Absent),
                idle_timeout,
            }),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) on a pooled or new connection. `sent`
    /// is the caller's clock reading, taken just before: idle ages at checkout are measured
    /// against it rather than reading the clock again.
    pub(super) async fn send(
        &self,
        mut request: Request<RequestBody>,
        sent: Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        loop {
            // Dialling is boxed: its future (TCP, TLS, handshake) is large and seldom runs, and
            // inline it would enlarge every request's future, whose space hyper holds for
            // every open connection.
            let (conn, fresh) = match self.shared.checkout(sent).await {
                Some(conn) => (conn, false),
                None => (Box::pin(self.connect()).await?, true),
            };
            let refused = match conn {
                Conn::H2(mut sender) => {
                    self.absolute_form(&mut request);
                    return match sender.send_request(request).await {
                        Ok(response) => Ok(response.map(|inner| UpstreamBody {
                            inner,
                            checkin: None,
                        })),
                        Err(e) => Err(upstream_error(&e)),
                    };
                }
                Conn::H1(mut sender) => {
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(self.lend(sender, response)),
                        Err(mut e) => match e.take_message() {
                            // Not written: the connection closed while idle. Only a reused
                            // connection earns a retry; a fresh one failing is the answer.
                            Some(unsent) if !fresh => unsent,
                            _ => return Err(upstream_error(e.error())),
                        },
                    }
                }
            };
            request = refused;
        }
    }

    /// Ties the connection to the response body, or returns it at once when there is no body.
    fn lend(
        &self,
        sender: http1::SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<UpstreamBody> {
        let checkin = Checkin {
            sender,
            shared: Arc::clone(&self.shared),
        };
        response.map(|inner| {
            let checkin = if inner.is_end_stream() {
                checkin.release();
                None
            } else {
                Some(checkin)
            };
            UpstreamBody { inner, checkin }
        })
    }

    /// HTTP/2 carries the scheme and authority as pseudo-headers (RFC 9113 §8.3.1), which hyper
    /// takes from an absolute target: the configured ones, as dialled. HTTP/1.1 requests keep
    /// the origin form they came in (RFC 9112 §3.2.1), with the authority in `Host`.
    fn absolute_form(&self, request: &mut Request<RequestBody>) {
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.dial.scheme().cloned();
        parts.authority = self.dial.authority().cloned();
        parts.path_and_query = request.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }

    /// Dials the backend (TCP, then TLS with ALPN when https) and starts the connection task.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(self.dial.clone())
            .await
            .map_err(|e| UpstreamError::Unavailable(error_chain(e.as_ref())))?;
        if io.connected().is_negotiated_h2() {
            return self.connect_h2(io).await;
        }
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(READ_BUFFER_BYTES)
            .handshake(io)
            .await
            .map_err(|e| upstream_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn::H1(sender))
    }

    /// A dial on which ALPN chose `h2`: shakes hands unless another connection already has or
    /// is doing so, in which case this one waits for that one and is closed. It is kept until
    /// then, so a failed handshake elsewhere costs no second dial.
    async fn connect_h2(&self, io: Io) -> Result<Conn, UpstreamError> {
        loop {
            let waiting = {
                let mut h2 = lock(&self.shared.h2);
                match &mut *h2 {
                    H2::Ready { sender, .. } if !sender.is_closed() => {
                        return Ok(Conn::H2(sender.clone()));
                    }
                    H2::Handshaking(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        rx
                    }
                    H2::Absent | H2::Ready { .. } => {
                        *h2 = H2::Handshaking(Vec::new());
                        break;
                    }
                }
            };
            if let Ok(sender) = waiting.await {
                return Ok(Conn::H2(sender));
            }
            // That handshake failed or was abandoned: the state is `Absent` again.
        }
        let handshake = Handshake {
            shared: &self.shared,
            done: false,
        };
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| upstream_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        handshake.finish(&sender);
        Ok(Conn::H2(sender))
    }
}

/// The HTTP/2 handshake in progress; dropped unfinished (it failed, or the request that dialled
/// was cancelled), it lets the waiting requests dial or shake hands themselves.
struct Handshake<'a> {
    shared: &'a Arc<Shared>,
    done: bool,
}

impl Handshake<'_> {
    fn finish(mut self, sender: &H2Sender) {
        self.done = true;
        let previous = std::mem::replace(
            &mut *lock(&self.shared.h2),
            H2::Ready {
                sender: sender.clone(),
                used: Instant::now(),
            },
        );
        if let H2::Handshaking(waiters) = previous {
            for waiter in waiters {
                // A waiter that gave up has nothing to receive.
                let _ = waiter.send(sender.clone());
            }
        }
        self.shared.ensure_reaper(&mut lock(&self.shared.idle));
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut h2 = lock(&self.shared.h2);
            if matches!(*h2, H2::Handshaking(_)) {
                *h2 = H2::Absent;
            }
        }
    }
}

impl Shared {
    /// The HTTP/2 connection if one is open (or being set up), else the most recently used idle
    /// HTTP/1.1 connection that is still open and not stale at `now` (a clock reading taken
    /// just before; a connection may outlive the idle timeout by that gap, microseconds).
    async fn checkout(&self, now: Instant) -> Option<Conn> {
        let waiting = {
            let mut h2 = lock(&self.h2);
            match &mut *h2 {
                H2::Ready { sender, used } => {
                    *used = now;
                    Ok(sender.clone())
                }
                H2::Handshaking(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Err(Some(rx))
                }
                H2::Absent => Err(None),
            }
        };
        let h2 = match waiting {
            Ok(sender) => Some(sender),
            // The backend chose `h2` on another dial: no need to dial again. A failed
            // handshake there sends nothing, and this request dials.
            Err(Some(rx)) => rx.await.ok(),
            Err(None) => None,
        };
        if let Some(mut sender) = h2 {
            if sender.ready().await.is_ok() {
                return Some(Conn::H2(sender));
            }
            let mut h2 = lock(&self.h2);
            if matches!(&*h2, H2::Ready { sender, .. } if sender.is_closed()) {
                *h2 = H2::Absent;
            }
        }
        loop {
            let Idle { mut sender, since } = lock(&self.idle).conns.pop()?;
            if now.duration_since(since) > self.idle_timeout || sender.is_closed() {
                continue;
            }
            // Returned when its last response ended, so it is ready now or about to be (its
            // task has yet to run), or it has closed, which ends this wait with an error.
            if sender.ready().await.is_ok() {
                return Some(Conn::H1(sender));
            }
        }
    }

    fn checkin(self: &Arc<Self>, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        // Read here, when the response ended, so the list stays in idle-age order and the
        // trim below finds every stale connection at the front.
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        let stale = idle
            .conns
            .iter()
            .take_while(|i| now.duration_since(i.since) > self.idle_timeout)
            .count();
        idle.conns.drain(..stale);
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push(Idle { sender, since: now });
        }
        self.ensure_reaper(&mut idle);
    }

    /// Starts the reaper unless it runs; the caller holds the idle list's lock.
    fn ensure_reaper(self: &Arc<Self>, idle: &mut IdleList) {
        if !idle.reaper {
            idle.reaper = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Closes the idle connections that are `idle_timeout` old or closed, and the HTTP/2
    /// connection if no request took it for as long (requests under way keep it open until
    /// they end). Returns when the next one falls due, or `None` (the reaper stops) when
    /// nothing is left to watch.
    fn reap(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        idle.conns
            .retain(|i| now.duration_since(i.since) < self.idle_timeout && !i.sender.is_closed());
        let mut next = idle.conns.first().map(|i| i.since + self.idle_timeout);
        let mut h2 = lock(&self.h2);
        if let H2::Ready { sender, used } = &*h2 {
            if now.duration_since(*used) >= self.idle_timeout || sender.is_closed() {
                *h2 = H2::Absent;
            } else {
                let due = *used + self.idle_timeout;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if next.is_none() {
            idle.reaper = false;
        }
        next
    }
}

/// The reaper task: it holds the pool weakly, so a pool dropped on reload ends it.
async fn reap(shared: Weak<Shared>) {
    loop {
        let Some(due) = shared.upgrade().and_then(|s| s.reap()) else {
            return;
        };
        tokio::time::sleep_until(due).await;
    }
}

impl Checkin {
    fn release(self) {
        self.shared.checkin(self.sender);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            // The body is complete, so the connection is between messages: lend it on.
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            // A broken body leaves the connection in an unknown state: never reuse it.
            Some(Err(_)) => this.checkin = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.release();
        }
    }
}

fn upstream_error(e: &hyper::Error) -> UpstreamError {
    if e.is_timeout() {
        return UpstreamError::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        source = s.source();
    }
    UpstreamError::Unavailable(error_chain(e))
}

/// The pool's lists hold no invariant a panicking holder could break, so a poisoned lock is
/// simply taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
