//! Claim-rule semantics (threats T17): exact, typed, first match wins.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::*;
use crate::config::{MatchMode, Rule, SecretSource, ServiceAccount};
use crate::scim::Classified;

fn account(name: &str) -> Arc<ServiceAccount> {
    Arc::new(ServiceAccount {
        name: name.into(),
        header: HeaderName::from_static("authorization"),
        value: HeaderValue::from_static("Bearer k"),
        scheme: Some("Bearer".into()),
        source: SecretSource::Env("K".into()),
        key: crate::config::Secret::new("k"),
        screen: Arc::new(crate::screen::KeyScreen::new(b"k")),
    })
}

fn rule(name: &str, claim: &str, value: &str, mode: MatchMode) -> Rule {
    Rule {
        name: name.into(),
        claim: claim.into(),
        claim_path: claim.split('.').map(str::to_owned).collect(),
        value: value.into(),
        match_mode: mode,
        permissions: crate::scim::Permissions::default(),
        account: account(name),
    }
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn read() -> Classified {
    crate::scim::parse_request(&http::Method::GET, "/Users", &[]).unwrap()
}

fn allowed(r: &Rule, c: Value) -> bool {
    authorize(std::slice::from_ref(r), &claims(c), &read(), &[]).is_ok()
}

#[test]
fn claim_matching_table() {
    let groups = rule("g", "groups", "scim-admins", MatchMode::Exact);
    let cases = [
        (json!({"groups": "scim-admins"}), true),
        (json!({"groups": ["x", "scim-admins"]}), true),
        (json!({"groups": "scim-admins-readonly"}), false),
        (json!({"groups": "scim"}), false),
        (json!({"groups": "Scim-Admins"}), false),
        (json!({"groups": "scim-admins "}), false),
        (json!({"groups": "scim-admins\u{0}"}), false),
        (json!({"groups": "ｓｃｉｍ-admins"}), false),
        (json!({"groups": [["scim-admins"]]}), false),
        (json!({"groups": {"scim-admins": true}}), false),
        (json!({"groups": null}), false),
        (json!({"groups": "scim-admins other"}), false),
        (json!({"other": "scim-admins"}), false),
        (json!({}), false),
    ];
    for (c, expected) in cases {
        assert_eq!(allowed(&groups, c.clone()), expected, "{c}");
    }
}

#[test]
fn numbers_and_booleans_match_only_their_json_text() {
    let admin = rule("b", "admin", "true", MatchMode::Exact);
    assert!(allowed(&admin, json!({"admin": true})));
    assert!(allowed(&admin, json!({"admin": "true"})));
    assert!(!allowed(&admin, json!({"admin": 1})));
    assert!(!allowed(&admin, json!({"admin": false})));
    let level = rule("n", "level", "1", MatchMode::Exact);
    assert!(allowed(&level, json!({"level": 1})));
    assert!(!allowed(&level, json!({"level": 1.0})));
    assert!(!allowed(&level, json!({"level": true})));
}

#[test]
fn dotted_paths_and_literal_dotted_names() {
    let nested = rule("n", "realm_access.roles", "scim", MatchMode::Exact);
    assert!(allowed(
        &nested,
        json!({"realm_access": {"roles": ["scim"]}})
    ));
    assert!(!allowed(
        &nested,
        json!({"realm_access": {"roles": ["other"]}})
    ));
    assert!(!allowed(&nested, json!({"realm_access": ["scim"]})));
    let url = rule("u", "https://example.com/roles", "scim", MatchMode::Exact);
    assert!(allowed(
        &url,
        json!({"https://example.com/roles": ["scim"]})
    ));
    // The literal top-level name wins over a path through nested objects.
    let both = json!({"a.b": "no", "a": {"b": "scim"}});
    assert!(!allowed(&rule("x", "a.b", "scim", MatchMode::Exact), both));
}

#[test]
fn space_delimited_scope() {
    let scope = rule("s", "scope", "scim:write", MatchMode::SpaceDelimited);
    assert!(allowed(
        &scope,
        json!({"scope": "openid scim:write profile"})
    ));
    assert!(allowed(&scope, json!({"scope": "scim:write"})));
    assert!(allowed(&scope, json!({"scope": ["scim:write"]})));
    assert!(!allowed(&scope, json!({"scope": "scim:write:all openid"})));
    assert!(!allowed(&scope, json!({"scope": "scim:read"})));
    assert!(!allowed(&scope, json!({"scope": ["openid scim:write"]})));
    let exact = rule("e", "scope", "scim:write", MatchMode::Exact);
    assert!(!allowed(&exact, json!({"scope": "openid scim:write"})));
}

#[test]
fn first_matching_rule_wins() {
    let rules = [
        rule("first", "groups", "a", MatchMode::Exact),
        rule("second", "groups", "b", MatchMode::Exact),
    ];
    let picked = authorize(&rules, &claims(json!({"groups": ["b", "a"]})), &read(), &[]).unwrap();
    assert_eq!(picked.name, "first");
    let picked = authorize(&rules, &claims(json!({"groups": ["b"]})), &read(), &[]).unwrap();
    assert_eq!(picked.account.name, "second");
    assert_eq!(
        authorize(&rules, &claims(json!({"groups": []})), &read(), &[]).unwrap_err(),
        AuthError::NoMatchingRule
    );
}

#[test]
fn permissions_pick_the_first_rule_that_allows_the_operation() {
    use crate::scim::{Operation, Permissions, parse_request};
    let mut reader = rule("reader", "groups", "staff", MatchMode::Exact);
    reader.permissions = Permissions {
        operations: Some(vec![Operation::Read, Operation::Search]),
        resources: None,
    };
    let writer = rule("writer", "groups", "admins", MatchMode::Exact);
    let rules = [reader, writer];
    let c = |m: &str, p: &str| parse_request(&m.parse().unwrap(), p, &[]).unwrap();
    let staff = claims(json!({"groups": ["staff"]}));
    assert_eq!(
        authorize(&rules, &staff, &c("GET", "/Users"), &[])
            .unwrap()
            .name,
        "reader"
    );
    assert_eq!(
        authorize(&rules, &staff, &c("DELETE", "/Users/1"), &[]).unwrap_err(),
        AuthError::OperationDenied
    );
    let both = claims(json!({"groups": ["staff", "admins"]}));
    assert_eq!(
        authorize(&rules, &both, &c("GET", "/Users"), &[])
            .unwrap()
            .name,
        "reader"
    );
    assert_eq!(
        authorize(&rules, &both, &c("DELETE", "/Users/1"), &[])
            .unwrap()
            .name,
        "writer"
    );
    let bulk = [c("POST", "/Users"), c("DELETE", "/Users/1")];
    assert_eq!(
        authorize(&rules, &staff, &c("POST", "/Bulk"), &bulk).unwrap_err(),
        AuthError::OperationDenied
    );
    assert_eq!(
        authorize(&rules, &both, &c("POST", "/Bulk"), &bulk)
            .unwrap()
            .name,
        "writer"
    );
    assert_eq!(
        authorize(&rules, &claims(json!({})), &c("GET", "/Users"), &[]).unwrap_err(),
        AuthError::NoMatchingRule
    );
}
