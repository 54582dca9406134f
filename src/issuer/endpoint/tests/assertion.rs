//! Client assertions: Entra's federated form and RFC 7523's self-signed form, and each way
//! around their checks.

use super::*;

/// Entra Workload Identity Federation, request and assertion as Microsoft documents them.
#[tokio::test]
async fn entra_workload_identity_federation() {
    let f = fixture().await;
    let assertion = f.entra_with(|_| {});
    let sent = f.entra(&assertion).await;
    assert_eq!(sent.response.status, StatusCode::OK, "{}", sent.json);
    assert_eq!(sent.json["expires_in"], 3600);
    assert_eq!(sent.json["scope"], "scim");
    let claims = f.verify_issued(&sent).await;
    assert_eq!(claims["client_id"], "entra-wif");
    assert_eq!(claims["groups"], json!(["scim-provisioners"]));
    assert_ne!(claims["iss"], ENTRA_ISS);
    // Entra's assertion carries no jti: nothing to remember, so it may come again.
    assert_eq!(f.entra(&assertion).await.response.status, StatusCode::OK);
}

/// Every way around the assertion checks: each `invalid_client`, the backend never reached
/// (no token).
#[tokio::test]
async fn entra_assertions_that_must_fail() {
    let f = fixture().await;
    let other_tenant_key = RsaSigner::new("entra-kid");
    let now = now();
    use TokenRejection as R;
    let rejected = Refusal::AssertionRejected;
    let cases: Vec<(String, Refusal, &str)> = vec![
        (
            f.entra_with(|c| {
                c.insert("sub".into(), json!("another-object-id"));
            }),
            Refusal::WrongSubject,
            "wrong sub",
        ),
        (
            f.entra_with(|c| {
                c.remove("sub");
            }),
            Refusal::WrongSubject,
            "no sub",
        ),
        (
            f.entra_with(|c| {
                c.insert("aud".into(), json!("api://other"));
            }),
            rejected(R::WrongAudience),
            "wrong aud",
        ),
        (
            f.entra_with(|c| {
                c.insert("aud".into(), json!(format!("{AUDIENCE}/.default")));
            }),
            rejected(R::WrongAudience),
            "aud with /.default",
        ),
        (
            f.entra_with(|c| {
                c.remove("aud");
            }),
            rejected(R::WrongAudience),
            "no aud",
        ),
        (
            f.entra_with(|c| {
                c.insert("iss".into(), json!("https://sts.windows.net/tid-1/"));
            }),
            rejected(R::WrongIssuer),
            "the v1 issuer",
        ),
        (
            f.entra_with(|c| {
                c.insert(
                    "iss".into(),
                    json!("https://login.microsoftonline.com/tid-2/v2.0"),
                );
            }),
            rejected(R::WrongIssuer),
            "another tenant's issuer",
        ),
        (
            f.entra_with(|c| {
                c.insert("exp".into(), json!(now - 120));
            }),
            rejected(R::Expired),
            "expired",
        ),
        (
            f.entra_with(|c| {
                c.remove("exp");
            }),
            rejected(R::Malformed),
            "no exp",
        ),
        (
            f.entra_with(|c| {
                c.insert("exp".into(), json!(now + 3 * 3600));
            }),
            rejected(R::LifetimeTooLong),
            "lives three hours",
        ),
        (
            f.entra_with(|c| {
                c.insert("nbf".into(), json!(now + 600));
            }),
            rejected(R::NotYetValid),
            "not yet valid",
        ),
        (
            f.entra_with(|c| {
                c.insert("iat".into(), json!(now + 600));
            }),
            rejected(R::NotYetValid),
            "issued in the future",
        ),
        (
            other_tenant_key.sign(&Value::Object(f.entra_claims())),
            rejected(R::BadSignature),
            "another issuer's key, the same kid",
        ),
        (
            f.entra.sign_raw(
                &json!({"alg": "RS256", "kid": "unknown"}),
                &Value::Object(f.entra_claims()),
            ),
            rejected(R::UnknownKey),
            "an unknown kid",
        ),
        (
            f.entra.sign_raw(
                &json!({"alg": "RS256", "kid": "entra-kid", "crit": ["exp"]}),
                &Value::Object(f.entra_claims()),
            ),
            rejected(R::UnsupportedHeader),
            "crit",
        ),
        (
            f.selfsigned_assertion("x"),
            rejected(R::UnknownKey),
            "the other client's valid assertion",
        ),
        (
            unsigned("none", &f.entra_claims()),
            rejected(R::DisallowedAlgorithm),
            "alg none",
        ),
        (
            unsigned("HS256", &f.entra_claims()),
            rejected(R::DisallowedAlgorithm),
            "HS256",
        ),
        ("a.b".into(), rejected(R::Malformed), "not a JWS"),
        (
            format!("{}%20", f.entra_with(|_| {})),
            rejected(R::Malformed),
            "a valid assertion with a trailing space",
        ),
        (
            f.entra_with(|_| {}).replacen('.', "%2B.", 1),
            rejected(R::Malformed),
            "a + inside (standard base64)",
        ),
        ("x".repeat(9000), rejected(R::TooLarge), "too large"),
    ];
    for (assertion, refusal, what) in cases {
        let sent = f.entra(&assertion).await;
        assert_invalid_client(&sent, what);
        assert_eq!(f.refusal(&entra_body(&assertion)).await, refusal, "{what}");
    }
    // The documented form with the type misspelt, or half of the pair.
    let body = |extra: &str| {
        format!("grant_type=client_credentials&client_id=entra-wif&scope=scim&{extra}")
    };
    let good = f.entra_with(|_| {});
    let wrong_type = f.post(&[], &body(&format!("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Asaml2-bearer&client_assertion={good}"))).await;
    assert_invalid_client(&wrong_type, "a SAML assertion type");
    let half = f
        .post(&[], &body(&format!("client_assertion={good}")))
        .await;
    assert_refused(
        &half,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "no assertion type",
    );
    // An assertion presented for a client that authenticates with a secret.
    let for_script = f
        .post(&[], &format!("grant_type=client_credentials&client_id=script&client_assertion_type={JWT_BEARER}&client_assertion={good}"))
        .await;
    assert_invalid_client(&for_script, "an assertion for a secret client");
}

