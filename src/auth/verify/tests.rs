//! Token verification against real ES256 tokens (also guards the jsonwebtoken crypto-feature
//! trap: without exactly one backend, the first decode panics).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::auth::jwks::{KeySet, parse_jwks};
use crate::demo::issuer::Issuer;

const ISS: &str = "https://idp.example.com";

fn config() -> JwtConfig {
    JwtConfig {
        jwks_url: Some("https://idp.example.com/keys".parse().unwrap()),
        ca_file: None,
        issuer: Some(ISS.into()),
        audience: vec!["scimgate".into()],
        algorithms: vec![Algorithm::ES256, Algorithm::RS256],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(3600),
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(60),
        refetch_cooldown: Duration::from_secs(30),
        max_stale: Duration::from_secs(3600),
        token_cache_size: 0,
    }
}

struct Fixture {
    issuer: Issuer,
    keys: KeySet,
    checks: ClaimChecks,
}

impl Fixture {
    fn new() -> Self {
        let issuer = Issuer::generate("k1").unwrap();
        let (keys, _) = parse_jwks(issuer.jwks().as_bytes(), &[Algorithm::ES256]).unwrap();
        Self {
            issuer,
            keys: KeySet::new(keys, 1),
            checks: ClaimChecks::new(&config()),
        }
    }

    fn good_claims() -> Value {
        json!({"iss": ISS, "aud": "scimgate", "sub": "idp", "groups": ["scim"], "iat": now() - 10, "exp": now() + 300})
    }

    fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenRejection> {
        let header = inspect_header(token, &self.checks.allowed)?;
        let candidates = self.keys.candidates(header.kid.as_deref(), header.alg);
        self.checks.verify(token, header.alg, &candidates, now())
    }

    fn with(
        &self,
        change: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<Map<String, Value>, TokenRejection> {
        let mut claims = Self::good_claims().as_object().unwrap().clone();
        change(&mut claims);
        self.verify(&self.issuer.mint(&Value::Object(claims)).unwrap())
    }
}

#[test]
fn decodes_a_real_token() {
    let f = Fixture::new();
    let claims = f.with(|_| {}).unwrap();
    assert_eq!(claims["sub"], "idp");
}

/// RFC 7519 §4.1.4: the current time must be before `exp`, so a token is expired at the second
/// its `exp` (plus leeway) names, not one second later.
#[test]
fn a_token_is_expired_at_its_exp_second() {
    let f = Fixture::new();
    let exp = now() + 100;
    let mut claims = Fixture::good_claims().as_object().unwrap().clone();
    claims.insert("exp".into(), json!(exp));
    let token = f.issuer.mint(&Value::Object(claims)).unwrap();
    let header = inspect_header(&token, &f.checks.allowed).unwrap();
    let candidates = f.keys.candidates(header.kid.as_deref(), header.alg);
    let leeway = f.checks.leeway;
    let at = |now: u64| f.checks.verify(&token, header.alg, &candidates, now);
    assert!(
        at(exp + leeway - 1).is_ok(),
        "the last second before exp + leeway"
    );
    assert_eq!(at(exp + leeway), Err(TokenRejection::Expired));
    assert_eq!(at(exp + leeway + 1), Err(TokenRejection::Expired));
}

#[test]
fn time_claims() {
    let f = Fixture::new();
    assert_eq!(
        f.with(|c| {
            c.insert("exp".into(), json!(now() - 31));
        }),
        Err(TokenRejection::Expired)
    );
    assert!(
        f.with(|c| {
            c.insert("exp".into(), json!(now() - 5));
        })
        .is_ok(),
        "within leeway"
    );
    assert_eq!(
        f.with(|c| {
            c.remove("exp");
        }),
        Err(TokenRejection::Malformed)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("exp".into(), json!("never"));
        }),
        Err(TokenRejection::Malformed)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("exp".into(), json!(u64::MAX));
        }),
        Err(TokenRejection::LifetimeTooLong)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("nbf".into(), json!(now() + 600));
        }),
        Err(TokenRejection::NotYetValid)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("nbf".into(), json!("99999999999"));
        }),
        Err(TokenRejection::Malformed)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("iat".into(), json!(now() + 600));
        }),
        Err(TokenRejection::NotYetValid)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("iat".into(), json!(now() - 7200));
        }),
        Err(TokenRejection::LifetimeTooLong)
    );
}

