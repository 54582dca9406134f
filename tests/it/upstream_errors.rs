//! Upstream faults are reported as the gateway's own SCIM errors (502 / 504), never as the
//! caller's fault and never with the backend's own error details.

use std::time::Duration;

use crate::support::{Gateway, Token, Upstream, fixture, rsa_key};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let (jwks, _upstream, _) = fixture().await;
    let cfg = crate::support::GatewayConfig::new(&Upstream::down_url(), &jwks.url());
    let gw = Gateway::start(cfg).await;
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(502);
    assert!(
        r.header("www-authenticate").is_none(),
        "an upstream fault is not the caller's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_rejecting_the_service_account_key_is_502() {
    let (_jwks, upstream, cfg) = fixture().await;
    upstream.set_behavior(crate::support::upstream::Behavior {
        status: 401,
        headers: vec![
            ("content-type".into(), "application/scim+json".into()),
            ("www-authenticate".into(), "Bearer realm=\"backend\"".into()),
        ],
        body: br#"{"detail":"backend says: bad api key"}"#.to_vec(),
        ..Default::default()
    });
    let gw = Gateway::start(cfg).await;
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(502);
    assert_eq!(
        r.json()["detail"],
        json!("upstream rejected the service account credential")
    );
    assert!(
        r.header("www-authenticate").is_none(),
        "the backend's challenge must not reach the IdP"
    );
    assert!(!r.text().contains("backend says"));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let (_jwks, upstream, cfg) = fixture().await;
    upstream.set_delay(Duration::from_secs(5));
    let gw = Gateway::start(cfg.set("upstream", "timeout", "\"500ms\"")).await;
    let started = std::time::Instant::now();
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

/// Whichever deadline falls first answers: a `server.request_timeout` shorter than
/// `upstream.timeout` ends a slow exchange with 408 and the `request_timeout` outcome, not 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_shorter_than_upstream_timeout_is_408() {
    let (_jwks, upstream, cfg) = fixture().await;
    upstream.set_delay(Duration::from_secs(5));
    let gw = answers_request_timeout(cfg).await;
    let metrics = crate::support::observe::scrape(&gw).await;
    let series = r#"scimgate_requests_total{outcome="request_timeout"}"#;
    assert_eq!(crate::support::observe::metric(&metrics, series), Some(1.0));
    let series = r#"scimgate_requests_total{outcome="upstream_timeout"}"#;
    assert_eq!(
        crate::support::observe::metric_or_zero(&metrics, series),
        0.0
    );
}

/// An error response whose body stalls is read under the request's deadline: the caller gets
/// 408 when `server.request_timeout` passes, not a connection held open for `upstream.timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_error_body_ends_at_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (jwks, _upstream, _) = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "gateway closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        // Hold the connection open with the body unfinished.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    answers_request_timeout(crate::support::GatewayConfig::new(&url, &jwks.url())).await;
}

/// Starts the gateway with `server.request_timeout` 500 ms and `upstream.timeout` 30 s, sends
/// one authorized GET, and checks that it ends in 408 long before the upstream's timeout.
async fn answers_request_timeout(cfg: crate::support::GatewayConfig) -> Gateway {
    let cfg =
        cfg.set("upstream", "timeout", "\"30s\"")
            .set("server", "request_timeout", "\"500ms\"");
    let gw = Gateway::start(cfg).await;
    let started = std::time::Instant::now();
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(408);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    gw
}
