//! The HTTP/1 front (issue 15 §1), black-box against the real binary: the query bytes real IdP
//! clients send raw are forwarded (escaped where the HTTP stack demands it) and classify as
//! before; every request head scimgate refuses itself (malformed, too large, an unusable target,
//! ambiguous framing) is answered with a SCIM error, an access line and a metric; message
//! boundaries are where hyper puts them, however the bytes arrive.

use std::time::Duration;

use crate::support::observe::{metric_or_zero, scrape, wait_access_lines};
use crate::support::pieces::{self, exchange_in_pieces, tls_exchange};
use crate::support::upstream::BASE_PATH;
use crate::support::wire::{self, Exchange, RawResponse};
use crate::support::{Gateway, GatewayConfig, TempDir, Token, fixture, rsa_key};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn auth_line() -> String {
    format!("Authorization: Bearer {}", Token::new().sign(rsa_key()))
}

/// A GET with a valid token and `Connection: close`, the target exactly as given.
fn get(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw\r\n{}\r\nUser-Agent: Microsoft.Identity.Provisioning\r\nConnection: close\r\n\r\n",
        auth_line()
    )
    .into_bytes()
}

async fn exchange(gw: &Gateway, request: &[u8]) -> Exchange {
    wire::exchange_all(gw.proxy_addr, request, WAIT)
        .await
        .expect("exchange")
}

/// A response scimgate produced itself for a refused head: the SCIM error (RFC 7644 §3.12) with
/// `status`, an `x-request-id`, `Connection: close`. Returns the request id.
fn assert_refused(r: &RawResponse, status: u16, what: &str) -> String {
    let response = crate::support::Response::from(r.clone());
    assert_eq!(
        response.status,
        status,
        "{what}: status; body {:?}",
        response.text()
    );
    response.assert_scim_error(status);
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{what}: connection"
    );
    let id = response
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{what}: no x-request-id"));
    assert!(!id.is_empty());
    id.to_owned()
}

/// The access line with this request id.
fn line_of<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["request_id"] == id)
        .unwrap_or_else(|| panic!("no access line for request id {id}"))
}

fn requests_total(text: &str, outcome: &str) -> f64 {
    metric_or_zero(
        text,
        &format!("scimgate_requests_total{{outcome=\"{outcome}\"}}"),
    )
}

/// Entra ID's lookup with raw `"` in the query (MicrosoftDocs/azure-docs#21660), and the other
/// bytes outside RFC 3986 that clients leave unencoded, are forwarded: `"` `<` `>` `#`
/// percent-encoded (the only way through the `http` crate, and the same bytes to a server that
/// decodes its query), everything else byte-exact. Before the front, hyper answered the raw `"`
/// with a bare 400 and an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_query_bytes_real_clients_send_are_forwarded() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let cases = [
        (
            "/Users?filter=externalId+eq+\"9edf7aa1-4f7a-4d8e-9c67-3e8f5f2b1c11\"",
            "/Users?filter=externalId+eq+%229edf7aa1-4f7a-4d8e-9c67-3e8f5f2b1c11%22",
        ),
        (
            "/Users?filter=userName eq \"a\"".replace(' ', "+").leak(),
            "/Users?filter=userName+eq+%22a%22",
        ),
        (
            "/Groups?excludedAttributes=members&filter=displayName+eq+\"Sales+<EMEA>+#1\"",
            "/Groups?excludedAttributes=members&filter=displayName+eq+%22Sales+%3CEMEA%3E+%231%22",
        ),
        (
            "/Users?filter=emails[type+eq+\"work\"]&x={a}|b^c`d\\e",
            "/Users?filter=emails[type+eq+%22work%22]&x={a}|b^c`d\\e",
        ),
        // Already encoded: passes exactly as sent.
        (
            "/Users?filter=userName%20eq%20%22a%22&startIndex=1&count=100",
            "/Users?filter=userName%20eq%20%22a%22&startIndex=1&count=100",
        ),
        // The query never moves the path: a `"` or `#` with dot-segments stays in the query
        // (before the front, `#` cut the query off silently).
        ("/Users?x=\"/../../Me", "/Users?x=%22/../../Me"),
        ("/Users?a#/../../Me", "/Users?a%23/../../Me"),
    ];
    for (sent, forwarded) in cases {
        let before = upstream.hits();
        let r = gw.raw(&get(sent)).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        upstream.wait_for_hits(before + 1, WAIT).await;
        let rec = upstream.requests().pop().expect("recorded");
        assert_eq!(rec.target, format!("{BASE_PATH}{forwarded}"), "{sent}");
    }
    assert_eq!(upstream.hits(), cases.len());
    // Classified and logged like any lookup (a read of Users), its query keys only.
    let lines = wait_access_lines(&gw, cases.len()).await;
    assert_eq!(lines[0]["outcome"], json!("forwarded"));
    assert_eq!(lines[0]["scim_operation"], json!("read"));
    assert_eq!(lines[0]["resource_type"], json!("Users"));
    assert_eq!(lines[0]["query_keys"], json!("filter"));
    assert_eq!(lines[5]["resource_type"], json!("Users"));
}

