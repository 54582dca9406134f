//! SCIM-aware rules (issue 5): operation and resource-type permissions, `/Bulk` bodies, `/Me`,
//! path tricks, the env-only quick start, the ServiceProviderConfig rewrite and the shadowed-rule
//! warning of `scimgate check`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::config::new_sentinel;
use crate::support::gateway::binary;
use crate::support::mint::{self, AUDIENCE, ISSUER};
use crate::support::observe::{metric_or_zero, scrape};
use crate::support::upstream::Behavior;
use crate::support::{
    Gateway, GatewayConfig, Response, Token, Upstream, ec_key, fixture, rsa_key, run_check,
};

const READERS: &str = "scim-readers";
const BULK_CREATORS: &str = "scim-bulk-creators";
const ME_READERS: &str = "scim-me-readers";

/// The default fixture plus rules after the default full-access `provisioners` rule:
/// `readers` (read, search), `bulk-creators` (bulk, create, read on Users), `me-readers`
/// (read on Me only). All use the `provisioner` account.
async fn rules_fixture() -> (crate::support::JwksServer, Upstream, GatewayConfig) {
    let (jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.extra(&format!(
        r#"
[[rules]]
name = "readers"
claim = "groups"
value = "{READERS}"
service_account = "provisioner"
allow = ["read", "search"]

[[rules]]
name = "bulk-creators"
claim = "groups"
value = "{BULK_CREATORS}"
service_account = "provisioner"
allow = ["bulk", "create", "read"]
resource_types = ["Users"]

[[rules]]
name = "me-readers"
claim = "groups"
value = "{ME_READERS}"
service_account = "provisioner"
allow = ["read"]
resource_types = ["Me"]
"#
    ));
    (jwks, upstream, cfg)
}

fn token_for(group: &str) -> String {
    Token::new().claim("groups", json!([group])).sign(ec_key())
}

async fn call(gw: &Gateway, method: &str, path: &str, token: &str, body: &str) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/scim+json"));
    }
    gw.request(method, path, &headers, Bytes::from(body.to_owned()))
        .await
}

const USER: &str =
    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a@example.com"}"#;
const SEARCH: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"filter":"userName sw \"a\""}"#;
const PATCH: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#;

