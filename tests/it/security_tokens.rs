//! Security catalogue, sections A and B (threats.md §7, T01–T18): signatures, algorithms, key
//! selection, token encoding and claims — against the real binary.
//!
//! Every deny row asserts its status and exact `WWW-Authenticate`, that the upstream saw nothing,
//! and (through the harness) that no sentinel key appears in any response or log line.

use std::time::{Duration, Instant};

use crate::support::mint::{self, AUDIENCE, ISSUER, PROVISIONER_GROUP, SigningKey};
use crate::support::observe::{metric_or_zero, scrape};
use crate::support::{
    Expect, Gateway, GatewayConfig, JwksServer, Table, Token, Upstream, ec_key, fixture, rsa_key,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// One table row: a name, the token, the expected verdict.
type Row = (String, String, Expect);

fn row(name: impl Into<String>, token: impl Into<String>, expect: Expect) -> Row {
    (name.into(), token.into(), expect)
}

/// Sends every row as `GET /Users` with `Authorization: Bearer <token>`; checks the verdict,
/// that denied rows never reach the upstream, and that each answer is quick.
async fn run_rows(gw: &Gateway, upstream: &Upstream, rows: &[Row]) -> Table {
    let mut table = Table::new();
    for (name, token, expect) in rows {
        let before = upstream.hits();
        let started = Instant::now();
        let r = gw.get("/Users", Some(token)).await;
        let elapsed = started.elapsed();
        table.check(name, &r, *expect, token);
        let forwarded = upstream.hits() - before;
        if forwarded != usize::from(expect.forwards()) {
            table.fail(name, format!("upstream saw {forwarded} request(s)"));
        }
        if elapsed > Duration::from_secs(2) {
            table.fail(name, format!("answer took {elapsed:?}"));
        }
    }
    table
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exact header and payload bytes (which need not be UTF-8 or JSON).
fn sign_bytes(header: &[u8], payload: &[u8], key: &SigningKey) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign_bytes(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn rsa_header() -> String {
    json!({"alg":"RS256","typ":"JWT","kid":rsa_key().kid()}).to_string()
}

// === A. Signature, algorithm and key selection ===

/// T01 ★ `alg: none` (every spelling) and unsigned or stripped signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t01_alg_none_variants() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    let key = rsa_key();
    let good = Token::new();
    let payload = good.payload_json();
    let valid = good.sign(key);
    let (input, sig) = valid.rsplit_once('.').expect("three parts");
    let other_sig = mint::signature_segment(&Token::new().sign(key)).to_owned();

    let mut rows = vec![row(
        "baseline: the unmodified token",
        valid.clone(),
        Expect::Ok,
    )];
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": key.kid()}).to_string();
        let si = mint::signing_input(&header, &payload);
        rows.push(row(
            format!("alg {alg}, empty signature"),
            format!("{si}."),
            Expect::Invalid,
        ));
        rows.push(row(
            format!("alg {alg}, signature segment missing"),
            si.clone(),
            Expect::Invalid,
        ));
        rows.push(row(
            format!("alg {alg} carrying the real RS256 signature"),
            format!("{si}.{sig}"),
            Expect::Invalid,
        ));
        let no_kid = json!({ "alg": alg }).to_string();
        rows.push(row(
            format!("alg {alg} without kid"),
            format!("{}.", mint::signing_input(&no_kid, &payload)),
            Expect::Invalid,
        ));
    }
    rows.extend([
        row(
            "RS256 header, empty signature (jwt_tool -X n)",
            format!("{input}."),
            Expect::Invalid,
        ),
        row(
            "signature segment removed",
            input.to_owned(),
            Expect::Invalid,
        ),
        row(
            "last 4 signature characters cut",
            valid[..valid.len() - 4].to_owned(),
            Expect::Invalid,
        ),
        row(
            "signature of another token",
            format!("{input}.{other_sig}"),
            Expect::Invalid,
        ),
        row(
            "one signature bit flipped",
            mint::corrupt_signature(&valid),
            Expect::Invalid,
        ),
        row(
            "alg missing",
            mint::sign_raw(
                &json!({"typ":"JWT","kid":key.kid()}).to_string(),
                &payload,
                key,
            ),
            Expect::Invalid,
        ),
        row(
            "alg empty",
            mint::sign_raw(
                &json!({"alg":"","kid":key.kid()}).to_string(),
                &payload,
                key,
            ),
            Expect::Invalid,
        ),
        row(
            "alg null",
            mint::sign_raw(
                &json!({"alg":null,"kid":key.kid()}).to_string(),
                &payload,
                key,
            ),
            Expect::Invalid,
        ),
    ]);
    run_rows(&gw, &upstream, &rows).await.finish();
    assert_eq!(jwks.hits(), loaded, "known kids never cause a JWKS fetch");
}

/// Every byte form of a public key an attacker might feed an HMAC verifier.
fn hmac_secrets(key: &SigningKey) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = key
        .public_key_encodings()
        .into_iter()
        .zip(["SPKI DER", "PEM", "raw public key", "JWK JSON"])
        .map(|(bytes, name)| (name.to_owned(), bytes))
        .collect();
    let pem = out[1].1.clone();
    out.push((
        "PEM without trailing newline".into(),
        pem[..pem.len() - 1].to_vec(),
    ));
    out.push((
        "PEM with CRLF".into(),
        String::from_utf8_lossy(&pem)
            .replace('\n', "\r\n")
            .into_bytes(),
    ));
    out.push((
        "JWK JSON, pretty".into(),
        serde_json::to_vec_pretty(&key.jwk()).expect("JWK JSON"),
    ));
    if let Some((n, _)) = key.rsa_components() {
        out.push(("RSA modulus bytes".into(), n.clone()));
        out.push(("RSA modulus base64url".into(), b64(&n).into_bytes()));
    }
    out.push(("empty secret".into(), Vec::new()));
    out
}