#[test]
fn issuer_and_audience() {
    let f = Fixture::new();
    assert_eq!(
        f.with(|c| {
            c.insert("iss".into(), json!("https://idp.example.com/"));
        }),
        Err(TokenRejection::WrongIssuer)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("iss".into(), json!([ISS]));
        }),
        Err(TokenRejection::WrongIssuer)
    );
    assert_eq!(
        f.with(|c| {
            c.remove("iss");
        }),
        Err(TokenRejection::WrongIssuer)
    );
    assert_eq!(
        f.with(|c| {
            c.remove("aud");
        }),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("aud".into(), json!(null));
        }),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("aud".into(), json!(123));
        }),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("aud".into(), json!("SCIMGATE"));
        }),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        f.with(|c| {
            c.insert("aud".into(), json!([]));
        }),
        Err(TokenRejection::WrongAudience)
    );
    assert!(
        f.with(|c| {
            c.insert("aud".into(), json!(["other", "scimgate"]));
        })
        .is_ok()
    );
}

#[test]
fn signatures_and_keys() {
    let f = Fixture::new();
    let good = f.issuer.mint(&Fixture::good_claims()).unwrap();
    let (body, sig) = good.rsplit_once('.').unwrap();
    let mut bad = sig.as_bytes().to_vec();
    bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{body}.{}", String::from_utf8(bad).unwrap());
    assert_eq!(f.verify(&tampered), Err(TokenRejection::BadSignature));
    let other = Issuer::generate("k1")
        .unwrap()
        .mint(&Fixture::good_claims())
        .unwrap();
    assert_eq!(
        f.verify(&other),
        Err(TokenRejection::BadSignature),
        "same kid, other key"
    );
    let (h, p, _) = (
        good.split('.').next().unwrap(),
        good.split('.').nth(1).unwrap(),
        (),
    );
    assert_eq!(
        f.verify(&format!("{h}.{p}.")),
        Err(TokenRejection::Malformed)
    );
    assert_eq!(
        f.verify(&format!("{h}.{p}")),
        Err(TokenRejection::Malformed)
    );
}

