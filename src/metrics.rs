//! Every metric scimgate exports, on its own registry, with fixed label values (design.md §6).
//!
//! Every series an alert can need exists from startup at 0: a counter created on first use
//! appears at 1, and `increase(…)` over a series that did not exist before sees no increase. So
//! each label whose values are a fixed set is enumerated here, from lists the compiler keeps
//! complete (`label_enum!`), and each tenant's series are created with the
//! tenant. Series of tenants and rules a reload removed are dropped with them, so a gone
//! tenant's JWKS gauges cannot keep an alert firing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Tenant;

/// Declares a label enum, its label values, the list of all of them, and `$map<T>`: one `T` per
/// value, built and read by exhaustive matches. From one list of variants, so a variant cannot
/// be added without its label value, its place in `ALL` (and with it its series at startup), or
/// its handle.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident / $map:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code, reason = "not every label is walked")]
            $vis const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value.
            $vis const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $label, )+
                }
            }
        }

        /// One value per label value, e.g. the resolved series of each.
        #[allow(non_snake_case, reason = "fields are named after the variants they hold")]
        $vis struct $map<T> {
            $( $variant: T, )+
        }

        #[allow(dead_code, reason = "not every map is walked or built from a closure")]
        impl<T> $map<T> {
            /// `make(value)` for every value.
            fn new(mut make: impl FnMut($name) -> T) -> Self {
                Self { $( $variant: make($name::$variant), )+ }
            }

            /// The one for `value`.
            fn get(&self, value: $name) -> &T {
                match value {
                    $( $name::$variant => &self.$variant, )+
                }
            }
        }
    };
}

label_enum! {
    /// How a request ended: the `outcome` label and the audit line's `outcome` field.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome / PerOutcome {
        Forwarded => "forwarded",
        MissingToken => "missing_token",
        InvalidToken => "invalid_token",
        Forbidden => "forbidden",
        BadRequest => "bad_request",
        MethodNotAllowed => "method_not_allowed",
        UnknownTenant => "unknown_tenant",
        PayloadTooLarge => "payload_too_large",
        RequestTimeout => "request_timeout",
        JwksUnavailable => "jwks_unavailable",
        UpstreamUnavailable => "upstream_unavailable",
        UpstreamTimeout => "upstream_timeout",
        UpstreamRejectedCredential => "upstream_rejected_credential",
        /// Not a SCIM endpoint (the request grammar).
        NotFound => "not_found",
        /// A request body in a media type or content-coding scimgate cannot judge.
        UnsupportedMediaType => "unsupported_media_type",
        /// The upstream's response held the service account key, or could not be screened.
        UpstreamWithheld => "upstream_withheld",
        /// A request head over the front's size limit (431).
        HeadersTooLarge => "headers_too_large",
        /// A guardrail refused it (`crate::guard`; which one: `scimgate_guardrail_trips_total`).
        Guardrail => "guardrail",
    }
}

label_enum! {
    /// The guardrail a refusal is for: the `guardrail` label of
    /// `scimgate_guardrail_trips_total{tenant,guardrail}` and the access line's `guardrail`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Guardrail / PerGuardrail {
        DeprovisionBudget => "deprovision_budget",
        DenyAttributes => "deny_attributes",
        ProtectedGroups => "protected_groups",
        SourceIps => "source_ips",
        RateLimit => "rate_limit",
    }
}

label_enum! {
    /// Result of one JWKS fetch: the `result` label.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum JwksResult / PerJwksResult {
        Ok => "ok",
        Unreachable => "unreachable",
        Timeout => "timeout",
        BadStatus => "bad_status",
        TooLarge => "too_large",
        Invalid => "invalid",
    }
}

label_enum! {
    /// Why a request was denied: the `reason` label of `scimgate_auth_decisions_total` (with
    /// `decision="deny"`) and the audit line's `reason`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DenyReason / PerDenyReason {
        MissingToken => "missing_token",
        DuplicateAuthorization => "duplicate_authorization",
        Malformed => "malformed",
        TooLarge => "too_large",
        DisallowedAlgorithm => "disallowed_algorithm",
        UnsupportedHeader => "unsupported_header",
        UnknownKey => "unknown_key",
        BadSignature => "bad_signature",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        LifetimeTooLong => "lifetime_too_long",
        WrongIssuer => "wrong_issuer",
        WrongAudience => "wrong_audience",
        /// A token scimgate issued that its issuer no longer honours (`not_before`, removed client).
        Revoked => "revoked",
        NoRule => "no_rule",
        OperationDenied => "op_denied",
        JwksUnavailable => "jwks_unavailable",
    }
}