/// In the path, bytes outside RFC 3986 decide nothing: they are refused (400, SCIM error)
/// before authentication, even with a valid token, and never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_bytes_outside_rfc3986_are_refused_with_a_scim_error() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let targets = [
        "/Users/a\"b",
        "/Users/a|b",
        "/Users\\..\\Me",
        "/Me{x}",
        "/Users/[1]",
        "/Users/a^b",
        "/Users/a`b",
        "/Users/a<b>",
        "/Users#/../Me",
        "/Users/x#?filter=a",
    ];
    let before = requests_total(&scrape(&gw).await, "bad_request");
    for target in targets {
        let ex = exchange(&gw, &get(target)).await;
        assert_eq!(ex.statuses(), vec![400], "{target}");
        assert_refused(&ex.responses[0], 400, target);
        let body: Value = serde_json::from_slice(&ex.responses[0].body.bytes).expect("json");
        assert_eq!(
            body["detail"],
            json!("invalid request target: percent-encode characters outside RFC 3986 in the path")
        );
    }
    assert_eq!(upstream.hits(), 0, "a refused target reached the upstream");
    let after = requests_total(&scrape(&gw).await, "bad_request");
    assert_eq!(after - before, targets.len() as f64);
}

/// Heads hyper would answer with a bare 400 and no body are answered with a SCIM error, each
/// with its access line (what could be read of the request line; `-` and an empty path when
/// nothing could) and `scimgate_requests_total{outcome="bad_request"}`. The stand-in request
/// the front hands hyper has no power of its own: sent by a client, it is an ordinary request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_a_scim_error_an_access_line_and_a_metric() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("garbage request line", b"HELLO\r\n\r\n".to_vec(), "-", ""),
        (
            "TLS on the plaintext port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            "-",
            "",
        ),
        (
            "HTTP/2.0 request line",
            b"GET /Users HTTP/2.0\r\nHost: gw\r\n\r\n".to_vec(),
            "GET",
            "/Users",
        ),
        (
            "space inside the target",
            b"GET /Users x HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            "GET",
            "/Users",
        ),
        (
            "obs-fold",
            format!("GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Folded: a\r\n b\r\n\r\n")
                .into_bytes(),
            "GET",
            "/Users",
        ),
        (
            "NUL in a header value",
            b"GET /Groups HTTP/1.1\r\nHost: gw\r\nX: a\x00b\r\n\r\n".to_vec(),
            "GET",
            "/Groups",
        ),
        (
            "space before the colon",
            b"POST /Users HTTP/1.1\r\nHost: gw\r\nContent-Length : 2\r\n\r\n{}".to_vec(),
            "POST",
            "/Users",
        ),
        (
            "method with a separator",
            b"G(T /Users HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            "-",
            "",
        ),
        (
            "raw Latin-1 in the target",
            b"GET /Users?filter=displayName+eq+\"Zo\xeb\" HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
            "GET",
            "",
        ),
    ];
    let before = requests_total(&scrape(&gw).await, "bad_request");
    let mut ids = Vec::new();
    for (name, bytes, _, _) in &cases {
        let ex = exchange(&gw, bytes).await;
        assert_eq!(ex.statuses(), vec![400], "{name}");
        assert!(ex.closed, "{name}: connection left open");
        ids.push(assert_refused(&ex.responses[0], 400, name));
    }
    assert_eq!(upstream.hits(), 0);
    let lines = wait_access_lines(&gw, cases.len()).await;
    for ((name, _, method, path), id) in cases.iter().zip(&ids) {
        let line = line_of(&lines, id);
        assert_eq!(line["status"], json!(400), "{name}");
        assert_eq!(line["outcome"], json!("bad_request"), "{name}");
        assert_eq!(line["method"], json!(method), "{name}");
        if !path.is_empty() || *method == "-" {
            assert_eq!(line["path"], json!(path), "{name}");
        }
        assert_eq!(line["error"], json!("malformed request head"), "{name}");
    }
    let after = requests_total(&scrape(&gw).await, "bad_request");
    assert_eq!(after - before, cases.len() as f64);

    // The stand-in's bytes sent by a client: an ordinary request, judged by the grammar (`/` is
    // not a SCIM endpoint) and never forwarded.
    let r = gw.raw(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    r.assert_scim_error(404);
    assert_eq!(upstream.hits(), 0);
}

