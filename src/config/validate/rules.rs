//! Validation of `[[rules]]` and `[service_accounts.*]`: claim tests, permissions, API keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::Checker;
use crate::config::raw::{RawRule, RawServiceAccount};
use crate::config::secret::{Secret, SecretSource};
use crate::config::{MatchMode, Rule, RuleGuardrails, Secrets, ServiceAccount};
use crate::scim::{Operation, Permissions, Resource};

/// Headers a service account may not use for its credential: they are framing, routing or
/// hop-by-hop fields that the proxy itself controls (RFC 9110 §7.6.1).
pub(super) const RESERVED_CREDENTIAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "cookie",
];

/// Request headers an operator may not add to `server.forward_headers` beyond the ones above
/// (`content-type` aside, which is forwarded anyway): credentials, codings, and headers that
/// would let a caller change what the backend runs or whom it believes.
pub(super) const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "content-encoding",
    "expect",
    "accept-encoding",
    "x-real-ip",
    "true-client-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// Warns about rules that can never be chosen: an earlier rule with the same claim test already
/// permits everything they permit.
pub(super) fn lint_shadowed_rules(c: &mut Checker, rules: &[Rule]) {
    for (j, later) in rules.iter().enumerate() {
        let shadow = rules[..j].iter().find(|earlier| {
            earlier.claim == later.claim
                && earlier.value == later.value
                && earlier.match_mode == later.match_mode
                && earlier.permissions.covers(&later.permissions)
        });
        if let Some(earlier) = shadow {
            c.warn(format!(
                "rules[{j}] ({:?}) can never be chosen: rule {:?} before it has the same claim test and permits everything it does",
                later.name, earlier.name
            ));
        }
    }
}

fn permissions(c: &mut Checker, path: &str, r: &RawRule, custom: &[Arc<str>]) -> Permissions {
    let known_resources = custom
        .iter()
        .fold(Resource::NAMES.to_owned(), |all, c| format!("{all}, {c}"));
    Permissions {
        operations: names(
            c,
            &format!("{path}.allow"),
            r.allow.as_deref(),
            "operation",
            Operation::NAMES,
            Operation::from_name,
        ),
        resources: names(
            c,
            &format!("{path}.resource_types"),
            r.resource_types.as_deref(),
            "resource type",
            &known_resources,
            |name| Resource::from_name(name, custom),
        ),
    }
}

/// Parses a list of names, reporting each unknown one with its index.
fn names<T>(
    c: &mut Checker,
    path: &str,
    raw: Option<&[String]>,
    what: &str,
    known: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    for (i, name) in raw?.iter().enumerate() {
        match parse(name) {
            Some(value) => out.push(value),
            None => c.problem(
                format!("{path}[{i}]"),
                format!("unknown {what} {name:?} (known: {known})"),
            ),
        }
    }
    Some(out)
}

pub(super) fn service_accounts(
    c: &mut Checker,
    raw: &BTreeMap<String, RawServiceAccount>,
) -> BTreeMap<String, Arc<ServiceAccount>> {
    if raw.is_empty() {
        c.problem(
            "service_accounts",
            "at least one service account is required",
        );
    }
    let mut out = BTreeMap::new();
    for (name, sa) in raw {
        if let Some(account) = service_account(c, name, sa) {
            out.insert(name.clone(), Arc::new(account));
        }
    }
    out
}

fn service_account(c: &mut Checker, name: &str, raw: &RawServiceAccount) -> Option<ServiceAccount> {
    let path = format!("service_accounts.{name}");
    let header_text = raw.header.as_deref().unwrap_or("authorization");
    let header = match HeaderName::from_bytes(header_text.as_bytes()) {
        Ok(h) if RESERVED_CREDENTIAL_HEADERS.contains(&h.as_str()) => {
            c.problem(
                format!("{path}.header"),
                format!("{header_text:?} is reserved for the proxy"),
            );
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            c.problem(
                format!("{path}.header"),
                format!("{header_text:?} is not a valid header name"),
            );
            None
        }
    };
    let scheme = raw.scheme.clone().filter(|s| !s.is_empty());
    if scheme
        .as_deref()
        .is_some_and(|s| !s.bytes().all(|b| b.is_ascii_graphic()))
    {
        c.problem(
            format!("{path}.scheme"),
            "must be a single word of visible ASCII characters",
        );
    }
    let source = match (&raw.api_key_file, &raw.api_key_env) {
        (Some(file), None) => SecretSource::File(PathBuf::from(file)),
        (None, Some(env)) => SecretSource::Env(env.clone()),
        (Some(_), Some(_)) => {
            c.problem(&path, "set api_key_file or api_key_env, not both");
            return None;
        }
        (None, None) => {
            c.problem(&path, "set api_key_file or api_key_env");
            return None;
        }
    };
    let key_path = match &source {
        SecretSource::File(_) => format!("{path}.api_key_file"),
        SecretSource::Env(_) => format!("{path}.api_key_env"),
    };
    let secret = match (Secret::load(&source), c.secrets) {
        (Ok(s), _) => s,
        (Err(e), Secrets::Required) => {
            c.problem(key_path, e.to_string());
            return None;
        }
        (Err(e), Secrets::Optional) => {
            c.warn(format!(
                "{key_path}: {e} (serve will refuse to start until it is readable)"
            ));
            Secret::new("unavailable")
        }
    };
    warn_if_exposed(c, &source);
    let text = match &scheme {
        Some(s) => format!("{s} {}", secret.expose()),
        None => secret.expose().to_owned(),
    };
    let Ok(mut value) = HeaderValue::from_str(&text) else {
        c.problem(
            key_path,
            "the key contains characters that cannot be sent in a header",
        );
        return None;
    };
    value.set_sensitive(true);
    Some(ServiceAccount {
        name: name.to_owned(),
        header: header?,
        value,
        scheme,
        source,
        screen: Arc::new(crate::screen::KeyScreen::new(secret.expose().as_bytes())),
        key: secret,
    })
}

