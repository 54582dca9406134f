//! `scimgate explain`: the decision trace for one token, step by step, through the same functions
//! the proxy calls (bearer extraction, header policy, key selection, signature and claim checks,
//! rules). It fetches the JWKS once; it never prints the token or an API key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::jwks::{Jwks, KeySet};
use crate::auth::verify::{ClaimChecks, inspect_header, now};
use crate::auth::{AuthError, bearer, policy};
use crate::config::{Config, Rule, Tenant};
use crate::metrics::Metrics;

/// The whole trace, printed as a table or as JSON.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub token_sha256: String,
    pub token_bytes: usize,
    /// The payload as sent, before verification: shown to help diagnosis, trusted for nothing.
    pub unverified_claims: Option<Map<String, Value>>,
    pub steps: Vec<Step>,
    pub allowed: bool,
    pub service_account: Option<String>,
    /// What would be sent upstream, with the key replaced by where it comes from.
    pub upstream_header: Option<String>,
}

/// One check.
#[derive(Debug, Serialize)]
pub struct Step {
    pub check: String,
    pub result: &'static str,
    pub detail: String,
}

/// Explains `token` against the config at `path`. `Err` only for problems with the config or
/// the runtime; a denied token is an `Ok` explanation with `allowed == false`.
pub async fn explain(
    path: Option<&Path>,
    tenant: Option<&str>,
    token: &str,
) -> anyhow::Result<Explanation> {
    let config = Config::load(path)?;
    let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    let tenant = match tenant {
        None => config.tenants.first(),
        Some(name) => config.tenants.iter().find(|t| t.name == name),
    }
    .ok_or_else(|| anyhow::anyhow!("no such tenant (known: {})", names.join(", ")))?;
    let metrics = std::sync::Arc::new(Metrics::new()?);
    let url = crate::auth::discovery::jwks_url(&tenant.jwt).await?;
    let jwks = Jwks::new(&tenant.jwt, url, metrics.jwks(&tenant.name))?;
    let mut x = Explanation::new(token);
    // A JWKS that cannot be fetched is not a verdict on the token: exit 2, not "deny".
    let keys = jwks
        .refresh()
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the JWKS from {}: {e}", jwks.url()))?;
    let _ = trace(tenant, &jwks, &keys, token, &mut x);
    Ok(x)
}

fn trace(
    config: &Tenant,
    jwks: &Jwks,
    keys: &KeySet,
    token: &str,
    x: &mut Explanation,
) -> Result<(), ()> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| x.fail("bearer token", "not a valid header value"))?;
    headers.insert(http::header::AUTHORIZATION, value);
    let token = bearer::bearer_token(&headers).map_err(|e| x.fail("bearer token", &reason(e)))?;
    x.pass(
        "bearer token",
        format!("{} bytes, b64token syntax", token.len()),
    );

    let checks = ClaimChecks::new(&config.jwt);
    let header = inspect_header(token, checks.allowed())
        .map_err(|e| x.fail("JOSE header", &e.to_string()))?;
    let kid = header.kid.as_deref().unwrap_or("(none)");
    x.pass(
        "JOSE header",
        format!(
            "alg {:?} allowed; kid {kid}; no crit/cty/enc/zip; typ accepted",
            header.alg
        ),
    );

    x.pass(
        "JWKS",
        format!("{} usable key(s) from {}", keys.keys.len(), jwks.url()),
    );
    let candidates = keys.candidates(header.kid.as_deref(), header.alg);
    if candidates.is_empty() {
        let why = match header.kid.as_deref() {
            Some(kid) if keys.has_kid(kid) => {
                format!("kid {kid} exists but does not allow {:?}", header.alg)
            }
            Some(kid) => format!("no key with kid {kid}"),
            None => "no kid and the JWKS has more than one key for this algorithm".to_owned(),
        };
        x.fail("signing key", &why);
        return Err(());
    }
    x.pass(
        "signing key",
        format!("{} candidate key(s) for kid {kid}", candidates.len()),
    );

    let claims = checks
        .verify(token, header.alg, &candidates, now())
        .map_err(|e| x.fail("signature and claims", &e.to_string()))?;
    x.pass("signature and claims", describe_claim_checks(config));

    decide(config, &claims, x)
}

