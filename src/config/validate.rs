//! RawConfig → Config: every check on the config, each failure recorded with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::Algorithm;

use super::raw::{
    OneOrMany, RawAdmin, RawConfig, RawJwt, RawLog, RawRule, RawServer, RawServiceAccount,
    RawUpstream,
};
use super::{
    AdminConfig, Config, ConfigError, Guardrails, JwtConfig, LogConfig, LogFormat, PathPrefix,
    PrefixSegment, Problem, Secrets, ServerConfig, Tenant, TlsFiles, UpstreamConfig,
};

/// Upper bound for `server.max_connections`: far above what one process can serve, low enough
/// that a typo (an extra zero or three) is caught rather than silently disabling the limit.
const MAX_CONNECTIONS_LIMIT: u64 = 1_000_000;

mod rules;
mod tenant;

/// The placeholder a tenant prefix captures and an upstream URL path may use.
pub(super) const ACCOUNT: &str = "{account}";

/// RFC 7519 §4.1.4 allows "a few minutes" of leeway; more than this hides clock problems.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The least `jwt.refetch_cooldown`. Unknown `kid`s are the caller's choice, so the cooldown is
/// what bounds the JWKS fetches a stranger can cause (threats T38): with this floor, one a
/// second per tenant and replica. Zero would leave them unbounded, and an identity provider
/// that rate-limits the gateway then refuses its scheduled refreshes too.
const MIN_REFETCH_COOLDOWN: Duration = Duration::from_secs(1);

/// Collects problems while checking sections.
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
    pub(super) secrets: Secrets,
    /// Prepended to every key path (`tenants[1].`) while a tenant is checked.
    pub(super) prefix: String,
    /// The config has `[issuer]`: a tenant may then trust scimgate's own tokens alone.
    pub(super) own_issuer: bool,
}

