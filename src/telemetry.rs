//! Logging setup and the per-request access/audit line.
//!
//! Logs are one JSON object per line on stdout by default. The access line never carries the
//! token, the API key, or query values (only query keys): it is read by more people than the key.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::auth::VerifiedToken;
use crate::config::{LogConfig, LogFormat};

mod writer;

use crate::metrics::{DenyReason, Guardrail, Outcome};
pub use writer::{LogGuard, LogWriter, QueuedLine, dropped_lines};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Lines are
/// formatted on the thread that logs and written to stdout in batches by [`LogWriter`]'s
/// thread, so a request never waits for a `write(2)`; hold the returned guard until the process
/// exits, dropping it writes out what is queued.
pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = LogWriter::global();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // try_init: a second call (tests, demo) keeps the first subscriber.
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if installed.is_ok() && config.format == LogFormat::Json {
        JSON_ACCESS_LINES.store(true, Ordering::Relaxed);
    }
    writer.start()
}

/// Fields of the access line, filled in as the pipeline learns them. When the line is filtered
/// out by the log level, nothing is formatted or hashed.
#[derive(Debug, Default)]
pub struct AccessRecord {
    enabled: bool,
    request_id: String,
    method: String,
    path: String,
    scim_operation: &'static str,
    resource_type: std::borrow::Cow<'static, str>,
    query_keys: String,
    peer: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub jti: Option<String>,
    pub token_sha256: Option<String>,
    pub rule: Option<String>,
    pub account: Option<String>,
    pub reason: Option<DenyReason>,
    pub error: Option<String>,
    /// Caller header names not forwarded (allow-list), comma-separated; only at debug level.
    dropped_headers: Option<String>,
    /// The guardrail that refused the request.
    pub guardrail: Option<Guardrail>,
    /// What a judged write touches (`crate::guard::Summary`): attribute paths, member counts,
    /// deprovisionings; never a value.
    writes: Option<Writes>,
}

/// The access line's summary of a write a guardrail read.
#[derive(Debug)]
struct Writes {
    attributes: String,
    members_added: String,
    members_removed: String,
    deprovisions: String,
}

impl Writes {
    /// The access line's field names, in the order of [`Writes::values`].
    const NAMES: [&'static str; 4] = [
        "attributes",
        "members_added",
        "members_removed",
        "deprovisions",
    ];

    fn values(&self) -> [&str; 4] {
        [
            &self.attributes,
            &self.members_added,
            &self.members_removed,
            &self.deprovisions,
        ]
    }
}

