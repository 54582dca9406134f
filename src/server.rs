//! The proxy listener: accept loop, optional TLS, HTTP/1.1 + HTTP/2, limits, graceful drain.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Proxy};

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
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    config: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(Builders {
        auto: connection_builder(config),
        h1: connection_builder(config).http1_only(),
        h2: connection_builder(config).http2_only(),
    });
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    metrics.connection_limit(config.max_connections);
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
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let slot = Slot::new(permit, Arc::clone(&metrics));
                let conn = ConnInfo {
                    peer,
                    https: tls.is_some(),
                    forwarded_for: crate::headers::forwarded_for(peer.ip()),
                };
                let service = {
                    let proxy = Arc::clone(&proxy);
                    // Not boxed: hyper keeps the service future in a box of its own, allocated
                    // once per connection and reused by every request on it; ours cost an
                    // allocation and a copy per request. The price is that each open
                    // connection holds the future's space (about 3.7 KiB), idle ones too.
                    service_fn(move |req| Arc::clone(&proxy).handle(req, conn.clone()))
                };
                let (builder, watcher, tls) = (Arc::clone(&builder), graceful.watcher(), tls.clone());
                let head_timeout = config.header_read_timeout;
                let metrics = Arc::clone(&metrics);
                let mut stopping = shutdown.clone();
                tokio::spawn(async move {
                    // Held until the connection ends, whichever way it ends.
                    let _slot = slot;
                    let result = match tls {
                        None => {
                            // Not yet a hyper connection: shutdown must not wait for it.
                            let ready = tokio::select! {
                                ready = await_protocol(&stream, head_timeout) => ready,
                                _ = stopping.changed() => false,
                            };
                            if !ready {
                                tracing::debug!(%peer, "connection sent no request in time");
                                return;
                            }
                            let (stream, service) = crate::front::wrap(stream, service, &metrics, peer, head_timeout, false);
                            watcher.watch(builder.auto.serve_connection(TokioIo::new(stream), service).into_owned()).await
                        }
                        Some(acceptor) => {
                            let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                                tracing::debug!(%peer, "TLS handshake failed");
                                return;
                            };
                            // ALPN already chose the protocol: no sniffing, so hyper's own
                            // timeouts apply from the first byte.
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let builder = if h2 { &builder.h2 } else { &builder.h1 };
                            let (stream, service) = crate::front::wrap(stream, service, &metrics, peer, head_timeout, h2);
                            watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace period over; closing remaining connections");
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
        metrics.connection(true);
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection(false);
    }
}

/// Connection builders: protocol detection for plaintext, fixed protocols after TLS ALPN.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

/// Waits, at most `limit`, until the client has sent enough to tell HTTP/1 from the HTTP/2
/// preface. hyper-util's protocol detection reads without a timeout, and `header_read_timeout`
/// only starts after it: a silent connection, or a partial preface, would otherwise stay open.
async fn await_protocol(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && (n >= PREFACE.len() || !PREFACE.starts_with(&buf[..n])) => {
                return true;
            }
            // A partial preface: peek returns at once with the same bytes, so pace the retries.
            Ok(Ok(n)) if n > 0 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Ok(_) | Err(_)) | Err(_) => return false,
        }
    }
}

fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper ignores header_read_timeout unless a timer is set (design.md §8).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    builder
}
