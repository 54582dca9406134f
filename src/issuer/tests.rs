//! The façade: minting for `token mint`, the documents, and what only the issuer can revoke.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::auth::verify::now;
use crate::auth::{AuthError, TokenRejection};
use crate::issuer::config::Tenancy;
use crate::issuer::testing::{check, issuer, key_file, serve, temp_dir, verifier};

fn toml(key: &str, clients: &str) -> String {
    format!(
        r#"url = "https://s.example"
signing_key_files = ["{key}"]
max_minted_lifetime = "90d"
{clients}"#
    )
}

const OKTA: &str = r#"
[[clients]]
client_id = "okta"
scope = ["scim", "scim.read"]
claims = { groups = ["okta"] }
"#;

fn build(dir: &Path, clients: &str) -> Issuer {
    let key = if dir.join("k.pem").exists() {
        dir.join("k.pem").display().to_string()
    } else {
        key_file(dir, "k.pem")
    };
    issuer(check(&toml(&key, clients), Tenancy::Single).unwrap())
}

/// What `scimgate token mint` hands an Okta admin, checked the way a tenant checks it: the
/// published keys through the bearer `Verifier` under `local_jwt`.
#[tokio::test]
async fn minted_tokens_take_the_same_verify_path() {
    let dir = temp_dir();
    let issuer = build(&dir, OKTA);
    let ttl = Duration::from_secs(60 * 86_400);
    let minted = issuer.mint("okta", ttl, now()).unwrap();
    assert_eq!(minted.exp - minted.iat, ttl.as_secs());
    assert_eq!(
        minted.scope, "scim scim.read",
        "token mint grants the client's full list"
    );
    let verifier = verifier(&local(&issuer).await);
    let verified = verifier.verify(&minted.token).await.unwrap();
    assert_eq!(verified.claims["client_id"], "okta");
    assert_eq!(verified.claims["groups"], json!(["okta"]));
    assert_eq!(issuer.admit(&verified.claims, None), Ok(()));

    assert_eq!(
        issuer
            .mint("okta", Duration::from_secs(91 * 86_400), now())
            .err(),
        Some(MintError::TooLong("issuer.max_minted_lifetime"))
    );
    assert_eq!(
        issuer.mint("okta", Duration::ZERO, now()).err(),
        Some(MintError::ZeroLifetime)
    );
    assert!(matches!(
        issuer.mint("Okta", ttl, now()),
        Err(MintError::UnknownClient(_))
    ));

    // The attacker's token from another issuer's key with our iss, aud and kid: refused.
    let other = crate::demo::issuer::Issuer::generate(issuer.keys.signing_kid()).unwrap();
    let mut claims = verified.claims.as_ref().clone();
    claims.insert("exp".into(), json!(now() + 60));
    let forged = other.mint(&Value::Object(claims)).unwrap();
    assert_eq!(
        verifier.verify(&forged).await.err(),
        Some(AuthError::InvalidToken(TokenRejection::BadSignature))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

async fn local(issuer: &Issuer) -> JwtConfig {
    let mut jwt = issuer.config().local_jwt(None);
    jwt.jwks_url = Some(serve(issuer.jwks_json().to_owned()).await.parse().unwrap());
    jwt
}

#[test]
fn verification_keys_are_the_published_jwks_parsed() {
    let dir = temp_dir();
    let issuer = build(&dir, OKTA);
    let keys = issuer.verification_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some(issuer.keys.signing_kid()));
    assert_eq!(keys[0].algorithms, [Algorithm::ES256]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn metadata_names_the_endpoints_and_methods() {
    let dir = temp_dir();
    let issuer = build(&dir, OKTA);
    let doc: Value = serde_json::from_str(issuer.metadata_json()).unwrap();
    assert_eq!(doc["issuer"], "https://s.example");
    assert_eq!(doc["token_endpoint"], "https://s.example/oauth2/token");
    assert_eq!(doc["jwks_uri"], "https://s.example/.well-known/jwks.json");
    assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(doc["scopes_supported"], json!(["scim", "scim.read"]));
    let algs = doc["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("RS256")) && algs.contains(&json!("ES256")));
    assert!(!algs.iter().any(|a| a.as_str().unwrap().starts_with("HS")));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Revocation: moving `not_before` past a token's `iat`, or removing its client, ends it
/// (the next config generation builds a new issuer from the same keys).
#[tokio::test]
async fn not_before_and_removed_clients_revoke_issued_tokens() {
    let dir = temp_dir();
    let before = build(&dir, OKTA);
    let minted = before
        .mint("okta", Duration::from_secs(3600), now() - 100)
        .unwrap();
    let claims = verifier(&local(&before).await)
        .verify(&minted.token)
        .await
        .unwrap()
        .claims;
    assert_eq!(before.admit(&claims, None), Ok(()));

    let later = OKTA.replace(
        "scope",
        &format!("not_before = \"{}\"\nscope", rfc3339(now() - 50)),
    );
    let moved = build(&dir, &later);
    assert_eq!(moved.admit(&claims, None), Err(Revoked::BeforeNotBefore));
    let earlier = OKTA.replace(
        "scope",
        &format!("not_before = \"{}\"\nscope", rfc3339(now() - 150)),
    );
    assert_eq!(build(&dir, &earlier).admit(&claims, None), Ok(()));
    assert_eq!(
        moved
            .mint("okta", Duration::from_secs(60), now() - 60)
            .err(),
        Some(MintError::NotYetActive),
        "a token that would be refused at once is not minted"
    );

    let removed = build(&dir, &OKTA.replace("\"okta\"", "\"okta2\""));
    assert_eq!(removed.admit(&claims, None), Err(Revoked::UnknownClient));

    let mut other = claims.as_ref().clone();
    other.insert("iss".into(), json!("https://other.example"));
    assert_eq!(before.admit(&other, None), Err(Revoked::NotOurs));
    let mut swapped = claims.as_ref().clone();
    swapped.insert("sub".into(), json!("someone-else"));
    assert_eq!(before.admit(&swapped, None), Err(Revoked::UnknownClient));
    let mut no_iat = claims.as_ref().clone();
    no_iat.remove("iat");
    assert_eq!(moved.admit(&no_iat, None), Err(Revoked::BeforeNotBefore));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_client_of_one_tenant_is_refused_on_another() {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let names = ["acme".to_owned(), "globex".to_owned()];
    let config = check(
        &toml(&key, &format!("{OKTA}tenant = \"acme\"\n")),
        Tenancy::Named(&names),
    )
    .unwrap();
    let issuer = issuer(config);
    let minted = issuer.mint("okta", Duration::from_secs(60), now()).unwrap();
    let payload = minted.token.split('.').nth(1).unwrap();
    let claims: Map<String, Value> = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://s.example/tenants/acme");
    assert_eq!(issuer.admit(&claims, Some("acme")), Ok(()));
    assert_eq!(
        issuer.admit(&claims, Some("globex")),
        Err(Revoked::WrongTenant)
    );
    assert_eq!(issuer.admit(&claims, None), Err(Revoked::WrongTenant));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn build_needs_every_key_readable() {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let raw = crate::issuer::testing::raw(&toml(&format!("{key}\", \"/nonexistent.pem"), OKTA));
    let config = config::validate(
        &raw,
        Tenancy::Single,
        crate::config::Secrets::Optional,
        &mut problems,
        &mut warnings,
    )
    .unwrap();
    let err = Issuer::build(Arc::new(config), |_, _| {
        unreachable!("no assertion clients")
    })
    .err()
    .unwrap();
    assert!(matches!(err, IssuerError::Unread { index: 1, .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The listener shares one issuer across connections and spawns the endpoint's future.
#[test]
fn the_issuer_is_shared_and_its_endpoint_future_is_send() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let dir = temp_dir();
    let issuer = build(&dir, OKTA);
    shared(&issuer);
    let headers = http::HeaderMap::new();
    send(issuer.token_endpoint(TokenRequest {
        method: &http::Method::POST,
        query: None,
        headers: &headers,
        body: b"",
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        now: now(),
    }));
    std::fs::remove_dir_all(dir).unwrap();
}