// === 7. operation and resource-type permissions ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_rule_allows_reads_and_searches_only() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let reader = token_for(READERS);

    for (method, path, body) in [
        ("GET", "/Users", ""),
        ("GET", "/Users/1", ""),
        ("GET", "/Groups?filter=displayName%20eq%20%22x%22", ""),
        ("POST", "/Users/.search", SEARCH),
        ("POST", "/.search", SEARCH),
        ("GET", "/Schemas", ""),
    ] {
        let before = upstream.hits();
        let r = call(&gw, method, path, &reader, body).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        assert_eq!(upstream.hits(), before + 1, "{method} {path} forwarded");
        let seen = upstream.requests().pop().expect("forwarded request");
        assert_eq!(seen.method, method);
        assert_eq!(
            seen.target,
            format!("{}{path}", crate::support::upstream::BASE_PATH)
        );
    }

    let before = upstream.hits();
    for (method, path, body) in [
        ("POST", "/Users", USER),
        ("PUT", "/Users/1", USER),
        ("PATCH", "/Users/1", PATCH),
        ("DELETE", "/Users/1", ""),
        ("POST", "/Groups", r#"{"displayName":"g"}"#),
        ("DELETE", "/Groups/7", ""),
        (
            "POST",
            "/Bulk",
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"DELETE","path":"/Users/1"}]}"#,
        ),
        ("GET", "/Me", ""),
    ] {
        let r = call(&gw, method, path, &reader, body).await;
        r.assert_insufficient_scope();
        assert!(
            !r.text().contains(&reader),
            "{method} {path}: the error body echoes the token"
        );
    }
    assert_eq!(
        upstream.hits(),
        before,
        "no refused request reached the upstream"
    );

    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_auth_decisions_total{decision="deny",reason="op_denied"}"#
        ),
        8.0,
        "{metrics}"
    );
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="readers",tenant="default"}"#
        ),
        6.0
    );
    // Access lines are written in batches: wait for the eight refusals' lines.
    let refused = |l: &str| l.contains("\"message\":\"request\"") && l.contains("\"status\":403");
    gw.wait_for_logs(refused, 8, std::time::Duration::from_secs(5))
        .await;
    let denied = gw
        .json_logs()
        .into_iter()
        .filter(|v| v["message"] == "request" && v["status"] == json!(403))
        .collect::<Vec<_>>();
    assert_eq!(denied.len(), 8);
    assert!(
        denied.iter().all(|v| v["reason"] == json!("op_denied")),
        "{denied:?}"
    );
    let ops: Vec<&str> = denied
        .iter()
        .map(|v| v["scim_operation"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ops,
        vec![
            "create", "replace", "patch", "delete", "create", "delete", "bulk", "read"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_operations_are_each_checked_and_bytes_forwarded_exactly() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let creator = token_for(BULK_CREATORS);
    let full = Token::new().sign(rsa_key());

    // Odd whitespace and key order: the upstream must see exactly these bytes.
    let creates = "{ \"schemas\" : [\"urn:ietf:params:scim:api:messages:2.0:BulkRequest\"],\n  \"Operations\":[\n {\"method\":\"POST\",\"path\":\"/Users\",\"bulkId\":\"q1\",\"data\":{\"userName\":\"a\"}},\n {\"method\":\"post\",\"path\":\"/Users\",\"bulkId\":\"q2\",\"data\":{\"userName\":\"b\"}}\n ] }\n";
    let with_delete = "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:BulkRequest\"],\"Operations\":[{\"method\":\"POST\",\"path\":\"/Users\",\"bulkId\":\"q1\",\"data\":{\"userName\":\"a\"}},{\"method\":\"DELETE\",\"path\":\"/Users/2\"}]}";
    let with_group = "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:BulkRequest\"],\"Operations\":[{\"method\":\"POST\",\"path\":\"/Groups\",\"bulkId\":\"g\",\"data\":{\"displayName\":\"g\"}}]}";

    let r = call(&gw, "POST", "/Bulk", &creator, creates).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.only_request().body, creates.as_bytes());

    let before = upstream.hits();
    call(&gw, "POST", "/Bulk", &creator, with_delete)
        .await
        .assert_insufficient_scope();
    call(&gw, "POST", "/Bulk", &creator, with_group)
        .await
        .assert_insufficient_scope();
    // A body that is not a BulkRequest is a 400, not forwarded.
    let bad = call(&gw, "POST", "/Bulk", &creator, "{\"Operations\":42}").await;
    bad.assert_scim_error(400);
    assert_eq!(
        upstream.hits(),
        before,
        "refused bulk requests never forwarded"
    );

    // The full-access rule forwards the request with the DELETE, bytes unchanged.
    let r = call(&gw, "POST", "/Bulk", &full, with_delete).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.requests().pop().expect("bulk forwarded");
    assert_eq!(seen.body, with_delete.as_bytes());
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.target,
        format!("{}/Bulk", crate::support::upstream::BASE_PATH)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_is_refused_unless_a_rule_lists_it() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let full = Token::new().sign(ec_key());
    let me = token_for(ME_READERS);

    call(&gw, "GET", "/Me", &full, "")
        .await
        .assert_insufficient_scope();
    call(&gw, "PATCH", "/Me", &full, PATCH)
        .await
        .assert_insufficient_scope();
    assert_eq!(upstream.hits(), 0);

    let r = call(&gw, "GET", "/Me", &me, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    // That rule lists only Me, and only read.
    call(&gw, "GET", "/Users", &me, "")
        .await
        .assert_insufficient_scope();
    call(&gw, "DELETE", "/Me", &me, "")
        .await
        .assert_insufficient_scope();
    assert_eq!(upstream.hits(), 1);
}

/// Paths a backend could resolve differently (dot or empty segments, encoded slashes, `;`
/// parameters, an escaped spelling of an endpoint name) are refused before authorization.
/// Percent-encoded unreserved characters are equivalent to plain ones (RFC 3986 §6.2.2.2), but
/// a backend that does not decode them would route elsewhere: in an endpoint name they are
/// ambiguous (T47); in an id they are the id's business.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_are_refused_before_authorization() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let reader = token_for(READERS);
    for (method, path) in [
        ("DELETE", "/Users/%2e%2e/Groups/1"),
        ("DELETE", "/Users//1"),
        ("GET", "/Users//1"),
        ("GET", "/Users/%2e%2e/Groups"),
        ("DELETE", "/Users/./1"),
        ("GET", "/Users/1;jsessionid=x"),
        ("GET", "/Groups/../Users"),
        ("DELETE", "/Users%2F1"),
    ] {
        let r = call(&gw, method, path, &reader, "").await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        r.assert_scim_error(400);
    }
    assert_eq!(upstream.hits(), 0, "no trick reached the upstream");
    for (method, path) in [("POST", "/Users/%2Esearch"), ("DELETE", "/%55sers/1")] {
        call(&gw, method, path, &reader, "{}")
            .await
            .assert_scim_error(400);
    }
    call(&gw, "DELETE", "/Users/%31", &reader, "")
        .await
        .assert_insufficient_scope();
    let r = call(&gw, "GET", "/Users/a%40b", &reader, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
}

/// The first rule whose claim matches AND that permits the request wins: a token in two groups
/// reads through the read-only account and deletes through the writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_permitting_rule_wins() {
    let jwks = crate::support::JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = Upstream::start().await;
    let cfg = GatewayConfig::new(&upstream.url(), &jwks.url())
        .account("reader", "x-reader-key", None)
        .account("writer", "x-writer-key", None)
        .extra(
            r#"
[[rules]]
name = "ro"
claim = "groups"
value = "both"
service_account = "reader"
allow = ["read", "search"]

[[rules]]
name = "rw"
claim = "groups"
value = "both"
service_account = "writer"
"#,
        );
    let gw = Gateway::start(cfg).await;
    let token = token_for("both");

    assert_eq!(call(&gw, "GET", "/Users", &token, "").await.status, 200);
    let read = upstream.requests().pop().expect("read forwarded");
    assert_eq!(read.header_one("x-reader-key"), gw.sentinel_of("reader"));
    assert!(read.header_all("x-writer-key").is_empty());

    assert_eq!(
        call(&gw, "DELETE", "/Users/1", &token, "").await.status,
        200
    );
    let delete = upstream.requests().pop().expect("delete forwarded");
    assert_eq!(delete.header_one("x-writer-key"), gw.sentinel_of("writer"));
    assert!(delete.header_all("x-reader-key").is_empty());
    assert!(delete.header_all("authorization").is_empty());

    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="ro",tenant="default"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="rw",tenant="default"}"#
        ),
        1.0
    );
}

