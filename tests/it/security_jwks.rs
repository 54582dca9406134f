//! Security catalogue, section G (threats.md §7, T35–T40): where keys come from, hostile JWKS
//! endpoints, rotation, refetch storms, the validation path's availability, and the
//! validated-token cache — against the real binary.

use std::time::{Duration, Instant};

use crate::support::hostile::UntrustedTls;
use crate::support::mint::{self, SigningKey};
use crate::support::{
    Attacker, Gateway, GatewayConfig, JwksMode, JwksServer, Token, Upstream, ec_key, fixture,
    rsa_key,
};
use serde_json::json;

/// Writes `text` as the gateway's config, sends `SIGHUP`, and waits (bounded) for one more
/// "configuration reloaded" line.
async fn reload_with(gw: &Gateway, text: &str) {
    let reloaded = |l: &str| l.contains("configuration reloaded");
    let seen = gw.logs().iter().filter(|l| reloaded(l)).count();
    std::fs::write(&gw.config_path, text).expect("write config");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    gw.wait_for_logs(reloaded, seen + 1, Duration::from_secs(5))
        .await;
}

/// Sends tokens with a never-published kid until the JWKS endpoint has seen one more request
/// (bounded): forces one rate-limited refetch. Returns the statuses seen meanwhile.
async fn force_refetch(gw: &Gateway, jwks: &JwksServer) -> Vec<u16> {
    let stranger = SigningKey::ec("stranger");
    let before = jwks.hits();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut statuses = Vec::new();
    while jwks.hits() == before {
        assert!(Instant::now() < deadline, "no JWKS refetch within 5 s");
        statuses.push(
            gw.get("/Users", Some(&Token::new().sign(&stranger)))
                .await
                .status,
        );
        if jwks.hits() == before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    statuses
}

/// `scimgate check` on the default config with one `[jwt]` key replaced.
fn check_jwt(key: &str, value: &str) -> crate::support::CheckOutput {
    let cfg = GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys")
        .set("jwt", key, value);
    let dir = crate::support::TempDir::new("jwks-check");
    let (path, _) = cfg.write_to(&dir);
    crate::support::run_check_file(&path, &[])
}

/// T35 ★ The key source: `jwt.jwks_url` must be https (plain http only for loopback); redirects
/// are not followed; proxy variables are ignored; an untrusted certificate loads no keys;
/// nothing in a token chooses where keys come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t35_key_source_integrity() {
    for url in [
        "http://idp.example.com/keys",
        "http://10.0.0.1/keys",
        "http://localhost.evil.example/keys",
        "http://127.0.0.1.nip.io/keys",
        "ftp://127.0.0.1/keys",
        "file:///etc/passwd",
        "https://user:pw@idp.example.com/keys",
    ] {
        let out = check_jwt("jwks_url", &crate::support::toml_str(url));
        assert_eq!(out.code, Some(1), "{url} accepted: {}", out.stdout);
        assert!(out.stderr.contains("jwt.jwks_url"), "{url}: {}", out.stderr);
    }
    for url in [
        "https://idp.example.com/keys",
        "http://127.0.0.1:9/keys",
        "http://[::1]:9/keys",
        "http://localhost:9/keys",
    ] {
        let out = check_jwt("jwks_url", &crate::support::toml_str(url));
        assert_eq!(out.code, Some(0), "{url} refused: {}", out.stderr);
    }

    let attacker = Attacker::start().await;
    let evil = SigningKey::ec("attacker-1");
    attacker.set_body(mint::jwks(&[&evil]));

    // A JWKS endpoint that redirects to the attacker at startup: no keys, 503, nothing fetched.
    let (jwks, upstream, cfg) = fixture().await;
    jwks.set_mode(JwksMode::Redirect(attacker.url("/jwks.json")));
    let gw = Gateway::start_unready(cfg.set("jwt", "refetch_cooldown", "\"1s\"")).await;
    let r = gw.get("/Users", Some(&Token::new().sign(&evil))).await;
    r.assert_scim_error(503);
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(503);
    assert_eq!(gw.admin_get("/readyz").await.expect("readyz").status, 503);
    // After a first good load, a redirecting refetch keeps the old keys.
    jwks.set_mode(JwksMode::Serve);
    gw.wait_ready().await;
    jwks.set_mode(JwksMode::Redirect(attacker.url("/jwks.json")));
    force_refetch(&gw, &jwks).await;
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    gw.get("/Users", Some(&Token::new().sign(&evil)))
        .await
        .assert_invalid_token();
    assert_eq!(upstream.hits(), 1);
    drop(gw);

    // Proxy variables in the environment are not used for the IdP or the upstream.
    let (_jwks, upstream, cfg) = fixture().await;
    let proxy = attacker.url("/");
    let cfg = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .fold(cfg, |cfg, var| cfg.env(var, &proxy));
    let gw = Gateway::start(cfg).await;
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(ec_key())))
            .await
            .status,
        200
    );
    assert_eq!(upstream.hits(), 1);
    drop(gw);

    // A token cannot name its key source: an `iss` or `jku` pointing at the attacker.
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    for token in [
        Token::new()
            .claim("iss", json!(attacker.url("")))
            .sign(&evil),
        Token::new()
            .claim("iss", json!(attacker.url("")))
            .header("jku", json!(attacker.url("/.well-known/jwks.json")))
            .sign(&evil),
    ] {
        gw.get("/Users", Some(&token)).await.assert_invalid_token();
    }
    assert_eq!(upstream.hits(), 0);
    drop(gw);

    // https with a certificate nobody trusts: the handshake fails, no keys load.
    let tls = UntrustedTls::start(&mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start_unready(GatewayConfig::new(&upstream.url(), &tls.url("/keys"))).await;
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(503);
    assert!(
        tls.connections() >= 1,
        "the gateway never tried the https JWKS URL"
    );
    assert_eq!(
        tls.handshakes(),
        0,
        "a TLS handshake with an untrusted certificate completed"
    );
    assert_eq!(tls.requests(), 0);
    assert_eq!(upstream.hits(), 0);
    drop(gw);
    // Control: the same endpoint with its certificate deliberately trusted (`jwt.ca_file`).
    let dir = crate::support::TempDir::new("t35-ca");
    let ca = dir.write("idp-ca.pem", tls.cert_pem().as_bytes(), 0o644);
    let cfg = GatewayConfig::new(&upstream.url(), &tls.url("/keys")).set(
        "jwt",
        "ca_file",
        &crate::support::toml_str(&ca.to_string_lossy()),
    );
    let gw = Gateway::start(cfg).await;
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    assert!(tls.requests() >= 1);
    attacker.assert_untouched();
}

