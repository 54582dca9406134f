//! Authentication and authorization: bearer token → verified claims → service account.
//!
//! Steps 1–3 of the pipeline (see the crate docs). Each submodule is pure or nearly so; the one
//! error type for all of them is `AuthError`, mapped to HTTP in `error.rs`.

pub mod bearer;
pub mod cache;
pub mod discovery;
pub mod fetch;
pub mod issuers;
pub mod jwks;
pub mod policy;
pub mod verify;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::metrics::DenyReason;

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
    /// Signed by scimgate's own issuer, but no longer honoured (`Issuer::admit`: its client's
    /// `not_before` moved past it, the client was removed, or it names another tenant).
    #[error("revoked by the issuer")]
    Revoked,
}

impl AuthError {
    /// The `reason` label of `scimgate_auth_decisions_total` and the audit line.
    pub fn reason(self) -> DenyReason {
        match self {
            Self::MissingToken => DenyReason::MissingToken,
            Self::DuplicateAuthorization => DenyReason::DuplicateAuthorization,
            Self::InvalidToken(TokenRejection::Malformed) => DenyReason::Malformed,
            Self::InvalidToken(TokenRejection::TooLarge) => DenyReason::TooLarge,
            Self::InvalidToken(TokenRejection::DisallowedAlgorithm) => {
                DenyReason::DisallowedAlgorithm
            }
            Self::InvalidToken(TokenRejection::UnsupportedHeader) => DenyReason::UnsupportedHeader,
            Self::InvalidToken(TokenRejection::UnknownKey) => DenyReason::UnknownKey,
            Self::InvalidToken(TokenRejection::BadSignature) => DenyReason::BadSignature,
            Self::InvalidToken(TokenRejection::Expired) => DenyReason::Expired,
            Self::InvalidToken(TokenRejection::NotYetValid) => DenyReason::NotYetValid,
            Self::InvalidToken(TokenRejection::LifetimeTooLong) => DenyReason::LifetimeTooLong,
            Self::InvalidToken(TokenRejection::WrongIssuer) => DenyReason::WrongIssuer,
            Self::InvalidToken(TokenRejection::WrongAudience) => DenyReason::WrongAudience,
            Self::InvalidToken(TokenRejection::Revoked) => DenyReason::Revoked,
            Self::NoMatchingRule => DenyReason::NoRule,
            Self::OperationDenied => DenyReason::OperationDenied,
            Self::KeysUnavailable => DenyReason::JwksUnavailable,
        }
    }
}

/// A token whose signature and claims passed every check: what the verifier returns and the
/// validated-token cache holds.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Shared so a cache hit costs a reference count, not a copy (the clone is the whole
    /// cost of a hit: nothing here allocates).
    pub claims: Arc<Map<String, Value>>,
    /// SHA-256 of the token string: the cache key, and (its prefix) the access log's digest.
    pub digest: [u8; 32],
}
