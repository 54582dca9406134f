//! scimgate's own token issuer: `[issuer]` keys sign RFC 9068 access tokens for
//! `[[issuer.clients]]`, from the token endpoint (client secrets, Entra Workload Identity
//! Federation assertions) or from `scimgate token mint` (static-token clients such as Okta).
//!
//! Socket-free: the listener hands [`Issuer::token_endpoint`] a request's parts and sends what it
//! returns; [`Issuer::jwks_json`] and [`Issuer::metadata_json`] are the two `/.well-known`
//! documents. The tokens issued here get no shortcut: a tenant verifies them with the same
//! `Verifier` as any other token, its keys parsed from [`Issuer::jwks_json`] by the same JWKS
//! parser ([`Issuer::verification_keys`]), under [`IssuerConfig::local_jwt`]; then
//! [`Issuer::admit`] applies what only the issuer knows (`not_before`, removed clients).

mod answer;
mod audit;
pub mod config;
pub mod endpoint;
mod form;
pub mod keys;
mod limit;
pub(crate) mod serve;
pub mod token;

#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use crate::auth::jwks::{VerifyKey, parse_jwks};
use crate::auth::verify::Verifier;
use crate::config::JwtConfig;
use crate::tls::TlsError;
pub use answer::{TokenOutcome, TokenResponse};
pub use audit::AuthMethod;
pub use config::{ClientConfig, IssuerConfig};
pub use endpoint::{MAX_BODY_BYTES, TokenRequest};
use keys::{KeyError, SigningKey, SigningKeys};
use limit::{FailureLimiter, ReplayMemory};
pub use token::{MintError, Minted};

/// The issuer built from one config generation.
pub struct Issuer {
    config: Arc<IssuerConfig>,
    keys: SigningKeys,
    /// Parallel to `config.clients`: the assertion verifier of each assertion client.
    verifiers: Vec<Option<Verifier>>,
    /// Shared with the next generation when its limits are the same (`carry_over`).
    limiter: Arc<FailureLimiter>,
    /// Always shared with the next generation: a reload must not make a used `jti` new again.
    replay: Arc<ReplayMemory>,
    metadata: String,
}

/// Why an issuer could not be built from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer.signing_key_files[{index}] ({path}): {source}")]
    Key {
        index: usize,
        path: String,
        source: KeyError,
    },
    #[error("issuer.signing_key_files[{index}] ({path}) could not be read when checked")]
    Unread { index: usize, path: String },
    #[error("issuer.signing_key_files: {0}")]
    Keys(KeyError),
    #[error("issuer.clients[{index}].assertion.jwks_url: {source}")]
    AssertionKeys { index: usize, source: TlsError },
}

/// Why a token this issuer signed, with a valid signature and claims, is not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("not issued by this issuer")]
    NotOurs,
    #[error("its client is no longer configured")]
    UnknownClient,
    #[error("issued before the client's not_before")]
    BeforeNotBefore,
    #[error("issued for another tenant")]
    WrongTenant,
}

impl Issuer {
    /// Loads the signing keys and builds each assertion client's verifier with
    /// `assertion_verifier(client, settings)`: the caller owns JWKS caches and metrics, so it
    /// builds a `Jwks` for `settings.jwks_url` (sharing one per URL if it likes) and a
    /// `Verifier::new(settings, jwks, metrics)`, and runs the cache's refresh task.
    pub fn build(
        config: Arc<IssuerConfig>,
        mut assertion_verifier: impl FnMut(&ClientConfig, &JwtConfig) -> Result<Verifier, TlsError>,
    ) -> Result<Self, IssuerError> {
        let mut loaded = Vec::with_capacity(config.signing_keys.len());
        for (index, file) in config.signing_keys.iter().enumerate() {
            let path = file.path.display().to_string();
            let Some(pem) = &file.pem else {
                return Err(IssuerError::Unread { index, path });
            };
            let key = SigningKey::from_pem(pem.expose().as_bytes()).map_err(|source| {
                IssuerError::Key {
                    index,
                    path,
                    source,
                }
            })?;
            loaded.push(key);
        }
        let keys = SigningKeys::new(loaded).map_err(IssuerError::Keys)?;
        let mut verifiers = Vec::with_capacity(config.clients.len());
        for (index, client) in config.clients.iter().enumerate() {
            verifiers.push(match &client.auth {
                config::ClientAuth::Assertion(a) => Some(
                    assertion_verifier(client, &a.jwt_config())
                        .map_err(|source| IssuerError::AssertionKeys { index, source })?,
                ),
                config::ClientAuth::Secret(_) | config::ClientAuth::MintOnly => None,
            });
        }
        let limiter = Arc::new(FailureLimiter::new(
            config.failure_window.as_secs(),
            config.max_failures_per_client,
            config.max_failures_per_peer,
        ));
        let metadata = metadata(&config).to_string();
        Ok(Self {
            config,
            keys,
            verifiers,
            limiter,
            replay: Arc::new(ReplayMemory::default()),
            metadata,
        })
    }