label_enum! {
    /// Result of a config reload: the `result` label.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum ReloadResult / PerReloadResult {
        Success => "success",
        Failure => "failure",
    }
}

/// The `reason` of an allowed request.
const ALLOWED: &str = "ok";

/// The count and duration series of one outcome.
struct OutcomeSeries {
    requests: IntCounter,
    duration: Histogram,
}

/// The metric families. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    upstream_duration: Histogram,
    rule_matches: IntCounterVec,
    jwks_fetches: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    token_cache_hits: IntCounter,
    token_cache_misses: IntCounter,
    config_last_reload: Gauge,
    connections_open: IntGauge,
    connections_max: IntGauge,
    log_lines_dropped: IntCounter,
    guardrail_trips: IntCounterVec,
    budget_used: IntGaugeVec,
    budget_limit: IntGaugeVec,
    /// Label lookups hash strings under a lock: the fixed series are resolved once.
    by_outcome: PerOutcome<OutcomeSeries>,
    allowed: IntCounter,
    denied: PerDenyReason<IntCounter>,
    reloads: PerReloadResult<IntCounter>,
    /// `scimgate_token_requests_total{outcome}`, indexed like `TokenOutcome::ALL`.
    token_requests: Vec<IntCounter>,
    tokens_issued: IntCounter,
    /// The tenants (and their rules) whose series exist, so `retain` can drop those no longer
    /// configured.
    labelled: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// One tenant's guardrail series, resolved once per config generation.
pub struct GuardrailMetrics {
    trips: PerGuardrail<IntCounter>,
    budget_used: IntGauge,
    budget_limit: IntGauge,
}

