//! `[issuer]` and `[[issuer.clients]]`: raw serde shape, checks with key paths, typed result.
//!
//! Mirrors `crate::config`: the raw types take any key (`config::load` collects unknown ones with
//! `serde_ignored`), and [`validate`] records every problem with its key path instead of stopping
//! at the first, so `scimgate check` lists them all. The lead's `config/validate.rs` calls it with
//! its own problem and warning lists.

pub mod client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{KeyError, SigningKey};
use crate::config::{JwtConfig, Problem, Secret, SecretSource, Secrets};
pub use client::{Assertion, ClientAuth, ClientConfig, SecretHash};

/// Microsoft Entra asks for access tokens that live 1 to 6 hours (idp-clients.md §2). Six hours
/// is the ceiling for tokens the endpoint hands out: a bearer token cannot be recalled, only
/// outlived (or cut off by `not_before`, a key or the client's removal), and no client fetching
/// tokens itself needs longer.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 3600);
/// Below five minutes the 30 s verification leeway is a tenth of the lifetime and clients spend
/// their time refetching; shorter than an hour is allowed but warned about (Entra expects 1 h).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const ENTRA_MIN_LIFETIME: Duration = Duration::from_secs(3600);
/// `token mint` tokens live at most this long: a year plus a month to rotate, the same reasoning
/// as the 398-day ceiling on TLS certificates. A static value pasted into a SaaS admin page is
/// forgotten; the bound makes sure it expires anyway.
pub const MAX_MINTED_LIFETIME: Duration = Duration::from_secs(400 * 86_400);
/// Failure counters above this are typos (an extra zero or three), not policy.
const MAX_FAILURES_LIMIT: u32 = 10_000;

/// `[issuer]` as serde sees it.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawIssuer {
    pub url: Option<String>,
    pub signing_key_files: Vec<String>,
    pub token_lifetime: String,
    pub max_minted_lifetime: String,
    pub failure_window: String,
    pub max_failures_per_client: u32,
    pub max_failures_per_peer: u32,
    pub clients: Vec<RawClient>,
}

/// One `[[issuer.clients]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawClient {
    pub client_id: Option<String>,
    pub scope: Vec<String>,
    /// Any TOML value; stamped into the client's tokens as JSON.
    pub claims: BTreeMap<String, Value>,
    pub secret_sha256: Option<String>,
    pub assertion: Option<RawAssertion>,
    pub not_before: Option<String>,
    pub tenant: Option<String>,
}

/// `assertion = { issuer, jwks_url, subject, audience }` (RFC 7523, Entra WIF).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAssertion {
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub subject: Option<String>,
    pub audience: Option<String>,
}

impl Default for RawIssuer {
    fn default() -> Self {
        Self {
            url: None,
            signing_key_files: Vec::new(),
            token_lifetime: "1h".into(),
            max_minted_lifetime: "400d".into(),
            failure_window: "1m".into(),
            max_failures_per_client: 20,
            max_failures_per_peer: 20,
            clients: Vec::new(),
        }
    }
}

/// The validated `[issuer]`.
#[derive(Debug)]
pub struct IssuerConfig {
    /// The `iss` of every token, exactly as configured.
    pub url: String,
    /// In file order: the first signs, all verify.
    pub signing_keys: Vec<SigningKeyFile>,
    pub token_lifetime: Duration,
    pub max_minted_lifetime: Duration,
    /// Failed attempts are counted per window; a client id or peer over its limit gets 429
    /// until the window ends.
    pub failure_window: Duration,
    pub max_failures_per_client: u32,
    /// 0: no per-peer limit (every request arrives from one ingress address).
    pub max_failures_per_peer: u32,
    pub clients: Vec<ClientConfig>,
    /// Whether the config has `[[tenants]]` (then every client names one).
    pub tenancy: TenancyKind,
}

/// Whether tokens name a tenant in their audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenancyKind {
    Single,
    Named,
}

/// The tenants the rest of the config defines, for the clients' `tenant` keys.
#[derive(Debug, Clone, Copy)]
pub enum Tenancy<'t> {
    /// No `[[tenants]]`: clients must not name one.
    Single,
    /// `[[tenants]]` with these names: every client names one of them.
    Named(&'t [String]),
}

/// One signing key file: where it is, and its PEM text when it could be read.
#[derive(Debug)]
pub struct SigningKeyFile {
    pub path: PathBuf,
    /// `None` only when validated with `Secrets::Optional` and the file was unreadable here.
    pub pem: Option<Secret>,
}

/// Collects problems under the `issuer.` key path.
pub(super) struct Sink<'s> {
    problems: &'s mut Vec<Problem>,
    warnings: &'s mut Vec<String>,
}

