//! Several tenants behind one scimgate (issue 5): each path prefix has its own issuer, rules,
//! service account and upstream; a token of one tenant is useless on another's prefix.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::observe::{metric, replace_file};
use crate::support::{JwksMode, JwksServer, SigningKey, TempDir, Token, Upstream, send, toml_str};
use bytes::Bytes;
use serde_json::json;

/// A gateway started from a hand-written config (the harness builder writes one tenant).
struct TenantGateway {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    dir: TempDir,
}

impl TenantGateway {
    async fn start(config: &str, dir: TempDir) -> Self {
        let path = dir.write("scimgate.toml", config.as_bytes(), 0o600);
        let mut child = Command::new(env!("CARGO_BIN_EXE_scimgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scimgate");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (proxy, admin) = loop {
            let found = lines.lock().expect("lines").iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening").then(|| {
                    let addr = |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                    (addr("proxy_addr"), addr("admin_addr"))
                })
            });
            if let Some((Some(p), Some(a))) = found {
                break (p, a);
            }
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "exited: {:?}",
                lines.lock()
            );
            assert!(
                Instant::now() < deadline,
                "not listening: {:?}",
                lines.lock()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        loop {
            let ready = send(admin, "GET", "/readyz", &[], Bytes::new()).await;
            if ready.is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "not ready: {:?}", lines.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            proxy,
            admin,
            lines,
            dir,
        }
    }

    async fn metrics(&self) -> String {
        let r = send(self.admin, "GET", "/metrics", &[], Bytes::new())
            .await
            .expect("GET /metrics");
        assert_eq!(r.status, 200);
        r.text()
    }

    /// Polls `/metrics` (bounded) until `done` holds; returns that scrape.
    async fn metrics_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}:\n{text}\n{:?}",
                self.lines.lock()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str, token: &str) -> crate::support::Response {
        let auth = format!("Bearer {token}");
        send(
            self.proxy,
            "GET",
            path,
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .expect("request")
    }
}

impl Drop for TenantGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Side {
    key: SigningKey,
    jwks: JwksServer,
    upstream: Upstream,
    issuer: String,
}

impl Side {
    async fn start(kid: &str) -> Self {
        let key = SigningKey::ec(kid);
        let jwks = JwksServer::start(crate::support::mint::jwks(&[&key])).await;
        let upstream = Upstream::start().await;
        let issuer = format!("https://issuer-{kid}.example.com");
        Self {
            key,
            jwks,
            upstream,
            issuer,
        }
    }

    /// `http://127.0.0.1:<port>` of the recording upstream (its `url()` carries a base path).
    fn origin(&self) -> String {
        let url = self.upstream.url();
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let end = url[after_scheme..]
            .find('/')
            .map_or(url.len(), |i| after_scheme + i);
        url[..end].to_owned()
    }

    fn token(&self, claim: &str, value: &str) -> String {
        Token::new()
            .claim("iss", json!(self.issuer))
            .claim("aud", json!("scimgate"))
            .claim(claim, json!([value]))
            .sign(&self.key)
    }
}

