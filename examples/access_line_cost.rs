//! CPU per access line, the audit line written for every request (bench/README.md): formats and
//! writes `N` lines through `telemetry::init`'s subscriber with stdout redirected by the caller
//! (a file, as deployed with a log shipper tailing it), and prints the process CPU time (user +
//! system, all threads, from /proc/self/stat) per line. Run it with the line on and off
//! (`SCIMGATE_LOG_LEVEL=warn`): the difference is what the line costs.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use scimgate::config::{LogConfig, LogFormat};
use scimgate::metrics::Outcome;
use scimgate::telemetry::{self, AccessRecord, LogWriter};

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn main() {
    let lines: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let level = std::env::var("SCIMGATE_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let guard = telemetry::init(&LogConfig {
        level,
        format: LogFormat::Json,
    });
    let request = Request::get("/Users?filter=userName%20eq%20%22a%22&count=10")
        .body(())
        .expect("request");
    let id = HeaderValue::from_static("0f3c9a6b2d4e4f8a9b1c2d3e4f5a6b7c");
    let peer: SocketAddr = "10.1.2.3:40000".parse().expect("addr");
    let start = cpu_ticks();
    let wall = std::time::Instant::now();
    for n in 0..lines {
        // A flood faster than any proxy serves would outrun the writer thread and have lines
        // dropped (not written, so not paid for); write out every 1,000 lines (600 KB, a
        // 20 ms batch at 30,000 requests a second) from here instead.
        if n % 1000 == 0 {
            LogWriter::global().flush();
        }
        let mut record = AccessRecord::new(&request, &id, peer);
        record.iss = Some("https://login.example.com/tenant/v2.0".into());
        record.sub = Some("0a1b2c3d-provisioner".into());
        record.client_id = Some("okta-scim-client".into());
        record.jti = Some("7f9e2d1c".into());
        record.token_sha256 = Some("a1b2c3d4e5f6".into());
        record.rule = Some("provisioners".into());
        record.account = Some("provisioner".into());
        record.finish(
            Outcome::Forwarded,
            StatusCode::OK,
            Duration::from_micros(850),
        );
    }
    drop(guard);
    let ticks = cpu_ticks() - start;
    // USER_HZ is 100 on Linux.
    let micros = ticks as f64 * 10_000.0 / lines as f64;
    eprintln!(
        "{lines} lines: {micros:.2} µs CPU per line ({:.2} µs wall), {} dropped",
        wall.elapsed().as_secs_f64() * 1e6 / lines as f64,
        telemetry::dropped_lines()
    );
}