impl Checker {
    pub(super) fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        let message = match self.prefix.strip_suffix('.') {
            Some(tenant) => format!("{tenant}: {message}"),
            None => message,
        };
        self.warnings.push(message);
    }

    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: format!("{}{}", self.prefix, path.into()),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    path,
                    format!("invalid duration {text:?} ({e}); use e.g. \"30s\", \"5m\""),
                );
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, path: &str, text: &str) -> Duration {
        let d = self.duration(path, text);
        if d.is_zero() && humantime::parse_duration(text).is_ok() {
            self.problem(path, "must be greater than zero");
        }
        d
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(
                path,
                format!("invalid address {text:?}; use host:port, e.g. \"0.0.0.0:8080\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn existing_file(&mut self, path: &str, file: Option<&String>) -> Option<PathBuf> {
        let file = PathBuf::from(file?);
        if !file.is_file() {
            self.problem(path, format!("file {} not found", file.display()));
        }
        Some(file)
    }
}

/// Validates everything, returning the typed config or every problem found.
pub(super) fn validate(raw: RawConfig, secrets: Secrets) -> Result<Config, ConfigError> {
    let mut c = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
        secrets,
        prefix: String::new(),
        own_issuer: raw.issuer.is_some(),
    };
    let server = server(&mut c, &raw.server);
    let admin = admin(&mut c, &raw.admin, &server);
    let log = log(&mut c, &raw.log);
    let budget = tenant::budget(&mut c, &raw.guardrails, &Guardrails::default());
    let tenants: Vec<Tenant> = if raw.tenants.is_empty() {
        let sections = Sections {
            upstream: &raw.upstream,
            jwt: &raw.jwt,
            rules: &raw.rules,
            accounts: &raw.service_accounts,
            budget: budget.clone(),
        };
        let prefix = match raw.server.path_prefix.as_deref() {
            None => PathPrefix::default(),
            Some(text) => {
                c.prefix = "server.".into();
                let prefix = tenant::path_prefix(&mut c, Some(text));
                c.prefix.clear();
                prefix
            }
        };
        tenant(&mut c, "default".into(), prefix, &sections, &server)
            .into_iter()
            .collect()
    } else {
        tenant::reject_top_level(&mut c, &raw);
        // Each validated tenant with its index in the file: a tenant with problems is left out,
        // and the lint must still name the others as the file numbers them.
        let mut out = Vec::new();
        for (i, t) in raw.tenants.iter().enumerate() {
            c.prefix = format!("tenants[{i}].");
            let prefix = tenant::path_prefix(&mut c, t.path_prefix.as_deref());
            let name = t.name.clone().unwrap_or_else(|| format!("tenants[{i}]"));
            let sections = Sections {
                upstream: &t.upstream,
                jwt: &t.jwt,
                rules: &t.rules,
                accounts: &t.service_accounts,
                budget: tenant::budget(&mut c, &t.guardrails, &budget),
            };
            out.extend(tenant(&mut c, name, prefix, &sections, &server).map(|t| (i, t)));
        }
        c.prefix.clear();
        tenant::lint(&mut c, &out);
        out.into_iter().map(|(_, t)| t).collect()
    };
    let issuer = raw.issuer.as_ref().and_then(|issuer| {
        let names: Vec<String> = raw
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| t.name.clone().unwrap_or_else(|| format!("tenants[{i}]")))
            .collect();
        let tenancy = if raw.tenants.is_empty() {
            crate::issuer::config::Tenancy::Single
        } else {
            crate::issuer::config::Tenancy::Named(&names)
        };
        crate::issuer::config::validate(
            issuer,
            tenancy,
            c.secrets,
            &mut c.problems,
            &mut c.warnings,
        )
        .map(std::sync::Arc::new)
    });
    if let Some(own) = &issuer {
        for t in &tenants {
            let external = std::iter::once(&t.jwt).chain(&t.extra_issuers);
            if external
                .filter_map(|j| j.issuer.as_deref())
                .any(|iss| iss == own.url)
            {
                c.problem(
                    "issuer.url",
                    format!(
                        "is also tenant {:?}'s jwt issuer: scimgate's own tokens must have an iss of their own",
                        t.name
                    ),
                );
            }
        }
    }
    let source_ips = tenants
        .iter()
        .flat_map(|t| t.guardrails.rules.values())
        .any(|g| !g.source_ips.is_empty());
    if !server.trusted_proxies.is_empty() && !source_ips {
        c.warn("server.trusted_proxies is set but no rule has source_ips: it has no effect");
    }
    if c.problems.is_empty() {
        Ok(Config {
            server,
            admin,
            log,
            worker_threads: raw.runtime.worker_threads.filter(|&n| n > 0),
            tenants,
            issuer,
            warnings: c.warnings,
        })
    } else {
        Err(ConfigError {
            problems: c.problems,
        })
    }
}

/// The sections that make up one tenant, at the top level or inside `[[tenants]]`.
struct Sections<'r> {
    upstream: &'r RawUpstream,
    jwt: &'r RawJwt,
    rules: &'r [RawRule],
    accounts: &'r BTreeMap<String, RawServiceAccount>,
    /// The deprovision budget, top-level and tenant keys merged (no rules yet).
    budget: Guardrails,
}

fn tenant(
    c: &mut Checker,
    name: String,
    prefix: PathPrefix,
    raw: &Sections<'_>,
    server: &ServerConfig,
) -> Option<Tenant> {
    let placeholder = prefix.segments.contains(&PrefixSegment::Account);
    let upstream = upstream(c, raw.upstream, placeholder);
    let jwt = jwt(c, raw.jwt);
    let extra_issuers = jwt
        .as_ref()
        .map(|jwt| extra_issuers(c, &raw.jwt.extra_issuers, jwt))
        .unwrap_or_default();
    let accounts = rules::service_accounts(c, raw.accounts);
    for account in accounts.values() {
        if server.forward_headers.contains(&account.header) {
            c.problem(
                "server.forward_headers",
                format!(
                    "{:?} is service account {:?}'s credential header: scimgate sets it, a caller never does",
                    account.header.as_str(),
                    account.name
                ),
            );
        }
    }
    let custom = upstream
        .as_ref()
        .map(|u| u.resource_types.clone())
        .unwrap_or_default();
    let (rules, guarded) = rules::rules(c, raw.rules, &accounts, &custom);
    rules::lint_shadowed_rules(c, &rules);
    Some(Tenant {
        name,
        prefix,
        upstream: upstream?,
        jwt: jwt?,
        extra_issuers,
        rules,
        service_accounts: accounts.into_values().collect(),
        guardrails: Guardrails {
            rules: guarded,
            ..raw.budget.clone()
        },
    })
}

