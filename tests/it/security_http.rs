//! Security catalogue, sections E and F (threats.md §7, T26–T34): request targets, routing,
//! tunnels, persistent connections, smuggling, size and time limits, HTTP/2 floods — against the
//! real binary, with raw HTTP/1 bytes and HTTP/2 frames.

use std::time::{Duration, Instant};

use crate::support::h2client::{self, RawH2};
use crate::support::observe::{metric, scrape};
use crate::support::upstream::{BASE_PATH, Recorded};
use crate::support::wire::{self, RawConn};
use crate::support::{
    Attacker, Expect, Gateway, H2, Table, Token, Upstream, bearer, ec_key, fixture, rsa_key,
};
use bytes::Bytes;
use serde_json::json;

fn auth_line() -> String {
    format!("Authorization: Bearer {}", Token::new().sign(rsa_key()))
}

/// Every request the upstream recorded went to the configured authority under the base path.
fn assert_all_to_upstream(upstream: &Upstream) {
    for req in upstream.requests() {
        assert_eq!(
            req.header_all("host"),
            vec![upstream.authority()],
            "{req:?}"
        );
        assert!(req.target.starts_with(BASE_PATH), "target {}", req.target);
    }
}

/// Polls (bounded) until every request head the upstream saw has been recorded.
async fn settle(upstream: &Upstream) -> Vec<Recorded> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.requests().len() < upstream.hits() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upstream.requests()
}

/// Resident set size of a process in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// === E. Request target and routing ===

/// T26 ★ The API key only ever goes to the configured upstream: absolute-form targets, CONNECT,
/// asterisk-form and authority-looking paths never redirect it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t26_upstream_target_is_fixed() {
    let attacker = Attacker::start().await;
    let evil = attacker.authority();
    for root in [false, true] {
        let (_jwks, upstream, cfg) = fixture().await;
        // With and without a base path (the naive `format!("{base}{path}")` case).
        let cfg = if root {
            cfg.set(
                "upstream",
                "url",
                &crate::support::toml_str(&format!("http://{}", upstream.authority())),
            )
        } else {
            cfg
        };
        let gw = Gateway::start(cfg).await;
        let auth = auth_line();
        let req = |line: &str, host: &str| {
            format!("{line}\r\nHost: {host}\r\n{auth}\r\nConnection: close\r\n\r\n").into_bytes()
        };
        let mut table = Table::new();
        for (name, bytes, expect) in [
            (
                "absolute-form http",
                req(&format!("GET http://{evil}/Users HTTP/1.1"), &evil),
                Expect::Ok,
            ),
            (
                "absolute-form https",
                req(&format!("GET https://{evil}/Users HTTP/1.1"), &evil),
                Expect::Ok,
            ),
            (
                "absolute-form with userinfo",
                req(&format!("GET http://user:pw@{evil}/Users HTTP/1.1"), &evil),
                Expect::Ok,
            ),
            (
                "CONNECT",
                req(&format!("CONNECT {evil} HTTP/1.1"), &evil),
                Expect::Status(405),
            ),
            (
                "OPTIONS *",
                req("OPTIONS * HTTP/1.1", "gw"),
                Expect::Status(400),
            ),
            (
                "Host names the attacker",
                req("GET /Users HTTP/1.1", &evil),
                Expect::Ok,
            ),
        ] {
            let before = upstream.hits();
            let r = gw.raw(&bytes).await;
            table.check(name, &r, expect, "");
            if !expect.forwards() && upstream.hits() != before {
                table.fail(name, "reached the upstream");
            }
        }
        // Paths that look like authorities: forwarded under the configured base, or refused.
        for path in [
            format!("//{evil}/x"),
            format!("/@{evil}/x"),
            format!("/%2F%2F{evil}/x"),
            format!("/%40{evil}/x"),
            format!("/\\\\{evil}\\x"),
            format!("@{evil}/x"),
            format!("{evil}/x"),
            format!("/..//{evil}/x"),
        ] {
            let r = gw.raw(&req(&format!("GET {path} HTTP/1.1"), "gw")).await;
            if r.status == 200 {
                let rec = upstream.requests().pop().expect("forwarded");
                let base = if root { "" } else { BASE_PATH };
                if rec.target != format!("{base}{path}") {
                    table.fail(&path, format!("forwarded as {}", rec.target));
                }
            } else if !matches!(r.status, 400 | 404) {
                table.fail(&path, format!("status {}", r.status));
            }
        }
        table.finish();
        assert_all_to_upstream_or_root(&upstream, root);
    }
    attacker.assert_untouched();
}

fn assert_all_to_upstream_or_root(upstream: &Upstream, root: bool) {
    if root {
        for req in upstream.requests() {
            assert_eq!(req.header_all("host"), vec![upstream.authority()]);
        }
    } else {
        assert_all_to_upstream(upstream);
    }
}

