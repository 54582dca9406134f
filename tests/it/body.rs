//! Request bodies: large uploads arrive byte-for-byte; bodies over `max_body_bytes` are refused
//! with 413 and never reach the upstream whole.
//!
//! Bodies are real SCIM documents: the gateway classifies `/Bulk` operations (design.md §1
//! step 3), so a `/Bulk` body must be a BulkRequest.

use crate::support::config::random_hex;
use crate::support::{Gateway, Token, fixture, rsa_key};
use aws_lc_rs::digest::{SHA256, digest};
use serde_json::json;

/// A SCIM User document of exactly `len` bytes (padded through `displayName`).
fn user_of_len(len: usize) -> Vec<u8> {
    let shell = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada",
        "displayName": "",
    })
    .to_string();
    assert!(len >= shell.len());
    let pad = "x".repeat(len - shell.len());
    let doc = shell.replace(
        "\"displayName\":\"\"",
        &format!("\"displayName\":\"{pad}\""),
    );
    assert_eq!(doc.len(), len);
    doc.into_bytes()
}

/// A BulkRequest of at least `min_len` bytes: POST /Users operations with random display names.
fn bulk_of_at_least(min_len: usize) -> Vec<u8> {
    let mut ops = Vec::new();
    let mut size = 0;
    let mut n = 0;
    while size < min_len {
        let display = random_hex(2048);
        size += display.len() + 200;
        ops.push(json!({
            "method": "POST",
            "path": "/Users",
            "bulkId": format!("op-{n}"),
            "data": {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("user-{n}"),
                "displayName": display,
            },
        }));
        n += 1;
    }
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "failOnErrors": 1,
        "Operations": ops,
    })
    .to_string()
    .into_bytes()
}

/// A chunked HTTP/1.1 POST of `body` in `chunk`-byte chunks.
fn chunked_post(path: &str, auth: &str, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut wire = format!(
        "POST {path} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: {auth}\r\n\
         Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(chunk) {
        wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        wire.extend_from_slice(part);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

/// A Content-Length HTTP/1.1 POST of `body`.
fn sized_post(path: &str, auth: &str, body: &[u8]) -> Vec<u8> {
    let mut wire = format!(
        "POST {path} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: {auth}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(body);
    wire
}

fn assert_same_bytes(got: &[u8], sent: &[u8]) {
    assert_eq!(got.len(), sent.len(), "body length");
    assert_eq!(
        digest(&SHA256, got).as_ref(),
        digest(&SHA256, sent).as_ref(),
        "body SHA-256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_arrive_intact() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let auth = format!("Bearer {}", Token::new().sign(rsa_key()));

    // A 5 MiB BulkRequest with Content-Length through hyper's client.
    let bulk = bulk_of_at_least(5 * 1024 * 1024);
    let r = gw
        .request(
            "POST",
            "/Bulk",
            &[
                ("authorization", &auth),
                ("content-type", "application/scim+json"),
            ],
            bulk.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.only_request();
    assert_eq!(req.target, "/scim/v2/Bulk");
    assert!(req.complete);
    assert_same_bytes(&req.body, &bulk);

    // A 3 MiB BulkRequest, chunked (no Content-Length), in 256 KiB chunks.
    let bulk = bulk_of_at_least(3 * 1024 * 1024);
    let r = gw
        .raw(&chunked_post("/Bulk", &auth, &bulk, 256 * 1024))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.requests().pop().expect("second request");
    assert!(req.complete);
    assert_same_bytes(&req.body, &bulk);

    // A 5 MiB User, chunked: a body the gateway streams rather than inspects.
    let user = user_of_len(5 * 1024 * 1024);
    let r = gw
        .raw(&chunked_post("/Users", &auth, &user, 64 * 1024))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.requests().pop().expect("third request");
    assert!(req.complete);
    assert_same_bytes(&req.body, &user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413() {
    let (_jwks, upstream, cfg) = fixture().await;
    let limit = 65536;
    let gw = Gateway::start(cfg.set("server", "max_body_bytes", &limit.to_string())).await;
    let auth = format!("Bearer {}", Token::new().sign(rsa_key()));
    let big_user = user_of_len(1024 * 1024);
    let big_bulk = bulk_of_at_least(1024 * 1024);

    // Declared by Content-Length: refused before anything is forwarded.
    for (path, body) in [("/Users", &big_user), ("/Bulk", &big_bulk)] {
        let r = gw.raw(&sized_post(path, &auth, body)).await;
        r.assert_scim_error(413);
        assert_eq!(
            upstream.hits(),
            0,
            "{path}: a body declared too large was forwarded"
        );
    }

    // Chunked: discovered while streaming; the upstream never gets the whole body.
    for (path, body) in [("/Users", &big_user), ("/Bulk", &big_bulk)] {
        let r = gw.raw(&chunked_post(path, &auth, body, 16 * 1024)).await;
        r.assert_scim_error(413);
        for req in upstream.requests() {
            assert!(
                !req.complete || req.body.len() <= limit,
                "{path}: upstream received a complete {}-byte body",
                req.body.len()
            );
            assert!(req.body.len() < body.len());
        }
    }

    // Exactly at the limit is fine.
    let at_limit = user_of_len(limit);
    let r = gw
        .request(
            "POST",
            "/Users",
            &[
                ("authorization", &auth),
                ("content-type", "application/scim+json"),
            ],
            at_limit.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.requests().pop().expect("request").body, at_limit);
}
