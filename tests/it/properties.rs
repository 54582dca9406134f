//! Property tests for the pure parsers (threats.md §9, targets 1, 2, 5 and 6), on the public
//! library API: the bearer extractor, the JOSE header policy, request header hygiene with
//! credential injection, and config validation. Case counts stay modest so CI stays fast.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use scimgate::auth::bearer::{MAX_TOKEN_BYTES, bearer_token};
use scimgate::auth::verify::inspect_header;
use scimgate::auth::{AuthError, TokenRejection};
use scimgate::config::{Config, SecretSource, ServiceAccount};
use scimgate::headers::{Forwarding, HeaderPolicy, set_upstream_headers};
use serde_json::{Value, json};

const CASES: u32 = 256;

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn one_auth(value: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.append(AUTHORIZATION, value.clone());
    h
}

/// "bearer" in a random mix of cases.
fn scheme() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), 6).prop_map(|upper| {
        "bearer"
            .chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Target 1: any header value; a token comes out only for `Bearer 1*SP b64token`, is a
    /// suffix of the input, and respects the length cap.
    #[test]
    fn bearer_token_is_total_and_strict(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()); };
        let headers = one_auth(&value);
        if let Ok(token) = bearer_token(&headers) {
            prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            prop_assert!(token.bytes().all(is_b64token_char));
            prop_assert!(bytes.ends_with(token.as_bytes()));
            let prefix = &bytes[..bytes.len() - token.len()];
            prop_assert!(prefix.len() > 6 && prefix[..6].eq_ignore_ascii_case(b"bearer"));
            prop_assert!(prefix[6..].iter().all(|&b| b == b' '));
        }
    }

    /// Well-formed credentials round-trip whatever the scheme's case and the number of spaces.
    #[test]
    fn bearer_token_accepts_rfc6750_forms(
        scheme in scheme(),
        spaces in 1usize..4,
        token in "[A-Za-z0-9._~+/-]{1,200}={0,2}",
    ) {
        let value = HeaderValue::from_str(&format!("{scheme}{}{token}", " ".repeat(spaces)))
            .expect("visible ASCII");
        let headers = one_auth(&value);
        prop_assert_eq!(bearer_token(&headers), Ok(token.as_str()));
    }

    /// Two Authorization fields are always refused as such, whatever they hold.
    #[test]
    fn bearer_token_refuses_duplicates(a in "[ -~]{0,60}", b in "[ -~]{0,60}") {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_str(&a).expect("printable"));
        headers.append(AUTHORIZATION, HeaderValue::from_str(&b).expect("printable"));
        prop_assert_eq!(bearer_token(&headers), Err(AuthError::DuplicateAuthorization));
    }

    /// Over-long tokens are refused before any decoding.
    #[test]
    fn bearer_token_caps_length(extra in 1usize..2000) {
        let value = HeaderValue::from_str(&format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + extra)))
            .expect("ASCII");
        let headers = one_auth(&value);
        prop_assert_eq!(
            bearer_token(&headers),
            Err(AuthError::InvalidToken(TokenRejection::TooLarge))
        );
    }
}

// === inspect_header ===

const ALLOWED: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

fn header_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("RS256")),
        Just(json!("ES256")),
        Just(json!("PS256")),
        Just(json!("HS256")),
        Just(json!("none")),
        Just(json!("JWT")),
        Just(json!("jwt")),
        Just(json!("at+jwt")),
        Just(json!("application/at+jwt")),
        Just(json!("secevent+jwt")),
        Just(json!("rsa-1")),
        Just(json!(1)),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(["b64"])),
        Just(json!({"kty": "EC"})),
        "[ -~]{0,12}".prop_map(Value::String),
    ]
}

fn header_fields() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let names = prop_oneof![
        Just("alg"),
        Just("alg"),
        Just("kid"),
        Just("typ"),
        Just("crit"),
        Just("cty"),
        Just("enc"),
        Just("zip"),
        Just("b64"),
        Just("jku"),
        Just("x5u"),
        Just("jwk"),
        Just("x5c"),
        Just("x-custom"),
    ];
    proptest::collection::btree_map(names.prop_map(str::to_owned), header_value(), 0..7)
}