// === 8. env-only quick start ===

type Lines = Arc<Mutex<Vec<String>>>;

/// `scimgate serve` launched directly (no `--config`), killed on drop.
struct Serve {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Serve {
    fn spawn(envs: &[(String, String)]) -> Self {
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn scimgate serve");
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        capture(child.stdout.take().expect("stdout"), Arc::clone(&stdout));
        capture(child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> Vec<String> {
        let mut all = self.stdout.lock().expect("stdout lock").clone();
        all.extend(self.stderr.lock().expect("stderr lock").iter().cloned());
        all
    }

    /// Waits (bounded) for the "listening" line and then for `/readyz` 200.
    async fn wait_ready(&mut self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (proxy, admin) = loop {
            let found = self
                .stdout
                .lock()
                .expect("stdout lock")
                .iter()
                .find_map(|l| {
                    let v: Value = serde_json::from_str(l).ok()?;
                    if v["message"] != "listening" {
                        return None;
                    }
                    Some((
                        v["proxy_addr"].as_str()?.parse::<SocketAddr>().ok()?,
                        v["admin_addr"].as_str()?.parse::<SocketAddr>().ok()?,
                    ))
                });
            if let Some(addrs) = found {
                break addrs;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited ({status}); logs:\n{}", self.logs().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "no listening line; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        loop {
            if let Ok(r) = crate::support::send(admin, "GET", "/readyz", &[], Bytes::new()).await
                && r.status == 200
            {
                return (proxy, admin);
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not 200; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn capture<R: std::io::Read + Send + 'static>(stream: R, lines: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { return };
            lines
                .lock()
                .expect("lines lock")
                .push(String::from_utf8_lossy(&line).into_owned());
        }
    });
}

fn quickstart_env(upstream: &Upstream, jwks_url: &str, key: &str) -> Vec<(String, String)> {
    [
        ("SCIMGATE_UPSTREAM_URL", upstream.url()),
        ("SCIMGATE_JWKS_URL", jwks_url.to_owned()),
        ("SCIMGATE_KEY_FIELD", "scim_role".to_owned()),
        ("SCIMGATE_VALUE_FIELD", "provisioner".to_owned()),
        ("SCIMGATE_API_KEY", key.to_owned()),
        ("SCIMGATE_API_KEY_HEADER", "x-api-key".to_owned()),
        ("SCIMGATE_ISSUER", ISSUER.to_owned()),
        ("SCIMGATE_AUDIENCE", AUDIENCE.to_owned()),
        ("SCIMGATE_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("SCIMGATE_ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_only_quick_start_serves_end_to_end() {
    let jwks = crate::support::JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = Upstream::start().await;
    let key = new_sentinel();
    let envs = quickstart_env(&upstream, &jwks.url(), &key);
    let mut serve = Serve::spawn(&envs);
    let (proxy, _admin) = serve.wait_ready().await;

    let token = Token::new()
        .claim("scim_role", json!("provisioner"))
        .sign(ec_key());
    let auth = format!("Bearer {token}");
    let r = crate::support::send(
        proxy,
        "GET",
        "/Users",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .expect("request through the quick-start gateway");
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_free_of(std::slice::from_ref(&key));
    let seen = upstream.only_request();
    assert_eq!(seen.header_one("x-api-key"), key);
    assert!(
        seen.header_all("authorization").is_empty(),
        "the caller's token is not forwarded"
    );
    assert_eq!(
        seen.target,
        format!("{}/Users", crate::support::upstream::BASE_PATH)
    );

    // The rule is the quick-start one: another claim value is refused.
    let other = Token::new()
        .claim("scim_role", json!("auditor"))
        .sign(rsa_key());
    let auth = format!("Bearer {other}");
    let r = crate::support::send(
        proxy,
        "GET",
        "/Users",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .expect("request");
    r.assert_insufficient_scope();
    // Issuer and audience from the environment are enforced.
    let foreign = Token::new()
        .claim("scim_role", json!("provisioner"))
        .claim("aud", json!("someone-else"))
        .sign(ec_key());
    let auth = format!("Bearer {foreign}");
    let r = crate::support::send(
        proxy,
        "GET",
        "/Users",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .expect("request");
    r.assert_invalid_token();
    assert_eq!(upstream.hits(), 1);
    for line in serve.logs() {
        assert!(
            !line.contains(&key),
            "the key leaked into a log line: {line}"
        );
    }

    // `check` with the same environment prints the equivalent TOML without the key.
    let check_envs = envs.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(binary());
        command
            .arg("check")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        for (k, v) in &check_envs {
            command.env(k, v);
        }
        command.output().expect("run scimgate check")
    })
    .await
    .expect("check thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "api_key_env = \"SCIMGATE_API_KEY\"",
        "header = \"x-api-key\"",
        "claim = \"scim_role\"",
        "value = \"provisioner\"",
        &format!("url = \"{}\"", upstream.url()),
        &format!("jwks_url = \"{}\"", jwks.url()),
        &format!("issuer = \"{ISSUER}\""),
        &format!("audience = [\"{AUDIENCE}\"]"),
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "key printed"
    );
}

// === 9. ServiceProviderConfig rewrite ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_provider_config_advertises_the_bearer_scheme() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let original = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://backend.example/docs",
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 1048576},
        "filter": {"supported": true, "maxResults": 200},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "httpheader",
            "name": "API key",
            "description": "Send x-api-key",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": "https://backend.example/ServiceProviderConfig"}
    });
    upstream.set_behavior(Behavior {
        body: original.to_string().into_bytes(),
        ..Behavior::default()
    });
    let token = Token::new().sign(ec_key());
    let r = gw.get("/ServiceProviderConfig", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let schemes = doc["authenticationSchemes"]
        .as_array()
        .expect("authenticationSchemes array");
    assert_eq!(schemes.len(), 1, "{doc}");
    assert_eq!(schemes[0]["type"], json!("oauthbearertoken"), "{doc}");
    let mut rest = doc.clone();
    let mut expected = original.clone();
    rest.as_object_mut()
        .expect("object")
        .remove("authenticationSchemes");
    expected
        .as_object_mut()
        .expect("object")
        .remove("authenticationSchemes");
    assert_eq!(rest, expected, "every other field unchanged");
    assert!(!r.text().contains("x-api-key"));
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, r.body.len().to_string(), "content-length matches");
    }

    // Other endpoints pass through untouched, and so does an error from the backend.
    let users = gw.get("/Users", Some(&token)).await;
    assert_eq!(
        users.json(),
        original,
        "only ServiceProviderConfig is rewritten"
    );
    upstream.set_status(404);
    let missing = gw.get("/ServiceProviderConfig", Some(&token)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), original, "non-200 passes through unchanged");
}

// === 10. check: shadowed rules ===

fn check_config(rules: &str) -> String {
    format!(
        r#"[upstream]
url = "https://scim.example.com/v2"
[jwt]
jwks_url = "https://idp.example.com/keys"
issuer = "https://idp.example.com"
audience = ["scimgate"]
{rules}
[service_accounts.a]
header = "x-api-key"
api_key_env = "A_KEY_FOR_CHECK"
"#
    )
}

#[test]
fn check_warns_about_a_shadowed_rule() {
    let out = run_check(&check_config(
        r#"
[[rules]]
name = "full"
claim = "groups"
value = "g"
service_account = "a"

[[rules]]
name = "narrow"
claim = "groups"
value = "g"
service_account = "a"
allow = ["read"]
"#,
    ));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    let warning = all
        .lines()
        .find(|l| l.contains("can never be chosen"))
        .unwrap_or_else(|| panic!("no shadowed-rule warning in:\n{all}"));
    assert!(
        warning.contains("rules[1]") && warning.contains("narrow") && warning.contains("full"),
        "{warning}"
    );

    // The reverse order is fine: the narrow rule first, the broad one catches the rest.
    let out = run_check(&check_config(
        r#"
[[rules]]
name = "narrow"
claim = "groups"
value = "g"
service_account = "a"
allow = ["read"]

[[rules]]
name = "full"
claim = "groups"
value = "g"
service_account = "a"
"#,
    ));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains("can never be chosen"),
        "{}",
        out.stdout
    );

    // A later rule with another value is not shadowed.
    let out = run_check(&check_config(
        r#"
[[rules]]
name = "one"
claim = "groups"
value = "g"
service_account = "a"

[[rules]]
name = "two"
claim = "groups"
value = "h"
service_account = "a"
allow = ["read"]
"#,
    ));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("can never be chosen"),
        "{}",
        out.stdout
    );
}

/// A method-override header cannot turn a permitted read into a write upstream: it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_do_not_widen_a_read_only_rule() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let reader = token_for(READERS);
    let auth = format!("Bearer {reader}");
    for header in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "X_HTTP_Method_Override",
    ] {
        let r = gw
            .request(
                "GET",
                "/Users/1",
                &[("authorization", &auth), (header, "DELETE")],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{header}: {}", r.text());
        let seen = upstream.requests().pop().expect("forwarded");
        assert_eq!(seen.method, "GET");
        assert!(
            !seen.has_header_like(header),
            "{header} reached the upstream: {:?}",
            seen.header_names()
        );
    }
}

