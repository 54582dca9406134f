//! Security catalogue, sections C and D (threats.md §7, T19–T25): bearer extraction, credential
//! replacement and header hygiene in both directions — against the real binary.

use std::time::Duration;

use crate::support::upstream::{BASE_PATH, Behavior, Recorded};
use crate::support::{
    Attacker, Expect, Gateway, H2, Table, Token, Upstream, bearer, ec_key, fixture, rsa_key,
};
use bytes::Bytes;
use serde_json::json;

/// `GET /Users` with the given extra header lines (each without CRLF), on its own connection.
fn get_with(lines: &[String]) -> Vec<u8> {
    let mut out = String::from("GET /Users HTTP/1.1\r\nHost: gw.example\r\n");
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Sends raw rows; checks the verdict and that denied rows never reach the upstream.
async fn run_raw(gw: &Gateway, upstream: &Upstream, rows: Vec<(String, Vec<u8>, Expect)>) -> Table {
    let mut table = Table::new();
    for (name, request, expect) in rows {
        let before = upstream.hits();
        let r = gw.raw(&request).await;
        table.check(&name, &r, expect, "");
        let forwarded = upstream.hits() - before;
        if forwarded != usize::from(expect.forwards()) {
            table.fail(&name, format!("upstream saw {forwarded} request(s)"));
        }
    }
    table
}

/// Asserts the one credential the upstream must see: the provisioner's, exactly once, and
/// nothing of the caller's token.
fn assert_only_service_credential(gw: &Gateway, req: &Recorded, token: &str) {
    assert_eq!(
        req.header_all("authorization"),
        vec![format!("Bearer {}", gw.sentinel())],
        "upstream Authorization"
    );
    assert!(!req.has_header_like("proxy-authorization"));
    let sig = crate::support::mint::signature_segment(token);
    for (name, value) in &req.headers {
        assert!(
            !value.contains(sig),
            "the caller's token reached the upstream in {name}"
        );
    }
}

// === C. Bearer extraction and credential replacement ===

/// T19 `Authorization` parsing (RFC 6750 §2.1): scheme case-insensitive, `1*SP`, one
/// `b64token`; everything else refused; tokens in the query, a cookie or a form body are
/// never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t19_authorization_header_parsing() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let tok2 = Token::new().sign(ec_key());
    let auth = |v: &str| get_with(&[format!("Authorization: {v}")]);
    let mut rows = vec![
        ("Bearer <token>".to_owned(), auth(&format!("Bearer {tok}")), Expect::Ok),
        ("bearer <token>".into(), auth(&format!("bearer {tok}")), Expect::Ok),
        ("BEARER <token>".into(), auth(&format!("BEARER {tok}")), Expect::Ok),
        ("BeArEr <token>".into(), auth(&format!("BeArEr {tok}")), Expect::Ok),
        ("two spaces".into(), auth(&format!("Bearer  {tok}")), Expect::Ok),
        ("token without scheme".into(), auth(&tok), Expect::NoToken),
        ("Basic credentials".into(), auth("Basic dXNlcjpwYXNz"), Expect::NoToken),
        ("Token scheme".into(), auth(&format!("Token {tok}")), Expect::NoToken),
        ("DPoP scheme".into(), auth(&format!("DPoP {tok}")), Expect::NoToken),
        ("Bearer alone".into(), auth("Bearer"), Expect::Invalid),
        ("Bearer and spaces".into(), auth("Bearer    "), Expect::Invalid),
        ("tab separator".into(), auth(&format!("Bearer\t{tok}")), Expect::NoToken),
        ("token then a word".into(), auth(&format!("Bearer {tok} x")), Expect::Invalid),
        (
            "two bearer tokens comma-joined".into(),
            auth(&format!("Bearer {tok}, Bearer {tok2}")),
            Expect::Invalid,
        ),
        (
            "non-ASCII byte in the token".into(),
            [
                b"GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ".as_slice(),
                tok.as_bytes(),
                b"\xff\xfe\r\nConnection: close\r\n\r\n",
            ]
            .concat(),
            Expect::Invalid,
        ),
        ("quoted token".into(), auth(&format!("Bearer \"{tok}\"")), Expect::Invalid),
        ("empty value".into(), auth(""), Expect::NoToken),
        (
            "token in ?access_token".into(),
            format!(
                "GET /Users?access_token={tok} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            Expect::NoToken,
        ),
        (
            "token in a cookie".into(),
            get_with(&[format!("Cookie: access_token={tok}; token={tok}")]),
            Expect::NoToken,
        ),
        (
            "token in X-Access-Token".into(),
            get_with(&[format!("X-Access-Token: {tok}")]),
            Expect::NoToken,
        ),
        (
            "token only in Proxy-Authorization".into(),
            get_with(&[format!("Proxy-Authorization: Bearer {tok}")]),
            Expect::NoToken,
        ),
        (
            "token in a form body".into(),
            {
                let body = format!("access_token={tok}");
                format!(
                    "POST /Users HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            },
            Expect::NoToken,
        ),
        (
            "obs-fold inside Authorization".into(),
            format!(
                "GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer\r\n {tok}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            Expect::Framing(400),
        ),
    ];
    // hyper trims surrounding whitespace of field values (RFC 9110 §5.5).
    rows.push((
        "trailing spaces".into(),
        auth(&format!("Bearer {tok}   ")),
        Expect::Ok,
    ));
    run_raw(&gw, &upstream, rows).await.finish();
}

/// T20 ★ Exactly one `Authorization` in (duplicates → 400, never forwarded) and exactly one out:
/// the service credential, with the caller's token and `Proxy-Authorization` gone; over HTTP/1.1
/// and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_credential_replacement_and_duplicate_authorization() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let good = format!("Authorization: Bearer {tok}");
    let rows = vec![
        (
            "valid then garbage".to_owned(),
            get_with(&[good.clone(), "Authorization: Bearer x.y.z".into()]),
            Expect::Status(400),
        ),
        (
            "garbage then valid".into(),
            get_with(&["Authorization: Bearer x.y.z".into(), good.clone()]),
            Expect::Status(400),
        ),
        (
            "valid twice".into(),
            get_with(&[good.clone(), good.clone()]),
            Expect::Status(400),
        ),
        (
            "valid then Basic".into(),
            get_with(&[good.clone(), "Authorization: Basic dXNlcjpwYXNz".into()]),
            Expect::Status(400),
        ),
        (
            "valid then empty".into(),
            get_with(&[good.clone(), "Authorization:".into()]),
            Expect::Status(400),
        ),
        (
            "lower and upper case names".into(),
            get_with(&[
                format!("authorization: Bearer {tok}"),
                format!("AUTHORIZATION: Bearer {tok}"),
            ]),
            Expect::Status(400),
        ),
    ];
    run_raw(&gw, &upstream, rows).await.finish();
    assert_eq!(upstream.hits(), 0);

    let r = gw
        .raw(&get_with(&[
            good.clone(),
            "Proxy-Authorization: Basic Y2FsbGVyOmtleQ==".into(),
        ]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_only_service_credential(&gw, &upstream.only_request(), &tok);

    // HTTP/2: the same rules per stream.
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let auth = bearer(&tok);
    let r = h2
        .request(
            "GET",
            "/Users",
            &[("authorization", &auth), ("authorization", &auth)],
            Bytes::new(),
            &[],
        )
        .await
        .expect("h2 duplicate");
    assert_eq!(r.status, 400, "{}", r.text());
    r.assert_free_of(&gw.sentinels());
    assert_eq!(upstream.hits(), 1);
}

/// T20 ★ over HTTP/2: a single `authorization` is replaced by the service credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_http2_request_is_forwarded_with_only_the_service_credential() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let auth = bearer(&tok);
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let r = h2
        .request(
            "GET",
            "/Groups",
            &[
                ("authorization", &auth),
                ("proxy-authorization", "Basic Y2FsbGVyOmtleQ=="),
            ],
            Bytes::new(),
            &[],
        )
        .await
        .expect("h2 single");
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_free_of(&gw.sentinels());
    let req = upstream.only_request();
    assert_eq!(req.target, format!("{BASE_PATH}/Groups"));
    assert_only_service_credential(&gw, &req, &tok);
}

// === D. Header hygiene ===

/// Every spelling a caller might use for `name`: as given, lower, upper, and with `_`.
fn spellings(name: &str) -> Vec<String> {
    let title: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-");
    vec![
        name.to_owned(),
        name.to_ascii_uppercase(),
        title.clone(),
        name.replace('-', "_"),
        title.replace('-', "_"),
        name.to_ascii_uppercase().replace('-', "_"),
    ]
}

/// Sends a valid provisioner request carrying every spelling of every name in `names` (values
/// `spoof-<n>`); returns the upstream's view and the names that got through.
async fn smuggle_headers(names: &[&str]) -> Vec<String> {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.account("reader", "x-api-key", None).rule(
        "readers",
        "groups",
        "scim-readers",
        "reader",
    );
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let mut lines = vec![format!("Authorization: Bearer {tok}")];
    let mut n = 0;
    for name in names {
        for spelling in spellings(name) {
            lines.push(format!("{spelling}: spoof-{n}"));
            n += 1;
        }
    }
    let r = gw.raw(&get_with(&lines)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_only_service_credential(&gw, &req, &tok);
    let mut leaked: Vec<String> = req
        .headers
        .iter()
        .filter(|(_, v)| v.starts_with("spoof-"))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    leaked.sort();
    leaked
}

/// T21 ★ Credential and forwarding headers named by the contract are removed in every case and
/// `_`/`-` spelling (CVE-2025-64484); the service account's header arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_credential_and_forwarding_headers_are_stripped() {
    let leaked = smuggle_headers(&[
        "x-api-key",
        "proxy-authorization",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
    ])
    .await;
    assert!(
        leaked.is_empty(),
        "caller headers reached the upstream: {leaked:#?}"
    );
}

/// T21 ★ Contract (docs/contract.md "Upstream request"): *every* `X-Forwarded-*` header is
/// removed, including identity-carrying ones that oauth2-proxy-style upstreams trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_x_forwarded_identity_headers_are_stripped() {
    let leaked = smuggle_headers(&[
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-forwarded-uri",
        "x-forwarded-server",
    ])
    .await;
    assert!(
        leaked.is_empty(),
        "caller headers reached the upstream: {leaked:#?}"
    );
}

/// T21 ★ Catalogue list of identity and credential headers beyond the contract's names
/// (threats.md T21): a backend behind an auth proxy may trust any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_identity_headers_from_the_catalogue_are_stripped() {
    let leaked = smuggle_headers(&[
        "remote-user",
        "x-remote-user",
        "x-authenticated-userid",
        "x-auth-token",
        "api-key",
        "apikey",
        "x-user",
        "x-email",
    ])
    .await;
    assert!(
        leaked.is_empty(),
        "caller headers reached the upstream: {leaked:#?}"
    );
}

/// T21 ★ Credential headers sent as HTTP/1.1 chunked trailers or HTTP/2 trailers never reach
/// the upstream (trailers are dropped: `Trailer` is hop-by-hop and stripped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_credentials_in_trailers_are_dropped() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.account("reader", "x-api-key", None).rule(
        "readers",
        "groups",
        "scim-readers",
        "reader",
    );
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let body = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"t"}"#;
    let request = format!(
        "POST /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\n\
         Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\
         Trailer: X-Api-Key, Authorization, X-Forwarded-User\r\nConnection: close\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\nX-Api-Key: spoof-1\r\nAuthorization: Bearer spoof-2\r\n\
         X-Forwarded-User: spoof-3\r\nX_Api_Key: spoof-4\r\n\r\n",
        body.len()
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.body, body.as_bytes());
    assert!(
        req.trailers.is_empty(),
        "trailers forwarded: {:?}",
        req.trailers
    );
    assert!(!req.has_header_like("trailer"));
    assert_only_service_credential(&gw, &req, &tok);
}