fn server(c: &mut Checker, raw: &RawServer) -> ServerConfig {
    let tls = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            c.problem(
                "server.tls_key_file",
                "required when server.tls_cert_file is set",
            );
            None
        }
        (None, Some(_)) => {
            c.problem(
                "server.tls_cert_file",
                "required when server.tls_key_file is set",
            );
            None
        }
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: c
                .existing_file("server.tls_cert_file", Some(cert))
                .unwrap_or_default(),
            key: c
                .existing_file("server.tls_key_file", Some(key))
                .unwrap_or_default(),
        }),
    };
    if raw.max_body_bytes == 0 {
        c.problem("server.max_body_bytes", "must be greater than zero");
    }
    if !(1..=MAX_CONNECTIONS_LIMIT).contains(&raw.max_connections) {
        c.problem(
            "server.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
        );
    }
    ServerConfig {
        listen: c.socket_addr("server.listen", &raw.listen),
        tls,
        header_read_timeout: c
            .positive_duration("server.header_read_timeout", &raw.header_read_timeout),
        request_timeout: c.positive_duration("server.request_timeout", &raw.request_timeout),
        max_body_bytes: raw.max_body_bytes,
        max_connections: usize::try_from(raw.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT))
            .unwrap_or(1),
        shutdown_grace: c.duration("server.shutdown_grace", &raw.shutdown_grace),
        forward_headers: forward_headers(c, &raw.forward_headers),
        trusted_proxies: trusted_proxies(c, &raw.trusted_proxies),
    }
}

/// `server.trusted_proxies`: CIDR ranges. A range that covers every address would let any
/// caller name its own address in `X-Forwarded-For`: refused.
fn trusted_proxies(c: &mut Checker, raw: &[String]) -> Vec<crate::guard::net::Cidr> {
    let mut out = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let path = format!("server.trusted_proxies[{i}]");
        match text.parse::<crate::guard::net::Cidr>() {
            Ok(cidr) if cidr.prefix() == 0 => c.problem(
                path,
                format!("{text:?} trusts every peer: any caller could choose its own address"),
            ),
            Ok(cidr) if !out.contains(&cidr) => out.push(cidr),
            Ok(_) => {}
            Err(e) => c.problem(path, e),
        }
    }
    out
}

/// `server.forward_headers`: header names, none of which scimgate must own. A framing, hop-by-hop,
/// credential, coding, forwarding or override name, or one spelled with `_`, is refused:
/// forwarding it would hand the caller what the gateway decides.
fn forward_headers(c: &mut Checker, raw: &[String]) -> Vec<http::HeaderName> {
    let mut out = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let path = format!("server.forward_headers[{i}]");
        let Ok(name) = http::HeaderName::from_bytes(text.as_bytes()) else {
            c.problem(path, format!("{text:?} is not a header name"));
            continue;
        };
        let lower = name.as_str();
        if lower.contains('_')
            || lower.starts_with("x-forwarded-")
            || rules::RESERVED_CREDENTIAL_HEADERS.contains(&lower)
            || rules::NEVER_FORWARDED.contains(&lower)
        {
            c.problem(
                path,
                format!(
                    "{lower:?} is set or judged by scimgate and cannot be forwarded from the caller"
                ),
            );
        } else if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn admin(c: &mut Checker, raw: &RawAdmin, server: &ServerConfig) -> AdminConfig {
    let listen = c.socket_addr("admin.listen", &raw.listen);
    if listen.port() != 0 && listen == server.listen {
        c.problem("admin.listen", "must differ from server.listen");
    }
    AdminConfig { listen }
}

fn log(c: &mut Checker, raw: &RawLog) -> LogConfig {
    let format = match raw.format.as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            c.problem(
                "log.format",
                format!("unknown format {other:?} (known: json, text)"),
            );
            LogFormat::Json
        }
    };
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&raw.level) {
        c.problem("log.level", format!("invalid filter {:?}: {e}", raw.level));
    }
    LogConfig {
        level: raw.level.clone(),
        format,
    }
}

