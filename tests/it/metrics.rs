//! What a Prometheus scraping a fresh gateway sees (issue 15 §2): every series an alert needs
//! exists at 0 before the first event, so `increase(…[10m]) > 0` fires on the first failure,
//! and `promtool check metrics` finds nothing to complain about.

use std::time::{Duration, Instant};

use crate::support::observe::{metric, replace_file, scrape};
use crate::support::{Gateway, JwksMode, Token, fixture, rsa_key};

/// Every `outcome` value (README, metrics table).
const OUTCOMES: &[&str] = &[
    "forwarded",
    "missing_token",
    "invalid_token",
    "forbidden",
    "bad_request",
    "method_not_allowed",
    "unknown_tenant",
    "payload_too_large",
    "request_timeout",
    "jwks_unavailable",
    "upstream_unavailable",
    "upstream_timeout",
    "upstream_rejected_credential",
];

/// Every deny `reason` (README, metrics table).
const DENY_REASONS: &[&str] = &[
    "missing_token",
    "duplicate_authorization",
    "malformed",
    "too_large",
    "disallowed_algorithm",
    "unsupported_header",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "lifetime_too_long",
    "wrong_issuer",
    "wrong_audience",
    "no_rule",
    "op_denied",
    "jwks_unavailable",
];

/// Every JWKS fetch `result` (README, metrics table).
const JWKS_RESULTS: &[&str] = &[
    "ok",
    "unreachable",
    "timeout",
    "bad_status",
    "too_large",
    "invalid",
];

fn assert_value(text: &str, series: &str, want: f64) {
    assert_eq!(
        metric(text, series),
        Some(want),
        "{series} should be exported at {want}:\n{text}"
    );
}

/// Polls `/metrics` (bounded) until `series` is at least `want`; returns the scrape.
async fn wait_metric(gw: &Gateway, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(gw).await;
        if metric(&text, series).is_some_and(|v| v >= want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {want}:\n{text}\nlogs:\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` on a scrape: its findings, or `None` when promtool is not
/// installed (Debian package `prometheus`; CI installs it).
fn promtool_findings(text: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool not installed: `promtool check metrics` skipped");
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || !findings.trim().is_empty(),
        "promtool failed without saying why"
    );
    Some(findings.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gateway_exports_every_failure_series_at_zero() {
    let (jwks, _upstream, cfg) = fixture().await;
    let gw = Gateway::start(cfg).await;
    // Ready means the first JWKS fetch succeeded; nothing else has happened yet.
    let text = scrape(&gw).await;

    for outcome in OUTCOMES {
        assert_value(
            &text,
            &format!("scimgate_requests_total{{outcome=\"{outcome}\"}}"),
            0.0,
        );
        assert_value(
            &text,
            &format!("scimgate_request_duration_seconds_count{{outcome=\"{outcome}\"}}"),
            0.0,
        );
    }
    assert_value(
        &text,
        r#"scimgate_auth_decisions_total{decision="allow",reason="ok"}"#,
        0.0,
    );
    for reason in DENY_REASONS {
        assert_value(
            &text,
            &format!("scimgate_auth_decisions_total{{decision=\"deny\",reason=\"{reason}\"}}"),
            0.0,
        );
    }
    for result in &JWKS_RESULTS[1..] {
        assert_value(
            &text,
            &format!("scimgate_jwks_fetches_total{{result=\"{result}\",tenant=\"default\"}}"),
            0.0,
        );
    }
    let ok = metric(
        &text,
        r#"scimgate_jwks_fetches_total{result="ok",tenant="default"}"#,
    );
    assert!(ok.is_some_and(|v| v >= 1.0), "{text}");
    assert_value(
        &text,
        r#"scimgate_config_reloads_total{result="success"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"scimgate_config_reloads_total{result="failure"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"scimgate_rule_matches_total{rule="provisioners",tenant="default"}"#,
        0.0,
    );
    assert_value(&text, r#"scimgate_jwks_keys{tenant="default"}"#, 2.0);
    let last = metric(
        &text,
        r#"scimgate_jwks_last_success_timestamp_seconds{tenant="default"}"#,
    )
    .expect("last success series");
    assert!(last > 1.0e9, "a real timestamp: {last}");
    // No series without the tenant label is left over from before tenants were labelled.
    for family in [
        "scimgate_jwks_keys ",
        "scimgate_jwks_last_success_timestamp_seconds ",
        "scimgate_jwks_fetches_total{result=\"ok\"} ",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(family)),
            "{family}:\n{text}"
        );
    }
    if let Some(findings) = promtool_findings(&text) {
        assert_eq!(findings, "", "promtool check metrics on a fresh scrape");
    }

    // The first failures move the series from 0 to 1: what `increase` sees.
    let config = std::fs::read_to_string(&gw.config_path).expect("read config");
    replace_file(&gw.config_path, b"[server]\nlisten = 42\n", 0o644);
    let text = wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="failure"}"#,
        1.0,
    )
    .await;
    assert_value(
        &text,
        r#"scimgate_config_reloads_total{result="success"}"#,
        0.0,
    );
    replace_file(&gw.config_path, config.as_bytes(), 0o644);
    wait_metric(
        &gw,
        r#"scimgate_config_reloads_total{result="success"}"#,
        1.0,
    )
    .await;

    jwks.set_mode(JwksMode::Status(500));
    let unknown_kid = Token::new()
        .header("kid", serde_json::json!("rotated-away"))
        .sign(rsa_key());
    let r = gw.get("/Users", Some(&unknown_kid)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let text = wait_metric(
        &gw,
        r#"scimgate_jwks_fetches_total{result="bad_status",tenant="default"}"#,
        1.0,
    )
    .await;
    assert_value(
        &text,
        r#"scimgate_auth_decisions_total{decision="deny",reason="unknown_key"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"scimgate_requests_total{outcome="invalid_token"}"#,
        1.0,
    );
    if let Some(findings) = promtool_findings(&text) {
        assert_eq!(findings, "", "promtool check metrics after failures");
    }
}