impl Sink<'_> {
    pub(super) fn problem(&mut self, path: impl AsRef<str>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: format!("issuer.{}", path.as_ref()),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(format!("issuer: {}", message.into()));
    }

    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    path,
                    format!("invalid duration {text:?} ({e}); use e.g. \"1h\""),
                );
                None
            }
        }
    }
}

/// Checks `[issuer]`. Every problem lands in `problems` with its key path (`issuer.…`); `None`
/// when there was any.
pub fn validate(
    raw: &RawIssuer,
    tenancy: Tenancy<'_>,
    secrets: Secrets,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<IssuerConfig> {
    let before = problems.len();
    let mut s = Sink { problems, warnings };
    let url = issuer_url(&mut s, raw.url.as_deref());
    let signing_keys = signing_keys(&mut s, &raw.signing_key_files, secrets);
    let token_lifetime = s.duration("token_lifetime", &raw.token_lifetime);
    if let Some(d) = token_lifetime {
        if !(MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&d) {
            s.problem("token_lifetime", "must be between 5m and 6h");
        } else if d < ENTRA_MIN_LIFETIME {
            s.warn("token_lifetime is below 1h: Microsoft Entra expects tokens of 1 to 6 hours");
        }
    }
    let max_minted = s.duration("max_minted_lifetime", &raw.max_minted_lifetime);
    if let (Some(minted), Some(endpoint)) = (max_minted, token_lifetime)
        && !(endpoint..=MAX_MINTED_LIFETIME).contains(&minted)
    {
        s.problem(
            "max_minted_lifetime",
            "must be between token_lifetime and 400d",
        );
    }
    let failure_window = s.duration("failure_window", &raw.failure_window);
    if failure_window
        .is_some_and(|w| !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&w))
    {
        s.problem("failure_window", "must be between 1s and 1h");
    }
    if !(1..=MAX_FAILURES_LIMIT).contains(&raw.max_failures_per_client) {
        s.problem(
            "max_failures_per_client",
            format!("must be between 1 and {MAX_FAILURES_LIMIT}"),
        );
    }
    if raw.max_failures_per_peer > MAX_FAILURES_LIMIT {
        s.problem(
            "max_failures_per_peer",
            format!("must be at most {MAX_FAILURES_LIMIT} (0 turns the per-peer limit off)"),
        );
    }
    let clients = client::clients(&mut s, &raw.clients, url.as_deref(), tenancy);
    if s.problems.len() > before {
        return None;
    }
    Some(IssuerConfig {
        url: url?,
        signing_keys,
        token_lifetime: token_lifetime?,
        max_minted_lifetime: max_minted?,
        failure_window: failure_window?,
        max_failures_per_client: raw.max_failures_per_client,
        max_failures_per_peer: raw.max_failures_per_peer,
        clients,
        tenancy: match tenancy {
            Tenancy::Single => TenancyKind::Single,
            Tenancy::Named(_) => TenancyKind::Named,
        },
    })
}

/// `issuer.url`: the `iss` value. RFC 8414 §2: https, no query or fragment; plain http only for
/// loopback hosts (tests, the demo).
fn issuer_url(s: &mut Sink<'_>, raw: Option<&str>) -> Option<String> {
    let Some(text) = raw else {
        s.problem(
            "url",
            "required: scimgate's public URL, the iss of its tokens",
        );
        return None;
    };
    let url = secure_url(s, "url", text)?;
    if url.path() != "/" && text.ends_with('/') {
        s.problem("url", "must not end with / (iss is compared exactly)");
        return None;
    }
    Some(text.to_owned())
}

/// An absolute https URL without credentials, query or fragment (http for loopback hosts).
pub(super) fn secure_url(s: &mut Sink<'_>, path: &str, text: &str) -> Option<Uri> {
    let parsed = text.parse::<Uri>().ok();
    let Some(url) = parsed.filter(|u| u.authority().is_some()) else {
        s.problem(path, format!("{text:?} is not an absolute URL"));
        return None;
    };
    let host_ok = url
        .authority()
        .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
    let scheme_ok = match url.scheme_str() {
        Some("https") => true,
        Some("http") => url.host().is_some_and(crate::config::is_loopback),
        _ => false,
    };
    if !scheme_ok {
        s.problem(
            path,
            "must use https (plain http is allowed only for loopback hosts)",
        );
        None
    } else if !host_ok || url.query().is_some() || text.contains('#') {
        s.problem(
            path,
            "must have a host and no credentials, query or fragment",
        );
        None
    } else {
        Some(url)
    }
}