/// `placeholder`: the tenant's prefix captures `{account}`, which the URL's path may use.
fn upstream(c: &mut Checker, raw: &RawUpstream, placeholder: bool) -> Option<UpstreamConfig> {
    let connect_timeout = c.positive_duration("upstream.connect_timeout", &raw.connect_timeout);
    let timeout = c.positive_duration("upstream.timeout", &raw.timeout);
    let ca_file = c.existing_file("upstream.ca_file", raw.ca_file.as_ref());
    let Some(text) = &raw.url else {
        c.problem("upstream.url", "required: the SCIM backend's base URL");
        return None;
    };
    const PROBE: &str = "scimgate-account-placeholder";
    if text.contains(ACCOUNT) && !placeholder {
        c.problem(
            "upstream.url",
            "uses {account} but the tenant's path_prefix has no {account}",
        );
        return None;
    }
    let url = base_url(c, "upstream.url", &text.replace(ACCOUNT, PROBE))?;
    let (scheme, authority) = (url.scheme()?.clone(), url.authority()?.clone());
    if authority.as_str().contains(PROBE) {
        c.problem("upstream.url", "{account} may only appear in the path");
        return None;
    }
    if scheme == http::uri::Scheme::HTTP && !is_loopback(authority.host()) {
        c.warn(format!(
            "upstream.url uses plain http to {}: the API key crosses the network unencrypted",
            authority.host()
        ));
    }
    let base_path = url.path().trim_end_matches('/').replace(PROBE, ACCOUNT);
    let resource_types = resource_types(c, &raw.resource_types);
    Some(UpstreamConfig {
        url,
        scheme,
        authority,
        base_path,
        connect_timeout,
        timeout,
        ca_file,
        resource_types,
    })
}

/// `upstream.resource_types`: SCIM resource-type endpoint names (RFC 7643 §2.1 ATTRNAME: a
/// letter, then letters, digits, `-` or `_`), distinct from the built-in endpoints and each other
/// under ASCII case folding.
fn resource_types(c: &mut Checker, raw: &[String]) -> Vec<std::sync::Arc<str>> {
    let mut out: Vec<std::sync::Arc<str>> = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let path = format!("upstream.resource_types[{i}]");
        let mut chars = name.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let reserved = crate::scim::Resource::builtin(name).is_some()
            || ["Bulk", "Me", ".search"]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name));
        if !well_formed {
            c.problem(path, format!("{name:?} is not a SCIM resource-type name"));
        } else if reserved {
            c.problem(path, format!("{name:?} is a built-in SCIM endpoint"));
        } else if out.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            c.problem(path, format!("duplicate resource type {name:?}"));
        } else {
            out.push(std::sync::Arc::from(name.as_str()));
        }
    }
    out
}

