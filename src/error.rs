//! The one place where a failed request becomes an HTTP response (design.md §5).
//!
//! [`ProxyError::answer`] is one exhaustive match over our own enums: adding a variant forces a
//! decision on its status, challenge, detail and outcome label, in one place.

use std::borrow::Cow;

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::auth::AuthError;
use crate::guard::GuardError;
use crate::metrics::Outcome;
use crate::response::ResponseBody;
use crate::scim;
use crate::upstream::UpstreamError;

/// Everything that can end a request early, at the request boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A request head the HTTP/1 front refused before hyper parsed it (`front.rs`).
    #[error(transparent)]
    Head(#[from] HeadError),
    /// A guardrail refused a request its token and rule allowed (`crate::guard`).
    #[error(transparent)]
    Guard(#[from] GuardError),
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

/// Why the HTTP/1 front (`front.rs`) refused a request head before hyper parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Not an HTTP/1.x request head: request line, version, field syntax, obs-fold.
    #[error("malformed request head")]
    Malformed,
    /// Over `MAX_HEAD_BYTES`, or more than 100 header fields.
    #[error("request head over 64 KiB or 100 header fields")]
    TooLarge,
    /// The request target is not one we can pass on unambiguously (see `check_target`).
    #[error("request target with bytes outside RFC 3986")]
    Target,
    /// Content-Length and Transfer-Encoding do not give one clear body length (RFC 9112 §6.3).
    #[error("ambiguous message framing (Content-Length / Transfer-Encoding)")]
    Framing,
}

/// Requests refused before authentication is even attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
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
    /// A body scimgate had to read broke off or was malformed on the wire.
    #[error("the request body could not be read")]
    UnreadableBody,
}

/// How one failure is answered and counted.
struct Answer {
    status: StatusCode,
    challenge: Option<&'static str>,
    /// Fixed text, except where it names a configured attribute (never a request's value).
    detail: Cow<'static, str>,
    outcome: Outcome,
    /// Seconds for `Retry-After`, when waiting helps (RFC 9110 §10.2.3).
    retry_after: Option<u64>,
}

const CHALLENGE: &str = r#"Bearer realm="scimgate""#;
const CHALLENGE_INVALID: &str = r#"Bearer realm="scimgate", error="invalid_token""#;
const CHALLENGE_SCOPE: &str = r#"Bearer realm="scimgate", error="insufficient_scope""#;