/// T02 ★ Algorithm confusion: HS256/384/512 keyed with every encoding of the public keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_hmac_keyed_with_public_key() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let payload = Token::new().payload_json();
    let mut rows = Vec::new();
    for key in [rsa_key(), ec_key()] {
        for alg in ["HS256", "HS384", "HS512"] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": key.kid()}).to_string();
            for (name, secret) in hmac_secrets(key) {
                rows.push(row(
                    format!("{alg} keyed with the {} key's {name}", key.alg()),
                    mint::hmac_raw(alg, &header, &payload, &secret),
                    Expect::Invalid,
                ));
            }
        }
    }
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T02 ★ Key material in the remote JWKS that must never verify: a `kty: oct` key (its secret
/// is public), `use: enc` and `key_ops` without `verify`; and header `alg` that differs from the
/// selected JWK's `alg` (PS256 on an RS256 key, ES384 on an ES256 key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_jwks_key_type_and_alg_binding() {
    let secret = b"this-oct-key-is-published-in-the-jwks!";
    let enc_key = SigningKey::rsa("enc-1");
    let ops_key = SigningKey::rsa("ops-1");
    let noalg_key = SigningKey::rsa("rsa-noalg");
    let p384 = SigningKey::ec384("p384-1");
    let mut enc_jwk = enc_key.jwk();
    enc_jwk["use"] = json!("enc");
    let mut ops_jwk = ops_key.jwk();
    ops_jwk.as_object_mut().expect("JWK object").remove("use");
    ops_jwk["key_ops"] = json!(["encrypt", "wrapKey"]);
    let mut noalg_jwk = noalg_key.jwk();
    noalg_jwk.as_object_mut().expect("JWK object").remove("alg");
    let doc = json!({"keys": [
        rsa_key().jwk(), ec_key().jwk(), p384.jwk(),
        {"kty": "oct", "kid": "hmac-1", "alg": "HS256", "use": "sig", "k": b64(secret)},
        enc_jwk, ops_jwk, noalg_jwk,
    ]});
    let jwks = JwksServer::start(doc.to_string()).await;
    let upstream = Upstream::start().await;
    let cfg = GatewayConfig::new(&upstream.url(), &jwks.url()).set(
        "jwt",
        "algorithms",
        r#"["RS256", "PS256", "ES256", "ES384"]"#,
    );
    let gw = Gateway::start(cfg).await;
    let payload = Token::new().payload_json();
    let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
    let rows = vec![
        row(
            "control: PS256 on an RSA key that publishes no alg",
            mint::sign_raw_as(&header("PS256", "rsa-noalg"), &payload, &noalg_key, "PS256"),
            Expect::Ok,
        ),
        row(
            "control: ES384 on the P-384 key",
            Token::new().sign(&p384),
            Expect::Ok,
        ),
        row(
            "HS256 keyed with the published oct key",
            mint::hmac_raw("HS256", &header("HS256", "hmac-1"), &payload, secret),
            Expect::Invalid,
        ),
        row(
            "RS256 naming the oct key's kid",
            mint::sign_raw(&header("RS256", "hmac-1"), &payload, rsa_key()),
            Expect::Invalid,
        ),
        row(
            "PS256 on the RS256-only JWK",
            mint::sign_raw_as(&header("PS256", "rsa-1"), &payload, rsa_key(), "PS256"),
            Expect::Invalid,
        ),
        row(
            "RS384 on the RS256-only JWK",
            mint::sign_raw_as(&header("RS384", "rsa-1"), &payload, rsa_key(), "RS384"),
            Expect::Invalid,
        ),
        row(
            "ES384 naming the ES256 key's kid",
            mint::sign_raw(&header("ES384", "ec-1"), &payload, &p384),
            Expect::Invalid,
        ),
        row(
            "ES256 naming the P-384 key's kid",
            mint::sign_raw(&header("ES256", "p384-1"), &payload, ec_key()),
            Expect::Invalid,
        ),
        row(
            "key published with use: enc",
            Token::new().sign(&enc_key),
            Expect::Invalid,
        ),
        row(
            "key published with key_ops without verify",
            Token::new().sign(&ops_key),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    // Dropped keys are named (by kid, never by key material) in a warning at load time.
    let logs = gw.logs().join("\n");
    for kid in ["hmac-1", "enc-1", "ops-1"] {
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("WARN") && l.contains(kid)),
            "no warning naming dropped key {kid}"
        );
    }
    assert!(
        !logs.contains(&b64(secret)),
        "the oct key's k value was logged"
    );
}

/// T03 `kid` is only a map key: traversal, injection, huge, wrongly typed or look-alike kids
/// are unknown keys, answered fast, with at most one rate-limited JWKS fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_kid_injection_variants() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    let payload = Token::new().payload_json();
    let with_kid = |kid: Value| {
        mint::sign_raw(
            &json!({"alg":"RS256","typ":"JWT","kid":kid}).to_string(),
            &payload,
            rsa_key(),
        )
    };
    let kids: Vec<(&str, Value)> = vec![
        ("path traversal", json!("../../../../dev/null")),
        (
            "absolute path",
            json!("/proc/sys/kernel/randomize_va_space"),
        ),
        ("SQL injection", json!("' UNION SELECT 'key' --")),
        ("shell injection", json!("|sleep 10")),
        ("command substitution", json!("$(sleep 10)")),
        ("URL", json!("http://127.0.0.1:1/jwks")),
        ("4 KiB string", json!("k".repeat(4096))),
        ("Cyrillic look-alike of rsa-1", json!("rs\u{0430}-1")),
        ("trailing space", json!("rsa-1 ")),
        ("upper case", json!("RSA-1")),
        ("NUL suffix", json!("rsa-1\u{0000}")),
        ("empty string", json!("")),
        ("number", json!(1)),
        ("object", json!({"kid": "rsa-1"})),
        ("array", json!(["rsa-1"])),
        ("null", json!(null)),
        ("true", json!(true)),
    ];
    let mut rows: Vec<Row> = kids
        .into_iter()
        .map(|(name, kid)| row(format!("kid {name}"), with_kid(kid), Expect::Invalid))
        .collect();
    rows.push(row(
        "10 KiB kid (token over the 8 KiB cap)",
        with_kid(json!("k".repeat(10 * 1024))),
        Expect::Invalid,
    ));
    let started = Instant::now();
    run_rows(&gw, &upstream, &rows).await.finish();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{} kid rows took {:?} (a sleep ran?)",
        rows.len(),
        started.elapsed()
    );
    assert!(
        jwks.hits() <= loaded + 1,
        "{} JWKS fetches for unknown kids within one refetch_cooldown",
        jwks.hits() - loaded
    );
}

