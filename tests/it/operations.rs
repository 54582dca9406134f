//! Operating the gateway (issue 4): exact metric values, the audit line, hot reload (config,
//! invalid config, key-file rotation, SIGHUP), `scimgate explain`, OIDC / RFC 8414 discovery and
//! JWKS revalidation with `ETag` / `Cache-Control`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::config::{new_sentinel, random_hex};
use crate::support::gateway::binary;
use crate::support::mint::{self, ISSUER};
use crate::support::observe::{metric, replace_file, scrape, sighup, wait_access_lines};
use crate::support::{Gateway, GatewayConfig, TempDir, Token, ec_key, fixture, rsa_key, toml_str};

// === helpers ===

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no exposition line {line:?} in:\n{text}"
    );
}

/// Polls `/metrics` (bounded) until `series` is at least `want`; returns the scrape.
async fn wait_metric(gw: &Gateway, series: &str, want: f64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(gw).await;
        if metric(&text, series).is_some_and(|v| v >= want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {want} within {timeout:?}; metrics:\n{text}\nlogs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The config text with one more `[[rules]]` block, placed after the existing rules.
fn with_rule(config: &str, name: &str, claim: &str, value: &str, account: &str) -> String {
    let block = format!(
        "[[rules]]\nname = {}\nclaim = {}\nvalue = {}\nservice_account = {}\n\n",
        toml_str(name),
        toml_str(claim),
        toml_str(value),
        toml_str(account)
    );
    let at = config
        .find("[service_accounts.")
        .expect("the config has a service account table");
    format!("{}{block}{}", &config[..at], &config[at..])
}

/// Lowercase hex of the first `n` bytes of SHA-256(`text`).
fn sha256_prefix(text: &str, n: usize) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    d.as_ref()[..n].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a finished subprocess produced.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (bounded) with an empty environment plus PATH and `envs`,
/// feeding `stdin` when given. Runs on a blocking thread so the test's servers keep serving.
async fn run_binary(
    args: Vec<String>,
    envs: Vec<(String, String)>,
    stdin: Option<String>,
) -> Output {
    tokio::task::spawn_blocking(move || run_binary_blocking(&args, &envs, stdin.as_deref()))
        .await
        .expect("subprocess thread")
}

fn run_binary_blocking(args: &[String], envs: &[(String, String)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn scimgate");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("write stdin");
    }
    let read_all = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scimgate {args:?} did not finish within 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

// === a private HTTP server (discovery documents, JWKS with ETag) ===

/// One request as the private server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Status, headers, body.
type Reply = (u16, Vec<(String, String)>, Vec<u8>);
type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server answering through a handler and recording every request.
#[derive(Clone)]
struct MiniServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MiniServer {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind private server");
        let addr = listener.local_addr().expect("private server address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(mini_connection(
                    stream,
                    Arc::clone(&handler),
                    Arc::clone(&log),
                ));
            }
        });
        Self { addr, seen }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

