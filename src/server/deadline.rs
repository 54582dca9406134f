//! Deadlines for doing work, per connection and per HTTP/2 stream: no connection lives without
//! a request in progress, and no response outlives its exchange deadline because the caller
//! stopped reading it.
//!
//! A connection counts the requests in progress on it (a guard taken when hyper calls the
//! service and dropped with the response body). With none for `idle`, it is asked to close
//! (HTTP/2 GOAWAY) and dropped [`GRACE`] later if it is still open with nothing in progress.
//! An HTTP/1 request still in progress `exchange` after it started drops its connection; an
//! HTTP/2 stream is reset at its deadline by [`StreamExec`], the rest of the connection lives on.
//!
//! Both are enforced from outside the response body on purpose: hyper stops polling a body
//! while the caller's flow-control window (or socket buffer) is full, so a timer inside the
//! body would never fire.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::proxy::Proxy;

/// How long a connection asked to close gets to finish on its own before it is dropped, and how
/// long past `server.request_timeout` a response may still be written: the pipeline answers 408
/// at `request_timeout`, and that answer needs a moment to reach the caller.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// The deadlines one listener applies to a connection.
#[derive(Clone)]
pub(crate) struct Limits {
    /// Nothing in progress for this long closes the connection.
    pub(crate) idle: Duration,
    /// HTTP/1: a request still in progress this long after it started drops the connection.
    /// `None` for HTTP/2, whose streams are bounded one by one by [`StreamExec`].
    pub(crate) exchange: Option<Exchange>,
}

/// The bound on one whole exchange, from the request head to the last response byte:
/// `server.request_timeout` of the configuration in force (it may be reloaded) plus [`GRACE`].
#[derive(Clone)]
pub(crate) struct Exchange(pub(crate) Arc<Proxy>);

impl Exchange {
    fn limit(&self) -> Duration {
        self.0.runtime().config.server.request_timeout + GRACE
    }
}

/// What a connection is doing, shared by its task, its service and its response bodies.
pub(crate) struct Activity {
    base: Instant,
    in_progress: AtomicUsize,
    /// Milliseconds from `base` to the last time `in_progress` left or reached zero: the start
    /// of the current HTTP/1 request, or of the current idle spell.
    since: AtomicU64,
}

impl Activity {
    /// A connection that starts idle now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_progress: AtomicUsize::new(0),
            since: AtomicU64::new(0),
        })
    }

    /// Counts a request from now until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        if self.in_progress.fetch_add(1, Ordering::AcqRel) == 0 {
            self.mark();
        }
        InProgress(Arc::clone(self))
    }

    fn mark(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since.store(ms, Ordering::Release);
    }

    fn since(&self) -> Instant {
        self.base + Duration::from_millis(self.since.load(Ordering::Acquire))
    }

    /// What is due at `now`, for a connection that began closing at `closing`, if it did.
    fn due(&self, limits: &Limits, closing: Option<Instant>, now: Instant) -> Due {
        let busy = self.in_progress.load(Ordering::Acquire) > 0;
        let (at, verdict) = match (busy, &limits.exchange) {
            (true, Some(exchange)) => (self.since() + exchange.limit(), Due::Overdue),
            // Streams end on their own deadlines; look again when an idle spell could be over.
            (true, None) => return Due::At(now + closing.map_or(limits.idle, |_| GRACE)),
            (false, _) => match closing {
                Some(began) => (began + GRACE, Due::Idle),
                None => (self.since() + limits.idle, Due::Idle),
            },
        };
        if now >= at { verdict } else { Due::At(at) }
    }
}

enum Due {
    At(Instant),
    Idle,
    Overdue,
}

/// One request in progress on a connection.
pub(crate) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.mark();
        }
    }
}

/// A response body that keeps its request counted as in progress while it lives.
///
/// A service takes the guard when hyper calls it and builds the pipeline's future inside its
/// own `async` block: an `async` block that awaits a future it captured holds that future
/// twice (captures and awaited futures get separate space), which doubled every HTTP/2
/// stream's task.
pub(crate) struct Tracked<B> {
    body: B,
    _request: InProgress,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, request: InProgress) -> Self {
        Self {
            body,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How a connection ended.
pub(crate) enum Ending<E> {
    /// hyper finished it (the peer closed, an error, or a graceful close completed).
    Closed(Result<(), E>),
    /// Nothing in progress for the idle limit, and still open [`GRACE`] after being asked to close.
    Idle,
    /// An HTTP/1 response was not written by its exchange deadline.
    Overdue,
}

/// Serves `conn` until hyper finishes it or a deadline drops it. `close` asks hyper to close
/// gracefully (HTTP/2 GOAWAY; HTTP/1 closes once the response in progress is written); it is
/// called when the connection goes idle for `limits.idle` or when `stop` turns true.
pub(crate) async fn drive<C, E>(
    conn: C,
    mut close: impl FnMut(Pin<&mut C>),
    activity: &Activity,
    limits: &Limits,
    stop: &mut watch::Receiver<bool>,
) -> Ending<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = pin!(conn);
    let mut stopping = pin!(stop.wait_for(|stop| *stop));
    let mut timer = pin!(tokio::time::sleep_until(activity.since() + limits.idle));
    // When the graceful close began, if it did.
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => return Ending::Closed(ended),
            _ = stopping.as_mut(), if closing.is_none() => {
                close(conn.as_mut());
                let now = Instant::now();
                closing = Some(now);
                timer.as_mut().reset(now + GRACE);
            }
            () = timer.as_mut() => {
                let now = Instant::now();
                match activity.due(limits, closing, now) {
                    Due::At(at) => timer.as_mut().reset(at),
                    Due::Overdue => return Ending::Overdue,
                    Due::Idle if closing.is_some() => return Ending::Idle,
                    Due::Idle => {
                        close(conn.as_mut());
                        closing = Some(now);
                        timer.as_mut().reset(now + GRACE);
                    }
                }
            }
        }
    }
}

/// Runs hyper's HTTP/2 stream tasks, each bounded by `limit` from the moment its request head
/// arrived: at the deadline the task is dropped, which resets the stream (RST_STREAM) and drops
/// its service future or response body, and with them the upstream connection and buffers.
/// hyper polls a stream's body only while the caller grants flow-control window, so this is the
/// one place that sees a stream the caller stopped reading.
#[derive(Clone)]
pub(crate) struct StreamExec(pub(crate) Exchange);

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // Spawned as it is: an `async` block around it would hold the stream twice.
        tokio::spawn(tokio::time::timeout_at(
            Instant::now() + self.0.limit(),
            stream,
        ));
    }
}
