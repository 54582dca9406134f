//! The token endpoint against the attacker's requests: for each check, the request that would
//! get around it, refused. Assertions are verified by the real bearer `Verifier` over JWKS
//! served on loopback; issued tokens are checked the same way a tenant checks them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, json};

use super::*;
use crate::auth::verify::now;
use crate::issuer::config::Tenancy;
use crate::issuer::testing::{RsaSigner, check, issuer, key_file, serve, temp_dir, verifier};

const SECRET: &str = "s3cret-value_0123456789";
const ENTRA_ISS: &str = "https://login.microsoftonline.com/tid-1/v2.0";
const OID: &str = "11111111-2222-3333-4444-555555555555";
const AUDIENCE: &str = "api://appid-1";
const TOKEN_URL: &str = "https://s.example/oauth2/token";
const FORM: &str = "application/x-www-form-urlencoded";

struct Fixture {
    issuer: Issuer,
    entra: RsaSigner,
    /// A self-signing client (RFC 7523 §3: iss = sub = client id), as authlib sends.
    selfsigned: crate::demo::issuer::Issuer,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha256_hex(text: &str) -> String {
    crate::text::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

async fn fixture() -> Fixture {
    fixture_limited(1000).await
}

/// `per_client`: failures a client id may have per minute (each peer may have 5).
async fn fixture_limited(per_client: u32) -> Fixture {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let entra = RsaSigner::new("entra-kid");
    let selfsigned = crate::demo::issuer::Issuer::generate("authlib-kid").unwrap();
    let entra_keys = serve(entra.jwks()).await;
    let selfsigned_keys = serve(selfsigned.jwks()).await;
    let hash = sha256_hex(SECRET);
    let toml = format!(
        r#"url = "https://s.example"
signing_key_files = ["{key}"]
max_failures_per_client = {per_client}
max_failures_per_peer = 5

[[clients]]
client_id = "script"
scope = ["scim", "scim.read"]
secret_sha256 = "{hash}"

[[clients]]
client_id = "entra-wif"
scope = ["scim"]
claims = {{ groups = ["scim-provisioners"] }}
assertion = {{ issuer = "{ENTRA_ISS}", jwks_url = "{entra_keys}", subject = "{OID}", audience = "{AUDIENCE}" }}

[[clients]]
client_id = "authlib"
scope = ["scim"]
assertion = {{ issuer = "authlib", jwks_url = "{selfsigned_keys}", subject = "authlib", audience = "{TOKEN_URL}" }}

[[clients]]
client_id = "okta"
scope = ["scim"]

[[clients]]
client_id = "later"
scope = ["scim"]
secret_sha256 = "{hash}"
not_before = "2999-01-01T00:00:00Z"
"#
    );
    Fixture {
        issuer: issuer(check(&toml, Tenancy::Single).unwrap()),
        entra,
        selfsigned,
        dir,
    }
}

/// Each request from its own address, unless a test says otherwise: the per-peer limit is
/// tested on its own.
fn fresh_peer() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    IpAddr::V4(Ipv4Addr::from(
        0x0a00_0000 + NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

struct Sent {
    response: TokenResponse,
    json: Value,
}

impl Sent {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("(none)")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.response.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

impl Fixture {
    async fn send(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        body: &str,
        peer: IpAddr,
    ) -> Sent {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let response = self
            .issuer
            .token_endpoint(TokenRequest {
                method: &method,
                query: None,
                headers: &map,
                body: body.as_bytes(),
                peer,
                now: now(),
            })
            .await;
        assert_eq!(response.headers["cache-control"], "no-store");
        assert_eq!(response.headers["pragma"], "no-cache");
        assert_eq!(response.headers["content-type"], "application/json");
        let json: Value = serde_json::from_slice(&response.body).unwrap();
        let text = String::from_utf8_lossy(&response.body);
        assert!(!text.contains(SECRET), "the secret is never echoed");
        Sent { response, json }
    }

    async fn post(&self, headers: &[(&str, &str)], body: &str) -> Sent {
        let mut all = vec![("content-type", FORM)];
        all.extend_from_slice(headers);
        self.send(Method::POST, &all, body, fresh_peer()).await
    }

    async fn basic(&self, id: &str, secret: &str, body: &str) -> Sent {
        self.post(&[("authorization", &basic(id, secret))], body)
            .await
    }

    /// Entra's request exactly as Microsoft documents it (idp-clients.md §2).
    async fn entra(&self, assertion: &str) -> Sent {
        self.post(&[], &entra_body(assertion)).await
    }

    /// Which refusal a form body without an `Authorization` header meets: the reason behind
    /// the uniform `invalid_client`, so a case cannot pass by failing some other check.
    async fn refusal(&self, body: &str) -> Refusal {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
        let request = TokenRequest {
            method: &Method::POST,
            query: None,
            headers: &headers,
            body: body.as_bytes(),
            peer: fresh_peer(),
            now: now(),
        };
        self.issuer
            .exchange(&request, &mut Audit::default())
            .await
            .expect_err("refused")
    }

    /// The claims of Entra's documented assertion.
    fn entra_claims(&self) -> Map<String, Value> {
        let iat = now() - 60;
        json!({
            "aud": AUDIENCE, "iss": ENTRA_ISS, "sub": OID, "oid": OID, "appid": "app-2",
            "tid": "tid-1", "iat": iat, "nbf": iat, "exp": iat + 3900, "ver": "2.0",
            "idp": ENTRA_ISS, "appidacr": "2", "rh": "0.AAAA",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn entra_with(&self, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = self.entra_claims();
        change(&mut claims);
        self.entra.sign(&Value::Object(claims))
    }

    fn selfsigned_assertion(&self, jti: &str) -> String {
        self.selfsigned
            .mint(
                &json!({"iss": "authlib", "sub": "authlib", "aud": TOKEN_URL,
                "jti": jti, "iat": now(), "exp": now() + 60}),
            )
            .unwrap()
    }

    /// An issued token, checked as a tenant checks it.
    async fn verify_issued(&self, sent: &Sent) -> Arc<Map<String, Value>> {
        let mut jwt = self.issuer.config().local_jwt(None);
        jwt.jwks_url = Some(
            serve(self.issuer.jwks_json().to_owned())
                .await
                .parse()
                .unwrap(),
        );
        let token = sent.json["access_token"].as_str().unwrap();
        let claims = verifier(&jwt).verify(token).await.unwrap().claims;
        assert_eq!(self.issuer.admit(&claims, None), Ok(()));
        claims
    }
}

fn assert_refused(sent: &Sent, status: StatusCode, error: &str, what: &str) {
    assert_eq!(
        (sent.response.status, sent.error()),
        (status, error),
        "{what}: {}",
        sent.json
    );
    assert!(sent.json.get("access_token").is_none(), "{what}");
}

/// invalid_client: 401, the Basic challenge (RFC 9110 §15.5.2, RFC 6749 §5.2), and the same
/// description whatever failed.
fn assert_invalid_client(sent: &Sent, what: &str) {
    assert_refused(sent, StatusCode::UNAUTHORIZED, "invalid_client", what);
    assert_eq!(
        sent.header("www-authenticate"),
        Some(r#"Basic realm="scimgate""#),
        "{what}"
    );
    assert_eq!(
        sent.json["error_description"], "client authentication failed",
        "{what}"
    );
    assert_eq!(sent.response.outcome, TokenOutcome::InvalidClient, "{what}");
}

#[tokio::test]
async fn client_secret_basic_and_post_get_tokens() {
    let f = fixture().await;
    let sent = f
        .basic("script", SECRET, "grant_type=client_credentials")
        .await;
    assert_eq!(sent.response.status, StatusCode::OK, "{}", sent.json);
    assert_eq!(sent.response.outcome, TokenOutcome::Issued);
    assert_eq!(sent.json["token_type"], "Bearer");
    assert_eq!(sent.json["expires_in"], 3600);
    assert_eq!(
        sent.json["scope"], "scim scim.read",
        "no scope asked: the client's full list"
    );
    let claims = f.verify_issued(&sent).await;
    assert_eq!(claims["sub"], "script");
    assert_eq!(claims["client_id"], "script");
    assert_eq!(claims["aud"], "https://s.example");

    let post = f
        .post(
            &[],
            &format!(
                "grant_type=client_credentials&client_id=script&client_secret={SECRET}&scope=scim"
            ),
        )
        .await;
    assert_eq!(post.response.status, StatusCode::OK, "{}", post.json);
    assert_eq!(post.json["scope"], "scim");
    assert_ne!(
        post.json["access_token"], sent.json["access_token"],
        "a fresh jti each time"
    );

    // Equivalent spellings of the same id are the same id; the Basic id may be repeated in
    // the body.
    let encoded = f
        .basic(
            "scr%69pt",
            SECRET,
            "grant_type=client_credentials&client_id=script",
        )
        .await;
    assert_eq!(encoded.response.status, StatusCode::OK, "{}", encoded.json);
}

#[tokio::test]
async fn secrets_are_compared_exactly() {
    let f = fixture().await;
    let mut near = SECRET.as_bytes().to_vec();
    *near.last_mut().unwrap() ^= 1;
    let near = String::from_utf8(near).unwrap();
    let grant = "grant_type=client_credentials";
    for (id, secret, expected, what) in [
        ("script", near.as_str(), Refusal::BadSecret, "one byte off"),
        (
            "script",
            &SECRET[..SECRET.len() - 1],
            Refusal::BadSecret,
            "a prefix",
        ),
        (
            "script",
            &format!("{SECRET}x"),
            Refusal::BadSecret,
            "an extension",
        ),
        ("script", "", Refusal::BadSecret, "empty"),
        (
            "Script",
            SECRET,
            Refusal::UnknownClient,
            "the id in another case",
        ),
        (
            "script+",
            SECRET,
            Refusal::UnknownClient,
            "the id with a trailing space",
        ),
        (
            "nobody",
            SECRET,
            Refusal::UnknownClient,
            "an unknown client",
        ),
        ("okta", SECRET, Refusal::WrongMethod, "a mint-only client"),
        (
            "entra-wif",
            SECRET,
            Refusal::WrongMethod,
            "an assertion client",
        ),
    ] {
        assert_invalid_client(&f.basic(id, secret, grant).await, what);
        let post = format!("{grant}&client_id={id}&client_secret={secret}");
        let sent = f.post(&[], &post).await;
        if secret.is_empty() {
            // RFC 6749 §3.2: an empty client_secret is no client_secret.
            assert_invalid_client(&sent, "post without a secret");
        } else {
            assert_invalid_client(&sent, what);
            assert_eq!(f.refusal(&post).await, expected, "{what}");
        }
    }
    // A NUL or other control byte in the id is no client id at all.
    for id in ["script%00", "script%0a", "scr%C3%AFpt", "%FFscript"] {
        let sent = f
            .post(
                &[],
                &format!("{grant}&client_id={id}&client_secret={SECRET}"),
            )
            .await;
        assert_eq!(
            sent.response.status,
            StatusCode::BAD_REQUEST,
            "{id}: {}",
            sent.json
        );
    }
    assert_invalid_client(
        &f.basic("script%00", SECRET, grant).await,
        "NUL in the Basic id",
    );
}

/// RFC 6749 §2.3: one authentication method per request.
#[tokio::test]
async fn exactly_one_authentication_method() {
    let f = fixture().await;
    let grant = "grant_type=client_credentials";
    let assertion = f.selfsigned_assertion("j-both");
    let jwt_bearer = format!(
        "client_assertion_type={}&client_assertion={assertion}",
        JWT_BEARER.replace(':', "%3A")
    );
    let cases = [
        (
            Some(basic("script", SECRET)),
            format!("{grant}&client_secret={SECRET}"),
            "Basic and client_secret",
        ),
        (
            Some(basic("script", SECRET)),
            format!("{grant}&client_id=script&client_secret={SECRET}"),
            "Basic and post",
        ),
        (
            Some(basic("script", SECRET)),
            format!("{grant}&{jwt_bearer}"),
            "Basic and an assertion",
        ),
        (
            None,
            format!("{grant}&client_id=script&client_secret={SECRET}&{jwt_bearer}"),
            "post and an assertion",
        ),
        (
            Some("Bearer abc".to_owned()),
            format!("{grant}&client_id=script&client_secret={SECRET}"),
            "another scheme and post",
        ),
    ];
    for (authorization, body, what) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("authorization", a.as_str()))
            .collect();
        let sent = f.post(&headers, &body).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_request", what);
        assert_eq!(
            sent.json["error_description"],
            "use exactly one client authentication method"
        );
    }
    let mismatch = f
        .basic("script", SECRET, &format!("{grant}&client_id=entra-wif"))
        .await;
    assert_refused(
        &mismatch,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "client_id names another client",
    );
    let two = f
        .post(
            &[
                ("authorization", &basic("script", SECRET)),
                ("authorization", &basic("script", SECRET)),
            ],
            grant,
        )
        .await;
    assert_refused(
        &two,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "two Authorization headers",
    );
    assert_invalid_client(&f.post(&[], grant).await, "no authentication");
    assert_invalid_client(
        &f.post(&[], &format!("{grant}&client_id=script")).await,
        "an id alone",
    );
    assert_invalid_client(
        &f.post(&[("authorization", "Bearer abc")], grant).await,
        "a bearer token",
    );
    assert_invalid_client(
        &f.post(&[("authorization", "Basic !!")], grant).await,
        "bad base64",
    );
    let no_id = f
        .post(&[], &format!("{grant}&client_secret={SECRET}"))
        .await;
    assert_refused(
        &no_id,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "a secret without an id",
    );
}

#[tokio::test]
async fn the_request_itself() {
    let f = fixture().await;
    let auth = basic("script", SECRET);
    let get = f
        .send(Method::GET, &[("authorization", &auth)], "", fresh_peer())
        .await;
    assert_refused(
        &get,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "GET",
    );
    assert_eq!(get.header("allow"), Some("POST"));
    for (content_type, what) in [
        (None, "no media type"),
        (Some("application/json"), "JSON"),
        (Some("multipart/form-data; boundary=x"), "multipart"),
        (
            Some("application/x-www-form-urlencoded; charset=iso-8859-1"),
            "another charset",
        ),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(content_type.map(|c| ("content-type", c)));
        let sent = f
            .send(
                Method::POST,
                &headers,
                "grant_type=client_credentials",
                fresh_peer(),
            )
            .await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_request", what);
    }
    for (body, error, what) in [
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            "invalid_request",
            "grant_type twice",
        ),
        (
            "grant_type=password&grant%5Ftype=client_credentials",
            "invalid_request",
            "grant_type twice, once escaped",
        ),
        (
            "grant_type=client_credentials&scope=scim&scope=scim.read",
            "invalid_request",
            "scope twice",
        ),
        (
            "grant_type=client_credentials&client_id=script&client_id=other",
            "invalid_request",
            "client_id twice",
        ),
        (
            "grant_type=client_credentials&x=%zz",
            "invalid_request",
            "a bad escape",
        ),
        ("", "invalid_request", "no grant_type"),
        ("grant_type=", "invalid_request", "an empty grant_type"),
        (
            "grant_type=Client_Credentials",
            "unsupported_grant_type",
            "the grant type in another case",
        ),
        (
            "grant_type=client_credentials%20",
            "unsupported_grant_type",
            "a trailing space",
        ),
        (
            "grant_type=password&username=a&password=b",
            "unsupported_grant_type",
            "the password grant",
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
            "unsupported_grant_type",
            "RFC 7523 §2.1",
        ),
    ] {
        let sent = f.basic("script", SECRET, body).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, error, what);
    }
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "a".repeat(MAX_BODY_BYTES)
    );
    assert_refused(
        &f.basic("script", SECRET, &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        "too large",
    );
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
    let with_query = f
        .issuer
        .token_endpoint(TokenRequest {
            method: &Method::POST,
            query: Some("client_secret=x"),
            headers: &headers,
            body: b"grant_type=client_credentials",
            peer: fresh_peer(),
            now: now(),
        })
        .await;
    assert_eq!(with_query.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scope_is_a_subset_of_the_clients() {
    let f = fixture().await;
    let with = |scope: &str| format!("grant_type=client_credentials&scope={scope}");
    for (scope, granted) in [
        ("scim", "scim"),
        ("scim.read+scim", "scim scim.read"),
        ("scim%20scim", "scim"),
        ("", "scim scim.read"),
    ] {
        let sent = f.basic("script", SECRET, &with(scope)).await;
        assert_eq!(
            sent.response.status,
            StatusCode::OK,
            "{scope}: {}",
            sent.json
        );
        assert_eq!(sent.json["scope"], granted, "{scope}");
        let claims = f.verify_issued(&sent).await;
        assert_eq!(claims["scope"], granted);
    }
    for scope in [
        "admin",
        "scim+admin",
        "SCIM",
        "%20",
        "+scim",
        "scim+",
        "scim++scim.read",
        "scim%09scim.read",
        "scim%22",
    ] {
        let sent = f.basic("script", SECRET, &with(scope)).await;
        assert_refused(&sent, StatusCode::BAD_REQUEST, "invalid_scope", scope);
        assert_eq!(sent.response.outcome, TokenOutcome::InvalidScope);
    }
    let unauthenticated = f
        .post(
            &[],
            "grant_type=client_credentials&client_id=okta&scope=admin",
        )
        .await;
    assert_invalid_client(&unauthenticated, "authentication comes before scope");
}

#[tokio::test]
async fn not_before_ahead_refuses_an_authenticated_client() {
    let f = fixture().await;
    let sent = f
        .basic("later", SECRET, "grant_type=client_credentials")
        .await;
    assert_refused(
        &sent,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        "not_before ahead",
    );
    assert_eq!(sent.response.outcome, TokenOutcome::UnauthorizedClient);
    let wrong = f
        .basic("later", "wrong", "grant_type=client_credentials")
        .await;
    assert_invalid_client(&wrong, "authentication first: no oracle for not_before");
}

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

fn entra_body(assertion: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id=entra-wif&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}&scope=scim"
    )
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

#[tokio::test]
async fn failed_attempts_are_limited_per_client_and_per_peer() {
    let f = fixture_limited(3).await;
    let grant = "grant_type=client_credentials";
    for _ in 0..3 {
        assert_invalid_client(&f.basic("script", "guess", grant).await, "guess");
    }
    let locked = f.basic("script", SECRET, grant).await;
    assert_refused(
        &locked,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "client over its limit",
    );
    assert_eq!(locked.response.outcome, TokenOutcome::RateLimited);
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        f.entra(&f.entra_with(|_| {})).await.response.status,
        StatusCode::OK,
        "other clients unaffected"
    );

    let peer = fresh_peer();
    let headers = [("content-type", FORM)];
    for i in 0..5 {
        let body = format!("{grant}&client_id=nobody{i}&client_secret=x");
        assert_invalid_client(
            &f.send(Method::POST, &headers, &body, peer).await,
            "unknown ids",
        );
    }
    let auth = basic("entra-wif", "x");
    let from_peer = f
        .send(
            Method::POST,
            &[("content-type", FORM), ("authorization", &auth)],
            grant,
            peer,
        )
        .await;
    assert_refused(
        &from_peer,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "peer over its limit",
    );
    let good = format!("{grant}&client_id=okta&client_secret=x");
    let elsewhere = f.send(Method::POST, &headers, &good, fresh_peer()).await;
    assert_invalid_client(&elsewhere, "another peer is still heard");
}

/// A `Write` into a shared buffer, for reading the audit lines back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_issuance_and_refusal_is_audited_without_credentials() {
    let f = fixture().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let issued = f
        .basic("script", SECRET, "grant_type=client_credentials")
        .await;
    let assertion = f.entra_with(|_| {});
    let via_assertion = f.entra(&assertion).await;
    let wrong_sub = f.entra_with(|c| {
        c.insert("sub".into(), json!("intruder\n{\"forged\":1}"));
    });
    f.entra(&wrong_sub).await;
    f.basic("script", "wrong-secret", "grant_type=client_credentials")
        .await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["target"] == "scimgate::token")
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines.iter().all(|l| l["target"] == "scimgate::token"));
    let fields: Vec<&Value> = lines.iter().map(|l| &l["fields"]).collect();
    assert_eq!(fields[0]["outcome"], "issued");
    assert_eq!(fields[0]["client"], "script");
    assert_eq!(fields[0]["method"], "client_secret_basic");
    assert_eq!(fields[0]["grant"], "client_credentials");
    let claims = f.verify_issued(&issued).await;
    assert_eq!(fields[0]["jti"], claims["jti"]);
    assert_eq!(fields[1]["method"], "private_key_jwt");
    assert_eq!(fields[1]["assertion_iss"], ENTRA_ISS);
    assert_eq!(fields[1]["assertion_sub"], OID);
    assert_eq!(fields[2]["outcome"], "invalid_client");
    assert_eq!(fields[2]["reason"], "wrong_subject");
    assert_eq!(
        fields[2]["assertion_sub"], "intruder?{\"forged\":1}",
        "made printable"
    );
    assert_eq!(fields[3]["reason"], "bad_secret");
    for secret in [
        SECRET,
        "wrong-secret",
        &assertion,
        &wrong_sub,
        issued.json["access_token"].as_str().unwrap(),
        via_assertion.json["access_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "a credential in the audit log");
    }
    // The signature part alone would do as much harm: no third of a JWS either.
    assert!(!text.contains(assertion.rsplit('.').next().unwrap()));
}