impl AccessRecord {
    pub fn new<B>(req: &Request<B>, request_id: &HeaderValue, peer: SocketAddr) -> Self {
        if !tracing::enabled!(target: "scimgate::access", tracing::Level::INFO) {
            return Self::default();
        }
        let query_keys = req
            .uri()
            .query()
            .map(|q| {
                q.split('&')
                    .map(|kv| kv.split('=').next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        Self {
            enabled: true,
            request_id: request_id.to_str().unwrap_or("").to_owned(),
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            // Until the pipeline has routed and classified the request.
            scim_operation: "other",
            resource_type: std::borrow::Cow::Borrowed("unknown"),
            query_keys,
            peer: peer.ip().to_string(),
            ..Self::default()
        }
    }

    /// Who the verified token speaks for, plus a short digest so two log lines can be tied to
    /// one token without the token itself ever being logged.
    pub fn identify(&mut self, token: &VerifiedToken) {
        if !self.enabled {
            return;
        }
        let claim = |name: &str| {
            token
                .claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        self.iss = claim("iss");
        self.sub = claim("sub");
        self.client_id = claim("azp").or_else(|| claim("client_id"));
        self.jti = claim("jti");
        self.token_sha256 = Some(crate::text::hex(&token.digest[..6]));
    }

    /// The SCIM operation and resource type the pipeline classified the request as.
    pub fn classify(&mut self, request: &crate::scim::Classified) {
        self.scim_operation = request.operation.as_str();
        self.resource_type = request.resource.label();
    }

    /// Whether the access line wants the names of the headers the allow-list dropped: only at
    /// debug level, so the usual request gathers nothing.
    pub fn wants_dropped_headers(&self) -> bool {
        self.enabled && tracing::enabled!(target: "scimgate::access", tracing::Level::DEBUG)
    }

    /// Records the caller header names the allow-list did not forward (names only, never values).
    pub fn dropped_headers(&mut self, names: &[http::HeaderName]) {
        if !names.is_empty() {
            let list: Vec<&str> = names.iter().map(http::HeaderName::as_str).collect();
            self.dropped_headers = Some(list.join(","));
        }
    }

    /// Records the matched rule and its service account.
    pub fn allow(&mut self, rule: &str, account: &str) {
        if self.enabled {
            self.rule = Some(rule.to_owned());
            self.account = Some(account.to_owned());
        }
    }

    /// Records what a write judged by the guardrails touches: attribute paths and counts only.
    pub fn writes(&mut self, summary: &crate::guard::Summary) {
        if !self.enabled || !summary.inspected {
            return;
        }
        // Bounded: the paths come from the caller's body, and a line is read by people.
        const MAX_PATHS: usize = 32;
        let mut attributes: Vec<String> = summary
            .attributes
            .iter()
            .take(MAX_PATHS)
            .map(|path| crate::text::loggable(&path.to_string()))
            .collect();
        if summary.attributes.len() > MAX_PATHS {
            attributes.push(format!("+{} more", summary.attributes.len() - MAX_PATHS));
        }
        let removed = if summary.members.replaced {
            "all".to_owned()
        } else {
            summary.members.removed.to_string()
        };
        self.writes = Some(Writes {
            attributes: attributes.join(","),
            members_added: summary.members.added.to_string(),
            members_removed: removed,
            deprovisions: summary.deprovisions.to_string(),
        });
    }

    /// Records why the request failed (the error's Display; never token or key material).
    pub fn fail(&mut self, error: &dyn std::fmt::Display) {
        if self.enabled {
            self.error = Some(error.to_string());
        }
    }

    /// Writes the line. Values are JSON-escaped (no log injection).
    pub fn finish(self, outcome: Outcome, status: StatusCode, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        if JSON_ACCESS_LINES.load(Ordering::Relaxed) {
            LogWriter::global().append(&self.json_line(outcome, status, elapsed));
            return;
        }
        tracing::info!(
            target: "scimgate::access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            scim_operation = self.scim_operation,
            resource_type = %self.resource_type,
            query_keys = %self.query_keys,
            peer = %self.peer,
            status = status.as_u16(),
            outcome = outcome.as_str(),
            reason = self.reason.map_or("", DenyReason::as_str),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            iss = self.iss.as_deref().unwrap_or(""),
            sub = self.sub.as_deref().unwrap_or(""),
            client_id = self.client_id.as_deref().unwrap_or(""),
            jti = self.jti.as_deref().unwrap_or(""),
            token_sha256 = self.token_sha256.as_deref().unwrap_or(""),
            rule = self.rule.as_deref().unwrap_or(""),
            service_account = self.account.as_deref().unwrap_or(""),
            error = self.error.as_deref().unwrap_or(""),
            dropped_headers = self.dropped_headers.as_deref().unwrap_or(""),
            guardrail = self.guardrail.map_or("", Guardrail::as_str),
            attributes = self.writes.as_ref().map_or("", |w| w.attributes.as_str()),
            members_added = self.writes.as_ref().map_or("", |w| w.members_added.as_str()),
            members_removed = self.writes.as_ref().map_or("", |w| w.members_removed.as_str()),
            deprovisions = self.writes.as_ref().map_or("", |w| w.deprovisions.as_str()),
            "request"
        );
    }

    /// The line exactly as `tracing-subscriber`'s JSON format writes the event above (same
    /// members, order and escaping: both escape with serde_json), written directly: its
    /// formatter converts every small write back to `str`, which cost 3 µs of the line's 4.5
    /// (`examples/access_line_cost.rs`).
    fn json_line(&self, outcome: Outcome, status: StatusCode, elapsed: Duration) -> Vec<u8> {
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(b"{\"timestamp\":\"");
        let _ = write!(
            line,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        );
        line.extend_from_slice(br#"","level":"INFO","message":"request""#);
        let text = |line: &mut Vec<u8>, name: &str, value: &str| {
            line.extend_from_slice(b",\"");
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(b"\":");
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *line, value);
        };
        text(&mut line, "request_id", &self.request_id);
        text(&mut line, "method", &self.method);
        text(&mut line, "path", &self.path);
        text(&mut line, "scim_operation", self.scim_operation);
        text(&mut line, "resource_type", &self.resource_type);
        text(&mut line, "query_keys", &self.query_keys);
        text(&mut line, "peer", &self.peer);
        let _ = write!(line, ",\"status\":{}", status.as_u16());
        text(&mut line, "outcome", outcome.as_str());
        text(
            &mut line,
            "reason",
            self.reason.map_or("", DenyReason::as_str),
        );
        line.extend_from_slice(br#","latency_ms":"#);
        let _ = serde_json::to_writer(&mut line, &(elapsed.as_secs_f64() * 1000.0));
        let optional = [
            ("iss", &self.iss),
            ("sub", &self.sub),
            ("client_id", &self.client_id),
            ("jti", &self.jti),
            ("token_sha256", &self.token_sha256),
            ("rule", &self.rule),
            ("service_account", &self.account),
            ("error", &self.error),
            ("dropped_headers", &self.dropped_headers),
        ];
        for (name, value) in optional {
            text(&mut line, name, value.as_deref().unwrap_or(""));
        }
        text(
            &mut line,
            "guardrail",
            self.guardrail.map_or("", Guardrail::as_str),
        );
        let writes = self.writes.as_ref().map_or([""; 4], Writes::values);
        for (name, value) in Writes::NAMES.into_iter().zip(writes) {
            text(&mut line, name, value);
        }
        line.extend_from_slice(b",\"target\":\"scimgate::access\"}\n");
        line
    }
}

/// Whether access lines are written by [`AccessRecord::json_line`] (the JSON format), not
/// through `tracing`.
static JSON_ACCESS_LINES: AtomicBool = AtomicBool::new(false);