/// T03 Decision: a token without `kid` is accepted only when exactly one published key supports
/// its algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_missing_kid_only_with_one_candidate_key() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let payload = Token::new().payload_json();
    let rows = vec![
        row(
            "no kid, RS256, one RSA key published",
            mint::sign_raw(&json!({"alg":"RS256"}).to_string(), &payload, rsa_key()),
            Expect::Ok,
        ),
        row(
            "no kid, ES256, one EC key published",
            mint::sign_raw(&json!({"alg":"ES256"}).to_string(), &payload, ec_key()),
            Expect::Ok,
        ),
        row(
            "no kid, signed by an unpublished key",
            mint::sign_raw(
                &json!({"alg":"RS256"}).to_string(),
                &payload,
                &SigningKey::rsa("x"),
            ),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    drop(gw);

    let second = SigningKey::rsa("rsa-2");
    let jwks = JwksServer::start(mint::jwks(&[rsa_key(), &second])).await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(GatewayConfig::new(&upstream.url(), &jwks.url())).await;
    let rows = vec![
        row(
            "no kid, RS256, two RSA keys published (ambiguous)",
            mint::sign_raw(&json!({"alg":"RS256"}).to_string(), &payload, rsa_key()),
            Expect::Invalid,
        ),
        row(
            "no kid, signed by the second key (ambiguous)",
            mint::sign_raw(&json!({"alg":"RS256"}).to_string(), &payload, &second),
            Expect::Invalid,
        ),
        row("kid given", Token::new().sign(&second), Expect::Ok),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T04 ★ Header-supplied key material (`jwk`, `jku`, `x5u`, `x5c`) is never used or fetched.
/// Decision: on a token the real key signed, these headers are accepted and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_header_supplied_keys_are_never_fetched() {
    let (jwks, upstream, cfg) = fixture().await;
    let attacker = crate::support::Attacker::start().await;
    let evil = SigningKey::ec("attacker-1");
    // If anything ever fetched from the listener, it would find the attacker's key there.
    attacker.set_body(mint::jwks(&[&evil]));
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    let jku = attacker.url("/jwks.json");
    let x5u = attacker.url("/cert.pem");
    let fake_x5c = json!([base64::engine::general_purpose::STANDARD.encode([0x30u8; 64])]);
    let evil_token = |name: &str, value: Value| Token::new().header(name, value).sign(&evil);
    let mut rows = vec![
        row(
            "attacker key embedded as jwk",
            evil_token("jwk", evil.jwk()),
            Expect::Invalid,
        ),
        row(
            "attacker key embedded as jwk, naming the real kid",
            Token::new()
                .header("jwk", evil.jwk())
                .header("kid", json!(rsa_key().kid()))
                .header("alg", json!("ES256"))
                .sign(&evil),
            Expect::Invalid,
        ),
        row(
            "jku to the attacker's JWKS",
            evil_token("jku", json!(jku)),
            Expect::Invalid,
        ),
        row(
            "x5u to the attacker",
            evil_token("x5u", json!(x5u)),
            Expect::Invalid,
        ),
        row(
            "self-made x5c chain",
            evil_token("x5c", fake_x5c.clone()),
            Expect::Invalid,
        ),
        row(
            "jku to the gateway's own admin port",
            evil_token("jku", json!(format!("http://{}/metrics", gw.admin_addr))),
            Expect::Invalid,
        ),
    ];
    for (name, value) in [
        ("jku", json!(jku)),
        ("x5u", json!(x5u)),
        ("jwk", evil.jwk()),
        ("x5c", fake_x5c),
    ] {
        rows.push(row(
            format!("real key's token carrying {name} (accepted, ignored)"),
            Token::new().header(name, value).sign(rsa_key()),
            Expect::Ok,
        ));
    }
    run_rows(&gw, &upstream, &rows).await.finish();
    assert!(jwks.hits() <= loaded + 1);
    attacker.assert_untouched();
}

/// T05 `crit` (any value) and RFC 7797 unencoded payloads are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_crit_and_unsupported_extensions() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let t = |pairs: &[(&str, Value)]| {
        pairs
            .iter()
            .fold(Token::new(), |t, (k, v)| t.header(k, v.clone()))
            .sign(rsa_key())
    };
    let rows = vec![
        row(
            "crit naming a present extension",
            t(&[("crit", json!(["exp-ext"])), ("exp-ext", json!(1))]),
            Expect::Invalid,
        ),
        row(
            "crit naming an absent extension",
            t(&[("crit", json!(["urn:x:must"]))]),
            Expect::Invalid,
        ),
        row(
            "b64 false with crit b64 (RFC 7797)",
            t(&[("b64", json!(false)), ("crit", json!(["b64"]))]),
            Expect::Invalid,
        ),
        row(
            "b64 false without crit",
            t(&[("b64", json!(false))]),
            Expect::Invalid,
        ),
        row("crit empty", t(&[("crit", json!([]))]), Expect::Invalid),
        row(
            "crit naming a registered header",
            t(&[("crit", json!(["alg"]))]),
            Expect::Invalid,
        ),
        row(
            "crit not an array",
            t(&[("crit", json!("exp"))]),
            Expect::Invalid,
        ),
        row("crit null", t(&[("crit", json!(null))]), Expect::Invalid),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T06 Cross-JWT confusion: `typ` allow-list {absent, JWT, at+jwt, application/at+jwt}
/// (case-insensitive), `cty` refused, and tokens for another audience refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t06_typ_cty_and_token_kind_confusion() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let typ = |v: Value| Token::new().header("typ", v).sign(ec_key());
    let rows = vec![
        row("typ JWT", typ(json!("JWT")), Expect::Ok),
        row("typ jwt", typ(json!("jwt")), Expect::Ok),
        row("typ at+jwt (RFC 9068)", typ(json!("at+jwt")), Expect::Ok),
        row("typ AT+JWT", typ(json!("AT+JWT")), Expect::Ok),
        row(
            "typ application/at+jwt",
            typ(json!("application/at+jwt")),
            Expect::Ok,
        ),
        row(
            "typ secevent+jwt (RFC 8417)",
            typ(json!("secevent+jwt")),
            Expect::Invalid,
        ),
        row("typ logout+jwt", typ(json!("logout+jwt")), Expect::Invalid),
        row("typ dpop+jwt", typ(json!("dpop+jwt")), Expect::Invalid),
        row("typ JOSE", typ(json!("JOSE")), Expect::Invalid),
        row("typ JOSE+JSON", typ(json!("JOSE+JSON")), Expect::Invalid),
        row(
            "typ application/jwt (not on the list)",
            typ(json!("application/jwt")),
            Expect::Invalid,
        ),
        row("typ JWT with a space", typ(json!("JWT ")), Expect::Invalid),
        row("typ empty", typ(json!("")), Expect::Invalid),
        row("typ number", typ(json!(1)), Expect::Invalid),
        row("typ null", typ(json!(null)), Expect::Invalid),
        row(
            "cty JWT (nested token)",
            Token::new().header("cty", json!("JWT")).sign(ec_key()),
            Expect::Invalid,
        ),
        row(
            "cty json",
            Token::new().header("cty", json!("json")).sign(ec_key()),
            Expect::Invalid,
        ),
        row(
            "ID token of the same IdP (aud = a client id)",
            Token::new()
                .claim("aud", json!("some-client-id"))
                .claim("nonce", json!("n"))
                .sign(ec_key()),
            Expect::Invalid,
        ),
        row(
            "access token for another API of the same IdP",
            Token::new()
                .claim("aud", json!("https://billing.internal"))
                .header("typ", json!("at+jwt"))
                .sign(ec_key()),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T07 JWE, nested JWTs and JSON serialization are refused fast (no decryption, no
/// decompression, no PBES2 iterations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_jwe_nested_and_json_serialization() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let valid = Token::new().sign(rsa_key());
    let h = |v: Value| b64(v.to_string().as_bytes());
    let jwe_header = h(json!({"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"rsa-1"}));
    let pbes2 = h(
        json!({"alg":"PBES2-HS512+A256KW","enc":"A256GCM","p2c":2_000_000_000u64,
        "p2s":"c2FsdHNhbHQ"}),
    );
    let unsigned_inner = format!(
        "{}.",
        mint::signing_input(
            &json!({"alg":"none"}).to_string(),
            &Token::new().payload_json()
        )
    );
    let dir_header = h(json!({"alg":"dir","enc":"A128CBC-HS256","cty":"JWT"}));
    let json_serialization = json!({
        "payload": valid.split('.').nth(1),
        "signatures": [{"protected": valid.split('.').next(), "signature": mint::signature_segment(&valid)}],
    })
    .to_string();
    let t = |pairs: &[(&str, Value)]| {
        pairs
            .iter()
            .fold(Token::new(), |t, (k, v)| t.header(k, v.clone()))
            .sign(rsa_key())
    };
    let nested = mint::sign_raw(
        &json!({"alg":"RS256","kid":"rsa-1","cty":"JWT"}).to_string(),
        &json!(valid).to_string(),
        rsa_key(),
    );
    let nested_no_cty = mint::sign_raw(
        &json!({"alg":"RS256","kid":"rsa-1"}).to_string(),
        &json!(valid).to_string(),
        rsa_key(),
    );
    let rows = vec![
        row(
            "5-part JWE",
            format!("{jwe_header}.ZW5jcnlwdGVka2V5.aXY.Y2lwaGVydGV4dA.dGFn"),
            Expect::Invalid,
        ),
        row(
            "5-part PBES2 JWE with p2c = 2e9",
            format!("{pbes2}.ZW5jcnlwdGVka2V5.aXY.Y2lwaGVydGV4dA.dGFn"),
            Expect::Invalid,
        ),
        row(
            "JWE (dir) wrapping an unsigned JWT (pac4j GHSA-pm7g-w2cf-q238)",
            format!("{dir_header}..aXY.{}.dGFn", b64(unsigned_inner.as_bytes())),
            Expect::Invalid,
        ),
        row(
            "3-part token with enc",
            t(&[("enc", json!("A256GCM"))]),
            Expect::Invalid,
        ),
        row(
            "3-part token with zip",
            t(&[("zip", json!("DEF"))]),
            Expect::Invalid,
        ),
        row(
            "3-part token with enc and p2c",
            t(&[("enc", json!("A256GCM")), ("p2c", json!(2_000_000_000u64))]),
            Expect::Invalid,
        ),
        row(
            "nested JWT as payload with cty JWT",
            nested,
            Expect::Invalid,
        ),
        row(
            "nested JWT as payload without cty (payload not an object)",
            nested_no_cty,
            Expect::Invalid,
        ),
        row(
            "JWS JSON serialization in the header",
            json_serialization,
            Expect::Invalid,
        ),
        row(
            "JWS JSON serialization, base64url-wrapped",
            b64(valid.as_bytes()),
            Expect::Invalid,
        ),
    ];
    let started = Instant::now();
    run_rows(&gw, &upstream, &rows).await.finish();
    let per_row = started.elapsed() / rows.len() as u32;
    assert!(
        per_row < Duration::from_millis(500),
        "JWE/nested rows took {per_row:?} each on average"
    );
}

/// T07 Decision: `epk`/`p2c`/`p2s` without `enc` on a validly signed JWS are unregistered JWS
/// header parameters; they are ignored (nothing decrypts or derives keys), so the token passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_jwe_only_parameters_on_a_jws_are_inert() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let t = |name: &str, v: Value| Token::new().header(name, v).sign(rsa_key());
    let rows = vec![
        row(
            "p2c on a signed JWS",
            t("p2c", json!(2_000_000_000u64)),
            Expect::Ok,
        ),
        row(
            "epk on a signed JWS",
            t("epk", json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"})),
            Expect::Ok,
        ),
    ];
    let started = Instant::now();
    run_rows(&gw, &upstream, &rows).await.finish();
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// T08 ECDSA edge cases: psychic signatures, out-of-range scalars, DER and wrong lengths are
/// refused. Decision: the malleated high-S twin of a valid signature verifies (aws-lc accepts
/// it); harmless because the token cache keys on the full token string and nothing else keys on
/// the token string (no replay store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t08_ecdsa_signature_edge_cases() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let valid = Token::new().sign(ec_key());
    let sig = mint::signature_bytes(&valid);
    assert_eq!(sig.len(), 64);
    let n = mint::P256_ORDER.to_vec();
    let with = |bytes: Vec<u8>| mint::with_signature(&valid, &bytes);
    let concat = |r: &[u8], s: &[u8]| [r, s].concat();
    let mut zero_r = sig.clone();
    zero_r[..32].fill(0);
    let mut long = sig.clone();
    long.push(0);
    let mut padded_der = vec![0u8];
    padded_der.extend(mint::ecdsa_der(&sig));
    let high_s = with(mint::ecdsa_high_s(&sig));
    let rows = vec![
        row("the valid signature", valid.clone(), Expect::Ok),
        row(
            "r = s = 0 (CVE-2022-21449)",
            with(vec![0; 64]),
            Expect::Invalid,
        ),
        row("r = 0, real s", with(zero_r), Expect::Invalid),
        row("r = s = n", with(concat(&n, &n)), Expect::Invalid),
        row(
            "r = n, real s",
            with(concat(&n, &sig[32..])),
            Expect::Invalid,
        ),
        row(
            "real r, s = n",
            with(concat(&sig[..32], &n)),
            Expect::Invalid,
        ),
        row("r = s = 0xff..ff", with(vec![0xff; 64]), Expect::Invalid),
        row(
            "DER-encoded signature",
            with(mint::ecdsa_der(&sig)),
            Expect::Invalid,
        ),
        row("DER with a leading zero", with(padded_der), Expect::Invalid),
        row(
            "63-byte signature",
            with(sig[..63].to_vec()),
            Expect::Invalid,
        ),
        row("65-byte signature", with(long), Expect::Invalid),
        row(
            "32-byte signature (r only)",
            with(sig[..32].to_vec()),
            Expect::Invalid,
        ),
        row("one-byte signature", with(vec![1]), Expect::Invalid),
        row(
            "ES256 signature under an RS256 header",
            mint::with_signature(&Token::new().sign(rsa_key()), &sig),
            Expect::Invalid,
        ),
        row(
            "high-S twin of the valid signature",
            high_s.clone(),
            Expect::Ok,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    assert_ne!(high_s, valid, "the twin is a different token string");
}

/// An RSA JWK with the real modulus (or a shorter one) and a chosen exponent.
fn rsa_jwk(kid: &str, n: &[u8], e: &[u8]) -> Value {
    json!({"kty":"RSA","kid":kid,"use":"sig","alg":"RS256","n":b64(n),"e":b64(e)})
}

/// An RS256 token whose "signature" is the bare PKCS#1 v1.5 encoding: valid under `e = 1` for
/// any modulus of `k` bytes, i.e. forgeable by anyone if such a key were accepted.
fn e1_forgery(kid: &str, k: usize) -> String {
    let header = json!({"alg":"RS256","typ":"JWT","kid":kid}).to_string();
    let input = mint::signing_input(&header, &Token::new().payload_json());
    let sig = mint::pkcs1_sha256_encoding(input.as_bytes(), k);
    format!("{input}.{}", b64(&sig))
}

/// T09 Weak or unusual keys in the JWKS are dropped at load time with a warning naming the kid
/// (never the key); tokens naming them fail, including forgeries that would verify under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t09_weak_and_unusual_jwks_keys() {
    let (n, _) = rsa_key().rsa_components().expect("RSA key");
    let n1024 = n[..128].to_vec();
    let ec = ec_key().jwk();
    let mut off_curve = ec.clone();
    off_curve["kid"] = json!("ec-offcurve");
    off_curve["x"] = json!(b64(&[0x11; 32]));
    off_curve["y"] = json!(b64(&[0x22; 32]));
    let mut short = ec.clone();
    short["kid"] = json!("ec-short");
    short["x"] = json!(b64(&[0x11; 31]));
    let mut p384_as_es256 = SigningKey::ec384("p384-as-es256").jwk();
    p384_as_es256["alg"] = json!("ES256");
    let doc = json!({"keys": [
        rsa_key().jwk(), ec.clone(),
        rsa_jwk("rsa-e1", &n, &[1]),
        rsa_jwk("rsa-e1-padded", &n, &[0, 1]),
        rsa_jwk("rsa-e1-long", &n, &[0, 0, 0, 1]),
        rsa_jwk("rsa-e-even", &n, &[1, 0, 0]),
        rsa_jwk("rsa-e-empty", &n, &[]),
        rsa_jwk("rsa-1024", &n1024, &[1, 0, 1]),
        rsa_jwk("rsa-1024-e1", &n1024, &[1]),
        off_curve, short, p384_as_es256,
        {"kty":"OKP","crv":"Ed448","kid":"ed448","x":b64(&[7; 57])},
        {"kty":"EC","crv":"P-521","kid":"p521","x":b64(&[7; 66]),"y":b64(&[7; 66])},
        {"kty":"EC","crv":"secp256k1","kid":"k256","x":b64(&[7; 32]),"y":b64(&[7; 32])},
    ]});
    let jwks = JwksServer::start(doc.to_string()).await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(GatewayConfig::new(&upstream.url(), &jwks.url())).await;
    let signed_as = |kid: &str, key: &SigningKey| {
        Token::new()
            .header("kid", json!(kid))
            .header("alg", json!(key.alg()))
            .sign(key)
    };
    let rows = vec![
        row(
            "control: the real RSA key",
            Token::new().sign(rsa_key()),
            Expect::Ok,
        ),
        row(
            "e = 1 forgery",
            e1_forgery("rsa-e1", n.len()),
            Expect::Invalid,
        ),
        row(
            "e = 1 (written 0x0001) forgery",
            e1_forgery("rsa-e1-padded", n.len()),
            Expect::Invalid,
        ),
        row(
            "e = 1 (written 0x00000001) forgery",
            e1_forgery("rsa-e1-long", n.len()),
            Expect::Invalid,
        ),
        row(
            "1024-bit modulus, e = 1 forgery",
            e1_forgery("rsa-1024-e1", n1024.len()),
            Expect::Invalid,
        ),
        row(
            "even exponent",
            signed_as("rsa-e-even", rsa_key()),
            Expect::Invalid,
        ),
        row(
            "empty exponent",
            signed_as("rsa-e-empty", rsa_key()),
            Expect::Invalid,
        ),
        row(
            "1024-bit key",
            signed_as("rsa-1024", rsa_key()),
            Expect::Invalid,
        ),
        row(
            "EC point not on the curve",
            signed_as("ec-offcurve", ec_key()),
            Expect::Invalid,
        ),
        row(
            "EC coordinate of the wrong length",
            signed_as("ec-short", ec_key()),
            Expect::Invalid,
        ),
        row(
            "P-384 key labelled ES256",
            signed_as("p384-as-es256", ec_key()),
            Expect::Invalid,
        ),
        row("Ed448 key", signed_as("ed448", ec_key()), Expect::Invalid),
        row("P-521 key", signed_as("p521", ec_key()), Expect::Invalid),
        row(
            "secp256k1 key",
            signed_as("k256", ec_key()),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    let warned = |kid: &str| {
        gw.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&format!("\\\"{kid}\\\"")))
    };
    for kid in [
        "rsa-e1",
        "rsa-e-even",
        "rsa-e-empty",
        "rsa-1024",
        "rsa-1024-e1",
        "ec-short",
        "p384-as-es256",
        "ed448",
        "p521",
        "k256",
    ] {
        assert!(warned(kid), "no load-time warning naming kid {kid}");
    }
    let modulus = b64(&n);
    assert!(
        gw.logs().iter().all(|l| !l.contains(&modulus[..40])),
        "key material was logged"
    );
}

/// T10 HMAC is not configurable (start-up refuses HS*), and HS256 tokens with weak secrets are
/// refused by a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_weak_hmac_secrets() {
    for alg in ["HS256", "HS384", "HS512"] {
        let cfg = GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys").set(
            "jwt",
            "algorithms",
            &format!(r#"["{alg}"]"#),
        );
        let dir = crate::support::TempDir::new("t10");
        let (path, sentinels) = cfg.write_to(&dir);
        let out = crate::support::run_check_file(&path, &[]);
        assert_eq!(out.code, Some(1), "{alg} accepted: {out:?}");
        assert!(
            out.stderr.contains("jwt.algorithms[0]") && out.stderr.contains("symmetric"),
            "{alg}: {}",
            out.stderr
        );
        for s in sentinels.values() {
            assert!(!out.stdout.contains(s) && !out.stderr.contains(s));
        }
    }
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let payload = Token::new().payload_json();
    let header = json!({"alg":"HS256","typ":"JWT","kid":"rsa-1"}).to_string();
    let rows: Vec<Row> = ["", "secret", "password", "your-256-bit-secret", "scimgate"]
        .iter()
        .map(|s| {
            row(
                format!("HS256 with secret {s:?}"),
                mint::hmac_raw("HS256", &header, &payload, s.as_bytes()),
                Expect::Invalid,
            )
        })
        .collect();
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T11 Encoding and JSON malleability: padding, alphabet, trailing bits, segments, UTF-8, BOM,
/// trailing bytes, non-object payloads, depth, duplicate members (refused, including the
/// configured claim); escaped member names decode consistently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_encoding_and_json_malleability() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let key = rsa_key();
    let valid = Token::new().sign(key);
    let parts: Vec<&str> = valid.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let good_payload = Token::new().payload_json();
    let header = rsa_header();

    // A token whose base64url text contains '-' or '_', so the standard alphabet differs.
    let std_alphabet = (0..64)
        .map(|_| Token::new().sign(key))
        .find(|t| t.contains('-') || t.contains('_'))
        .expect("some signature contains - or _")
        .replace('-', "+")
        .replace('_', "/");
    // RS256 signatures are 256 bytes: the last base64 character carries 4 unused bits.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *s.as_bytes().last().expect("signature");
    let idx = alphabet.iter().position(|&c| c == last).expect("base64url");
    let noncanonical = format!("{h}.{p}.{}{}", &s[..s.len() - 1], alphabet[idx | 1] as char);

    let payload_obj = |extra: &str| {
        // The good claims with raw JSON text spliced in before the closing brace.
        format!("{},{extra}}}", &good_payload[..good_payload.len() - 1])
    };
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let mut bom_header = "\u{feff}".as_bytes().to_vec();
    bom_header.extend_from_slice(header.as_bytes());
    let mut bad_utf8 = header.as_bytes()[..header.len() - 1].to_vec();
    bad_utf8.extend_from_slice(b",\"x\":\"\xff\xfe\"}");
    let mut bad_utf8_payload = good_payload.as_bytes()[..good_payload.len() - 1].to_vec();
    bad_utf8_payload.extend_from_slice(b",\"x\":\"\xc3\x28\"}");
    let without_groups = Token::new().without("groups").payload_json();
    let escaped_claim = format!(
        "{},\"gr\\u006fups\":[\"{PROVISIONER_GROUP}\"]}}",
        &without_groups[..without_groups.len() - 1]
    );

    let rows = vec![
        row("control", valid.clone(), Expect::Ok),
        row(
            "padding on the signature",
            format!("{valid}=="),
            Expect::Invalid,
        ),
        row(
            "padding on the payload",
            format!("{h}.{p}=.{s}"),
            Expect::Invalid,
        ),
        row("standard base64 alphabet", std_alphabet, Expect::Invalid),
        row("non-canonical trailing bits", noncanonical, Expect::Invalid),
        row("trailing dot", format!("{valid}."), Expect::Invalid),
        row("leading dot", format!(".{valid}"), Expect::Invalid),
        row("doubled dot", format!("{h}..{p}.{s}"), Expect::Invalid),
        row("empty header segment", format!(".{p}.{s}"), Expect::Invalid),
        row(
            "empty payload segment",
            format!("{h}..{s}"),
            Expect::Invalid,
        ),
        row("four segments", format!("{h}.{p}.{s}.{s}"), Expect::Invalid),
        row("single segment", h.to_owned(), Expect::Invalid),
        row(
            "invalid UTF-8 in the header",
            sign_bytes(&bad_utf8, good_payload.as_bytes(), key),
            Expect::Invalid,
        ),
        row(
            "invalid UTF-8 in the payload",
            sign_bytes(header.as_bytes(), &bad_utf8_payload, key),
            Expect::Invalid,
        ),
        row(
            "UTF-8 BOM before the header",
            sign_bytes(&bom_header, good_payload.as_bytes(), key),
            Expect::Invalid,
        ),
        row(
            "trailing bytes after the header JSON",
            mint::sign_raw(&format!("{header}x"), &good_payload, key),
            Expect::Invalid,
        ),
        row(
            "trailing bytes after the payload JSON",
            mint::sign_raw(&header, &format!("{good_payload}{{}}"), key),
            Expect::Invalid,
        ),
        row(
            "payload is an array",
            mint::sign_raw(&header, &format!("[{good_payload}]"), key),
            Expect::Invalid,
        ),
        row(
            "payload is a string",
            mint::sign_raw(&header, "\"claims\"", key),
            Expect::Invalid,
        ),
        row(
            "payload nested 200 deep",
            mint::sign_raw(&header, &payload_obj(&format!("\"deep\":{deep}")), key),
            Expect::Invalid,
        ),
        row(
            "header is an array",
            mint::sign_raw(&format!("[{header}]"), &good_payload, key),
            Expect::Invalid,
        ),
        row(
            "duplicate kid in the header",
            mint::sign_raw(
                &format!("{},\"kid\":\"ec-1\"}}", &header[..header.len() - 1]),
                &good_payload,
                key,
            ),
            Expect::Invalid,
        ),
        row(
            "duplicate alg in the header",
            mint::sign_raw(
                &format!("{},\"alg\":\"none\"}}", &header[..header.len() - 1]),
                &good_payload,
                key,
            ),
            Expect::Invalid,
        ),
        row(
            "duplicate exp claim",
            mint::sign_raw(&header, &payload_obj("\"exp\":1"), key),
            Expect::Invalid,
        ),
        row(
            "duplicate iss claim",
            mint::sign_raw(&header, &payload_obj("\"iss\":\"https://evil\""), key),
            Expect::Invalid,
        ),
        row(
            "configured claim twice, last one matching (last-wins would grant)",
            mint::sign_raw(
                &header,
                &format!(
                    "{},\"groups\":[\"nobody\"],\"groups\":[\"{PROVISIONER_GROUP}\"]}}",
                    &without_groups[..without_groups.len() - 1]
                ),
                key,
            ),
            Expect::Invalid,
        ),
        row(
            "duplicate member inside a nested claim",
            mint::sign_raw(&header, &payload_obj("\"ext\":{\"a\":1,\"a\":2}"), key),
            Expect::Invalid,
        ),
        row(
            "claim name written with a \\u escape (decodes to groups)",
            mint::sign_raw(&header, &escaped_claim, key),
            Expect::Ok,
        ),
        row(
            "kid written with a \\u escape",
            mint::sign_raw(r#"{"alg":"RS256","k\u0069d":"rsa-1"}"#, &good_payload, key),
            Expect::Ok,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T12 Huge tokens: refused before decoding (8 KiB cap → 401), oversized heads → 431, many
/// Authorization headers → 400; valid traffic keeps flowing during a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_huge_tokens_and_decode_cost() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let padded = |bytes: usize| {
        Token::new()
            .claim("pad", json!("a".repeat(bytes)))
            .sign(rsa_key())
    };
    let mut table = Table::new();
    let t16k = padded(16 * 1024);
    let r = gw.get("/Users", Some(&t16k)).await;
    table.check("16 KiB token", &r, Expect::Invalid, &t16k);

    // Past the 64 KiB head limit hyper answers 431 itself, or resets before the client reads it.
    for kib in [100usize, 400] {
        let token = padded(kib * 1024);
        let request = format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        match crate::support::wire::raw_exchange(
            gw.proxy_addr,
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await
        {
            Ok(raw) if raw.status == 431 => {}
            Ok(raw) => table.fail(
                &format!("{kib} KiB token"),
                format!("status {}", raw.status),
            ),
            Err(e) if e.kind() != std::io::ErrorKind::TimedOut => {}
            Err(e) => table.fail(&format!("{kib} KiB token"), e),
        }
    }
    let many_claims: Token =
        (0..300).fold(Token::new(), |t, i| t.claim(&format!("c{i}"), json!(i)));
    let many = many_claims.sign(rsa_key());
    assert!(many.len() < 8 * 1024);
    let r = gw.get("/Users", Some(&many)).await;
    table.check("300 claims within 8 KiB", &r, Expect::Ok, &many);
    let auth = crate::support::bearer(&Token::new().sign(rsa_key()));
    let fifty: Vec<(&str, &str)> = (0..50).map(|_| ("authorization", auth.as_str())).collect();
    let r = gw.request("GET", "/Users", &fifty, "").await;
    table.check("50 Authorization headers", &r, Expect::Status(400), "");
    table.finish();
    assert_eq!(upstream.hits(), 1, "only the 300-claim token is forwarded");

    // A flood of near-cap tokens that need a signature check, with valid requests interleaved.
    let junk: Vec<String> = (0..24)
        .map(|_| mint::corrupt_signature(&padded(5 * 1024)))
        .collect();
    let mut tasks = Vec::new();
    for (i, token) in junk.into_iter().enumerate() {
        let addr = gw.proxy_addr;
        tasks.push(tokio::spawn(async move {
            let auth = crate::support::bearer(&token);
            let r = crate::support::send(
                addr,
                "GET",
                "/Users",
                &[("authorization", &auth)],
                bytes::Bytes::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("flood request {i}: {e}"));
            (r.status, Duration::ZERO)
        }));
        if i % 3 == 0 {
            let token = Token::new().sign(ec_key());
            tasks.push(tokio::spawn(async move {
                let auth = crate::support::bearer(&token);
                let started = Instant::now();
                let r = crate::support::send(
                    addr,
                    "GET",
                    "/Users",
                    &[("authorization", &auth)],
                    bytes::Bytes::new(),
                )
                .await
                .unwrap_or_else(|e| panic!("valid request during flood: {e}"));
                (r.status + 1000, started.elapsed())
            }));
        }
    }
    let mut valid = 0;
    for task in tasks {
        let (status, took) = task.await.expect("flood task");
        match status {
            401 => {}
            1200 => {
                valid += 1;
                assert!(
                    took < Duration::from_secs(3),
                    "valid request took {took:?} during the flood"
                );
            }
            other => panic!("unexpected status {other} during the flood"),
        }
    }
    assert_eq!(valid, 8);
    assert_eq!(upstream.hits(), 1 + valid);
}

// === B. Claims ===

/// T13 ★ `exp`: required, numeric, not past (leeway 0 here), bounded by `max_lifetime`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_exp_handling() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "leeway", "\"0s\"")).await;
    let now = mint::now();
    let exp = |v: Value| Token::new().claim("exp", v).sign(rsa_key());
    let rows = vec![
        row("exp in 5 minutes", exp(json!(now + 300)), Expect::Ok),
        row(
            "exp as a float (rounded, accepted)",
            exp(json!(now as f64 + 300.5)),
            Expect::Ok,
        ),
        row(
            "exp 23 h ahead (under max_lifetime)",
            exp(json!(now + 23 * 3600)),
            Expect::Ok,
        ),
        row(
            "no exp",
            Token::new().without("exp").sign(rsa_key()),
            Expect::Invalid,
        ),
        row(
            "expired 10 minutes ago",
            exp(json!(now - 600)),
            Expect::Invalid,
        ),
        row(
            "expired 5 s ago (leeway 0)",
            exp(json!(now - 5)),
            Expect::Invalid,
        ),
        row(
            "exp as a string (CVE-2026-25537)",
            exp(json!("99999999999")),
            Expect::Invalid,
        ),
        row("exp \"never\"", exp(json!("never")), Expect::Invalid),
        row("exp negative", exp(json!(-1)), Expect::Invalid),
        row("exp zero", exp(json!(0)), Expect::Invalid),
        row("exp null", exp(json!(null)), Expect::Invalid),
        row("exp true", exp(json!(true)), Expect::Invalid),
        row("exp an array", exp(json!([now + 300])), Expect::Invalid),
        row("exp 1e300", exp(json!(1e300)), Expect::Invalid),
        row("exp u64::MAX", exp(json!(u64::MAX)), Expect::Invalid),
        row(
            "exp in the year 9999",
            exp(json!(253_402_300_799u64)),
            Expect::Invalid,
        ),
        row(
            "exp 48 h ahead (over max_lifetime)",
            exp(json!(now + 48 * 3600)),
            Expect::Invalid,
        ),
        row(
            "exp - iat over max_lifetime",
            Token::new()
                .claim("iat", json!(now - 30 * 3600))
                .claim("exp", json!(now + 300))
                .sign(rsa_key()),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    drop(gw);

    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "leeway", "\"60s\"")).await;
    let rows = vec![
        row(
            "expired 10 s ago, leeway 60 s",
            exp(json!(mint::now() - 10)),
            Expect::Ok,
        ),
        row(
            "expired 120 s ago, leeway 60 s",
            exp(json!(mint::now() - 120)),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T14 `nbf` and `iat` are enforced with the configured leeway; the leeway itself is bounded
/// at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_nbf_iat_and_leeway_bounds() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "leeway", "\"30s\"")).await;
    let now = mint::now();
    let with = |name: &str, v: Value| Token::new().claim(name, v).sign(ec_key());
    let rows = vec![
        row("nbf now", with("nbf", json!(now)), Expect::Ok),
        row(
            "nbf 10 s ahead (within leeway)",
            with("nbf", json!(now + 10)),
            Expect::Ok,
        ),
        row(
            "nbf 10 minutes ahead",
            with("nbf", json!(now + 600)),
            Expect::Invalid,
        ),
        row(
            "nbf far future",
            with("nbf", json!(99_999_999_999u64)),
            Expect::Invalid,
        ),
        row(
            "nbf as a string",
            with("nbf", json!("99999999999")),
            Expect::Invalid,
        ),
        row("nbf null", with("nbf", json!(null)), Expect::Invalid),
        row(
            "iat 10 s ahead (within leeway)",
            with("iat", json!(now + 10)),
            Expect::Ok,
        ),
        row(
            "iat 10 minutes ahead",
            with("iat", json!(now + 600)),
            Expect::Invalid,
        ),
        row(
            "iat as a string",
            with("iat", json!("now")),
            Expect::Invalid,
        ),
        row("iat null", with("iat", json!(null)), Expect::Invalid),
        row(
            "no iat",
            Token::new().without("iat").sign(ec_key()),
            Expect::Ok,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();

    for leeway in ["10m", "301s", "18446744073709551615s", "1000000000h"] {
        let cfg = GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys").set(
            "jwt",
            "leeway",
            &crate::support::toml_str(leeway),
        );
        let dir = crate::support::TempDir::new("t14");
        let (path, _) = cfg.write_to(&dir);
        let out = crate::support::run_check_file(&path, &[]);
        assert_eq!(out.code, Some(1), "leeway {leeway} accepted: {out:?}");
        assert!(
            out.stderr.contains("jwt.leeway"),
            "{leeway}: {}",
            out.stderr
        );
    }
}

/// T15 ★ Audience: a configured audience makes `aud` mandatory; exact, case-sensitive match of
/// one element. Decision: an unset audience is a start-up warning, not a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_audience() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let aud = |v: Value| Token::new().claim("aud", v).sign(rsa_key());
    let rows = vec![
        row("aud exact", aud(json!(AUDIENCE)), Expect::Ok),
        row(
            "aud array containing ours",
            aud(json!(["other", AUDIENCE])),
            Expect::Ok,
        ),
        row(
            "no aud",
            Token::new().without("aud").sign(rsa_key()),
            Expect::Invalid,
        ),
        row("aud null", aud(json!(null)), Expect::Invalid),
        row("aud 123", aud(json!(123)), Expect::Invalid),
        row("aud true", aud(json!(true)), Expect::Invalid),
        row(
            "aud object",
            aud(json!({ "aud": AUDIENCE })),
            Expect::Invalid,
        ),
        row("aud []", aud(json!([])), Expect::Invalid),
        row("aud [null]", aud(json!([null])), Expect::Invalid),
        row(
            "aud array with ours and a number",
            aud(json!([AUDIENCE, 1])),
            Expect::Invalid,
        ),
        row(
            "aud nested array",
            aud(json!([[AUDIENCE]])),
            Expect::Invalid,
        ),
        row(
            "another resource server",
            aud(json!("scim-other")),
            Expect::Invalid,
        ),
        row(
            "upper case",
            aud(json!(AUDIENCE.to_uppercase())),
            Expect::Invalid,
        ),
        row(
            "with a scheme",
            aud(json!(format!("https://{AUDIENCE}"))),
            Expect::Invalid,
        ),
        row(
            "trailing slash",
            aud(json!(format!("{AUDIENCE}/"))),
            Expect::Invalid,
        ),
        row(
            "trailing space",
            aud(json!(format!("{AUDIENCE} "))),
            Expect::Invalid,
        ),
        row(
            "prefix of ours",
            aud(json!(&AUDIENCE[..5])),
            Expect::Invalid,
        ),
        row(
            "comma-joined string containing ours",
            aud(json!(format!("other,{AUDIENCE}"))),
            Expect::Invalid,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
    drop(gw);

    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.unset("jwt", "audience")).await;
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("jwt.audience is not set")),
        "an unset audience must be warned about at start-up"
    );
}

/// T16 ★ Issuer: a single string, exactly equal; same keys with another `iss` (another tenant)
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t16_issuer_and_shared_key_tenants() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let iss = |v: Value| Token::new().claim("iss", v).sign(ec_key());
    let rows = vec![
        row("iss exact", iss(json!(ISSUER)), Expect::Ok),
        row(
            "no iss",
            Token::new().without("iss").sign(ec_key()),
            Expect::Invalid,
        ),
        row("iss null", iss(json!(null)), Expect::Invalid),
        row("iss number", iss(json!(1)), Expect::Invalid),
        row("iss array of ours", iss(json!([ISSUER])), Expect::Invalid),
        row(
            "iss array containing ours",
            iss(json!(["https://evil.example", ISSUER])),
            Expect::Invalid,
        ),
        row(
            "trailing slash",
            iss(json!(format!("{ISSUER}/"))),
            Expect::Invalid,
        ),
        row(
            "upper case",
            iss(json!(ISSUER.to_uppercase())),
            Expect::Invalid,
        ),
        row(
            "http instead of https",
            iss(json!(ISSUER.replace("https", "http"))),
            Expect::Invalid,
        ),
        row(
            "another tenant of the same IdP",
            iss(json!(format!("{ISSUER}/tenants/other"))),
            Expect::Invalid,
        ),
        row(
            "ours as a prefix",
            iss(json!(format!("{ISSUER}.evil.example"))),
            Expect::Invalid,
        ),
        row(
            "another issuer",
            iss(json!("https://evil.example")),
            Expect::Invalid,
        ),
        row("empty", iss(json!("")), Expect::Invalid),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();
}

/// T17 ★ The configured claim test: byte-equal strings, or an array element that is; no
/// substring, case, Unicode, whitespace or nesting leniency. Numbers and booleans match their
/// JSON text only (documented rule semantics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t17_claim_check_semantics() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .rule("admins", "is_admin", "true", "provisioner")
        .rule("level", "level", "1", "provisioner")
        .rule("nested", "realm_access.roles", "scim-nested", "provisioner")
        .rule_match(
            "scoped",
            "scope",
            "scim:write",
            "provisioner",
            "space_delimited",
        );
    let gw = Gateway::start(cfg).await;
    let g = |v: Value| Token::new().claim("groups", v).sign(ec_key());
    let only = |name: &str, v: Value| Token::new().without("groups").claim(name, v).sign(ec_key());
    let group = PROVISIONER_GROUP;
    let rows = vec![
        row("string equal", g(json!(group)), Expect::Ok),
        row("array containing", g(json!(["a", group])), Expect::Ok),
        row("array, repeated", g(json!([group, group])), Expect::Ok),
        row(
            "superstring",
            g(json!(format!("{group}-readonly"))),
            Expect::Forbidden,
        ),
        row(
            "prefixed",
            g(json!(format!("readonly-{group}"))),
            Expect::Forbidden,
        ),
        row(
            "prefix of the value",
            g(json!("scim-provisioner")),
            Expect::Forbidden,
        ),
        row(
            "capitalised",
            g(json!("Scim-Provisioners")),
            Expect::Forbidden,
        ),
        row(
            "upper case",
            g(json!(group.to_uppercase())),
            Expect::Forbidden,
        ),
        row(
            "trailing space",
            g(json!(format!("{group} "))),
            Expect::Forbidden,
        ),
        row(
            "leading space",
            g(json!(format!(" {group}"))),
            Expect::Forbidden,
        ),
        row(
            "trailing NUL",
            g(json!(format!("{group}\u{0000}"))),
            Expect::Forbidden,
        ),
        row(
            "trailing newline",
            g(json!(format!("{group}\n"))),
            Expect::Forbidden,
        ),
        row(
            "full-width letters",
            g(json!("\u{ff53}\u{ff43}\u{ff49}\u{ff4d}-provisioners")),
            Expect::Forbidden,
        ),
        row(
            "Cyrillic s",
            g(json!("\u{0455}cim-provisioners")),
            Expect::Forbidden,
        ),
        row(
            "underscore",
            g(json!("scim_provisioners")),
            Expect::Forbidden,
        ),
        row(
            "comma list",
            g(json!(format!("{group},other"))),
            Expect::Forbidden,
        ),
        row(
            "space list in exact mode",
            g(json!(format!("other {group}"))),
            Expect::Forbidden,
        ),
        row("nested array", g(json!([[group]])), Expect::Forbidden),
        row(
            "object element",
            g(json!([{ "name": group }])),
            Expect::Forbidden,
        ),
        row(
            "object keyed by the value",
            g(json!({ group: true })),
            Expect::Forbidden,
        ),
        row("null", g(json!(null)), Expect::Forbidden),
        row("empty string", g(json!("")), Expect::Forbidden),
        row("empty array", g(json!([])), Expect::Forbidden),
        row("boolean true", g(json!(true)), Expect::Forbidden),
        row(
            "claim missing",
            Token::new().without("groups").sign(ec_key()),
            Expect::Forbidden,
        ),
        row("is_admin true", only("is_admin", json!(true)), Expect::Ok),
        row(
            "is_admin \"true\"",
            only("is_admin", json!("true")),
            Expect::Ok,
        ),
        row(
            "is_admin [true]",
            only("is_admin", json!([true])),
            Expect::Ok,
        ),
        row(
            "is_admin \"True\"",
            only("is_admin", json!("True")),
            Expect::Forbidden,
        ),
        row("is_admin 1", only("is_admin", json!(1)), Expect::Forbidden),
        row(
            "is_admin \"yes\"",
            only("is_admin", json!("yes")),
            Expect::Forbidden,
        ),
        row("level 1", only("level", json!(1)), Expect::Ok),
        row("level \"1\"", only("level", json!("1")), Expect::Ok),
        row("level 1.0", only("level", json!(1.0)), Expect::Forbidden),
        row(
            "level \"01\"",
            only("level", json!("01")),
            Expect::Forbidden,
        ),
        row("level true", only("level", json!(true)), Expect::Forbidden),
        row(
            "nested path",
            only("realm_access", json!({"roles": ["scim-nested"]})),
            Expect::Ok,
        ),
        row(
            "nested path through an array",
            only("realm_access", json!([{"roles": ["scim-nested"]}])),
            Expect::Forbidden,
        ),
        row(
            "dotted literal name shadows the path",
            Token::new()
                .without("groups")
                .claim("realm_access.roles", json!(["x"]))
                .claim("realm_access", json!({"roles": ["scim-nested"]}))
                .sign(ec_key()),
            Expect::Forbidden,
        ),
        row(
            "scope list containing the value",
            only("scope", json!("openid scim:write profile")),
            Expect::Ok,
        ),
        row(
            "scope with a longer item only",
            only("scope", json!("scim:writer scim:write-all")),
            Expect::Forbidden,
        ),
        row(
            "scope separated by a tab",
            only("scope", json!("openid\tscim:write")),
            Expect::Forbidden,
        ),
        row(
            "scope separated by commas",
            only("scope", json!("openid,scim:write")),
            Expect::Forbidden,
        ),
    ];
    run_rows(&gw, &upstream, &rows).await.finish();

    // The same property on random values: anything but the configured value is never forwarded.
    let mut rows = Vec::new();
    for i in 0..24 {
        let noise = crate::support::config::random_hex(1 + i % 6);
        let value = match i % 4 {
            0 => json!(noise),
            1 => json!(format!("{group}{noise}")),
            2 => json!([format!("{noise}{group}")]),
            _ => json!(format!("{}{noise}", &group[..i % group.len()])),
        };
        rows.push(row(
            format!("random value {value}"),
            g(value),
            Expect::Forbidden,
        ));
    }
    run_rows(&gw, &upstream, &rows).await.finish();
    // An empty configured value is refused at start-up.
    let cfg = GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys").rule(
        "empty",
        "groups",
        "",
        "provisioner",
    );
    let dir = crate::support::TempDir::new("t17");
    let (path, _) = cfg.write_to(&dir);
    let out = crate::support::run_check_file(&path, &[]);
    assert_eq!(out.code, Some(1), "empty rule value accepted: {out:?}");
    assert!(out.stderr.contains("rules[1].value"), "{}", out.stderr);
}

/// T18 Replay window: a token is accepted only while the time is before its `exp` (+ leeway, 0
/// here: RFC 7519 §4.1.4, so refused at the `exp` second itself), even while it sits in the
/// validated-token cache; afterwards every use is refused as expired and none reaches the backend.
/// (One test for what `cache.rs` and this file each tested, with opposite boundaries.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t18_cached_token_expires_on_time() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "leeway", "\"0s\"")).await;
    let exp = mint::now() + 2;
    let token = Token::new().claim("exp", json!(exp)).sign(rsa_key());
    let first = gw.get("/Users", Some(&token)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = gw.get("/Users", Some(&token)).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let cache_hits = |text: &str| metric_or_zero(text, "scimgate_token_cache_hits_total");
    assert_eq!(
        cache_hits(&scrape(&gw).await),
        1.0,
        "the token is served from the cache"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut refused = false;
    while Instant::now() < deadline {
        let sent_at = mint::now();
        let r = gw.get("/Users", Some(&token)).await;
        match r.status {
            // Accepted means the gateway's clock was before exp, and ours was not later.
            200 => assert!(
                sent_at < exp,
                "a cached token was accepted at {sent_at}, at or after its exp {exp}"
            ),
            401 => {
                r.assert_invalid_token();
                assert!(mint::now() >= exp, "refused before exp");
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the token was still accepted 4 s after exp");
    let hits = upstream.hits();
    for _ in 0..3 {
        gw.get("/Users", Some(&token)).await.assert_invalid_token();
    }
    assert_eq!(upstream.hits(), hits);
    let metrics = scrape(&gw).await;
    assert!(
        metric_or_zero(
            &metrics,
            r#"scimgate_auth_decisions_total{decision="deny",reason="expired"}"#
        ) >= 4.0,
        "{metrics}"
    );
}