/// An absolute http(s) URL with a host, no credentials, query or fragment.
fn base_url(c: &mut Checker, path: &str, text: &str) -> Option<Uri> {
    let Ok(url) = text.parse::<Uri>() else {
        c.problem(path, format!("invalid URL {text:?}"));
        return None;
    };
    let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
    let Some(authority) = url.authority().filter(|_| scheme_ok) else {
        c.problem(
            path,
            format!("{text:?} must be an absolute http:// or https:// URL"),
        );
        return None;
    };
    if authority.as_str().contains('@') {
        c.problem(path, "must not contain user credentials");
        return None;
    }
    if url.query().is_some() || text.contains('#') {
        c.problem(path, "must not contain a query or fragment");
        return None;
    }
    Some(url)
}

/// An absolute URL we may fetch keys or discovery documents from: https, or http on loopback.
fn secure_url(c: &mut Checker, path: &str, text: &str) -> Option<Uri> {
    let url = base_url(c, path, text)?;
    if url.scheme_str() == Some("http") && !url.host().is_some_and(is_loopback) {
        c.problem(
            path,
            "must use https (plain http is allowed only for loopback hosts)",
        );
    }
    Some(url)
}

/// `localhost` or a loopback IP literal (brackets allowed).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn jwt(c: &mut Checker, raw: &RawJwt) -> Option<JwtConfig> {
    // With `[issuer]`, a `[jwt]` naming no issuer and no keys means the tenant trusts scimgate's
    // own tokens alone (`JwtConfig::is_external` is false): nothing to warn about.
    let own_only = c.own_issuer && raw.jwks_url.is_none() && raw.issuer.is_none();
    let leeway = c.duration("jwt.leeway", &raw.leeway);
    if leeway > MAX_LEEWAY {
        c.problem(
            "jwt.leeway",
            format!("{} is more than the 5m maximum", raw.leeway),
        );
    }
    let refresh_interval = c.positive_duration("jwt.refresh_interval", &raw.refresh_interval);
    let max_stale = c.positive_duration("jwt.max_stale", &raw.max_stale);
    if max_stale < refresh_interval {
        c.problem("jwt.max_stale", "must be at least jwt.refresh_interval");
    }
    let issuer = match raw.issuer.as_deref() {
        Some("") => {
            c.problem(
                "jwt.issuer",
                "must not be empty (omit it to skip the issuer check)",
            );
            None
        }
        Some(iss) => Some(iss.to_owned()),
        None if own_only => None,
        None => {
            c.warn("jwt.issuer is not set: tokens from any issuer whose keys are in the JWKS pass");
            None
        }
    };
    let audience = match raw.audience.clone() {
        None if own_only => Vec::new(),
        given => audience(c, given),
    };
    let algorithms = algorithms(c, &raw.algorithms);
    let max_lifetime = c.positive_duration("jwt.max_lifetime", &raw.max_lifetime);
    let refetch_cooldown = c.duration("jwt.refetch_cooldown", &raw.refetch_cooldown);
    if refetch_cooldown < MIN_REFETCH_COOLDOWN
        && humantime::parse_duration(&raw.refetch_cooldown).is_ok()
    {
        c.problem(
            "jwt.refetch_cooldown",
            format!(
                "{:?} is below the 1s minimum: it bounds the JWKS fetches that unknown kids cause",
                raw.refetch_cooldown
            ),
        );
    }
    let ca_file = c.existing_file("jwt.ca_file", raw.ca_file.as_ref());
    let min_refresh_interval =
        c.positive_duration("jwt.min_refresh_interval", &raw.min_refresh_interval);
    if min_refresh_interval > refresh_interval {
        c.problem(
            "jwt.min_refresh_interval",
            "must not exceed jwt.refresh_interval",
        );
    }
    let jwks_url = match (&raw.jwks_url, &issuer) {
        (Some(text), _) => Some(secure_url(c, "jwt.jwks_url", text)?),
        (None, Some(iss)) => {
            // Discovery: the issuer URL itself must be one we may fetch from.
            secure_url(c, "jwt.issuer", iss)?;
            None
        }
        (None, None) if own_only => None,
        (None, None) => {
            c.problem(
                "jwt.jwks_url",
                "required unless jwt.issuer is set (then it is discovered), or [issuer] is the tenant's only issuer",
            );
            return None;
        }
    };
    Some(JwtConfig {
        jwks_url,
        ca_file,
        issuer,
        audience,
        algorithms,
        leeway,
        max_lifetime,
        refresh_interval,
        min_refresh_interval,
        refetch_cooldown,
        max_stale,
        token_cache_size: raw.token_cache_size,
    })
}

