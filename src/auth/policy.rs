//! Step 3: verified claims → the first matching rule and its service account.

use serde_json::{Map, Value};

use super::AuthError;
use crate::config::{MatchMode, Rule};
use crate::scim::Classified;

/// Returns the first rule whose claim test passes and which permits the request (and, for a
/// `/Bulk` request, every operation inside it). `OperationDenied` when some rule's claim matched
/// but none permitted the operation; `NoMatchingRule` when no claim matched at all.
pub fn authorize<'r>(
    rules: &'r [Rule],
    claims: &Map<String, Value>,
    request: &Classified,
    bulk: &[Classified],
) -> Result<&'r Rule, AuthError> {
    let mut claim_matched = false;
    for rule in rules.iter().filter(|rule| rule_matches(rule, claims)) {
        claim_matched = true;
        if rule.permissions.allows(request) && bulk.iter().all(|op| rule.permissions.allows(op)) {
            return Ok(rule);
        }
    }
    Err(if claim_matched {
        AuthError::OperationDenied
    } else {
        AuthError::NoMatchingRule
    })
}

/// Whether one rule's claim test passes.
pub fn rule_matches(rule: &Rule, claims: &Map<String, Value>) -> bool {
    claim(claims, rule).is_some_and(|v| matches(v, &rule.value, rule.match_mode))
}

/// The claim value a rule would test, if present (for `explain`).
pub fn claim_value<'c>(claims: &'c Map<String, Value>, rule: &Rule) -> Option<&'c Value> {
    claim(claims, rule)
}

/// The claim a rule reads. A top-level claim whose name is the rule's claim text wins (URL-style
/// names such as `https://example.com/roles` contain dots); otherwise the dotted path is followed.
fn claim<'c>(claims: &'c Map<String, Value>, rule: &Rule) -> Option<&'c Value> {
    if let Some(v) = claims.get(&rule.claim) {
        return Some(v);
    }
    let (first, rest) = rule.claim_path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, seg| v.as_object()?.get(seg))
}

/// Exact comparison, no coercion beyond this: a number or boolean matches when its JSON text
/// equals the configured value (`true` matches "true"; "1.0" does not match `1`).
fn matches(value: &Value, expected: &str, mode: MatchMode) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .any(|item| !item.is_array() && matches(item, expected, MatchMode::Exact)),
        Value::String(s) => match mode {
            MatchMode::Exact => s == expected,
            MatchMode::SpaceDelimited => s.split(' ').any(|part| part == expected),
        },
        Value::Number(n) => n.to_string() == expected,
        Value::Bool(b) => b.to_string() == expected,
        Value::Null | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests;
