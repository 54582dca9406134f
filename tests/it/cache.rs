//! The validated-token cache seen from outside (issue 6): a hit decides exactly like a miss,
//! expiry is re-checked on every hit, a key leaving the JWKS and a reload both invalidate it,
//! and size 0 disables it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::mint::{self, PROVISIONER_GROUP, SigningKey};
use crate::support::observe::{
    access_lines, metric_or_zero, replace_file, scrape, sighup, wait_access_lines,
};
use crate::support::{Gateway, JwksServer, Token, ec_key, fixture, rsa_key, toml_str};

/// (hits, misses) of the token cache.
async fn cache_counts(gw: &Gateway) -> (f64, f64) {
    let text = scrape(gw).await;
    (
        metric_or_zero(&text, "scimgate_token_cache_hits_total"),
        metric_or_zero(&text, "scimgate_token_cache_misses_total"),
    )
}

// === 11. a hit decides like a miss ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hit_gives_the_same_decision_as_the_miss() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    assert_eq!(cache_counts(&gw).await, (0.0, 0.0));

    // Allowed: same status, same upstream credential, same rule and account.
    let token = Token::new().sign(ec_key());
    let first = gw.get("/Users?count=1", Some(&token)).await;
    assert_eq!(cache_counts(&gw).await, (0.0, 1.0), "first use is a miss");
    let second = gw.get("/Users?count=1", Some(&token)).await;
    assert_eq!(cache_counts(&gw).await, (1.0, 1.0), "second use is a hit");
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body, second.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header_one("authorization"),
        seen[1].header_one("authorization")
    );
    assert_eq!(
        seen[1].header_one("authorization"),
        format!("Bearer {}", gw.sentinel())
    );
    assert_eq!(seen[0].target, seen[1].target);

    // Denied by the rules: the claims are cached, the decision is made again (still 403).
    let outsider = Token::new()
        .claim("groups", json!(["outsiders"]))
        .sign(rsa_key());
    gw.get("/Users", Some(&outsider))
        .await
        .assert_insufficient_scope();
    gw.get("/Users", Some(&outsider))
        .await
        .assert_insufficient_scope();
    assert_eq!(cache_counts(&gw).await, (2.0, 2.0));

    // Failures are never cached: a bad signature is a miss every time.
    let forged = mint::corrupt_signature(&Token::new().sign(ec_key()));
    for _ in 0..2 {
        gw.get("/Users", Some(&forged)).await.assert_invalid_token();
    }
    assert_eq!(cache_counts(&gw).await, (2.0, 4.0));
    // Same header and payload as a cached token, another signature: not a hit.
    let twin = mint::corrupt_signature(&token);
    gw.get("/Users", Some(&twin)).await.assert_invalid_token();
    assert_eq!(cache_counts(&gw).await, (2.0, 5.0));
    // The cache is asked before the b64token syntax is checked (a hit needs no check), but
    // bytes outside that syntax never hit, and are refused as malformed without counting as
    // a miss: the misses stay well-formed tokens the cache lacked.
    for bent in [format!("{token}!"), format!("{token} x")] {
        gw.get("/Users", Some(&bent)).await.assert_invalid_token();
    }
    assert_eq!(cache_counts(&gw).await, (2.0, 5.0));
    assert_eq!(upstream.hits(), 2);
    // Neither the cached token nor its bent variants reach a log line (nor, as always, the key).
    let (bang, spaced) = (format!("{token}!"), format!("{token} x"));
    gw.assert_logs_free_of(&[&token, &bang, &spaced]);

    let lines = wait_access_lines(&gw, 9).await;
    assert_eq!(lines[0]["rule"], lines[1]["rule"]);
    assert_eq!(lines[0]["rule"], json!("provisioners"));
    assert_eq!(lines[0]["service_account"], lines[1]["service_account"]);
    assert_eq!(lines[0]["sub"], lines[1]["sub"]);
    assert_eq!(lines[0]["token_sha256"], lines[1]["token_sha256"]);
    assert_eq!(lines[2]["reason"], json!("no_rule"));
    assert_eq!(lines[3]["reason"], json!("no_rule"));
    assert_eq!(lines[4]["reason"], json!("bad_signature"));
    assert_eq!(lines[5]["reason"], json!("bad_signature"));
    assert_eq!(lines[6]["reason"], json!("bad_signature"));
    assert_eq!(lines[7]["reason"], json!("malformed"));
    assert_eq!(lines[8]["reason"], json!("malformed"));
    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_or_zero(
            &metrics,
            r#"scimgate_rule_matches_total{rule="provisioners",tenant="default"}"#
        ),
        2.0
    );
}

// === 12. expiry is re-checked on every hit: security_tokens::t18_cached_token_expires_on_time ===