/// T21 ★ HTTP/2 trailers carrying credentials are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_http2_trailers_are_dropped() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let body = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"t"}"#;
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let auth = bearer(&tok);
    let r = h2
        .request(
            "POST",
            "/Users",
            &[
                ("authorization", &auth),
                ("content-type", "application/scim+json"),
            ],
            Bytes::from(body),
            &[
                ("x-api-key", "spoof-5"),
                ("authorization", "Bearer spoof-6"),
            ],
        )
        .await
        .expect("h2 with trailers");
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.body, body.as_bytes());
    assert!(
        req.trailers.is_empty(),
        "h2 trailers forwarded: {:?}",
        req.trailers
    );
    assert!(req.headers.iter().all(|(_, v)| !v.starts_with("spoof")));
    assert_only_service_credential(&gw, &req, &tok);
}

/// T22 Hop-by-hop and `Connection`-nominated fields are removed *before* ours are added (RFC
/// 9110 §7.6.1): a client cannot make the gateway drop its credential or forwarding headers; the
/// same stripping applies to responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_hop_by_hop_and_connection_nominated() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    for nominated in [
        "authorization",
        "Authorization",
        "x-forwarded-for",
        "X_Forwarded_For",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "host",
        "content-type",
        "x-custom",
    ] {
        let before = upstream.requests().len();
        let request = format!(
            "GET /Users HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer {tok}\r\n\
             X-Custom: hop\r\nX-Request-Id: req-{before}\r\n\
             Connection: keep-alive, {nominated}\r\nConnection: close\r\n\r\n"
        );
        let r = gw.raw(request.as_bytes()).await;
        assert_eq!(r.status, 200, "Connection: {nominated}: {}", r.text());
        let req = upstream.requests().pop().expect("forwarded");
        assert_only_service_credential(&gw, &req, &tok);
        assert_eq!(
            req.header_all("host"),
            vec![upstream.authority()],
            "{nominated}"
        );
        assert_eq!(
            req.header_all("x-forwarded-for"),
            vec!["127.0.0.1"],
            "{nominated}"
        );
        assert_eq!(
            req.header_all("x-forwarded-proto"),
            vec!["http"],
            "{nominated}"
        );
        assert_eq!(
            req.header_all("x-request-id"),
            vec![format!("req-{before}")]
        );
        if nominated == "x-custom" {
            assert!(
                req.header_all("x-custom").is_empty(),
                "nominated x-custom forwarded"
            );
        }
        assert!(
            req.header_all("connection")
                .iter()
                .all(|v| !v.contains(nominated))
        );
    }

    let request = format!(
        "GET /Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\nKeep-Alive: timeout=99\r\n\
         TE: trailers, deflate\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
         Trailer: X-Later\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\
         Connection: Upgrade, HTTP2-Settings, close\r\n\r\n"
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.requests().pop().expect("forwarded");
    for gone in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "trailer",
        "http2-settings",
        "transfer-encoding",
    ] {
        assert!(
            !req.has_header_like(gone),
            "{gone} forwarded: {:?}",
            req.headers
        );
    }

    // Mirror: hop-by-hop fields of the upstream's response never reach the client.
    upstream.set_behavior(Behavior {
        headers: vec![
            ("content-type".into(), "application/scim+json".into()),
            ("Connection".into(), "X-Secret-Hop".into()),
            ("X-Secret-Hop".into(), "internal".into()),
            ("Keep-Alive".into(), "timeout=5".into()),
            ("Proxy-Connection".into(), "keep-alive".into()),
            ("Upgrade".into(), "h2c".into()),
            ("Trailer".into(), "X-Later".into()),
            ("X-Kept".into(), "yes".into()),
        ],
        ..Behavior::default()
    });
    let r = gw.get("/Users", Some(&tok)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(
            r.header(gone).is_none(),
            "response kept {gone}: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
}

/// T23 The upstream's Host/`:authority` always comes from config; caller forwarding headers are
/// replaced by the gateway's own (`X-Forwarded-Host` carries the caller's Host, per contract).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t23_host_authority_and_forwarding_headers() {
    let (_jwks, upstream, cfg) = fixture().await;
    let attacker = Attacker::start().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    let request = format!(
        "GET /Users HTTP/1.1\r\nHost: {evil}\r\nAuthorization: Bearer {tok}\r\n\
         X-Forwarded-Host: {evil}\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\nX-Real-IP: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6;host={evil};proto=https\r\nX-Original-URL: /Admin\r\n\
         X-Rewrite-URL: /Admin\r\nConnection: close\r\n\r\n",
        evil = attacker.authority()
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.target, format!("{BASE_PATH}/Users"));
    assert_eq!(req.header_all("host"), vec![upstream.authority()]);
    assert_eq!(req.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        req.header_all("x-forwarded-host"),
        vec![attacker.authority()]
    );
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(!req.has_header_like(gone), "{gone} forwarded");
    }
    assert!(req.headers.iter().all(|(_, v)| !v.contains("6.6.6.6")));

    // Two Host fields: hyper refuses, or the upstream still sees only the configured authority.
    let request = format!(
        "GET /Users HTTP/1.1\r\nHost: a.example\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n",
        attacker.authority()
    );
    let before = upstream.requests().len();
    let r = gw.raw(request.as_bytes()).await;
    if r.status == 200 {
        let req = upstream.requests().pop().expect("forwarded");
        assert_eq!(req.header_all("host"), vec![upstream.authority()]);
    } else {
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(upstream.requests().len(), before);
    }
    attacker.assert_untouched();
}

