//! Step 2: token → verified claims. Header policy, key selection, signature, then claim checks.
//!
//! The header is inspected before any key is chosen (RFC 8725 §3.1); the `Validation` used for the
//! signature is built for an algorithm the selected key supports, never taken from the header alone.
//! Claims are only read after the signature verifies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::cache::TokenCache;
use super::jwks::{Jwks, VerifyKey};
use super::{AuthError, TokenRejection, VerifiedToken};
use crate::config::JwtConfig;
use crate::metrics::Metrics;
use crate::strict_json::{StrictValue, parse_object};

/// `typ` values accepted (RFC 7519 §5.1, RFC 9068 §2.1), compared case-insensitively.
const ACCEPTED_TYP: &[&str] = &["jwt", "at+jwt", "application/at+jwt"];
/// Header parameters that change how the token must be processed and that we do not implement:
/// critical extensions, nesting, encryption, compression, unencoded payloads. Presence → reject.
const REJECTED_HEADER_PARAMS: &[&str] = &["crit", "cty", "enc", "zip", "b64"];

/// What the JOSE header says, after policy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Verifies tokens against the JWKS cache and the `[jwt]` settings.
pub struct Verifier {
    jwks: Arc<Jwks>,
    pub checks: ClaimChecks,
    cache: TokenCache,
    metrics: Arc<Metrics>,
}

/// The claim-level settings, with one prepared `Validation` per allowed algorithm.
pub struct ClaimChecks {
    allowed: Vec<Algorithm>,
    validations: HashMap<Algorithm, Validation>,
    issuer: bool,
    audience: bool,
    leeway: u64,
    max_lifetime: u64,
}

// === impl Verifier ===

impl Verifier {
    pub fn new(config: &JwtConfig, jwks: Arc<Jwks>, metrics: Arc<Metrics>) -> Self {
        Self {
            jwks,
            checks: ClaimChecks::new(config),
            cache: TokenCache::new(config.token_cache_size, config.leeway),
            metrics,
        }
    }

    /// Runs every check on a bearer token (as [`bearer_token`](super::bearer::bearer_token)
    /// returned it, its syntax checked), or finds it in the validated-token cache. Waits only
    /// for keys, and fetches them only through the JWKS cache's rate-limited paths.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let now = now();
        let digest = TokenCache::key(token);
        let current = self.jwks.current();
        if let Some(keys) = &current {
            if let Some(verified) = self.cache.get(&digest, keys.generation, now) {
                self.metrics.token_cache_hit();
                return Ok(verified);
            }
            if self.cache.is_enabled() {
                self.metrics.token_cache_miss();
            }
        }
        let header =
            inspect_header(token, &self.checks.allowed).map_err(AuthError::InvalidToken)?;
        // The refetches are boxed: a JWKS fetch future is about 1 KiB and rarely runs, and
        // inline it would enlarge every request's future, whose space hyper holds for every
        // open connection.
        let mut keys = match current {
            Some(keys) => keys,
            None => Box::pin(self.jwks.refetch_after(None))
                .await
                .ok_or(AuthError::KeysUnavailable)?,
        };
        if let Some(kid) = header.kid.as_deref()
            && !keys.has_kid(kid)
            && let Some(newer) = Box::pin(self.jwks.refetch_after(Some(keys.generation))).await
        {
            keys = newer;
        }
        let candidates = keys.candidates(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            let unknown = header.kid.as_deref().is_none_or(|kid| !keys.has_kid(kid));
            let rejection = if unknown {
                TokenRejection::UnknownKey
            } else {
                TokenRejection::DisallowedAlgorithm
            };
            return Err(AuthError::InvalidToken(rejection));
        }
        let claims = self
            .checks
            .verify(token, header.alg, &candidates, now)
            .map_err(AuthError::InvalidToken)?;
        let verified = VerifiedToken {
            claims: Arc::new(claims),
            digest,
        };
        self.cache
            .insert(digest, &verified, token.len(), keys.generation);
        Ok(verified)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks the compact form and the JOSE header (RFC 7515 §5.2) without touching the payload.
pub fn inspect_header(token: &str, allowed: &[Algorithm]) -> Result<TokenHeader, TokenRejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let fields = parse_object(&bytes).ok_or(TokenRejection::Malformed)?;
    let alg = match fields
        .get("alg")
        .and_then(Value::as_str)
        .map(str::parse::<Algorithm>)
    {
        Some(Ok(alg)) if allowed.contains(&alg) => alg,
        Some(_) => return Err(TokenRejection::DisallowedAlgorithm),
        None => return Err(TokenRejection::Malformed),
    };
    if REJECTED_HEADER_PARAMS
        .iter()
        .any(|p| fields.contains_key(*p))
    {
        return Err(TokenRejection::UnsupportedHeader);
    }
    match fields.get("typ") {
        None => {}
        Some(Value::String(typ)) if ACCEPTED_TYP.iter().any(|t| t.eq_ignore_ascii_case(typ)) => {}
        Some(_) => return Err(TokenRejection::UnsupportedHeader),
    }
    // jku, x5u, jwk and x5c are ignored: keys come only from the configured JWKS (RFC 8725 §3.10).
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenRejection::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

// === impl ClaimChecks ===

impl ClaimChecks {
    /// The configured algorithm allow-list.
    pub fn allowed(&self) -> &[Algorithm] {
        &self.allowed
    }

