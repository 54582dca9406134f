//! Authentication and authorization at the edge: 401 / 400 / 403 answers, and the upstream never
//! sees a request that failed them.

use crate::support::mint::{self, AUDIENCE, ISSUER};
use crate::support::{Gateway, Token, ec_key, fixture, rsa_key};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rs256_and_es256_tokens_are_forwarded() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    for key in [rsa_key(), ec_key()] {
        let token = Token::new().sign(key);
        let r = gw.get("/Users", Some(&token)).await;
        assert_eq!(r.status, 200, "{} token: {}", key.alg(), r.text());
    }
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401_without_error_attribute() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let r = gw.get("/Users", None).await;
    r.assert_scim_error(401);
    // RFC 6750 §3.1: no error attribute when the request carried no credentials.
    assert_eq!(
        r.header_all("www-authenticate"),
        vec![r#"Bearer realm="scimgate""#]
    );
    assert_eq!(r.json()["status"], json!("401"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_bearer_authorization_is_rejected() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let basic = gw
        .request(
            "GET",
            "/Users",
            &[("authorization", "Basic dXNlcjpwYXNz")],
            "",
        )
        .await;
    assert_eq!(basic.status, 401, "Basic credentials: {}", basic.text());
    let empty = gw
        .request("GET", "/Users", &[("authorization", "Bearer ")], "")
        .await;
    assert_eq!(empty.status, 401, "empty bearer: {}", empty.text());
    assert_eq!(upstream.hits(), 0);
}

/// Every token here is well-formed enough to parse and must be refused with `invalid_token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_401_invalid_token_and_never_forwarded() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;

    let valid = Token::new();
    let payload = valid.payload_json();
    let mut cases: Vec<(String, String)> = vec![
        (
            "bad RS256 signature".into(),
            mint::corrupt_signature(&valid.sign(rsa_key())),
        ),
        (
            "bad ES256 signature".into(),
            mint::corrupt_signature(&valid.sign(ec_key())),
        ),
        (
            "expired 10 minutes ago".into(),
            Token::new().exp_in(-600).sign(rsa_key()),
        ),
        ("no exp".into(), Token::new().without("exp").sign(rsa_key())),
        (
            "wrong issuer".into(),
            Token::new()
                .claim("iss", json!("https://evil.example"))
                .sign(rsa_key()),
        ),
        (
            "issuer with trailing slash".into(),
            Token::new()
                .claim("iss", json!(format!("{ISSUER}/")))
                .sign(rsa_key()),
        ),
        (
            "wrong audience".into(),
            Token::new()
                .claim("aud", json!("another-api"))
                .sign(rsa_key()),
        ),
        (
            "audience array without ours".into(),
            Token::new().claim("aud", json!(["a", "b"])).sign(ec_key()),
        ),
        (
            "no audience".into(),
            Token::new().without("aud").sign(rsa_key()),
        ),
        ("alg none".into(), mint::alg_none(&payload, rsa_key().kid())),
        (
            "kid of another key".into(),
            // Signed by the EC key but naming the RSA key's kid and RS256.
            mint::sign_raw(
                &json!({"alg":"RS256","typ":"JWT","kid":rsa_key().kid()}).to_string(),
                &payload,
                ec_key(),
            ),
        ),
        ("not a JWT".into(), "not-a-jwt".into()),
        (
            "not yet valid (nbf in 10 minutes)".into(),
            Token::new()
                .claim("nbf", json!(mint::now() + 600))
                .sign(rsa_key()),
        ),
        (
            "lifetime over max_lifetime (48h)".into(),
            Token::new().exp_in(48 * 3600).sign(rsa_key()),
        ),
        (
            "typ of a logout token".into(),
            Token::new()
                .header("typ", json!("logout+jwt"))
                .sign(rsa_key()),
        ),
        (
            "unknown crit header".into(),
            Token::new()
                .header("crit", json!(["x-unknown"]))
                .header("x-unknown", json!(true))
                .sign(ec_key()),
        ),
    ];
    for key in [rsa_key(), ec_key()] {
        for (i, secret) in key.public_key_encodings().iter().enumerate() {
            cases.push((
                format!("HS256 keyed with {} public key encoding #{i}", key.alg()),
                mint::hs256(&payload, key.kid(), secret),
            ));
        }
    }
    // Sanity: the unmodified token is accepted, so the failures below are about the mutation.
    let ok = gw.get("/Users", Some(&valid.sign(rsa_key()))).await;
    assert_eq!(ok.status, 200, "baseline token: {}", ok.text());
    let baseline_hits = upstream.hits();

    let mut failures = Vec::new();
    for (name, token) in &cases {
        let r = gw.get("/Users", Some(token)).await;
        let www = r.header_all("www-authenticate").join(" | ");
        if r.status != 401 || www != r#"Bearer realm="scimgate", error="invalid_token""# {
            failures.push(format!("{name}: got {} / {www:?} / {}", r.status, r.text()));
            continue;
        }
        r.assert_invalid_token();
        let detail = r.json()["detail"].as_str().unwrap_or("").to_owned();
        assert!(
            !detail.contains(mint::signature_segment(token)) || token.ends_with('.'),
            "{name}: detail echoes the token"
        );
    }
    assert_eq!(
        upstream.hits(),
        baseline_hits,
        "a rejected token reached the upstream"
    );
    assert!(
        failures.is_empty(),
        "not refused as invalid_token:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_400() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(rsa_key());
    let auth = format!("Bearer {token}");
    let r = gw
        .request(
            "GET",
            "/Users",
            &[("authorization", &auth), ("authorization", &auth)],
            "",
        )
        .await;
    r.assert_scim_error(400);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_matching_claim_is_403_insufficient_scope() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let cases = [
        ("no groups claim", Token::new().without("groups")),
        (
            "other group",
            Token::new().claim("groups", json!(["scim-readers"])),
        ),
        (
            "group as a prefix",
            Token::new().claim("groups", json!(["scim-provisioners-x"])),
        ),
        (
            "group in another claim",
            Token::new()
                .without("groups")
                .claim("roles", json!(["scim-provisioners"])),
        ),
        ("empty groups", Token::new().claim("groups", json!([]))),
    ];
    for (name, token) in cases {
        let r = gw.get("/Users", Some(&token.sign(ec_key()))).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        r.assert_insufficient_scope();
    }
    // A string claim equal to the value matches (design.md §4: string equal or array contains).
    let single = Token::new().claim("groups", json!("scim-provisioners"));
    assert_eq!(
        gw.get("/Users", Some(&single.sign(ec_key()))).await.status,
        200
    );
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_may_be_one_of_several() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new()
        .claim("aud", json!(["other", AUDIENCE]))
        .sign(rsa_key());
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_typ_values() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    // design.md §1 step 2: typ absent, JWT, at+jwt or application/at+jwt.
    let mut tokens = vec![(
        "typ absent".to_owned(),
        mint::sign_raw(
            &json!({"alg":"RS256","kid":rsa_key().kid()}).to_string(),
            &Token::new().payload_json(),
            rsa_key(),
        ),
    )];
    for typ in ["JWT", "at+jwt", "application/at+jwt"] {
        tokens.push((
            format!("typ {typ}"),
            Token::new().header("typ", json!(typ)).sign(rsa_key()),
        ));
    }
    for (name, token) in &tokens {
        let r = gw.get("/Users", Some(token)).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    assert_eq!(upstream.hits(), tokens.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_token_is_401_and_not_forwarded() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    // design.md §1 step 1: token <= 8 KiB.
    let token = Token::new()
        .claim("pad", json!("a".repeat(9 * 1024)))
        .sign(rsa_key());
    assert!(token.len() > 8 * 1024);
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_match_dotted_paths_literal_keys_and_scopes() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .account("nested", "x-api-key", None)
        .account("literal", "x-api-key", None)
        .account("scoped", "x-api-key", None)
        .rule("nested", "realm_access.roles", "scim-nested", "nested")
        .rule(
            "literal",
            "https://example.com/roles",
            "scim-literal",
            "literal",
        )
        .rule_match("scoped", "scope", "scim:write", "scoped", "space_delimited");
    let gw = Gateway::start(cfg).await;
    let base = || Token::new().without("groups");
    let cases = [
        (
            "nested path",
            base().claim("realm_access", json!({"roles": ["other", "scim-nested"]})),
            Some("nested"),
        ),
        (
            "literal dotted key",
            base().claim("https://example.com/roles", json!(["scim-literal"])),
            Some("literal"),
        ),
        (
            // A literal top-level key containing dots wins over the nested path.
            "literal key shadows nested path",
            base()
                .claim("realm_access.roles", json!(["something-else"]))
                .claim("realm_access", json!({"roles": ["scim-nested"]})),
            None,
        ),
        (
            "scope contains value",
            base().claim("scope", json!("openid scim:write profile")),
            Some("scoped"),
        ),
        (
            "scope with a longer word only",
            base().claim("scope", json!("scim:writer scim:write-all")),
            None,
        ),
    ];
    for (name, token, account) in cases {
        let before = upstream.hits();
        let r = gw.get("/Users", Some(&token.sign(ec_key()))).await;
        match account {
            Some(account) => {
                assert_eq!(r.status, 200, "{name}: {}", r.text());
                let req = upstream.requests().pop().expect("forwarded request");
                assert_eq!(
                    req.header_one("x-api-key"),
                    gw.sentinel_of(account),
                    "{name}"
                );
                assert!(req.header_all("authorization").is_empty(), "{name}");
            }
            None => {
                assert_eq!(r.status, 403, "{name}: {}", r.text());
                assert_eq!(upstream.hits(), before, "{name}");
            }
        }
    }
}