/// `issuer.signing_key_files`: each read and parsed now, so a bad key is a config problem with
/// its path rather than a failure at the first token.
fn signing_keys(s: &mut Sink<'_>, raw: &[String], secrets: Secrets) -> Vec<SigningKeyFile> {
    if raw.is_empty() {
        s.problem(
            "signing_key_files",
            "list at least one EC P-256 PKCS#8 PEM file; the first signs",
        );
    }
    let mut kids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, file) in raw.iter().enumerate() {
        let path = format!("signing_key_files[{i}]");
        let source = SecretSource::File(PathBuf::from(file));
        let pem = match (Secret::load(&source), secrets) {
            (Ok(pem), _) => Some(pem),
            (Err(e), Secrets::Required) => {
                s.problem(&path, e.to_string());
                None
            }
            (Err(e), Secrets::Optional) => {
                s.warn(format!(
                    "{path}: {e} (serve will refuse to start until it is readable)"
                ));
                None
            }
        };
        if let Some(pem) = &pem {
            match SigningKey::from_pem(pem.expose().as_bytes()) {
                Ok(key) if kids.iter().any(|k| k == key.kid()) => {
                    s.problem(&path, KeyError::Duplicate(key.kid().to_owned()).to_string());
                }
                Ok(key) => kids.push(key.kid().to_owned()),
                Err(e) => s.problem(&path, e.to_string()),
            }
        }
        out.push(SigningKeyFile {
            path: PathBuf::from(file),
            pem,
        });
    }
    out
}

// === impl IssuerConfig ===

impl IssuerConfig {
    /// `url` without a trailing `/`, to append endpoint paths to.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The `aud` of tokens for a client of `tenant`: the issuer URL itself in a single-tenant
    /// config, `<url>/tenants/<name>` with `[[tenants]]`. A tenant's verifier admits only its
    /// own audience, so a token for one tenant is refused on every other.
    pub fn audience(&self, tenant: Option<&str>) -> String {
        match (self.tenancy, tenant) {
            (TenancyKind::Named, Some(name)) => format!("{}/tenants/{name}", self.base()),
            (TenancyKind::Single | TenancyKind::Named, _) => self.url.clone(),
        }
    }

    /// Lines for `scimgate check`: the issuer, its keys and clients, never a secret or hash.
    pub fn summary(&self, out: &mut String) {
        out.push_str(&format!(
            "issuer       {} (own tokens: {} signing key(s), the first signs; lifetime {})\n",
            self.url,
            self.signing_keys.len(),
            humantime::format_duration(self.token_lifetime)
        ));
        for client in &self.clients {
            let method = match &client.auth {
                ClientAuth::Secret(_) => "client secret".to_owned(),
                ClientAuth::Assertion(a) => {
                    format!("assertion from {} (sub {})", a.issuer, a.subject)
                }
                ClientAuth::MintOnly => "token mint only".to_owned(),
            };
            let tenant = client
                .tenant
                .as_deref()
                .map(|t| format!(", tenant {t}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  client {}: {method}; scope {}{tenant}\n",
                client.client_id,
                client.scope.join(" ")
            ));
        }
    }

    /// The configured client with exactly this id (byte for byte).
    pub fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// `[jwt]`-shaped settings under which a tenant verifies this issuer's tokens through the
    /// same `Verifier` as any other: ES256 only, `iss` and `aud` exact, and a lifetime that
    /// admits minted tokens. `jwks_url` is the published `/.well-known/jwks.json`; the keys
    /// themselves come from [`Issuer::jwks_json`](super::Issuer::jwks_json), never fetched.
    pub fn local_jwt(&self, tenant: Option<&str>) -> JwtConfig {
        JwtConfig {
            jwks_url: format!("{}/.well-known/jwks.json", self.base())
                .parse()
                .ok(),
            ca_file: None,
            issuer: Some(self.url.clone()),
            audience: vec![self.audience(tenant)],
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            leeway: Duration::from_secs(30),
            max_lifetime: self.max_minted_lifetime.max(self.token_lifetime),
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            refetch_cooldown: Duration::from_secs(30),
            // Local keys never go stale: they are not fetched.
            max_stale: Duration::from_secs(u64::from(u32::MAX)),
            token_cache_size: 10_000,
        }
    }
}

/// Claim names a client's `claims` table must not set: those the issuer sets itself (RFC 9068
/// §2.2, RFC 7519 §4.1) and those that carry meaning to a resource server beyond a rule match
/// (authentication context, confirmation, delegation, RFC 8693 §4).
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "cnf",
    "act",
    "may_act",
    "nonce",
    "sid",
];

/// A `claims` table as the JSON object stamped into tokens.
pub(super) fn claims_object(raw: &BTreeMap<String, Value>) -> Map<String, Value> {
    raw.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests;
