//! The issuer's signing keys: EC P-256 PKCS#8 PEM files; the first signs, all verify.
//!
//! Each key's `kid` is its RFC 7638 JWK thumbprint, so every replica that mounts the same files
//! names the same key the same way, and a rotated key keeps its name. The public halves form the
//! JWK Set served at `/.well-known/jwks.json`, which is also what scimgate's own verifier reads:
//! a token this issuer signs is checked by the same parser and verifier as any other.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value, json};

/// Why a key file cannot serve as a signing key. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no unencrypted private key in PEM form (expected -----BEGIN PRIVATE KEY-----)")]
    NoKey,
    #[error("more than one private key in one file; give each key its own file")]
    SeveralKeys,
    #[error(
        "an RSA key (BEGIN RSA PRIVATE KEY); the issuer signs with EC P-256 (ES256) PKCS#8 keys"
    )]
    Rsa,
    #[error(
        "a SEC1 key (BEGIN EC PRIVATE KEY); convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY`"
    )]
    Sec1,
    #[error(
        "not an EC P-256 PKCS#8 key (generate one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)"
    )]
    NotP256,
    #[error("the same key is listed twice (kid {0})")]
    Duplicate(String),
    #[error("no signing key")]
    Empty,
    #[error("signing failed in the crypto library")]
    Sign,
}

/// One key pair with its thumbprint `kid` and public JWK.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    jwk: Value,
}

/// The configured keys, in file order: `keys[0]` signs.
pub struct SigningKeys {
    keys: Vec<SigningKey>,
    rng: SystemRandom,
    /// `{"keys":[…]}`, built once: the document never changes while these keys are in use.
    jwks: String,
}

// === impl SigningKey ===

impl SigningKey {
    /// Parses a PEM file's contents: exactly one PKCS#8 private key on P-256.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let mut found = PrivateKeyDer::pem_slice_iter(pem);
        let Some(Ok(first)) = found.next() else {
            return Err(KeyError::NoKey);
        };
        if found.next().is_some() {
            return Err(KeyError::SeveralKeys);
        }
        let der = match &first {
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der(),
            PrivateKeyDer::Pkcs1(_) => return Err(KeyError::Rsa),
            PrivateKeyDer::Sec1(_) => return Err(KeyError::Sec1),
            // A future kind of key is no P-256 PKCS#8 key either.
            _ => return Err(KeyError::NoKey),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| KeyError::NotP256)?;
        Ok(Self::from_pair(pair))
    }

    fn from_pair(pair: EcdsaKeyPair) -> Self {
        // The uncompressed point: 0x04 || x || y, 32 bytes each on P-256 (SEC 1 §2.3.3).
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let kid = thumbprint(&x, &y);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "use": "sig", "alg": "ES256",
        });
        Self { pair, kid, jwk }
    }

    /// The RFC 7638 thumbprint that names this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7518 §6.2).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 §3.2: SHA-256 over the required members in lexicographic order, no whitespace.
/// `x` and `y` are base64url, which needs no JSON escaping.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

// === impl SigningKeys ===

impl SigningKeys {
    /// The keys in order; at least one, no key twice.
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::Duplicate(key.kid.clone()));
            }
        }
        let jwks = json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() }).to_string();
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
            jwks,
        })
    }

    /// The JWK Set of every key, signing key first (`/.well-known/jwks.json`).
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The `kid` of the key that signs.
    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Every `kid`, signing key first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// An ES256 JWS over `claims` with header `{"alg":"ES256","typ":"at+jwt","kid":…}`
    /// (RFC 9068 §2.1), signed by the first key.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let key = &self.keys[0];
        let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": key.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let signature = key
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| KeyError::Sign)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kids()).finish()
    }
}

/// Test keys: PEM text for a fresh key on any curve aws-lc-rs signs with.
#[cfg(test)]
pub(crate) fn test_pem(alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm) -> String {
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).expect("key generation");
    pem("PRIVATE KEY", doc.as_ref())
}

/// PEM armour around `der` (RFC 7468), for test fixtures.
#[cfg(test)]
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests;
