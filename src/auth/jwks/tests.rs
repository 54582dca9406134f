//! JWKS parsing: unsafe keys dropped one by one, good keys kept (threats T02, T09, T36).

use super::*;
use crate::demo::issuer::Issuer;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use serde_json::json;

const ALL: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn rsa_jwk(kid: &str, bits: usize) -> Value {
    // A modulus of the given size: top bit set, odd. Parsing only, never used to verify.
    let mut n = vec![0xffu8; bits / 8];
    n[0] = 0x80 | 0x01;
    json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"})
}

fn parse(keys: Value, allowed: &[Algorithm]) -> (Vec<Option<String>>, Vec<String>) {
    let (keys, dropped) =
        parse_jwks(json!({ "keys": keys }).to_string().as_bytes(), allowed).unwrap();
    (keys.into_iter().map(|k| k.kid).collect(), dropped)
}

#[test]
fn keeps_good_keys_and_explains_dropped_ones() {
    let ec = Issuer::generate("ec").unwrap().jwk();
    let mut enc = Issuer::generate("enc").unwrap().jwk();
    enc["use"] = json!("enc");
    let mut no_verify = Issuer::generate("ops").unwrap().jwk();
    no_verify["key_ops"] = json!(["sign"]);
    let keys = json!([
        rsa_jwk("rsa-2048", 2048),
        rsa_jwk("rsa-1024", 1024),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ec,
        enc,
        no_verify,
        "not an object",
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "AKP", "kid": "pq"},
        {"kid": "no-kty"},
    ]);
    let (kept, dropped) = parse(keys, ALL);
    assert_eq!(
        kept,
        vec![Some("rsa-2048".to_owned()), Some("ec".to_owned())]
    );
    let text = dropped.join("\n");
    for expected in [
        "rsa-1024",
        "below 2048",
        "hmac",
        "kty oct",
        "\"enc\"",
        "key_ops",
        "not a JSON object",
        "P-521",
        "AKP",
        "missing kty",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    assert!(
        !text.contains("c2VjcmV0"),
        "dropped-key notes must not echo key material"
    );
}

#[test]
fn algorithms_come_from_key_type_and_allow_list() {
    let (keys, _) = parse_jwks(
        json!({"keys": [rsa_jwk("r", 2048)]}).to_string().as_bytes(),
        &[Algorithm::RS256],
    )
    .unwrap();
    assert_eq!(keys[0].algorithms, vec![Algorithm::RS256]);
    let mut jwk = Issuer::generate("ec").unwrap().jwk();
    let (kept, dropped) = parse(json!([jwk.clone()]), &[Algorithm::RS256]);
    assert!(
        kept.is_empty() && dropped[0].contains("not in jwt.algorithms"),
        "{dropped:?}"
    );
    jwk["alg"] = json!("RS256");
    let (kept, dropped) = parse(json!([jwk]), ALL);
    assert!(
        kept.is_empty() && dropped[0].contains("does not fit"),
        "{dropped:?}"
    );
}

#[test]
fn rejects_documents_that_are_not_key_sets() {
    assert!(parse_jwks(b"not json", ALL).is_err());
    assert!(parse_jwks(br#"{"keys": {}}"#, ALL).is_err());
    assert!(parse_jwks(br#"{"other": []}"#, ALL).is_err());
}

#[test]
fn caps_the_number_of_keys() {
    let ec = Issuer::generate("ec").unwrap().jwk();
    let keys: Vec<Value> = (0..MAX_KEYS + 5).map(|_| ec.clone()).collect();
    let (kept, dropped) = parse(json!(keys), ALL);
    assert_eq!(kept.len(), MAX_KEYS);
    assert_eq!(dropped.len(), 5);
}

#[test]
fn candidates_without_kid_need_an_unambiguous_set() {
    let a = Issuer::generate("a").unwrap().jwk();
    let b = Issuer::generate("b").unwrap().jwk();
    let set = |keys: Value| {
        KeySet::new(
            parse_jwks(json!({"keys": keys}).to_string().as_bytes(), ALL)
                .unwrap()
                .0,
            1,
        )
    };
    let one = set(json!([&a]));
    assert_eq!(one.candidates(None, Algorithm::ES256).len(), 1);
    assert_eq!(one.candidates(Some("a"), Algorithm::ES256).len(), 1);
    assert!(one.candidates(Some("a"), Algorithm::ES384).is_empty());
    assert!(one.candidates(Some("zz"), Algorithm::ES256).is_empty());
    let two = set(json!([a, b]));
    assert!(two.candidates(None, Algorithm::ES256).is_empty());
    assert!(two.has_kid("b") && !two.has_kid("c"));
}
