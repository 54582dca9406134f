//! What a token-cache miss costs beyond the signature check:
//! `cargo run --release --example verify_cost -- DIR [ROUNDS]`, with DIR as `examples/mint.rs`
//! wrote it (`jwks.json`, `tokens-rs256.txt`, `tokens-es256.txt`).
//!
//! For RS256 and ES256, over the same keys and tokens, µs per call (one thread, wall time) in
//! ROUNDS × 200 batches of 10 tokens, each batch timing the three ways over the same tokens back
//! to back: the medians over batches (a batch that was preempted on a busy machine is an
//! outlier the median skips), and the median of each batch's `miss − verify`, so the
//! difference compares calls a fraction of a millisecond apart:
//!
//! - `raw`: aws-lc-rs's `ParsedPublicKey::verify_sig` with the key parsed once: the arithmetic;
//! - `verify`: `jsonwebtoken::crypto::verify` with the `DecodingKey` scimgate's JWKS parser
//!   builds: the signature verification as `jsonwebtoken::decode` does it (it rebuilds the
//!   aws-lc key from the JWK's numbers on every call and base64-decodes the signature);
//! - `miss`: `Verifier::verify` with `token_cache_size = 0` over distinct tokens, the whole
//!   miss path (digest, header policy, key selection, decode, claim checks), its JWKS fetched
//!   once from a loopback responder this program runs.
//!
//! `miss − verify` is what the issue bounds (≤ 5 µs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use scimgate::auth::jwks::{Jwks, parse_jwks};
use scimgate::auth::verify::Verifier;
use scimgate::config::JwtConfig;
use scimgate::metrics::Metrics;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: verify_cost DIR [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(5), |r| r.parse())?;
    let jwks = std::fs::read_to_string(format!("{dir}/jwks.json"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let first = std::fs::read_to_string(format!("{dir}/tokens-rs256.txt"))?;
    let payload = first.split('.').nth(1).ok_or("not a JWT")?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    let issuer = claims["iss"].as_str().ok_or("no iss")?.to_owned();
    let verifier = runtime.block_on(verifier(jwks.clone(), issuer))?;
    let (keys, _) = parse_jwks(jwks.as_bytes(), &[Algorithm::RS256, Algorithm::ES256])?;
    let jwk_set: Value = serde_json::from_str(&jwks)?;
    for (alg, file) in [
        (Algorithm::RS256, "tokens-rs256.txt"),
        (Algorithm::ES256, "tokens-es256.txt"),
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}"))?;
        let tokens: Vec<&str> = text.lines().collect();
        let key = keys
            .iter()
            .find(|k| k.algorithms.contains(&alg))
            .ok_or("no key for the algorithm")?;
        let raw = raw_key(&jwk_set, alg)?;
        let split: Vec<(&str, &str)> = tokens.iter().filter_map(|t| t.rsplit_once('.')).collect();
        let signatures: Vec<Vec<u8>> = split
            .iter()
            .map(|(_, s)| URL_SAFE_NO_PAD.decode(s))
            .collect::<Result<_, _>>()?;
        let (mut raw_us, mut verify_us, mut miss_us, mut over_us) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for batch in 0..rounds * 200 {
            let first = batch * BATCH % tokens.len();
            let indices = || (first..first + BATCH).map(|i| i % tokens.len());
            let raw_cost = per_call(|| {
                for i in indices() {
                    assert!(
                        raw.verify_sig(split[i].0.as_bytes(), &signatures[i])
                            .is_ok()
                    );
                }
            });
            let verify_cost = per_call(|| {
                for i in indices() {
                    let (message, signature) = split[i];
                    assert!(matches!(
                        jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg),
                        Ok(true)
                    ));
                }
            });
            // One `block_on` around the batch: per call, it would cost more than what is
            // measured.
            let miss_cost = per_call(|| {
                runtime.block_on(async {
                    for i in indices() {
                        assert!(verifier.verify(tokens[i]).await.is_ok(), "a token failed");
                    }
                });
            });
            raw_us.push(raw_cost);
            verify_us.push(verify_cost);
            miss_us.push(miss_cost);
            over_us.push(miss_cost - verify_cost);
        }
        let (raw, verify, miss) = (median(raw_us), median(verify_us), median(miss_us));
        let over = median(over_us);
        // One line per algorithm, read by bench/run.sh.
        println!("{alg:?}|{raw:.2}|{verify:.2}|{miss:.2}|{over:.2}");
        eprintln!(
            "{alg:?}: raw aws-lc verify {raw:.2} µs, jsonwebtoken verify {verify:.2} µs, \
             Verifier miss path {miss:.2} µs: miss path minus verification {over:.2} µs"
        );
    }
    Ok(())
}

/// Calls measured back to back per batch; each batch times the three ways over the same tokens.
/// Short, so that most batches run without being preempted and the median is such a batch.
const BATCH: usize = 10;

/// µs per call of `batch`, which makes [`BATCH`] calls.
fn per_call(batch: impl FnOnce()) -> f64 {
    let start = Instant::now();
    batch();
    start.elapsed().as_secs_f64() * 1e6 / BATCH as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

/// The key parsed once by aws-lc-rs.
fn raw_key(jwks: &Value, alg: Algorithm) -> Result<ParsedPublicKey, Error> {
    let wanted = if alg == Algorithm::RS256 { "RSA" } else { "EC" };
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kty"] == wanted))
        .ok_or("no such key")?;
    let field = |name: &str| -> Result<Vec<u8>, Error> {
        Ok(URL_SAFE_NO_PAD.decode(jwk[name].as_str().ok_or("missing member")?)?)
    };
    Ok(if alg == Algorithm::RS256 {
        let spki = RsaPublicKeyComponents {
            n: field("n")?,
            e: field("e")?,
        }
        .as_der()
        .map_err(|_| "RSA key encoding")?;
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())?
    } else {
        let mut point = vec![4u8];
        point.extend(field("x")?);
        point.extend(field("y")?);
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)?
    })
}

/// A `Verifier` with the token cache off, its keys fetched from a loopback responder.
async fn verifier(jwks: String, issuer: String) -> Result<Verifier, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    let config = JwtConfig {
        jwks_url: None,
        ca_file: None,
        issuer: Some(issuer),
        audience: vec!["scimgate".into()],
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(86_400),
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(60),
        refetch_cooldown: Duration::from_secs(30),
        max_stale: Duration::from_secs(86_400),
        token_cache_size: 0,
    };
    let metrics = Arc::new(Metrics::new()?);
    let jwks = Jwks::new(
        &config,
        format!("http://{addr}/jwks.json").parse()?,
        metrics.jwks("bench"),
    )?;
    jwks.refresh().await?;
    Ok(Verifier::new(&config, Arc::new(jwks), metrics))
}