async fn mini_connection(
    stream: tokio::net::TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut start = String::new();
        match reader.read_line(&mut start).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let start = start.trim_end().to_owned();
        if start.is_empty() {
            continue;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut sink = Vec::new();
        if (&mut reader)
            .take(length)
            .read_to_end(&mut sink)
            .await
            .is_err()
        {
            return;
        }
        let mut parts = start.split(' ');
        let seen = Seen {
            method: parts.next().unwrap_or("").to_owned(),
            path: parts.next().unwrap_or("").to_owned(),
            headers,
        };
        let (status, reply_headers, body) = handler(&seen);
        log.lock().expect("seen lock").push(seen);
        let mut out = format!("HTTP/1.1 {status} Status\r\n");
        for (n, v) in &reply_headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        let body = if status == 304 { Vec::new() } else { body };
        if status != 304 {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

fn json_reply(body: String) -> Reply {
    (
        200,
        vec![("content-type".to_owned(), "application/json".to_owned())],
        body.into_bytes(),
    )
}

fn not_found() -> Reply {
    (404, Vec::new(), b"not found".to_vec())
}

// === 1. metrics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_sequence_exactly() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;

    let valid = Token::new().sign(rsa_key());
    for i in 0..2 {
        let r = gw.get("/Users", Some(&valid)).await;
        assert_eq!(r.status, 200, "valid request #{i}: {}", r.text());
    }
    gw.get("/Users", None).await.assert_scim_error(401);
    let bad_signature = mint::corrupt_signature(&Token::new().sign(ec_key()));
    gw.get("/Users", Some(&bad_signature))
        .await
        .assert_invalid_token();
    let wrong_claim = Token::new()
        .claim("groups", json!(["not-a-provisioner"]))
        .sign(ec_key());
    gw.get("/Users", Some(&wrong_claim))
        .await
        .assert_insufficient_scope();
    assert_eq!(upstream.hits(), 2);

    let r = gw.admin_get("/metrics").await.expect("GET /metrics");
    let content_type = r.header("content-type").unwrap_or("").to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "metrics content-type {content_type:?}"
    );
    let text = r.text();

    for line in [
        r#"scimgate_requests_total{outcome="forwarded"} 2"#,
        r#"scimgate_requests_total{outcome="missing_token"} 1"#,
        r#"scimgate_requests_total{outcome="invalid_token"} 1"#,
        r#"scimgate_requests_total{outcome="forbidden"} 1"#,
        r#"scimgate_requests_total{outcome="bad_request"} 0"#,
        r#"scimgate_auth_decisions_total{decision="allow",reason="ok"} 2"#,
        r#"scimgate_auth_decisions_total{decision="deny",reason="missing_token"} 1"#,
        r#"scimgate_auth_decisions_total{decision="deny",reason="bad_signature"} 1"#,
        r#"scimgate_auth_decisions_total{decision="deny",reason="no_rule"} 1"#,
        r#"scimgate_rule_matches_total{rule="provisioners",tenant="default"} 2"#,
        r#"scimgate_request_duration_seconds_count{outcome="forwarded"} 2"#,
        r#"scimgate_request_duration_seconds_bucket{outcome="forwarded",le="+Inf"} 2"#,
        r#"scimgate_request_duration_seconds_count{outcome="forbidden"} 1"#,
        "scimgate_upstream_duration_seconds_count 2",
        r#"scimgate_jwks_keys{tenant="default"} 2"#,
        // The same valid token twice: one miss, one hit. The bad signature and the wrong claim
        // are misses too; the request without a token never reaches the cache.
        "scimgate_token_cache_hits_total 1",
        "scimgate_token_cache_misses_total 3",
        &format!(
            "scimgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "# TYPE scimgate_requests_total counter",
        "# TYPE scimgate_request_duration_seconds histogram",
        "# TYPE scimgate_upstream_duration_seconds histogram",
        "# TYPE scimgate_auth_decisions_total counter",
        "# TYPE scimgate_rule_matches_total counter",
        "# TYPE scimgate_jwks_fetches_total counter",
        "# TYPE scimgate_jwks_keys gauge",
        "# TYPE scimgate_jwks_last_success_timestamp_seconds gauge",
        "# TYPE scimgate_token_cache_hits_total counter",
        "# TYPE scimgate_token_cache_misses_total counter",
        "# TYPE scimgate_config_last_reload_success_timestamp_seconds gauge",
        "# TYPE scimgate_build_info gauge",
        "# HELP scimgate_requests_total Requests by outcome.",
    ] {
        assert_line(&text, line);
    }
    let ok_fetches = metric(
        &text,
        r#"scimgate_jwks_fetches_total{result="ok",tenant="default"}"#,
    )
    .expect("jwks fetches ok series");
    assert!(ok_fetches >= 1.0, "jwks fetches ok = {ok_fetches}");
    let last_jwks = metric(
        &text,
        r#"scimgate_jwks_last_success_timestamp_seconds{tenant="default"}"#,
    )
    .unwrap_or(0.0);
    let last_load = metric(
        &text,
        "scimgate_config_last_reload_success_timestamp_seconds",
    )
    .unwrap_or(0.0);
    let now = mint::now() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_jwks),
        "jwks last success {last_jwks}, now {now}"
    );
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_load),
        "startup counts as a load: {last_load}, now {now}"
    );

    // Totals: every request counted once by outcome and once by decision.
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("scimgate_requests_total{"), 5.0, "{text}");
    assert_eq!(sum("scimgate_auth_decisions_total{"), 5.0, "{text}");
    // Every sample line is `name{labels} value` or `name value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        assert!(
            series.starts_with("scimgate_"),
            "foreign series in {line:?}"
        );
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad value in {line:?}"
        );
    }
    // Labels never carry paths, tokens or keys.
    assert!(!text.contains("/Users"), "a path in a label:\n{text}");
    assert!(!text.contains(mint::signature_segment(&valid)));
    assert!(!text.contains(gw.sentinel()));
    // Both reload results are exported from startup, at 0 until a reload.
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="success"} 0"#,
    );
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="failure"} 0"#,
    );

    // A reload (SIGHUP, no change) is counted, and empties the token cache.
    sighup(&gw);
    let text = wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="success"} 1"#,
    );
    assert_line(&text, "# TYPE scimgate_config_reloads_total counter");
    assert!(
        !text.contains(r#"scimgate_config_reloads_total{result="failure"} 1"#),
        "{text}"
    );
    assert_eq!(gw.get("/Users", Some(&valid)).await.status, 200);
    let text = scrape(&gw).await;
    assert_line(&text, "scimgate_token_cache_hits_total 1");
    assert_line(&text, "scimgate_token_cache_misses_total 4");
    assert_line(&text, r#"scimgate_requests_total{outcome="forwarded"} 3"#);
}

// === 2. audit log ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_line_has_every_field_and_no_secret() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;

    let marker = format!("secret-{}", random_hex(6));
    let path = format!("/Users?filter=userName%20eq%20%22{marker}%40x%22&count=10");
    let sub = "user-1\r\nFAKE {\"level\":\"ERROR\",\"message\":\"request\"}";
    let token = Token::new()
        .claim("sub", json!(sub))
        .claim("azp", json!("okta-client-azp"))
        .claim("jti", json!("jti-1234"))
        .sign(ec_key());
    let request_id = format!("req-{}", random_hex(8));
    let auth = bearer(&token);
    let r = gw
        .request(
            "GET",
            &path,
            &[("authorization", &auth), ("x-request-id", &request_id)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header_all("x-request-id"), vec![request_id.as_str()]);
    let seen = upstream.only_request();
    assert_eq!(seen.header_one("x-request-id"), request_id);

    let lines = wait_access_lines(&gw, 1).await;
    assert_eq!(lines.len(), 1, "one access line per request: {lines:?}");
    let line = &lines[0];
    let expect_str = |field: &str, want: &str| {
        assert_eq!(line[field], json!(want), "field {field} in {line}");
    };
    expect_str("request_id", &request_id);
    expect_str("method", "GET");
    expect_str("path", "/Users");
    expect_str("query_keys", "filter,count");
    expect_str("scim_operation", "read");
    expect_str("resource_type", "Users");
    expect_str("outcome", "forwarded");
    expect_str("reason", "");
    expect_str("iss", ISSUER);
    expect_str("sub", sub);
    expect_str("client_id", "okta-client-azp");
    expect_str("jti", "jti-1234");
    expect_str("token_sha256", &sha256_prefix(&token, 6));
    expect_str("rule", "provisioners");
    expect_str("service_account", "provisioner");
    expect_str("level", "INFO");
    assert_eq!(line["status"], json!(200), "{line}");
    assert!(line["latency_ms"].is_number(), "latency_ms in {line}");
    assert!(
        line["latency_ms"].as_f64().unwrap_or(-1.0) >= 0.0,
        "latency_ms in {line}"
    );
    let sha = line["token_sha256"].as_str().unwrap_or("");
    assert!(
        sha.len() == 12 && sha.chars().all(|c| c.is_ascii_hexdigit()),
        "token_sha256 {sha:?}"
    );

    // A client_id claim is used when there is no azp; a request without a token and one with a
    // wrong claim log their outcome and reason, and a generated request id matches upstream's.
    let token2 = Token::new()
        .claim("client_id", json!("client-id-claim"))
        .sign(rsa_key());
    let r2 = gw.get("/Groups", Some(&token2)).await;
    assert_eq!(r2.status, 200);
    let generated = r2.header("x-request-id").expect("x-request-id").to_owned();
    assert!(!generated.is_empty());
    let up2 = upstream.requests().pop().expect("second upstream request");
    assert_eq!(up2.header_one("x-request-id"), generated);
    gw.get("/Users", None).await.assert_scim_error(401);
    let denied = Token::new()
        .claim("groups", json!(["other"]))
        .sign(rsa_key());
    gw.request(
        "DELETE",
        "/Users/42",
        &[("authorization", &bearer(&denied))],
        Bytes::new(),
    )
    .await
    .assert_insufficient_scope();

    let lines = wait_access_lines(&gw, 4).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[1]["client_id"], json!("client-id-claim"));
    assert_eq!(lines[1]["request_id"], json!(generated));
    assert_eq!(lines[1]["resource_type"], json!("Groups"));
    assert_eq!(lines[1]["query_keys"], json!(""));
    assert_eq!(lines[2]["status"], json!(401));
    assert_eq!(lines[2]["outcome"], json!("missing_token"));
    assert_eq!(lines[2]["reason"], json!("missing_token"));
    assert_eq!(lines[2]["token_sha256"], json!(""));
    assert_eq!(lines[2]["sub"], json!(""));
    assert_eq!(lines[3]["status"], json!(403));
    assert_eq!(lines[3]["outcome"], json!("forbidden"));
    assert_eq!(lines[3]["reason"], json!("no_rule"));
    assert_eq!(lines[3]["method"], json!("DELETE"));
    assert_eq!(lines[3]["scim_operation"], json!("delete"));
    assert_eq!(lines[3]["rule"], json!(""));
    assert_eq!(lines[3]["token_sha256"], json!(sha256_prefix(&denied, 6)));

    // Nothing secret anywhere: query values, tokens, signatures, keys.
    let mut secrets: Vec<String> = vec![marker.clone()];
    for t in [&token, &token2, &denied] {
        secrets.push(t.clone());
        secrets.push(mint::signature_segment(t).to_owned());
        // The payload segment carries the claims in base64: not secret, but the token text is.
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    gw.assert_logs_free_of(&refs);

    // Log injection: the CR LF in `sub` is escaped inside one JSON line.
    for raw in gw.logs() {
        assert!(
            !raw.starts_with("FAKE"),
            "a claim broke out of its log line: {raw:?}"
        );
        if raw.contains("FAKE") {
            let v: Value = serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("line with the claim is not JSON ({e}): {raw:?}"));
            assert_eq!(v["sub"], json!(sub));
            assert!(raw.contains("\\r\\n"), "CR LF escaped: {raw}");
        }
        assert!(!raw.contains('\r'), "raw CR in a log line: {raw:?}");
    }
}

