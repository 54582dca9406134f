//! Every metric scimgate exports, on its own registry, with fixed label values (design.md §6).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a request ended: the `outcome` label and the audit line's `outcome` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    Forwarded,
    MissingToken,
    InvalidToken,
    Forbidden,
    BadRequest,
    MethodNotAllowed,
    UnknownTenant,
    PayloadTooLarge,
    RequestTimeout,
    JwksUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamRejectedCredential,
    HeadersTooLarge,
}

/// Result of one JWKS fetch: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksResult {
    Ok,
    Unreachable,
    Timeout,
    BadStatus,
    TooLarge,
    Invalid,
}

/// Allow or deny: the `decision` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// The metric families. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    upstream_duration: Histogram,
    auth_decisions: IntCounterVec,
    rule_matches: IntCounterVec,
    jwks_fetches: IntCounterVec,
    jwks_keys: IntGauge,
    jwks_last_success: Gauge,
    token_cache_hits: IntCounter,
    token_cache_misses: IntCounter,
    config_reloads: IntCounterVec,
    config_last_reload: Gauge,
    connections_open: IntGauge,
    connections_max: IntGauge,
    /// Label lookups hash strings under a lock: resolve the fixed ones once.
    by_outcome: Vec<(prometheus::IntCounter, Histogram)>,
    allowed: IntCounter,
}

// === impl Outcome ===

impl Outcome {
    /// Every outcome, in declaration order (the index of each in per-outcome arrays).
    pub const ALL: [Outcome; 14] = [
        Self::Forwarded,
        Self::MissingToken,
        Self::InvalidToken,
        Self::Forbidden,
        Self::BadRequest,
        Self::MethodNotAllowed,
        Self::UnknownTenant,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::JwksUnavailable,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
        Self::UpstreamRejectedCredential,
        Self::HeadersTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownTenant => "unknown_tenant",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamRejectedCredential => "upstream_rejected_credential",
            Self::HeadersTooLarge => "headers_too_large",
        }
    }
}

// === impl JwksResult ===

