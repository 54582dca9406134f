//! Security catalogue, section H (threats.md §7, T41–T45): secret leakage (one full run at
//! `RUST_LOG=trace`), secret files and start-up validation, hot-reload races, upstream failures
//! and TLS, error oracles — against the real binary. The Cargo.lock guard of T45 is
//! `tests/lockfile.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hostile::{Resetter, UntrustedTls};
use crate::support::mint::{self, ISSUER, SigningKey};
use crate::support::upstream::Behavior;
use crate::support::{
    Attacker, Gateway, GatewayConfig, H2, JwksServer, TempDir, Token, Upstream, bearer, ec_key,
    fixture, rsa_key,
};
use bytes::Bytes;
use serde_json::json;

/// `scimgate serve` on a config that must be refused: exit code, stdout, stderr (bounded).
fn serve_path(path: &std::path::Path) -> (Option<i32>, String, String) {
    let child = Command::new(crate::support::gateway::binary())
        .args(["serve", "--config"])
        .arg(path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scimgate serve");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(Duration::from_secs(15)) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("scimgate serve kept running on a config it must refuse");
    };
    let output = output.expect("serve output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// === T41 ===

/// T41 ★ One run at `RUST_LOG=trace` through every outcome: no sentinel, no token, no signature
/// segment and no caller credential in any log line, response or metric; claim values with CR/LF
/// cannot forge log lines (every stdout line is one JSON object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_secret_and_token_leakage_at_trace() {
    let (jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .env("RUST_LOG", "trace")
        .set("jwt", "refetch_cooldown", "\"1s\"")
        .account("reader", "x-api-key", None)
        .rule("readers", "groups", "scim-readers", "reader");
    let gw = Gateway::start(cfg).await;
    let injected = "x\r\nFAKE LOG LINE {\"level\":\"ERROR\",\"message\":\"forged\"}\n";
    let stranger = SigningKey::ec("stranger");
    let tokens = vec![
        (Token::new().sign(rsa_key()), 200),
        (
            Token::new()
                .claim("groups", json!(["scim-readers"]))
                .sign(ec_key()),
            200,
        ),
        (
            Token::new()
                .claim("sub", json!(injected))
                .claim("jti", json!(injected))
                .claim("client_id", json!(injected))
                .sign(rsa_key()),
            200,
        ),
        (
            Token::new()
                .claim("groups", json!(["nobody"]))
                .claim("sub", json!(injected))
                .sign(ec_key()),
            403,
        ),
        (mint::corrupt_signature(&Token::new().sign(rsa_key())), 401),
        (Token::new().exp_in(-3600).sign(rsa_key()), 401),
        (Token::new().sign(&stranger), 401),
        (
            Token::new().claim("iss", json!(injected)).sign(rsa_key()),
            401,
        ),
    ];
    let caller_secrets = [
        "caller-api-key-0001",
        "caller-proxy-secret-0002",
        "caller-cookie-0003",
    ];
    for (token, status) in &tokens {
        let auth = bearer(token);
        let r = gw
            .request(
                "POST",
                "/Users?filter=userName%20eq%20%22x%22",
                &[
                    ("authorization", &auth),
                    ("x-api-key", caller_secrets[0]),
                    ("proxy-authorization", caller_secrets[1]),
                    ("cookie", &format!("session={}", caller_secrets[2])),
                    ("content-type", "application/scim+json"),
                ],
                "{}",
            )
            .await;
        assert_eq!(r.status, *status, "{}", r.text());
    }
    // The upstream rejects the key (502), redirects, and answers over HTTP/2 callers.
    upstream.set_status(401);
    let valid = Token::new().sign(rsa_key());
    assert_eq!(gw.get("/Users", Some(&valid)).await.status, 502);
    upstream.set_status(200);
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2");
    let auth = bearer(&valid);
    let r = h2
        .request(
            "GET",
            "/Groups",
            &[("authorization", &auth)],
            Bytes::new(),
            &[],
        )
        .await
        .expect("h2");
    r.assert_free_of(&gw.sentinels());
    jwks.set_mode(crate::support::JwksMode::Status(500));
    gw.get(
        "/Users",
        Some(&Token::new().sign(&SigningKey::ec("stranger-2"))),
    )
    .await
    .assert_invalid_token();

    let metrics = gw.admin_get("/metrics").await.expect("metrics");
    gw.wait_for_logs(
        |l| l.contains("\"message\":\"request\""),
        tokens.len() + 3,
        Duration::from_secs(5),
    )
    .await;
    let mut secrets: Vec<String> = Vec::new();
    for (token, _) in tokens.iter().chain(std::iter::once(&(valid.clone(), 0))) {
        secrets.push(token.clone());
        secrets.push(mint::signature_segment(token).to_owned());
    }
    secrets.extend(caller_secrets.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    gw.assert_logs_free_of(&refs);
    for secret in refs
        .iter()
        .copied()
        .chain(gw.sentinels().iter().map(String::as_str))
    {
        assert!(
            !metrics.text().contains(secret),
            "a secret appears in /metrics"
        );
    }
    // Log injection: every stdout line is one JSON object; nothing starts a forged line.
    let logs = gw.logs();
    assert!(
        logs.len() > 20,
        "trace level produced only {} lines",
        logs.len()
    );
    for line in &logs {
        assert!(
            !line.starts_with("FAKE LOG LINE"),
            "forged log line: {line}"
        );
    }
    let stdout_objects = gw.json_logs().len();
    let stderr_lines = logs.len() - stdout_objects;
    assert!(
        gw.json_logs().iter().all(serde_json::Value::is_object),
        "a stdout line is not a JSON object"
    );
    assert!(
        logs.iter()
            .take(stdout_objects)
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "a stdout line is not JSON"
    );
    assert!(
        logs.iter()
            .filter(|l| l.contains("forged"))
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "an injected claim broke a log line"
    );
    assert_eq!(stderr_lines, 0, "unexpected stderr output at trace level");
}

// === T42 ===

/// T42 Start-up refuses every unsafe or broken setting (exit 1, the key path named, no secret
/// printed): empty or missing key files, keys that cannot be a header value, non-https JWKS,
/// out-of-range leeway, symmetric algorithms, empty claim values, reserved credential headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_startup_refuses_unsafe_configs() {
    let dir = TempDir::new("t42");
    let empty = dir.write("empty.key", b"", 0o600);
    let newline = dir.write("newline.key", b"\n", 0o600);
    let two_lines = dir.write(
        "two-lines.key",
        b"SECRET-PART-ONE\nSECRET-PART-TWO\n",
        0o600,
    );
    let missing = dir.path().join("missing.key");
    let base = || GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys");
    let with_key = |path: &std::path::Path| {
        base().extra(&format!(
            "[service_accounts.other]\nheader = \"x-api-key\"\napi_key_file = {}\n",
            crate::support::toml_str(&path.to_string_lossy())
        ))
    };
    let cases: Vec<(&str, GatewayConfig, &str)> = vec![
        ("empty key file", with_key(&empty), "service_accounts.other.api_key_file"),
        ("key file with only a newline", with_key(&newline), "service_accounts.other.api_key_file"),
        ("missing key file", with_key(&missing), "service_accounts.other.api_key_file"),
        ("key with an inner newline", with_key(&two_lines), "service_accounts.other.api_key_file"),
        (
            "both key sources",
            base().extra(&format!(
                "[service_accounts.other]\nheader = \"x-api-key\"\napi_key_file = {}\napi_key_env = \"K\"\n",
                crate::support::toml_str(&empty.to_string_lossy())
            )),
            "service_accounts.other",
        ),
        (
            "reserved credential header",
            base().extra(&format!(
                "[service_accounts.other]\nheader = \"host\"\napi_key_file = {}\n",
                crate::support::toml_str(&two_lines.to_string_lossy())
            )),
            "service_accounts.other.header",
        ),
        (
            "http JWKS on another host",
            base().set("jwt", "jwks_url", "\"http://idp.example.com/keys\""),
            "jwt.jwks_url",
        ),
        ("leeway over 5m", base().set("jwt", "leeway", "\"10m\""), "jwt.leeway"),
        ("HS256", base().set("jwt", "algorithms", "[\"HS256\"]"), "jwt.algorithms[0]"),
        ("no algorithms", base().set("jwt", "algorithms", "[]"), "jwt.algorithms"),
        ("alg none", base().set("jwt", "algorithms", "[\"none\"]"), "jwt.algorithms[0]"),
        ("empty issuer", base().set("jwt", "issuer", "\"\""), "jwt.issuer"),
        ("empty audience", base().set("jwt", "audience", "[\"\"]"), "jwt.audience[0]"),
        ("empty rule value", base().rule("e", "groups", "", "provisioner"), "rules[1].value"),
        ("unknown key", base().set("jwt", "verify_signature", "false"), "jwt.verify_signature"),
        (
            "upstream with credentials",
            base().set("upstream", "url", "\"http://u:p@127.0.0.1:9/scim\""),
            "upstream.url",
        ),
    ];
    for (name, cfg, path) in cases {
        let case_dir = TempDir::new("t42-case");
        let (path_file, sentinels) = cfg.write_to(&case_dir);
        let started = Instant::now();
        let (code, stdout, stderr) = serve_path(&path_file);
        assert_eq!(
            code,
            Some(1),
            "{name}: serve did not refuse\n{stdout}\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: slow refusal"
        );
        assert!(
            stderr.contains(path),
            "{name}: {path} not named in {stderr:?}"
        );
        for secret in sentinels
            .values()
            .map(String::as_str)
            .chain(["SECRET-PART-ONE", "SECRET-PART-TWO"])
        {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{name}: a secret was printed"
            );
        }
        assert!(
            !stdout.contains("listening"),
            "{name}: it started listening"
        );
    }
}

/// T42 Decisions: a world-readable key file is a start-up WARNING (not a refusal: Kubernetes
/// Secret volumes default to 0644); one trailing newline (LF or CRLF) is trimmed and the key is
/// sent exactly; `api_key_env` works; a plain-http upstream on another host is a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_key_file_permissions_and_trimming() {
    let (_jwks, upstream, cfg) = fixture().await;
    let dir = TempDir::new("t42-keys");
    let loose_key = format!("LOOSE-{}", crate::support::config::random_hex(12));
    let loose = dir.write("loose.key", format!("{loose_key}\r\n").as_bytes(), 0o644);
    let env_key = format!("ENVKEY-{}", crate::support::config::random_hex(12));
    let cfg = cfg
        .extra(&format!(
            "[service_accounts.loose]\nheader = \"x-api-key\"\napi_key_file = {}\n\n\
             [service_accounts.fromenv]\nheader = \"x-api-key\"\nscheme = \"Token\"\napi_key_env = \"SCIM_KEY_FROM_ENV\"\n",
            crate::support::toml_str(&loose.to_string_lossy())
        ))
        .rule("loose", "groups", "loose", "loose")
        .rule("fromenv", "groups", "fromenv", "fromenv")
        .env("SCIM_KEY_FROM_ENV", &env_key);
    let gw = Gateway::start(cfg).await;
    let warned = gw.logs().iter().any(|l| {
        l.contains("WARN") && l.contains("readable by other users") && l.contains("loose.key")
    });
    assert!(warned, "no start-up warning for a 0644 key file");
    for (group, want) in [
        ("loose", loose_key.clone()),
        ("fromenv", format!("Token {env_key}")),
    ] {
        let token = Token::new().claim("groups", json!([group])).sign(ec_key());
        let raw = crate::support::wire::raw_exchange(
            gw.proxy_addr,
            format!("GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await
        .expect("exchange");
        assert_eq!(raw.status, 200);
        let text = String::from_utf8_lossy(&raw.body.bytes).into_owned();
        assert!(!text.contains(&loose_key) && !text.contains(&env_key));
        let req = upstream.requests().pop().expect("forwarded");
        assert_eq!(req.header_all("x-api-key"), vec![want.as_str()], "{group}");
    }
    gw.assert_logs_free_of(&[&loose_key, &env_key]);

    // Plain http to a non-loopback upstream: allowed, with a warning (check never connects).
    let cfg = GatewayConfig::new(
        "http://scim.internal.example/scim/v2",
        "http://127.0.0.1:9/keys",
    );
    let check_dir = TempDir::new("t42-check");
    let (path, _) = cfg.write_to(&check_dir);
    let out = crate::support::run_check_file(&path, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("plain http"), "{}", out.stdout);
}

/// T42 decision: a key file readable by its *group* (0440/0640) starts without a warning: that is
/// how Kubernetes Secret volumes with `fsGroup` let a non-root container read its key. Only an
/// other-readable file warns (tested above).
#[test]
fn t42_group_readable_key_file_is_accepted_for_fsgroup_mounts() {
    let dir = TempDir::new("t42-group");
    let key = dir.write("group.key", b"GROUP-READABLE-KEY\n", 0o640);
    let cfg = GatewayConfig::new("http://127.0.0.1:9/scim/v2", "http://127.0.0.1:9/keys").extra(
        &format!(
            "[service_accounts.group]\nheader = \"x-api-key\"\napi_key_file = {}\n",
            crate::support::toml_str(&key.to_string_lossy())
        ),
    );
    let (path, _) = cfg.write_to(&dir);
    let out = crate::support::run_check_file(&path, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let warned = out
        .stdout
        .lines()
        .any(|l| l.starts_with("warning:") && l.contains("group.key"));
    assert!(
        !warned,
        "a group-readable key file must not warn:\n{}",
        out.stdout
    );
}

// === T43 ===

/// T43 Hot reload under load: flipping between two configs (different JWKS URL, issuer and
/// rule value) never yields an answer from a half-old, half-new config; a broken config keeps
/// the running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t43_config_hot_reload_races() {
    let (jwks_a, upstream, cfg) = fixture().await;
    let key_b = SigningKey::ec("tenant-b-key");
    let jwks_b = JwksServer::start(mint::jwks(&[&key_b])).await;
    let issuer_b = "https://idp-b.scimgate.test";
    let gw = Gateway::start(cfg.set("jwt", "refetch_cooldown", "\"1s\"")).await;
    let text_a = std::fs::read_to_string(&gw.config_path).expect("config");
    let text_b = text_a
        .replace(&jwks_a.url(), &jwks_b.url())
        .replace(ISSUER, issuer_b)
        .replace("value = \"scim-provisioners\"", "value = \"tenant-b\"");
    assert_ne!(text_a, text_b);
    let token_a = Token::new().sign(rsa_key());
    let token_b = Token::new()
        .claim("iss", json!(issuer_b))
        .claim("groups", json!(["tenant-b"]))
        .sign(&key_b);
    // Mixed generations: A's key with B's issuer and rule, B's key with A's issuer.
    let mixed = [
        Token::new()
            .claim("iss", json!(issuer_b))
            .claim("groups", json!(["tenant-b"]))
            .sign(rsa_key()),
        Token::new().sign(&key_b),
        Token::new()
            .claim("groups", json!(["tenant-b"]))
            .sign(rsa_key()),
    ];

    let addr = gw.proxy_addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (stop, done, token_a, token_b, mixed) = (
            stop.clone(),
            done.clone(),
            token_a.clone(),
            token_b.clone(),
            mixed.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 2000 {
                let (kind, token) = match i % 5 {
                    0 => ("a", token_a.clone()),
                    1 => ("b", token_b.clone()),
                    n => ("mixed", mixed[n - 2].clone()),
                };
                let auth = bearer(&token);
                let r = crate::support::send(
                    addr,
                    "GET",
                    "/Users",
                    &[("authorization", &auth)],
                    Bytes::new(),
                )
                .await
                .expect("request during reload");
                seen.push((kind, r.status));
                i += 1;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            seen
        })
    };
    let reloaded = |l: &str| l.contains("configuration reloaded");
    for round in 0..6 {
        let text = if round % 2 == 0 { &text_b } else { &text_a };
        let seen = gw.logs().iter().filter(|l| reloaded(l)).count();
        std::fs::write(&gw.config_path, text).expect("write config");
        let _ = Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status();
        gw.wait_for_logs(reloaded, seen + 1, Duration::from_secs(5))
            .await;
        // Let some traffic run on this generation (and across the swap) before the next one.
        let target = done.load(std::sync::atomic::Ordering::SeqCst) + 10;
        let deadline = Instant::now() + Duration::from_secs(5);
        while done.load(std::sync::atomic::Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the load stalled during reloads");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // A broken file: the reload fails and the last good config (A) keeps serving.
    std::fs::write(&gw.config_path, format!("{text_a}\n[[rules]]\nname = ")).expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status();
    gw.wait_for_logs(
        |l| l.contains("configuration reload failed"),
        1,
        Duration::from_secs(5),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = load.await.expect("load task");
    assert!(
        seen.len() >= 60,
        "only {} requests during the reloads",
        seen.len()
    );
    for (kind, status) in &seen {
        match *kind {
            "a" | "b" => assert!(
                matches!(*status, 200 | 401),
                "{kind} token got {status} during a reload"
            ),
            _ => assert_ne!(*status, 200, "a mixed-generation token was accepted"),
        }
    }
    assert!(seen.iter().any(|(k, s)| *k == "a" && *s == 200));
    assert!(seen.iter().any(|(k, s)| *k == "b" && *s == 200));
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    gw.get(
        "/Users",
        Some(
            &Token::new()
                .claim("iss", json!(issuer_b))
                .claim("groups", json!(["tenant-b"]))
                .sign(&key_b),
        ),
    )
    .await
    .assert_invalid_token();
    let forwarded = seen.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(upstream.hits(), forwarded + 1);
}

// === T44 ===

/// T44 Upstream failures: down → 502, slow → 504 within `upstream.timeout`, a reset after the
/// request head → 502 without a retry of the non-idempotent POST, an untrusted TLS certificate →
/// 502 with no request sent, a redirect is returned and never followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t44_upstream_failures_and_tls() {
    let jwks = JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let token = Token::new().sign(rsa_key());
    let body = "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"t\"}";
    let post = |gw: &Gateway| {
        let auth = bearer(&token);
        let gw_addr = gw.proxy_addr;
        async move {
            crate::support::send(
                gw_addr,
                "POST",
                "/Users",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/scim+json"),
                ],
                Bytes::from(body),
            )
            .await
            .expect("request")
        }
    };

    let gw = Gateway::start(GatewayConfig::new(&Upstream::down_url(), &jwks.url())).await;
    let started = Instant::now();
    let r = post(&gw).await;
    r.assert_scim_error(502);
    r.assert_free_of(&gw.sentinels());
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(gw);

    let upstream = Upstream::start().await;
    upstream.set_delay(Duration::from_secs(3));
    let gw = Gateway::start(
        GatewayConfig::new(&upstream.url(), &jwks.url()).set("upstream", "timeout", "\"1s\""),
    )
    .await;
    let started = Instant::now();
    post(&gw).await.assert_scim_error(504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 after {:?}",
        started.elapsed()
    );
    drop(gw);

    let resetter = Resetter::start().await;
    let gw = Gateway::start(GatewayConfig::new(&resetter.url(), &jwks.url())).await;
    post(&gw).await.assert_scim_error(502);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(resetter.requests(), 1, "the POST was retried");
    assert_eq!(resetter.connections(), 1);
    drop(gw);

    let tls = UntrustedTls::start("{}").await;
    let gw = Gateway::start(GatewayConfig::new(&tls.url("/scim/v2"), &jwks.url())).await;
    post(&gw).await.assert_scim_error(502);
    assert!(
        tls.connections() >= 1,
        "the gateway never tried the https upstream"
    );
    assert_eq!(
        tls.handshakes(),
        0,
        "TLS to an untrusted certificate completed"
    );
    assert_eq!(
        tls.requests(),
        0,
        "a request (with the key) was sent over untrusted TLS"
    );
    assert!(
        gw.logs().iter().all(|l| !l.contains(gw.sentinel())),
        "key in a log line"
    );
    drop(gw);

    let attacker = Attacker::start().await;
    let upstream = Upstream::start().await;
    upstream.set_behavior(Behavior {
        status: 307,
        headers: vec![("location".into(), attacker.url("/scim/v2/Users"))],
        body: Vec::new(),
        delay: Duration::ZERO,
    });
    let gw = Gateway::start(GatewayConfig::new(&upstream.url(), &jwks.url())).await;
    let r = post(&gw).await;
    assert_eq!(r.status, 307);
    assert_eq!(upstream.hits(), 1);
    attacker.assert_untouched();
}

// === T45 ===

/// T45 No error oracle: every 401 cause yields the same status, challenge, content type and
/// body; every 403 cause likewise; the reason is only in logs and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t45_uniform_error_responses() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.extra(
        "[[rules]]\nname = \"readers\"\nclaim = \"groups\"\nvalue = \"scim-readers\"\n\
         service_account = \"provisioner\"\nallow = [\"read\"]\n",
    );
    let gw = Gateway::start(cfg).await;
    let payload = Token::new().payload_json();
    let invalid: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jwt".into()),
        (
            "bad signature",
            mint::corrupt_signature(&Token::new().sign(rsa_key())),
        ),
        ("unknown kid", Token::new().sign(&SigningKey::ec("unknown"))),
        ("expired", Token::new().exp_in(-600).sign(rsa_key())),
        (
            "not yet valid",
            Token::new()
                .claim("nbf", json!(mint::now() + 600))
                .sign(rsa_key()),
        ),
        (
            "wrong audience",
            Token::new().claim("aud", json!("x")).sign(rsa_key()),
        ),
        (
            "wrong issuer",
            Token::new().claim("iss", json!("x")).sign(rsa_key()),
        ),
        ("lifetime", Token::new().exp_in(90 * 3600).sign(rsa_key())),
        ("alg none", mint::alg_none(&payload, "rsa-1")),
        (
            "disallowed alg",
            mint::hmac_raw("HS256", "{\"alg\":\"HS256\"}", &payload, b"k"),
        ),
        (
            "crit",
            Token::new().header("crit", json!(["x"])).sign(rsa_key()),
        ),
        (
            "too large",
            Token::new()
                .claim("pad", json!("p".repeat(9000)))
                .sign(rsa_key()),
        ),
        (
            "duplicate claim",
            mint::sign_raw(
                &json!({"alg":"RS256","kid":"rsa-1"}).to_string(),
                &format!("{},\"exp\":1}}", &payload[..payload.len() - 1]),
                rsa_key(),
            ),
        ),
    ];
    let strip = |r: &crate::support::Response| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "x-request-id" | "date"))
            .cloned()
            .collect();
        h.sort();
        (r.status, h, r.body.clone())
    };
    let mut reference = None;
    for (name, token) in &invalid {
        let r = gw.get("/Users", Some(token)).await;
        r.assert_invalid_token();
        let shape = strip(&r);
        match &reference {
            None => reference = Some((name, shape)),
            Some((first, want)) => assert_eq!(&shape, want, "{name} differs from {first}"),
        }
    }
    let forbidden = [
        (
            "no rule",
            Token::new()
                .claim("groups", json!(["nobody"]))
                .sign(rsa_key()),
            "GET",
        ),
        (
            "operation denied",
            Token::new()
                .claim("groups", json!(["scim-readers"]))
                .sign(rsa_key()),
            "DELETE",
        ),
        ("/Me", Token::new().sign(rsa_key()), "GET"),
    ];
    let mut reference = None;
    for (name, token, method) in &forbidden {
        let path = if *name == "/Me" { "/Me" } else { "/Users/1" };
        let auth = bearer(token);
        let r = gw
            .request(method, path, &[("authorization", &auth)], "")
            .await;
        r.assert_insufficient_scope();
        let shape = strip(&r);
        match &reference {
            None => reference = Some((name, shape)),
            Some((first, want)) => assert_eq!(&shape, want, "{name} differs from {first}"),
        }
    }
    assert_eq!(upstream.hits(), 0);
    // The reasons are observable to operators only.
    let metrics = gw.admin_get("/metrics").await.expect("metrics").text();
    for reason in [
        "bad_signature",
        "unknown_key",
        "expired",
        "wrong_audience",
        "no_rule",
        "op_denied",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "metrics lack {reason}"
        );
    }
}