/// The header policy written out independently: what `inspect_header` must decide.
fn model(fields: &BTreeMap<String, Value>) -> Option<(Algorithm, Option<String>)> {
    let alg: Algorithm = fields.get("alg")?.as_str()?.parse().ok()?;
    if !ALLOWED.contains(&alg) {
        return None;
    }
    if ["crit", "cty", "enc", "zip", "b64"]
        .iter()
        .any(|p| fields.contains_key(*p))
    {
        return None;
    }
    if let Some(typ) = fields.get("typ") {
        let typ = typ.as_str()?.to_ascii_lowercase();
        if !["jwt", "at+jwt", "application/at+jwt"].contains(&typ.as_str()) {
            return None;
        }
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return None,
    };
    Some((alg, kid))
}

fn compact(header_json: &str) -> String {
    format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header_json))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Target 2: any string; never a panic, and `Ok` only with an allowed algorithm.
    #[test]
    fn inspect_header_is_total(token in "[ -~]{0,200}") {
        if let Ok(h) = inspect_header(&token, ALLOWED) {
            prop_assert!(ALLOWED.contains(&h.alg));
            prop_assert_eq!(token.split('.').count(), 3);
        }
    }

    /// Structured headers: the verdict equals the independent model's.
    #[test]
    fn inspect_header_matches_the_policy_model(fields in header_fields()) {
        let json = serde_json::to_string(&fields).expect("JSON");
        let got = inspect_header(&compact(&json), ALLOWED).ok().map(|h| (h.alg, h.kid));
        prop_assert_eq!(got, model(&fields), "header {}", json);
    }

    /// A repeated member (here `alg` or `kid`) is never accepted (RFC 7515 §4).
    #[test]
    fn inspect_header_refuses_duplicate_members(name in prop_oneof![Just("alg"), Just("kid")], v in header_value()) {
        let json = format!("{{\"alg\":\"RS256\",\"kid\":\"k\",\"{name}\":{v}}}");
        prop_assert!(inspect_header(&compact(&json), ALLOWED).is_err(), "{}", json);
    }

    /// Segment structure: anything but exactly three non-empty parts is malformed.
    #[test]
    fn inspect_header_requires_three_parts(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,8}", 0..6)) {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let mut all = vec![header];
        all.extend(parts.iter().cloned());
        let token = all.join(".");
        let ok = inspect_header(&token, ALLOWED).is_ok();
        prop_assert_eq!(ok, all.len() == 3 && all.iter().all(|p| !p.is_empty()), "{}", token);
    }
}

// === header hygiene ===

fn account(name: &str, header: &'static str, value: &'static str) -> ServiceAccount {
    let key = scimgate::config::Secret::new(value);
    let mut value = HeaderValue::from_static(value);
    value.set_sensitive(true);
    ServiceAccount {
        name: name.to_owned(),
        header: HeaderName::from_static(header),
        value,
        scheme: None,
        source: SecretSource::Env(format!("{name}_KEY")),
        screen: std::sync::Arc::new(scimgate::screen::KeyScreen::new(key.expose().as_bytes())),
        key,
    }
}

fn accounts() -> &'static [ServiceAccount; 3] {
    static ACCOUNTS: OnceLock<[ServiceAccount; 3]> = OnceLock::new();
    ACCOUNTS.get_or_init(|| {
        [
            account("provisioner", "authorization", "Bearer KEY-ONE"),
            account("reader", "x-api-key", "KEY-TWO"),
            account("legacy", "x-secret-token", "KEY-THREE"),
        ]
    })
}

/// Lowercase, `_` read as `-`: how a lenient backend sees a header name.
fn normal(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

const CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-secret-token",
];
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const OURS: &[&str] = &[
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Header names a caller might send: credentials, hop-by-hop, forwarding, ours, random; in any
/// case and with `_` for `-`.
fn caller_name() -> impl Strategy<Value = String> {
    let pool = prop_oneof![
        Just("authorization"),
        Just("proxy-authorization"),
        Just("x-api-key"),
        Just("x-secret-token"),
        Just("connection"),
        Just("keep-alive"),
        Just("te"),
        Just("trailer"),
        Just("upgrade"),
        Just("proxy-connection"),
        Just("forwarded"),
        Just("x-forwarded-for"),
        Just("x-forwarded-host"),
        Just("x-forwarded-proto"),
        Just("x-real-ip"),
        Just("x-request-id"),
        Just("x-http-method-override"),
        Just("content-type"),
        Just("accept"),
        Just("x-custom"),
    ]
    .prop_map(str::to_owned);
    let any_name = "[a-z][a-z0-9-]{0,12}";
    (
        prop_oneof![4 => pool, 1 => any_name],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, upper, underscore)| {
            let name = if upper {
                name.to_ascii_uppercase()
            } else {
                name
            };
            if underscore {
                name.replace('-', "_")
            } else {
                name
            }
        })
}

