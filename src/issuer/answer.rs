//! The one table from a token-endpoint refusal to its response (RFC 6749 §5.2), and the
//! outcome labels the metrics count.
//!
//! [`Refusal::answer`] is one exhaustive match: a new refusal cannot be added without deciding
//! its status, error code, description and outcome here. Every `invalid_client` reads the same
//! to the caller ("client authentication failed"), so an unknown client id, a wrong secret and a
//! rejected assertion cannot be told apart from outside; the audit line (`audit.rs`) says which it was.

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use super::token::{MintError, Minted};
use crate::auth::{AuthError, TokenRejection};

/// How a token request ended: the `outcome` label of `scimgate_token_requests_total` (and the
/// audit line's `outcome`). `Issued` is also what `scimgate_tokens_issued_total` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    Issued,
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// 429: too many failed attempts for the client id or the peer.
    RateLimited,
    /// 405: not a POST.
    MethodNotAllowed,
    /// 503: an assertion issuer's keys could not be loaded, or the replay memory is full.
    Unavailable,
    /// 500: signing failed.
    ServerError,
}

impl TokenOutcome {
    /// Every value, for creating each series at startup.
    pub const ALL: &'static [Self] = &[
        Self::Issued,
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::RateLimited,
        Self::MethodNotAllowed,
        Self::Unavailable,
        Self::ServerError,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::RateLimited => "rate_limited",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// Why a token request was refused. Logged in the audit line; the caller sees only the
/// error code and a fixed description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Seconds until the window ends.
    RateLimited(u64),
    MethodNotAllowed,
    QueryParameters,
    UnsupportedMediaType,
    BodyTooLarge,
    MalformedBody,
    DuplicateParameter,
    MissingGrantType,
    UnsupportedGrantType,
    DuplicateAuthorization,
    SeveralAuthMethods,
    NoClientAuthentication,
    /// An `Authorization` header that is not usable Basic client credentials.
    UnusableAuthorization,
    /// `client_id` or `client_secret` in the body outside RFC 6749 Appendix A's VSCHAR.
    MalformedClientParameter,
    MissingClientId,
    /// `client_id` in the body names another client than the credentials.
    ClientIdMismatch,
    /// Only one of `client_assertion` and `client_assertion_type`.
    IncompleteAssertion,
    UnsupportedAssertionType,
    UnknownClient,
    /// The client exists but is not configured for the method it used.
    WrongMethod,
    BadSecret,
    AssertionRejected(TokenRejection),
    WrongSubject,
    AssertionReplayed,
    AssertionKeysUnavailable,
    ReplayMemoryFull,
    /// Authenticated, but its `not_before` is still ahead.
    NotYetActive,
    InvalidScope,
    Mint(MintError),
}

/// How one refusal is answered.
struct Answer {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    outcome: TokenOutcome,
}

const AUTH_FAILED: &str = "client authentication failed";
/// RFC 9110 §15.5.2: every 401 carries a challenge; RFC 6749 §5.2: Basic is what we accept.
const CHALLENGE: &str = r#"Basic realm="scimgate""#;
/// When the assertion issuer's keys are back is not known; a Retry-After lets clients back off.
const UNAVAILABLE_RETRY: u64 = 30;