/// Heads over 64 KiB or 100 fields get 431 with a SCIM body (hyper sent a bare 431, or reset),
/// counted as `headers_too_large`. Just under the limit is still served, and escaping cannot
/// push a head past it into hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_with_a_scim_body() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    let big_field = format!(
        "GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let many_fields = format!(
        "GET /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\n{}\r\n",
        "X-F: 1\r\n".repeat(100)
    );
    // 30 000 raw quotes grow by 60 000 bytes when escaped: over the limit only after escaping.
    let escaped_over = format!(
        "GET /Users?filter={} HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n",
        "\"".repeat(30_000)
    );
    assert!(escaped_over.len() < 64 * 1024);
    let before = requests_total(&scrape(&gw).await, "headers_too_large");
    let mut ids = Vec::new();
    for (name, request) in [
        ("a 70 KiB field", &big_field),
        ("101 fields", &many_fields),
        ("over 64 KiB once escaped", &escaped_over),
    ] {
        let ex = exchange(&gw, request.as_bytes()).await;
        assert_eq!(ex.statuses(), vec![431], "{name}");
        ids.push(assert_refused(&ex.responses[0], 431, name));
    }
    assert_eq!(upstream.hits(), 0);
    let lines = wait_access_lines(&gw, 3).await;
    for id in &ids {
        let line = line_of(&lines, id);
        assert_eq!(line["outcome"], json!("headers_too_large"));
        assert_eq!(line["status"], json!(431));
    }
    let after = requests_total(&scrape(&gw).await, "headers_too_large");
    assert_eq!(after - before, 3.0);

    // Just under the limit, with escapes: forwarded.
    let under = format!(
        "GET /Users?filter={} HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "\"".repeat(100),
        "p".repeat(60 * 1024)
    );
    let r = gw.raw(under.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.hits(), 1);
}

