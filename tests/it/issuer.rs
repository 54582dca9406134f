//! scimgate's own issuer end to end (issue 17): the token endpoint with client secrets and an
//! Entra Workload Identity Federation assertion, `token mint` tokens as Okta sends them,
//! revocation by `not_before` and key rotation through hot reload, tenant isolation, several
//! external issuers per tenant, and the requests an attacker would try instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::support::config::random_hex;
use crate::support::gateway::binary;
use crate::support::mint::{self, hs256, now, sign_raw};
use crate::support::observe::{metric, replace_file, scrape};
use crate::support::{
    Gateway, JwksServer, Response, SigningKey, TempDir, Token, ec_key, fixture, rsa_key,
    run_check_file, toml_str,
};

/// `iss` of scimgate's own tokens in these tests.
const OWN: &str = "https://gw.scimgate.test";
/// Entra's v2 issuer for a made-up tenant, as Microsoft documents the form.
const ENTRA_TID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const ENTRA_SUB: &str = "5d2c1a6e-0b7f-4c4f-9f0e-2b1d7d6f0c11";
const ENTRA_AUD: &str = "api://0b2c1f7e-3c1a-4d3b-9a55-6c2f7f0b9e21";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn entra_issuer() -> String {
    format!("https://login.microsoftonline.com/{ENTRA_TID}/v2.0")
}

/// A fresh P-256 PKCS#8 key as PEM, and its DER for signing in the test.
fn p256_pem() -> (String, Vec<u8>) {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("P-256 key")
        .as_ref()
        .to_vec();
    let b64 = STANDARD.encode(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    (
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
        der,
    )
}

/// A JWS signed with a P-256 PKCS#8 key (the issuer's own key, used by an attacker test).
fn sign_es256(der: &[u8], header: &Value, claims: &Value) -> String {
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).expect("key");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn sha256_hex(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// The secrets of the `secret` client and the issuer key files of one test.
struct Setup {
    secret: String,
    keys: TempDir,
    current: PathBuf,
    current_der: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let keys = TempDir::new("issuer-keys");
        let (pem, der) = p256_pem();
        let current = keys.write("current.pem", pem.as_bytes(), 0o600);
        Self {
            secret: random_hex(16),
            keys,
            current,
            current_der: der,
        }
    }

    /// `[issuer]` with these key files and the test clients: `secret` (client secret), `entra`
    /// (an assertion from `entra_jwks`), `okta` (mint only); `not_before` for `okta` if given.
    fn issuer_toml(
        &self,
        key_files: &[&Path],
        entra_jwks: &str,
        okta_not_before: Option<&str>,
    ) -> String {
        let files: Vec<String> = key_files
            .iter()
            .map(|p| toml_str(&p.to_string_lossy()))
            .collect();
        let mut text = format!(
            "[issuer]\nurl = {}\nsigning_key_files = [{}]\ntoken_lifetime = \"1h\"\n\n\
             [[issuer.clients]]\nclient_id = \"secret\"\nscope = [\"scim\"]\n\
             claims = {{ groups = [\"scim-provisioners\"] }}\nsecret_sha256 = {}\n\n\
             [[issuer.clients]]\nclient_id = \"entra-wif\"\nscope = [\"scim\"]\n\
             claims = {{ groups = [\"scim-provisioners\"] }}\n\
             assertion = {{ issuer = {}, jwks_url = {}, subject = {}, audience = {} }}\n\n\
             [[issuer.clients]]\nclient_id = \"okta\"\nscope = [\"scim\"]\n\
             claims = {{ groups = [\"scim-provisioners\"] }}\n",
            toml_str(OWN),
            files.join(", "),
            toml_str(&sha256_hex(&self.secret)),
            toml_str(&entra_issuer()),
            toml_str(entra_jwks),
            toml_str(ENTRA_SUB),
            toml_str(ENTRA_AUD),
        );
        if let Some(nb) = okta_not_before {
            text.push_str(&format!("not_before = {}\n", toml_str(nb)));
        }
        text
    }
}

/// A gateway with `[jwt]` from the usual fixture and `[issuer]` from `setup`, plus the Entra
/// stand-in: its JWKS server and RS256 key.
async fn start(setup: &Setup) -> (Gateway, crate::support::Upstream, JwksServer, SigningKey) {
    let (jwks, upstream, cfg) = fixture().await;
    let entra_key = SigningKey::rsa("entra-1");
    let entra = JwksServer::start(mint::jwks(&[&entra_key])).await;
    let cfg = cfg.extra(&setup.issuer_toml(&[&setup.current], &entra.url(), None));
    let gw = Gateway::start(cfg).await;
    std::mem::forget(jwks);
    (gw, upstream, entra, entra_key)
}

async fn token_request(gw: &Gateway, headers: &[(&str, &str)], body: &str) -> Response {
    gw.request("POST", "/oauth2/token", headers, body.to_owned())
        .await
}

/// Asserts an RFC 6749 §5.2 error with `code`, never cached.
fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.json().get("access_token").is_none());
}

