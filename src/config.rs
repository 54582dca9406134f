//! Configuration: loaded once (TOML file + `SCIMGATE_<SECTION>__<KEY>` env), validated into typed values.
//!
//! `load` reports every problem it finds, each with its key path, instead of stopping at the first.
//! Nothing in here runs per request: the pipeline only reads the typed `Config`.

pub mod quickstart;
mod raw;
pub mod secret;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use http::{HeaderName, HeaderValue, Uri};
use jsonwebtoken::Algorithm;

pub use raw::RawConfig;
pub use secret::{Secret, SecretSource};
pub use validate::is_loopback;

/// The validated configuration. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// `[runtime] worker_threads`; `None`: one per CPU core.
    pub worker_threads: Option<usize>,
    /// At least one. Without `[[tenants]]`, the top-level sections form one tenant that owns
    /// every path.
    pub tenants: Vec<Tenant>,
    /// `[issuer]`: scimgate's own token issuer, when configured.
    pub issuer: Option<Arc<crate::issuer::IssuerConfig>>,
    /// Things that are allowed but deserve an operator's attention, logged at startup.
    pub warnings: Vec<String>,
}

/// One SCIM tenant: the paths it owns, its issuer, rules, service accounts and backend.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub prefix: PathPrefix,
    pub upstream: UpstreamConfig,
    pub jwt: JwtConfig,
    /// `[[jwt.extra_issuers]]`: `jwt` with another `issuer`, `jwks_url` and `audience` each. A
    /// token's `iss` picks the one that verifies it; each has its own keys.
    pub extra_issuers: Vec<JwtConfig>,
    /// Ordered: the first matching rule wins.
    pub rules: Vec<Rule>,
    pub service_accounts: Vec<Arc<ServiceAccount>>,
    pub guardrails: Guardrails,
}

/// A tenant's guardrails (`crate::guard`): its deprovision budget, from `[guardrails]` with
/// `[tenants.guardrails]` overriding key by key, and what each rule may not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    /// Deletes and deactivations allowed within the window; 0 turns the budget off.
    pub max_deprovisions: u32,
    pub deprovision_window: Duration,
    /// By rule name (unique in a tenant); a rule without guardrails has no entry.
    pub rules: BTreeMap<String, RuleGuardrails>,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_deprovisions: 0,
            deprovision_window: Duration::from_secs(3600),
            rules: BTreeMap::new(),
        }
    }
}

/// One rule's guardrails. Kept beside the rule rather than in it, keyed by its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleGuardrails {
    /// Normalised (`name.givenname`, URN prefix resolved), without repeats.
    pub deny_attributes: Vec<crate::guard::AttrPath>,
    /// Group ids, compared ASCII case-insensitively.
    pub protected_groups: Vec<String>,
    /// Empty: any address.
    pub source_ips: Vec<crate::guard::net::Cidr>,
    pub rate_limit: Option<crate::guard::limit::Rate>,
}

impl RuleGuardrails {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// One line for `check` and `explain`: every guardrail set, group ids counted, not listed.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.deny_attributes.is_empty() {
            let names: Vec<String> = self
                .deny_attributes
                .iter()
                .map(ToString::to_string)
                .collect();
            parts.push(format!("deny_attributes {}", names.join(",")));
        }
        if !self.protected_groups.is_empty() {
            parts.push(format!("protected_groups {}", self.protected_groups.len()));
        }
        if !self.source_ips.is_empty() {
            let ranges: Vec<String> = self.source_ips.iter().map(ToString::to_string).collect();
            parts.push(format!("source_ips {}", ranges.join(",")));
        }
        if let Some(rate) = &self.rate_limit {
            parts.push(format!("rate_limit {rate} (burst {})", rate.burst()));
        }
        parts.join("; ")
    }
}

/// A tenant's path prefix: literal segments and at most one `{account}` placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPrefix {
    pub segments: Vec<PrefixSegment>,
}

/// One segment of a `PathPrefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixSegment {
    Literal(String),
    /// Captures one segment of `[A-Za-z0-9._~-]` (not `.` or `..`), substituted into the
    /// upstream URL's `{account}`.
    Account,
}

/// What a matching prefix captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMatch<'p> {
    pub account: Option<&'p str>,
    /// The rest of the path, starting with `/` (or empty).
    pub rest: &'p str,
}

impl PathPrefix {
    /// Matches whole segments: `/scim` matches `/scim` and `/scim/Users`, not `/scimx`.
    pub fn matches<'p>(&self, path: &'p str) -> Option<PrefixMatch<'p>> {
        let mut rest = path;
        let mut account = None;
        for segment in &self.segments {
            let after = rest.strip_prefix('/')?;
            let end = after.find('/').unwrap_or(after.len());
            let (value, tail) = after.split_at(end);
            match segment {
                PrefixSegment::Literal(text) if value == text => {}
                PrefixSegment::Literal(_) => return None,
                PrefixSegment::Account if is_account_id(value) => account = Some(value),
                PrefixSegment::Account => return None,
            }
            rest = tail;
        }
        Some(PrefixMatch { account, rest })
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                PrefixSegment::Literal(text) => write!(f, "/{text}")?,
                PrefixSegment::Account => f.write_str("/{account}")?,
            }
        }
        Ok(())
    }
}

