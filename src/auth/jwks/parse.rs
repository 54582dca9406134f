//! JWK Set parsing: each key checked on its own, unsafe ones dropped with a reason (RFC 7517 §5).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::{FetchError, MAX_KEYS, MIN_RSA_BITS, VerifyKey};

/// Parses a JWK Set, keeping the keys that are safe to use and explaining each one dropped.
///
/// Keys are parsed one by one so one bad entry does not discard the set (RFC 7517 §5).
/// Dropped: `kty: oct` (its secret is public), `use: enc`, `key_ops` without `verify`, RSA
/// below 2048 bits, curves other than P-256/P-384/Ed25519, and algorithms outside `allowed`.
pub fn parse_jwks(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<(Vec<VerifyKey>, Vec<String>), FetchError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| FetchError::Invalid(e.to_string()))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err(FetchError::Invalid("no \"keys\" array".into()));
    };
    let mut keys = Vec::new();
    let mut dropped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let name = kid
            .clone()
            .map_or_else(|| format!("#{i} (no kid)"), |k| format!("kid {k:?}"));
        if keys.len() == MAX_KEYS {
            dropped.push(format!("{name}: more than {MAX_KEYS} keys"));
            continue;
        }
        match parse_key(entry, allowed) {
            Ok((algorithms, key)) => keys.push(VerifyKey {
                kid,
                algorithms,
                key,
            }),
            Err(reason) => dropped.push(format!("{name}: {reason}")),
        }
    }
    Ok((keys, dropped))
}

fn parse_key(
    entry: &Value,
    allowed: &[Algorithm],
) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let obj = entry.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str);
    if let Some(u) = obj.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("use {u} is not \"sig\""));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let (implied, key) = match text("kty") {
        Some("RSA") => rsa_key(obj)?,
        Some("EC") => ec_key(obj)?,
        Some("OKP") => okp_key(obj)?,
        Some("oct") => return Err("symmetric (kty oct) keys are never used".into()),
        Some(other) => return Err(format!("unsupported kty {other:?}")),
        None => return Err("missing kty".into()),
    };
    let algorithms: Vec<Algorithm> = match obj.get("alg") {
        None => implied
            .into_iter()
            .filter(|a| allowed.contains(a))
            .collect(),
        Some(alg) => {
            let alg = alg.as_str().and_then(|a| a.parse::<Algorithm>().ok());
            match alg {
                Some(a) if implied.contains(&a) && allowed.contains(&a) => vec![a],
                Some(a) if implied.contains(&a) => {
                    return Err(format!("alg {a:?} is not in jwt.algorithms"));
                }
                Some(_) | None => return Err("alg does not fit the key type".into()),
            }
        }
    };
    if algorithms.is_empty() {
        return Err("none of its algorithms is in jwt.algorithms".into());
    }
    Ok((algorithms, key))
}

fn b64_len(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(format!("missing {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

fn rsa_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let n = b64_len(obj, "n")?;
    let e = b64_len(obj, "e")?;
    let significant = n.iter().skip_while(|&&b| b == 0).count();
    let bits = n
        .iter()
        .find(|&&b| b != 0)
        .map_or(0, |first| significant * 8 - first.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!("RSA key of {bits} bits is below {MIN_RSA_BITS}"));
    }
    if e.is_empty() || e.last().is_some_and(|b| b % 2 == 0) || e == [1] {
        return Err("RSA exponent is invalid".into());
    }
    use Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
    Ok((
        vec![RS256, RS384, RS512, PS256, PS384, PS512],
        DecodingKey::from_rsa_raw_components(&n, &e),
    ))
}

fn ec_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let (alg, len) = match obj.get("crv").and_then(Value::as_str) {
        Some("P-256") => (Algorithm::ES256, 32),
        Some("P-384") => (Algorithm::ES384, 48),
        other => return Err(format!("unsupported EC curve {other:?}")),
    };
    let (x, y) = (b64_len(obj, "x")?, b64_len(obj, "y")?);
    if x.len() != len || y.len() != len {
        return Err("EC coordinates have the wrong length".into());
    }
    let key =
        DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
            .map_err(|e| format!("invalid EC key: {e}"))?;
    Ok((vec![alg], key))
}

fn okp_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("unsupported OKP curve (only Ed25519)".into());
    }
    let x = b64_len(obj, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key has the wrong length".into());
    }
    let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x))
        .map_err(|e| format!("invalid Ed25519 key: {e}"))?;
    Ok((vec![Algorithm::EdDSA], key))
}