/// The access token of a 200 answer, after checking the answer's shape.
fn issued(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "scim");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// The claims of a JWT, unverified (the test only reads what scimgate wrote).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// Entra's documented assertion: RS256, v2 issuer, the workload identity as `sub`, lifetime
/// 3,900 s, Entra's other claims; `jti` only when given (Entra sends none).
fn entra_assertion(
    key: &SigningKey,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    let iat = now();
    let mut claims = json!({
        "aud": ENTRA_AUD,
        "iss": entra_issuer(),
        "iat": iat,
        "nbf": iat,
        "exp": iat + 3900,
        "aio": "k2BgYJjd9/b3mR8S9VkvZ0O8Ag==",
        "appid": "7f1d3a52-1a0a-4c4e-8d7e-0d3a6a0f2e11",
        "appidacr": "2",
        "idp": format!("https://sts.windows.net/{ENTRA_TID}/"),
        "oid": ENTRA_SUB,
        "rh": "1.AXoAgJ3-Dr9yA0m_k6cZ7n9QwQ.",
        "sub": ENTRA_SUB,
        "tid": ENTRA_TID,
        "uti": "fAeUqXCKZkm4p0vYbRZ2AA",
        "ver": "2.0",
    });
    edit(claims.as_object_mut().expect("object"));
    let header = json!({ "typ": "JWT", "alg": "RS256", "kid": key.kid() });
    sign_raw(&header.to_string(), &claims.to_string(), key)
}

fn entra_form(assertion: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "entra-wif"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("scope", "scim"),
    ])
}