/// T23 HTTP/2: `:authority` differs from a `host` field; neither decides where the request goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t23_http2_authority_does_not_route() {
    let (_jwks, upstream, cfg) = fixture().await;
    let attacker = Attacker::start().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(rsa_key());
    // HTTP/2: `:authority` differs from a `host` field; neither decides where the request goes.
    let h2 = H2::connect(gw.proxy_addr).await.expect("h2 connect");
    let auth = bearer(&tok);
    let r = h2
        .request(
            "GET",
            &format!("http://{}/Groups", attacker.authority()),
            &[("authorization", &auth), ("host", "other.example")],
            Bytes::new(),
            &[],
        )
        .await
        .expect("h2 request");
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.target, format!("{BASE_PATH}/Groups"));
    assert_eq!(req.header_all("host"), vec![upstream.authority()]);
    assert_eq!(
        req.header_all("x-forwarded-host"),
        vec![attacker.authority()]
    );

    attacker.assert_untouched();
}

/// T24 Method-override headers are stripped in every spelling; the SCIM operation (and rule
/// permissions) follow the real method. `_method` query parameters are refused (T48).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_method_override_headers_and_parameters() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.extra(
        "[[rules]]\nname = \"readers\"\nclaim = \"groups\"\nvalue = \"scim-readers\"\n\
         service_account = \"provisioner\"\nallow = [\"read\", \"search\"]\n",
    );
    let gw = Gateway::start(cfg).await;
    let writer = Token::new().sign(rsa_key());
    let reader = Token::new()
        .claim("groups", json!(["scim-readers"]))
        .sign(rsa_key());
    let overrides: Vec<String> = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .flat_map(|n| spellings(n))
    .map(|n| format!("{n}: DELETE"))
    .collect();
    let request = |method: &str, path: &str, tok: &str| {
        let mut out =
            format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\n");
        for line in &overrides {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("Content-Type: application/scim+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        out.into_bytes()
    };
    let r = gw.raw(&request("POST", "/Users", &writer)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.method, "POST");
    assert!(
        req.headers.iter().all(|(_, v)| v != "DELETE"),
        "an override header reached the upstream: {:?}",
        req.headers
    );

    // A read-only caller cannot turn a GET into a DELETE, nor a POST into a read.
    let r = gw.raw(&request("GET", "/Users/1", &reader)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.requests().pop().expect("GET").method, "GET");
    let before = upstream.hits();
    // Method-override parameters are refused outright, for every caller: the method the
    // backend runs is the method scimgate authorized (T48).
    for (method, target, who) in [
        ("POST", "/Users?_method=GET", &reader),
        ("DELETE", "/Users/1?_method=GET", &reader),
        ("POST", "/Users?_method=DELETE", &writer),
        ("GET", "/Users?X-HTTP-Method-Override=DELETE", &writer),
    ] {
        gw.raw(&request(method, target, who))
            .await
            .assert_scim_error(400);
    }
    assert_eq!(
        upstream.hits(),
        before,
        "a method override reached the upstream"
    );
}

/// T25 Response hygiene: an upstream 401 (our key rejected) becomes a generic 502 without the
/// backend's challenge; redirects pass through unfollowed; an upstream 403 passes through (SCIM
/// uses it for operation-level refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_response_hygiene() {
    let (_jwks, upstream, cfg) = fixture().await;
    let attacker = Attacker::start().await;
    let gw = Gateway::start(cfg).await;
    let tok = Token::new().sign(ec_key());
    let answer = |status: u16, headers: &[(&str, &str)], body: &str| Behavior {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.as_bytes().to_vec(),
        delay: Duration::ZERO,
    };

    upstream.set_behavior(answer(
        401,
        &[
            ("www-authenticate", "ApiKey realm=\"backend\""),
            ("x-backend", "1"),
        ],
        "{\"detail\":\"invalid api key\"}",
    ));
    let r = gw.get("/Users", Some(&tok)).await;
    r.assert_scim_error(502);
    assert!(
        r.header("www-authenticate").is_none(),
        "backend challenge relayed"
    );
    assert!(r.header("x-backend").is_none());
    assert!(
        !r.text().contains("invalid api key"),
        "backend body relayed"
    );

    let location = attacker.url("/steal");
    upstream.set_behavior(answer(302, &[("location", location.as_str())], ""));
    let r = gw.get("/Users", Some(&tok)).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(attacker.url("/steal").as_str()));

    upstream.set_behavior(answer(
        403,
        &[("content-type", "application/scim+json")],
        "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],\"status\":\"403\"}",
    ));
    let r = gw.get("/Users", Some(&tok)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("www-authenticate").is_none());

    // Decision: end-to-end fields such as Set-Cookie pass through unchanged (the upstream is
    // reachable only through the gateway; a session cookie is useless without it).
    upstream.set_behavior(answer(
        200,
        &[
            ("content-type", "application/scim+json"),
            ("set-cookie", "backend_session=abc; HttpOnly"),
        ],
        "{}",
    ));
    let r = gw.get("/Users", Some(&tok)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("set-cookie"),
        Some("backend_session=abc; HttpOnly")
    );
    assert_eq!(upstream.hits(), 4);
    attacker.assert_untouched();
}