/// One startup scenario of T36: the JWKS endpoint misbehaves from the start.
async fn never_loaded(
    name: &'static str,
    mode: Option<JwksMode>,
    url: Option<String>,
) -> Result<(), String> {
    let (jwks, upstream, cfg) = fixture().await;
    if let Some(mode) = mode {
        jwks.set_mode(mode);
    }
    let cfg = match url {
        Some(url) => cfg.set("jwt", "jwks_url", &crate::support::toml_str(&url)),
        None => cfg,
    };
    let gw = Gateway::start_unready(cfg).await;
    let started = Instant::now();
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    let took = started.elapsed();
    let ready = gw.admin_get("/readyz").await.map(|r| r.status);
    let mut problems = Vec::new();
    if r.status != 503 {
        problems.push(format!("status {} {}", r.status, r.text()));
    }
    if took > Duration::from_secs(3) {
        problems.push(format!("answer took {took:?}"));
    }
    if ready != Ok(503) {
        problems.push(format!("/readyz {ready:?}"));
    }
    if upstream.hits() != 0 {
        problems.push("upstream reached".into());
    }
    if jwks.hits() > 4 {
        problems.push(format!("{} JWKS fetches", jwks.hits()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: {}", problems.join("; ")))
    }
}

/// A syntactically valid JWKS over 1 MiB: the real keys plus padding.
fn oversized_jwks() -> Vec<u8> {
    json!({"keys": [rsa_key().jwk(), ec_key().jwk()], "pad": "x".repeat(1100 * 1024)})
        .to_string()
        .into_bytes()
}

/// T36 A JWKS endpoint that fails, lies or floods before the first load: never loaded → 503
/// (fail closed), fast, readiness 503, upstream 0, fetches bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_hostile_jwks_before_first_load() {
    let refused = Upstream::down_url().replace("/scim/v2", "/keys");
    let scenarios: Vec<(&'static str, Option<JwksMode>, Option<String>)> = vec![
        ("HTTP 500", Some(JwksMode::Status(500)), None),
        ("HTTP 404", Some(JwksMode::Status(404)), None),
        ("connection refused", None, Some(refused)),
        ("connection closed without an answer", Some(JwksMode::Close), None),
        ("truncated body", Some(JwksMode::Truncated), None),
        ("not JSON", Some(JwksMode::Garbage), None),
        ("malformed JSON", Some(JwksMode::Body(b"{\"keys\":[".to_vec())), None),
        ("keys not an array", Some(JwksMode::Body(b"{\"keys\":\"x\"}".to_vec())), None),
        ("no keys member", Some(JwksMode::Body(b"{}".to_vec())), None),
        ("empty key set", Some(JwksMode::Body(b"{\"keys\":[]}".to_vec())), None),
        (
            "only unusable keys",
            Some(JwksMode::Body(
                json!({"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}, {"kty":"EC","crv":"P-521","kid":"p"}]})
                    .to_string()
                    .into_bytes(),
            )),
            None,
        ),
        ("1 MiB+ body", Some(JwksMode::Body(oversized_jwks())), None),
    ];
    let mut tasks = Vec::new();
    for (name, mode, url) in scenarios {
        tasks.push(tokio::spawn(never_loaded(name, mode, url)));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("scenario task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// T36 Hostile-but-usable key sets: one bad entry among good ones (RFC 7517 §5: skip it), more
/// than 100 keys (the rest ignored), and a slow endpoint within the fetch timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_bad_entries_key_cap_and_slow_endpoint() {
    let late = SigningKey::ec("late-key");
    let mut keys = vec![
        json!("not an object"),
        json!(42),
        json!({"kty": "AKP", "kid": "pq", "pub": "AAAA"}),
        json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
        rsa_key().jwk(),
    ];
    for i in 0..110 {
        keys.push(SigningKey::ec(&format!("filler-{i}")).jwk());
    }
    keys.push(late.jwk());
    keys.push(ec_key().jwk());
    let jwks = JwksServer::start(json!({ "keys": keys }).to_string()).await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(GatewayConfig::new(&upstream.url(), &jwks.url())).await;
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    gw.get("/Users", Some(&Token::new().sign(&late)))
        .await
        .assert_invalid_token();
    gw.get("/Users", Some(&Token::new().sign(ec_key())))
        .await
        .assert_invalid_token();
    assert!(
        gw.logs().iter().any(|l| l.contains("more than 100 keys")),
        "keys beyond the cap are not reported"
    );
    assert_eq!(upstream.hits(), 1);
    drop(gw);

    let (jwks, upstream, cfg) = fixture().await;
    jwks.set_mode(JwksMode::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    let gw = Gateway::start(cfg).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    assert_eq!(upstream.hits(), 1);
}

/// T36 After a good load, every hostile answer on a refetch keeps the last good keys:
/// 500, redirect, truncated, garbage, malformed, empty, over 1 MiB, connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_hostile_jwks_after_first_load_keeps_old_keys() {
    let (jwks, upstream, cfg) = fixture().await;
    let attacker = Attacker::start().await;
    attacker.set_body(mint::jwks(&[&SigningKey::ec("attacker-1")]));
    let gw = Gateway::start(cfg.set("jwt", "refetch_cooldown", "\"1s\"")).await;
    let modes = vec![
        JwksMode::Status(500),
        JwksMode::Redirect(attacker.url("/jwks.json")),
        JwksMode::Truncated,
        JwksMode::Garbage,
        JwksMode::Body(b"{\"keys\":[".to_vec()),
        JwksMode::Body(b"{\"keys\":[]}".to_vec()),
        JwksMode::Body(oversized_jwks()),
        JwksMode::Close,
    ];
    for mode in modes {
        let label = format!("{mode:?}").chars().take(40).collect::<String>();
        jwks.set_mode(mode);
        let statuses = force_refetch(&gw, &jwks).await;
        assert!(statuses.iter().all(|s| *s == 401), "{label}: {statuses:?}");
        for key in [rsa_key(), ec_key()] {
            let r = gw.get("/Users", Some(&Token::new().sign(key))).await;
            assert_eq!(
                r.status,
                200,
                "{label}: old {} key after a failed refetch",
                key.alg()
            );
        }
    }
    assert_eq!(upstream.hits(), 16);
    assert_eq!(gw.admin_get("/readyz").await.expect("readyz").status, 200);
    attacker.assert_untouched();
}

/// T37 Rotation: a new key works after one refetch; a removed key stops working after the next
/// scheduled refresh even for a cached token; duplicate kids try every matching key (decision);
/// a kid reused for another key follows the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t37_key_rotation_and_removal() {
    let (jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .set("jwt", "refresh_interval", "\"1s\"")
        .set("jwt", "min_refresh_interval", "\"1s\"")
        .set("jwt", "refetch_cooldown", "\"1s\"");
    let gw = Gateway::start(cfg).await;
    let cached = Token::new().sign(rsa_key());
    assert_eq!(gw.get("/Users", Some(&cached)).await.status, 200);

    // The IdP retires the RSA key: the next scheduled refresh drops it, cached token or not.
    jwks.set_jwks(mint::jwks(&[ec_key()]));
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let r = gw.get("/Users", Some(&cached)).await;
        if r.status == 401 {
            r.assert_invalid_token();
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "a removed key still verifies after 4 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A newly published key works after one refetch (unknown kid), once the cooldown allows it.
    let fresh = SigningKey::rsa("rotated-rsa");
    jwks.set_jwks(mint::jwks(&[&fresh, ec_key()]));
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw
        .get("/Users", Some(&Token::new().sign(&fresh)))
        .await
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "a newly published key is not accepted after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Duplicate kids: every key with the kid and the algorithm is tried.
    let dup_a = SigningKey::ec("dup");
    let dup_b = SigningKey::ec("dup");
    let dup_rsa = SigningKey::rsa("dup");
    let outsider = SigningKey::ec("dup");
    jwks.set_jwks(mint::jwks(&[&dup_a, &dup_b, &dup_rsa]));
    let deadline = Instant::now() + Duration::from_secs(4);
    while gw
        .get("/Users", Some(&Token::new().sign(&dup_b)))
        .await
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the duplicate-kid set never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(&dup_a)))
            .await
            .status,
        200
    );
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(&dup_rsa)))
            .await
            .status,
        200
    );
    gw.get("/Users", Some(&Token::new().sign(&outsider)))
        .await
        .assert_invalid_token();

    // The same kid now names a different key.
    let successor = SigningKey::ec("dup");
    jwks.set_jwks(mint::jwks(&[&successor]));
    let deadline = Instant::now() + Duration::from_secs(4);
    while gw
        .get("/Users", Some(&Token::new().sign(&successor)))
        .await
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the reused kid never switched keys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.get("/Users", Some(&Token::new().sign(&dup_b)))
        .await
        .assert_invalid_token();
    assert!(upstream.hits() >= 6);
}

