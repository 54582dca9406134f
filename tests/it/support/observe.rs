//! Watching a running gateway from outside: metrics scrapes, access lines, reload triggers.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::config::random_hex;
use super::gateway::Gateway;

/// `GET /metrics` on the admin port.
pub async fn scrape(gw: &Gateway) -> String {
    let r = gw.admin_get("/metrics").await.expect("GET /metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    r.text()
}

/// The value of one series (`name` or `name{labels}`), exactly as written.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `metric`, with an absent series read as 0 (a counter never incremented is not exported).
pub fn metric_or_zero(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The access lines (`"message":"request"`) logged so far.
pub fn access_lines(gw: &Gateway) -> Vec<Value> {
    gw.json_logs()
        .into_iter()
        .filter(|v| v["message"] == "request")
        .collect()
}

/// Waits (bounded) for `n` access lines.
pub async fn wait_access_lines(gw: &Gateway, n: usize) -> Vec<Value> {
    gw.wait_for_logs(
        |l| l.contains("\"message\":\"request\""),
        n,
        Duration::from_secs(5),
    )
    .await;
    access_lines(gw)
}

/// Sends SIGHUP (reload) to the gateway.
pub fn sighup(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("run kill -HUP");
    assert!(status.success(), "kill -HUP failed");
}

/// Replaces a file's content in one step (write a sibling, rename), so the reload poll never
/// reads it half-written.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) {
    let tmp = path.with_extension(format!("tmp-{}", random_hex(4)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .expect("create replacement file");
    std::io::Write::write_all(&mut file, contents).expect("write replacement file");
    file.sync_all().expect("sync replacement file");
    drop(file);
    std::fs::rename(&tmp, path).expect("rename replacement file");
}