// === 13. a key leaving the JWKS invalidates cached tokens ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_invalidates_cached_tokens_after_an_unknown_kid_refetch() {
    let (jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let ec_token = Token::new().sign(ec_key());
    let rsa_token = Token::new().sign(rsa_key());
    for t in [&ec_token, &ec_token, &rsa_token] {
        assert_eq!(gw.get("/Users", Some(t)).await.status, 200);
    }
    assert_eq!(cache_counts(&gw).await.0, 1.0, "the EC token is cached");

    // The IdP drops the EC key; a token with a kid the gateway does not know triggers a refetch.
    jwks.set_jwks(mint::jwks(&[rsa_key()]));
    let fetched = jwks.hits();
    let stranger = SigningKey::ec("never-published");
    gw.get("/Users", Some(&Token::new().sign(&stranger)))
        .await
        .assert_invalid_token();
    assert_eq!(jwks.hits(), fetched + 1, "one refetch for the unknown kid");

    let r = gw.get("/Users", Some(&ec_token)).await;
    r.assert_invalid_token();
    let r = gw.get("/Users", Some(&ec_token)).await;
    r.assert_invalid_token();
    // The RSA key stayed: its token still works (re-verified under the new key set).
    assert_eq!(gw.get("/Users", Some(&rsa_token)).await.status, 200);
    assert_eq!(upstream.hits(), 4);
    let metrics = scrape(&gw).await;
    assert!(
        metric_or_zero(
            &metrics,
            r#"scimgate_auth_decisions_total{decision="deny",reason="unknown_key"}"#
        ) >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        metric_or_zero(&metrics, r#"scimgate_jwks_keys{tenant="default"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_invalidates_cached_tokens_after_a_background_refresh() {
    let jwks = JwksServer::start(mint::jwks(&[rsa_key(), ec_key()])).await;
    let upstream = crate::support::Upstream::start().await;
    let cfg = crate::support::GatewayConfig::new(&upstream.url(), &jwks.url())
        .set("jwt", "refresh_interval", &toml_str("1s"))
        .set("jwt", "min_refresh_interval", &toml_str("1s"));
    let gw = Gateway::start(cfg).await;
    let ec_token = Token::new().sign(ec_key());
    for _ in 0..2 {
        assert_eq!(gw.get("/Users", Some(&ec_token)).await.status, 200);
    }
    assert_eq!(cache_counts(&gw).await.0, 1.0);

    jwks.set_jwks(mint::jwks(&[rsa_key()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = gw.get("/Users", Some(&ec_token)).await;
        if r.status != 200 {
            r.assert_invalid_token();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cached token outlived its key by 5s; logs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.get("/Users", Some(&ec_token))
        .await
        .assert_invalid_token();
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
}

// === 14. a reload starts with an empty cache ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_invalidates_the_cache() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(ec_key());
    for _ in 0..2 {
        assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    }
    assert_eq!(cache_counts(&gw).await, (1.0, 1.0));

    let text = std::fs::read_to_string(&gw.config_path).expect("read config");
    let needle = format!("value = {}", toml_str(PROVISIONER_GROUP));
    assert!(text.contains(&needle), "{text}");
    replace_file(
        &gw.config_path,
        text.replacen(&needle, "value = \"scim-someone-else\"", 1)
            .as_bytes(),
        0o600,
    );
    sighup(&gw);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&gw).await;
        if metric_or_zero(&m, r#"scimgate_config_reloads_total{result="success"}"#) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no reload; metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (hits, misses) = cache_counts(&gw).await;
    gw.get("/Users", Some(&token))
        .await
        .assert_insufficient_scope();
    assert_eq!(
        cache_counts(&gw).await,
        (hits, misses + 1.0),
        "the first use after the reload is a miss"
    );
    gw.get("/Users", Some(&token))
        .await
        .assert_insufficient_scope();
    assert_eq!(cache_counts(&gw).await, (hits + 1.0, misses + 1.0));
    gw.flush_logs();
    let lines = access_lines(&gw);
    let last = lines
        .iter()
        .rev()
        .find(|l| {
            !l["request_id"]
                .as_str()
                .unwrap_or("")
                .starts_with("flush-marker-")
        })
        .expect("access line");
    assert_eq!(last["reason"], json!("no_rule"));
}

// === 15. size 0 disables the cache ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_size_zero_counts_no_hits() {
    let (jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg.set("jwt", "token_cache_size", "0")).await;
    let token = Token::new().sign(rsa_key());
    for _ in 0..3 {
        assert_eq!(gw.get("/Users", Some(&token)).await.status, 200);
    }
    let (hits, misses) = cache_counts(&gw).await;
    assert_eq!(hits, 0.0, "no hits with the cache disabled");
    assert!(misses <= 3.0);

    // Every request is verified afresh: once the key is gone (after a refetch), the same token
    // is refused at once.
    jwks.set_jwks(mint::jwks(&[ec_key()]));
    let stranger = SigningKey::rsa("never-published-rsa");
    gw.get("/Users", Some(&Token::new().sign(&stranger)))
        .await
        .assert_invalid_token();
    gw.get("/Users", Some(&token)).await.assert_invalid_token();
    assert_eq!(cache_counts(&gw).await.0, 0.0);
}