    /// Keeps what `previous` (the generation a reload replaces) remembers: the assertions'
    /// `jti`s always, so a reload never lets an assertion be used twice, and the failure
    /// counts when the limits did not change, so a reload does not reset an attacker's budget.
    pub fn carry_over(mut self, previous: &Issuer) -> Self {
        self.replay = Arc::clone(&previous.replay);
        let (new, old) = (&self.config, &previous.config);
        if new.failure_window == old.failure_window
            && new.max_failures_per_client == old.max_failures_per_client
            && new.max_failures_per_peer == old.max_failures_per_peer
        {
            self.limiter = Arc::clone(&previous.limiter);
        }
        self
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// `GET /.well-known/jwks.json`: the public keys, signing key first.
    pub fn jwks_json(&self) -> &str {
        self.keys.jwks_json()
    }

    /// `GET /.well-known/oauth-authorization-server` (RFC 8414 §2).
    pub fn metadata_json(&self) -> &str {
        &self.metadata
    }

    /// The keys a tenant verifies this issuer's tokens with: [`Issuer::jwks_json`] read by
    /// the crate's own JWKS parser, exactly as a fetched key set would be.
    pub fn verification_keys(&self) -> Vec<VerifyKey> {
        parse_jwks(self.jwks_json().as_bytes(), &[Algorithm::ES256])
            .map(|(keys, _)| keys)
            .unwrap_or_default()
    }

    /// `scimgate token mint`: a token for `client_id` with every scope the client has, valid
    /// for `ttl`, which may be longer than the endpoint's lifetime up to `max_minted_lifetime`.
    pub fn mint(&self, client_id: &str, ttl: Duration, now: u64) -> Result<Minted, MintError> {
        let client = self
            .config
            .client(client_id)
            .ok_or_else(|| MintError::UnknownClient(client_id.to_owned()))?;
        if ttl > self.config.max_minted_lifetime {
            return Err(MintError::TooLong("issuer.max_minted_lifetime"));
        }
        token::mint(
            &self.keys,
            &self.config,
            client,
            &client.scope.join(" "),
            now,
            ttl,
        )
    }

    /// What the issuer alone knows about a token it signed, after the tenant's `Verifier`
    /// accepted it (signature, `exp`, `iss`, `aud`): its client must still be configured, for
    /// this `tenant` (`None` in a single-tenant config), and it must not predate the client's
    /// `not_before`. Revocation is this check: removing a client or moving `not_before` past a
    /// token's `iat` ends it on the next request (after a reload).
    pub fn admit(&self, claims: &Map<String, Value>, tenant: Option<&str>) -> Result<(), Revoked> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.url.as_str()) {
            return Err(Revoked::NotOurs);
        }
        let id = claims.get("client_id").and_then(Value::as_str);
        let client = id
            .filter(|id| claims.get("sub").and_then(Value::as_str) == Some(id))
            .and_then(|id| self.config.client(id))
            .ok_or(Revoked::UnknownClient)?;
        if self.config.tenancy == config::TenancyKind::Named && client.tenant.as_deref() != tenant {
            return Err(Revoked::WrongTenant);
        }
        let iat = claims.get("iat").and_then(Value::as_f64);
        match (client.not_before, iat) {
            (Some(nb), Some(iat)) if iat < nb as f64 => Err(Revoked::BeforeNotBefore),
            (Some(_), None) => Err(Revoked::BeforeNotBefore),
            (Some(_) | None, _) => Ok(()),
        }
    }
}

/// RFC 8414 §2 metadata. `response_types_supported` is required there and empty here: there is
/// no authorization endpoint.
fn metadata(config: &IssuerConfig) -> Value {
    let mut scopes: Vec<&str> = Vec::new();
    for scope in config.clients.iter().flat_map(|c| &c.scope) {
        if !scopes.contains(&scope.as_str()) {
            scopes.push(scope);
        }
    }
    let algs: Vec<String> = config::client::ASSERTION_ALGORITHMS
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    json!({
        "issuer": config.url,
        "token_endpoint": format!("{}/oauth2/token", config.base()),
        "jwks_uri": format!("{}/.well-known/jwks.json", config.base()),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "scopes_supported": scopes,
    })
}

#[cfg(test)]
mod tests;
