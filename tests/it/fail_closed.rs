//! Fail closed (issue 14, SECURITY.md T46–T52): scimgate forwards only what it parsed and
//! authorized, and nothing of the service account key leaves in any part of any response. Each
//! test is the request an attacker run used against the release binary, plus its variants.

use std::sync::{Arc, Mutex};

use crate::support::{Gateway, Token, Upstream, fixture, rsa_key, toml_str};
use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A rule that may only read, search and use `/Bulk` (the attack run's worst case).
const READ_AND_BULK: &str = "[[rules]]\nname = \"readers\"\nclaim = \"groups\"\nvalue = \"scim-readers\"\n\
     service_account = \"provisioner\"\nallow = [\"read\", \"search\", \"bulk\"]\n";
/// A rule limited to Groups.
const GROUPS_ONLY: &str = "[[rules]]\nname = \"groups\"\nclaim = \"groups\"\nvalue = \"scim-groups\"\n\
     service_account = \"provisioner\"\nresource_types = [\"Groups\"]\n";

fn token(group: &str) -> String {
    Token::new().claim("groups", json!([group])).sign(rsa_key())
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

/// Starts a gateway whose only rules are `rules` (the default provisioner rule is replaced).
async fn gateway(rules: &str, extra: &str) -> (Gateway, Upstream) {
    let (_jwks, upstream, cfg) = fixture().await;
    // The JWKS server must outlive the gateway's first fetch: leak it for the test's life.
    std::mem::forget(_jwks);
    let cfg = cfg.extra(rules).extra(extra);
    (Gateway::start(cfg).await, upstream)
}

// === T46: /Bulk member names are case-insensitive ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t46_bulk_member_names_fold_and_every_operation_is_judged() {
    let (gw, upstream) = gateway(READ_AND_BULK, "").await;
    let reader = token("scim-readers");
    let bodies = [
        // The attack run's request: a second, lower-case Operations array.
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"POST","path":"/Users","bulkId":"a","data":{}}],"operations":[{"method":"DELETE","path":"/Users/2"}]}"#,
        r#"{"OPERATIONS":[{"method":"DELETE","path":"/Users/2"}],"Operations":[]}"#,
        r#"{"Operations":[{"method":"POST","path":"/Users","Method":"DELETE"}]}"#,
        r#"{"Operations":[{"method":"POST","path":"/Users","PATH":"/Users/2"}]}"#,
        r#"{"Oper\u0061tions":[],"operations":[{"method":"DELETE","path":"/Users/2"}]}"#,
        // Said once, but the operation itself is not allowed, in any spelling.
        r#"{"OPERATIONS":[{"METHOD":"delete","Path":"/users/2"}]}"#,
        r#"{"Operations":[{"method":"DELETE","path":"/Users/1/Groups/2"}]}"#,
        r#"{"Operations":[{"method":"POST","path":"/Bulk","data":{}}]}"#,
        r#"{"Operations":[{"method":"GET","path":"/Users/1"}]}"#,
        "\u{feff}{\"Operations\":[]}",
        r#"{"Operations":[]} /* trailing */"#,
        "{\"Operation\u{17f}\":[{\"method\":\"DELETE\",\"path\":\"/Users/2\"}],\"Operations\":[]}",
    ];
    for body in bodies {
        let r = gw
            .request(
                "POST",
                "/Bulk",
                &[
                    ("authorization", &auth(&reader)),
                    ("content-type", "application/scim+json"),
                ],
                Bytes::from(body),
            )
            .await;
        assert!(
            matches!(r.status, 400 | 403),
            "{body}: {} {}",
            r.status,
            r.text()
        );
    }
    // A body that cannot be read with certainty: declared in another charset, or coded.
    for (content_type, encoding) in [
        ("application/scim+json; charset=utf-7", None),
        ("application/scim+json; charset=\"UTF-16\"", None),
        ("text/plain", None),
        ("application/scim+json", Some("gzip")),
    ] {
        let mut headers = vec![
            ("authorization", auth(&reader)),
            ("content-type", content_type.to_owned()),
        ];
        if let Some(e) = encoding {
            headers.push(("content-encoding", e.to_owned()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = gw
            .request(
                "POST",
                "/Bulk",
                &headers,
                Bytes::from(r#"{"Operations":[]}"#),
            )
            .await;
        r.assert_scim_error(415);
    }
    assert_eq!(
        upstream.hits(),
        0,
        "a refused bulk request reached the upstream"
    );
    // The same rule, an allowed operation, spelled in other cases: forwarded byte-exact.
    let ok = r#"{"operations":[{"METHOD":"post","path":"/users","bulkId":"x","data":{}}]}"#;
    let r = gw
        .request(
            "POST",
            "/Bulk",
            &[
                (
                    "authorization",
                    &auth(&token(crate::support::mint::PROVISIONER_GROUP)),
                ),
                ("content-type", "application/scim+json; charset=utf-8"),
            ],
            Bytes::from(ok),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.only_request().body, ok.as_bytes());
}

// === T47: the whole path is parsed against the SCIM grammar ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t47_paths_outside_the_grammar_never_reach_the_backend() {
    let (gw, upstream) = gateway(GROUPS_ONLY, "").await;
    let groups = token("scim-groups");
    let admin = token(crate::support::mint::PROVISIONER_GROUP);
    let cases: &[(&str, &str, u16)] = &[
        // The attack run's request: the classifier used to read only the end.
        ("DELETE", "/Users/1/Groups/2", 404),
        ("DELETE", "/Groups/2/Users/1", 404),
        ("GET", "/scim/v2/Groups", 404),
        ("DELETE", "/Users.json/1", 404),
        ("GET", "/Groups.json", 404),
        ("GET", "/Groups.", 404),
        ("GET", "/Groups%20", 404),
        ("DELETE", "/%55sers/1", 400),
        ("DELETE", "/Users/%2e%2e/Groups/1", 400),
        ("DELETE", "/Groups/1/", 400),
        ("DELETE", "/Groups//1", 400),
        ("GET", "/Groups/1%00", 400),
        ("GET", "/Groups/%+1", 400),
        ("GET", "/Me/Groups", 404),
        ("GET", "/Bulk", 405),
        ("PUT", "/Groups", 405),
        ("OPTIONS", "/Groups", 405),
        ("POST", "/Groups/1", 405),
    ];
    for (method, path, status) in cases {
        for who in [&groups, &admin] {
            let r = gw
                .request(method, path, &[("authorization", &auth(who))], Bytes::new())
                .await;
            r.assert_scim_error(*status);
        }
        // Refused before authentication: no token needed to learn it is not an endpoint.
        let r = gw.request(method, path, &[], Bytes::new()).await;
        assert_eq!(r.status, *status, "{method} {path} without a token");
    }
    assert_eq!(
        upstream.hits(),
        0,
        "a path outside the grammar reached the upstream"
    );
    let r = gw
        .request(
            "DELETE",
            "/Users/1",
            &[("authorization", &auth(&groups))],
            Bytes::new(),
        )
        .await;
    r.assert_insufficient_scope();
    let r = gw
        .request(
            "DELETE",
            "/groups/2",
            &[("authorization", &auth(&groups))],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.only_request().target, "/scim/v2/groups/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t47_backend_resource_types_and_the_path_prefix_are_configured() {
    let rules = "[[rules]]\nname = \"devices\"\nclaim = \"groups\"\nvalue = \"scim-devices\"\n\
         service_account = \"provisioner\"\nresource_types = [\"Devices\"]\n";
    let extra = "";
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .set("upstream", "resource_types", "[\"Devices\"]")
        .set("server", "path_prefix", &toml_str("/scim/v2"))
        .extra(rules)
        .extra(extra);
    let gw = Gateway::start(cfg).await;
    let devices = token("scim-devices");
    let a = auth(&devices);
    let r = gw
        .request(
            "DELETE",
            "/scim/v2/Devices/7",
            &[("authorization", &a)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.only_request().target, "/scim/v2/Devices/7");
    let r = gw
        .request(
            "GET",
            "/scim/v2/Users",
            &[("authorization", &a)],
            Bytes::new(),
        )
        .await;
    r.assert_insufficient_scope();
    for path in [
        "/Devices/7",
        "/scim/v2/Devices/7/Users/1",
        "/scim/v2/Gadgets/1",
    ] {
        let r = gw
            .request("DELETE", path, &[("authorization", &a)], Bytes::new())
            .await;
        r.assert_scim_error(404);
    }
    assert_eq!(upstream.hits(), 1);
}

// === T48: headers reach the backend by allow-list; no method overrides ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t48_only_allow_listed_headers_reach_the_backend() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.set("server", "forward_headers", "[\"X-Tenant-Hint\"]");
    let gw = Gateway::start(cfg).await;
    let t = token(crate::support::mint::PROVISIONER_GROUP);
    let a = auth(&t);
    let sent = [
        ("authorization", a.as_str()),
        ("accept", "application/scim+json"),
        ("if-match", "W/\"3\""),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("user-agent", "Okta SCIM Client 1.0.0"),
        ("x-tenant-hint", "eu"),
        ("x-auth-request-user", "admin"),
        ("x-auth-request-email", "admin@example.com"),
        ("x-remote-group", "admins"),
        ("x-webauth-user", "admin"),
        ("x-goog-authenticated-user-email", "admin@example.com"),
        ("x-amzn-oidc-identity", "admin"),
        ("x-scim-role", "admin"),
        ("x-original-method", "DELETE"),
        ("x-original-uri", "/Users/1"),
        ("true-client-ip", "127.0.0.1"),
        ("x-http-method-override", "DELETE"),
        ("cookie", "session=admin"),
        ("accept-encoding", "gzip, br"),
    ];
    let r = gw.request("GET", "/Users", &sent, Bytes::new()).await;
    assert_eq!(r.status, 200);
    let req = upstream.only_request();
    let mut names: Vec<&str> = req.header_names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "accept-encoding",
            "authorization",
            "host",
            "if-match",
            "traceparent",
            "user-agent",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-request-id",
            "x-tenant-hint",
        ]
    );
    assert_eq!(req.header_one("accept-encoding"), "identity");
    // The access line names what was dropped at debug level (names, never values).
    let lines = gw
        .wait_for_logs(
            |l| l.contains("x-webauth-user"),
            1,
            std::time::Duration::from_secs(5),
        )
        .await;
    assert!(!lines.iter().any(|l| l.contains("admin@example.com")));

    // A method-override parameter, in any spelling a framework reads, is refused.
    for query in [
        "_method=DELETE",
        "_METHOD=DELETE",
        "%5Fmethod=DELETE",
        ".method=DELETE",
        "+_method=DELETE",
        "a=1&x-http-method-override=DELETE",
        "a=1;_method=DELETE",
        "%zz=1",
    ] {
        let path = format!("/Users?{query}");
        let r = gw
            .request("GET", &path, &[("authorization", &a)], Bytes::new())
            .await;
        r.assert_scim_error(400);
    }
    assert_eq!(upstream.hits(), 1);
}

// === T49: the key never leaves in a response ===

/// An upstream that answers every request with `response` (raw HTTP/1.1 bytes), where the text
/// `KEY` is replaced by the key set later.
#[derive(Clone)]
struct RawUpstream {
    url: String,
    response: Arc<Mutex<Vec<u8>>>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/scim/v2", listener.local_addr().expect("addr"));
        let response: Arc<Mutex<Vec<u8>>> = Arc::default();
        let shared = Arc::clone(&response);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(head)) = crate::support::wire::read_head(&mut reader).await {
                        let _ = crate::support::wire::read_body(&mut reader, &head, false).await;
                        let bytes = shared.lock().expect("lock").clone();
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, response }
    }

    /// Answers with `head` (status line and fields, `KEY` replaced) and `body` (likewise),
    /// framed by Content-Length.
    fn answer(&self, head: &str, body: &str, key: &str) {
        let body = body.replace("KEY", key);
        let head = head.replace("KEY", key);
        let raw = format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        *self.response.lock().expect("lock") = raw.into_bytes();
    }

    fn answer_bytes(&self, bytes: Vec<u8>) {
        *self.response.lock().expect("lock") = bytes;
    }
}

