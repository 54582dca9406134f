//! Test support for the issuer: key files, configs from TOML, a loopback JWKS server, the real
//! `Verifier` over it, and an RS256 signer standing in for Entra.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use figment::Figment;
use figment::providers::{Format, Toml};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::config::{RawIssuer, Tenancy, validate};
use super::{Issuer, IssuerConfig};
use crate::auth::jwks::Jwks;
use crate::auth::verify::Verifier;
use crate::config::{JwtConfig, Problem, Secrets};
use crate::metrics::Metrics;

/// A directory of its own for one test's files.
pub(crate) fn temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "scimgate-issuer-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `text` to `name` in `dir`; returns the path as TOML-ready text.
pub(crate) fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path.display().to_string()
}

/// A fresh P-256 PKCS#8 PEM key file in `dir`.
pub(crate) fn key_file(dir: &std::path::Path, name: &str) -> String {
    let pem = super::keys::test_pem(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    write(dir, name, &pem)
}

/// `[issuer]` TOML (without the table header) → raw.
pub(crate) fn raw(toml: &str) -> RawIssuer {
    Figment::from(Toml::string(toml))
        .extract()
        .expect("test TOML has the raw shape")
}

/// Validates `toml` in a single-tenant config: the config, or every problem.
pub(crate) fn check(toml: &str, tenancy: Tenancy<'_>) -> Result<IssuerConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    match validate(
        &raw(toml),
        tenancy,
        Secrets::Required,
        &mut problems,
        &mut warnings,
    ) {
        Some(config) if problems.is_empty() => Ok(config),
        Some(_) | None => Err(problems),
    }
}

/// Serves `body` as JSON to every request on a loopback port, until the runtime ends.
pub(crate) async fn serve(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}/keys")
}

/// The bearer-token `Verifier` over the keys at `jwt.jwks_url`, as the proxy builds it.
pub(crate) fn verifier(jwt: &JwtConfig) -> Verifier {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let url = jwt.jwks_url.clone().expect("a JWKS URL");
    let jwks = Jwks::new(jwt, url, metrics.jwks("issuer-test")).expect("JWKS client");
    Verifier::new(jwt, Arc::new(jwks), metrics)
}

/// An issuer for `config`, its assertion clients verified by the real `Verifier`.
pub(crate) fn issuer(config: IssuerConfig) -> Issuer {
    Issuer::build(Arc::new(config), |_, jwt| Ok(verifier(jwt))).expect("issuer builds")
}

/// An RS256 signer with a JWKS, standing in for Entra's tenant keys.
pub(crate) struct RsaSigner {
    key: RsaKeyPair,
    kid: String,
}

impl RsaSigner {
    pub(crate) fn new(kid: &str) -> Self {
        Self {
            key: RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
            kid: kid.to_owned(),
        }
    }

    pub(crate) fn jwks(&self) -> String {
        let public = self.key.public_key();
        json!({ "keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }]})
        .to_string()
    }

    /// Signs the exact header and payload given.
    pub(crate) fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// An RS256 JWT with this signer's `kid`, `typ: JWT` as Entra sends.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_raw(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}
