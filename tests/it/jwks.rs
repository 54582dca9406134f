//! The JWKS cache seen from outside: key rotation, single-flight refetch on unknown `kid`,
//! rate limiting, IdP outages, and readiness.

use std::time::{Duration, Instant};

use crate::support::mint::{self, SigningKey};
use crate::support::{Gateway, JwksMode, JwksServer, Token, Upstream, ec_key, fixture, rsa_key};

/// A JWKS server with only the RSA key, a recording upstream and the default config.
async fn rsa_only() -> (JwksServer, Upstream, crate::support::GatewayConfig) {
    let jwks = JwksServer::start(mint::jwks(&[rsa_key()])).await;
    let upstream = Upstream::start().await;
    let cfg = crate::support::GatewayConfig::new(&upstream.url(), &jwks.url());
    (jwks, upstream, cfg)
}

/// Sends `n` concurrent requests with the given tokens (cycled); returns the statuses.
async fn burst(gw: &Gateway, tokens: Vec<String>, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let addr = gw.proxy_addr;
        let auth = format!("Bearer {}", tokens[i % tokens.len()]);
        tasks.push(tokio::spawn(async move {
            crate::support::send(
                addr,
                "GET",
                "/Users",
                &[("authorization", &auth)],
                bytes::Bytes::new(),
            )
            .await
            .map(|r| r.status)
            .unwrap_or_else(|e| panic!("burst request failed: {e}"))
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("burst task"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_is_picked_up_with_exactly_one_fetch() {
    let (jwks, _upstream, cfg) = rsa_only().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    assert!(loaded >= 1);

    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    assert_eq!(jwks.hits(), loaded, "a known kid must not cause a fetch");

    let rotated = SigningKey::ec("rotated-1");
    jwks.set_jwks(mint::jwks(&[&rotated]));
    let r = gw.get("/Users", Some(&Token::new().sign(&rotated))).await;
    assert_eq!(r.status, 200, "token under the new key: {}", r.text());
    assert_eq!(
        jwks.hits(),
        loaded + 1,
        "exactly one refetch for the new kid"
    );

    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(&rotated)))
            .await
            .status,
        200
    );
    assert_eq!(jwks.hits(), loaded + 1, "the new key is cached");

    // The retired key is gone: its tokens fail, and (within refetch_cooldown) cause no fetch.
    gw.get("/Users", Some(&Token::new().sign(rsa_key())))
        .await
        .assert_invalid_token();
    assert_eq!(
        jwks.hits(),
        loaded + 1,
        "refetch is rate-limited by refetch_cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_a_new_kid_share_one_fetch() {
    let (jwks, upstream, cfg) = rsa_only().await;
    let gw = Gateway::start(cfg.set("jwt", "refetch_cooldown", "\"1s\"")).await;
    let loaded = jwks.hits();

    let rotated = SigningKey::rsa("rotated-2");
    jwks.set_jwks(mint::jwks(&[rsa_key(), &rotated]));
    let tokens: Vec<String> = (0..100).map(|_| Token::new().sign(&rotated)).collect();
    let statuses = burst(&gw, tokens, 100).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 100, "statuses: {statuses:?}");
    assert_eq!(
        jwks.hits(),
        loaded + 1,
        "100 concurrent unknown-kid requests, one fetch"
    );
    assert_eq!(upstream.hits(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_cannot_flood_the_idp() {
    let (jwks, upstream, cfg) = rsa_only().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    // An attacker's key, each token naming a different kid the IdP never published.
    let attacker = SigningKey::ec("attacker");
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            Token::new()
                .header("kid", serde_json::json!(format!("unknown-{i}")))
                .sign(&attacker)
        })
        .collect();
    let statuses = burst(&gw, tokens, 50).await;
    assert!(statuses.iter().all(|s| *s == 401), "statuses: {statuses:?}");
    assert!(
        jwks.hits() <= loaded + 1,
        "{} JWKS fetches for 50 unknown kids within refetch_cooldown",
        jwks.hits() - loaded
    );
    assert_eq!(upstream.hits(), 0);
}

/// After the first successful load, an IdP that answers 500 does not take the gateway down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_500_after_first_fetch_keeps_serving_cached_keys() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    jwks.set_mode(JwksMode::Status(500));

    // Force a fetch attempt against the failing endpoint with a kid it never published.
    let stranger = SigningKey::ec("stranger");
    gw.get("/Users", Some(&Token::new().sign(&stranger)))
        .await
        .assert_invalid_token();
    assert_eq!(
        jwks.hits(),
        loaded + 1,
        "the unknown kid should have caused one fetch"
    );

    for key in [rsa_key(), ec_key()] {
        let r = gw.get("/Users", Some(&Token::new().sign(key))).await;
        assert_eq!(
            r.status,
            200,
            "{} token while the IdP is down: {}",
            key.alg(),
            r.text()
        );
    }
    assert_eq!(gw.admin_get("/readyz").await.expect("readyz").status, 200);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_garbage_after_first_fetch_keeps_serving_cached_keys() {
    let (jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    jwks.set_mode(JwksMode::Garbage);
    let stranger = SigningKey::rsa("stranger");
    gw.get("/Users", Some(&Token::new().sign(&stranger)))
        .await
        .assert_invalid_token();
    assert_eq!(jwks.hits(), loaded + 1);
    let r = gw.get("/Users", Some(&Token::new().sign(ec_key()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A refetch stuck on a hanging IdP must not block requests whose key is already known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_jwks_refetch_does_not_block_known_keys() {
    let (jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let loaded = jwks.hits();
    jwks.set_mode(JwksMode::Hang);

    let stranger = SigningKey::ec("stranger");
    let auth = format!("Bearer {}", Token::new().sign(&stranger));
    let addr = gw.proxy_addr;
    let stuck = tokio::spawn(async move {
        crate::support::send(
            addr,
            "GET",
            "/Users",
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await
    });
    // Wait until the gateway is actually inside the hanging fetch.
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks.hits() == loaded {
        assert!(Instant::now() < deadline, "no refetch for the unknown kid");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let started = Instant::now();
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a known-kid request waited {:?} behind a hanging JWKS fetch",
        started.elapsed()
    );
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_loaded_jwks_is_not_ready_and_answers_503() {
    let (jwks, upstream, cfg) = fixture().await;
    jwks.set_mode(JwksMode::Status(500));
    let gw = Gateway::start_unready(cfg).await;

    assert_eq!(gw.admin_get("/healthz").await.expect("healthz").status, 200);
    assert_eq!(gw.admin_get("/readyz").await.expect("readyz").status, 503);
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    r.assert_scim_error(503);
    assert_eq!(upstream.hits(), 0);

    // The IdP recovers: the gateway becomes ready by itself and serves.
    jwks.set_mode(JwksMode::Serve);
    gw.wait_ready().await;
    let r = gw.get("/Users", Some(&Token::new().sign(rsa_key()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
}