/// An account identifier safe to put into an upstream path: unreserved characters only.
fn is_account_id(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
    /// Open proxy connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Request headers forwarded beside the built-in allow-list (`server.forward_headers`).
    pub forward_headers: Vec<HeaderName>,
    /// Peers whose `X-Forwarded-For` names the client for `source_ips` (`server.trusted_proxies`).
    pub trusted_proxies: Vec<crate::guard::net::Cidr>,
}

/// PEM files for the optional TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// `[upstream]`: where requests go, split once into the parts the pipeline needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The URL as configured, for summaries.
    pub url: Uri,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The base path without a trailing slash (`""` for the root); the request path is appended.
    pub base_path: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Resource types beyond Users and Groups (`upstream.resource_types`), parsed by the same
    /// grammar: `/{type}`, `/{type}/{id}`, `/{type}/.search`.
    pub resource_types: Vec<Arc<str>>,
}

/// `[jwt]`.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `None`: discovered from `issuer` at startup and on reload.
    pub jwks_url: Option<Uri>,
    pub ca_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub max_lifetime: Duration,
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub refetch_cooldown: Duration,
    pub max_stale: Duration,
    /// Validated-token cache entries; 0 disables the cache.
    pub token_cache_size: u64,
}

/// One authorization rule: a claim test that selects a service account.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    /// The claim as written in the config (`groups`, `realm_access.roles`).
    pub claim: String,
    /// The dotted path split into segments, used when no top-level claim has the literal name.
    pub claim_path: Vec<String>,
    pub value: String,
    pub match_mode: MatchMode,
    /// SCIM operations and resource types this rule grants (`allow`, `resource_types`).
    pub permissions: crate::scim::Permissions,
    pub account: Arc<ServiceAccount>,
}

/// How a rule compares a claim with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// String equal, or an array containing an equal element.
    Exact,
    /// A space-separated string (OAuth `scope`, RFC 8693 §4.2) containing the value as one item;
    /// arrays still match element-wise.
    SpaceDelimited,
}

/// The identity scimgate lends to authorized callers: a header carrying an API key.
pub struct ServiceAccount {
    pub name: String,
    /// Lowercase header name the upstream expects (`authorization`, `x-api-key`).
    pub header: HeaderName,
    /// The full header value (`Bearer <key>`), built once and marked sensitive.
    pub value: HeaderValue,
    pub scheme: Option<String>,
    pub source: SecretSource,
    /// The key alone.
    pub key: Secret,
    /// The key's echoable forms, to recognise it in any part of a response.
    pub screen: Arc<crate::screen::KeyScreen>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("name", &self.name)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Whether API keys must be readable while validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// `serve`: an unreadable or empty key is an error.
    Required,
    /// `check` without `--strict`: a key that cannot be read *here* is a warning, because configs
    /// are often checked where the secrets are not mounted (CI, a chart render).
    Optional,
}

/// One config problem with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found while loading a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

// === impl Config ===