/// T38 A storm of random unknown kids causes at most one JWKS fetch per `refetch_cooldown`
/// (single-flight), every token is refused, nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_unknown_kid_refetch_storm() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "refetch_cooldown", "\"1s\"")).await;
    let loaded = jwks.hits();
    let attacker = SigningKey::ec("attacker");
    let started = Instant::now();
    let mut statuses = Vec::new();
    for wave in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..60 {
            let kid = format!("storm-{wave}-{i}-{}", crate::support::config::random_hex(4));
            let key = if i % 2 == 0 { rsa_key() } else { &attacker };
            let token = Token::new()
                .header("kid", json!(kid))
                .header("alg", json!(key.alg()))
                .sign(key);
            let addr = gw.proxy_addr;
            tasks.push(tokio::spawn(async move {
                let auth = crate::support::bearer(&token);
                crate::support::send(
                    addr,
                    "GET",
                    "/Users",
                    &[("authorization", &auth)],
                    bytes::Bytes::new(),
                )
                .await
                .map(|r| r.status)
                .unwrap_or_else(|e| panic!("storm request: {e}"))
            }));
        }
        for t in tasks {
            statuses.push(t.await.expect("storm task"));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let elapsed = started.elapsed();
    let fetches = jwks.hits() - loaded;
    let allowed = 1 + elapsed.as_secs() as usize;
    assert!(
        fetches <= allowed,
        "{fetches} JWKS fetches for 300 unknown kids in {elapsed:?} (cooldown 1 s allows {allowed})"
    );
    assert!(statuses.iter().all(|s| *s == 401), "statuses {statuses:?}");
    assert_eq!(upstream.hits(), 0);
}