/// "Every operation in the body must be allowed by the same rule": a BulkRequest whose
/// operations are each allowed by a different rule of the token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_operations_cannot_be_split_across_rules() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.extra(
        r#"
[[rules]]
name = "bulk-create"
claim = "groups"
value = "split"
service_account = "provisioner"
allow = ["bulk", "create"]

[[rules]]
name = "bulk-delete"
claim = "groups"
value = "split"
service_account = "provisioner"
allow = ["bulk", "delete"]
"#,
    );
    let gw = Gateway::start(cfg).await;
    let token = token_for("split");
    let creates = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"POST","path":"/Users","bulkId":"a","data":{"userName":"a"}}]}"#;
    let deletes = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"DELETE","path":"/Users/9"}]}"#;
    let mixed = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"POST","path":"/Users","bulkId":"a","data":{"userName":"a"}},{"method":"DELETE","path":"/Users/9"}]}"#;
    assert_eq!(
        call(&gw, "POST", "/Bulk", &token, creates).await.status,
        200
    );
    assert_eq!(
        call(&gw, "POST", "/Bulk", &token, deletes).await.status,
        200
    );
    assert_eq!(upstream.hits(), 2);
    call(&gw, "POST", "/Bulk", &token, mixed)
        .await
        .assert_insufficient_scope();
    assert_eq!(upstream.hits(), 2);
    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="bulk-create",tenant="default"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="bulk-delete",tenant="default"}"#
        ),
        1.0
    );
}

