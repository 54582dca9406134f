//! The admin listener (its own port, no authentication): `/healthz`, `/readyz`, `/metrics`.
//!
//! Nothing here is ever forwarded upstream, and no proxy path is answered here (threats T27).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server::{
    Activity, Backoff, Bounds, Builders, Ending, Exchange, Protocol, Tracked, drive, log_ending,
    sniff,
};

/// Admin connections open at once. Probes and scrapers need a handful; further connections
/// are closed as soon as they are accepted, so a flood cannot queue behind the cap or grow
/// memory without bound.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// The admin endpoints take no body and few headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_STREAMS: u32 = 4;
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// What the admin endpoints read.
pub(crate) struct Admin {
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<Metrics>,
}

/// Serves the admin endpoints until `shutdown` flips, under the proxy's `header_read_timeout`
/// (request head and idle connections, HTTP/1 and HTTP/2) and `request_timeout` (whole
/// exchange), with at most [`MAX_CONNECTIONS`] open.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    mut shutdown: watch::Receiver<bool>,
) {
    let head = admin.proxy.runtime().config.server.header_read_timeout;
    let builders = Arc::new(Builders::new(
        &Bounds {
            head,
            max_head_bytes: MAX_HEAD_BYTES,
            max_streams: MAX_STREAMS,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
        },
        &Exchange(Arc::clone(&admin.proxy)),
    ));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Backoff::new("admin");
    let mut refusing = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = backoff.accept(&listener) => accepted,
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max_connections = MAX_CONNECTIONS,
                    "admin connection limit reached; new admin connections are closed until one ends"
                );
            }
            refusing = true;
            continue;
        };
        refusing = false;
        let (admin, builders, stop) = (Arc::clone(&admin), Arc::clone(&builders), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, peer, &admin, &builders, head, stop).await;
        });
    }
}

/// One admin connection: protocol sniff within `head`, then hyper under the deadlines.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    admin: &Arc<Admin>,
    builders: &Builders,
    head: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let protocol = tokio::select! {
        protocol = sniff(&stream, head) => protocol,
        _ = stop.wait_for(|stop| *stop) => None,
    };
    let Some(protocol) = protocol else {
        tracing::debug!(%peer, "admin connection sent no request in time");
        return;
    };
    // Boxed once a request is coming, so a silent connection holds only the sniff.
    let ending = Box::pin(serve_http(
        TokioIo::new(stream),
        protocol,
        admin,
        builders,
        &mut stop,
    ))
    .await;
    log_ending(peer, ending);
}

async fn serve_http(
    io: TokioIo<TcpStream>,
    protocol: Protocol,
    admin: &Arc<Admin>,
    builders: &Builders,
    stop: &mut watch::Receiver<bool>,
) -> Ending<Box<dyn std::error::Error + Send + Sync>> {
    let activity = Activity::new();
    let service = {
        let (admin, activity) = (Arc::clone(admin), Arc::clone(&activity));
        service_fn(move |req| {
            let response = admin
                .route(&req)
                .map(|body| Tracked::new(body, activity.begin()));
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let (builder, limits) = builders.get(protocol, false);
    let conn = builder.serve_connection(io, service);
    drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await
}

impl Admin {
    fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" if self.proxy.is_ready() => plain(StatusCode::OK, "ready\n"),
            "/readyz" => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: signing keys not loaded\n",
            ),
            "/metrics" => {
                self.metrics
                    .log_lines_dropped(crate::telemetry::dropped_lines());
                self.proxy.export_budgets();
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}