impl ProxyError {
    /// The one table from failure to response: status, RFC 6750 challenge, SCIM `detail`
    /// (generic: specifics go to the log) and the `outcome` label.
    fn answer(&self) -> Answer {
        use StatusCode as S;
        let (status, challenge, detail, outcome) = match self {
            Self::Auth(AuthError::MissingToken) => (
                S::UNAUTHORIZED,
                Some(CHALLENGE),
                "authentication required: send Authorization: Bearer <token>",
                Outcome::MissingToken,
            ),
            Self::Auth(AuthError::InvalidToken(_)) => (
                S::UNAUTHORIZED,
                Some(CHALLENGE_INVALID),
                "the bearer token is not valid",
                Outcome::InvalidToken,
            ),
            Self::Auth(AuthError::NoMatchingRule | AuthError::OperationDenied) => (
                S::FORBIDDEN,
                Some(CHALLENGE_SCOPE),
                "the token does not grant access to this resource",
                Outcome::Forbidden,
            ),
            Self::Auth(AuthError::DuplicateAuthorization) => (
                S::BAD_REQUEST,
                None,
                "send exactly one Authorization header",
                Outcome::BadRequest,
            ),
            Self::Auth(AuthError::KeysUnavailable) => (
                S::SERVICE_UNAVAILABLE,
                None,
                "token verification is temporarily unavailable",
                Outcome::JwksUnavailable,
            ),
            Self::Request(RequestError::AmbiguousPath) => (
                S::BAD_REQUEST,
                None,
                "ambiguous request path: dot or empty segments, encoded slashes or ; parameters are not forwarded",
                Outcome::BadRequest,
            ),
            Self::Request(RequestError::UnknownTenant) => (
                S::NOT_FOUND,
                None,
                "no tenant serves this path",
                Outcome::UnknownTenant,
            ),
            Self::Request(RequestError::NotFound) => (
                S::NOT_FOUND,
                None,
                "not a SCIM endpoint: scimgate forwards only the endpoints of RFC 7644 section 3",
                Outcome::NotFound,
            ),
            Self::Request(RequestError::MethodOverride) => (
                S::BAD_REQUEST,
                None,
                "method-override parameters are not forwarded: send the real method",
                Outcome::BadRequest,
            ),
            Self::Request(RequestError::UnsupportedMediaType) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send the request body as uncompressed UTF-8 application/scim+json",
                Outcome::UnsupportedMediaType,
            ),
            Self::Request(RequestError::InvalidBulk) => (
                S::BAD_REQUEST,
                None,
                "the /Bulk body must be a SCIM BulkRequest with method and path on every operation",
                Outcome::BadRequest,
            ),
            Self::Request(RequestError::BadTarget) => (
                S::BAD_REQUEST,
                None,
                "invalid request target",
                Outcome::BadRequest,
            ),
            Self::Request(RequestError::MethodNotAllowed) => (
                S::METHOD_NOT_ALLOWED,
                None,
                "method not allowed",
                Outcome::MethodNotAllowed,
            ),
            Self::Head(HeadError::Malformed) => (
                S::BAD_REQUEST,
                None,
                "malformed request: the request line or a header field is not valid HTTP/1.1",
                Outcome::BadRequest,
            ),
            Self::Head(HeadError::TooLarge) => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                None,
                "request header section too large: at most 64 KiB and 100 fields",
                Outcome::HeadersTooLarge,
            ),
            Self::Head(HeadError::Target) => (
                S::BAD_REQUEST,
                None,
                "invalid request target: percent-encode characters outside RFC 3986 in the path",
                Outcome::BadRequest,
            ),
            Self::Head(HeadError::Framing) => (
                S::BAD_REQUEST,
                None,
                "ambiguous message framing: send one Content-Length, or Transfer-Encoding: chunked alone",
                Outcome::BadRequest,
            ),
            Self::Request(RequestError::PayloadTooLarge)
            | Self::Upstream(UpstreamError::BodyTooLarge) => (
                S::PAYLOAD_TOO_LARGE,
                None,
                "request body too large",
                Outcome::PayloadTooLarge,
            ),
            Self::Upstream(UpstreamError::Unavailable(_)) => (
                S::BAD_GATEWAY,
                None,
                "upstream unavailable",
                Outcome::UpstreamUnavailable,
            ),
            Self::Upstream(UpstreamError::Timeout) => (
                S::GATEWAY_TIMEOUT,
                None,
                "upstream timed out",
                Outcome::UpstreamTimeout,
            ),
            Self::UpstreamWithheld(_) => (
                S::BAD_GATEWAY,
                None,
                "the upstream's response was withheld",
                Outcome::UpstreamWithheld,
            ),
            Self::UpstreamRejectedCredential => (
                S::BAD_GATEWAY,
                None,
                "upstream rejected the service account credential",
                Outcome::UpstreamRejectedCredential,
            ),
            Self::Request(RequestError::UnreadableBody) => (
                S::BAD_REQUEST,
                None,
                "the request body could not be read",
                Outcome::BadRequest,
            ),
            Self::RequestTimeout => (
                S::REQUEST_TIMEOUT,
                None,
                "request timed out",
                Outcome::RequestTimeout,
            ),
            // Its own table: some of its details name the configured attribute.
            Self::Guard(refused) => return guard_answer(refused),
        };
        Answer {
            status,
            challenge,
            detail: Cow::Borrowed(detail),
            outcome,
            retry_after: None,
        }
    }

    /// The SCIM error response for this failure and its `outcome` label (for metrics and the
    /// audit line). The detail is generic: specifics go to the log.
    pub(crate) fn respond(self) -> (Outcome, Response<ResponseBody>) {
        let answer = self.answer();
        let mut response = Response::new(ResponseBody::full(scim::error_body(
            answer.status,
            &answer.detail,
        )));
        *response.status_mut() = answer.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(scim::CONTENT_TYPE));
        if let Some(challenge) = answer.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(seconds) = answer.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if answer.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
            );
        }
        (answer.outcome, response)
    }
}

