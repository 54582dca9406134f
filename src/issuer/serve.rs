//! The issuer's three endpoints on the proxy listener, answered before SCIM routing: which
//! paths they are (under `issuer.url`'s path), the bounded body read, and the response.
//!
//! `POST {path}/oauth2/token`, `GET {path}/.well-known/jwks.json`, and the RFC 8414 metadata at
//! `/.well-known/oauth-authorization-server{path}` (§3.1: the well-known segment goes before
//! the issuer's path) and, for clients that append it as OpenID discovery does, also at
//! `{path}/.well-known/oauth-authorization-server`.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, timeout_at};

use super::{Issuer, MAX_BODY_BYTES, TokenRequest, TokenResponse};
use crate::metrics::Metrics;
use crate::response::ResponseBody;

/// One of the issuer's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Jwks,
    Metadata,
}

/// The endpoint `path` names, if any.
pub(crate) fn endpoint(issuer: &Issuer, path: &str) -> Option<Endpoint> {
    let base = issuer_path(&issuer.config().url);
    let under = |suffix: &str| path.strip_prefix(base) == Some(suffix);
    if under("/oauth2/token") {
        Some(Endpoint::Token)
    } else if under("/.well-known/jwks.json") {
        Some(Endpoint::Jwks)
    } else if path.strip_prefix("/.well-known/oauth-authorization-server") == Some(base)
        || under("/.well-known/oauth-authorization-server")
    {
        Some(Endpoint::Metadata)
    } else {
        None
    }
}

/// The path of the issuer URL without a trailing `/` (`""` for the root).
fn issuer_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("", |i| &after_scheme[i..])
        .trim_end_matches('/')
}

/// Answers one request to `endpoint`. The token endpoint's body is read up to
/// [`MAX_BODY_BYTES`] (one byte more tells the endpoint it was too large) before `deadline`.
pub(crate) async fn serve(
    issuer: &Issuer,
    endpoint: Endpoint,
    req: Request<Incoming>,
    peer: IpAddr,
    deadline: Instant,
    metrics: &Metrics,
) -> Response<ResponseBody> {
    match endpoint {
        Endpoint::Token => {
            let (parts, body) = req.into_parts();
            let body = if parts.method == Method::POST {
                read_body(body, deadline).await
            } else {
                Bytes::new()
            };
            let answer = issuer
                .token_endpoint(TokenRequest {
                    method: &parts.method,
                    query: parts.uri.query(),
                    headers: &parts.headers,
                    body: &body,
                    peer,
                    now: crate::auth::verify::now(),
                })
                .await;
            metrics.token_request(answer.outcome);
            token_response(answer)
        }
        Endpoint::Jwks => document(req.method(), issuer.jwks_json(), "application/jwk-set+json"),
        Endpoint::Metadata => document(req.method(), issuer.metadata_json(), "application/json"),
    }
}

/// The body, at most one byte over the limit; empty when it could not be read in time.
async fn read_body(body: Incoming, deadline: Instant) -> Bytes {
    match timeout_at(deadline, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Bytes::from(vec![0; MAX_BODY_BYTES + 1]),
        Ok(Err(_)) | Err(_) => Bytes::new(),
    }
}

fn token_response(answer: TokenResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// A public document: GET or HEAD only; cacheable for five minutes, so a rotated key reaches
/// clients that cache it soon.
fn document(method: &Method, body: &str, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = if method == Method::GET {
        Response::new(ResponseBody::full(body.to_owned()))
    } else {
        Response::new(ResponseBody::full(Bytes::new()))
    };
    let headers = response.headers_mut();
    if method == Method::GET || method == Method::HEAD {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
    } else {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::issuer_path;

    #[test]
    fn the_issuer_path_has_no_trailing_slash() {
        assert_eq!(issuer_path("https://a.example"), "");
        assert_eq!(issuer_path("https://a.example/"), "");
        assert_eq!(issuer_path("https://a.example/gw/x"), "/gw/x");
        assert_eq!(issuer_path("http://127.0.0.1:8080/gw/"), "/gw");
    }
}
