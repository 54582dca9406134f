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

fn entra_body(assertion: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id=entra-wif&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}&scope=scim"
    )
}

mod assertion;
mod audit;
mod request;
