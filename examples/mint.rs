//! Mints benchmark tokens: `cargo run --release --example mint -- DIR COUNT ISSUER`.
//!
//! Writes `DIR/jwks.json` (two public keys: P-256 `bench-es` and RSA-2048 `bench-rs`),
//! `DIR/tokens-es256.txt` and `DIR/tokens-rs256.txt` (COUNT distinct tokens each, one per line,
//! valid for an hour, `groups: ["bench"]`, audience `scimgate`). One key set holds both, so one
//! scimgate serves both token kinds and each bench scenario picks its file.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use scimgate::demo::issuer::Issuer;
use serde_json::{Value, json};

/// An RS256 issuer: the demo issuer only signs ES256.
struct RsaIssuer {
    key: RsaKeyPair,
    kid: &'static str,
}

impl RsaIssuer {
    fn jwk(&self) -> Value {
        let public = self.key.public_key();
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    fn mint(&self, claims: &Value) -> Result<String, Box<dyn std::error::Error>> {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "RSA signing failed")?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, count, issuer_url] = args.as_slice() else {
        return Err("usage: mint DIR COUNT ISSUER".into());
    };
    let count: usize = count.parse()?;
    let es = Issuer::generate("bench-es")?;
    let rs = RsaIssuer {
        key: RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed")?,
        kid: "bench-rs",
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (mut es256, mut rs256) = (String::new(), String::new());
    for i in 0..count {
        let claims = json!({
            "iss": issuer_url, "aud": "scimgate", "sub": format!("client-{i}"),
            "groups": ["bench"], "iat": now, "exp": now + 3600,
        });
        es256.push_str(&es.mint(&claims)?);
        es256.push('\n');
        rs256.push_str(&rs.mint(&claims)?);
        rs256.push('\n');
    }
    let jwks = json!({ "keys": [es.jwk(), rs.jwk()] });
    std::fs::write(format!("{dir}/jwks.json"), jwks.to_string())?;
    std::fs::write(format!("{dir}/tokens-es256.txt"), es256)?;
    std::fs::write(format!("{dir}/tokens-rs256.txt"), rs256)?;
    Ok(())
}
