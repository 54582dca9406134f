//! Signing keys: what a key file must be, the thumbprint `kid`, and rotation as a verifier
//! sees it through the published JWKS.

use std::time::Duration;

use aws_lc_rs::signature::Ed25519KeyPair;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
use jsonwebtoken::Algorithm;

use super::*;
use crate::auth::jwks::parse_jwks;
use crate::auth::verify::now;
use crate::auth::{AuthError, TokenRejection};
use crate::config::JwtConfig;
use crate::issuer::testing::{serve, verifier};

fn p256() -> SigningKey {
    SigningKey::from_pem(test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING).as_bytes()).unwrap()
}

#[test]
fn parses_one_p256_pkcs8_key_and_names_it_by_thumbprint() {
    let pem = test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
    let again = SigningKey::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(
        key.kid(),
        again.kid(),
        "same file, same kid on every replica"
    );
    assert_ne!(key.kid(), p256().kid());
    let jwk = key.jwk();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], key.kid());
    // RFC 7638 §3: the required members only, sorted, no whitespace. serde_json's map is
    // ordered, so this builds the canonical form another way than `thumbprint` does.
    let required = json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]});
    let canonical = serde_json::to_string(&required).unwrap();
    assert!(
        canonical.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#),
        "{canonical}"
    );
    let expected = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()));
    assert_eq!(key.kid(), expected);
    assert_eq!(key.kid().len(), 43, "256 bits in base64url");
    assert!(
        !format!("{key:?}").contains(&pem[30..60]),
        "Debug shows no key material"
    );
}

/// What an operator may mount by mistake: every other key kind and wrapping is refused with
/// a message that says what to do.
#[test]
fn refuses_every_other_key_kind() {
    let p384 = test_pem(&ECDSA_P384_SHA384_FIXED_SIGNING);
    assert_eq!(
        SigningKey::from_pem(p384.as_bytes()).err(),
        Some(KeyError::NotP256)
    );
    let ed = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let ed = pem("PRIVATE KEY", ed.as_ref());
    assert_eq!(
        SigningKey::from_pem(ed.as_bytes()).err(),
        Some(KeyError::NotP256)
    );
    let p256 = test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(p256.as_bytes()).unwrap();
    let der = der.secret_pkcs8_der();
    let cases = [
        (pem("EC PRIVATE KEY", der), KeyError::Sec1),
        (pem("RSA PRIVATE KEY", der), KeyError::Rsa),
        (pem("ENCRYPTED PRIVATE KEY", der), KeyError::NoKey),
        (pem("CERTIFICATE", der), KeyError::NoKey),
        (
            format!("{p256}{}", test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING)),
            KeyError::SeveralKeys,
        ),
        (pem("PRIVATE KEY", b"not a key"), KeyError::NotP256),
        (
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n".into(),
            KeyError::NoKey,
        ),
        (String::new(), KeyError::NoKey),
    ];
    for (text, expected) in cases {
        assert_eq!(
            SigningKey::from_pem(text.as_bytes()).err(),
            Some(expected),
            "{text}"
        );
    }
}

#[test]
fn a_key_set_has_keys_and_no_key_twice() {
    assert_eq!(SigningKeys::new(Vec::new()).err(), Some(KeyError::Empty));
    let pem = test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let twice = vec![
        SigningKey::from_pem(pem.as_bytes()).unwrap(),
        SigningKey::from_pem(pem.as_bytes()).unwrap(),
    ];
    assert!(matches!(
        SigningKeys::new(twice),
        Err(KeyError::Duplicate(_))
    ));
}

#[test]
fn signs_es256_at_jwt_with_the_first_key() {
    let (first, second) = (p256(), p256());
    let kid = first.kid().to_owned();
    let keys = SigningKeys::new(vec![first, second]).unwrap();
    assert_eq!(keys.signing_kid(), kid);
    let token = keys.sign(&Map::new()).unwrap();
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "ES256", "typ": "at+jwt", "kid": kid}));
    let doc: Value = serde_json::from_str(keys.jwks_json()).unwrap();
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, keys.kids().collect::<Vec<_>>());
    assert!(
        !keys.jwks_json().contains("\"d\""),
        "no private part is published"
    );
    let (parsed, dropped) = parse_jwks(keys.jwks_json().as_bytes(), &[Algorithm::ES256]).unwrap();
    assert_eq!((parsed.len(), dropped.len()), (2, 0), "{dropped:?}");
}

fn settings(jwks_url: &str) -> JwtConfig {
    JwtConfig {
        jwks_url: Some(jwks_url.parse().unwrap()),
        ca_file: None,
        issuer: Some("https://scimgate.example.com".into()),
        audience: vec!["https://scimgate.example.com".into()],
        algorithms: vec![Algorithm::ES256],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(3600),
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(60),
        refetch_cooldown: Duration::from_secs(30),
        max_stale: Duration::from_secs(3600),
        token_cache_size: 0,
    }
}

fn claims() -> Map<String, Value> {
    let v = json!({"iss": "https://scimgate.example.com", "aud": "https://scimgate.example.com",
        "sub": "c", "iat": now(), "exp": now() + 600});
    v.as_object().unwrap().clone()
}

/// Rotation as a verifier sees it: the published JWKS, fetched and parsed by the crate's own
/// `Jwks`, checked by the bearer-token `Verifier`.
#[tokio::test]
async fn rotation_add_a_first_key_keep_the_old_then_drop_it() {
    let (old_pem, new_pem) = (
        test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING),
        test_pem(&ECDSA_P256_SHA256_FIXED_SIGNING),
    );
    let key = |pem: &String| SigningKey::from_pem(pem.as_bytes()).unwrap();
    let before = SigningKeys::new(vec![key(&old_pem)]).unwrap();
    let during = SigningKeys::new(vec![key(&new_pem), key(&old_pem)]).unwrap();
    let after = SigningKeys::new(vec![key(&new_pem)]).unwrap();
    let old_token = before.sign(&claims()).unwrap();
    let new_token = during.sign(&claims()).unwrap();

    let during_verifier = verifier(&settings(&serve(during.jwks_json().to_owned()).await));
    assert!(
        during_verifier.verify(&old_token).await.is_ok(),
        "old key still verifies"
    );
    assert!(
        during_verifier.verify(&new_token).await.is_ok(),
        "new key signs"
    );

    let after_verifier = verifier(&settings(&serve(after.jwks_json().to_owned()).await));
    assert!(after_verifier.verify(&new_token).await.is_ok());
    assert_eq!(
        after_verifier.verify(&old_token).await.err(),
        Some(AuthError::InvalidToken(TokenRejection::UnknownKey)),
        "a dropped key's tokens fail"
    );

    // The attacker's variant: the dropped key's token relabelled with the live kid.
    let mut parts: Vec<String> = old_token.split('.').map(str::to_owned).collect();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": after.signing_kid()});
    parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
    assert_eq!(
        after_verifier.verify(&parts.join(".")).await.err(),
        Some(AuthError::InvalidToken(TokenRejection::BadSignature))
    );
}