impl Config {
    /// Loads `path` (if given) merged with `SCIMGATE_*` environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, Secrets::Required)
    }

    /// `load` with a choice of how strictly API keys are required.
    pub fn load_with(path: Option<&Path>, secrets: Secrets) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::one(
                    path.display().to_string(),
                    "config file not found (or not a regular file)",
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        } else if let Some(text) = quickstart::toml(|k| std::env::var(k).ok()) {
            figment = figment.merge(Toml::string(&text));
        }
        // Only SCIMGATE_<SECTION>__<KEY> names are overrides. Others are not ours to reject:
        // the quick-start variables, and those Kubernetes injects for a Service named
        // `scimgate` (SCIMGATE_PORT, SCIMGATE_SERVICE_HOST, ...).
        let env = Env::prefixed("SCIMGATE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let mut config = Self::from_figment(figment.merge(env), secrets)?;
        if path.is_some() && quickstart::toml(|k| std::env::var(k).ok()).is_some() {
            config.warnings.push("SCIMGATE_UPSTREAM_URL and the other quick-start variables are ignored because a config file is given".into());
        }
        Ok(config)
    }

    /// The TOML that the quick-start variables stand for, when no file is given (for `check`).
    pub fn quickstart_toml(path: Option<&Path>) -> Option<String> {
        path.is_none()
            .then(|| quickstart::toml(|k| std::env::var(k).ok()))
            .flatten()
    }

    /// Validates a TOML document (tests, the demo).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)), Secrets::Required)
    }

    fn from_figment(figment: Figment, secrets: Secrets) -> Result<Self, ConfigError> {
        let dict: figment::value::Dict = figment.extract().map_err(figment_problems)?;
        let value = figment::value::Value::from(dict);
        let mut unknown = Vec::new();
        let raw: RawConfig =
            serde_ignored::deserialize(&value, |path| unknown.push(key_path(&path.to_string())))
                .map_err(figment_problems)?;
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|path| Problem {
                path,
                message: "unknown key".into(),
            })
            .collect();
        match validate::validate(raw, secrets) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError { problems }),
            Err(mut more) => {
                problems.append(&mut more.problems);
                Err(ConfigError { problems })
            }
        }
    }

    /// A human summary without secrets (for `scimgate check`).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let tls = if self.server.tls.is_some() {
            " (TLS)"
        } else {
            ""
        };
        out.push_str(&format!("listen       {}{tls}\n", self.server.listen));
        out.push_str(&format!("admin        {}\n", self.admin.listen));
        if !self.server.trusted_proxies.is_empty() {
            let list: Vec<String> = self
                .server
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            out.push_str(&format!(
                "trusted      {} (X-Forwarded-For believed)\n",
                list.join(", ")
            ));
        }
        let single = self.tenants.len() == 1 && self.tenants[0].prefix.segments.is_empty();
        for tenant in &self.tenants {
            if !single {
                out.push_str(&format!("tenant {:?} at {}\n", tenant.name, tenant.prefix));
            }
            tenant.summary(&mut out);
        }
        if let Some(issuer) = &self.issuer {
            issuer.summary(&mut out);
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

impl JwtConfig {
    /// Whether `[jwt]` names an external issuer. Without one (both `jwks_url` and `issuer`
    /// unset, allowed only with `[issuer]`), the tenant trusts scimgate's own tokens alone.
    pub fn is_external(&self) -> bool {
        self.jwks_url.is_some() || self.issuer.is_some()
    }
}

impl Tenant {
    fn summary(&self, out: &mut String) {
        out.push_str(&format!(
            "upstream     {}\n",
            self.upstream
                .url
                .to_string()
                .replace("scimgate-account-placeholder", "{account}")
        ));
        let jwks = match &self.jwt.jwks_url {
            Some(url) => url.to_string(),
            None if self.jwt.is_external() => "(discovered from the issuer)".to_owned(),
            None => "(none: scimgate's own issuer only)".to_owned(),
        };
        out.push_str(&format!("jwks_url     {jwks}\n"));
        let issuer = self.jwt.issuer.as_deref().unwrap_or("(not checked)");
        out.push_str(&format!("issuer       {issuer}\n"));
        for extra in &self.extra_issuers {
            let jwks = extra
                .jwks_url
                .as_ref()
                .map_or_else(|| "keys discovered".to_owned(), |u| format!("keys {u}"));
            out.push_str(&format!(
                "issuer       {} ({jwks})\n",
                extra.issuer.as_deref().unwrap_or("-")
            ));
        }
        let audience = if self.jwt.audience.is_empty() {
            "(not checked)".to_owned()
        } else {
            self.jwt.audience.join(", ")
        };
        out.push_str(&format!("audience     {audience}\n"));
        let algs: Vec<String> = self
            .jwt
            .algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        out.push_str(&format!("algorithms   {}\n", algs.join(", ")));
        if self.guardrails.max_deprovisions > 0 {
            out.push_str(&format!(
                "guardrails   at most {} deprovisionings per {} (per replica)\n",
                self.guardrails.max_deprovisions,
                humantime::format_duration(self.guardrails.deprovision_window)
            ));
        }
        out.push_str("rules\n");
        for (i, rule) in self.rules.iter().enumerate() {
            let op = match rule.match_mode {
                MatchMode::Exact => "==",
                MatchMode::SpaceDelimited => "contains (space-delimited)",
            };
            let ops = rule.permissions.operations.as_ref().map_or_else(
                || "all operations".to_owned(),
                |ops| ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(","),
            );
            out.push_str(&format!(
                "  {}. {}: {} {op} {:?} -> {} ({ops})\n",
                i + 1,
                rule.name,
                rule.claim,
                rule.value,
                rule.account.name
            ));
            if let Some(g) = self.guardrails.rules.get(&rule.name) {
                out.push_str(&format!("     guardrails: {}\n", g.describe()));
            }
        }
        out.push_str("service accounts\n");
        for sa in &self.service_accounts {
            let scheme = sa
                .scheme
                .as_deref()
                .map(|s| format!("{s} "))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}: {}: {scheme}<key from {}>\n",
                sa.name, sa.header, sa.source
            ));
        }
    }
}

/// serde_ignored's `rules.0.x` written as every other problem's key path: `rules[0].x`.
fn key_path(dotted: &str) -> String {
    let mut out = String::with_capacity(dotted.len() + 2);
    // `?` is how serde_ignored shows an `Option`'s inside: not a key.
    for segment in dotted.split('.').filter(|s| *s != "?") {
        if !out.is_empty() && !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// figment reports type errors one at a time, with the key path in `path`.
fn figment_problems(err: figment::Error) -> ConfigError {
    let problems = err
        .into_iter()
        .map(|e| {
            let path = if e.path.is_empty() {
                "(config)".to_owned()
            } else {
                e.path.join(".")
            };
            Problem {
                path,
                message: e.kind.to_string(),
            }
        })
        .collect();
    ConfigError { problems }
}

#[cfg(test)]
mod tests;