/// T27 ★ No unauthenticated path: health and metrics live on the admin port only; on the proxy
/// port every variant needs a token, whatever the path spelling or helper headers say. The
/// admin port never forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t27_no_unauthenticated_paths() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let mut table = Table::new();
    let paths = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/health",
        "/HEALTHZ",
        "//healthz",
        "/healthz/",
        "/healthz/../Users",
        "/healthz/%2e%2e/Users",
        "/healthz%2F..%2FUsers",
        "/healthz;x=/Users",
        "/healthz?/Users",
        "/healthz/%E2%80%AE/Users",
        "/Users?healthz",
        "/.well-known/openid-configuration",
        "/ServiceProviderConfig",
        "/Schemas",
    ];
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let r = gw.raw(request.as_bytes()).await;
        // Ambiguous paths are refused as malformed (400), and paths outside the SCIM grammar
        // as not found (404), before authentication (T47).
        table.check_any(
            path,
            &r,
            &[Expect::NoToken, Expect::Status(400), Expect::Status(404)],
            "",
        );
    }
    for (name, value) in [
        ("X-Original-URL", "/healthz"),
        ("X-Rewrite-URL", "/healthz"),
        ("X-Forwarded-Uri", "/healthz"),
        ("X-Forwarded-Prefix", "/healthz"),
        ("User-Agent", "kube-probe/1.30"),
        ("User-Agent", "ELB-HealthChecker/2.0"),
        ("X-Envoy-Original-Path", "/healthz"),
    ] {
        let request = format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
        );
        let r = gw.raw(request.as_bytes()).await;
        table.check(&format!("{name}: {value}"), &r, Expect::NoToken, "");
    }
    // `#` cannot appear in a request target (RFC 9112 §3.2): hyper refuses it.
    let r = gw
        .raw(b"GET /healthz#/../Users HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await;
    if r.status != 400 {
        table.check("fragment", &r, Expect::Status(404), "");
    }
    table.finish();
    assert_eq!(
        upstream.hits(),
        0,
        "an unauthenticated request reached the upstream"
    );

    // The admin port: its three endpoints, nothing else, and never the upstream.
    let auth = bearer(&Token::new().sign(rsa_key()));
    for path in [
        "/Users",
        "/scim/v2/Users",
        "/healthz/../Users",
        "/metrics/../Users",
        "/healthz/x",
    ] {
        let r = crate::support::send(
            gw.admin_addr,
            "GET",
            path,
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .expect("admin request");
        assert!(matches!(r.status, 400 | 404), "admin {path}: {}", r.status);
    }
    let raw = wire::raw_exchange(
        gw.admin_addr,
        format!(
            "GET http://{}/scim/v2/Users HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
            upstream.authority(),
            auth_line()
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .expect("admin absolute-form");
    assert_ne!(raw.status, 200);
    assert_eq!(upstream.hits(), 0, "the admin port forwarded a request");
}

/// A BulkRequest with one operation.
fn bulk(method: &str, path: &str) -> String {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [{"method": method, "path": path, "bulkId": "b1",
            "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []}}],
    })
    .to_string()
}

/// T28 The SCIM surface behind one service account: a read-only rule cannot write (directly or
/// through `/Bulk` operations) and `/Me` (the service account itself) is refused by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_scim_authorization_surface() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.extra(
        "[[rules]]\nname = \"readers\"\nclaim = \"groups\"\nvalue = \"scim-readers\"\n\
         service_account = \"provisioner\"\nallow = [\"read\", \"search\"]\n",
    );
    let gw = Gateway::start(cfg).await;
    let reader = Token::new()
        .claim("groups", json!(["scim-readers"]))
        .sign(ec_key());
    let writer = Token::new().sign(ec_key());
    let mut table = Table::new();
    let cases: Vec<(&str, &str, &str, String, &str, Expect)> = vec![
        (
            "reader GET /Users",
            "GET",
            "/Users",
            String::new(),
            &reader,
            Expect::Ok,
        ),
        (
            "reader POST /Users/.search",
            "POST",
            "/Users/.search",
            "{}".into(),
            &reader,
            Expect::Ok,
        ),
        (
            "reader POST /.search",
            "POST",
            "/.search",
            "{}".into(),
            &reader,
            Expect::Ok,
        ),
        (
            "reader POST /Users",
            "POST",
            "/Users",
            "{}".into(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "reader PATCH /Groups/admins",
            "PATCH",
            "/Groups/admins",
            "{}".into(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "reader PUT /Users/1",
            "PUT",
            "/Users/1",
            "{}".into(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "reader DELETE /Users/1",
            "DELETE",
            "/Users/1",
            String::new(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "reader /Bulk with a PATCH of admins",
            "POST",
            "/Bulk",
            bulk("PATCH", "/Groups/admins"),
            &reader,
            Expect::Forbidden,
        ),
        (
            // GET is not a bulk method (RFC 7644 §3.7): the body is refused unread (T46).
            "reader /Bulk with a GET",
            "POST",
            "/Bulk",
            bulk("GET", "/Users/1"),
            &reader,
            Expect::Status(400),
        ),
        (
            "reader GET /Me",
            "GET",
            "/Me",
            String::new(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "reader GET /Users/../Groups",
            "GET",
            "/Users/../Groups",
            String::new(),
            &reader,
            Expect::Forbidden,
        ),
        (
            "writer GET /Me",
            "GET",
            "/Me",
            String::new(),
            &writer,
            Expect::Forbidden,
        ),
        (
            "writer PATCH /Me",
            "PATCH",
            "/Me",
            "{}".into(),
            &writer,
            Expect::Forbidden,
        ),
        (
            "writer DELETE /Me",
            "DELETE",
            "/Me",
            String::new(),
            &writer,
            Expect::Forbidden,
        ),
        (
            // Not after the configured prefix: not an endpoint at all (T47).
            "writer GET /scim/v2/Me",
            "GET",
            "/scim/v2/Me",
            String::new(),
            &writer,
            Expect::Status(404),
        ),
        (
            "writer /Bulk addressing /Me",
            "POST",
            "/Bulk",
            bulk("PATCH", "/Me"),
            &writer,
            Expect::Forbidden,
        ),
        (
            "writer PATCH /Groups/admins",
            "PATCH",
            "/Groups/admins",
            "{}".into(),
            &writer,
            Expect::Ok,
        ),
        (
            "writer /Bulk PATCH",
            "POST",
            "/Bulk",
            bulk("PATCH", "/Groups/admins"),
            &writer,
            Expect::Ok,
        ),
        (
            "writer /Bulk that is not a BulkRequest",
            "POST",
            "/Bulk",
            "{\"Operations\":[{\"path\":\"/Users\"}]}".into(),
            &writer,
            Expect::Status(400),
        ),
    ];
    for (name, method, path, body, token, expect) in cases {
        let before = upstream.hits();
        let auth = bearer(token);
        let r = gw
            .request(
                method,
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/scim+json"),
                ],
                body.clone(),
            )
            .await;
        // A dot-segment path may be refused as ambiguous (400) before any rule is consulted.
        let accepted = if path.contains("/..") {
            vec![expect, Expect::Status(400)]
        } else {
            vec![expect]
        };
        table.check_any(name, &r, &accepted, token);
        let seen = upstream.hits() - before;
        if seen != usize::from(expect.forwards()) {
            table.fail(name, format!("upstream saw {seen} request(s)"));
        } else if expect.forwards() && body.len() > 2 {
            let rec = upstream.requests().pop().expect("forwarded");
            if rec.body != body.as_bytes() {
                table.fail(name, "the forwarded body differs from the one authorized");
            }
        }
    }
    table.finish();
}

/// T28 `/Me` addresses the service account itself; it must not be reachable through path
/// spellings that an upstream resolves to `/Me` (dot-segments, `;` parameters, encodings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_me_is_not_reachable_through_non_canonical_paths() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let writer = Token::new().sign(ec_key());
    let mut leaked = Vec::new();
    for path in [
        "/Users/../Me",
        "/Users/%2e%2e/Me",
        "/./Me",
        "/Me/.",
        "/Me;x=1",
        "/%4De",
        "/Me%2F",
        "//Me",
        "/scim/v2/Users/../../v2/Me",
    ] {
        let before = upstream.hits();
        let request = format!(
            "PATCH {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {writer}\r\n\
             Content-Type: application/scim+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let r = gw.raw(request.as_bytes()).await;
        if upstream.hits() != before {
            leaked.push(format!("{path} -> {} (upstream reached)", r.status));
        }
    }
    let body = bulk("PATCH", "/Users/../Me");
    let auth = bearer(&writer);
    let before = upstream.hits();
    let r = gw
        .request("POST", "/Bulk", &[("authorization", &auth)], body)
        .await;
    if upstream.hits() != before {
        leaked.push(format!("/Bulk op path /Users/../Me -> {}", r.status));
    }
    assert!(leaked.is_empty(), "/Me reachable:\n{}", leaked.join("\n"));
}

/// T29 ★ `Upgrade` (h2c, websocket) is stripped as hop-by-hop: no 101, no tunnel; the request
/// is plain HTTP/1.1 and later bytes on the connection are parsed (and authenticated) as
/// HTTP/1.1. CONNECT (HTTP/1.1 and HTTP/2) is 405; extended CONNECT is not offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_upgrade_h2c_and_tunnels() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    let mut conn = RawConn::connect(gw.proxy_addr).await.expect("connect");
    conn.send(
        format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send upgrade");
    let r = conn
        .response(Duration::from_secs(5))
        .await
        .expect("response");
    assert_eq!(r.status, 200, "h2c upgrade must not switch protocols");
    let rec = upstream.only_request();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(
            rec.header_all(gone)
                .iter()
                .all(|v| !v.to_ascii_lowercase().contains("upgrade") && !v.contains("h2c")),
            "{gone} forwarded: {:?}",
            rec.headers
        );
    }
    assert!(!rec.has_header_like("upgrade") && !rec.has_header_like("http2-settings"));
    // The same connection still speaks authenticated HTTP/1.1.
    conn.send(b"GET /Groups HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("send");
    let r = conn
        .response(Duration::from_secs(5))
        .await
        .expect("second response");
    assert_eq!(r.status, 401, "tokenless request after the upgrade attempt");
    // HTTP/2 frames on it are garbage to the HTTP/1 parser, never a tunnel.
    let mut frames = h2client::PREFACE.to_vec();
    frames.extend(h2client::settings(&[]));
    frames.extend(h2client::frame(
        h2client::HEADERS,
        h2client::END_HEADERS | h2client::END_STREAM,
        3,
        &h2client::header_block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/Users"),
            (":authority", "gw"),
        ]),
    ));
    let _ = conn.send(&frames).await;
    if let Ok(r) = conn.response(Duration::from_secs(3)).await {
        assert!(
            r.status >= 400,
            "h2 frames after an upgrade attempt got {}",
            r.status
        );
    }
    assert_eq!(upstream.hits(), 1);

    // websocket: the same, 200 instead of 101.
    let r = gw
        .raw(
            format!(
                "GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = upstream.requests().pop().expect("forwarded");
    assert!(!rec.has_header_like("upgrade"));
    assert!(
        rec.header_all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("upgrade"))
    );

    // CONNECT over HTTP/1.1 and HTTP/2.
    let r = gw
        .raw(
            format!("CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n{auth}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    r.assert_scim_error(405);
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2");
    let bearer_value = auth.trim_start_matches("Authorization: ").to_owned();
    let r = h2
        .request(
            "CONNECT",
            "127.0.0.1:9",
            &[("authorization", &bearer_value)],
            Bytes::new(),
            &[],
        )
        .await;
    match r {
        Ok(r) => assert_eq!(r.status, 405, "h2 CONNECT: {}", r.text()),
        Err(e) => assert!(!e.contains("no response"), "h2 CONNECT: {e}"),
    }
    // The server does not offer RFC 8441 extended CONNECT.
    let mut raw = RawH2::connect(gw.proxy_addr).await.expect("raw h2");
    let first = raw
        .read_frame(Duration::from_secs(5))
        .await
        .expect("server SETTINGS");
    assert_eq!(first.kind, h2client::SETTINGS);
    assert!(
        !h2client::settings_params(&first).contains(&(0x8, 1)),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL offered"
    );
    assert_eq!(upstream.hits(), 2);
}

// === F. HTTP protocol ===

/// T30 ★ HTTP/1.1 keep-alive and pipelining: every request on a connection is authenticated on
/// its own; a 401 does not taint or bless the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_http1_keep_alive_and_pipelining() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let good = auth_line();
    let bad = format!(
        "Authorization: Bearer {}",
        crate::support::mint::corrupt_signature(&Token::new().sign(rsa_key()))
    );
    let pipelined = format!(
        "GET /Users?n=1 HTTP/1.1\r\nHost: gw\r\n{good}\r\n\r\n\
         GET /Users?n=2 HTTP/1.1\r\nHost: gw\r\n\r\n\
         GET /Users?n=3 HTTP/1.1\r\nHost: gw\r\n{bad}\r\n\r\n\
         GET /Users?n=4 HTTP/1.1\r\nHost: gw\r\n{good}\r\n\r\n\
         GET /Users?n=5 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n"
    );
    let ex = wire::exchange_all(gw.proxy_addr, pipelined.as_bytes(), Duration::from_secs(5))
        .await
        .expect("pipelined exchange");
    assert_eq!(ex.statuses(), vec![200, 401, 401, 200, 401]);
    for r in &ex.responses {
        crate::support::Response::from(r.clone()).assert_free_of(&gw.sentinels());
    }
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        vec![
            format!("{BASE_PATH}/Users?n=1"),
            format!("{BASE_PATH}/Users?n=4")
        ]
    );

    // Request by request on one connection: 401, then 200, then 401 again.
    let mut conn = RawConn::connect(gw.proxy_addr).await.expect("connect");
    for (auth, want) in [
        ("", 401),
        (good.as_str(), 200),
        ("", 401),
        (bad.as_str(), 401),
    ] {
        let line = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}\r\n")
        };
        conn.send(format!("GET /Groups HTTP/1.1\r\nHost: gw\r\n{line}\r\n").as_bytes())
            .await
            .expect("send");
        let r = conn
            .response(Duration::from_secs(5))
            .await
            .expect("response");
        assert_eq!(r.status, want);
    }
    assert_eq!(upstream.hits(), 3);
}

/// T30 ★ HTTP/2: concurrent streams on one connection are authenticated independently; the
/// streams without a valid token never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_http2_streams_are_authenticated_independently() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let good = bearer(&Token::new().sign(rsa_key()));
    let bad = bearer(&crate::support::mint::corrupt_signature(
        &Token::new().sign(ec_key()),
    ));
    let mut tasks = Vec::new();
    for (i, auth) in [Some(good.clone()), None, Some(bad.clone()), None, Some(bad)]
        .into_iter()
        .enumerate()
    {
        let h2 = h2.clone();
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            h2.request("GET", &format!("/Users?s={i}"), &headers, Bytes::new(), &[])
                .await
                .expect("h2 stream")
                .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("stream task"));
    }
    assert_eq!(
        &statuses[1..],
        &[401, 401, 401, 401],
        "statuses {statuses:?}"
    );
    assert!(
        !matches!(statuses[0], 400 | 401 | 403),
        "the valid stream was refused: {statuses:?}"
    );
    // Whatever reached the upstream is the valid stream only.
    for rec in settle(&upstream).await {
        assert_eq!(rec.target, format!("{BASE_PATH}/Users?s=0"));
    }
    assert!(upstream.hits() <= 1);
}