#[cfg(unix)]
fn warn_if_exposed(c: &mut Checker, source: &SecretSource) {
    use std::os::unix::fs::PermissionsExt;
    if let SecretSource::File(path) = source
        && let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o007 != 0
    {
        c.warn(format!(
            "key file {} is readable by other users",
            path.display()
        ));
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_: &mut Checker, _: &SecretSource) {}

/// The rules, and the guardrails of those that have any, by rule name.
pub(super) fn rules(
    c: &mut Checker,
    raw: &[RawRule],
    accounts: &BTreeMap<String, Arc<ServiceAccount>>,
    custom: &[Arc<str>],
) -> (Vec<Rule>, BTreeMap<String, RuleGuardrails>) {
    if raw.is_empty() {
        c.problem("rules", "at least one [[rules]] entry is required");
    }
    let mut out: Vec<Rule> = Vec::new();
    let mut guarded = BTreeMap::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("rules[{i}]");
        if r.name.is_empty() {
            c.problem(format!("{path}.name"), "must not be empty");
        } else if raw[..i].iter().any(|o| o.name == r.name) {
            c.problem(
                format!("{path}.name"),
                format!("duplicate rule name {:?}", r.name),
            );
        }
        let claim_path: Vec<String> = r.claim.split('.').map(str::to_owned).collect();
        if r.claim.is_empty() || claim_path.iter().any(String::is_empty) {
            c.problem(
                format!("{path}.claim"),
                format!("invalid claim path {:?}", r.claim),
            );
        }
        if r.value.is_empty() {
            c.problem(format!("{path}.value"), "must not be empty");
        }
        let match_mode = match r.match_mode.as_deref() {
            None | Some("exact") => MatchMode::Exact,
            Some("space_delimited") => MatchMode::SpaceDelimited,
            Some(other) => {
                c.problem(
                    format!("{path}.match"),
                    format!("unknown mode {other:?} (known: exact, space_delimited)"),
                );
                MatchMode::Exact
            }
        };
        if match_mode == MatchMode::SpaceDelimited && r.value.contains(' ') {
            c.problem(
                format!("{path}.value"),
                "a space_delimited value cannot contain a space",
            );
        }
        let Some(account) = accounts.get(&r.service_account) else {
            // An account that failed its own checks is already reported; don't pile on.
            if !c.problems.iter().any(|p| {
                p.path.starts_with(&format!(
                    "{}service_accounts.{}",
                    c.prefix, r.service_account
                ))
            }) {
                let known: Vec<&str> = accounts.keys().map(String::as_str).collect();
                c.problem(
                    format!("{path}.service_account"),
                    format!(
                        "no service account {:?} (known: {})",
                        r.service_account,
                        known.join(", ")
                    ),
                );
            }
            continue;
        };
        let permissions = permissions(c, &path, r, custom);
        let guardrails = guardrails(c, &path, r);
        if !guardrails.is_empty() {
            guarded.insert(r.name.clone(), guardrails);
        }
        out.push(Rule {
            permissions,
            name: r.name.clone(),
            claim: r.claim.clone(),
            claim_path,
            value: r.value.clone(),
            match_mode,
            account: Arc::clone(account),
        });
    }
    (out, guarded)
}

/// A rule's `deny_attributes`, `protected_groups`, `source_ips` and `rate_limit`.
fn guardrails(c: &mut Checker, path: &str, r: &RawRule) -> RuleGuardrails {
    let mut out = RuleGuardrails::default();
    for (i, text) in r.deny_attributes.iter().enumerate() {
        match crate::guard::AttrPath::parse_name(text) {
            Ok(attr) if !out.deny_attributes.contains(&attr) => out.deny_attributes.push(attr),
            Ok(_) => {}
            Err(e) => c.problem(
                format!("{path}.deny_attributes[{i}]"),
                format!("{text:?}: {e}; use e.g. \"roles\", \"name.givenName\" or a schema-URN-qualified name"),
            ),
        }
    }
    for (i, id) in r.protected_groups.iter().enumerate() {
        let well_formed = !id.is_empty()
            && id.trim() == id
            && !id.chars().any(char::is_control)
            && !id.contains('/');
        if !well_formed {
            c.problem(
                format!("{path}.protected_groups[{i}]"),
                format!(
                    "{id:?} is not a group id (empty, surrounding spaces, control characters or /)"
                ),
            );
        } else if !out
            .protected_groups
            .iter()
            .any(|p| p.eq_ignore_ascii_case(id))
        {
            out.protected_groups.push(id.clone());
        }
    }
    for (i, text) in r.source_ips.iter().enumerate() {
        match text.parse::<crate::guard::net::Cidr>() {
            Ok(cidr) if !out.source_ips.contains(&cidr) => out.source_ips.push(cidr),
            Ok(_) => {}
            Err(e) => c.problem(format!("{path}.source_ips[{i}]"), e),
        }
    }
    if let Some(text) = &r.rate_limit {
        match text.parse::<crate::guard::limit::Rate>() {
            Ok(rate) => out.rate_limit = Some(rate),
            Err(e) => c.problem(format!("{path}.rate_limit"), e),
        }
    }
    out
}
