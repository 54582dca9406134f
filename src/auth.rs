//! Authentication and authorization: bearer token → verified claims → service account.
//!
//! Steps 1–3 of the pipeline (see the crate docs). Each submodule is pure or nearly so; the one
//! error type for all of them is `AuthError`, mapped to HTTP in `error.rs`.

pub mod bearer;
pub mod cache;
pub mod discovery;
pub mod fetch;
pub mod jwks;
pub mod policy;
pub(crate) mod strict_json;
pub mod verify;

/// Why a request was not authorized. Every variant is the client's fault except `KeysUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` credential (RFC 6750 §3.1: no error code in the challenge).
    #[error("no bearer token")]
    MissingToken,
    /// More than one `Authorization` header: a singleton field (RFC 9110 §11.6.2).
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// A token was presented and rejected.
    #[error("token rejected: {0}")]
    InvalidToken(TokenRejection),
    /// The token is valid but no rule grants it a service account.
    #[error("no rule matches the token's claims")]
    NoMatchingRule,
    /// A rule matches the token, but none permits this SCIM operation or resource type.
    #[error("the matching rules do not permit this operation")]
    OperationDenied,
    /// The issuer's keys have never loaded, or are older than `jwt.max_stale`.
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

/// Why a presented token was rejected. Logged and counted; never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("malformed token")]
    Malformed,
    #[error("token larger than the 8 KiB limit")]
    TooLarge,
    #[error("algorithm not allowed")]
    DisallowedAlgorithm,
    #[error("unsupported header parameter (crit, typ, cty, enc, zip or b64)")]
    UnsupportedHeader,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid (nbf or iat in the future)")]
    NotYetValid,
    #[error("lifetime longer than jwt.max_lifetime")]
    LifetimeTooLong,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
}

impl AuthError {
    /// The fixed `reason` label of `scimgate_auth_decisions_total` and the audit line.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::DuplicateAuthorization => "duplicate_authorization",
            Self::InvalidToken(r) => r.reason(),
            Self::NoMatchingRule => "no_rule",
            Self::OperationDenied => "op_denied",
            Self::KeysUnavailable => "jwks_unavailable",
        }
    }
}

impl AuthError {
    /// Every error, one per `reason`: the deny series of `scimgate_auth_decisions_total` are
    /// created from this at startup. It walks `next`, whose match the compiler holds to every
    /// variant: a new variant does not compile until it is given its place in the walk.
    pub fn all() -> impl Iterator<Item = Self> {
        std::iter::successors(Some(Self::MissingToken), |e| e.next())
    }

    fn next(self) -> Option<Self> {
        match self {
            Self::MissingToken => Some(Self::DuplicateAuthorization),
            Self::DuplicateAuthorization => Some(Self::InvalidToken(TokenRejection::Malformed)),
            Self::InvalidToken(r) => {
                Some(r.next().map_or(Self::NoMatchingRule, Self::InvalidToken))
            }
            Self::NoMatchingRule => Some(Self::OperationDenied),
            Self::OperationDenied => Some(Self::KeysUnavailable),
            Self::KeysUnavailable => None,
        }
    }
}

impl TokenRejection {
    /// The rejection after this one in `AuthError::all`.
    fn next(self) -> Option<Self> {
        match self {
            Self::Malformed => Some(Self::TooLarge),
            Self::TooLarge => Some(Self::DisallowedAlgorithm),
            Self::DisallowedAlgorithm => Some(Self::UnsupportedHeader),
            Self::UnsupportedHeader => Some(Self::UnknownKey),
            Self::UnknownKey => Some(Self::BadSignature),
            Self::BadSignature => Some(Self::Expired),
            Self::Expired => Some(Self::NotYetValid),
            Self::NotYetValid => Some(Self::LifetimeTooLong),
            Self::LifetimeTooLong => Some(Self::WrongIssuer),
            Self::WrongIssuer => Some(Self::WrongAudience),
            Self::WrongAudience => None,
        }
    }

    /// The fixed `reason` label for this rejection.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::UnsupportedHeader => "unsupported_header",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
        }
    }
}
