//! The access line is the audit trail: none lost on SIGTERM or SIGHUP, one per request in
//! order, and the writer's drop count exported from the start.

use std::time::Duration;

use crate::support::observe::{access_lines, metric, scrape, sighup};
use crate::support::{Gateway, Token, fixture, rsa_key};
use bytes::Bytes;

/// Sends `n` requests one after another, each with its own `x-request-id`, and returns the ids.
async fn requests(gw: &Gateway, prefix: &str, n: usize) -> Vec<String> {
    let auth = format!("Bearer {}", Token::new().sign(rsa_key()));
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{prefix}-{i:04}");
        let r = gw
            .request(
                "GET",
                "/Users",
                &[("authorization", &auth), ("x-request-id", &id)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(id);
    }
    ids
}

/// The request ids of the access lines, in the order they were written, once `n` are in (the
/// pipe from an exited process may still be draining into the capture).
async fn logged_ids(gw: &Gateway, n: usize) -> Vec<String> {
    let is_access = |l: &str| l.contains("\"message\":\"request\"");
    gw.wait_for_logs(is_access, n, Duration::from_secs(5)).await;
    access_lines(gw)
        .iter()
        .filter_map(|l| l["request_id"].as_str().map(str::to_owned))
        .collect()
}

/// Lines are written in batches by a writer thread; SIGTERM right after the last response
/// must still find every line on stdout once the process has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_a_burst_loses_no_access_line() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let mut gw = Gateway::start(cfg).await;
    let sent = requests(&gw, "term", 300).await;
    // No waiting for the lines: the signal goes while they may still be queued.
    gw.send_sigterm();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert_eq!(
        logged_ids(&gw, sent.len()).await,
        sent,
        "every line, once, in request order"
    );
}

/// A reload between two bursts keeps the queue and the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_between_bursts_loses_no_access_line() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let mut gw = Gateway::start(cfg).await;
    let mut sent = requests(&gw, "before", 100).await;
    sighup(&gw);
    sent.extend(requests(&gw, "after", 100).await);
    gw.send_sigterm();
    gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(logged_ids(&gw, sent.len()).await, sent);
}

/// The drop counter exists at 0 before anything was dropped (an alert on its increase needs
/// the series), and stays 0 while stdout keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dropped_lines_counter_is_exported_at_zero() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    requests(&gw, "count", 50).await;
    let text = scrape(&gw).await;
    assert_eq!(
        metric(&text, "scimgate_log_lines_dropped_total"),
        Some(0.0),
        "{text}"
    );
}
