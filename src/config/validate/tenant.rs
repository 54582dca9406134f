//! Validation of `[[tenants]]`: path prefixes, overlap, and what may stay at the top level.

use std::time::Duration;

use super::{ACCOUNT, Checker};
use crate::config::raw::{RawConfig, RawGuardrails};
use crate::config::{Guardrails, PathPrefix, PrefixSegment, Tenant};

/// Bounds of the deprovision budget: a window longer than a week holds counts an operator no
/// longer reasons about (and they are per replica, lost on restart); more than a million
/// deprovisionings is no guardrail.
const MAX_DEPROVISIONS: u64 = 1_000_000;
const WINDOW: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

/// `[guardrails]` (with `inherited` = the defaults) or `[tenants.guardrails]` (with `inherited` =
/// the top level's): each key set here replaces the inherited one. Rules are added later.
pub(super) fn budget(c: &mut Checker, raw: &RawGuardrails, inherited: &Guardrails) -> Guardrails {
    let mut out = inherited.clone();
    if let Some(max) = raw.max_deprovisions {
        match u32::try_from(max) {
            Ok(max) if u64::from(max) <= MAX_DEPROVISIONS => out.max_deprovisions = max,
            _ => c.problem(
                "guardrails.max_deprovisions",
                format!("{max} is more than {MAX_DEPROVISIONS}; 0 turns the budget off"),
            ),
        }
    }
    if let Some(text) = &raw.deprovision_window {
        let path = "guardrails.deprovision_window";
        let window = c.duration(path, text);
        if humantime::parse_duration(text).is_ok() && !(WINDOW.0..=WINDOW.1).contains(&window) {
            c.problem(path, format!("{text:?} must be between 1s and 7d"));
        } else {
            out.deprovision_window = window;
        }
    }
    out
}

/// With `[[tenants]]`, tenant sections at the top level would be silently unused: refuse them.
pub(super) fn reject_top_level(c: &mut Checker, raw: &RawConfig) {
    let misplaced = [
        ("upstream.url", raw.upstream.url.is_some()),
        ("jwt.jwks_url", raw.jwt.jwks_url.is_some()),
        ("jwt.issuer", raw.jwt.issuer.is_some()),
        ("jwt.extra_issuers", !raw.jwt.extra_issuers.is_empty()),
        ("rules", !raw.rules.is_empty()),
        ("service_accounts", !raw.service_accounts.is_empty()),
    ];
    for (key, present) in misplaced {
        if present {
            c.problem(
                key,
                "not allowed at the top level when [[tenants]] is used: move it into a tenant",
            );
        }
    }
}

/// `/ng/api/scim/account/{account}`: absolute, no trailing slash, no empty, dot, encoded or
/// parameter segments, at most one `{account}` (a whole segment).
pub(super) fn path_prefix(c: &mut Checker, raw: Option<&str>) -> PathPrefix {
    let Some(text) = raw else {
        c.problem(
            "path_prefix",
            "required for every tenant, e.g. \"/tenant-a\" or \"/scim/{account}\"",
        );
        return PathPrefix::default();
    };
    if text == "/" {
        return PathPrefix::default();
    }
    let Some(body) = text.strip_prefix('/').filter(|b| !b.ends_with('/')) else {
        c.problem(
            "path_prefix",
            format!("{text:?} must start with / and not end with /"),
        );
        return PathPrefix::default();
    };
    let mut segments = Vec::new();
    for segment in body.split('/') {
        if segment == ACCOUNT {
            segments.push(PrefixSegment::Account);
        } else if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.contains(['{', '}', '%', ';', '?', '#'])
        {
            c.problem(
                "path_prefix",
                format!("{text:?}: segment {segment:?} is not allowed"),
            );
        } else {
            segments.push(PrefixSegment::Literal(segment.to_owned()));
        }
    }
    if segments
        .iter()
        .filter(|s| **s == PrefixSegment::Account)
        .count()
        > 1
    {
        c.problem("path_prefix", "at most one {account} placeholder");
    }
    PathPrefix { segments }
}

/// Tenant names must be unique; a prefix that an earlier tenant's prefix already covers can
/// receive only some of its paths (the first matching prefix wins), which is worth a warning.
/// `tenants` are the validated tenants, each with its index in the file (a tenant with problems
/// of its own is not among them), and messages name that index.
pub(super) fn lint(c: &mut Checker, tenants: &[(usize, Tenant)]) {
    for (j, (at, later)) in tenants.iter().enumerate() {
        let earlier = &tenants[..j];
        if earlier.iter().any(|(_, t)| t.name == later.name) {
            c.problem(
                format!("tenants[{at}].name"),
                format!("duplicate tenant name {:?}", later.name),
            );
        }
        let probe = later.prefix.to_string().replace(ACCOUNT, "probe-account");
        if let Some((i, first)) = earlier
            .iter()
            .find(|(_, t)| t.prefix.matches(&probe).is_some())
        {
            c.warn(format!(
                "tenants[{at}] ({}) overlaps tenants[{i}] ({}): requests under {} go to tenants[{i}] first",
                later.prefix, first.prefix, first.prefix
            ));
        }
    }
}