/// `[[jwt.extra_issuers]]`: each `jwt` with its own `issuer` (required, distinct), `jwks_url`
/// (else discovered) and `audience` (else `jwt.audience`). The primary must name its issuer
/// too: a token's `iss` is what picks the keys, so no key set may take tokens of any issuer.
fn extra_issuers(
    c: &mut Checker,
    raw: &[super::raw::RawExtraIssuer],
    primary: &JwtConfig,
) -> Vec<JwtConfig> {
    if !raw.is_empty() && primary.issuer.is_none() {
        c.problem(
            "jwt.issuer",
            "required with jwt.extra_issuers: a token's iss chooses the keys that verify it",
        );
    }
    let mut out: Vec<JwtConfig> = Vec::new();
    for (i, extra) in raw.iter().enumerate() {
        let path = format!("jwt.extra_issuers[{i}]");
        let issuer = match extra.issuer.as_deref() {
            None | Some("") => {
                c.problem(format!("{path}.issuer"), "required: the iss of its tokens");
                continue;
            }
            Some(iss) => iss.to_owned(),
        };
        let taken = primary.issuer.as_deref() == Some(issuer.as_str())
            || out
                .iter()
                .any(|o| o.issuer.as_deref() == Some(issuer.as_str()));
        if taken {
            c.problem(
                format!("{path}.issuer"),
                format!("{issuer:?} is configured twice for this tenant"),
            );
            continue;
        }
        let jwks_url = match &extra.jwks_url {
            Some(text) => match secure_url(c, &format!("{path}.jwks_url"), text) {
                Some(url) => Some(url),
                None => continue,
            },
            None => {
                if secure_url(c, &format!("{path}.issuer"), &issuer).is_none() {
                    continue;
                }
                None
            }
        };
        let audience = match extra.audience.clone() {
            None => primary.audience.clone(),
            Some(OneOrMany::One(a)) => vec![a],
            Some(OneOrMany::Many(list)) => list,
        };
        for (j, a) in audience.iter().enumerate() {
            if a.is_empty() {
                c.problem(format!("{path}.audience[{j}]"), "must not be empty");
            }
        }
        out.push(JwtConfig {
            jwks_url,
            issuer: Some(issuer),
            audience,
            ..primary.clone()
        });
    }
    out
}

fn audience(c: &mut Checker, raw: Option<OneOrMany>) -> Vec<String> {
    let list = match raw {
        None => Vec::new(),
        Some(OneOrMany::One(a)) => vec![a],
        Some(OneOrMany::Many(list)) => list,
    };
    if list.is_empty() {
        c.warn("jwt.audience is not set: tokens minted for any audience of this issuer pass");
    }
    for (i, a) in list.iter().enumerate() {
        if a.is_empty() {
            c.problem(format!("jwt.audience[{i}]"), "must not be empty");
        }
    }
    list
}

fn algorithms(c: &mut Checker, raw: &[String]) -> Vec<Algorithm> {
    if raw.is_empty() {
        c.problem("jwt.algorithms", "must list at least one algorithm");
    }
    let mut out = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let path = format!("jwt.algorithms[{i}]");
        match name.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => c.problem(
                path,
                format!("{name} is symmetric; only asymmetric algorithms can be verified with a public JWKS"),
            ),
            Ok(alg) if !out.contains(&alg) => out.push(alg),
            Ok(_) => {}
            Err(_) => c.problem(
                path,
                format!("unknown algorithm {name:?} (known: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"),
            ),
        }
    }
    out
}