// === 3. hot reload ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_adds_a_rule_without_failing_requests() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let old = Token::new().sign(ec_key());
    let newcomer = Token::new()
        .claim("groups", json!(["scim-latecomers"]))
        .sign(rsa_key());
    gw.get("/Users", Some(&newcomer))
        .await
        .assert_insufficient_scope();

    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.proxy_addr;
    let auth = bearer(&old);
    let flag = Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !flag.load(Ordering::SeqCst) && statuses.len() < 400 {
            let r = crate::support::send(
                addr,
                "GET",
                "/Users",
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
            statuses.push(r.map_or_else(|e| format!("error: {e}"), |r| r.status.to_string()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let updated = with_rule(
        &text,
        "latecomers",
        "groups",
        "scim-latecomers",
        "provisioner",
    );
    replace_file(&gw.config_path, updated.as_bytes(), 0o644);
    let written = Instant::now();
    loop {
        let r = gw.get("/Users", Some(&newcomer)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 403, "before the reload: {}", r.text());
        assert!(
            written.elapsed() < Duration::from_secs(6),
            "the new rule was not picked up within 6s; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let statuses = load.await.expect("load task");
    assert!(
        statuses.len() >= 20,
        "the load loop ran only {} requests",
        statuses.len()
    );
    let failed: Vec<&String> = statuses.iter().filter(|s| *s != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests during the reload failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    let metrics = scrape(&gw).await;
    assert_line(
        &metrics,
        r#"scimgate_config_reloads_total{result="success"} 1"#,
    );
    assert_line(
        &metrics,
        r#"scimgate_rule_matches_total{rule="latecomers",tenant="default"} 1"#,
    );
    gw.wait_for_logs(
        |l| l.contains("configuration reloaded"),
        1,
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_keeps_the_running_one() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);

    let good = std::fs::read_to_string(&gw.config_path).expect("read config");
    assert!(good.contains("[jwt]\n"), "{good}");
    let loaded_at = metric(
        &scrape(&gw).await,
        "scimgate_config_last_reload_success_timestamp_seconds",
    );
    let broken = good.replacen("[jwt]\n", "[jwt]\nleeway = \"10m\"\n", 1);
    replace_file(&gw.config_path, broken.as_bytes(), 0o644);
    let text = wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="failure"}"#,
        1.0,
        Duration::from_secs(6),
    )
    .await;
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="failure"} 1"#,
    );
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="success"} 0"#,
    );
    assert_eq!(
        metric(
            &text,
            "scimgate_config_last_reload_success_timestamp_seconds"
        ),
        loaded_at,
        "a failed reload is not a successful load"
    );
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 200, "the old config keeps serving: {}", r.text());
    let errors = gw
        .wait_for_logs(
            |l| l.contains("\"level\":\"ERROR\"") && l.contains("reload failed"),
            1,
            Duration::from_secs(2),
        )
        .await;
    assert!(
        errors.iter().any(|l| l.contains("jwt.leeway")),
        "the error names the problem: {errors:?}"
    );

    // The same broken bytes are reported once, not on every 2 s poll.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let text = scrape(&gw).await;
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="failure"} 1"#,
    );

    // Fixing the file (plus SIGHUP for speed) reloads successfully.
    replace_file(&gw.config_path, good.as_bytes(), 0o644);
    sighup(&gw);
    let text = wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
        Duration::from_secs(4),
    )
    .await;
    assert_line(
        &text,
        r#"scimgate_config_reloads_total{result="failure"} 1"#,
    );
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_file_is_used_after_poll_and_after_sighup() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    let first = upstream.requests().pop().expect("upstream request");
    assert_eq!(
        first.header_one("authorization"),
        format!("Bearer {}", gw.sentinel())
    );

    let key_path = gw.dir().join("provisioner.key");
    assert!(key_path.is_file(), "{}", key_path.display());
    let rotated = new_sentinel();
    replace_file(&key_path, format!("{rotated}\n").as_bytes(), 0o600);
    let started = Instant::now();
    loop {
        let r = gw.get("/Users", Some(&token)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let last = upstream.requests().pop().expect("upstream request");
        if last.header_one("authorization") == format!("Bearer {rotated}") {
            break;
        }
        assert_eq!(
            last.header_one("authorization"),
            format!("Bearer {}", gw.sentinel()),
            "before the reload the old key is used"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the rotated key was not used within 6s; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGHUP also triggers it (no need to wait for the poll).
    let again = new_sentinel();
    replace_file(&key_path, format!("{again}\n").as_bytes(), 0o600);
    sighup(&gw);
    gw.wait_for_logs(
        |l| l.contains("reloading configuration") && l.contains("SIGHUP"),
        1,
        Duration::from_secs(2),
    )
    .await;
    let started = Instant::now();
    loop {
        assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
        let last = upstream.requests().pop().expect("upstream request");
        if last.header_one("authorization") == format!("Bearer {again}") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the key rotated with SIGHUP was not used within 2s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.assert_logs_free_of(&[&rotated, &again]);
}

// === 4. explain ===

/// A config file for the default fixture, its path and the provisioner's sentinel.
fn explain_config(cfg: &GatewayConfig, dir: &TempDir) -> (String, String) {
    let (path, sentinels) = cfg.write_to(dir);
    (
        path.to_string_lossy().into_owned(),
        sentinels["provisioner"].clone(),
    )
}

fn assert_no_secrets(out: &Output, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "explain printed a secret {s:?}:\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_allows_denies_and_never_prints_the_token_or_key() {
    let (jwks, _upstream, cfg) = fixture().await;
    let dir = TempDir::new("explain");
    let (path, sentinel) = explain_config(&cfg, &dir);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["explain".to_owned(), "--config".to_owned(), path.clone()];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };

    let token = Token::new().sign(ec_key());
    let sig = mint::signature_segment(&token).to_owned();
    let allowed = run_binary(args(&[&token]), Vec::new(), None).await;
    assert_eq!(
        allowed.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        allowed.stdout,
        allowed.stderr
    );
    let decision = allowed
        .stdout
        .lines()
        .find(|l| l.starts_with("DECISION"))
        .unwrap_or_else(|| panic!("no DECISION line:\n{}", allowed.stdout));
    assert!(decision.starts_with("DECISION  allow"), "{decision}");
    assert!(decision.contains("\"provisioner\""), "{decision}");
    assert!(
        allowed.stdout.contains(&sha256_prefix(&token, 6)),
        "the token's digest prefix is shown:\n{}",
        allowed.stdout
    );
    assert!(
        allowed
            .stdout
            .lines()
            .any(|l| l.starts_with("rule provisioners") && l.contains("match")),
        "{}",
        allowed.stdout
    );
    assert_no_secrets(&allowed, &[&token, &sig, &sentinel]);
    assert!(jwks.hits() >= 1, "explain fetched the JWKS");

    // The token from stdin ("-").
    let stdin = run_binary(args(&["-"]), Vec::new(), Some(format!("{token}\n"))).await;
    assert_eq!(stdin.code, Some(0), "{}{}", stdin.stdout, stdin.stderr);
    assert!(stdin.stdout.contains("DECISION  allow"), "{}", stdin.stdout);
    assert_no_secrets(&stdin, &[&token, &sig, &sentinel]);

    // --json.
    let as_json = run_binary(args(&["--json", &token]), Vec::new(), None).await;
    assert_eq!(
        as_json.code,
        Some(0),
        "{}{}",
        as_json.stdout,
        as_json.stderr
    );
    let v: Value = serde_json::from_str(&as_json.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", as_json.stdout));
    assert_eq!(v["allowed"], json!(true), "{v}");
    assert_eq!(v["service_account"], json!("provisioner"), "{v}");
    assert_eq!(v["token_sha256"], json!(sha256_prefix(&token, 6)), "{v}");
    assert!(v["steps"].as_array().is_some_and(|s| !s.is_empty()), "{v}");
    assert_no_secrets(&as_json, &[&token, &sig, &sentinel]);

    // Denied: no rule matches.
    let wrong = Token::new()
        .claim("groups", json!(["somebody-else"]))
        .sign(rsa_key());
    let denied = run_binary(args(&[&wrong]), Vec::new(), None).await;
    assert_eq!(
        denied.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        denied.stdout,
        denied.stderr
    );
    assert!(
        denied.stdout.lines().any(|l| l == "DECISION  deny"),
        "{}",
        denied.stdout
    );
    assert!(
        denied
            .stdout
            .lines()
            .any(|l| l.starts_with("decision") && l.contains("FAIL")),
        "a FAIL row names the failed check:\n{}",
        denied.stdout
    );
    assert_no_secrets(
        &denied,
        &[&wrong, mint::signature_segment(&wrong), &sentinel],
    );

    // Denied: expired.
    let expired = Token::new().exp_in(-600).sign(ec_key());
    let out = run_binary(args(&[&expired]), Vec::new(), None).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let fail = out
        .stdout
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL row:\n{}", out.stdout));
    assert!(
        fail.starts_with("signature and claims") && fail.contains("expired"),
        "{fail}"
    );
    assert!(out.stdout.lines().any(|l| l == "DECISION  deny"));
    let json_denied = run_binary(args(&["--json", &expired]), Vec::new(), None).await;
    assert_eq!(json_denied.code, Some(1));
    let v: Value = serde_json::from_str(&json_denied.stdout).expect("--json output");
    assert_eq!(v["allowed"], json!(false));
    assert_no_secrets(
        &out,
        &[&expired, mint::signature_segment(&expired), &sentinel],
    );
}

/// explain judges the request it is told about (default `GET /Users`, as before) and says which:
/// a token whose only rule allows creating users is denied for the default read and allowed for
/// `--method POST --path /Users`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_judges_the_method_and_path_it_is_given() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let dir = TempDir::new("explain-request");
    let (path, sentinel) = explain_config(&cfg, &dir);
    let text = std::fs::read_to_string(&path).expect("config");
    let create_only = text.replacen(
        "service_account = \"provisioner\"\n",
        "service_account = \"provisioner\"\nallow = [\"create\"]\nresource_types = [\"Users\"]\n",
        1,
    );
    assert_ne!(create_only, text);
    std::fs::write(&path, create_only).expect("write config");
    let token = Token::new().sign(ec_key());
    let run = |extra: &[&str]| {
        let mut args = vec!["explain".to_owned(), "--config".to_owned(), path.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(token.clone());
        run_binary(args, Vec::new(), None)
    };
    let request_line = |out: &Output| -> String {
        out.stdout
            .lines()
            .find(|l| l.starts_with("request"))
            .unwrap_or_else(|| panic!("no request line:\n{}{}", out.stdout, out.stderr))
            .to_owned()
    };

    let default = run(&[]).await;
    assert_eq!(
        default.code,
        Some(1),
        "{}{}",
        default.stdout,
        default.stderr
    );
    let line = request_line(&default);
    assert!(
        line.contains("GET /Users") && line.contains("read Users"),
        "{line}"
    );
    assert!(
        default
            .stdout
            .lines()
            .any(|l| l.starts_with("decision") && l.contains("FAIL")),
        "{}",
        default.stdout
    );

    let create = run(&["--method", "POST", "--path", "/Users"]).await;
    assert_eq!(create.code, Some(0), "{}{}", create.stdout, create.stderr);
    let line = request_line(&create);
    assert!(
        line.contains("POST /Users") && line.contains("create Users"),
        "{line}"
    );
    assert!(
        create.stdout.contains("DECISION  allow"),
        "{}",
        create.stdout
    );
    assert_no_secrets(&create, &[&token, &sentinel]);

    let json = run(&["--json", "--method", "post", "--path", "/Users"]).await;
    assert_eq!(json.code, Some(0), "{}{}", json.stdout, json.stderr);
    let v: Value = serde_json::from_str(&json.stdout).expect("--json output");
    assert_eq!(v["request"]["method"], json!("POST"), "{v}");
    assert_eq!(v["request"]["path"], json!("/Users"), "{v}");
    assert_eq!(v["request"]["operation"], json!("create"), "{v}");
    assert_eq!(v["request"]["tenant"], json!("default"), "{v}");

    // Other operations stay denied: the create-only rule is not a blanket allow.
    for (method, target) in [
        ("DELETE", "/Users/42"),
        ("POST", "/Groups"),
        ("PUT", "/Users/42"),
    ] {
        let out = run(&["--method", method, "--path", target]).await;
        assert_eq!(
            out.code,
            Some(1),
            "{method} {target}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(request_line(&out).contains(&format!("{method} {target}")));
    }
    // A path scimgate refuses before authorization, or a method it never forwards, is no
    // question explain can answer: exit 2, like an unusable config.
    for extra in [
        &["--path", "Users"][..],
        &["--path", "/Users/../Groups"][..],
        &["--method", "TRACE"][..],
        &["--method", "NOT A METHOD"][..],
    ] {
        let out = run(extra).await;
        assert_eq!(out.code, Some(2), "{extra:?}: {}{}", out.stdout, out.stderr);
    }
}

// === 5. OIDC discovery ===

/// A discovery server at `http://127.0.0.1:<port>`: the OIDC document (when `oidc`), else only
/// the RFC 8414 one; `doc_issuer` overrides the issuer the document names.
async fn discovery_server(oidc: bool, doc_issuer: Option<&str>) -> MiniServer {
    let keys = mint::jwks(&[rsa_key(), ec_key()]);
    let base: Arc<Mutex<String>> = Arc::default();
    let override_issuer = doc_issuer.map(str::to_owned);
    let b = Arc::clone(&base);
    let server = MiniServer::start(move |req| {
        let base = b.lock().expect("base lock").clone();
        let issuer = override_issuer.clone().unwrap_or_else(|| base.clone());
        let doc = json!({
            "issuer": issuer,
            "jwks_uri": format!("{base}/jwks"),
            "response_types_supported": ["code"],
        })
        .to_string();
        match req.path.as_str() {
            "/.well-known/openid-configuration" if oidc => json_reply(doc),
            "/.well-known/oauth-authorization-server" if !oidc => json_reply(doc),
            "/jwks" => json_reply(keys.clone()),
            _ => not_found(),
        }
    })
    .await;
    *base.lock().expect("base lock") = server.base();
    server
}

fn discovery_config(upstream_url: &str, issuer: &str) -> GatewayConfig {
    GatewayConfig::new(upstream_url, "https://unused.invalid/keys")
        .unset("jwt", "jwks_url")
        .set("jwt", "issuer", &toml_str(issuer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_finds_the_jwks() {
    let upstream = crate::support::Upstream::start().await;
    let idp = discovery_server(true, None).await;
    let issuer = idp.base();
    let gw = Gateway::start(discovery_config(&upstream.url(), &issuer)).await;
    let token = Token::new().claim("iss", json!(issuer)).sign(ec_key());
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paths = idp.paths();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/.well-known/openid-configuration"),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/jwks"), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p == "/.well-known/oauth-authorization-server"),
        "no fallback needed: {paths:?}"
    );
    // The default issuer's tokens are refused (iss is checked against the configured one).
    gw.get(
        "/Users",
        Some(&Token::new().claim("iss", json!(ISSUER)).sign(ec_key())),
    )
    .await
    .assert_invalid_token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8414_document_is_the_fallback() {
    let upstream = crate::support::Upstream::start().await;
    let idp = discovery_server(false, None).await;
    let issuer = idp.base();
    let gw = Gateway::start(discovery_config(&upstream.url(), &issuer)).await;
    let token = Token::new().claim("iss", json!(issuer)).sign(rsa_key());
    let r = gw.get("/Users", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paths = idp.paths();
    let oidc = paths
        .iter()
        .position(|p| p == "/.well-known/openid-configuration");
    let oauth = paths
        .iter()
        .position(|p| p == "/.well-known/oauth-authorization-server");
    assert!(
        oidc.is_some() && oauth.is_some() && oidc < oauth,
        "OIDC first, then RFC 8414: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_document_naming_another_issuer_stops_startup() {
    let upstream = crate::support::Upstream::start().await;
    let idp = discovery_server(true, Some("https://evil.example")).await;
    let issuer = idp.base();
    let dir = TempDir::new("discovery-mismatch");
    let (path, sentinels) = discovery_config(&upstream.url(), &issuer).write_to(&dir);
    let out = run_binary(
        vec![
            "serve".into(),
            "--config".into(),
            path.to_string_lossy().into_owned(),
        ],
        Vec::new(),
        None,
    )
    .await;
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains(&issuer),
        "the message names the configured issuer:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("evil.example"),
        "the message names the document's issuer:\n{}",
        out.stderr
    );
    assert!(!out.stdout.contains("\"listening\""), "{}", out.stdout);
    assert!(
        !idp.paths().iter().any(|p| p == "/jwks"),
        "keys of a mismatched document are never fetched"
    );
    assert!(!out.stdout.contains(&sentinels["provisioner"]));
    assert!(!out.stderr.contains(&sentinels["provisioner"]));
    assert_eq!(upstream.hits(), 0);
}

// === 6. JWKS revalidation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_revalidated_with_if_none_match_and_304_keeps_keys() {
    let keys = mint::jwks(&[rsa_key(), ec_key()]);
    let etag = format!("\"v1-{}\"", random_hex(4));
    let tag = etag.clone();
    let idp = MiniServer::start(move |req| {
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("etag".to_owned(), tag.clone()),
            ("cache-control".to_owned(), "public, max-age=1".to_owned()),
        ];
        if req.path != "/jwks" {
            return not_found();
        }
        if req.header("if-none-match") == Some(tag.as_str()) {
            (304, headers, Vec::new())
        } else {
            (200, headers, keys.clone().into_bytes())
        }
    })
    .await;
    let upstream = crate::support::Upstream::start().await;
    let cfg = GatewayConfig::new(&upstream.url(), &format!("{}/jwks", idp.base()))
        .set("jwt", "min_refresh_interval", &toml_str("1s"))
        .set("jwt", "refresh_interval", &toml_str("5s"))
        .set("jwt", "refetch_cooldown", &toml_str("30s"));
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    assert!(
        idp.seen()[0].header("if-none-match").is_none(),
        "the first fetch is unconditional"
    );

    // max-age=1 (within [1s, 5s]) → the next fetch comes after ~1 s, revalidating.
    let started = Instant::now();
    loop {
        let revalidations = idp
            .seen()
            .iter()
            .filter(|s| s.header("if-none-match") == Some(etag.as_str()))
            .count();
        if revalidations >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "expected two If-None-Match revalidations within 5s; requests: {:?}",
            idp.seen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // max-age is clamped to [min_refresh_interval, refresh_interval]: about one fetch a second.
    let fetches = idp.seen().len() as f64;
    assert!(
        fetches <= started.elapsed().as_secs_f64() + 3.0,
        "{fetches} JWKS fetches in {:?}",
        started.elapsed()
    );
    assert!(
        idp.seen()
            .iter()
            .all(|s| s.method == "GET" && s.path == "/jwks"),
        "{:?}",
        idp.seen()
    );
    // After the 304s the keys still verify, and the cached token is still a hit (a 304 is not
    // a key change).
    let before = scrape(&gw).await;
    let hits_before = metric(&before, "scimgate_token_cache_hits_total").unwrap_or(0.0);
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    let fresh = Token::new().sign(rsa_key());
    assert_eq!(gw.get("/Users", Some(&fresh)).await.status, 200);
    let after = scrape(&gw).await;
    assert_eq!(
        metric(&after, "scimgate_token_cache_hits_total").unwrap_or(0.0),
        hits_before + 1.0,
        "{after}"
    );
    assert_line(&after, r#"scimgate_jwks_keys{tenant="default"} 2"#);
    let ok = metric(
        &after,
        r#"scimgate_jwks_fetches_total{result="ok",tenant="default"}"#,
    )
    .unwrap_or(0.0);
    assert!(ok >= 3.0, "200 + two 304s count as ok fetches: {after}");
    assert_eq!(gw.admin_get("/readyz").await.map(|r| r.status), Ok(200));
}

// === more documented behaviour around the same features ===

fn explain_args(path: &Path, token: &str) -> Vec<String> {
    vec![
        "explain".into(),
        "--config".into(),
        path.to_string_lossy().into_owned(),
        token.to_owned(),
    ]
}

/// README/contract: `explain` exits 2 "when the config or JWKS cannot be used": the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_exits_2_for_an_invalid_config() {
    let upstream = crate::support::Upstream::start().await;
    let dir = TempDir::new("explain-2");
    let token = Token::new().sign(ec_key());
    let (bad, _) = GatewayConfig::new(&upstream.url(), "http://127.0.0.1:9/keys")
        .set("jwt", "leeway", &toml_str("10m"))
        .write_to(&dir);
    let out = run_binary(explain_args(&bad, &token), Vec::new(), None).await;
    assert_eq!(
        out.code,
        Some(2),
        "invalid config: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("jwt.leeway"), "{}", out.stderr);
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
}

/// README/contract: `explain` exits 2 "when the config or JWKS cannot be used": the JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_exits_2_when_the_jwks_cannot_be_fetched() {
    let upstream = crate::support::Upstream::start().await;
    let token = Token::new().sign(ec_key());
    let down =
        crate::support::Upstream::down_url().replace(crate::support::upstream::BASE_PATH, "/keys");
    let dir = TempDir::new("explain-2-jwks");
    let (path, _) = GatewayConfig::new(&upstream.url(), &down).write_to(&dir);
    let out = run_binary(explain_args(&path, &token), Vec::new(), None).await;
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    assert_eq!(
        out.code,
        Some(2),
        "JWKS unreachable must exit 2 (README: \"2 when the config or JWKS cannot be used\"); \
         stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// README: "A new `jwks_url` must load before it replaces the old one, or the reload fails."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_an_unloadable_jwks_url_fails_and_keeps_the_old_keys() {
    let (jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);

    let down =
        crate::support::Upstream::down_url().replace(crate::support::upstream::BASE_PATH, "/keys");
    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let old = format!("jwks_url = {}", toml_str(&jwks.url()));
    assert!(text.contains(&old), "{text}");
    let updated = text.replacen(&old, &format!("jwks_url = {}", toml_str(&down)), 1);
    replace_file(&gw.config_path, updated.as_bytes(), 0o644);
    sighup(&gw);
    let metrics = wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="failure"}"#,
        1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_line(
        &metrics,
        r#"scimgate_config_reloads_total{result="success"} 0"#,
    );
    let fresh = Token::new().sign(rsa_key());
    assert_eq!(gw.get("/Users", Some(&fresh)).await.status, 200);
    assert_eq!(gw.admin_get("/readyz").await.map(|r| r.status), Ok(200));
}

/// RFC 8414 §3: for an issuer with a path, the well-known segment goes before the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8414_fallback_for_an_issuer_with_a_path() {
    let upstream = crate::support::Upstream::start().await;
    let keys = mint::jwks(&[rsa_key(), ec_key()]);
    let base: Arc<Mutex<String>> = Arc::default();
    let b = Arc::clone(&base);
    let idp = MiniServer::start(move |req| {
        let base = b.lock().expect("base lock").clone();
        match req.path.as_str() {
            "/.well-known/oauth-authorization-server/tenant/v2" => json_reply(
                json!({"issuer": format!("{base}/tenant/v2"), "jwks_uri": format!("{base}/tenant/v2/keys")})
                    .to_string(),
            ),
            "/tenant/v2/keys" => json_reply(keys.clone()),
            _ => not_found(),
        }
    })
    .await;
    *base.lock().expect("base lock") = idp.base();
    let issuer = format!("{}/tenant/v2", idp.base());
    let gw = Gateway::start(discovery_config(&upstream.url(), &issuer)).await;
    let token = Token::new().claim("iss", json!(issuer)).sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    let paths = idp.paths();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/tenant/v2/.well-known/openid-configuration"),
        "{paths:?}"
    );
}

/// README: `log.*`, `server.listen`, … are "logged as needing a restart" on reload; the rest of
/// the new config still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_changes_are_logged_on_reload() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let newcomer = Token::new()
        .claim("groups", json!(["scim-late"]))
        .sign(ec_key());
    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    assert!(text.contains("level = \"debug\""), "{text}");
    let updated = with_rule(
        &text.replacen("level = \"debug\"", "level = \"info\"", 1),
        "late",
        "groups",
        "scim-late",
        "provisioner",
    );
    replace_file(&gw.config_path, updated.as_bytes(), 0o644);
    sighup(&gw);
    wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let warnings = gw
        .wait_for_logs(
            |l| l.contains("\"level\":\"WARN\"") && l.contains("restart"),
            1,
            Duration::from_secs(2),
        )
        .await;
    assert!(
        warnings.iter().any(|l| l.contains("\"key\":\"log\"")),
        "{warnings:?}"
    );
    assert_eq!(gw.get("/Users", Some(&newcomer)).await.status, 200);
}

/// A malformed caller request id is replaced; the replacement is the one sent upstream and
/// returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_id_is_replaced_consistently() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    let auth = bearer(&token);
    let long = "a".repeat(129);
    for bad in ["has space", "quote\"d", long.as_str(), ""] {
        let r = gw
            .request(
                "GET",
                "/Users",
                &[("authorization", &auth), ("x-request-id", bad)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200);
        let returned = r.header_all("x-request-id");
        assert_eq!(returned.len(), 1, "{returned:?}");
        assert_ne!(returned[0], bad);
        assert!(!returned[0].is_empty());
        let seen = upstream.requests().pop().expect("forwarded");
        assert_eq!(seen.header_one("x-request-id"), returned[0]);
    }
}

/// The discovered `jwks_uri` must be https (or http on loopback); otherwise startup fails
/// without fetching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_plain_http_jwks_uri_is_refused() {
    let upstream = crate::support::Upstream::start().await;
    let base: Arc<Mutex<String>> = Arc::default();
    let b = Arc::clone(&base);
    let idp = MiniServer::start(move |req| {
        let base = b.lock().expect("base lock").clone();
        match req.path.as_str() {
            "/.well-known/openid-configuration" => json_reply(
                json!({"issuer": base, "jwks_uri": "http://keys.example.com/jwks"}).to_string(),
            ),
            _ => not_found(),
        }
    })
    .await;
    *base.lock().expect("base lock") = idp.base();
    let dir = TempDir::new("discovery-http");
    let (path, _) = discovery_config(&upstream.url(), &idp.base()).write_to(&dir);
    let out = run_binary(
        vec![
            "serve".into(),
            "--config".into(),
            path.to_string_lossy().into_owned(),
        ],
        Vec::new(),
        None,
    )
    .await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("https"), "{}", out.stderr);
    assert!(!out.stdout.contains("\"listening\""));
}

/// README: "The JWKS cache and upstream connection pool are kept when their settings did not
/// change"; a changed `upstream.url` takes effect for new requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_jwks_and_switches_the_upstream() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    let fetched = jwks.hits();

    let second = crate::support::Upstream::start().await;
    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let old = format!("url = {}", toml_str(&upstream.url()));
    assert!(text.contains(&old), "{text}");
    let updated = text.replacen(&old, &format!("url = {}", toml_str(&second.url())), 1);
    replace_file(&gw.config_path, updated.as_bytes(), 0o644);
    sighup(&gw);
    wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    assert_eq!(upstream.hits(), 1, "the old upstream gets no new request");
    assert_eq!(second.hits(), 1, "the new upstream gets it");
    assert_eq!(
        jwks.hits(),
        fetched,
        "an unchanged key source is not fetched again on reload"
    );
}