    pub fn new(config: &JwtConfig) -> Self {
        let mut required = vec!["exp"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if !config.audience.is_empty() {
            required.push("aud");
        }
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.algorithms = vec![alg];
                v.set_required_spec_claims(&required);
                v.validate_exp = true;
                v.validate_nbf = true;
                v.leeway = config.leeway.as_secs();
                match &config.issuer {
                    Some(iss) => v.set_issuer(&[iss]),
                    None => v.iss = None,
                }
                if config.audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&config.audience);
                }
                (alg, v)
            })
            .collect();
        Self {
            allowed: config.algorithms.clone(),
            validations,
            issuer: config.issuer.is_some(),
            audience: !config.audience.is_empty(),
            leeway: config.leeway.as_secs(),
            max_lifetime: config.max_lifetime.as_secs(),
        }
    }

    /// Verifies the signature with the first candidate that accepts it, then checks the claims.
    pub fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        candidates: &[&VerifyKey],
        now: u64,
    ) -> Result<Map<String, Value>, TokenRejection> {
        let validation = self
            .validations
            .get(&alg)
            .ok_or(TokenRejection::DisallowedAlgorithm)?;
        let mut last = TokenRejection::UnknownKey;
        for key in candidates {
            match jsonwebtoken::decode::<StrictValue>(token, &key.key, validation) {
                Ok(data) => {
                    let Value::Object(claims) = data.claims.0 else {
                        return Err(TokenRejection::Malformed);
                    };
                    self.check_claims(&claims, now)?;
                    return Ok(claims);
                }
                Err(e) => {
                    last = rejection(e.kind());
                    if last != TokenRejection::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// What jsonwebtoken leaves to us (threats §3.3): `iss` must be a single string, `aud` a
    /// string or array of strings, `exp` strictly after now, `iat` not in the future, and the
    /// lifetime bounded.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<(), TokenRejection> {
        if self.issuer && !claims.get("iss").is_some_and(Value::is_string) {
            return Err(TokenRejection::WrongIssuer);
        }
        if self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(_)) => true,
                Some(Value::Array(items)) => items.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(TokenRejection::WrongAudience);
            }
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(TokenRejection::Malformed)?;
        let (now_f, leeway, max) = (now as f64, self.leeway as f64, self.max_lifetime as f64);
        // RFC 7519 §4.1.4: the current time MUST be before `exp`. jsonwebtoken also accepts
        // the second `exp` names itself (it refuses only `exp < now - leeway`).
        if exp + leeway <= now_f {
            return Err(TokenRejection::Expired);
        }
        if exp - now_f > max + leeway {
            return Err(TokenRejection::LifetimeTooLong);
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_f64().ok_or(TokenRejection::Malformed)?;
            if iat > now_f + leeway {
                return Err(TokenRejection::NotYetValid);
            }
            if exp - iat > max {
                return Err(TokenRejection::LifetimeTooLong);
            }
        }
        Ok(())
    }
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "jsonwebtoken's ErrorKind is non_exhaustive"
)]
fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenRejection::BadSignature,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            TokenRejection::DisallowedAlgorithm
        }
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenRejection::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenRejection::WrongAudience,
        _ => TokenRejection::Malformed,
    }
}

#[cfg(test)]
mod tests;
