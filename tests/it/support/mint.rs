//! Token mint: ephemeral RSA-2048 and P-256 keys, their JWKs, and JWTs signed over exact bytes.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384,
    RSA_PSS_SHA512,
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
    Ec384(EcdsaKeyPair),
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

    /// A fresh P-384 key (ES384).
    pub fn ec384(kid: &str) -> Self {
        let kp =
            EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key generation");
        Self {
            kid: kid.to_owned(),
            material: Material::Ec384(kp),
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
            Material::Ec384(_) => "ES384",
        }
    }

    /// The RSA modulus and exponent (big-endian); `None` for EC keys.
    pub fn rsa_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.material {
            Material::Rsa(kp) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                Some((parts.n, parts.e))
            }
            Material::Ec(_) | Material::Ec384(_) => None,
        }
    }

    /// Signs `message` as `alg` (RS256/384/512 and PS256/384/512 with an RSA key; the key's own
    /// algorithm otherwise). Panics on a combination the key cannot produce.
    pub fn sign_bytes_as(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(kp) => {
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                    "RS256" => &RSA_PKCS1_SHA256,
                    "RS384" => &RSA_PKCS1_SHA384,
                    "RS512" => &RSA_PKCS1_SHA512,
                    "PS256" => &RSA_PSS_SHA256,
                    "PS384" => &RSA_PSS_SHA384,
                    "PS512" => &RSA_PSS_SHA512,
                    other => panic!("an RSA key cannot sign {other}"),
                };
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(padding, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
            Material::Ec(_) | Material::Ec384(_) => {
                assert_eq!(alg, self.alg(), "an EC key signs only its own algorithm");
                self.sign_bytes(message)
            }
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
            Material::Ec384(kp) => {
                let point = kp.public_key().as_ref();
                let (x, y) = point[1..].split_at(48);
                json!({
                    "kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES384", "crv": "P-384",
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
            Material::Ec(kp) | Material::Ec384(kp) => (
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
            Material::Ec(kp) | Material::Ec384(kp) => kp
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
        }
    }
}

/// A compact JWS over the exact bytes given, signed as `alg` (see `SigningKey::sign_bytes_as`).
pub fn sign_raw_as(header_json: &str, payload_json: &str, key: &SigningKey, alg: &str) -> String {
    let input = signing_input(header_json, payload_json);
    let sig = key.sign_bytes_as(alg, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An HMAC-signed token (`alg` HS256/HS384/HS512) over the exact header and payload given.
pub fn hmac_raw(alg: &str, header_json: &str, payload_json: &str, secret: &[u8]) -> String {
    let algorithm = match alg {
        "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
        "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
        "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
        other => panic!("not an HMAC algorithm: {other}"),
    };
    let input = signing_input(header_json, payload_json);
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(algorithm, secret),
        input.as_bytes(),
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The token with its signature segment replaced by `signature` (base64url-encoded here).
pub fn with_signature(token: &str, signature: &[u8]) -> String {
    let (input, _) = token
        .rsplit_once('.')
        .expect("a compact JWS has three parts");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The decoded signature of a compact JWS.
pub fn signature_bytes(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(signature_segment(token))
        .expect("signature is base64url")
}

/// The order n of the P-256 group, big-endian.
pub const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `a - b` for 32-byte big-endian integers with `a >= b`.
fn sub_be(a: &[u8; 32], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "a < b");
    out
}

/// The malleated twin of a P-256 `R || S` signature: `R || (n - S)`, equally valid to a
/// verifier that does not insist on low S (threats §3.3).
pub fn ecdsa_high_s(sig: &[u8]) -> Vec<u8> {
    assert_eq!(sig.len(), 64, "P-256 R || S");
    let mut out = sig[..32].to_vec();
    out.extend(sub_be(&P256_ORDER, &sig[32..]));
    out
}

/// DER `Ecdsa-Sig-Value` (SEQUENCE of two INTEGERs) for a raw `R || S` signature: the wrong
/// format for JWS (RFC 7518 §3.4).
pub fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
        let mut body = if trimmed.is_empty() { vec![0] } else { trimmed };
        if body[0] & 0x80 != 0 {
            body.insert(0, 0);
        }
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    }
    let half = sig.len() / 2;
    let mut content = integer(&sig[..half]);
    content.extend(integer(&sig[half..]));
    let mut out = vec![0x30, content.len() as u8];
    out.extend(content);
    out
}

/// The EMSA-PKCS1-v1_5 encoding of SHA-256(`message`) for a `k`-byte modulus (RFC 8017 §9.2).
/// With a public exponent of 1 this *is* a valid RS256 signature for any modulus: a verifier
/// that accepted `e = 1` keys would accept tokens anyone can forge.
pub fn pkcs1_sha256_encoding(message: &[u8], k: usize) -> Vec<u8> {
    const DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
    let t_len = DIGEST_INFO.len() + hash.as_ref().len();
    let mut em = vec![0x00, 0x01];
    em.extend(std::iter::repeat_n(0xff, k - t_len - 3));
    em.push(0x00);
    em.extend_from_slice(&DIGEST_INFO);
    em.extend_from_slice(hash.as_ref());
    em
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
