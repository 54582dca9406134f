//! `scimgate explain`: the decision trace for one token and one request, step by step, through
//! the same functions the proxy calls (routing, bearer extraction, header policy, key selection,
//! signature and claim checks, request classification, rules). It fetches the JWKS once; it
//! never prints the token or an API key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::jwks::{Jwks, KeySet};
use crate::auth::verify::{ClaimChecks, inspect_header, now};
use crate::auth::{AuthError, bearer, policy};
use crate::config::{Config, JwtConfig, Rule, Tenant};
use crate::metrics::Metrics;
use crate::scim::{self, Classified, Operation};

/// An [`ExplainError::Request`] with a formatted message.
macro_rules! refused {
    ($($arg:tt)*) => {
        ExplainError::Request(format!($($arg)*))
    };
}

/// Why `explain` gave no verdict (exit 2): the config, the keys, or a request scimgate refuses
/// before it looks at a token. A denied token is not an error.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Discovery(#[from] crate::auth::discovery::DiscoveryError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Issuer(#[from] crate::issuer::IssuerError),
    #[error("cannot load the JWKS from {url}: {source}")]
    Jwks {
        url: http::Uri,
        source: crate::auth::jwks::FetchError,
    },
    /// The question itself: a tenant, method or path scimgate would refuse or not route.
    #[error("{0}")]
    Request(String),
}

/// The request to judge the token for: what a client would send to scimgate.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The tenant whose issuer and rules apply; `None`: the one the path routes to (with no
    /// path, the first).
    pub tenant: Option<&'a str>,
    /// Any case; `GET` by default.
    pub method: &'a str,
    /// The path as sent to scimgate, tenant prefix included (a query is ignored); `None`:
    /// `/Users` under the tenant's prefix.
    pub path: Option<&'a str>,
}

/// The request that was judged.
#[derive(Debug, Serialize)]
pub struct Judged {
    pub method: String,
    pub path: String,
    pub tenant: String,
    /// The SCIM operation and resource type the rules are asked about.
    pub operation: &'static str,
    pub resource: std::borrow::Cow<'static, str>,
}

/// The whole trace, printed as a table or as JSON.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub token_sha256: String,
    pub token_bytes: usize,
    pub request: Judged,
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

/// Explains `token` for the request `question` against the config at `path`. `Err` for problems
/// with the config or the runtime, and for a request scimgate refuses before it looks at a token
/// (no tenant owns the path, an ambiguous path, CONNECT or TRACE); a denied token is an `Ok`
/// explanation with `allowed == false`.
pub async fn explain(
    path: Option<&Path>,
    question: Question<'_>,
    token: &str,
) -> Result<Explanation, ExplainError> {
    let config = Config::load(path)?;
    let (tenant, judged, request) = route(&config, question)?;
    let metrics = std::sync::Arc::new(Metrics::new()?);
    let mut x = Explanation::new(token, judged);
    // The token's `iss`, unverified, picks the issuer whose keys and checks apply, as in the
    // proxy (`auth::issuers`).
    let iss = crate::auth::issuers::unverified_iss(token);
    if let Some(own) = &config.issuer
        && iss.as_deref() == Some(own.url.as_str())
    {
        let issuer = crate::issuer::Issuer::build(std::sync::Arc::clone(own), |_, settings| {
            let url = settings.jwks_url.clone().unwrap_or_default();
            let jwks = Jwks::new(settings, url, crate::metrics::JwksMetrics::unexported())?;
            Ok(crate::auth::verify::Verifier::new(
                settings,
                std::sync::Arc::new(jwks),
                std::sync::Arc::clone(&metrics),
            ))
        })?;
        let named =
            (own.tenancy == crate::issuer::config::TenancyKind::Named).then(|| tenant.name.clone());
        let settings = own.local_jwt(named.as_deref());
        let url = settings.jwks_url.clone().unwrap_or_default();
        let jwks = Jwks::fixed(
            &settings,
            url.clone(),
            issuer.jwks_json().as_bytes(),
            metrics.jwks(&tenant.name),
        )
        .map_err(|source| ExplainError::Jwks { url, source })?;
        let keys = jwks
            .current()
            .ok_or_else(|| refused!("the issuer has no keys"))?;
        let judge = Judge {
            jwt: &settings,
            jwks: &jwks,
            keys: &keys,
            issuer: Some((&issuer, named.as_deref())),
        };
        let _ = trace(tenant, &request, &judge, token, &mut x);
        return Ok(x);
    }
    let jwt = tenant
        .extra_issuers
        .iter()
        .find(|j| j.issuer.is_some() && j.issuer == iss)
        .unwrap_or(&tenant.jwt);
    if !jwt.is_external() {
        x.fail(
            "issuer",
            "the token's iss is not scimgate's issuer, the tenant's only one",
        );
        return Ok(x);
    }
    let url = crate::auth::discovery::jwks_url(jwt).await?;
    let jwks = Jwks::new(jwt, url, metrics.jwks(&tenant.name))?;
    // A JWKS that cannot be fetched is not a verdict on the token: exit 2, not "deny".
    let keys = jwks.refresh().await.map_err(|source| ExplainError::Jwks {
        url: jwks.url().clone(),
        source,
    })?;
    let judge = Judge {
        jwt,
        jwks: &jwks,
        keys: &keys,
        issuer: None,
    };
    let _ = trace(tenant, &request, &judge, token, &mut x);
    Ok(x)
}

