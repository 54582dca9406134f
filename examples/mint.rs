//! Mints benchmark tokens: `cargo run --release --example mint -- DIR COUNT ISSUER`.
//!
//! Writes `DIR/jwks.json` (the public key) and `DIR/tokens.txt` (COUNT distinct ES256 tokens, one
//! per line, valid for an hour, `groups: ["bench"]`, audience `scimgate`).

use std::time::{SystemTime, UNIX_EPOCH};

use scimgate::demo::issuer::Issuer;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, count, issuer_url] = args.as_slice() else {
        return Err("usage: mint DIR COUNT ISSUER".into());
    };
    let count: usize = count.parse()?;
    let issuer = Issuer::generate("bench-1")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut tokens = String::new();
    for i in 0..count {
        let claims = json!({
            "iss": issuer_url, "aud": "scimgate", "sub": format!("client-{i}"),
            "groups": ["bench"], "iat": now, "exp": now + 3600,
        });
        tokens.push_str(&issuer.mint(&claims)?);
        tokens.push('\n');
    }
    std::fs::write(format!("{dir}/jwks.json"), issuer.jwks())?;
    std::fs::write(format!("{dir}/tokens.txt"), tokens)?;
    Ok(())
}
