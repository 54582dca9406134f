//! The proxy listener: accept loop, optional TLS, HTTP/1.1 + HTTP/2, limits, graceful drain.

mod accept;
mod deadline;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Proxy};

pub(crate) use accept::{Backoff, Protocol, sniff};
pub(crate) use deadline::{Activity, Ending, Exchange, GRACE, Limits, StreamExec, Tracked, drive};

/// hyper's connection error.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/1 read buffer: the front (src/front.rs) refuses a larger head with 431 first, and hyper
/// must never be the one to cut a head the front accepted.
use crate::front::MAX_HEAD_BYTES;
/// HTTP/2 limits set explicitly rather than inherited (threats T34).
const MAX_CONCURRENT_STREAMS: u32 = 100;
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` flips to true, then drains in-flight requests for at most
/// `config.shutdown_grace`. At most `config.max_connections` connections are open at once (a
/// TLS handshake or protocol sniff counts): at the limit nothing more is accepted, and new
/// connections wait in the kernel's listen backlog until one closes (threats T33).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    config: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let listen = Arc::new(Listen {
        builders: Builders::new(
            &Bounds {
                head: config.header_read_timeout,
                max_head_bytes: MAX_HEAD_BYTES,
                max_streams: MAX_CONCURRENT_STREAMS,
                max_header_list_bytes: MAX_HEADER_LIST_BYTES,
            },
            &Exchange(Arc::clone(&proxy)),
        ),
        tls,
        proxy,
        metrics: Arc::clone(&metrics),
        head_timeout: config.header_read_timeout,
    });
    let slots = Arc::new(Semaphore::new(config.max_connections));
    metrics.connection_limit(config.max_connections);
    let mut backoff = Backoff::new("proxy");
    let mut at_limit = false;
    loop {
        let full = slots.available_permits() == 0;
        if full && !at_limit {
            tracing::warn!(
                max_connections = config.max_connections,
                "connection limit reached; new connections wait until one closes"
            );
        }
        at_limit = full;
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = shutdown.changed() => break,
        };
        // The semaphore is never closed, so this always holds a permit.
        let Ok(permit) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = backoff.accept(&listener) => accepted,
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = Slot::new(permit, Arc::clone(&metrics));
        let conn = ConnInfo {
            peer,
            https: listen.tls.is_some(),
            forwarded_for: crate::headers::forwarded_for(peer.ip()),
        };
        let (listen, stop) = (Arc::clone(&listen), shutdown.clone());
        tokio::spawn(async move {
            // Held until the connection ends, whichever way it ends.
            let _slot = slot;
            listen.connection(stream, conn, stop).await;
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends: all of them back means all drained.
    let open = config.max_connections - slots.available_permits();
    tracing::info!(connections = open, "draining");
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace period over; closing remaining connections");
    }
}

/// What every proxy connection task shares.
struct Listen {
    builders: Builders,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    head_timeout: Duration,
}

impl Listen {
    /// One connection from accept to close: TLS handshake or protocol sniff, then hyper under
    /// the connection's deadlines. Until hyper has the connection, shutdown does not wait for
    /// it. The task holds only the sniff until the peer shows a request: the handshake and the
    /// hyper connection are boxed once they are needed, so that a connection sending nothing
    /// costs a few hundred bytes rather than the largest state it could reach.
    async fn connection(&self, stream: TcpStream, conn: ConnInfo, mut stop: watch::Receiver<bool>) {
        let peer = conn.peer;
        let ending = match &self.tls {
            None => {
                let protocol = tokio::select! {
                    protocol = sniff(&stream, self.head_timeout) => protocol,
                    _ = stop.wait_for(|stop| *stop) => None,
                };
                let Some(protocol) = protocol else {
                    tracing::debug!(%peer, "connection sent no request in time");
                    return;
                };
                Box::pin(self.serve(stream, protocol, false, conn, &mut stop)).await
            }
            Some(acceptor) => {
                let Some(ending) = Box::pin(self.tls(acceptor, stream, conn, &mut stop)).await
                else {
                    tracing::debug!(%peer, "TLS handshake failed");
                    return;
                };
                ending
            }
        };
        log_ending(peer, ending);
    }

    /// A TLS connection: `None` if the handshake failed, timed out or shutdown began during it.
    async fn tls(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        conn: ConnInfo,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Ending<BoxError>> {
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let stream = tokio::select! {
            done = handshake => done.ok()?.ok()?,
            _ = stop.wait_for(|stop| *stop) => return None,
        };
        // ALPN chose the protocol: no sniffing, so hyper's timeouts apply from the first byte.
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Some(self.serve(stream, protocol, true, conn, stop).await)
    }

    /// hyper behind scimgate's HTTP/1 front (src/front.rs), which reads every request head
    /// first: over plaintext the front tells HTTP/2's preface apart itself, after TLS the ALPN
    /// choice says it.
    async fn serve<T>(
        &self,
        io: T,
        protocol: Protocol,
        alpn: bool,
        conn: ConnInfo,
        stop: &mut watch::Receiver<bool>,
    ) -> Ending<BoxError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let peer = conn.peer;
        let proxy = {
            let proxy = Arc::clone(&self.proxy);
            // Not boxed: hyper keeps the service future in a box of its own, allocated once
            // per connection and reused by every request on it; ours cost an allocation and a
            // copy per request. The price is that each open connection holds the future's
            // space (about 3.7 KiB), idle ones too.
            service_fn(move |req| Arc::clone(&proxy).handle(req, conn.clone()))
        };
        let http2 = alpn && protocol == Protocol::Http2;
        let (io, front) =
            crate::front::wrap(io, proxy, &self.metrics, peer, self.head_timeout, http2);
        let service = {
            let activity = Arc::clone(&activity);
            service_fn(move |req| {
                let request = activity.begin();
                let response = front.call(req);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, request)))
                }
            })
        };
        let (builder, limits) = self.builders.get(protocol, alpn);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await
    }
}

/// One debug line for how a connection ended.
pub(crate) fn log_ending(peer: std::net::SocketAddr, ending: Ending<BoxError>) {
    match ending {
        Ending::Closed(Ok(())) => {}
        Ending::Closed(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        Ending::Idle => tracing::debug!(%peer, "idle connection closed"),
        Ending::Overdue => {
            tracing::debug!(%peer, "response not written by its deadline; connection closed");
        }
    }
}

/// One open connection's place under `server.max_connections`, counted in
/// `scimgate_connections_open` while it lasts.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Connection builders for each protocol (known before hyper starts: sniffed or from ALPN),
/// with the deadlines that go with them.
pub(crate) struct Builders {
    /// For plaintext, after the sniff. hyper-util detects the version again from the peeked
    /// bytes and hands hyper's HTTP/1 reader those 24 bytes first: without that small first
    /// read, one large read can take hyper's buffer past `max_buf_size` before its size check
    /// runs, and a 66 KiB head was accepted instead of 431.
    sniffed: auto::Builder<StreamExec>,
    h1: auto::Builder<StreamExec>,
    h2: auto::Builder<StreamExec>,
    h1_limits: Limits,
    h2_limits: Limits,
}

/// What a listener's connections may hold and for how long.
pub(crate) struct Bounds {
    /// `server.header_read_timeout`: time to a request head, and the most a connection may sit
    /// with no request in progress.
    pub(crate) head: Duration,
    pub(crate) max_head_bytes: usize,
    pub(crate) max_streams: u32,
    pub(crate) max_header_list_bytes: u32,
}

impl Builders {
    /// `exchange` bounds each request, head to last response byte, including the time the
    /// caller takes to read the response.
    pub(crate) fn new(bounds: &Bounds, exchange: &Exchange) -> Self {
        let mut builder = auto::Builder::new(StreamExec(exchange.clone()));
        // hyper ignores header_read_timeout unless a timer is set (design.md §8). It also
        // closes a keep-alive connection idle between requests (the timer restarts after
        // each response).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.head)
            .max_buf_size(bounds.max_head_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(bounds.max_streams)
            .max_header_list_size(bounds.max_header_list_bytes);
        let h1 = Limits {
            // hyper's header_read_timeout closes idle HTTP/1 connections; this is the backstop
            // for one stuck writing the last bytes of a response nobody reads.
            idle: bounds.head + GRACE,
            exchange: Some(exchange.clone()),
        };
        let h2 = Limits {
            idle: bounds.head,
            exchange: None,
        };
        Self {
            h1: builder.clone().http1_only(),
            h2: builder.clone().http2_only(),
            sniffed: builder,
            h1_limits: h1,
            h2_limits: h2,
        }
    }

    /// The builder and deadlines for `protocol`, known from ALPN or from a sniff.
    pub(crate) fn get(
        &self,
        protocol: Protocol,
        alpn: bool,
    ) -> (&auto::Builder<StreamExec>, &Limits) {
        match (protocol, alpn) {
            (Protocol::Http1, false) => (&self.sniffed, &self.h1_limits),
            (Protocol::Http2, false) => (&self.sniffed, &self.h2_limits),
            (Protocol::Http1, true) => (&self.h1, &self.h1_limits),
            (Protocol::Http2, true) => (&self.h2, &self.h2_limits),
        }
    }
}