fn tenant_toml(
    name: &str,
    prefix: &str,
    upstream: &str,
    side: &Side,
    claim: &str,
    header: &str,
    key_file: &str,
) -> String {
    format!(
        "[[tenants]]\nname = {name}\npath_prefix = {prefix}\nupstream.url = {upstream}\n\
         jwt.jwks_url = {jwks}\njwt.issuer = {iss}\njwt.audience = [\"scimgate\"]\njwt.algorithms = [\"ES256\"]\n\
         [[tenants.rules]]\nname = {rule}\nclaim = {claim}\nvalue = \"scim\"\nservice_account = \"sa\"\n\
         [tenants.service_accounts.sa]\nheader = {header}\napi_key_file = {key_file}\n\n",
        name = toml_str(name),
        prefix = toml_str(prefix),
        upstream = toml_str(upstream),
        jwks = toml_str(&side.jwks.url()),
        iss = toml_str(&side.issuer),
        rule = toml_str(&format!("{name}-rule")),
        claim = toml_str(claim),
        header = toml_str(header),
        key_file = toml_str(key_file),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_and_route_by_prefix() {
    let (a, b) = (Side::start("tenant-a").await, Side::start("tenant-b").await);
    let dir = TempDir::new("tenants");
    let key_a = dir.write("a.key", b"SENTINEL-tenant-a-key\n", 0o600);
    let key_b = dir.write("b.key", b"SENTINEL-tenant-b-key\n", 0o600);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\n{}{}",
        tenant_toml(
            "harness",
            "/ng/api/scim/account/{account}",
            &format!("{}/gateway/ng/api/scim/account/{{account}}", a.origin()),
            &a,
            "groups",
            "x-api-key",
            &key_a.display().to_string(),
        ),
        tenant_toml(
            "other",
            "/other",
            &format!("{}/scim/v2", b.origin()),
            &b,
            "roles",
            "authorization",
            &key_b.display().to_string()
        ),
    );
    let gw = TenantGateway::start(&config, dir).await;
    let (token_a, token_b) = (a.token("groups", "scim"), b.token("roles", "scim"));

    let r = gw
        .get("/ng/api/scim/account/acme_1/Users?count=2", &token_a)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &a.upstream.requests()[0];
    assert_eq!(
        seen.target,
        "/gateway/ng/api/scim/account/acme_1/Users?count=2"
    );
    assert_eq!(seen.header_one("x-api-key"), "SENTINEL-tenant-a-key");
    assert!(seen.header_all("authorization").is_empty());

    let r = gw.get("/other/Groups", &token_b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.upstream.requests()[0].target, "/scim/v2/Groups");
    assert_eq!(
        b.upstream.requests()[0].header_one("authorization"),
        "SENTINEL-tenant-b-key"
    );

    // Tenant A's token on tenant B's prefix and the other way round: never forwarded.
    let r = gw.get("/other/Users", &token_a).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = gw.get("/ng/api/scim/account/acme_1/Users", &token_b).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Same issuer keys but the other tenant's claim: a valid token, no rule → 403.
    let r = gw.get("/other/Users", &b.token("groups", "scim")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Unknown prefixes and unsafe account identifiers match no tenant.
    for path in [
        "/Users",
        "/otherwise/Users",
        "/ng/api/scim/account/../Users",
        "/ng/api/scim/account/a%2Fb/Users",
    ] {
        let r = gw.get(path, &token_a).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        r.assert_scim_error(404);
    }
    assert_eq!((a.upstream.hits(), b.upstream.hits()), (1, 1));
    let logs = gw.lines.lock().expect("lines").join("\n");
    assert!(
        !logs.contains("SENTINEL-tenant"),
        "an API key reached the logs"
    );
}

/// The JWKS and rule series carry the tenant (issue 15 §2): one tenant's failing key endpoint
/// shows under its own name while the other's stays healthy, rules of the same name in two
/// tenants count apart, and a tenant a reload removes takes its series with it.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_the_tenant() {
    let (a, b) = (Side::start("tenant-a").await, Side::start("tenant-b").await);
    let dir = TempDir::new("tenant-metrics");
    let key_a = dir.write("a.key", b"SENTINEL-tenant-a-key\n", 0o600);
    let key_b = dir.write("b.key", b"SENTINEL-tenant-b-key\n", 0o600);
    // Both tenants name their rule "provisioner": rule names are unique only per tenant.
    let tenant = |name: &str, side: &Side, key: &std::path::Path| {
        tenant_toml(
            name,
            &format!("/{name}"),
            &format!("{}/scim/v2", side.origin()),
            side,
            "groups",
            "x-api-key",
            &key.display().to_string(),
        )
        .replace(&format!("{name}-rule"), "provisioner")
    };
    let head = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\n";
    let both = format!(
        "{head}{}{}",
        tenant("a", &a, &key_a),
        tenant("b", &b, &key_b)
    );
    let only_a = format!("{head}{}", tenant("a", &a, &key_a));
    let gw = TenantGateway::start(&both, dir).await;

    let text = gw.metrics().await;
    for t in ["a", "b"] {
        for (series, want) in [
            (format!("scimgate_jwks_keys{{tenant=\"{t}\"}}"), 1.0),
            (
                format!("scimgate_rule_matches_total{{rule=\"provisioner\",tenant=\"{t}\"}}"),
                0.0,
            ),
            (
                format!("scimgate_jwks_fetches_total{{result=\"bad_status\",tenant=\"{t}\"}}"),
                0.0,
            ),
        ] {
            assert_eq!(metric(&text, &series), Some(want), "{series}:\n{text}");
        }
        let last = format!("scimgate_jwks_last_success_timestamp_seconds{{tenant=\"{t}\"}}");
        assert!(
            metric(&text, &last).is_some_and(|v| v > 1.0e9),
            "{last}:\n{text}"
        );
    }
    assert!(
        !text.contains("rule=\"provisioner\"}"),
        "a rule series without its tenant:\n{text}"
    );

    let token_a = a.token("groups", "scim");
    for _ in 0..2 {
        assert_eq!(gw.get("/a/Users", &token_a).await.status, 200);
    }
    assert_eq!(
        gw.get("/b/Users", &b.token("groups", "scim")).await.status,
        200
    );

    // Tenant b's key endpoint fails; a token with a kid b does not know makes b refetch.
    b.jwks.set_mode(JwksMode::Status(503));
    let unknown = Token::new()
        .claim("iss", json!(b.issuer))
        .claim("aud", json!("scimgate"))
        .claim("groups", json!(["scim"]))
        .sign(&SigningKey::ec("not-published"));
    assert_eq!(gw.get("/b/Users", &unknown).await.status, 401);
    let bad_b = r#"scimgate_jwks_fetches_total{result="bad_status",tenant="b"}"#;
    let text = gw
        .metrics_until(bad_b, |t| metric(t, bad_b) == Some(1.0))
        .await;
    for (series, want) in [
        (
            r#"scimgate_jwks_fetches_total{result="bad_status",tenant="a"}"#,
            0.0,
        ),
        (
            r#"scimgate_rule_matches_total{rule="provisioner",tenant="a"}"#,
            2.0,
        ),
        (
            r#"scimgate_rule_matches_total{rule="provisioner",tenant="b"}"#,
            1.0,
        ),
        (r#"scimgate_jwks_keys{tenant="a"}"#, 1.0),
        (r#"scimgate_jwks_keys{tenant="b"}"#, 1.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}:\n{text}");
    }

    // A reload that removes tenant b removes b's series: its frozen last-success time must not
    // keep a staleness alert firing for a tenant that no longer exists.
    let path = gw.dir.path().join("scimgate.toml");
    replace_file(&path, only_a.as_bytes(), 0o600);
    let text = gw
        .metrics_until("tenant b's series removed after the reload", |t| {
            metric(t, r#"scimgate_config_reloads_total{result="success"}"#) == Some(1.0)
        })
        .await;
    assert!(!text.contains("tenant=\"b\""), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"scimgate_rule_matches_total{rule="provisioner",tenant="a"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"scimgate_jwks_keys{tenant="a"}"#),
        Some(1.0)
    );
}

/// `explain --path` routes like the proxy: the path picks the tenant whose issuer and rules
/// judge the token, and a `--tenant` the path does not route to is refused (exit 2).
#[tokio::test(flavor = "multi_thread")]
async fn explain_routes_by_path_like_the_proxy() {
    let (a, b) = (Side::start("tenant-a").await, Side::start("tenant-b").await);
    let dir = TempDir::new("tenant-explain");
    let key = dir.write("k.key", b"SENTINEL-tenant-explain-key\n", 0o600);
    let key = key.display().to_string();
    let config = format!(
        "{}{}",
        tenant_toml(
            "a",
            "/a",
            "https://a.example.com/scim",
            &a,
            "groups",
            "x-api-key",
            &key
        ),
        tenant_toml(
            "b",
            "/b",
            "https://b.example.com/scim",
            &b,
            "roles",
            "x-api-key",
            &key
        ),
    );
    let path = dir.write("scimgate.toml", config.as_bytes(), 0o600);
    let token_b = b.token("roles", "scim");
    let explain = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_scimgate"));
        command
            .args(["explain", "--json", "--config"])
            .arg(&path)
            .args(extra)
            .arg(&token_b)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        async move {
            let out = tokio::task::spawn_blocking(move || command.output().expect("explain"))
                .await
                .expect("explain thread");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    // Without a path, the first tenant judges: b's token is not a's.
    let (code, stdout, _) = explain(&[]).await;
    assert_eq!(code, Some(1), "{stdout}");
    let (code, stdout, stderr) = explain(&["--method", "POST", "--path", "/b/Users"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["request"]["tenant"], json!("b"), "{v}");
    assert_eq!(v["request"]["path"], json!("/b/Users"), "{v}");
    assert_eq!(v["request"]["operation"], json!("create"), "{v}");
    let (code, _, stderr) = explain(&["--tenant", "a", "--path", "/b/Users"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("routes"), "{stderr}");
    let (code, _, stderr) = explain(&["--path", "/c/Users"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("SENTINEL"), "{stderr}");
}