#[test]
fn header_policy() {
    let allowed = [Algorithm::ES256];
    let enc = |h: &str| format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(h));
    let cases = [
        (r#"{"alg":"ES256","kid":"k1"}"#, Ok(())),
        (r#"{"alg":"ES256","typ":"at+JWT"}"#, Ok(())),
        (r#"{"alg":"ES256","typ":"application/at+jwt"}"#, Ok(())),
        (
            r#"{"alg":"none"}"#,
            Err(TokenRejection::DisallowedAlgorithm),
        ),
        (
            r#"{"alg":"NONE"}"#,
            Err(TokenRejection::DisallowedAlgorithm),
        ),
        (
            r#"{"alg":"HS256"}"#,
            Err(TokenRejection::DisallowedAlgorithm),
        ),
        (
            r#"{"alg":"RS256"}"#,
            Err(TokenRejection::DisallowedAlgorithm),
        ),
        (r#"{"kid":"k1"}"#, Err(TokenRejection::Malformed)),
        (
            r#"{"alg":"ES256","crit":["exp"]}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","crit":[]}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","b64":false}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","cty":"JWT"}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","enc":"A128GCM"}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","typ":"secevent+jwt"}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (
            r#"{"alg":"ES256","typ":7}"#,
            Err(TokenRejection::UnsupportedHeader),
        ),
        (r#"{"alg":"ES256","kid":7}"#, Err(TokenRejection::Malformed)),
        (
            r#"{"alg":"ES256","kid":"a","kid":"b"}"#,
            Err(TokenRejection::Malformed),
        ),
        (r#"{"alg":"ES256","jku":"http://127.0.0.1:1/"}"#, Ok(())),
        (r#"["ES256"]"#, Err(TokenRejection::Malformed)),
    ];
    for (header, expected) in cases {
        assert_eq!(
            inspect_header(&enc(header), &allowed).map(|_| ()),
            expected,
            "{header}"
        );
    }
    assert_eq!(
        inspect_header("a.b.c.d", &allowed),
        Err(TokenRejection::Malformed)
    );
    assert_eq!(
        inspect_header("e30=.e30.c2ln", &allowed),
        Err(TokenRejection::Malformed),
        "padding"
    );
}

#[test]
fn duplicate_claims_are_rejected() {
    let f = Fixture::new();
    let header = r#"{"alg":"ES256","kid":"k1"}"#;
    let payload = format!(
        r#"{{"iss":"{ISS}","aud":"scimgate","exp":{},"groups":"x","groups":"scim"}}"#,
        now() + 60
    );
    let token = f.issuer.sign_raw(header, &payload).unwrap();
    assert_eq!(f.verify(&token), Err(TokenRejection::Malformed));
}

#[test]
fn hmac_with_the_public_key_is_rejected() {
    let f = Fixture::new();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(Fixture::good_claims().to_string());
    let secret = f.issuer.jwks();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = aws_lc_rs::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    let token = format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    );
    assert_eq!(f.verify(&token), Err(TokenRejection::DisallowedAlgorithm));
}

/// The claim checks scimgate runs itself since it stopped using `jsonwebtoken::decode`'s: each
/// token here is validly signed, so only the claim check stands between it and the upstream.
#[test]
fn claim_checks_refuse_what_jsonwebtoken_refused() {
    let f = Fixture::new();
    let refused = [
        (json!(["other"]), "aud names another audience only"),
        (json!(["scimgate", 1]), "aud array with a non-string member"),
        (json!("scimgate "), "aud compared exactly"),
    ];
    for (aud, why) in refused {
        assert_eq!(
            f.with(|c| {
                c.insert("aud".into(), aud);
            }),
            Err(TokenRejection::WrongAudience),
            "{why}"
        );
    }
    assert_eq!(
        f.with(|c| {
            c.insert("iss".into(), json!(format!("{ISS}x")));
        }),
        Err(TokenRejection::WrongIssuer)
    );
    for (name, value) in [
        ("exp", json!(-1)),
        ("exp", json!(null)),
        ("nbf", json!(-1)),
        ("nbf", json!(null)),
        ("nbf", json!({})),
    ] {
        assert_eq!(
            f.with(|c| {
                c.insert(name.into(), value.clone());
            }),
            Err(TokenRejection::Malformed),
            "{name}: {value}"
        );
    }
    assert!(
        f.with(|c| {
            c.insert("nbf".into(), json!(now() + 20));
        })
        .is_ok(),
        "nbf within leeway"
    );
    assert!(
        f.with(|c| {
            c.insert("exp".into(), json!(now() as f64 + 60.5));
        })
        .is_ok(),
        "a NumericDate may have a fraction (RFC 7519 §2)"
    );
}

/// The payload is read only once a signature verified: another payload under the original
/// signature is a bad signature, whatever the payload holds.
#[test]
fn the_payload_is_read_after_the_signature() {
    let f = Fixture::new();
    let good = f.issuer.mint(&Fixture::good_claims()).unwrap();
    let mut parts = good.split('.');
    let (header, _, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    for payload in [URL_SAFE_NO_PAD.encode("not json"), "!!".into()] {
        assert_eq!(
            f.verify(&format!("{header}.{payload}.{signature}")),
            Err(TokenRejection::BadSignature)
        );
    }
    let mut claims = Fixture::good_claims();
    claims["groups"] = json!(["admins"]);
    let forged = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_eq!(
        f.verify(&format!("{header}.{forged}.{signature}")),
        Err(TokenRejection::BadSignature)
    );
}