fn unsigned(alg: &str, claims: &Map<String, Value>) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "entra-kid"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode("sig"))
}

/// RFC 7523 §3's self-signed form as authlib sends it (no client_id; a jti): accepted once.
#[tokio::test]
async fn self_signed_assertions_are_matched_by_issuer_and_used_once() {
    let f = fixture().await;
    let body = |assertion: &str| {
        format!(
            "grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}"
        )
    };
    let assertion = f.selfsigned_assertion("jti-1");
    let sent = f.post(&[], &body(&assertion)).await;
    assert_eq!(sent.response.status, StatusCode::OK, "{}", sent.json);
    assert_eq!(f.verify_issued(&sent).await["client_id"], "authlib");
    assert_invalid_client(&f.post(&[], &body(&assertion)).await, "replayed");
    let with_id = format!("{}&client_id=authlib", body(&assertion));
    assert_invalid_client(&f.post(&[], &with_id).await, "replayed, naming the client");
    let fresh = f.selfsigned_assertion("jti-2");
    assert_eq!(
        f.post(&[], &body(&fresh)).await.response.status,
        StatusCode::OK
    );
    let non_string = f
        .selfsigned
        .mint(&json!({"iss": "authlib", "sub": "authlib", "aud": TOKEN_URL, "jti": 7, "exp": now() + 60}))
        .unwrap();
    assert_invalid_client(
        &f.post(&[], &body(&non_string)).await,
        "a jti that is no string",
    );
    let unknown = f
        .selfsigned
        .mint(&json!({"iss": "stranger", "sub": "stranger", "aud": TOKEN_URL, "exp": now() + 60}))
        .unwrap();
    assert_invalid_client(
        &f.post(&[], &body(&unknown)).await,
        "no client for this issuer",
    );
}