impl JwksResult {
    pub fn of<T>(result: &Result<T, crate::auth::fetch::FetchError>) -> Self {
        use crate::auth::fetch::FetchError;
        match result {
            Ok(_) => Self::Ok,
            Err(FetchError::Unreachable(_)) => Self::Unreachable,
            Err(FetchError::Timeout) => Self::Timeout,
            Err(FetchError::Status(_)) => Self::BadStatus,
            Err(FetchError::TooLarge) => Self::TooLarge,
            Err(FetchError::Invalid(_)) => Self::Invalid,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::BadStatus => "bad_status",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every family. Fails only on a programming error (a duplicate or
    /// malformed name), which the unit test below would catch first.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let requests = IntCounterVec::new(
            Opts::new("scimgate_requests_total", "Requests by outcome."),
            &["outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "scimgate_request_duration_seconds",
                "Time to the response head, by outcome.",
            )
            .buckets(buckets.clone()),
            &["outcome"],
        )?;
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "scimgate_upstream_duration_seconds",
                "Upstream time to the response head.",
            )
            .buckets(buckets),
        )?;
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "scimgate_auth_decisions_total",
                "Authorization decisions by decision and reason.",
            ),
            &["decision", "reason"],
        )?;
        let rule_matches = IntCounterVec::new(
            Opts::new("scimgate_rule_matches_total", "Requests allowed, by rule."),
            &["rule"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new("scimgate_jwks_fetches_total", "JWKS fetches by result."),
            &["result"],
        )?;
        let jwks_keys = IntGauge::new("scimgate_jwks_keys", "Usable keys in the loaded JWKS.")?;
        let jwks_last_success = Gauge::new(
            "scimgate_jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS fetch.",
        )?;
        let token_cache_hits = IntCounter::new(
            "scimgate_token_cache_hits_total",
            "Validated-token cache hits.",
        )?;
        let token_cache_misses = IntCounter::new(
            "scimgate_token_cache_misses_total",
            "Validated-token cache misses.",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("scimgate_config_reloads_total", "Config reloads by result."),
            &["result"],
        )?;
        let config_last_reload = Gauge::new(
            "scimgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (startup or reload).",
        )?;
        let connections_open = IntGauge::new(
            "scimgate_connections_open",
            "Open proxy connections (TLS handshakes and protocol detection included).",
        )?;
        let connections_max = IntGauge::new(
            "scimgate_connections_max",
            "server.max_connections: proxy connections served at once; more wait to be accepted.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("scimgate_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(auth_decisions.clone()),
            Box::new(rule_matches.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success.clone()),
            Box::new(token_cache_hits.clone()),
            Box::new(token_cache_misses.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_reload.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_max.clone()),
            Box::new(build_info),
        ] {
            registry.register(collector)?;
        }
        let by_outcome = Outcome::ALL
            .iter()
            .map(|o| {
                (
                    requests.with_label_values(&[o.as_str()]),
                    request_duration.with_label_values(&[o.as_str()]),
                )
            })
            .collect();
        let allowed = auth_decisions.with_label_values(&["allow", "ok"]);
        Ok(Self {
            registry,
            upstream_duration,
            auth_decisions,
            rule_matches,
            jwks_fetches,
            jwks_keys,
            jwks_last_success,
            token_cache_hits,
            token_cache_misses,
            by_outcome,
            allowed,
            config_reloads,
            config_last_reload,
            connections_open,
            connections_max,
        })
    }

    /// One finished request.
    pub fn request(&self, outcome: Outcome, seconds: f64) {
        if let Some((count, duration)) = self.by_outcome.get(outcome as usize) {
            count.inc();
            duration.observe(seconds);
        }
    }

    pub fn upstream(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }

    /// One authorization decision; `reason` comes from `AuthError::reason` or is `"ok"`.
    pub fn auth_decision(&self, decision: Decision, reason: &'static str) {
        let decision = match decision {
            Decision::Allow if reason == "ok" => return self.allowed.inc(),
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        };
        self.auth_decisions
            .with_label_values(&[decision, reason])
            .inc();
    }

    /// The counter of one rule's matches. Rule names come from the validated config, a fixed
    /// set; the runtime resolves each once per config generation, so a request's increment is
    /// one atomic add, and every rule's series is exported (at 0) from the start.
    pub fn rule_counter(&self, rule: &str) -> IntCounter {
        self.rule_matches.with_label_values(&[rule])
    }

    pub fn jwks_fetch(&self, result: JwksResult) {
        self.jwks_fetches
            .with_label_values(&[result.as_str()])
            .inc();
        if result == JwksResult::Ok {
            self.jwks_last_success.set(unix_now());
        }
    }

    /// A config load: the startup one (`None`: timestamp only) or a reload (`Some(ok)`).
    pub fn config_loaded(&self, reload: Option<bool>) {
        match reload {
            Some(true) => self.config_reloads.with_label_values(&["success"]).inc(),
            Some(false) => self.config_reloads.with_label_values(&["failure"]).inc(),
            None => {}
        }
        if reload != Some(false) {
            self.config_last_reload.set(unix_now());
        }
    }

    /// The connection limit the listener runs with.
    pub fn connection_limit(&self, max: usize) {
        self.connections_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// A proxy connection was accepted (`true`) or has ended (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    pub fn jwks_loaded(&self, keys: usize) {
        self.jwks_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    pub fn token_cache(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc()
        } else {
            self.token_cache_misses.inc()
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which registration rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders_every_family() {
        let m = Metrics::new().unwrap();
        m.request(Outcome::Forwarded, 0.01);
        m.auth_decision(Decision::Deny, "expired");
        m.jwks_fetch(JwksResult::Ok);
        let text = m.render();
        assert!(
            text.contains("scimgate_requests_total{outcome=\"forwarded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scimgate_auth_decisions_total{decision=\"deny\",reason=\"expired\"} 1")
        );
        assert!(text.contains("scimgate_build_info{version="));
        assert!(text.contains("scimgate_jwks_fetches_total{result=\"ok\"} 1"));
    }
}