/// T30 ★ The valid HTTP/2 stream is actually forwarded (200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_http2_valid_stream_is_forwarded() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let good = bearer(&Token::new().sign(rsa_key()));
    let r = h2
        .request(
            "GET",
            "/Users",
            &[("authorization", &good)],
            Bytes::new(),
            &[],
        )
        .await
        .expect("h2 stream");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
}

/// How a smuggling payload may end: refused at the HTTP layer, or forwarded once with exactly
/// this body, or either (when both are correct readings of RFC 9112).
#[derive(Debug, Clone)]
enum Framing {
    Refused,
    Forwarded(&'static [u8]),
    Either,
}

/// The tokenless request each payload tries to smuggle (unique per case).
fn smuggled(case: usize) -> String {
    format!("GET /Smuggled?case={case} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
}

/// The outer request: a valid token, then the given framing headers and raw body bytes.
fn outer(case: usize, method: &str, version: &str, framing: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} /Users?case={case} {version}\r\nHost: gw\r\n{}\r\nContent-Type: application/scim+json\r\n{framing}\r\n",
        auth_line()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// T31 ★ Request smuggling / desync corpus: CL.TE, TE.CL, TE obfuscations, conflicting and
/// malformed Content-Length, chunk tricks, bare LF, obs-fold, control characters, bodies on GET,
/// HTTP/1.0 with TE. No smuggled request ever reaches the upstream; each outer request reaches
/// it at most once with the body hyper framed; TE+CL is decoded as chunked and the connection
/// closed (RFC 9112 §6.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_request_smuggling_corpus() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.set("server", "header_read_timeout", "\"1s\"").set(
        "server",
        "request_timeout",
        "\"2s\"",
    );
    let mut gw = Gateway::start(cfg).await;
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    let mut cases: Vec<(&str, Vec<u8>, Framing)> = Vec::new();
    let mut add = |name: &'static str, build: &dyn Fn(usize) -> Vec<u8>, framing: Framing| {
        let case = cases.len();
        cases.push((name, build(case), framing));
    };
    add(
        "CL.TE: Content-Length covers a smuggled request, TE chunked ends at once",
        &|c| {
            let body = format!("0\r\n\r\n{}", smuggled(c));
            outer(
                c,
                "POST",
                "HTTP/1.1",
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len()
                ),
                body.as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE.CL: chunk carries the smuggled request, Content-Length 4",
        &|c| {
            let body = format!("{}0\r\n\r\n", chunk(&smuggled(c)));
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                body.as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "TE: xchunked",
        &|c| {
            let body = format!("0\r\n\r\n{}", smuggled(c));
            outer(
                c,
                "POST",
                "HTTP/1.1",
                &format!(
                    "Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n",
                    body.len()
                ),
                body.as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE: chunked, identity",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked, identity\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "two TE fields, identity last",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "space before the colon",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding : chunked\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE: identity (HTTP/1.1)",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: identity\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE: \"chunked\" quoted",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: \"chunked\"\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE chunked after obs-fold",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: identity\r\n chunked\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE: chunked with a vertical tab",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: \x0bchunked\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "TE: CHUNKED (case-insensitive coding)",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: CHUNKED\r\n",
                format!("{}0\r\n\r\n{}", chunk("{}"), smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "TE with a tab before chunked",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding:\tchunked\r\n",
                format!("{}0\r\n\r\n{}", chunk("{}"), smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "TE: chunked on HTTP/1.0",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.0",
                "Transfer-Encoding: chunked\r\n",
                format!("0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "two different Content-Lengths",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 2\r\nContent-Length: 40\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length list 2, 40",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 2, 40\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length +2",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: +2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length -1",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: -1\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length 0x2",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 0x2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length 2 2 (space inside)",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 2 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length overflowing u64",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 99999999999999999999999\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Content-Length with a NUL",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 2\x00\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "duplicate equal Content-Lengths, then a pipelined smuggle",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 2\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "Content-Length 002 (leading zeros), then a pipelined smuggle",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 002\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "Content-Length 0, smuggled request as the next message",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length: 0\r\n",
                smuggled(c).as_bytes(),
            )
        },
        Framing::Forwarded(b""),
    );
    add(
        "GET with a Content-Length body holding a request",
        &|c| {
            let body = smuggled(c);
            outer(
                c,
                "GET",
                "HTTP/1.1",
                &format!("Content-Length: {}\r\n", body.len()),
                body.as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "chunk extension",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("2;ext=\"x\"\r\n{{}}\r\n0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "chunk size with leading zeros",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("0002\r\n{{}}\r\n0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "chunk size overflowing u64",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("FFFFFFFFFFFFFFFFFFFF\r\n{{}}\r\n0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "chunk longer than its size",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("2\r\n{{}}{}\r\n0\r\n\r\n", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "chunk size with a negative sign",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("-2\r\n{{}}\r\n0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "smuggled request in the trailer section",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("{}0\r\n{}", chunk("{}"), smuggled(c)).as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "bare LF line endings throughout",
        &|c| {
            let text = format!(
                "POST /Users?case={c} HTTP/1.1\nHost: gw\n{}\nContent-Length: 2\n\n{{}}{}",
                auth_line(),
                smuggled(c)
            );
            text.into_bytes()
        },
        Framing::Either,
    );
    add(
        "bare LF after the chunk size",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                format!("2\n{{}}\r\n0\r\n\r\n{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Either,
    );
    add(
        "obs-fold continuation line",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "X-Folded: a\r\n b\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "NUL in a header value",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "X-Nul: a\x00b\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "bare CR in a header value",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "X-Cr: a\rb\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "header name with a trailing tab",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Content-Length\t: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Refused,
    );
    add(
        "Connection nominates Transfer-Encoding",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                format!("{}0\r\n\r\n{}", chunk("{}"), smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "Connection nominates Content-Length",
        &|c| {
            outer(
                c,
                "POST",
                "HTTP/1.1",
                "Connection: Content-Length\r\nContent-Length: 2\r\n",
                format!("{{}}{}", smuggled(c)).as_bytes(),
            )
        },
        Framing::Forwarded(b"{}"),
    );
    add(
        "request line with a space in the target",
        &|c| {
            let mut out = format!("POST /Users?case={c} x HTTP/1.1\r\nHost: gw\r\n{}\r\nContent-Length: 2\r\n\r\n{{}}", auth_line()).into_bytes();
            out.extend(smuggled(c).into_bytes());
            out
        },
        Framing::Refused,
    );

    let mut tasks = Vec::new();
    for (case, (name, bytes, _)) in cases.iter().enumerate() {
        let (addr, bytes, name) = (gw.proxy_addr, bytes.clone(), *name);
        tasks.push(tokio::spawn(async move {
            let ex = wire::exchange_all(addr, &bytes, Duration::from_secs(4))
                .await
                .unwrap_or_else(|e| panic!("case {case} {name}: {e}"));
            (case, ex)
        }));
    }
    let mut exchanges = Vec::new();
    for t in tasks {
        exchanges.push(t.await.expect("smuggling task"));
    }
    let recorded = settle(&upstream).await;
    let mut failures = Vec::new();
    for rec in &recorded {
        if rec.target.contains("Smuggled") || rec.method != "POST" && rec.method != "GET" {
            failures.push(format!(
                "SMUGGLED to the upstream: {} {}",
                rec.method, rec.target
            ));
        }
        assert_eq!(rec.header_all("host"), vec![upstream.authority()]);
    }
    for (case, ex) in &exchanges {
        let (name, _, framing) = &cases[*case];
        for r in &ex.responses {
            crate::support::Response::from(r.clone()).assert_free_of(&gw.sentinels());
        }
        let marker = format!("case={case}");
        let mine: Vec<&Recorded> = recorded
            .iter()
            .filter(|r| r.target.ends_with(&marker))
            .collect();
        let complete: Vec<&&Recorded> = mine.iter().filter(|r| r.complete).collect();
        if complete.len() > 1 {
            failures.push(format!("{name}: forwarded {} times", complete.len()));
        }
        let statuses = ex.statuses();
        match framing {
            Framing::Refused if !complete.is_empty() => {
                failures.push(format!("{name}: forwarded, statuses {statuses:?}"));
            }
            Framing::Refused if statuses.first().is_some_and(|s| *s < 400) => {
                failures.push(format!("{name}: statuses {statuses:?}"));
            }
            Framing::Forwarded(body) => match complete.first() {
                Some(rec) if rec.body == *body => {}
                Some(rec) => failures.push(format!(
                    "{name}: forwarded body {:?}, want {:?}",
                    String::from_utf8_lossy(&rec.body),
                    String::from_utf8_lossy(body)
                )),
                None => failures.push(format!("{name}: not forwarded, statuses {statuses:?}")),
            },
            Framing::Either | Framing::Refused => {}
        }
        // Any response after the first is to a request the gateway parsed itself: it carried no
        // token, so it must be refused.
        for s in statuses.iter().skip(1) {
            if *s < 400 {
                failures.push(format!(
                    "{name}: a second message on the connection got {s}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "smuggling corpus:\n{}",
        failures.join("\n")
    );
    assert!(gw.is_running(), "the gateway died");
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200);
}

/// T31 ★ Decision pinned: Transfer-Encoding together with Content-Length is refused with a SCIM
/// 400 before hyper or the upstream sees it, and the connection is closed (RFC 9112 §6.3 allows
/// refusing; nothing after the head is ever parsed as a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_te_and_cl_is_refused_and_the_connection_closed() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let smuggle = "GET /Smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let body = format!("2\r\n{{}}\r\n0\r\n\r\n{smuggle}");
    let request = format!(
        "POST /Users HTTP/1.1\r\nHost: gw\r\n{}\r\nContent-Type: application/scim+json\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        auth_line(),
        body.len()
    );
    let ex = wire::exchange_all(gw.proxy_addr, request.as_bytes(), Duration::from_secs(5))
        .await
        .expect("exchange");
    assert_eq!(ex.statuses(), vec![400], "one response only");
    assert!(
        ex.closed,
        "the connection must be closed after a TE+CL request"
    );
    crate::support::Response::from(ex.responses[0].clone()).assert_scim_error(400);
    assert_eq!(upstream.hits(), 0, "a TE+CL request reached the upstream");
}

/// T32 Oversized heads → 431 from hyper (64 KiB head, 100 fields), HTTP/2 header lists over
/// 64 KiB refused; auth is decided before the body is read: no `100 Continue` and no buffering
/// for a bad token; declared bodies over `max_body_bytes` → 413; memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_oversized_input_and_auth_before_body() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("server", "max_body_bytes", "1048576")).await;
    let auth = auth_line();
    let rss_before = rss_kib(gw.pid());
    let mut table = Table::new();
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    let huge: String = (0..100)
        .map(|i| format!("X-Huge{i}: {}\r\n", "b".repeat(4000)))
        .collect();
    for (name, extra) in [
        ("101 header fields", many),
        ("one 64 KiB field", big),
        ("400 KiB head", huge),
    ] {
        let request = format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\n{extra}Connection: close\r\n\r\n"
        );
        match wire::raw_exchange(gw.proxy_addr, request.as_bytes(), Duration::from_secs(5)).await {
            Ok(raw) => table.check(
                name,
                &crate::support::Response::from(raw),
                Expect::Framing(431),
                "",
            ),
            // The server may close before the client reads the 431 (unread request bytes → RST).
            Err(e) if e.kind() != std::io::ErrorKind::TimedOut => {}
            Err(e) => table.fail(name, e),
        }
    }
    table.finish();

    // Bad token + Expect: 100-continue: the answer is 401, not an invitation to send the body.
    let bad = "Authorization: Bearer a.b.c";
    let mut conn = RawConn::connect(gw.proxy_addr).await.expect("connect");
    conn.send(
        format!(
            "POST /Users HTTP/1.1\r\nHost: gw\r\n{bad}\r\nExpect: 100-continue\r\n\
             Content-Type: application/scim+json\r\nContent-Length: 1000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send head");
    let started = Instant::now();
    let head = conn
        .head(Duration::from_secs(3))
        .await
        .expect("response head");
    assert!(
        head.start_line.contains(" 401 "),
        "first line {:?}",
        head.start_line
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Declared body over the limit: 413 before auth or body; streamed past it with a bad token:
    // 401 at once.
    let r = gw
        .raw(
            format!(
                "POST /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Length: 1073741824\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    r.assert_scim_error(413);
    let mut conn = RawConn::connect(gw.proxy_addr).await.expect("connect");
    conn.send(
        format!("POST /Users HTTP/1.1\r\nHost: gw\r\n{bad}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("send head");
    let chunk = format!("100000\r\n{}\r\n", "z".repeat(0x100000));
    let _ = conn.send(chunk.as_bytes()).await;
    let r = conn
        .response(Duration::from_secs(5))
        .await
        .expect("response");
    assert_eq!(r.status, 401);

    // HTTP/2 header list over 64 KiB: refused (431, stream or connection error), never forwarded.
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2");
    let bearer_value = auth.trim_start_matches("Authorization: ").to_owned();
    let filler = "c".repeat(8000);
    let mut headers = vec![("authorization", bearer_value.as_str())];
    let names: Vec<String> = (0..10).map(|i| format!("x-fill-{i}")).collect();
    for name in &names {
        headers.push((name.as_str(), filler.as_str()));
    }
    match h2
        .request("GET", "/Users", &headers, Bytes::new(), &[])
        .await
    {
        Ok(r) => assert!(
            r.status == 431 || r.status >= 400,
            "h2 80 KiB header list: {}",
            r.status
        ),
        Err(e) => assert!(!e.contains("no response within"), "{e}"),
    }

    // Memory: a bounded loop of large heads and refused bodies.
    for _ in 0..20 {
        let request = format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\n{bad}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(60_000)
        );
        let _ = wire::raw_exchange(gw.proxy_addr, request.as_bytes(), Duration::from_secs(5)).await;
    }
    let rss_after = rss_kib(gw.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(upstream.hits(), 0);
}

/// T33 Slow clients: slow headers are cut by `server.header_read_timeout`, slow bodies by
/// `server.request_timeout` (408); a bad token is refused without waiting for the body;
/// legitimate traffic is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_slow_clients_and_connection_exhaustion() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.set("server", "header_read_timeout", "\"1s\"").set(
        "server",
        "request_timeout",
        "\"2s\"",
    );
    let gw = Gateway::start(cfg).await;
    let addr = gw.proxy_addr;

    // Slowloris: one header byte every 200 ms.
    let slowloris = tokio::spawn(async move {
        let mut conn = RawConn::connect(addr).await.expect("connect");
        let started = Instant::now();
        conn.send(b"GET /Users HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
            .await
            .expect("send");
        while started.elapsed() < Duration::from_secs(6) {
            if conn.send(b"a").await.is_err()
                || conn.closed_within(Duration::from_millis(200)).await
            {
                return started.elapsed();
            }
        }
        panic!("slowloris connection still open after 6 s");
    });
    // Slow body with a valid token: 408 once request_timeout passes.
    let auth = auth_line();
    let slow_body = tokio::spawn(async move {
        let mut conn = RawConn::connect(addr).await.expect("connect");
        conn.send(format!("POST /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{").as_bytes())
            .await
            .expect("send");
        let started = Instant::now();
        loop {
            match conn.response(Duration::from_millis(300)).await {
                Ok(r) => return (r.status, started.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    assert!(
                        started.elapsed() < Duration::from_secs(6),
                        "slow body never cut"
                    );
                    let _ = conn.send(b" ").await;
                }
                Err(e) => panic!("slow body: {e}"),
            }
        }
    });
    // Idle connections do not block service.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(RawConn::connect(addr).await.expect("idle connect"));
    }
    let started = Instant::now();
    let r = gw.get("/Users", Some(&Token::new().sign(ec_key()))).await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "normal request took {:?}",
        started.elapsed()
    );

    // Slow body with a bad token: refused at once.
    let mut conn = RawConn::connect(addr).await.expect("connect");
    conn.send(b"POST /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer a.b.c\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("send");
    let r = conn
        .response(Duration::from_secs(1))
        .await
        .expect("401 without the body");
    assert_eq!(r.status, 401);

    let cut = slowloris.await.expect("slowloris task");
    assert!(cut < Duration::from_secs(3), "slow head cut after {cut:?}");
    let (status, took) = slow_body.await.expect("slow body task");
    assert_eq!(status, 408, "slow body");
    assert!(
        took < Duration::from_secs(4),
        "slow body cut after {took:?}"
    );
    // A keep-alive connection that goes idle after a request is closed by header_read_timeout.
    let mut conn = RawConn::connect(addr).await.expect("connect");
    conn.send(format!("GET /Users HTTP/1.1\r\nHost: gw\r\n{}\r\n\r\n", auth_line()).as_bytes())
        .await
        .expect("send");
    assert_eq!(
        conn.response(Duration::from_secs(5))
            .await
            .expect("response")
            .status,
        200
    );
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "an idle keep-alive connection outlived header_read_timeout"
    );
    drop(idle);
    // The upstream saw the two valid requests and possibly the slow body's head, nothing else.
    assert!(upstream.hits() <= 3);
}

/// T33 Connections that send nothing, or only part of the HTTP/2 preface, are closed within
/// `server.header_read_timeout` like any other slow head (else they pin sockets forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_silent_connections_are_closed() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let cfg = cfg.set("server", "header_read_timeout", "\"1s\"");
    let gw = Gateway::start(cfg).await;
    let mut silent = RawConn::connect(gw.proxy_addr).await.expect("connect");
    let mut partial = RawConn::connect(gw.proxy_addr).await.expect("connect");
    partial.send(b"PRI * HT").await.expect("send");
    let (a, b) = tokio::join!(
        silent.closed_within(Duration::from_secs(4)),
        partial.closed_within(Duration::from_secs(4))
    );
    assert!(a, "a connection that sent nothing is still open after 4 s");
    assert!(
        b,
        "a connection that sent a partial h2 preface is still open after 4 s"
    );
}

/// T33 Thousands of open connections: `server.max_connections` bounds how many are served at
/// once. At the limit the next connection waits in the listen backlog, unanswered, and is served
/// as soon as an open one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_connections_beyond_max_connections_wait_for_a_free_slot() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("server", "max_connections", "2")).await;
    let request = format!("GET /Users HTTP/1.1\r\nHost: gw\r\n{}\r\n\r\n", auth_line());
    // Two keep-alive connections, each served once and left open: the limit.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConn::connect(gw.proxy_addr).await.expect("connect");
        conn.send(request.as_bytes()).await.expect("send");
        let r = conn.response(Duration::from_secs(5)).await.expect("served");
        assert_eq!(r.status, 200);
        open.push(conn);
    }
    // A third: the kernel completes the handshake, scimgate does not take it.
    let mut third = RawConn::connect(gw.proxy_addr).await.expect("connect");
    third.send(request.as_bytes()).await.expect("send");
    let waited = third.response(Duration::from_millis(500)).await;
    assert!(
        waited
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        "a connection over the limit was served: {:?}",
        waited.map(|r| r.status)
    );
    assert_eq!(upstream.hits(), 2);
    // Operators see the saturation (the admin listener is not counted).
    let text = scrape(&gw).await;
    assert_eq!(
        metric(&text, "scimgate_connections_open"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "scimgate_connections_max"),
        Some(2.0),
        "{text}"
    );
    // One closes: the waiting connection is accepted and its request answered.
    drop(open.pop());
    let r = third
        .response(Duration::from_secs(5))
        .await
        .expect("served once a slot freed");
    assert_eq!(r.status, 200);
    assert_eq!(upstream.hits(), 3);
    // All closed: none counted, once the server has seen each end.
    drop((open, third));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = metric(&scrape(&gw).await, "scimgate_connections_open");
        if open == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "still counted open: {open:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Frames for `GET /Users` on `stream` without a token.
fn get_users(stream: u32, flags: u8) -> Vec<u8> {
    h2client::frame(
        h2client::HEADERS,
        flags,
        stream,
        &h2client::header_block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/Users"),
            (":authority", "gw"),
        ]),
    )
}

/// After a flood: the process is alive and serves a normal request.
async fn assert_serving(gw: &mut Gateway) {
    assert!(gw.is_running(), "the gateway died");
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200);
}

/// T34 HTTP/2 resource floods with bounded frame counts: SETTINGS advertise the limits (100
/// streams, 64 KiB header list); Rapid Reset, HEADERS+RST_STREAM, CONTINUATION, empty DATA and
/// PING floods end in errors or GOAWAY, never in forwarded requests or a dead process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t34_http2_resource_floods() {
    let (_jwks, upstream, cfg) = fixture().await;
    let mut gw = Gateway::start(cfg).await;
    let addr = gw.proxy_addr;

    let mut raw = RawH2::connect(addr).await.expect("raw h2");
    let settings = raw
        .read_frame(Duration::from_secs(5))
        .await
        .expect("server SETTINGS");
    assert_eq!(settings.kind, h2client::SETTINGS);
    let params = h2client::settings_params(&settings);
    assert!(
        params.contains(&(0x3, 100)),
        "MAX_CONCURRENT_STREAMS: {params:?}"
    );
    assert!(
        params.contains(&(0x6, 64 * 1024)),
        "MAX_HEADER_LIST_SIZE: {params:?}"
    );
    let h2 = H2::connect(addr).await.expect("h2");
    tokio::time::timeout(Duration::from_secs(2), async {
        while h2.max_send_streams() != 100 {
            let _ = h2.request("GET", "/Users", &[], Bytes::new(), &[]).await;
        }
    })
    .await
    .expect("the client adopts the server's stream limit");

    // Rapid Reset (CVE-2023-44487): open and cancel 2000 streams.
    let h2 = H2::connect(addr).await.expect("h2");
    let started = Instant::now();
    for _ in 0..2000 {
        if h2.open_and_reset("/Users", &[]).await.is_err() {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_serving(&mut gw).await;

    // HEADERS + RST_STREAM flood (CVE-2023-26964).
    let mut raw = RawH2::connect(addr).await.expect("raw h2");
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let stream = 2 * i + 1;
        burst.extend(get_users(
            stream,
            h2client::END_HEADERS | h2client::END_STREAM,
        ));
        burst.extend(h2client::frame(
            h2client::RST_STREAM,
            0,
            stream,
            &8u32.to_be_bytes(),
        ));
    }
    let _ = raw.send(&burst).await;
    let _ = raw.drain(Duration::from_secs(3)).await;
    assert_serving(&mut gw).await;

    // CONTINUATION flood (RUSTSEC-2024-0332): a header block that never ends.
    let mut raw = RawH2::connect(addr).await.expect("raw h2");
    let mut flood = get_users(1, 0);
    let junk = h2client::header_block(&[("x-junk", &"j".repeat(100))]);
    for _ in 0..5000 {
        flood.extend(h2client::frame(h2client::CONTINUATION, 0, 1, &junk));
    }
    let writer = tokio::spawn(async move {
        let _ = raw.send(&flood).await;
        raw.drain(Duration::from_secs(5)).await
    });
    let (frames, closed) = writer.await.expect("continuation task");
    assert!(
        closed || frames.iter().any(|f| f.kind == h2client::GOAWAY),
        "a CONTINUATION flood of 550 KB did not end the connection"
    );
    assert_serving(&mut gw).await;

    // Empty DATA frames (RUSTSEC-2026-0258) on an open request stream, and a PING flood.
    let mut raw = RawH2::connect(addr).await.expect("raw h2");
    let mut flood = h2client::frame(
        h2client::HEADERS,
        h2client::END_HEADERS,
        1,
        &h2client::header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/Users"),
            (":authority", "gw"),
        ]),
    );
    for _ in 0..20_000 {
        flood.extend(h2client::frame(h2client::DATA, 0, 1, &[]));
    }
    for i in 0..2000u64 {
        flood.extend(h2client::frame(h2client::PING, 0, 0, &i.to_be_bytes()));
    }
    let _ = raw.send(&flood).await;
    let _ = raw.drain(Duration::from_secs(3)).await;
    assert_serving(&mut gw).await;

    // Only the assert_serving requests were forwarded.
    assert_eq!(upstream.hits(), 4);
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| r.method == "GET" && r.target == format!("{BASE_PATH}/Users")),
        "a flood request reached the upstream"
    );
}