/// T39 The validation path stays up: a corpus of hostile but correctly signed claim sets and
/// random mutations never yields 2xx or 5xx, and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_validation_path_availability() {
    let (_jwks, upstream, cfg) = fixture().await;
    let mut gw = Gateway::start(cfg).await;
    let key = rsa_key();
    let header = json!({"alg":"RS256","typ":"JWT","kid":key.kid()}).to_string();
    let now = mint::now();
    let good = Token::new().payload_json();
    let splice = |extra: &str| format!("{},{extra}}}", &good[..good.len() - 1]);
    let deep = format!("{}1{}", "[".repeat(3000), "]".repeat(3000));
    let mut tokens: Vec<String> = [
        r#"{"exp":1e400}"#.to_owned(),
        splice(r#""x":1e400"#),
        splice(r#""x":-1e400"#),
        r#"{"exp":18446744073709551616}"#.to_owned(),
        format!(r#"{{"exp":{},"iat":1e308}}"#, now + 60),
        format!(r#"{{"exp":{},"iat":-1e308,"iss":"x"}}"#, now + 60),
        format!(r#"{{"exp":{},"nbf":1e308}}"#, now + 60),
        splice(r#""s":"\ud800""#),
        splice(r#""s":"\udc00\ud800""#),
        splice(&format!(r#""deep":{deep}"#)),
        r#"{}"#.to_owned(),
        r#"null"#.to_owned(),
        r#"{"exp":null,"iat":null,"nbf":null,"aud":null,"iss":null}"#.to_owned(),
        format!(r#"{{"exp":{},"groups":null}}"#, now + 60),
        splice(r#""groups":{"":[]}"#),
        splice(r#""exp":1"#),
    ]
    .iter()
    .map(|payload| mint::sign_raw(&header, payload, key))
    .collect();
    tokens.push(mint::sign_raw(
        r#"{"alg":"RS256","kid":"rsa-1","x":1e400}"#,
        &good,
        key,
    ));
    tokens.push(mint::sign_raw(
        r#"{"alg":"RS256","kid":"rsa-1","crit":1e400}"#,
        &good,
        key,
    ));
    // Bit flips anywhere in a valid token, and printable garbage of every length class.
    let valid = Token::new().sign(key);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for _ in 0..60 {
        let mut bytes = valid.clone().into_bytes();
        let i = (next() as usize) % bytes.len();
        bytes[i] = alphabet[(next() as usize) % alphabet.len()];
        if bytes != valid.as_bytes() {
            tokens.push(String::from_utf8(bytes).expect("ASCII"));
        }
    }
    for len in [1usize, 2, 3, 16, 200, 1000, 8000] {
        let garbage: String = (0..len)
            .map(|_| alphabet[(next() as usize) % alphabet.len()] as char)
            .collect();
        tokens.push(garbage);
    }
    let mut failures = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let r = gw.get("/Users", Some(token)).await;
        if !matches!(r.status, 401 | 403) {
            failures.push(format!("token #{i}: {} {}", r.status, r.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(upstream.hits(), 0);
    // Odd but valid claim sets are simply accepted.
    for payload in [
        splice(r#""":"empty name""#),
        splice(r#""realm_access":{"roles":null}"#),
    ] {
        let r = gw
            .get("/Users", Some(&mint::sign_raw(&header, &payload, key)))
            .await;
        assert_eq!(r.status, 200, "{payload}");
    }
    assert!(gw.is_running());
    assert!(
        gw.logs().iter().all(|l| !l.contains("panicked")),
        "a panic was logged"
    );
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(key))).await.status,
        200
    );
}

/// T40 ★ The validated-token cache keys on the entire token: a cached token's header and payload
/// with any other signature is re-verified and refused; a reload that changes the rule or the
/// audience applies to cached tokens at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_validation_cache_correctness() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let valid = Token::new().sign(rsa_key());
    assert_eq!(gw.get("/Users", Some(&valid)).await.status, 200);
    assert_eq!(
        gw.get("/Users", Some(&valid)).await.status,
        200,
        "cache hit"
    );
    let (input, sig) = valid.rsplit_once('.').expect("three parts");
    let other = Token::new().sign(rsa_key());
    let forged = [
        mint::corrupt_signature(&valid),
        format!("{input}.{}", mint::signature_segment(&other)),
        format!("{input}.{}", &sig[..sig.len() - 4]),
        // The last character replaced by another canonical one (A and Q differ in bit 4).
        format!(
            "{input}.{}{}",
            &sig[..sig.len() - 1],
            if sig.ends_with('A') { 'Q' } else { 'A' }
        ),
        format!("{input}."),
        input.to_owned(),
        format!(
            "{}.{}",
            valid.split('.').next().expect("header"),
            other.split('.').nth(1).expect("payload")
        ) + "."
            + sig,
    ];
    for token in &forged {
        gw.get("/Users", Some(token)).await.assert_invalid_token();
    }
    assert_eq!(upstream.hits(), 2);

    // Reload: the rule's value changes; the cached token no longer matches any rule.
    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let changed = text.replace("value = \"scim-provisioners\"", "value = \"scim-other\"");
    assert_ne!(text, changed);
    reload_with(&gw, &changed).await;
    gw.get("/Users", Some(&valid))
        .await
        .assert_insufficient_scope();

    // Reload: the audience changes; the cached token is now for another audience.
    let text = changed
        .replace("value = \"scim-other\"", "value = \"scim-provisioners\"")
        .replace(mint::AUDIENCE, "another-audience");
    reload_with(&gw, &text).await;
    gw.get("/Users", Some(&valid)).await.assert_invalid_token();
    assert_eq!(upstream.hits(), 2);
}
