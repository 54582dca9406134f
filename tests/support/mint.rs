//! Token mint: ephemeral RSA-2048 and P-256 keys, their JWKs, and JWTs signed over exact bytes.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

/// The `iss` every gateway in these tests is configured to expect.
pub const ISSUER: &str = "https://idp.scimgate.test";
/// The `aud` every gateway in these tests is configured to expect.
pub const AUDIENCE: &str = "scimgate-tests";
/// The claim value the default rule matches (`groups` contains it).
pub const PROVISIONER_GROUP: &str = "scim-provisioners";

enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key with its `kid`.
pub struct SigningKey {
    kid: String,
    material: Material,
}

/// The per-process RSA-2048 key (`kid` "rsa-1"), generated once.
pub fn rsa_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::rsa("rsa-1"))
}

/// The per-process P-256 key (`kid` "ec-1"), generated once.
pub fn ec_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::ec("ec-1"))
}

/// `{"keys":[...]}` for the given keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

impl SigningKey {
    /// A fresh RSA-2048 key.
    pub fn rsa(kid: &str) -> Self {
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation");
        Self {
            kid: kid.to_owned(),
            material: Material::Rsa(kp),
        }
    }

    /// A fresh P-256 key.
    pub fn ec(kid: &str) -> Self {
        let kp =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation");
        Self {
            kid: kid.to_owned(),
            material: Material::Ec(kp),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) => "RS256",
            Material::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWK (RFC 7517/7518), base64url without padding.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(kp) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({
                    "kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e),
                })
            }
            Material::Ec(kp) => {
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = kp.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                json!({
                    "kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        }
    }

    /// Public key encodings an attacker might use as an HMAC secret (algorithm confusion):
    /// the SubjectPublicKeyInfo DER, its PEM text, the raw key bytes, and the JWK JSON.
    pub fn public_key_encodings(&self) -> Vec<Vec<u8>> {
        let (spki, raw) = match &self.material {
            Material::Rsa(kp) => (
                kp.public_key()
                    .as_der()
                    .expect("RSA SPKI encoding")
                    .as_ref()
                    .to_vec(),
                kp.public_key().as_ref().to_vec(),
            ),
            Material::Ec(kp) => (
                kp.public_key()
                    .as_der()
                    .expect("EC SPKI encoding")
                    .as_ref()
                    .to_vec(),
                kp.public_key().as_ref().to_vec(),
            ),
        };
        let b64 = STANDARD.encode(&spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        vec![
            spki,
            pem.into_bytes(),
            raw,
            self.jwk().to_string().into_bytes(),
        ]
    }

    /// Signs `message` with this key's algorithm (RS256: PKCS#1 v1.5 SHA-256; ES256: R || S).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
            Material::Ec(kp) => kp
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
        }
    }
}

/// `base64url(header) "." base64url(payload)`: the JWS signing input over the exact bytes.
pub fn signing_input(header_json: &str, payload_json: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(payload_json)
    )
}

/// A compact JWS over the exact header and payload bytes given.
pub fn sign_raw(header_json: &str, payload_json: &str, key: &SigningKey) -> String {
    let input = signing_input(header_json, payload_json);
    let sig = key.sign_bytes(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An unsecured JWS (`alg: none`, empty signature) over `payload_json`, naming `kid`.
pub fn alg_none(payload_json: &str, kid: &str) -> String {
    let header = json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string();
    format!("{}.", signing_input(&header, payload_json))
}

/// An HS256 token whose HMAC secret is `secret` (e.g. one of the public key's encodings).
pub fn hs256(payload_json: &str, kid: &str, secret: &[u8]) -> String {
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid }).to_string();
    let input = signing_input(&header, payload_json);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The same token with one bit of its signature flipped.
pub fn corrupt_signature(token: &str) -> String {
    let (input, sig) = token
        .rsplit_once('.')
        .expect("a compact JWS has three parts");
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).expect("signature is base64url");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The signature segment of a compact JWS (what must never show up in logs).
pub fn signature_segment(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A token builder. `Token::new()` starts from a token the default gateway accepts:
/// `iss`/`aud` as configured, `sub`, `iat` now, `exp` in 5 minutes, `groups` with the provisioner
/// group, a random `jti`; header `{"alg", "typ":"JWT", "kid"}` taken from the signing key.
#[derive(Clone, Debug)]
pub struct Token {
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

impl Token {
    pub fn new() -> Self {
        let now = now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(ISSUER));
        claims.insert("aud".into(), json!(AUDIENCE));
        claims.insert("sub".into(), json!("idp-scim-client"));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 300));
        claims.insert("groups".into(), json!([PROVISIONER_GROUP]));
        // Unique per token, so two tokens minted in the same second are different strings.
        claims.insert("jti".into(), json!(super::config::random_hex(8)));
        Self {
            header: Map::new(),
            claims,
        }
    }

    /// Sets (or replaces) a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// `exp` = now + `secs` (negative: already expired).
    pub fn exp_in(self, secs: i64) -> Self {
        self.claim("exp", json!(now() + secs))
    }

    /// Sets (or replaces) a header parameter; overrides what `sign` derives from the key.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }

    /// The claims as JSON text.
    pub fn payload_json(&self) -> String {
        Value::Object(self.claims.clone()).to_string()
    }

    /// The header `sign` would use with `key`.
    pub fn header_json(&self, key: &SigningKey) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!(key.alg()));
        header.insert("typ".into(), json!("JWT"));
        header.insert("kid".into(), json!(key.kid()));
        for (k, v) in &self.header {
            header.insert(k.clone(), v.clone());
        }
        Value::Object(header).to_string()
    }

    /// Signs with `key`.
    pub fn sign(&self, key: &SigningKey) -> String {
        sign_raw(&self.header_json(key), &self.payload_json(), key)
    }
}
