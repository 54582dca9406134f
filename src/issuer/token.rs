//! RFC 9068 JWT access tokens: the claims of one issued token, signed by the first key.
//!
//! The registered claims are written after the client's configured ones, so even a config that
//! slipped past validation could not replace `iss`, `sub`, `aud`, `exp` or `scope`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::config::{ClientConfig, IssuerConfig};
use super::keys::{KeyError, SigningKeys};

/// One signed token and what the audit line and the response say about it.
#[derive(Debug)]
pub struct Minted {
    /// The compact JWS. Never logged.
    pub token: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    /// The granted scopes, space-delimited (RFC 6749 §3.3).
    pub scope: String,
}

/// Why no token was minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("no client {0:?} in [[issuer.clients]]")]
    UnknownClient(String),
    #[error("the lifetime must be at least 1s")]
    ZeroLifetime,
    #[error("the lifetime exceeds the bound ({0})")]
    TooLong(&'static str),
    #[error(
        "the client's not_before is later than now: a token issued now would be refused at once"
    )]
    NotYetActive,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A fresh `jti`: 128 random bits (RFC 9068 §2.2 asks for a unique identifier).
pub fn new_jti() -> Result<String, KeyError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Sign)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The claims of a token for `client` with `scope` granted, valid from `now` for `lifetime`.
pub fn claims(
    config: &IssuerConfig,
    client: &ClientConfig,
    scope: &str,
    now: u64,
    lifetime: Duration,
    jti: &str,
) -> Map<String, Value> {
    let mut claims = client.claims.clone();
    let registered = [
        ("iss", Value::from(config.url.as_str())),
        ("sub", Value::from(client.client_id.as_str())),
        ("client_id", Value::from(client.client_id.as_str())),
        (
            "aud",
            Value::from(config.audience(client.tenant.as_deref())),
        ),
        ("iat", Value::from(now)),
        ("exp", Value::from(now.saturating_add(lifetime.as_secs()))),
        ("jti", Value::from(jti)),
        ("scope", Value::from(scope)),
    ];
    for (name, value) in registered {
        claims.insert(name.to_owned(), value);
    }
    claims
}

/// Signs a token for `client`. `scope` must already be a subset of the client's (the endpoint
/// checks the request; `token mint` grants the full list).
pub fn mint(
    keys: &SigningKeys,
    config: &IssuerConfig,
    client: &ClientConfig,
    scope: &str,
    now: u64,
    lifetime: Duration,
) -> Result<Minted, MintError> {
    if lifetime.as_secs() == 0 {
        return Err(MintError::ZeroLifetime);
    }
    if client.not_before.is_some_and(|nb| now < nb) {
        return Err(MintError::NotYetActive);
    }
    let jti = new_jti()?;
    let claims = claims(config, client, scope, now, lifetime, &jti);
    Ok(Minted {
        token: keys.sign(&claims)?,
        jti,
        iat: now,
        exp: now.saturating_add(lifetime.as_secs()),
        scope: scope.to_owned(),
    })
}

#[cfg(test)]
mod tests;