/// The answers to guardrail refusals: 403 `insufficient_scope` for what the token's rule may
/// not do, 429 with `Retry-After` for a rate or budget that frees up, 413 for a `/Bulk` that
/// can never fit the budget, 400 for a body or `X-Forwarded-For` that cannot be judged.
fn guard_answer(refused: &GuardError) -> Answer {
    use StatusCode as S;
    let (status, challenge, detail, outcome): (_, _, Cow<'static, str>, _) = match refused {
        GuardError::SourceIp => (
            S::FORBIDDEN,
            Some(CHALLENGE_SCOPE),
            "this client may not call from its address".into(),
            Outcome::Guardrail,
        ),
        GuardError::ProtectedGroup => (
            S::FORBIDDEN,
            Some(CHALLENGE_SCOPE),
            "this client may not modify that group".into(),
            Outcome::Guardrail,
        ),
        GuardError::DeniedAttribute { attribute } => (
            S::FORBIDDEN,
            Some(CHALLENGE_SCOPE),
            format!("this client may not write the attribute {attribute}").into(),
            Outcome::Guardrail,
        ),
        GuardError::RateLimited { .. } => (
            S::TOO_MANY_REQUESTS,
            None,
            "rate limit exceeded: retry after the time in Retry-After".into(),
            Outcome::Guardrail,
        ),
        GuardError::DeprovisionBudget { .. } => (
            S::TOO_MANY_REQUESTS,
            None,
            "deprovisioning budget exhausted: deletes and deactivations are paused until Retry-After"
                .into(),
            Outcome::Guardrail,
        ),
        GuardError::OverBudget { .. } => (
            S::PAYLOAD_TOO_LARGE,
            None,
            "the request carries more deletes and deactivations than the whole budget allows"
                .into(),
            Outcome::Guardrail,
        ),
        GuardError::ForwardedFor => (
            S::BAD_REQUEST,
            None,
            "X-Forwarded-For from a trusted proxy is not a list of IP addresses".into(),
            Outcome::BadRequest,
        ),
        GuardError::Unjudgeable(_) => (
            S::BAD_REQUEST,
            None,
            "the request body is not one scimgate can judge: send strict SCIM JSON".into(),
            Outcome::BadRequest,
        ),
        GuardError::BodyNotRead => (
            S::INTERNAL_SERVER_ERROR,
            None,
            "internal error".into(),
            Outcome::Guardrail,
        ),
    };
    Answer {
        status,
        challenge,
        detail,
        outcome,
        retry_after: refused.retry_after(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenRejection;
    use crate::screen::Withheld;

    #[test]
    fn challenges_follow_rfc6750() {
        let respond = |e: ProxyError| e.respond().1;
        let r = respond(ProxyError::Auth(AuthError::MissingToken));
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="scimgate""#);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/scim+json");
        let r = respond(ProxyError::Auth(AuthError::InvalidToken(
            TokenRejection::Expired,
        )));
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="scimgate", error="invalid_token""#
        );
        let r = respond(ProxyError::Auth(AuthError::NoMatchingRule));
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="scimgate", error="insufficient_scope""#
        );
        let r = respond(ProxyError::UpstreamRejectedCredential);
        assert_eq!(r.status(), 502);
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    /// A response withheld because it held the key is its own outcome, so the alert on it
    /// cannot be mistaken for (or drowned in) an unavailable upstream.
    #[test]
    fn a_leaked_key_is_counted_as_withheld() {
        for withheld in [
            Withheld::Key,
            Withheld::TooLarge(1),
            Withheld::Coding("br".into()),
            Withheld::Read("x".into()),
        ] {
            let (outcome, response) = ProxyError::UpstreamWithheld(withheld).respond();
            assert_eq!(outcome, Outcome::UpstreamWithheld);
            assert_eq!(response.status(), 502);
        }
        let (outcome, _) = ProxyError::Upstream(UpstreamError::Unavailable("x".into())).respond();
        assert_eq!(outcome, Outcome::UpstreamUnavailable);
    }
}