/// `KEY` in raw bytes replaced by the key.
trait ReplaceKey {
    fn replace_key(self, key: &str) -> Vec<u8>;
}

impl ReplaceKey for Vec<u8> {
    fn replace_key(self, key: &str) -> Vec<u8> {
        String::from_utf8_lossy(&self)
            .replace("KEY", key)
            .into_bytes()
    }
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_the_key_is_screened_in_every_response_part() {
    let (_jwks, _unused, cfg) = fixture().await;
    let upstream = RawUpstream::start().await;
    let cfg = cfg.set("upstream", "url", &toml_str(&upstream.url));
    let gw = Gateway::start(cfg).await;
    let key = gw.sentinel().to_owned();
    let t = token(crate::support::mint::PROVISIONER_GROUP);
    let a = auth(&t);
    let headers = [("authorization", a.as_str())];
    let get = || gw.request("GET", "/Users", &headers, Bytes::new());

    // A gzip-coded error body (the screen used to search the compressed bytes).
    let body = gzip(&format!("{{\"detail\":\"bad credential Bearer {key}\"}}"));
    let mut raw = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/scim+json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    upstream.answer_bytes(raw);
    get().await.assert_scim_error(502);
    // The same, percent-encoded or JSON-escaped; a coding scimgate cannot decode.
    for (head, body) in [
        ("HTTP/1.1 302 Found\r\nlocation: /Users", "redirect key=KEY"),
        ("HTTP/1.1 301 Moved\r\nlocation: /Users", r#"{"k":"KEY"}"#),
        (
            "HTTP/1.1 500 Internal Server Error\r\ncontent-encoding: br",
            "not-a-br!",
        ),
        ("HTTP/1.1 200 OK\r\ncontent-encoding: gzip, gzip", "x"),
    ] {
        upstream.answer(head, body, &key);
        get().await.assert_scim_error(502);
    }

    let encoded: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = format!("{{\"detail\":\"{encoded}\"}}");
    upstream.answer_bytes(
        format!(
            "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let r = get().await;
    r.assert_scim_error(502);
    assert!(!r.text().contains(&encoded));

    // A 2xx body streamed in chunks with the key split across two of them: cut, never sent.
    let half = key.len() / 2;
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{{\"echo\":\"{}\r\n{:x}\r\n{}\"}}\r\n0\r\n\r\n",
        10 + half,
        &key[..half],
        key.len() - half + 2,
        &key[half..]
    );
    upstream.answer_bytes(raw.into_bytes());
    let r = gw
        .raw(
            format!(
                "GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert!(!r.text().contains(&key[..half.max(8)]), "{}", r.text());

    // A key in a header name, and in HTTP/1.1 trailers relayed to HTTP/1.1 and HTTP/2 callers.
    upstream.answer_bytes(
        b"HTTP/1.1 200 OK\r\nx-KEY: 1\r\ncontent-type: application/scim+json\r\ntransfer-encoding: chunked\r\ntrailer: x-debug\r\n\r\n2\r\n{}\r\n0\r\nx-debug: Bearer KEY\r\n\r\n"
            .to_vec()
            .replace_key(&key),
    );
    let r = gw
        .raw(format!("GET /Users HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.headers
            .iter()
            .any(|(n, _)| n.to_ascii_lowercase().contains(&key.to_ascii_lowercase()))
    );
    let (status, trailers) = h2_trailers(&gw, &a).await;
    assert_eq!(status, 200);
    assert!(!trailers.contains(&key), "trailers: {trailers}");
    gw.assert_logs_free_of(&[]);
}

/// `GET /Users` over HTTP/2; the status and every trailer as text.
async fn h2_trailers(gw: &Gateway, authorization: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr)
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut send = send.ready().await.expect("ready");
    let request = http::Request::builder()
        .uri("http://gw/Users")
        .header("authorization", authorization)
        .body(())
        .expect("request");
    let (response, _) = send.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body
        .trailers()
        .await
        .ok()
        .flatten()
        .map(|t| format!("{t:?}"));
    (status, trailers.unwrap_or_default())
}