/// The issuer a token is judged under: its settings and keys, and for scimgate's own tokens
/// the issuer (with the tenant name its `admit` wants).
struct Judge<'j> {
    jwt: &'j JwtConfig,
    jwks: &'j Jwks,
    keys: &'j KeySet,
    issuer: Option<(&'j crate::issuer::Issuer, Option<&'j str>)>,
}

/// The tenant and the classified request, as the proxy would find them: the first tenant whose
/// prefix owns the path, the path's remainder classified after the same ambiguity check.
fn route<'c>(
    config: &'c Config,
    question: Question<'_>,
) -> Result<(&'c Tenant, Judged, Classified), ExplainError> {
    let method = Method::from_bytes(question.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| refused!("--method {:?} is not an HTTP method", question.method))?;
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(refused!(
            "scimgate answers {method} with 405 before it looks at a token"
        ));
    }
    let names = || {
        let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        names.join(", ")
    };
    let named = match question.tenant {
        None => None,
        Some(name) => Some(
            config
                .tenants
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| refused!("no such tenant (known: {})", names()))?,
        ),
    };
    let (tenant, path, rest) = match question.path {
        None => {
            let tenant = named
                .or(config.tenants.first())
                .ok_or_else(|| refused!("the config has no tenant"))?;
            let prefix = tenant.prefix.to_string();
            let path = format!("{}/Users", prefix.trim_end_matches('/'));
            (tenant, path, "/Users")
        }
        Some(full) => {
            let path = full.split_once('?').map_or(full, |(path, _)| path);
            let (tenant, matched) = config
                .tenants
                .iter()
                .find_map(|t| Some((t, t.prefix.matches(path)?)))
                .ok_or_else(|| {
                    refused!("no tenant's path_prefix owns {path:?}: scimgate answers 404")
                })?;
            if let Some(named) = named.filter(|n| n.name != tenant.name) {
                return Err(refused!(
                    "scimgate routes {path:?} to tenant {:?}, not {:?} (prefix {})",
                    tenant.name,
                    named.name,
                    named.prefix
                ));
            }
            (tenant, path.to_owned(), matched.rest)
        }
    };
    let request = scim::parse_request(&method, rest, &tenant.upstream.resource_types).map_err(
        |e| match e {
            scim::PathError::Ambiguous => refused!(
                "scimgate refuses {path:?} with 400 before it looks at a token: empty, dot or encoded-slash segments, parameters, broken or needless percent-encoding"
            ),
            scim::PathError::NotFound => refused!(
                "{path:?} is not a SCIM endpoint (RFC 7644 §3 grammar, plus upstream.resource_types): scimgate answers 404"
            ),
            scim::PathError::Method => {
                refused!("scimgate answers {method} {path:?} with 405: not a method of that endpoint")
            }
        },
    )?;
    let judged = Judged {
        method: method.to_string(),
        path,
        tenant: tenant.name.clone(),
        operation: request.operation.as_str(),
        resource: request.resource.label(),
    };
    Ok((tenant, judged, request))
}

fn trace(
    config: &Tenant,
    request: &Classified,
    judge: &Judge<'_>,
    token: &str,
    x: &mut Explanation,
) -> Result<(), ()> {
    let (jwks, keys) = (judge.jwks, judge.keys);
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| x.fail("bearer token", "not a valid header value"))?;
    headers.insert(http::header::AUTHORIZATION, value);
    let token = bearer::bearer_token(&headers).map_err(|e| x.fail("bearer token", &reason(e)))?;
    x.pass(
        "bearer token",
        format!("{} bytes, b64token syntax", token.len()),
    );

    let checks = ClaimChecks::new(judge.jwt);
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
    x.pass("signature and claims", describe_claim_checks(judge.jwt));
    if let Some((issuer, tenant)) = judge.issuer {
        let detail = own_token(issuer.config(), &claims);
        match issuer.admit(&claims, tenant) {
            Ok(()) => x.pass("scimgate issuer", detail),
            Err(revoked) => {
                x.fail("scimgate issuer", &format!("{detail}; refused: {revoked}"));
                return Err(());
            }
        }
    }

    decide(config, request, &claims, x)
}