/// Framing that two HTTP implementations could read differently (RFC 9112 §6.3) is refused
/// with a SCIM 400 before hyper or the upstream sees it, and the connection closed: the
/// smuggled request inside never runs. The client's valid `X-Request-Id` comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_with_a_scim_error() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    let smuggled = "GET /Smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let chunked_smuggle = format!("0\r\n\r\n{smuggled}");
    let cases = [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            chunked_smuggle.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            chunked_smuggle.len()
        ),
        "Content-Length: 5\r\nContent-Length: 5\r\n".to_owned(),
        "Content-Length: 5\r\nContent-Length: 40\r\n".to_owned(),
        "Content-Length: 5, 5\r\n".to_owned(),
        "Content-Length: +5\r\n".to_owned(),
        "Transfer-Encoding: identity\r\n".to_owned(),
        "Transfer-Encoding: gzip, chunked\r\n".to_owned(),
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_owned(),
    ];
    let before = requests_total(&scrape(&gw).await, "bad_request");
    for (i, framing) in cases.iter().enumerate() {
        let request = format!(
            "POST /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Request-Id: framing-{i}\r\n\
             Content-Type: application/scim+json\r\n{framing}\r\n{chunked_smuggle}"
        );
        let ex = exchange(&gw, request.as_bytes()).await;
        assert_eq!(ex.statuses(), vec![400], "{framing:?}");
        assert!(ex.closed, "{framing:?}: connection left open");
        let id = assert_refused(&ex.responses[0], 400, framing);
        assert_eq!(id, format!("framing-{i}"));
    }
    let http10 = format!(
        "POST /Users HTTP/1.0\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}"
    );
    let ex = exchange(&gw, http10.as_bytes()).await;
    assert_eq!(ex.statuses(), vec![400]);
    assert_refused(&ex.responses[0], 400, "TE on HTTP/1.0");
    assert_eq!(
        upstream.hits(),
        0,
        "a refused or smuggled request reached the upstream"
    );
    let lines = wait_access_lines(&gw, cases.len() + 1).await;
    let line = line_of(&lines, "framing-0");
    assert_eq!(line["method"], json!("POST"));
    assert_eq!(line["path"], json!("/Users"));
    assert_eq!(
        line["error"],
        json!("ambiguous message framing (Content-Length / Transfer-Encoding)")
    );
    let after = requests_total(&scrape(&gw).await, "bad_request");
    assert_eq!(after - before, (cases.len() + 1) as f64);
}

/// The pipeline a smuggler writes: requests with Content-Length and chunked bodies (extension,
/// trailer), an Entra lookup, then a malformed head and a request behind it. Whether the bytes
/// come at once or one at a time, each body reaches the upstream exactly, the responses come in
/// order, the bad head is answered last with its SCIM error, and nothing after it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_split_where_hyper_splits_them_however_they_arrive() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    let pipeline = format!(
        "POST /Users?n=1 HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/scim+json\r\n\
         Content-Length: 2\r\n\r\n{{}}\
         POST /Users?n=2 HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/scim+json\r\n\
         Transfer-Encoding: chunked\r\n\r\n\
         1;ext=\"GET /x HTTP/1.1\"\r\n{{\r\n1\r\n}}\r\n0\r\nX-Trailer: GET /Smuggled HTTP/1.1\r\n\r\n\
         \r\nGET /Users?n=3&filter=userName+eq+\"bjensen\" HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n\
         GET /Users?n=4 HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Folded: a\r\n b\r\n\r\n\
         GET /Smuggled HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n"
    );
    for piece in [pipeline.len(), 1, 7] {
        let before = upstream.hits();
        let ex = exchange_in_pieces(gw.proxy_addr, pipeline.as_bytes(), piece, WAIT)
            .await
            .expect("exchange");
        assert_eq!(ex.statuses(), vec![200, 200, 200, 400], "pieces of {piece}");
        assert!(ex.closed, "pieces of {piece}: connection left open");
        assert_refused(&ex.responses[3], 400, "the folded head");
        upstream.wait_for_hits(before + 3, WAIT).await;
        let got: Vec<_> = upstream.settled().await.split_off(before);
        let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                format!("{BASE_PATH}/Users?n=1"),
                format!("{BASE_PATH}/Users?n=2"),
                format!("{BASE_PATH}/Users?n=3&filter=userName+eq+%22bjensen%22"),
            ],
            "pieces of {piece}"
        );
        assert_eq!(got[0].body, b"{}");
        assert_eq!(got[1].body, b"{}");
        assert!(got.iter().all(|r| r.complete));
    }
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.target.contains("Smuggled") && !r.target.contains("n=4")),
        "a request at or after the refused head reached the upstream"
    );
}

