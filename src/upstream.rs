//! Step 5: send the rewritten request to the configured backend over a pooled client.
//!
//! The target is built from the configured scheme, authority and base path plus the caller's path
//! and query: nothing the caller sends can change where the API key goes (threats T26). Bodies
//! stream both ways; redirects are returned to the caller, never followed.

use std::borrow::Cow;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::tls::{TlsError, client_config};

/// Why the upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer within upstream.timeout")]
    Timeout,
    #[error("request body exceeded server.max_body_bytes while streaming")]
    BodyTooLarge,
}

mod pool;

pub(crate) use pool::UpstreamBody;

/// An idle upstream connection this old is closed (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The connection pool and the target.
pub(crate) struct Upstream {
    pool: pool::Pool,
    config: UpstreamConfig,
    /// The `Host` every forwarded request carries, built once per config (hyper's connection
    /// API sends none of its own).
    host: HeaderValue,
}

impl Upstream {
    pub(crate) fn new(config: &UpstreamConfig) -> Result<Self, TlsError> {
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
        Ok(Self {
            pool: pool::Pool::new(
                connector,
                config.scheme.clone(),
                config.authority.clone(),
                idle,
            ),
            host: host_header(&config.authority),
            config: config.clone(),
        })
    }

    /// The upstream request-target for a caller's path (after the tenant prefix) and query, in
    /// origin form: where it goes is the pool's business, never the caller's.
    pub(crate) fn target(
        &self,
        path: &str,
        query: Option<&str>,
        account: Option<&str>,
    ) -> Option<Uri> {
        target_path(&self.config.base_path, path, query, account).map(Uri::from)
    }

    /// `upstream.resource_types`: the backend's own resource types, for the request grammar.
    pub(crate) fn resource_types(&self) -> &[std::sync::Arc<str>] {
        &self.config.resource_types
    }

    /// `upstream.timeout`: how long [`forward`](Self::forward) waits for the response head.
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Sends the request with the upstream's `Host`, at `sent` (a clock reading just taken), to
    /// the configured backend: of its target only the path and query count. Resolves to the
    /// response head with a streaming body. Not timed here: the caller must bound the exchange
    /// by [`timeout`](Self::timeout) (and its own deadline), with one timer. Crate-private for
    /// that reason.
    pub(crate) fn forward(
        &self,
        mut request: Request<RequestBody>,
        sent: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + '_ {
        request.headers_mut().insert(HOST, self.host.clone());
        // [`target`](Self::target) makes origin form; anything else would name another
        // authority in an HTTP/1.1 request line (threats T26).
        if request.uri().authority().is_some() {
            let path = request.uri().path_and_query().cloned();
            *request.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        self.pool.send(request, sent)
    }
}

/// Joins the configured base path (with `{account}` filled in) and the caller's path and query.
/// `None` unless the path is empty or starts with `/` (`*` and CONNECT targets are refused).
/// Only a path and query come out: the scheme and authority are always the configured ones,
/// whatever the caller's request-target said (threats T26).
pub(crate) fn target_path(
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

#[cfg(test)]
mod tests;