fn decide(config: &Tenant, claims: &Map<String, Value>, x: &mut Explanation) -> Result<(), ()> {
    for rule in &config.rules {
        let seen = policy::claim_value(claims, rule).map_or("absent".to_owned(), Value::to_string);
        let detail = format!(
            "{} {} {:?} (token has {seen})",
            rule.claim,
            operator(rule),
            rule.value
        );
        let matched = policy::rule_matches(rule, claims);
        x.steps.push(Step {
            check: format!("rule {}", rule.name),
            result: if matched { "match" } else { "no match" },
            detail,
        });
        if matched {
            break;
        }
    }
    // The decision comes from the proxy's own function, not from the loop above. explain has no
    // request, so it asks about a plain read of /Users.
    let read_users = crate::scim::classify(&http::Method::GET, "/Users");
    let rule = policy::authorize(&config.rules, claims, &read_users, &[])
        .map_err(|e| x.fail("decision", &reason(e)))?;
    let account = &rule.account;
    let scheme = account
        .scheme
        .as_deref()
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    x.allowed = true;
    x.service_account = Some(account.name.clone());
    x.upstream_header = Some(format!(
        "{}: {scheme}<key from {}>",
        account.header, account.source
    ));
    Ok(())
}

fn operator(rule: &Rule) -> &'static str {
    match rule.match_mode {
        crate::config::MatchMode::Exact => "equals/contains",
        crate::config::MatchMode::SpaceDelimited => "contains (space-delimited)",
    }
}

fn describe_claim_checks(config: &Tenant) -> String {
    let mut done = vec!["signature", "exp", "nbf", "iat", "max lifetime"];
    if config.jwt.issuer.is_some() {
        done.push("iss");
    }
    if !config.jwt.audience.is_empty() {
        done.push("aud");
    }
    format!("passed: {}", done.join(", "))
}

fn reason(e: AuthError) -> String {
    e.to_string()
}

impl Explanation {
    fn new(token: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let unverified_claims = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
        Self {
            token_sha256: digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            token_bytes: token.len(),
            unverified_claims,
            steps: Vec::new(),
            allowed: false,
            service_account: None,
            upstream_header: None,
        }
    }

    fn pass(&mut self, check: &str, detail: String) {
        self.steps.push(Step {
            check: check.to_owned(),
            result: "pass",
            detail,
        });
    }

    fn fail(&mut self, check: &str, detail: &str) {
        self.steps.push(Step {
            check: check.to_owned(),
            result: "FAIL",
            detail: detail.to_owned(),
        });
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "token    sha256 {}…, {} bytes\n",
            self.token_sha256, self.token_bytes
        );
        if let Some(claims) = &self.unverified_claims {
            out.push_str("claims   (as sent; trusted only if the signature check passes)\n");
            for (k, v) in claims {
                out.push_str(&format!("  {k:<10} {}\n", annotate(k, v)));
            }
        }
        let width = self
            .steps
            .iter()
            .map(|s| s.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!("\n{:<width$}  {:<8}  DETAIL\n", "CHECK", "RESULT"));
        for s in &self.steps {
            out.push_str(&format!(
                "{:<width$}  {:<8}  {}\n",
                s.check, s.result, s.detail
            ));
        }
        match (&self.service_account, &self.upstream_header) {
            (Some(account), Some(header)) if self.allowed => {
                out.push_str(&format!(
                    "\nDECISION  allow: service account {account:?}, upstream gets {header}\n"
                ));
            }
            _ => out.push_str("\nDECISION  deny\n"),
        }
        out
    }
}

/// Times shown relative to now, so "expired 3 minutes ago" is visible at a glance.
fn annotate(key: &str, value: &Value) -> String {
    let text = value.to_string();
    match (key, value.as_i64()) {
        ("exp" | "nbf" | "iat", Some(t)) => {
            let delta = t - i64::try_from(now()).unwrap_or(i64::MAX);
            let when = if delta == 0 {
                "now".to_owned()
            } else if delta > 0 {
                format!("in {delta}s")
            } else {
                format!("{}s ago", -delta)
            };
            format!("{text} ({when})")
        }
        _ => text,
    }
}
