//! `[issuer]` validation: the contract's example, and every problem reported with its path.

use std::time::Duration;

use figment::providers::Format;
use serde::Deserialize;

use super::*;
use crate::issuer::testing::{check, key_file, raw, temp_dir, write};

const SECRET_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn example(keys: &[String]) -> String {
    format!(
        r#"
url = "https://scimgate.example.com"
signing_key_files = {keys:?}

[[clients]]
client_id = "entra-wif"
scope = ["scim"]
claims = {{ groups = ["scim-provisioners"] }}
assertion = {{ issuer = "https://login.microsoftonline.com/tid/v2.0", jwks_url = "https://login.microsoftonline.com/tid/discovery/v2.0/keys", subject = "0000-oid", audience = "api://appid" }}
not_before = "2026-12-01T00:00:00Z"

[[clients]]
client_id = "script"
scope = ["scim", "scim.read"]
secret_sha256 = "{SECRET_HASH}"

[[clients]]
client_id = "okta"
scope = ["scim"]
claims = {{ groups = ["okta"], level = 3 }}
"#
    )
}

#[test]
fn the_contract_example_validates_with_defaults() {
    let dir = temp_dir();
    let keys = vec![
        key_file(&dir, "current.pem"),
        key_file(&dir, "previous.pem"),
    ];
    let c = check(&example(&keys), Tenancy::Single).unwrap();
    assert_eq!(c.url, "https://scimgate.example.com");
    assert_eq!(c.signing_keys.len(), 2);
    assert!(c.signing_keys.iter().all(|k| k.pem.is_some()));
    assert_eq!(c.token_lifetime, Duration::from_secs(3600));
    assert_eq!(c.max_minted_lifetime, Duration::from_secs(400 * 86_400));
    assert_eq!(c.failure_window, Duration::from_secs(60));
    assert_eq!(
        (c.max_failures_per_client, c.max_failures_per_peer),
        (20, 20)
    );
    let wif = c.client("entra-wif").unwrap();
    assert_eq!(wif.not_before, Some(1_796_083_200));
    assert_eq!(
        wif.claims["groups"],
        serde_json::json!(["scim-provisioners"])
    );
    let ClientAuth::Assertion(a) = &wif.auth else {
        panic!("assertion client")
    };
    let jwt = a.jwt_config();
    assert_eq!(
        jwt.issuer.as_deref(),
        Some("https://login.microsoftonline.com/tid/v2.0")
    );
    assert_eq!(jwt.audience, ["api://appid"]);
    assert_eq!(
        jwt.token_cache_size, 0,
        "assertions are never served from a cache"
    );
    assert!(
        jwt.max_lifetime >= Duration::from_secs(3900),
        "admits Entra's 65 minutes"
    );
    assert!(!jwt.algorithms.contains(&jsonwebtoken::Algorithm::HS256));
    assert!(matches!(
        c.client("script").unwrap().auth,
        ClientAuth::Secret(_)
    ));
    assert!(matches!(
        c.client("okta").unwrap().auth,
        ClientAuth::MintOnly
    ));
    assert!(c.client("Okta").is_none(), "ids compare exactly");
    assert_eq!(c.audience(None), "https://scimgate.example.com");
    let local = c.local_jwt(None);
    assert_eq!(local.issuer.as_deref(), Some(c.url.as_str()));
    assert_eq!(local.algorithms, [jsonwebtoken::Algorithm::ES256]);
    assert_eq!(local.max_lifetime, c.max_minted_lifetime);
    assert!(
        !format!("{c:?}").contains("BEGIN"),
        "no key material in Debug"
    );
    assert!(!format!("{c:?}").contains(SECRET_HASH));
    std::fs::remove_dir_all(dir).unwrap();
}

fn paths(result: Result<IssuerConfig, Vec<Problem>>) -> Vec<String> {
    let mut paths: Vec<String> = result.unwrap_err().into_iter().map(|p| p.path).collect();
    paths.sort();
    paths
}