fn decide(
    config: &Tenant,
    request: &Classified,
    claims: &Map<String, Value>,
    x: &mut Explanation,
) -> Result<(), ()> {
    let asked = format!(
        "{} {}",
        request.operation.as_str(),
        request.resource.as_str()
    );
    for rule in &config.rules {
        let seen = policy::claim_value(claims, rule).map_or("absent".to_owned(), Value::to_string);
        let mut detail = format!(
            "{} {} {:?} (token has {seen})",
            rule.claim,
            operator(rule),
            rule.value
        );
        let matched = policy::rule_matches(rule, claims);
        let permits = rule.permissions.allows(request);
        if matched && !permits {
            detail.push_str(&format!("; does not allow {asked}"));
        }
        x.steps.push(Step {
            check: format!("rule {}", rule.name),
            result: match (matched, permits) {
                (false, _) => "no match",
                (true, false) => "not for this request",
                (true, true) => "match",
            },
            detail,
        });
        if matched && permits {
            break;
        }
    }
    // The decision comes from the proxy's own function, not from the loop above.
    let rule = policy::authorize(&config.rules, claims, request, &[])
        .map_err(|e| x.fail("decision", &reason(e)))?;
    x.steps.push(guardrails_step(config, rule));
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

/// What the guardrails still judge for a request this rule allows: the rule's own and the
/// tenant's deprovision budget (they need the body and the traffic, so they are listed, not run).
fn guardrails_step(tenant: &Tenant, rule: &Rule) -> Step {
    let mut parts = Vec::new();
    if let Some(g) = tenant.guardrails.rules.get(&rule.name) {
        parts.push(g.describe());
    }
    if tenant.guardrails.max_deprovisions > 0 {
        parts.push(format!(
            "tenant budget {} deprovisionings per {} (per replica)",
            tenant.guardrails.max_deprovisions,
            humantime::format_duration(tenant.guardrails.deprovision_window)
        ));
    }
    parts.retain(|p| !p.is_empty());
    Step {
        check: "guardrails".to_owned(),
        result: if parts.is_empty() { "none" } else { "apply" },
        detail: if parts.is_empty() {
            "no guardrail on this rule or tenant".to_owned()
        } else {
            parts.join("; ")
        },
    }
}

fn operator(rule: &Rule) -> &'static str {
    match rule.match_mode {
        crate::config::MatchMode::Exact => "equals/contains",
        crate::config::MatchMode::SpaceDelimited => "contains (space-delimited)",
    }
}

/// A token scimgate issued: its client, when it was issued and until when, and the client's
/// `not_before` (tokens issued before it are refused).
fn own_token(config: &crate::issuer::IssuerConfig, claims: &Map<String, Value>) -> String {
    let time = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), rfc3339)
    };
    let client = claims
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let not_before = config
        .client(client)
        .and_then(|c| c.not_before)
        .map_or_else(|| "not set".to_owned(), rfc3339);
    format!(
        "client {client}, issued {}, expires {}; client not_before {not_before}",
        time("iat"),
        time("exp")
    )
}

fn rfc3339(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn describe_claim_checks(jwt: &JwtConfig) -> String {
    let mut done = vec!["signature", "exp", "nbf", "iat", "max lifetime"];
    if jwt.issuer.is_some() {
        done.push("iss");
    }
    if !jwt.audience.is_empty() {
        done.push("aud");
    }
    format!("passed: {}", done.join(", "))
}

fn reason(e: AuthError) -> String {
    e.to_string()
}

impl Explanation {
    fn new(token: &str, request: Judged) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let unverified_claims = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
        Self {
            token_sha256: crate::text::hex(&digest.as_ref()[..6]),
            token_bytes: token.len(),
            request,
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
        let r = &self.request;
        out.push_str(&format!(
            "request  {} {}: {} {}, tenant {:?}{}\n",
            r.method,
            r.path,
            r.operation,
            r.resource,
            r.tenant,
            if r.operation == Operation::Bulk.as_str() {
                " (the operations inside a /Bulk body are not judged here)"
            } else {
                ""
            }
        ));
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