fn caller_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let plain = (caller_name(), "[ -~]{0,16}");
    let connection = proptest::collection::vec(caller_name(), 1..4)
        .prop_map(|names| ("Connection".to_owned(), names.join(", ")));
    proptest::collection::vec(prop_oneof![4 => plain, 1 => connection], 0..24)
}

fn forwarding() -> Forwarding {
    Forwarding {
        forwarded_for: scimgate::headers::forwarded_for(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        https: false,
        host: Some(HeaderValue::from_static("gw.example")),
        request_id: HeaderValue::from_static("rid-1"),
    }
}

fn rewrite(headers: &mut HeaderMap, policy: &HeaderPolicy, chosen: &ServiceAccount) {
    policy.strip_request(headers, None);
    set_upstream_headers(headers, chosen, &forwarding());
}

fn listing(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Target 6: after strip + set, exactly one credential header (the chosen account's, with
    /// its value), no other credential or hop-by-hop name in any spelling, nothing the caller
    /// nominated in `Connection` except what we set; applying it twice changes nothing.
    #[test]
    fn header_rewrite_leaves_exactly_one_credential(pairs in caller_headers(), pick in 0usize..3) {
        let all = accounts();
        let chosen = &all[pick];
        let policy = HeaderPolicy::new(&[]);
        let mut headers = HeaderMap::new();
        let mut nominated = Vec::new();
        for (name, value) in &pairs {
            let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
                continue;
            };
            if n == http::header::CONNECTION {
                nominated.extend(value.split(',').map(|t| normal(t.trim())));
            }
            headers.append(n, v);
        }
        rewrite(&mut headers, &policy, chosen);

        let credential_entries: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(n, _)| CREDENTIALS.contains(&normal(n.as_str()).as_str()))
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(
            credential_entries,
            vec![(chosen.header.as_str().to_owned(), chosen.value.as_bytes().to_vec())]
        );
        for (name, _) in &headers {
            let n = normal(name.as_str());
            prop_assert!(!HOP_BY_HOP.contains(&n.as_str()), "hop-by-hop {} kept", name);
            if nominated.contains(&n) {
                prop_assert!(
                    OURS.contains(&n.as_str()) || n == chosen.header.as_str(),
                    "nominated {} kept", name
                );
            }
        }
        prop_assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        prop_assert_eq!(headers.get_all("x-request-id").iter().count(), 1);

        let once = listing(&headers);
        rewrite(&mut headers, &policy, chosen);
        prop_assert_eq!(listing(&headers), once);
    }
}

// === config ===

/// A readable key file for configs under test (one per process).
fn key_file() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("scimgate-prop-{}.key", std::process::id()));
        std::fs::write(&path, "PROPERTY-TEST-KEY\n").expect("write key file");
        path.to_string_lossy().into_owned()
    })
}

fn base_config() -> BTreeMap<(String, String), String> {
    let mut m = BTreeMap::new();
    let mut set = |s: &str, k: &str, v: &str| {
        m.insert((s.to_owned(), k.to_owned()), v.to_owned());
    };
    set("upstream", "url", "\"http://127.0.0.1:9/scim/v2\"");
    set("jwt", "jwks_url", "\"http://127.0.0.1:9/keys\"");
    set("jwt", "issuer", "\"https://idp.example\"");
    set("jwt", "audience", "[\"scimgate\"]");
    set(
        "service_accounts.provisioner",
        "api_key_file",
        &format!("{:?}", key_file()),
    );
    m
}

fn render(map: &BTreeMap<(String, String), String>) -> String {
    let mut out = String::new();
    let mut section = String::new();
    for ((s, k), v) in map {
        if *s != section {
            out.push_str(&format!("[{s}]\n"));
            section = s.clone();
        }
        out.push_str(&format!("{k} = {v}\n"));
    }
    out.push_str("[[rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"v\"\nservice_account = \"provisioner\"\n");
    out
}

