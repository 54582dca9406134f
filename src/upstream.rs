//! Step 5: send the rewritten request to the configured backend over a pooled client.
//!
//! The target is built from the configured scheme, authority and base path plus the caller's path
//! and query: nothing the caller sends can change where the API key goes (threats T26). Bodies
//! stream both ways; redirects are returned to the caller, never followed.

use std::borrow::Cow;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::tls::{TlsError, client_config};

/// Why the upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer within upstream.timeout")]
    Timeout,
    #[error("request body exceeded server.max_body_bytes while streaming")]
    BodyTooLarge,
}

/// The response body from the upstream. Reading it to the end returns its HTTP/1.1 connection
/// to the pool; a body dropped early takes its connection with it.
pub type UpstreamBody = hyper::body::Incoming;

/// Idle HTTP/1.1 connections kept per upstream; beyond this a finished connection is closed.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed, at checkout or by the pool's reaper.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/1.1 read buffer, which bounds both the response head (a larger one fails as the
/// upstream being unavailable, like nginx's default `proxy_buffer_size`) and each read of the
/// body. hyper's default grows reads to 400 KiB; a response the caller is not reading holds at
/// most two reads (one queued for the caller, one in the buffer), so this is what a stalled
/// caller pins per upstream exchange until its deadline.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The pooled client and the target.
pub struct Upstream {
    /// hyper-util's pooled client: keep-alive HTTP/1.1 connections, or one shared HTTP/2
    /// connection when TLS ALPN chose `h2` (one HTTP/2 handshake at a time), idle ones reaped.
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    config: UpstreamConfig,
    /// The `Host` every forwarded request carries, built once per config.
    host: HeaderValue,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, TlsError> {
        Self::with_idle_timeout(config, IDLE_TIMEOUT)
    }

    fn with_idle_timeout(config: &UpstreamConfig, idle: Duration) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(config.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            // Without a timer the idle timeout is only checked at checkout: nothing would
            // close a connection left idle after a burst.
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(MAX_IDLE)
            .http1_max_buf_size(READ_BUFFER_BYTES)
            // A request a pooled connection refused before writing a byte (it had closed while
            // idle) is sent again on another: nothing reached the upstream, so any method may
            // be. A written request is never resent.
            .retry_canceled_requests(true)
            // `forward` sets the configured one; the client would derive the same.
            .set_host(false)
            .build(connector);
        Ok(Self {
            client,
            host: host_header(&config.authority),
            config: config.clone(),
        })
    }

    /// The upstream request-target for a caller's path (after the tenant prefix) and query, in
    /// origin form: where it goes is [`forward`](Self::forward)'s business, never the caller's.
    pub fn target(&self, path: &str, query: Option<&str>, account: Option<&str>) -> Option<Uri> {
        target_path(&self.config.base_path, path, query, account).map(Uri::from)
    }

    /// `upstream.resource_types`: the backend's own resource types, for the request grammar.
    pub fn resource_types(&self) -> &[std::sync::Arc<str>] {
        &self.config.resource_types
    }

    /// `upstream.timeout`: how long [`forward`](Self::forward) waits for the response head.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Sends the request to the configured backend with the upstream's `Host`; only the path
    /// and query of its target are kept. Resolves to the response head with a streaming body.
    /// Not timed here: the caller must bound the exchange by [`timeout`](Self::timeout) (and
    /// its own deadline), with one timer. Crate-private for that reason. `_sent` is unused.
    pub(crate) fn forward(
        &self,
        mut request: Request<RequestBody>,
        _sent: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + '_ {
        request.headers_mut().insert(HOST, self.host.clone());
        let target = absolute(
            &self.config.scheme,
            &self.config.authority,
            request.uri().path_and_query(),
        );
        let response = target.map(|target| {
            *request.uri_mut() = target;
            self.client.request(request)
        });
        async move {
            let response = response.ok_or_else(|| {
                UpstreamError::Unavailable("the configured upstream URL makes no URI".to_owned())
            })?;
            response.await.map_err(|e| upstream_error(&e))
        }
    }
}

/// The configured scheme and authority with a request's path and query: the client dials what
/// this names, so nothing of the caller's target but its path and query survives (threats T26).
/// HTTP/1.1 sends it in origin form with the authority in `Host` (RFC 9112 §3.2.1); HTTP/2 as
/// the `:scheme`, `:authority` and `:path` pseudo-headers (RFC 9113 §8.3.1).
fn absolute(scheme: &Scheme, authority: &Authority, path: Option<&PathAndQuery>) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

/// Sorts a client error into what the caller is told; the text is for logs only.
fn upstream_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return UpstreamError::Timeout;
        }
        source = s.source();
    }
    UpstreamError::Unavailable(describe(e))
}

/// Joins the configured base path (with `{account}` filled in) and the caller's path and query.
/// `None` unless the path is empty or starts with `/` (`*` and CONNECT targets are refused).
/// Only a path and query come out: the scheme and authority are always the configured ones,
/// whatever the caller's request-target said (threats T26).
pub fn target_path(
    base_path: &str,
    path: &str,
    query: Option<&str>,
    account: Option<&str>,
) -> Option<PathAndQuery> {
    if !path.is_empty() && !path.starts_with('/') {
        return None;
    }
    // Only a `{account}` tenant builds its base per request; otherwise the configured base is
    // borrowed, and the one allocation is the joined target itself.
    let base: Cow<'_, str> = match account {
        Some(account) => Cow::Owned(base_path.replace("{account}", account)),
        None => Cow::Borrowed(base_path),
    };
    let base = if base.is_empty() && path.is_empty() {
        "/"
    } else {
        &base
    };
    let mut joined =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    joined.push_str(base);
    joined.push_str(path);
    if let Some(q) = query {
        joined.push('?');
        joined.push_str(q);
    }
    PathAndQuery::try_from(joined).ok()
}

/// `Host` for the configured authority, exactly as written in `upstream.url` (validation refuses
/// userinfo). Equal to the `:authority` an HTTP/2 upstream receives, as RFC 9113 §8.3.1 requires.
fn host_header(authority: &Authority) -> HeaderValue {
    // A parsed authority holds only header-safe characters; the fallback keeps this total.
    HeaderValue::from_str(authority.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// An error and its sources on one line, for logs (never for callers).
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
