//! The config file's shape as serde sees it: strings and numbers, defaults, no meaning yet.
//!
//! `config::validate` turns this into the typed `Config`. Unknown keys are not rejected by serde
//! here: `config::load` collects them with `serde_ignored` so that every problem is reported at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub runtime: RawRuntime,
    pub upstream: RawUpstream,
    pub jwt: RawJwt,
    pub rules: Vec<RawRule>,
    pub service_accounts: BTreeMap<String, RawServiceAccount>,
    pub tenants: Vec<RawTenant>,
    /// Every tenant's deprovision budget, unless its own `[tenants.guardrails]` says otherwise.
    pub guardrails: RawGuardrails,
    /// scimgate's own token issuer (`crate::issuer`).
    pub issuer: Option<crate::issuer::config::RawIssuer>,
}

/// `[guardrails]` and `[tenants.guardrails]`: unset keys fall back to the level above.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGuardrails {
    pub max_deprovisions: Option<u64>,
    pub deprovision_window: Option<String>,
}

/// One `[[tenants]]` entry: a path prefix with its own upstream, issuer, rules and accounts.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTenant {
    pub name: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: RawUpstream,
    pub jwt: RawJwt,
    pub rules: Vec<RawRule>,
    pub service_accounts: BTreeMap<String, RawServiceAccount>,
    pub guardrails: RawGuardrails,
}

/// `[server]`: the proxy listener.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: String,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub header_read_timeout: String,
    pub request_timeout: String,
    pub max_body_bytes: u64,
    pub max_connections: u64,
    pub shutdown_grace: String,
    /// Single-tenant configs: where the SCIM endpoints start on the gateway.
    pub path_prefix: Option<String>,
    /// Request header names forwarded beside the built-in allow-list.
    pub forward_headers: Vec<String>,
    /// Peers (CIDR ranges) whose `X-Forwarded-For` is believed for `source_ips`.
    pub trusted_proxies: Vec<String>,
}

/// `[admin]`: health, readiness and metrics.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: String,
}

/// `[log]`: level filter and output format.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

/// `[runtime]`: the async runtime.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRuntime {
    /// Worker threads; unset or 0 means one per CPU core.
    pub worker_threads: Option<usize>,
}

/// `[upstream]`: the SCIM backend.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: String,
    pub timeout: String,
    pub ca_file: Option<String>,
    /// Resource types the backend serves beside Users and Groups (`Devices`).
    pub resource_types: Vec<String>,
}

/// `[jwt]`: the issuer's keys and the token checks.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawJwt {
    pub jwks_url: Option<String>,
    pub ca_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany>,
    pub algorithms: Vec<String>,
    pub leeway: String,
    pub max_lifetime: String,
    pub refresh_interval: String,
    pub min_refresh_interval: String,
    pub refetch_cooldown: String,
    pub max_stale: String,
    pub token_cache_size: u64,
    /// More issuers of this tenant, each with its own keys (Entra's v1 and v2 issuers).
    pub extra_issuers: Vec<RawExtraIssuer>,
}

/// One `[[jwt.extra_issuers]]` entry: every other `[jwt]` setting is inherited.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawExtraIssuer {
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub audience: Option<OneOrMany>,
}

/// A string or a list of strings (`audience = "x"` and `audience = ["x", "y"]` both work).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One `[[rules]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRule {
    pub name: String,
    pub claim: String,
    pub value: String,
    pub service_account: String,
    #[serde(rename = "match")]
    pub match_mode: Option<String>,
    pub allow: Option<Vec<String>>,
    pub resource_types: Option<Vec<String>>,
    /// Attributes this rule may not write (POST, PUT, PATCH, inside /Bulk too).
    pub deny_attributes: Vec<String>,
    /// Group ids this rule may not PUT, PATCH or DELETE.
    pub protected_groups: Vec<String>,
    /// CIDR ranges the caller's address must be in (empty: any).
    pub source_ips: Vec<String>,
    /// `"25/s"` or `"600/m"`.
    pub rate_limit: Option<String>,
}

/// One `[service_accounts.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServiceAccount {
    pub header: Option<String>,
    pub scheme: Option<String>,
    pub api_key_file: Option<String>,
    pub api_key_env: Option<String>,
}

// === defaults (design.md §4) ===

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout: "10s".into(),
            request_timeout: "60s".into(),
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 4096,
            shutdown_grace: "20s".into(),
            path_prefix: None,
            forward_headers: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: None,
            connect_timeout: "5s".into(),
            timeout: "30s".into(),
            ca_file: None,
            resource_types: Vec::new(),
        }
    }
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            jwks_url: None,
            ca_file: None,
            issuer: None,
            audience: None,
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway: "30s".into(),
            max_lifetime: "24h".into(),
            refresh_interval: "5m".into(),
            min_refresh_interval: "1m".into(),
            refetch_cooldown: "30s".into(),
            max_stale: "24h".into(),
            token_cache_size: 10_000,
            extra_issuers: Vec::new(),
        }
    }
}