/// One run names every mistake with its key path, as `scimgate check` lists them.
#[test]
fn reports_every_problem_with_its_key_path() {
    let dir = temp_dir();
    let not_a_key = write(
        &dir,
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let key = key_file(&dir, "k.pem");
    let toml = format!(
        r#"
url = "http://scimgate.example.com"
signing_key_files = ["{not_a_key}", "{key}", "{key}", "/nonexistent/key.pem"]
token_lifetime = "7h"
max_minted_lifetime = "401d"
failure_window = "0s"
max_failures_per_client = 0
max_failures_per_peer = 10001

[[clients]]
client_id = "a b\u0001"
scope = []
claims = {{ iss = "https://evil", scope = "admin", "" = 1, ok = "fine" }}
secret_sha256 = "{SECRET_HASH}"
assertion = {{ issuer = "x", jwks_url = "https://x/keys", subject = "s", audience = "a" }}

[[clients]]
client_id = "c1"
scope = ["scim", "scim", "two words", "quote\""]
secret_sha256 = "abc"
not_before = "tomorrow"
tenant = "acme"

[[clients]]
client_id = "c1"
scope = ["scim"]
assertion = {{ issuer = "", jwks_url = "http://idp.example.com/keys", subject = "s" }}
"#
    );
    assert_eq!(
        paths(check(&toml, Tenancy::Single)),
        [
            "issuer.clients[0]",
            "issuer.clients[0].claims.",
            "issuer.clients[0].claims.iss",
            "issuer.clients[0].claims.scope",
            "issuer.clients[0].client_id",
            "issuer.clients[0].scope",
            "issuer.clients[1].not_before",
            "issuer.clients[1].scope[1]",
            "issuer.clients[1].scope[2]",
            "issuer.clients[1].scope[3]",
            "issuer.clients[1].secret_sha256",
            "issuer.clients[1].tenant",
            "issuer.clients[2].assertion.audience",
            "issuer.clients[2].assertion.issuer",
            "issuer.clients[2].assertion.jwks_url",
            "issuer.failure_window",
            "issuer.max_failures_per_client",
            "issuer.max_failures_per_peer",
            "issuer.max_minted_lifetime",
            "issuer.signing_key_files[0]",
            "issuer.signing_key_files[2]",
            "issuer.signing_key_files[3]",
            "issuer.token_lifetime",
            "issuer.url",
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn required_keys_and_bounds() {
    assert_eq!(
        paths(check("", Tenancy::Single)),
        ["issuer.signing_key_files", "issuer.url"]
    );
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let with = |extra: &str| {
        check(
            &format!("url = \"https://s.example\"\nsigning_key_files = [\"{key}\"]\n{extra}"),
            Tenancy::Single,
        )
    };
    assert!(with("").is_ok(), "no clients is allowed (and warned about)");
    assert!(with("token_lifetime = \"6h\"").is_ok());
    assert!(with("token_lifetime = \"5m\"").is_ok());
    assert!(with("token_lifetime = \"4m\"").is_err());
    assert!(with("token_lifetime = \"6h 1s\"").is_err());
    assert!(
        with("token_lifetime = \"2h\"\nmax_minted_lifetime = \"1h\"").is_err(),
        "below token_lifetime"
    );
    assert!(with("max_minted_lifetime = \"400d\"").is_ok());
    assert!(with("max_minted_lifetime = \"1h\"").is_ok());
    assert!(
        with("max_failures_per_peer = 0").is_ok(),
        "0 turns the per-peer limit off"
    );
    for url in [
        "https://s.example/",
        "http://127.0.0.1:8080",
        "https://s.example/gate",
    ] {
        assert!(
            check(
                &format!("url = \"{url}\"\nsigning_key_files = [\"{key}\"]"),
                Tenancy::Single
            )
            .is_ok(),
            "{url}"
        );
    }
    for url in [
        "scimgate.example.com",
        "http://s.example",
        "https://s.example/?a=b",
        "https://s.example/#f",
        "https://user@s.example",
        "https://s.example/gate/",
        "ftp://s.example",
    ] {
        assert_eq!(
            paths(check(
                &format!("url = \"{url}\"\nsigning_key_files = [\"{key}\"]"),
                Tenancy::Single
            )),
            ["issuer.url"],
            "{url}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn warnings_for_short_lifetimes_and_unreadable_keys_when_checking_without_secrets() {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let toml = format!(
        "url = \"https://s.example\"\nsigning_key_files = [\"{key}\", \"/nonexistent.pem\"]\ntoken_lifetime = \"30m\""
    );
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let c = validate(
        &raw(&toml),
        Tenancy::Single,
        Secrets::Optional,
        &mut problems,
        &mut warnings,
    )
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.signing_keys[1].pem.is_none());
    let text = warnings.join("\n");
    assert!(text.contains("signing_key_files[1]"), "{text}");
    assert!(text.contains("1 to 6 hours"), "{text}");
    assert!(text.contains("no [[issuer.clients]]"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The attacker's config-level ways in: a client whose assertions are scimgate's own tokens
/// (each token buying the next), two clients matched by the same assertion issuer and subject.
#[test]
fn assertions_must_name_another_issuer_and_a_distinct_subject() {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let base = format!("url = \"https://s.example\"\nsigning_key_files = [\"{key}\"]\n");
    let client = |id: &str, iss: &str, sub: &str| {
        format!(
            "[[clients]]\nclient_id = \"{id}\"\nscope = [\"scim\"]\nassertion = {{ issuer = \"{iss}\", jwks_url = \"https://idp/keys\", subject = \"{sub}\", audience = \"a\" }}\n"
        )
    };
    for own in ["https://s.example", "https://s.example/"] {
        assert_eq!(
            paths(check(
                &format!("{base}{}", client("c", own, "s")),
                Tenancy::Single
            )),
            ["issuer.clients[0].assertion.issuer"]
        );
    }
    let two = format!(
        "{base}{}{}",
        client("a", "https://idp", "s"),
        client("b", "https://idp", "s")
    );
    assert_eq!(
        paths(check(&two, Tenancy::Single)),
        ["issuer.clients[1].assertion"]
    );
    let distinct = format!(
        "{base}{}{}",
        client("a", "https://idp", "s"),
        client("b", "https://idp", "t")
    );
    assert!(check(&distinct, Tenancy::Single).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn with_tenants_every_client_names_one_and_its_audience_names_it() {
    let dir = temp_dir();
    let key = key_file(&dir, "k.pem");
    let names = ["acme".to_owned(), "globex".to_owned()];
    let toml = |tenant: &str| {
        format!(
            "url = \"https://s.example\"\nsigning_key_files = [\"{key}\"]\n[[clients]]\nclient_id = \"c\"\nscope = [\"scim\"]\n{tenant}"
        )
    };
    assert_eq!(
        paths(check(&toml(""), Tenancy::Named(&names))),
        ["issuer.clients[0].tenant"]
    );
    assert_eq!(
        paths(check(&toml("tenant = \"initech\""), Tenancy::Named(&names))),
        ["issuer.clients[0].tenant"]
    );
    let c = check(&toml("tenant = \"globex\""), Tenancy::Named(&names)).unwrap();
    assert_eq!(c.clients[0].tenant.as_deref(), Some("globex"));
    assert_eq!(
        c.audience(Some("globex")),
        "https://s.example/tenants/globex"
    );
    assert_ne!(c.audience(Some("acme")), c.audience(Some("globex")));
    assert_eq!(
        c.local_jwt(Some("acme")).audience,
        ["https://s.example/tenants/acme"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Unknown keys are found the way `config::load` finds them: `serde_ignored` over the raw
/// types, each with its path (a typo in a client's key would otherwise silently drop it).
/// serde_ignored writes an `Option`'s `Some` as a `?` segment; `config::load` should drop it
/// (see the report's diff), as this test does.
#[test]
fn unknown_keys_are_reported_by_serde_ignored_with_their_paths() {
    #[derive(Deserialize)]
    struct Wrapper {
        #[allow(dead_code, reason = "only deserialized")]
        issuer: Option<RawIssuer>,
    }
    let text = r#"
[issuer]
url = "https://s.example"
token_lifetme = "1h"
[[issuer.clients]]
client_id = "c"
secret_sha265 = "x"
claims = { anything = { nested = 1 } }
assertion = { issuer = "i", subjet = "s" }
"#;
    let value: figment::value::Value =
        figment::Figment::from(figment::providers::Toml::string(text))
            .extract::<figment::value::Dict>()
            .map(figment::value::Value::from)
            .unwrap();
    let mut unknown = Vec::new();
    let _: Wrapper =
        serde_ignored::deserialize(&value, |p| unknown.push(p.to_string().replace(".?", "")))
            .unwrap();
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "issuer.clients.0.assertion.subjet",
            "issuer.clients.0.secret_sha265",
            "issuer.token_lifetme"
        ]
    );
}

#[test]
fn a_secret_hash_matches_only_its_secret() {
    // SHA-256("test").
    let hash = SecretHash::from_hex(SECRET_HASH).unwrap();
    assert!(hash.matches(b"test"));
    assert_eq!(
        SecretHash::from_hex(&SECRET_HASH.to_uppercase()),
        Some(hash.clone())
    );
    for wrong in [&b"tesu"[..], b"Test", b"test ", b"tes", b"", b"test\0"] {
        assert!(!hash.matches(wrong), "{wrong:?}");
    }
    for bad in [
        "",
        "abc",
        &SECRET_HASH[1..],
        &format!("{SECRET_HASH}0"),
        &SECRET_HASH.replace('9', "g"),
        &format!("+{}", &SECRET_HASH[1..]),
    ] {
        assert!(SecretHash::from_hex(bad).is_none(), "{bad}");
    }
    assert_eq!(format!("{hash:?}"), "SecretHash(<redacted>)");
}

/// A comparison that stops early, or looks at a prefix, would accept a secret whose hash
/// shares the first bytes; one such secret is cheap to find, and must fail.
#[test]
fn a_secret_whose_hash_shares_a_prefix_fails() {
    let hash = SecretHash::from_hex(SECRET_HASH).unwrap();
    let target = &SECRET_HASH[..4];
    let near = (0u32..)
        .map(|i| format!("guess-{i}"))
        .find(|g| {
            crate::text::hex(
                &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, g.as_bytes()).as_ref()[..2],
            ) == target
        })
        .unwrap();
    assert!(!hash.matches(near.as_bytes()), "{near}");
}
