//! A throwaway token issuer: an ephemeral P-256 key, its JWKS, and ES256 token minting.
//!
//! Used by `scimgate demo` and by unit tests; never by the gateway itself.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An issuer with one freshly generated signing key.
pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

/// Key generation or signing failed in the crypto library.
#[derive(Debug, thiserror::Error)]
#[error("demo issuer: crypto operation failed")]
pub struct IssuerError;

impl Issuer {
    /// Generates a new P-256 key with the given `kid`.
    pub fn generate(kid: &str) -> Result<Self, IssuerError> {
        let key =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| IssuerError)?;
        Ok(Self {
            key,
            kid: kid.to_owned(),
            rng: SystemRandom::new(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7518 §6.2): the uncompressed point is `04 || x || y`.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// `{"keys":[<jwk>]}`.
    pub fn jwks(&self) -> String {
        json!({ "keys": [self.jwk()] }).to_string()
    }

    /// Signs the exact header and payload bytes given (tests need duplicate members, odd headers).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> Result<String, IssuerError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| IssuerError)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// An ES256 JWT with this issuer's `kid` over `claims`.
    pub fn mint(&self, claims: &Value) -> Result<String, IssuerError> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        self.sign_raw(&header.to_string(), &claims.to_string())
    }
}