/// One tenant's JWKS series, resolved once when its key cache is built.
pub struct JwksMetrics {
    fetches: PerJwksResult<IntCounter>,
    keys: IntGauge,
    last_success: Gauge,
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every family and its fixed series. Fails only on a programming
    /// error (a duplicate or malformed name), which the unit test below would catch first.
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
            Opts::new(
                "scimgate_rule_matches_total",
                "Requests allowed, by tenant and rule.",
            ),
            &["tenant", "rule"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "scimgate_jwks_fetches_total",
                "JWKS fetches by tenant and result.",
            ),
            &["tenant", "result"],
        )?;
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "scimgate_jwks_keys",
                "Usable keys in the tenant's loaded JWKS.",
            ),
            &["tenant"],
        )?;
        let jwks_last_success = GaugeVec::new(
            Opts::new(
                "scimgate_jwks_last_success_timestamp_seconds",
                "Unix time of the tenant's last successful JWKS fetch (0: never).",
            ),
            &["tenant"],
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
        let log_lines_dropped = IntCounter::new(
            "scimgate_log_lines_dropped_total",
            "Log lines (access lines included) dropped because stdout did not take them for too long.",
        )?;
        let guardrail_trips = IntCounterVec::new(
            Opts::new(
                "scimgate_guardrail_trips_total",
                "Requests a guardrail refused, by tenant and guardrail.",
            ),
            &["tenant", "guardrail"],
        )?;
        let budget_used = IntGaugeVec::new(
            Opts::new(
                "scimgate_deprovision_budget_used",
                "Deprovisionings counted in the tenant's current window (this replica).",
            ),
            &["tenant"],
        )?;
        let budget_limit = IntGaugeVec::new(
            Opts::new(
                "scimgate_deprovision_budget_limit",
                "guardrails.max_deprovisions of the tenant (0: no budget).",
            ),
            &["tenant"],
        )?;
        let token_requests = IntCounterVec::new(
            Opts::new(
                "scimgate_token_requests_total",
                "Requests to the issuer's token endpoint, by outcome.",
            ),
            &["outcome"],
        )?;
        let tokens_issued = IntCounter::new(
            "scimgate_tokens_issued_total",
            "Access tokens the issuer's token endpoint signed.",
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
            Box::new(log_lines_dropped.clone()),
            Box::new(guardrail_trips.clone()),
            Box::new(budget_used.clone()),
            Box::new(budget_limit.clone()),
            Box::new(token_requests.clone()),
            Box::new(tokens_issued.clone()),
            Box::new(build_info),
        ] {
            registry.register(collector)?;
        }
        let by_outcome = PerOutcome::new(|o| OutcomeSeries {
            requests: requests.with_label_values(&[o.as_str()]),
            duration: request_duration.with_label_values(&[o.as_str()]),
        });
        let allowed = auth_decisions.with_label_values(&["allow", ALLOWED]);
        let denied =
            PerDenyReason::new(|r| auth_decisions.with_label_values(&["deny", r.as_str()]));
        let reloads = PerReloadResult::new(|r| config_reloads.with_label_values(&[r.as_str()]));
        let token_requests = crate::issuer::TokenOutcome::ALL
            .iter()
            .map(|o| token_requests.with_label_values(&[o.as_str()]))
            .collect();
        Ok(Self {
            registry,
            upstream_duration,
            rule_matches,
            jwks_fetches,
            jwks_keys,
            jwks_last_success,
            token_cache_hits,
            token_cache_misses,
            config_last_reload,
            connections_open,
            connections_max,
            log_lines_dropped,
            guardrail_trips,
            budget_used,
            budget_limit,
            by_outcome,
            allowed,
            denied,
            reloads,
            token_requests,
            tokens_issued,
            labelled: Mutex::new(BTreeMap::new()),
        })
    }

    /// One finished request.
    pub fn request(&self, outcome: Outcome, seconds: f64) {
        let series = self.by_outcome.get(outcome);
        series.requests.inc();
        series.duration.observe(seconds);
    }

    pub fn upstream(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }

    /// A request a rule authorized.
    pub fn auth_allowed(&self) {
        self.allowed.inc();
    }

    /// A request refused by authentication or authorization.
    pub fn auth_denied(&self, reason: DenyReason) {
        self.denied.get(reason).inc();
    }

    /// The counter of one of `tenant`'s rules. Rule names come from the validated config (unique
    /// within a tenant); the runtime resolves each once per config generation, so a request's
    /// increment is one atomic add, and every rule's series is exported (at 0) from the start.
    pub fn rule_counter(&self, tenant: &str, rule: &str) -> IntCounter {
        self.remember(tenant, Some(rule));
        self.rule_matches.with_label_values(&[tenant, rule])
    }

    /// `tenant`'s JWKS series, each created now (fetch results at 0, no keys, never loaded).
    pub fn jwks(&self, tenant: &str) -> JwksMetrics {
        self.remember(tenant, None);
        JwksMetrics {
            fetches: PerJwksResult::new(|r| {
                self.jwks_fetches.with_label_values(&[tenant, r.as_str()])
            }),
            keys: self.jwks_keys.with_label_values(&[tenant]),
            last_success: self.jwks_last_success.with_label_values(&[tenant]),
        }
    }

    /// `tenant`'s guardrail series, each created now (trips at 0, its budget limit set).
    pub fn guardrails(&self, tenant: &str, limit: u32) -> GuardrailMetrics {
        self.remember(tenant, None);
        let metrics = GuardrailMetrics {
            trips: PerGuardrail::new(|g| {
                self.guardrail_trips
                    .with_label_values(&[tenant, g.as_str()])
            }),
            budget_used: self.budget_used.with_label_values(&[tenant]),
            budget_limit: self.budget_limit.with_label_values(&[tenant]),
        };
        metrics.budget_limit.set(i64::from(limit));
        metrics
    }

    /// Drops the series of tenants and rules that `tenants` (the config in force) no longer
    /// has; a later use of a dropped handle changes nothing exported.
    pub fn retain(&self, tenants: &[Tenant]) {
        let Ok(mut labelled) = self.labelled.lock() else {
            return;
        };
        labelled.retain(|tenant, rules| {
            let kept = tenants.iter().find(|t| &t.name == tenant);
            rules.retain(|rule| {
                let keep = kept.is_some_and(|t| t.rules.iter().any(|r| &r.name == rule));
                if !keep {
                    let _ = self.rule_matches.remove_label_values(&[tenant, rule]);
                }
                keep
            });
            if kept.is_none() {
                for result in JwksResult::ALL {
                    let _ = self
                        .jwks_fetches
                        .remove_label_values(&[tenant, result.as_str()]);
                }
                let _ = self.jwks_keys.remove_label_values(&[tenant]);
                let _ = self.jwks_last_success.remove_label_values(&[tenant]);
                for guardrail in Guardrail::ALL {
                    let _ = self
                        .guardrail_trips
                        .remove_label_values(&[tenant, guardrail.as_str()]);
                }
                let _ = self.budget_used.remove_label_values(&[tenant]);
                let _ = self.budget_limit.remove_label_values(&[tenant]);
            }
            kept.is_some()
        });
    }

    fn remember(&self, tenant: &str, rule: Option<&str>) {
        if let Ok(mut labelled) = self.labelled.lock() {
            let rules = labelled.entry(tenant.to_owned()).or_default();
            if let Some(rule) = rule {
                rules.insert(rule.to_owned());
            }
        }
    }

    /// The config loaded at startup.
    pub fn config_loaded(&self) {
        self.config_last_reload.set(unix(SystemTime::now()));
    }

    /// A reload applied.
    pub fn config_reloaded(&self) {
        self.reloads.get(ReloadResult::Success).inc();
        self.config_last_reload.set(unix(SystemTime::now()));
    }

    /// A reload refused; the config in force stays.
    pub fn config_reload_failed(&self) {
        self.reloads.get(ReloadResult::Failure).inc();
    }

    /// The connection limit the listener runs with.
    pub fn connection_limit(&self, max: usize) {
        self.connections_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// A proxy connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A proxy connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// The log writer's count of dropped lines, as of now (it only grows).
    pub fn log_lines_dropped(&self, total: u64) {
        let exported = self.log_lines_dropped.get();
        if total > exported {
            self.log_lines_dropped.inc_by(total - exported);
        }
    }

    /// One answer of the issuer's token endpoint.
    pub fn token_request(&self, outcome: crate::issuer::TokenOutcome) {
        let index = crate::issuer::TokenOutcome::ALL
            .iter()
            .position(|o| *o == outcome);
        if let Some(counter) = index.and_then(|i| self.token_requests.get(i)) {
            counter.inc();
        }
        if outcome == crate::issuer::TokenOutcome::Issued {
            self.tokens_issued.inc();
        }
    }

    /// A token found in the validated-token cache.
    pub fn token_cache_hit(&self) {
        self.token_cache_hits.inc();
    }

    /// A well-formed token the cache (on, with keys loaded) did not hold.
    pub fn token_cache_miss(&self) {
        self.token_cache_misses.inc();
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

// === impl GuardrailMetrics ===

impl GuardrailMetrics {
    /// A request `guardrail` refused.
    pub fn trip(&self, guardrail: Guardrail) {
        self.trips.get(guardrail).inc();
    }

    /// Deprovisionings in the tenant's window now (set at scrape time: the window empties
    /// with time, not with requests).
    pub fn budget_used(&self, used: u32) {
        self.budget_used.set(i64::from(used));
    }
}

// === impl JwksMetrics ===

impl JwksMetrics {
    /// Series that are never exported: for key caches that are no tenant's (the issuer's
    /// assertion issuers, `explain`, `token mint`), whose failures show in their own outcomes
    /// (`scimgate_token_requests_total{outcome="unavailable"}`) rather than under a tenant label.
    pub fn unexported() -> Self {
        // Constant, valid names: creating them cannot fail.
        let counter = || IntCounter::new("scimgate_unexported", "-").expect("valid metric name");
        Self {
            fetches: PerJwksResult::new(|_| counter()),
            keys: IntGauge::new("scimgate_unexported", "-").expect("valid metric name"),
            last_success: Gauge::new("scimgate_unexported", "-").expect("valid metric name"),
        }
    }

    /// One fetch (or revalidation) and how it ended.
    pub fn fetch(&self, result: JwksResult) {
        self.fetches.get(result).inc();
    }

    /// The key set in use: `keys` usable keys, last confirmed by the endpoint at `confirmed`.
    pub fn loaded(&self, keys: usize, confirmed: SystemTime) {
        self.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.last_success.set(unix(confirmed));
    }
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one exported series, `None` when it does not exist.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn registers_and_renders_every_family() {
        let m = Metrics::new().unwrap();
        m.request(Outcome::Forwarded, 0.01);
        m.auth_denied(DenyReason::Expired);
        m.jwks("default").fetch(JwksResult::Ok);
        let text = m.render();
        assert!(
            text.contains("scimgate_requests_total{outcome=\"forwarded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scimgate_auth_decisions_total{decision=\"deny\",reason=\"expired\"} 1")
        );
        assert!(text.contains("scimgate_build_info{version="));
        assert!(
            text.contains("scimgate_jwks_fetches_total{result=\"ok\",tenant=\"default\"} 1"),
            "{text}"
        );
    }

    /// An alert on `increase(…[10m]) > 0` needs the series at 0 before the first event.
    #[test]
    fn every_fixed_series_exists_at_zero_from_the_start() {
        let m = Metrics::new().unwrap();
        m.jwks("a");
        let text = m.render();
        let mut expected: Vec<String> = Vec::new();
        for o in Outcome::ALL {
            expected.push(format!(
                "scimgate_requests_total{{outcome=\"{}\"}}",
                o.as_str()
            ));
            expected.push(format!(
                "scimgate_request_duration_seconds_count{{outcome=\"{}\"}}",
                o.as_str()
            ));
        }
        expected.push("scimgate_auth_decisions_total{decision=\"allow\",reason=\"ok\"}".into());
        for r in DenyReason::ALL {
            expected.push(format!(
                "scimgate_auth_decisions_total{{decision=\"deny\",reason=\"{}\"}}",
                r.as_str()
            ));
        }
        for r in JwksResult::ALL {
            expected.push(format!(
                "scimgate_jwks_fetches_total{{result=\"{}\",tenant=\"a\"}}",
                r.as_str()
            ));
        }
        for r in ["success", "failure"] {
            expected.push(format!("scimgate_config_reloads_total{{result=\"{r}\"}}"));
        }
        expected.push("scimgate_jwks_keys{tenant=\"a\"}".into());
        expected.push("scimgate_jwks_last_success_timestamp_seconds{tenant=\"a\"}".into());
        for series in &expected {
            assert_eq!(value(&text, series), Some(0.0), "{series} in:\n{text}");
        }
        // Distinct label values: one series each, none shadowing another.
        let distinct =
            |labels: Vec<&str>| labels.iter().collect::<BTreeSet<_>>().len() == labels.len();
        assert!(distinct(Outcome::ALL.iter().map(|o| o.as_str()).collect()));
        assert!(distinct(
            DenyReason::ALL.iter().map(|r| r.as_str()).collect()
        ));
        assert!(distinct(
            JwksResult::ALL.iter().map(|r| r.as_str()).collect()
        ));
    }

    #[test]
    fn counts_land_on_the_resolved_series() {
        let m = Metrics::new().unwrap();
        m.auth_denied(DenyReason::NoRule);
        m.auth_denied(DenyReason::NoRule);
        m.auth_allowed();
        m.config_reload_failed();
        let jwks = m.jwks("t");
        jwks.fetch(JwksResult::Timeout);
        jwks.loaded(
            3,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7),
        );
        let text = m.render();
        for (series, want) in [
            (
                "scimgate_auth_decisions_total{decision=\"deny\",reason=\"no_rule\"}",
                2.0,
            ),
            (
                "scimgate_auth_decisions_total{decision=\"allow\",reason=\"ok\"}",
                1.0,
            ),
            ("scimgate_config_reloads_total{result=\"failure\"}", 1.0),
            ("scimgate_config_reloads_total{result=\"success\"}", 0.0),
            (
                "scimgate_jwks_fetches_total{result=\"timeout\",tenant=\"t\"}",
                1.0,
            ),
            ("scimgate_jwks_keys{tenant=\"t\"}", 3.0),
            (
                "scimgate_jwks_last_success_timestamp_seconds{tenant=\"t\"}",
                7.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
        }
    }

    #[test]
    fn retain_drops_the_series_of_removed_tenants_and_rules() {
        let config = crate::config::Config::from_toml(
            r#"
            [upstream]
            url = "http://127.0.0.1:1/scim"
            [jwt]
            jwks_url = "http://127.0.0.1:1/keys"
            issuer = "https://idp.example.com"
            audience = ["scimgate"]
            [[rules]]
            name = "kept"
            claim = "groups"
            value = "x"
            service_account = "sa"
            [service_accounts.sa]
            header = "x-api-key"
            api_key_env = "PATH"
            "#,
        )
        .unwrap();
        let m = Metrics::new().unwrap();
        m.jwks("default");
        m.rule_counter("default", "kept").inc();
        m.rule_counter("default", "renamed").inc();
        m.jwks("gone");
        let stale = m.rule_counter("gone", "rule");
        m.retain(&config.tenants);
        stale.inc();
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "scimgate_rule_matches_total{rule=\"kept\",tenant=\"default\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(value(&text, "scimgate_jwks_keys{tenant=\"default\"}").is_some());
        assert!(!text.contains("renamed"), "{text}");
        assert!(!text.contains("\"gone\""), "{text}");
    }
}