/// A chunked body that breaks off where hyper's decoder would fail is never forwarded as a
/// complete request; the caller gets a SCIM error and the connection ends, so the request
/// behind it is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_not_forwarded_as_complete() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = auth_line();
    for (name, body) in [
        ("chunk longer than its size", "2\r\n{}x\r\n0\r\n\r\n"),
        ("bare LF after the size", "2\n{}\r\n0\r\n\r\n"),
        (
            "size overflowing u64",
            "FFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n",
        ),
        ("LF inside an extension", "2;a\nb\r\n{}\r\n0\r\n\r\n"),
    ] {
        let request = format!(
            "POST /Users HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/scim+json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{body}GET /Smuggled HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n"
        );
        let before = upstream.settled().await.len();
        let ex = exchange(&gw, request.as_bytes()).await;
        assert!(ex.closed, "{name}: connection left open");
        assert!(ex.responses.len() <= 1, "{name}: {:?}", ex.statuses());
        if let Some(r) = ex.responses.first() {
            assert!(r.status >= 400, "{name}: {}", r.status);
            crate::support::Response::from(r.clone()).assert_scim_error(r.status);
        }
        let got = upstream.settled().await.split_off(before);
        assert!(
            got.iter()
                .all(|r| !r.complete && !r.target.contains("Smuggled")),
            "{name}: forwarded as complete, or the request behind it ran"
        );
    }
}

/// The same front guards HTTP/1 over TLS; HTTP/2 chosen by ALPN passes through it untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_get_the_same_front() {
    let (_jwks, upstream, cfg) = fixture().await;
    let certs = TempDir::new("front-tls");
    let (cert_pem, key_pem, der) = pieces::self_signed();
    let cert = certs.write("tls.crt", cert_pem.as_bytes(), 0o644);
    let key = certs.write("tls.key", key_pem.as_bytes(), 0o600);
    let cfg: GatewayConfig = cfg
        .set(
            "server",
            "tls_cert_file",
            &crate::support::toml_str(&cert.display().to_string()),
        )
        .set(
            "server",
            "tls_key_file",
            &crate::support::toml_str(&key.display().to_string()),
        );
    let gw = Gateway::start(cfg).await;

    let ex = tls_exchange(
        gw.proxy_addr,
        &der,
        &get("/Users?filter=externalId+eq+\"e1\""),
        WAIT,
    )
    .await
    .expect("TLS exchange");
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(
        upstream.only_request().target,
        format!("{BASE_PATH}/Users?filter=externalId+eq+%22e1%22")
    );

    let ex = tls_exchange(
        gw.proxy_addr,
        &der,
        b"GET /Users HTTP/1.1\r\nHost: gw\r\nX-Folded: a\r\n b\r\n\r\n",
        WAIT,
    )
    .await
    .expect("TLS exchange");
    assert_eq!(ex.statuses(), vec![400]);
    assert_refused(&ex.responses[0], 400, "folded head over TLS");

    // HTTP/2 by ALPN: served as before.
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr)
        .await
        .expect("connect");
    let tls = pieces::tls_connect(tcp, &der, &[b"h2"])
        .await
        .expect("TLS h2");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get("https://localhost/Users?filter=userName%20eq%20%22x%22")
        .header(
            "authorization",
            format!("Bearer {}", Token::new().sign(rsa_key())),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.hits(), 2);
    assert_eq!(wait_access_lines(&gw, 3).await.len(), 3);
}