fn config_key() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just(("server", "listen")),
        Just(("server", "header_read_timeout")),
        Just(("server", "request_timeout")),
        Just(("server", "max_body_bytes")),
        Just(("server", "max_connections")),
        Just(("server", "shutdown_grace")),
        Just(("admin", "listen")),
        Just(("log", "level")),
        Just(("log", "format")),
        Just(("upstream", "url")),
        Just(("upstream", "timeout")),
        Just(("upstream", "connect_timeout")),
        Just(("jwt", "jwks_url")),
        Just(("jwt", "issuer")),
        Just(("jwt", "audience")),
        Just(("jwt", "algorithms")),
        Just(("jwt", "leeway")),
        Just(("jwt", "max_lifetime")),
        Just(("jwt", "refresh_interval")),
        Just(("jwt", "min_refresh_interval")),
        Just(("jwt", "refetch_cooldown")),
        Just(("jwt", "max_stale")),
        Just(("jwt", "token_cache_size")),
        Just(("service_accounts.provisioner", "header")),
        Just(("service_accounts.provisioner", "scheme")),
        Just(("runtime", "worker_threads")),
        Just(("jwt", "bogus")),
    ]
    .prop_map(|(s, k)| (s.to_owned(), k.to_owned()))
}

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"0s\""),
        Just("\"1ns\""),
        Just("\"5m\""),
        Just("\"301s\""),
        Just("\"-1s\""),
        Just("\"18446744073709551615s\""),
        Just("\"99999999999999999999h\""),
        Just("\"\""),
        Just("0"),
        Just("-1"),
        Just("18446744073709551615"),
        Just("1.5e308"),
        Just("nan"),
        Just("inf"),
        Just("true"),
        Just("[]"),
        Just("[\"HS256\"]"),
        Just("[\"none\"]"),
        Just("[\"RS256\", \"EdDSA\"]"),
        Just("{}"),
        Just("\"http://[::1\""),
        Just("\"https://\""),
        Just("\"http://idp.example.com/keys\""),
        Just("\"http://localhost:1/k\""),
        Just("\"https://u:p@h/x\""),
        Just("\"host\""),
        Just("\"x_api_key\""),
        Just("\"Bearer Token\""),
        Just("\"0.0.0.0:0\""),
        Just("\"not an address\""),
    ]
    .prop_map(str::to_owned)
}

/// The mutation base is itself a valid config, so the bounds below are really exercised.
#[test]
fn config_base_is_valid() {
    let config = Config::from_toml(&render(&base_config())).expect("the base config loads");
    assert!(!config.tenants.is_empty());
}

/// The header model accepts the plain case, so the equivalence above is not all rejections.
#[test]
fn inspect_header_accepts_a_plain_header() {
    let fields: BTreeMap<String, Value> = [
        ("alg", json!("ES256")),
        ("kid", json!("k")),
        ("typ", json!("JWT")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(
        model(&fields),
        Some((Algorithm::ES256, Some("k".to_owned())))
    );
    let h = inspect_header(
        &compact(&serde_json::to_string(&fields).expect("JSON")),
        ALLOWED,
    )
    .expect("accepted");
    assert_eq!((h.alg, h.kid.as_deref()), (Algorithm::ES256, Some("k")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Target 5: arbitrary text never panics the loader.
    #[test]
    fn config_from_arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let _ = Config::from_toml(&text);
    }

    /// Hostile values in every key: no panic; a config that loads keeps its security bounds
    /// (leeway <= 5m, asymmetric algorithms only, https or loopback key source) and its Debug
    /// output never shows the key.
    #[test]
    fn config_mutations_never_panic_and_keep_bounds(
        edits in proptest::collection::vec((config_key(), config_value()), 0..5),
    ) {
        let mut map = base_config();
        for (key, value) in edits {
            map.insert(key, value);
        }
        let text = render(&map);
        if let Ok(config) = Config::from_toml(&text) {
            let debug = format!("{config:?}");
            prop_assert!(!debug.contains("PROPERTY-TEST-KEY"));
            for tenant in &config.tenants {
                let jwt = &tenant.jwt;
                prop_assert!(jwt.leeway.as_secs() <= 300, "{}", text);
                prop_assert!(!jwt.algorithms.is_empty());
                prop_assert!(jwt.algorithms.iter().all(|a| !matches!(
                    a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                )));
                if let Some(url) = &jwt.jwks_url {
                    let host = url.host().unwrap_or_default();
                    prop_assert!(
                        url.scheme_str() == Some("https") || scimgate::config::is_loopback(host),
                        "{}", url
                    );
                }
            }
        }
    }
}
