//! What reaches the upstream: the service account's credential and nothing of the caller's,
//! clean forwarding headers, the request target; and what never reaches the logs.

use std::time::Duration;

use crate::support::mint;
use crate::support::upstream::BASE_PATH;
use crate::support::{Gateway, Token, Upstream, ec_key, fixture, rsa_key};
use serde_json::json;

/// Asserts no header of `req` carries `token` or its signature segment.
fn assert_token_absent(req: &crate::support::upstream::Recorded, token: &str) {
    let sig = mint::signature_segment(token);
    for (name, value) in &req.headers {
        assert!(
            !value.contains(token) && !value.contains(sig),
            "caller token forwarded in header {name}"
        );
    }
    let body = String::from_utf8_lossy(&req.body);
    assert!(!body.contains(sig), "caller token forwarded in the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_request_carries_only_the_service_account_credential() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(rsa_key());
    let auth = format!("Bearer {token}");
    let body = json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada"})
        .to_string();
    let r = gw
        .request(
            "POST",
            "/Users?filter=userName%20eq%20%22ada%22&count=5",
            &[
                ("host", "scim-gw.example:8443"),
                ("authorization", &auth),
                ("content-type", "application/scim+json"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("ListResponse"),
        "upstream body relayed: {}",
        r.text()
    );

    let req = upstream.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.target,
        format!("{BASE_PATH}/Users?filter=userName%20eq%20%22ada%22&count=5"),
        "upstream base path + request path, query kept"
    );
    assert_eq!(
        req.header_one("authorization"),
        format!("Bearer {}", gw.sentinel()),
        "exactly the service account's credential"
    );
    assert_token_absent(&req, &token);
    assert_eq!(req.header_one("host"), upstream.authority());
    assert_eq!(req.header_one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(req.header_one("x-forwarded-proto"), "http");
    assert_eq!(req.header_one("x-forwarded-host"), "scim-gw.example:8443");
    assert!(!req.header_one("x-request-id").trim().is_empty());
    assert_eq!(req.header_one("content-type"), "application/scim+json");
    assert_eq!(req.body, body.as_bytes());
    assert!(req.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_when_well_formed_and_unique_otherwise() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = format!("Bearer {}", Token::new().sign(ec_key()));
    let id = "3f2b8c1e-4d5a-4b6c-9d7e-1a2b3c4d5e6f";
    let r = gw
        .request(
            "GET",
            "/Users",
            &[("authorization", &auth), ("x-request-id", id)],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.requests()[0].header_one("x-request-id"), id);

    for _ in 0..2 {
        assert_eq!(
            gw.request("GET", "/Users", &[("authorization", &auth)], "")
                .await
                .status,
            200
        );
    }
    let reqs = upstream.requests();
    let generated: Vec<&str> = reqs[1..]
        .iter()
        .map(|r| r.header_one("x-request-id"))
        .collect();
    assert_ne!(
        generated[0], generated[1],
        "generated request ids must differ"
    );
    assert!(generated.iter().all(|g| !g.is_empty() && *g != id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_credential_headers_never_reach_the_upstream() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg.account("reader", "x-api-key", None).rule(
        "readers",
        "groups",
        "scim-readers",
        "reader",
    );
    let gw = Gateway::start(cfg).await;

    // Provisioner token: the upstream must get its Authorization and no x-api-key in any spelling.
    let token = Token::new().sign(rsa_key());
    let request = format!(
        "GET /Users HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer {token}\r\n\
         x-api-key: caller-key-1\r\nX_Api_Key: caller-key-2\r\nX-API-KEY: caller-key-3\r\n\
         Proxy-Authorization: Basic Y2FsbGVyOmtleQ==\r\nConnection: close\r\n\r\n"
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert!(
        !req.has_header_like("x-api-key"),
        "caller x-api-key forwarded: {:?}",
        req.headers
    );
    assert!(!req.has_header_like("proxy-authorization"));
    assert_eq!(
        req.header_one("authorization"),
        format!("Bearer {}", gw.sentinel())
    );
    assert!(
        req.headers.iter().all(|(_, v)| !v.contains("caller-key")),
        "a caller key value reached the upstream: {:?}",
        req.headers
    );
    assert_token_absent(&req, &token);

    // Reader token: the upstream gets exactly the reader's x-api-key and no Authorization at all.
    let token = Token::new()
        .claim("groups", json!(["scim-readers"]))
        .sign(ec_key());
    let request = format!(
        "GET /Groups HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer {token}\r\n\
         X-Api-Key: caller-key-4\r\nx_api_key: caller-key-5\r\nConnection: close\r\n\r\n"
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.requests().pop().expect("second request");
    assert_eq!(req.target, format!("{BASE_PATH}/Groups"));
    assert_eq!(req.header_one("x-api-key"), gw.sentinel_of("reader"));
    assert_eq!(
        req.headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-") == "x-api-key")
            .count(),
        1
    );
    assert!(
        req.header_all("authorization").is_empty(),
        "caller Authorization forwarded"
    );
    assert!(req.headers.iter().all(|(_, v)| !v.contains("caller-key")));
    assert_token_absent(&req, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_spoofable_headers_are_stripped() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(rsa_key());
    let request = format!(
        "PATCH /Users/42 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer {token}\r\n\
         Connection: close, X-Custom-Hop\r\nX-Custom-Hop: hop-value\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: gzip\r\n\
         Forwarded: for=6.6.6.6;host=evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\n\
         X-HTTP-Method-Override: DELETE\r\nX-Method-Override: DELETE\r\n\
         X-Keep-Me: yes\r\nContent-Type: application/scim+json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let r = gw.raw(request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.method, "PATCH");
    for gone in [
        "x-custom-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "forwarded",
        "x-real-ip",
        "x-http-method-override",
        "x-method-override",
    ] {
        assert!(
            req.header_all(gone).is_empty(),
            "{gone} forwarded: {:?}",
            req.header_all(gone)
        );
    }
    for value in req.header_all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-custom-hop"),
            "caller Connection forwarded: {value}"
        );
    }
    assert!(
        req.headers
            .iter()
            .all(|(_, v)| !v.contains("6.6.6.6") && !v.contains("evil.example"))
    );
    assert_eq!(req.header_one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(req.header_one("x-forwarded-host"), "gw.example");
    assert_eq!(req.header_one("x-forwarded-proto"), "http");
    // Not on the allow-list: an unknown header is not forwarded (T48).
    assert!(req.header_all("x-keep-me").is_empty());
    assert_eq!(req.header_one("content-type"), "application/scim+json");
    assert_eq!(req.body, b"{}");
}

/// design.md §4: every key is also settable as `SCIMGATE_<SECTION>__<KEY>`, over the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_config_file() {
    let (jwks, upstream, _) = fixture().await;
    let cfg = crate::support::GatewayConfig::new(&Upstream::down_url(), &jwks.url())
        .env("SCIMGATE_UPSTREAM__URL", &upstream.url());
    let gw = Gateway::start(cfg).await;
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
}

/// threats.md T41: at `RUST_LOG=trace`, no sentinel, token or signature segment in any line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_contain_keys_or_tokens() {
    let (_jwks, upstream, cfg) = fixture().await;
    let cfg = cfg
        .env("RUST_LOG", "trace")
        .account("reader", "x-api-key", None)
        .rule("readers", "groups", "scim-readers", "reader");
    let gw = Gateway::start(cfg).await;
    let tokens = [
        Token::new().sign(rsa_key()),
        Token::new()
            .claim("groups", json!(["scim-readers"]))
            .sign(ec_key()),
        Token::new()
            .claim("groups", json!(["nobody"]))
            .sign(ec_key()),
        mint::corrupt_signature(&Token::new().sign(rsa_key())),
        Token::new().exp_in(-3600).sign(rsa_key()),
    ];
    let expected = [200, 200, 403, 401, 401];
    for (token, status) in tokens.iter().zip(expected) {
        let auth = format!("Bearer {token}");
        let r = gw
            .request(
                "POST",
                "/Users",
                &[
                    ("authorization", &auth),
                    ("x-api-key", "caller-supplied-key"),
                ],
                "{}",
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    assert_eq!(upstream.hits(), 2);
    // Let the last access lines be written, then check everything captured so far.
    gw.wait_for_logs(
        |l| l.contains("\"message\":\"request\""),
        5,
        Duration::from_secs(5),
    )
    .await;
    let mut secrets: Vec<&str> = tokens.iter().map(|t| mint::signature_segment(t)).collect();
    secrets.extend(tokens.iter().map(String::as_str));
    secrets.push("caller-supplied-key");
    gw.assert_logs_free_of(&secrets);
}