/// Runs `scimgate token mint`; the token printed, or panics with stderr.
fn mint_cli(config: &Path, client: &str, ttl: &str) -> String {
    let out = std::process::Command::new(binary())
        .args(["token", "mint", "--config"])
        .arg(config)
        .args(["--client", client, "--ttl", ttl])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run token mint");
    assert!(
        out.status.success(),
        "token mint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    lines[0].to_owned()
}

/// Polls `GET /Users` with `token` (bounded) until it answers `status`.
async fn wait_status(gw: &Gateway, token: &str, status: u16) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw.get("/Users", Some(token)).await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "still {} instead of {status}; logs:\n{}",
            r.status,
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces `[issuer]` in the running gateway's config file (everything after `[issuer]`).
fn rewrite_issuer(gw: &Gateway, issuer_toml: &str) {
    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let head = text.split("[issuer]").next().expect("head");
    replace_file(
        &gw.config_path,
        format!("{head}{issuer_toml}").as_bytes(),
        0o644,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secrets_get_tokens_that_pass_the_same_pipeline() {
    let setup = Setup::new();
    let (gw, upstream, _entra, _) = start(&setup).await;

    let auth = basic("secret", &setup.secret);
    let body = form(&[("grant_type", "client_credentials")]);
    let r = token_request(&gw, &[FORM, ("authorization", &auth)], &body).await;
    let by_basic = issued(&r);
    let claims = claims_of(&by_basic);
    assert_eq!(claims["iss"], OWN);
    assert_eq!(claims["sub"], "secret");
    assert_eq!(claims["client_id"], "secret");
    assert_eq!(claims["aud"], OWN);
    assert_eq!(claims["groups"], json!(["scim-provisioners"]));
    assert!(claims["jti"].is_string());

    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "secret"),
        ("client_secret", &setup.secret),
        ("scope", "scim"),
    ]);
    let by_post = issued(&token_request(&gw, &[FORM], &body).await);

    for token in [&by_basic, &by_post] {
        let r = gw.get("/Users", Some(token)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for request in seen {
        assert_eq!(
            request.header_one("authorization"),
            format!("Bearer {}", gw.sentinel())
        );
    }

    // Wrong secret: invalid_client with a Basic challenge; the upstream is not contacted.
    let r = token_request(
        &gw,
        &[FORM, ("authorization", &basic("secret", "wrong"))],
        &form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_error(&r, 401, "invalid_client");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic"))
    );
    // A scope the client does not have.
    let r = token_request(
        &gw,
        &[FORM, ("authorization", &auth)],
        &form(&[("grant_type", "client_credentials"), ("scope", "admin")]),
    )
    .await;
    assert_error(&r, 400, "invalid_scope");

    let text = scrape(&gw).await;
    assert_eq!(metric(&text, "scimgate_tokens_issued_total"), Some(2.0));
    assert_eq!(
        metric(&text, "scimgate_token_requests_total{outcome=\"issued\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "scimgate_token_requests_total{outcome=\"invalid_client\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "scimgate_token_requests_total{outcome=\"server_error\"}"
        ),
        Some(0.0),
        "every outcome is exported from the start"
    );
    assert_eq!(
        metric(
            &text,
            "scimgate_auth_decisions_total{decision=\"deny\",reason=\"revoked\"}"
        ),
        Some(0.0)
    );
    gw.flush_logs();
    let logs = gw.logs().join("\n");
    assert!(logs.contains("token issued"), "{logs}");
    assert!(logs.contains("token request refused"), "{logs}");
    gw.assert_logs_free_of(&[&setup.secret, &by_basic, &by_post]);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_workload_identity_federation_as_microsoft_documents_it() {
    let setup = Setup::new();
    let (gw, upstream, entra, entra_key) = start(&setup).await;

    let assertion = entra_assertion(&entra_key, |_| {});
    let r = token_request(&gw, &[FORM], &entra_form(&assertion)).await;
    let token = issued(&r);
    assert_eq!(claims_of(&token)["client_id"], "entra-wif");
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);

    // Another issuer's key: the usual test IdP's RSA key, with the kid Entra's key has.
    let stranger = entra_assertion(rsa_key(), |_| {});
    let forged_kid = {
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": entra_key.kid() });
        let payload = stranger.split('.').nth(1).expect("payload").to_owned();
        let input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header.to_string()));
        let sig = rsa_key().sign_bytes(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let jti = random_hex(8);
    let with_jti = entra_assertion(&entra_key, |c| {
        c.insert("jti".into(), json!(jti));
    });
    assert!(!issued(&token_request(&gw, &[FORM], &entra_form(&with_jti)).await).is_empty());
    let bad: Vec<(&str, String)> = vec![
        (
            "wrong sub",
            entra_assertion(&entra_key, |c| {
                c.insert("sub".into(), json!("00000000-0000-0000-0000-000000000000"));
            }),
        ),
        (
            "wrong aud",
            entra_assertion(&entra_key, |c| {
                c.insert("aud".into(), json!("api://someone-else"));
            }),
        ),
        (
            "wrong iss (v1)",
            entra_assertion(&entra_key, |c| {
                c.insert(
                    "iss".into(),
                    json!(format!("https://sts.windows.net/{ENTRA_TID}/")),
                );
            }),
        ),
        (
            "expired",
            entra_assertion(&entra_key, |c| {
                c.insert("iat".into(), json!(now() - 8000));
                c.insert("nbf".into(), json!(now() - 8000));
                c.insert("exp".into(), json!(now() - 4100));
            }),
        ),
        ("replayed", with_jti.clone()),
        ("key from another issuer", stranger),
        ("another issuer's key under Entra's kid", forged_kid),
    ];
    for (what, assertion) in bad {
        let r = token_request(&gw, &[FORM], &entra_form(&assertion)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_client", "{what}");
    }
    assert_eq!(upstream.hits(), 1, "the backend is never contacted");

    // A reload does not make a used jti new again.
    rewrite_issuer(
        &gw,
        &setup.issuer_toml(
            &[&setup.current],
            &entra.url(),
            Some("2020-01-01T00:00:00Z"),
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &scrape(&gw).await,
        "scimgate_config_reloads_total{result=\"success\"}",
    )
    .is_none_or(|v| v < 1.0)
    {
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = token_request(&gw, &[FORM], &entra_form(&with_jti)).await;
    assert_eq!(r.status, 401, "replayed after a reload: {}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minted_token_works_as_okta_sends_it_until_not_before_passes_it() {
    let setup = Setup::new();
    let (gw, upstream, entra, _) = start(&setup).await;
    let token = mint_cli(&gw.config_path, "okta", "400d");
    let claims = claims_of(&token);
    assert_eq!(claims["client_id"], "okta");
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 400 * 86_400);
    // Okta's SCIM connector sends exactly this header.
    let auth = format!("Bearer {token}");
    let r = gw
        .request(
            "GET",
            "/Users?startIndex=1&count=100",
            &[
                ("authorization", &auth),
                ("accept", "application/scim+json"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    // Beyond the mint bound.
    let out = std::process::Command::new(binary())
        .args(["token", "mint", "--config"])
        .arg(&gw.config_path)
        .args(["--client", "okta", "--ttl", "401d"])
        .env_clear()
        .output()
        .expect("run token mint");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());

    // Revocation: not_before moves past the token's issue time; the reload picks it up.
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let nb =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(iat + 1))
            .to_string();
    rewrite_issuer(
        &gw,
        &setup.issuer_toml(&[&setup.current], &entra.url(), Some(&nb)),
    );
    let r = wait_status(&gw, &token, 401).await;
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("invalid_token")),
        "{:?}",
        r.headers
    );
    let hits = upstream.hits();
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 401);
    assert_eq!(
        upstream.hits(),
        hits,
        "a revoked token never reaches the backend"
    );
    let text = scrape(&gw).await;
    assert!(
        metric(
            &text,
            "scimgate_auth_decisions_total{decision=\"deny\",reason=\"revoked\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    // `explain` says whose token it is and why it is refused.
    let out = std::process::Command::new(binary())
        .args(["explain", "--config"])
        .arg(&gw.config_path)
        .arg(&token)
        .env_clear()
        .output()
        .expect("run explain");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("client okta, issued"), "{table}");
    assert!(table.contains("not_before"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_with_only_its_own_issuer_needs_no_external_one() {
    let setup = Setup::new();
    let upstream = crate::support::Upstream::start().await;
    let entra = JwksServer::start(mint::jwks(&[rsa_key()])).await;
    // No jwks_url, issuer or audience under [jwt]: scimgate's own tokens are the only ones.
    let cfg = crate::support::GatewayConfig::new(&upstream.url(), "http://127.0.0.1:1/unused")
        .unset("jwt", "jwks_url")
        .unset("jwt", "issuer")
        .unset("jwt", "audience")
        .extra(&setup.issuer_toml(&[&setup.current], &entra.url(), None));
    let gw = Gateway::start(cfg).await;
    let token = mint_cli(&gw.config_path, "okta", "30d");
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    // Any other issuer's token, even one a configured [jwt] would have taken: 401.
    let external = Token::new().sign(ec_key());
    let r = gw.get("/Users", Some(&external)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    let out = run_check_file(&gw.config_path, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("scimgate's own issuer only"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("client okta: token mint only"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("jwt.issuer is not set"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_keeps_old_tokens_until_the_old_key_goes() {
    let setup = Setup::new();
    let (gw, _upstream, entra, _) = start(&setup).await;
    let old_token = mint_cli(&gw.config_path, "okta", "1d");

    let (pem, _) = p256_pem();
    let next = setup.keys.write("next.pem", pem.as_bytes(), 0o600);
    rewrite_issuer(
        &gw,
        &setup.issuer_toml(&[&next, &setup.current], &entra.url(), None),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw.get("/.well-known/jwks.json", None).await;
        if r.json()["keys"].as_array().is_some_and(|k| k.len() == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key was not published; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_token = mint_cli(&gw.config_path, "okta", "1d");
    let kid = |t: &str| -> Value {
        let header = t.split('.').next().expect("header");
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(header).expect("b64"))
            .expect("json")["kid"]
            .clone()
    };
    assert_ne!(kid(&old_token), kid(&new_token), "the new first key signs");
    for token in [&old_token, &new_token] {
        assert_eq!(gw.get("/Users", Some(token)).await.status, 200);
    }

    rewrite_issuer(&gw, &setup.issuer_toml(&[&next], &entra.url(), None));
    wait_status(&gw, &old_token, 401).await;
    assert_eq!(gw.get("/Users", Some(&new_token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signing_key_file_replaced_in_place_is_reloaded() {
    // A Secret update rewrites the file under the same name: the reload must see it.
    let setup = Setup::new();
    let (gw, _upstream, _entra, _) = start(&setup).await;
    let old_token = mint_cli(&gw.config_path, "okta", "1d");
    assert_eq!(gw.get("/Users", Some(&old_token)).await.status, 200);
    let before = gw.get("/.well-known/jwks.json", None).await.json();
    let (pem, _) = p256_pem();
    replace_file(&setup.current, pem.as_bytes(), 0o600);
    wait_status(&gw, &old_token, 401).await;
    let after = gw.get("/.well-known/jwks.json", None).await.json();
    assert_ne!(before["keys"][0]["kid"], after["keys"][0]["kid"]);
    let new_token = mint_cli(&gw.config_path, "okta", "1d");
    assert_eq!(gw.get("/Users", Some(&new_token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_token_is_refused_on_another_tenant() {
    let setup = Setup::new();
    let jwks = JwksServer::start(mint::jwks(&[ec_key()])).await;
    let upstream = crate::support::Upstream::start().await;
    let dir = TempDir::new("issuer-tenants");
    let key = dir.write("sa.key", b"SENTINEL-issuer-tenant-key\n", 0o600);
    let tenant = |name: &str| {
        format!(
            "[[tenants]]\nname = {n}\npath_prefix = {p}\nupstream.url = {u}\n\
             jwt.jwks_url = {j}\njwt.issuer = \"https://idp.example\"\njwt.audience = [\"x\"]\n\
             [[tenants.rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"scim-provisioners\"\nservice_account = \"sa\"\n\
             [tenants.service_accounts.sa]\nheader = \"authorization\"\nscheme = \"Bearer\"\napi_key_file = {k}\n\n",
            n = toml_str(name),
            p = toml_str(&format!("/{name}")),
            u = toml_str(&upstream.url()),
            j = toml_str(&jwks.url()),
            k = toml_str(&key.to_string_lossy()),
        )
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\n{}{}\
         [issuer]\nurl = {}\nsigning_key_files = [{}]\n\n\
         [[issuer.clients]]\nclient_id = \"a-client\"\ntenant = \"a\"\nscope = [\"scim\"]\n\
         claims = {{ groups = [\"scim-provisioners\"] }}\nsecret_sha256 = {}\n",
        tenant("a"),
        tenant("b"),
        toml_str(OWN),
        toml_str(&setup.current.to_string_lossy()),
        toml_str(&sha256_hex(&setup.secret)),
    );
    let path = dir.write("scimgate.toml", config.as_bytes(), 0o644);
    let mut child = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let _kill = Kill(child);
    // A thread drains stdout for the gateway's whole life, so its pipe never fills.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let (addr, admin) = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a listening line");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let at = |k: &str| {
            v[k].as_str()
                .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
        };
        if v["message"] == "listening"
            && let (Some(p), Some(a)) = (at("proxy_addr"), at("admin_addr"))
        {
            break (p, a);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = crate::support::send(admin, "GET", "/readyz", &[], bytes::Bytes::new()).await;
        if ready.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let send = |method: &'static str,
                path: &'static str,
                headers: Vec<(&'static str, String)>,
                body: String| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::support::send(addr, method, path, &h, body.into())
            .await
            .expect("send")
    };
    let r = send(
        "POST",
        "/oauth2/token",
        vec![
            (FORM.0, FORM.1.to_owned()),
            ("authorization", basic("a-client", &setup.secret)),
        ],
        form(&[("grant_type", "client_credentials")]),
    )
    .await;
    let token = issued(&r);
    assert_eq!(claims_of(&token)["aud"], format!("{OWN}/tenants/a"));
    let bearer = format!("Bearer {token}");
    let on_a = send(
        "GET",
        "/a/Users",
        vec![("authorization", bearer.clone())],
        String::new(),
    )
    .await;
    assert_eq!(on_a.status, 200, "{}", on_a.text());
    let on_b = send(
        "GET",
        "/b/Users",
        vec![("authorization", bearer)],
        String::new(),
    )
    .await;
    assert_eq!(on_b.status, 401, "{}", on_b.text());
    assert_eq!(upstream.hits(), 1);
}

/// What the attacker sends (name, method, headers, body) and the status and error it gets.
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, String)>,
    String,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_refuses_what_an_attacker_sends_instead() {
    let setup = Setup::new();
    let (gw, upstream, _entra, _) = start(&setup).await;
    let good = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "secret"),
        ("client_secret", &setup.secret),
    ]);
    let auth = basic("secret", &setup.secret);
    let cases: Vec<Case<'_>> = vec![
        (
            "duplicate parameter",
            "POST",
            vec![(FORM.0, FORM.1.into())],
            format!("{good}&client_secret=other"),
            400,
            "invalid_request",
        ),
        (
            "duplicate grant_type",
            "POST",
            vec![(FORM.0, FORM.1.into())],
            format!("{good}&grant_type=client_credentials"),
            400,
            "invalid_request",
        ),
        (
            "two authentication methods",
            "POST",
            vec![(FORM.0, FORM.1.into()), ("authorization", auth.clone())],
            good.clone(),
            400,
            "invalid_request",
        ),
        (
            "Basic that is not base64",
            "POST",
            vec![(FORM.0, FORM.1.into()), ("authorization", "Basic %%%!".into())],
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
        ),
        (
            "Basic with bad percent-encoding",
            "POST",
            vec![
                (FORM.0, FORM.1.into()),
                (
                    "authorization",
                    format!("Basic {}", STANDARD.encode(format!("secret%zz:{}", setup.secret))),
                ),
            ],
            form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
        ),
        (
            "JSON instead of a form",
            "POST",
            vec![("content-type", "application/json".into())],
            json!({"grant_type": "client_credentials", "client_id": "secret", "client_secret": setup.secret}).to_string(),
            400,
            "invalid_request",
        ),
        (
            "GET with the credentials in the query",
            "GET",
            vec![],
            String::new(),
            405,
            "invalid_request",
        ),
        (
            "another grant",
            "POST",
            vec![(FORM.0, FORM.1.into()), ("authorization", auth.clone())],
            form(&[("grant_type", "password"), ("username", "a"), ("password", "b")]),
            400,
            "unsupported_grant_type",
        ),
        (
            "a huge body",
            "POST",
            vec![(FORM.0, FORM.1.into())],
            format!("{good}&pad={}", "a".repeat(1 << 20)),
            413,
            "invalid_request",
        ),
    ];
    for (what, method, headers, body, status, code) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let path = if method == "GET" {
            "/oauth2/token?grant_type=client_credentials&client_id=secret"
        } else {
            "/oauth2/token"
        };
        let r = gw.request(method, path, &h, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{what}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    }
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_naming_the_local_issuer_need_its_keys_and_the_reverse() {
    let setup = Setup::new();
    let (gw, upstream, _entra, _) = start(&setup).await;
    let exp = now() + 300;
    let own_claims = json!({
        "iss": OWN, "aud": OWN, "sub": "okta", "client_id": "okta", "iat": now(), "exp": exp,
        "jti": random_hex(8), "scope": "scim", "groups": ["scim-provisioners"],
    });
    // The local issuer's name, signed with the external IdP's key (in the [jwt] JWKS).
    let spoofed = Token::new()
        .claim("iss", json!(OWN))
        .claim("aud", json!(OWN))
        .claim("client_id", json!("okta"))
        .claim("sub", json!("okta"))
        .sign(ec_key());
    // alg confusion: HS256 keyed with the local public key; alg none.
    let jwks = gw.get("/.well-known/jwks.json", None).await.json();
    let local_kid = jwks["keys"][0]["kid"].as_str().unwrap_or("").to_owned();
    let hs = hs256(
        &own_claims.to_string(),
        &local_kid,
        jwks["keys"][0].to_string().as_bytes(),
    );
    let none = mint::alg_none(&own_claims.to_string(), &local_kid);
    // The external issuer's name, signed with the local key.
    let reverse = sign_es256(
        &setup.current_der,
        &json!({"alg": "ES256", "typ": "JWT", "kid": local_kid}),
        &json!({
            "iss": mint::ISSUER, "aud": mint::AUDIENCE, "sub": "x", "iat": now(), "exp": exp,
            "groups": ["scim-provisioners"],
        }),
    );
    // An issuer nobody configured.
    let unknown = Token::new()
        .claim("iss", json!("https://evil.example"))
        .sign(ec_key());
    // The local key with the right claims, but a client that is not configured.
    let ghost = sign_es256(
        &setup.current_der,
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": local_kid}),
        &json!({
            "iss": OWN, "aud": OWN, "sub": "ghost", "client_id": "ghost", "iat": now(),
            "exp": exp, "jti": random_hex(8), "scope": "scim", "groups": ["scim-provisioners"],
        }),
    );
    for (what, token) in [
        ("spoofed local iss", spoofed),
        ("HS256 with the public key", hs),
        ("alg none", none),
        ("external iss, local key", reverse),
        ("unknown iss", unknown),
        ("unconfigured client", ghost),
    ] {
        let r = gw.get("/Users", Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    // The control: the same local key with a configured client passes.
    let real = sign_es256(
        &setup.current_der,
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": local_kid}),
        &own_claims,
    );
    assert_eq!(gw.get("/Users", Some(&real)).await.status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_external_issuer_verifies_only_with_its_own_keys() {
    let (jwks_v2, upstream, cfg) = fixture().await;
    let v1_key = SigningKey::rsa("v1-key");
    let jwks_v1 = JwksServer::start(mint::jwks(&[&v1_key])).await;
    let v1 = format!("https://sts.windows.net/{ENTRA_TID}/");
    let cfg = cfg.extra(&format!(
        "[[jwt.extra_issuers]]\nissuer = {}\njwks_url = {}\n",
        toml_str(&v1),
        toml_str(&jwks_v1.url())
    ));
    let gw = Gateway::start(cfg).await;
    let v2_token = Token::new().sign(rsa_key());
    let v1_token = Token::new().claim("iss", json!(v1)).sign(&v1_key);
    assert_eq!(gw.get("/Users", Some(&v2_token)).await.status, 200);
    assert_eq!(gw.get("/Users", Some(&v1_token)).await.status, 200);
    // Each name with the other's key.
    let v1_by_v2_key = Token::new().claim("iss", json!(v1)).sign(rsa_key());
    let v2_by_v1_key = Token::new().sign(&v1_key);
    for token in [v1_by_v2_key, v2_by_v1_key] {
        assert_eq!(gw.get("/Users", Some(&token)).await.status, 401);
    }
    assert_eq!(upstream.hits(), 2);
    let _ = jwks_v2;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_keys_are_published_and_absent_without_an_issuer() {
    let setup = Setup::new();
    let (jwks, upstream, cfg) = fixture().await;
    let entra = JwksServer::start(mint::jwks(&[rsa_key()])).await;
    let with_path = setup
        .issuer_toml(&[&setup.current], &entra.url(), None)
        .replace(
            &format!("url = {}", toml_str(OWN)),
            &format!("url = {}", toml_str(&format!("{OWN}/gw"))),
        );
    let gw = Gateway::start(cfg.clone().extra(&with_path)).await;
    let r = gw
        .get("/.well-known/oauth-authorization-server/gw", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let meta = r.json();
    assert_eq!(meta["issuer"], format!("{OWN}/gw"));
    assert_eq!(meta["token_endpoint"], format!("{OWN}/gw/oauth2/token"));
    assert_eq!(meta["jwks_uri"], format!("{OWN}/gw/.well-known/jwks.json"));
    let keys = gw.get("/gw/.well-known/jwks.json", None).await;
    assert_eq!(keys.status, 200);
    let key = &keys.json()["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert!(key.get("d").is_none(), "never the private key");
    let post = gw
        .request(
            "POST",
            "/.well-known/oauth-authorization-server/gw",
            &[],
            "",
        )
        .await;
    assert_eq!(post.status, 405);
    // The token endpoint lives under the issuer's path.
    let r = gw
        .request(
            "POST",
            "/gw/oauth2/token",
            &[FORM],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_client", "{}", r.text());

    let plain = Gateway::start(cfg).await;
    for path in [
        "/oauth2/token",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        assert_eq!(plain.get(path, None).await.status, 404, "{path}");
    }
    assert_eq!(upstream.hits(), 0);
    let _ = jwks;
}

#[test]
fn check_reports_issuer_problems_with_key_paths() {
    let dir = TempDir::new("issuer-check");
    let key = dir.write("sa.key", b"k\n", 0o600);
    let text = format!(
        "[upstream]\nurl = \"https://scim.example\"\n[jwt]\njwks_url = \"https://idp.example/keys\"\n\
         issuer = \"https://idp.example\"\naudience = \"x\"\n\
         [[jwt.extra_issuers]]\nissuer = \"https://idp.example\"\n\
         [[rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"g\"\nservice_account = \"sa\"\n\
         [service_accounts.sa]\nheader = \"authorization\"\napi_key_file = {}\n\
         [issuer]\nurl = \"https://gw.example/\"\nsigning_key_files = []\ntoken_lifetime = \"10h\"\n\
         [[issuer.clients]]\nclient_id = \"c\"\nscope = [\"scim\"]\nsurprise = 1\n",
        toml_str(&key.to_string_lossy())
    );
    let path = dir.write("scimgate.toml", text.as_bytes(), 0o644);
    let out = run_check_file(&path, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    for expected in [
        "issuer.clients[0].surprise: unknown key",
        "issuer.signing_key_files:",
        "issuer.token_lifetime:",
        "jwt.extra_issuers[0].issuer:",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected} missing:\n{}",
            out.stderr
        );
    }
}
