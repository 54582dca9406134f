//! Which key set verifies a token: its `iss`, read unverified only to choose, picks scimgate's
//! own issuer (local keys, then [`Issuer::admit`]) or one of the tenant's external issuers
//! (`[jwt]`, `[[jwt.extra_issuers]]`), each a `Verifier` with its own keys. The chosen
//! `Verifier` then checks everything, `iss` included, so a token naming one issuer is never
//! verified with another's keys, and a wrong choice can only fail.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::verify::Verifier;
use super::{AuthError, TokenRejection, VerifiedToken};
use crate::issuer::Issuer;
use crate::strict_json::parse_object;

/// A tenant's verifiers, one per issuer it trusts.
pub struct TenantAuth {
    /// `[jwt]` first, then `[[jwt.extra_issuers]]`; each with the `iss` it requires (`None`
    /// only for `[jwt]` without `issuer`, and then it is the only external one).
    external: Vec<(Option<String>, Verifier)>,
    local: Option<Local>,
}

/// scimgate's own issuer as one tenant sees it.
struct Local {
    issuer: Arc<Issuer>,
    /// Under `IssuerConfig::local_jwt`, with the issuer's public keys, never fetched.
    verifier: Verifier,
    /// The tenant's name with `[[tenants]]`, for `Issuer::admit`.
    tenant: Option<String>,
}

impl TenantAuth {
    /// `external`: `[jwt]`'s verifier first, then each extra issuer's with its `iss`.
    pub fn new(external: Vec<(Option<String>, Verifier)>) -> Self {
        Self {
            external,
            local: None,
        }
    }

    /// Adds scimgate's own issuer, verified by `verifier` (its local keys).
    pub fn with_local(
        mut self,
        issuer: Arc<Issuer>,
        verifier: Verifier,
        tenant: Option<String>,
    ) -> Self {
        self.local = Some(Local {
            issuer,
            verifier,
            tenant,
        });
        self
    }

    /// Verifies a bearer token (its syntax already checked) with the verifier its `iss` picks.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        // One issuer and no choice to make: its verifier checks `iss` itself, and the payload
        // is not decoded and parsed twice on every request (the cache hit included).
        if let (None, [(_, verifier)]) = (&self.local, self.external.as_slice()) {
            return verifier.verify(token).await;
        }
        let iss = unverified_iss(token);
        if let Some(local) = &self.local
            && iss.as_deref() == Some(local.issuer.config().url.as_str())
        {
            let verified = local.verifier.verify(token).await?;
            local
                .issuer
                .admit(&verified.claims, local.tenant.as_deref())
                .map_err(|revoked| {
                    tracing::debug!(reason = %revoked, "token of scimgate's issuer not honoured");
                    AuthError::InvalidToken(TokenRejection::Revoked)
                })?;
            return Ok(verified);
        }
        let named = self
            .external
            .iter()
            .find(|(expected, _)| expected.is_some() && expected.as_deref() == iss.as_deref());
        if let Some((_, verifier)) = named {
            return verifier.verify(token).await;
        }
        match self.external.first() {
            // `[jwt]` without an issuer check: any issuer its keys sign for, as without [issuer].
            Some((None, verifier)) => verifier.verify(token).await,
            // No `iss`, or one the payload hides: the primary verifier says what is wrong
            // with it (its issuer check refuses it in the end).
            Some((Some(_), verifier)) if iss.is_none() => verifier.verify(token).await,
            _ => Err(AuthError::InvalidToken(TokenRejection::WrongIssuer)),
        }
    }
}

/// The payload's `iss`, unverified: only to choose the verifier. `None` when the token has no
/// readable payload or no string `iss`.
pub fn unverified_iss(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match parse_object(&bytes)?.get("iss")? {
        Value::String(iss) => Some(iss.clone()),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            None
        }
    }
}
