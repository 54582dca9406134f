//! Bounded HTTPS GETs to the identity provider (JWKS, discovery documents).
//!
//! rustls with the bundled web roots plus an optional extra CA; connect and total timeouts; a body
//! size cap; redirects never followed, so the key source is exactly the configured URL (T35).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::{TlsError, client_config};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The client used for every request to the identity provider.
pub type IdpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Unreachable(String),
    #[error("request timed out")]
    Timeout,
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    #[error("response body exceeds the size limit")]
    TooLarge,
    #[error("invalid document: {0}")]
    Invalid(String),
}

/// A response with its body read in full (within the cap).
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Builds the identity-provider client.
pub fn client(extra_ca: Option<&Path>) -> Result<IdpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(extra_ca)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// GETs `url`, sending `If-None-Match` when an ETag is given, reading at most `limit` bytes,
/// all within the total timeout.
pub async fn get(
    client: &IdpClient,
    url: &Uri,
    accept: &'static str,
    etag: Option<&HeaderValue>,
    limit: usize,
) -> Result<Fetched, FetchError> {
    let mut request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, accept)
        .body(Empty::new())
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    if let Some(etag) = etag {
        request
            .headers_mut()
            .insert(http::header::IF_NONE_MATCH, etag.clone());
    }
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Unreachable(crate::text::error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(FetchError::TooLarge);
            }
            Err(e) => return Err(FetchError::Unreachable(e.to_string())),
        };
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(TOTAL_TIMEOUT, exchange)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// `Cache-Control: max-age=N`, if present and well-formed (RFC 9111 §5.2.2.1).
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            if name.trim().eq_ignore_ascii_case("max-age") {
                value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600, must-revalidate"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(3600)));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=soon"),
        );
        assert_eq!(max_age(&h), None);
    }
}
