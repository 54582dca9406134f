//! Token claims: RFC 9068's registered claims, the client's own, and which wins.

use serde_json::json;

use super::*;
use crate::issuer::config::{ClientAuth, Tenancy};
use crate::issuer::testing::{check, key_file, temp_dir};

fn config() -> IssuerConfig {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let toml = format!(
        r#"url = "https://s.example"
signing_key_files = ["{key}"]
[[clients]]
client_id = "okta"
scope = ["scim", "scim.read"]
claims = {{ groups = ["okta"], nested = {{ a = 1 }} }}
"#
    );
    let c = check(&toml, Tenancy::Single).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    c
}

#[test]
fn registered_claims_and_the_clients_own() {
    let c = config();
    let client = &c.clients[0];
    let claims = claims(&c, client, "scim", 1_000, Duration::from_secs(3600), "j1");
    assert_eq!(
        Value::Object(claims),
        json!({
            "iss": "https://s.example", "sub": "okta", "client_id": "okta",
            "aud": "https://s.example", "iat": 1_000, "exp": 4_600, "jti": "j1",
            "scope": "scim", "groups": ["okta"], "nested": {"a": 1},
        })
    );
}

/// Defence in depth behind config validation: a configured claim named like a registered one
/// never reaches the token.
#[test]
fn registered_claims_win_over_configured_ones() {
    let c = config();
    let mut client = ClientConfig {
        client_id: "okta".into(),
        scope: vec!["scim".into()],
        claims: Map::new(),
        auth: ClientAuth::MintOnly,
        not_before: None,
        tenant: None,
    };
    for (name, value) in [
        ("iss", json!("https://evil")),
        ("sub", json!("admin")),
        ("client_id", json!("admin")),
        ("aud", json!("other")),
        ("exp", json!(u64::MAX)),
        ("scope", json!("admin")),
        ("jti", json!("fixed")),
    ] {
        client.claims.insert(name.into(), value);
    }
    let claims = claims(&c, &client, "scim", 10, Duration::from_secs(60), "j");
    assert_eq!(claims["iss"], "https://s.example");
    assert_eq!(claims["sub"], "okta");
    assert_eq!(claims["client_id"], "okta");
    assert_eq!(claims["aud"], "https://s.example");
    assert_eq!(claims["exp"], 70);
    assert_eq!(claims["scope"], "scim");
    assert_eq!(claims["jti"], "j");
}

#[test]
fn jtis_are_128_random_bits() {
    let a = new_jti().unwrap();
    assert_eq!(a.len(), 22);
    assert_ne!(a, new_jti().unwrap());
}