/// T25 The service account's key never appears in a response, even when the upstream reflects
/// it (debug error pages that echo request headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_upstream_echo_of_the_credential_is_not_relayed() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let key = gw.sentinel().to_owned();
    upstream.set_behavior(Behavior {
        status: 400,
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-debug-authorization".into(), format!("Bearer {key}")),
        ],
        body: format!("bad request; you sent Authorization: Bearer {key}").into_bytes(),
        delay: Duration::ZERO,
    });
    let tok = Token::new().sign(rsa_key());
    let raw = crate::support::wire::raw_exchange(
        gw.proxy_addr,
        &get_with(&[format!("Authorization: Bearer {tok}")]),
        Duration::from_secs(5),
    )
    .await
    .expect("exchange");
    let r = crate::support::Response::from(raw);
    let header_leak = r.headers.iter().any(|(_, v)| v.contains(&key));
    let body_leak = r.text().contains(&key);
    assert!(
        !header_leak && !body_leak,
        "service key relayed to the caller (header: {header_leak}, body: {body_leak})"
    );
}

/// T25 on a success: the echoing header is dropped and the rest of the response relayed as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_echoed_credential_header_is_dropped_from_a_success() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let key = gw.sentinel().to_owned();
    upstream.set_behavior(Behavior {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/scim+json".into()),
            ("x-debug-authorization".into(), format!("Bearer {key}")),
            ("x-backend".into(), "kept".into()),
        ],
        body: br#"{"totalResults":0}"#.to_vec(),
        delay: Duration::ZERO,
    });
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-debug-authorization").is_none());
    assert!(r.headers.iter().all(|(_, v)| !v.contains(&key)));
    assert_eq!(r.header("x-backend"), Some("kept"));
    assert_eq!(r.text(), r#"{"totalResults":0}"#);
}

/// T20/T21 with several accounts: a reader token sends exactly the reader's `x-api-key` and no
/// `Authorization` at all, whatever the caller put in either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_account_header_replaces_every_caller_credential() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.account("reader", "x-api-key", None).rule(
        "readers",
        "groups",
        "scim-readers",
        "reader",
    );
    let gw = Gateway::start(cfg).await;
    let tok = Token::new()
        .claim("groups", json!(["scim-readers"]))
        .sign(ec_key());
    let r = gw
        .raw(&get_with(&[
            format!("Authorization: Bearer {tok}"),
            "X-Api-Key: spoof-1".into(),
            "x_api_key: spoof-2".into(),
            "X-API-KEY: spoof-3".into(),
        ]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    let keys: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-") == "x-api-key")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(keys, vec![gw.sentinel_of("reader")]);
    assert!(req.header_all("authorization").is_empty());
    assert!(req.headers.iter().all(|(_, v)| !v.starts_with("spoof")));
}