/// README: "`/Me` is refused unless a rule lists it in `resource_types`". Spellings of `/Me`
/// that a backend may normalise (dot-segments, empty segments, `;` parameters, encoding, case)
/// must not reach it through a rule with the default permissions either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_cannot_be_reached_through_other_spellings() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let full = Token::new().sign(ec_key());
    let mut forwarded = Vec::new();
    for path in [
        "/Users/../Me",
        "/Users/%2e%2e/Me",
        "//Me",
        "/Me;x=1",
        "/%4De",
        "/me",
        "/./Me",
    ] {
        let before = upstream.hits();
        let r = call(&gw, "GET", path, &full, "").await;
        if upstream.hits() > before {
            forwarded.push(format!("{path} -> {}", r.status));
        }
    }
    assert!(
        forwarded.is_empty(),
        "/Me spellings forwarded upstream under the default rule: {forwarded:?}"
    );
}

/// A BulkRequest with duplicate members is ambiguous: a backend that keeps the first
/// `Operations` (or `method`) would run what the gateway never checked. The token's claims are
/// parsed with duplicates rejected; the `/Bulk` body must not be forwarded either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_with_duplicate_members_is_not_forwarded() {
    let (_jwks, upstream, cfg) = rules_fixture().await;
    let gw = Gateway::start(cfg).await;
    let creator = token_for(BULK_CREATORS);
    let duplicate_operations = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"DELETE","path":"/Users/1"}],"Operations":[{"method":"POST","path":"/Users","bulkId":"a","data":{"userName":"a"}}]}"#;
    let duplicate_method = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"DELETE","path":"/Users","method":"POST","bulkId":"a","data":{"userName":"a"}}]}"#;
    let mut forwarded = Vec::new();
    for (name, body) in [
        ("duplicate Operations", duplicate_operations),
        ("duplicate method", duplicate_method),
    ] {
        let before = upstream.hits();
        let r = call(&gw, "POST", "/Bulk", &creator, body).await;
        if upstream.hits() > before {
            forwarded.push(format!("{name} -> {}", r.status));
        } else {
            assert!(
                r.status == 400 || r.status == 403,
                "{name}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    assert!(forwarded.is_empty(), "forwarded: {forwarded:?}");
}

/// Quick start with `SCIMGATE_API_KEY_FILE` and no header: `authorization: Bearer <key>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_defaults_to_a_bearer_authorization_header() {
    let jwks = crate::support::JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = Upstream::start().await;
    let key = new_sentinel();
    let dir = crate::support::TempDir::new("quickstart-file");
    let key_file = dir.write("key", format!("{key}\n").as_bytes(), 0o600);
    let mut envs: Vec<(String, String)> = quickstart_env(&upstream, &jwks.url(), "unused")
        .into_iter()
        .filter(|(k, _)| k != "SCIMGATE_API_KEY" && k != "SCIMGATE_API_KEY_HEADER")
        .collect();
    envs.push((
        "SCIMGATE_API_KEY_FILE".into(),
        key_file.to_string_lossy().into_owned(),
    ));
    let mut serve = Serve::spawn(&envs);
    let (proxy, _) = serve.wait_ready().await;
    let token = Token::new()
        .claim("scim_role", json!("provisioner"))
        .sign(rsa_key());
    let auth = format!("Bearer {token}");
    let r = crate::support::send(
        proxy,
        "GET",
        "/Groups",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream.only_request().header_one("authorization"),
        format!("Bearer {key}")
    );
    for line in serve.logs() {
        assert!(!line.contains(&key), "key in a log line: {line}");
    }
}
