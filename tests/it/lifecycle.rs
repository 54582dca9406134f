//! Process lifecycle and the admin port: graceful drain on SIGTERM, health/readiness/metrics,
//! one access line per request, refused methods.

use std::time::{Duration, Instant};

use crate::support::{Gateway, Token, fixture, rsa_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_0() {
    let (_jwks, upstream, cfg) = fixture().await;
    upstream.set_delay(Duration::from_millis(1000));
    let mut gw = Gateway::start(cfg).await;

    let addr = gw.proxy_addr;
    let auth = format!("Bearer {}", Token::new().sign(rsa_key()));
    let in_flight = tokio::spawn(async move {
        crate::support::send(
            addr,
            "GET",
            "/Users",
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await
    });
    // SIGTERM only once the request is inside the gateway (the upstream has its head).
    upstream.wait_for_hits(1, Duration::from_secs(5)).await;
    let signalled = Instant::now();
    gw.send_sigterm();

    let r = in_flight
        .await
        .expect("request task")
        .unwrap_or_else(|e| panic!("in-flight request failed during drain: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("ListResponse"),
        "full upstream body: {}",
        r.text()
    );

    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    // Drained, not cut short by shutdown_grace (5 s in the test config).
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "took {:?}",
        signalled.elapsed()
    );
    // Not accepting any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_0_promptly() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let mut gw = Gateway::start(cfg).await;
    // An idle keep-alive connection must not hold the process until shutdown_grace.
    let idle = tokio::net::TcpStream::connect(gw.proxy_addr)
        .await
        .expect("connect");
    let started = Instant::now();
    gw.send_sigterm();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_serves_health_readiness_and_metrics_only() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    assert_eq!(
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        200
    );
    assert_eq!(gw.get("/Users", None).await.status, 401);

    assert_eq!(gw.admin_get("/healthz").await.expect("healthz").status, 200);
    assert_eq!(gw.admin_get("/readyz").await.expect("readyz").status, 200);
    let metrics = gw.admin_get("/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for name in [
        "scimgate_requests_total",
        "scimgate_request_duration_seconds",
        "scimgate_auth_decisions_total",
        "scimgate_jwks_fetches_total",
        "scimgate_jwks_keys",
        "scimgate_build_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        !text.contains("/Users"),
        "metrics must not be labelled by path"
    );

    // The admin listener never proxies.
    let r = gw.admin_get("/Users").await.expect("admin request");
    assert_ne!(r.status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_line_per_request() {
    let (_jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let statuses = [
        gw.get("/Users", Some(&Token::new().sign(rsa_key())))
            .await
            .status,
        gw.get("/Users", None).await.status,
        gw.get(
            "/Users",
            Some(
                &Token::new()
                    .claim("groups", serde_json::json!([]))
                    .sign(rsa_key()),
            ),
        )
        .await
        .status,
    ];
    assert_eq!(statuses, [200, 401, 403]);
    let is_access = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .map(|v| v["message"] == "request")
            .unwrap_or(false)
    };
    gw.wait_for_logs(is_access, 3, Duration::from_secs(5)).await;
    // A fourth request proves the earlier ones were not logged twice (its line comes last).
    assert_eq!(gw.get("/Users", None).await.status, 401);
    let lines = gw.wait_for_logs(is_access, 4, Duration::from_secs(5)).await;
    assert_eq!(lines.len(), 4, "access lines:\n{}", lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_trace_are_405() {
    let (_jwks, upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    let token = Token::new().sign(rsa_key());
    let auth = format!("Bearer {token}");
    let trace = gw
        .request("TRACE", "/Users", &[("authorization", &auth)], "")
        .await;
    assert_eq!(trace.status, 405, "TRACE: {}", trace.text());
    let connect = gw
        .raw(
            format!(
                "CONNECT upstream.example:443 HTTP/1.1\r\nHost: upstream.example:443\r\n\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(connect.status, 405, "CONNECT: {}", connect.text());
    assert_eq!(upstream.hits(), 0);
}
