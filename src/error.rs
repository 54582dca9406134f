//! The one place where a failed request becomes an HTTP response (design.md §5).
//!
//! Every match here is exhaustive over our own enums: adding a variant forces a decision on its
//! status, challenge, detail and outcome label.

use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::auth::AuthError;
use crate::body::ResponseBody;
use crate::front::HeadError;
use crate::metrics::Outcome;
use crate::scim;
use crate::upstream::UpstreamError;

/// Everything that can end a request early, at the request boundary.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A request head the HTTP/1 front refused before hyper parsed it (`front.rs`).
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream answered 401 to the service account's key: our fault, not the caller's.
    #[error("upstream rejected the service account credential")]
    UpstreamRejectedCredential,
    /// The upstream's response held the service account's key, or a body scimgate had to
    /// screen could not be read with certainty; it is not relayed.
    #[error("upstream response withheld: {0}")]
    UpstreamWithheld(#[from] crate::screen::Withheld),
    /// The whole exchange outlived `server.request_timeout` (usually a slow request body).
    #[error("request exceeded server.request_timeout")]
    RequestTimeout,
}

/// Requests refused before authentication is even attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request target is not an absolute path")]
    BadTarget,
    #[error("the /Bulk body is not a SCIM BulkRequest")]
    InvalidBulk,
    #[error("not a SCIM endpoint")]
    NotFound,
    #[error("a method-override query parameter")]
    MethodOverride,
    #[error("request body in a content-coding or media type scimgate cannot judge")]
    UnsupportedMediaType,
    #[error("no tenant's path_prefix matches the path")]
    UnknownTenant,
    #[error(
        "ambiguous path: dot or empty segments, encoded / or \\, ; parameters, control characters, bad or needless %-encoding"
    )]
    AmbiguousPath,
    #[error("method not allowed through the proxy")]
    MethodNotAllowed,
    #[error("request body larger than server.max_body_bytes")]
    PayloadTooLarge,
}

/// The pieces of an error response.
struct ErrorResponse {
    status: StatusCode,
    challenge: Option<&'static str>,
    detail: &'static str,
}

const CHALLENGE: &str = r#"Bearer realm="scimgate""#;
const CHALLENGE_INVALID: &str = r#"Bearer realm="scimgate", error="invalid_token""#;
const CHALLENGE_SCOPE: &str = r#"Bearer realm="scimgate", error="insufficient_scope""#;