impl Refusal {
    fn answer(&self) -> Answer {
        use StatusCode as S;
        use TokenOutcome as O;
        let (status, error, description, outcome) = match self {
            Self::RateLimited(_) => (
                S::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many failed attempts; retry later",
                O::RateLimited,
            ),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "invalid_request",
                "the token endpoint accepts POST only",
                O::MethodNotAllowed,
            ),
            Self::QueryParameters => (
                S::BAD_REQUEST,
                "invalid_request",
                "parameters belong in the request body, not the URL",
                O::InvalidRequest,
            ),
            Self::UnsupportedMediaType => (
                S::BAD_REQUEST,
                "invalid_request",
                "send an unencoded application/x-www-form-urlencoded body",
                O::InvalidRequest,
            ),
            Self::BodyTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
                O::InvalidRequest,
            ),
            Self::MalformedBody => (
                S::BAD_REQUEST,
                "invalid_request",
                "the form body does not decode",
                O::InvalidRequest,
            ),
            Self::DuplicateParameter => (
                S::BAD_REQUEST,
                "invalid_request",
                "a parameter is included more than once",
                O::InvalidRequest,
            ),
            Self::MissingGrantType => (
                S::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
                O::InvalidRequest,
            ),
            Self::UnsupportedGrantType => (
                S::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
                O::UnsupportedGrantType,
            ),
            Self::DuplicateAuthorization => (
                S::BAD_REQUEST,
                "invalid_request",
                "more than one Authorization header",
                O::InvalidRequest,
            ),
            Self::SeveralAuthMethods => (
                S::BAD_REQUEST,
                "invalid_request",
                "use exactly one client authentication method",
                O::InvalidRequest,
            ),
            Self::MalformedClientParameter => (
                S::BAD_REQUEST,
                "invalid_request",
                "client_id and client_secret must be printable ASCII",
                O::InvalidRequest,
            ),
            Self::MissingClientId => (
                S::BAD_REQUEST,
                "invalid_request",
                "client_id is required with client_secret",
                O::InvalidRequest,
            ),
            Self::ClientIdMismatch => (
                S::BAD_REQUEST,
                "invalid_request",
                "client_id does not match the client credentials",
                O::InvalidRequest,
            ),
            Self::IncompleteAssertion => (
                S::BAD_REQUEST,
                "invalid_request",
                "send client_assertion and client_assertion_type together",
                O::InvalidRequest,
            ),
            Self::NoClientAuthentication
            | Self::UnusableAuthorization
            | Self::UnsupportedAssertionType
            | Self::UnknownClient
            | Self::WrongMethod
            | Self::BadSecret
            | Self::AssertionRejected(_)
            | Self::WrongSubject
            | Self::AssertionReplayed => (
                S::UNAUTHORIZED,
                "invalid_client",
                AUTH_FAILED,
                O::InvalidClient,
            ),
            Self::AssertionKeysUnavailable | Self::ReplayMemoryFull => (
                S::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "client assertions cannot be checked right now",
                O::Unavailable,
            ),
            Self::NotYetActive => (
                S::BAD_REQUEST,
                "unauthorized_client",
                "the client may not obtain tokens yet",
                O::UnauthorizedClient,
            ),
            Self::InvalidScope => (
                S::BAD_REQUEST,
                "invalid_scope",
                "the requested scope is malformed or not granted to this client",
                O::InvalidScope,
            ),
            Self::Mint(_) => (
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "the token could not be issued",
                O::ServerError,
            ),
        };
        Answer {
            status,
            error,
            description,
            outcome,
        }
    }

    /// The `outcome` label this refusal counts under.
    pub(super) fn outcome(&self) -> TokenOutcome {
        self.answer().outcome
    }

    /// The audit line's `reason`: which refusal, as a fixed snake_case word.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "rate_limited",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::QueryParameters => "query_parameters",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge => "body_too_large",
            Self::MalformedBody => "malformed_body",
            Self::DuplicateParameter => "duplicate_parameter",
            Self::MissingGrantType => "missing_grant_type",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::DuplicateAuthorization => "duplicate_authorization",
            Self::SeveralAuthMethods => "several_auth_methods",
            Self::NoClientAuthentication => "no_client_authentication",
            Self::UnusableAuthorization => "unusable_authorization",
            Self::MalformedClientParameter => "malformed_client_parameter",
            Self::MissingClientId => "missing_client_id",
            Self::ClientIdMismatch => "client_id_mismatch",
            Self::IncompleteAssertion => "incomplete_assertion",
            Self::UnsupportedAssertionType => "unsupported_assertion_type",
            Self::UnknownClient => "unknown_client",
            Self::WrongMethod => "wrong_method",
            Self::BadSecret => "bad_secret",
            Self::AssertionRejected(_) => "assertion_rejected",
            Self::WrongSubject => "wrong_subject",
            Self::AssertionReplayed => "assertion_replayed",
            Self::AssertionKeysUnavailable => "assertion_keys_unavailable",
            Self::ReplayMemoryFull => "replay_memory_full",
            Self::NotYetActive => "not_yet_active",
            Self::InvalidScope => "invalid_scope",
            Self::Mint(_) => "mint_failed",
        }
    }

    /// Whether this refusal counts as a failed attempt (the rate limit's input): every fault
    /// of the caller's, none of ours, and not the 429 itself.
    pub(super) fn is_failure(&self) -> bool {
        !matches!(
            self,
            Self::RateLimited(_)
                | Self::AssertionKeysUnavailable
                | Self::ReplayMemoryFull
                | Self::Mint(_)
        )
    }

    /// Whether it was an attempt to authenticate as the named client that failed: those count
    /// against that client id too.
    pub(super) fn is_failed_authentication(&self) -> bool {
        matches!(
            self,
            Self::WrongMethod
                | Self::BadSecret
                | Self::AssertionRejected(_)
                | Self::WrongSubject
                | Self::AssertionReplayed
        )
    }

    /// The verifier's reason for a rejected assertion (`DenyReason` label), for the audit.
    pub(super) fn assertion_detail(&self) -> Option<&'static str> {
        if let Self::AssertionRejected(r) = self {
            Some(AuthError::InvalidToken(*r).reason().as_str())
        } else {
            None
        }
    }

    /// The response: RFC 6749 §5.2 JSON, never cached.
    pub(super) fn response(&self) -> TokenResponse {
        let answer = self.answer();
        let body = json!({ "error": answer.error, "error_description": answer.description });
        let mut response = TokenResponse::json(answer.status, &body, answer.outcome);
        let headers = &mut response.headers;
        if let Self::RateLimited(secs) = self {
            headers.insert(RETRY_AFTER, HeaderValue::from(*secs));
        }
        if answer.outcome == TokenOutcome::Unavailable {
            headers.insert(RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY));
        }
        if answer.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("POST"));
        }
        if answer.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        response
    }
}

/// The token endpoint's answer, for the listener to send as is.
#[derive(Debug)]
pub struct TokenResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub outcome: TokenOutcome,
}

impl TokenResponse {
    /// RFC 6749 §5.1: the token as JSON, with `Cache-Control: no-store` and `Pragma: no-cache`.
    pub fn issued(minted: &Minted) -> Self {
        let body = json!({
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": minted.exp.saturating_sub(minted.iat),
            "scope": minted.scope,
        });
        Self::json(StatusCode::OK, &body, TokenOutcome::Issued)
    }

    fn json(status: StatusCode, body: &serde_json::Value, outcome: TokenOutcome) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        Self {
            status,
            headers,
            body: body.to_string().into_bytes(),
            outcome,
        }
    }
}