impl ProxyError {
    /// The `outcome` label for metrics and the audit line.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Auth(AuthError::MissingToken) => Outcome::MissingToken,
            Self::Auth(AuthError::DuplicateAuthorization) => Outcome::BadRequest,
            Self::Auth(AuthError::InvalidToken(_)) => Outcome::InvalidToken,
            Self::Auth(AuthError::NoMatchingRule | AuthError::OperationDenied) => {
                Outcome::Forbidden
            }
            Self::Auth(AuthError::KeysUnavailable) => Outcome::JwksUnavailable,
            Self::Request(
                RequestError::BadTarget
                | RequestError::InvalidBulk
                | RequestError::AmbiguousPath
                | RequestError::MethodOverride,
            ) => Outcome::BadRequest,
            Self::Request(RequestError::NotFound) => Outcome::NotFound,
            Self::Request(RequestError::UnsupportedMediaType) => Outcome::UnsupportedMediaType,
            Self::Request(RequestError::MethodNotAllowed) => Outcome::MethodNotAllowed,
            Self::Request(RequestError::UnknownTenant) => Outcome::UnknownTenant,
            Self::Head(HeadError::Malformed | HeadError::Target | HeadError::Framing) => {
                Outcome::BadRequest
            }
            Self::Head(HeadError::TooLarge) => Outcome::HeadersTooLarge,
            Self::Request(RequestError::PayloadTooLarge)
            | Self::Upstream(UpstreamError::BodyTooLarge) => Outcome::PayloadTooLarge,
            Self::Upstream(UpstreamError::Unavailable(_)) => Outcome::UpstreamUnavailable,
            Self::Upstream(UpstreamError::Timeout) => Outcome::UpstreamTimeout,
            Self::UpstreamRejectedCredential => Outcome::UpstreamRejectedCredential,
            Self::UpstreamWithheld(_) => Outcome::UpstreamWithheld,
            Self::RequestTimeout => Outcome::RequestTimeout,
        }
    }

    fn parts(&self) -> ErrorResponse {
        let (status, challenge, detail) = match self {
            Self::Auth(AuthError::MissingToken) => (
                StatusCode::UNAUTHORIZED,
                Some(CHALLENGE),
                "authentication required: send Authorization: Bearer <token>",
            ),
            Self::Auth(AuthError::InvalidToken(_)) => (
                StatusCode::UNAUTHORIZED,
                Some(CHALLENGE_INVALID),
                "the bearer token is not valid",
            ),
            Self::Auth(AuthError::NoMatchingRule | AuthError::OperationDenied) => (
                StatusCode::FORBIDDEN,
                Some(CHALLENGE_SCOPE),
                "the token does not grant access to this resource",
            ),
            Self::Auth(AuthError::DuplicateAuthorization) => (
                StatusCode::BAD_REQUEST,
                None,
                "send exactly one Authorization header",
            ),
            Self::Auth(AuthError::KeysUnavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "token verification is temporarily unavailable",
            ),
            Self::Request(RequestError::AmbiguousPath) => (
                StatusCode::BAD_REQUEST,
                None,
                "ambiguous request path: dot or empty segments, encoded slashes or ; parameters are not forwarded",
            ),
            Self::Request(RequestError::UnknownTenant) => {
                (StatusCode::NOT_FOUND, None, "no tenant serves this path")
            }
            Self::Request(RequestError::NotFound) => (
                StatusCode::NOT_FOUND,
                None,
                "not a SCIM endpoint: scimgate forwards only the endpoints of RFC 7644 section 3",
            ),
            Self::Request(RequestError::MethodOverride) => (
                StatusCode::BAD_REQUEST,
                None,
                "method-override parameters are not forwarded: send the real method",
            ),
            Self::Request(RequestError::UnsupportedMediaType) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send the request body as uncompressed UTF-8 application/scim+json",
            ),
            Self::Request(RequestError::InvalidBulk) => (
                StatusCode::BAD_REQUEST,
                None,
                "the /Bulk body must be a SCIM BulkRequest with method and path on every operation",
            ),
            Self::Request(RequestError::BadTarget) => {
                (StatusCode::BAD_REQUEST, None, "invalid request target")
            }
            Self::Request(RequestError::MethodNotAllowed) => {
                (StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed")
            }
            Self::Head(HeadError::Malformed) => (
                StatusCode::BAD_REQUEST,
                None,
                "malformed request: the request line or a header field is not valid HTTP/1.1",
            ),
            Self::Head(HeadError::TooLarge) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                None,
                "request header section too large: at most 64 KiB and 100 fields",
            ),
            Self::Head(HeadError::Target) => (
                StatusCode::BAD_REQUEST,
                None,
                "invalid request target: percent-encode characters outside RFC 3986 in the path",
            ),
            Self::Head(HeadError::Framing) => (
                StatusCode::BAD_REQUEST,
                None,
                "ambiguous message framing: send one Content-Length, or Transfer-Encoding: chunked alone",
            ),
            Self::Request(RequestError::PayloadTooLarge)
            | Self::Upstream(UpstreamError::BodyTooLarge) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "request body too large",
            ),
            Self::Upstream(UpstreamError::Unavailable(_)) => {
                (StatusCode::BAD_GATEWAY, None, "upstream unavailable")
            }
            Self::Upstream(UpstreamError::Timeout) => {
                (StatusCode::GATEWAY_TIMEOUT, None, "upstream timed out")
            }
            Self::UpstreamWithheld(_) => (
                StatusCode::BAD_GATEWAY,
                None,
                "the upstream's response was withheld",
            ),
            Self::UpstreamRejectedCredential => (
                StatusCode::BAD_GATEWAY,
                None,
                "upstream rejected the service account credential",
            ),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, None, "request timed out"),
        };
        ErrorResponse {
            status,
            challenge,
            detail,
        }
    }

    /// The SCIM error response for this failure. The detail is generic: specifics go to the log.
    pub fn into_response(self) -> Response<ResponseBody> {
        let parts = self.parts();
        let mut response = Response::new(ResponseBody::full(scim::error_body(
            parts.status,
            parts.detail,
        )));
        *response.status_mut() = parts.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(scim::CONTENT_TYPE));
        if let Some(challenge) = parts.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if parts.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenRejection;

    #[test]
    fn challenges_follow_rfc6750() {
        let r = ProxyError::Auth(AuthError::MissingToken).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="scimgate""#);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/scim+json");
        let r = ProxyError::Auth(AuthError::InvalidToken(TokenRejection::Expired)).into_response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="scimgate", error="invalid_token""#
        );
        let r = ProxyError::Auth(AuthError::NoMatchingRule).into_response();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="scimgate", error="insufficient_scope""#
        );
        let r = ProxyError::UpstreamRejectedCredential.into_response();
        assert_eq!(r.status(), 502);
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
