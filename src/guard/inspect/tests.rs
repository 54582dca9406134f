//! Deprovisionings in every shape clients send (idp-clients.md §4), and the variants that try to
//! slip past the count: case, string booleans, URN keys, `add` for `replace`, `/Bulk`.

use std::sync::Arc;

use http::Method;

use super::*;
use crate::scim::parse_request;

fn req(method: &str, path: &str) -> Classified {
    parse_request(
        &method.parse::<Method>().unwrap(),
        path,
        &[Arc::from("Devices")],
    )
    .unwrap()
}

fn summary(method: &str, path: &str, body: &str) -> Summary {
    let body = (!body.is_empty()).then_some(body.as_bytes());
    inspect(&req(method, path), body, &[Arc::from("Devices")])
        .unwrap_or_else(|e| panic!("{method} {path} {body:?}: {e}"))
}

fn patch(ops: &str) -> String {
    format!(r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":{ops}}}"#)
}

fn attrs(s: &Summary) -> Vec<String> {
    s.attributes.iter().map(ToString::to_string).collect()
}

#[test]
fn every_deactivation_shape_counts_once() {
    let deactivations = [
        // Okta: pathless replace.
        r#"[{"op":"replace","value":{"active":false}}]"#,
        // Entra default: capitalised op, string boolean.
        r#"[{"op":"Replace","path":"active","value":"False"}]"#,
        // Entra aadOptscim062020: lowercase op, real boolean; and a mixed pathless replace.
        r#"[{"op":"replace","path":"active","value":false}]"#,
        r#"[{"op":"replace","value":{"active":false,"name.givenName":"x"}}]"#,
        // Case everywhere, other spellings of false, add instead of replace, URN forms.
        r#"[{"OP":"REPLACE","PATH":"ACTIVE","VALUE":"FALSE"}]"#,
        r#"[{"op":"replace","value":{"Active":"false"}}]"#,
        r#"[{"op":"add","path":"active","value":false}]"#,
        r#"[{"op":"add","value":{"active":false}}]"#,
        r#"[{"op":"replace","path":"active","value":0}]"#,
        r#"[{"op":"replace","path":"active","value":null}]"#,
        r#"[{"op":"replace","path":"active","value":"no"}]"#,
        r#"[{"op":"replace","path":"active","value":" true"}]"#,
        r#"[{"op":"replace","path":"active","value":[true]}]"#,
        r#"[{"op":"remove","path":"active"}]"#,
        r#"[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":false}]"#,
        r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User:active":false}}]"#,
        r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"active":false}}}]"#,
        r#"[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User","value":{"active":false}}]"#,
        r#"[{"op":"remove","path":"urn:ietf:params:scim:schemas:core:2.0:User"}]"#,
        r#"[{"op":"replace","value":{"urn:acme:ext:2.0:active":false}}]"#,
        // Two ops on the same user still deprovision one user.
        r#"[{"op":"replace","path":"active","value":false},{"op":"replace","value":{"active":"false"}}]"#,
    ];
    for ops in deactivations {
        for path in ["/Users/1", "/users/1", "/Me"] {
            assert_eq!(
                summary("PATCH", path, &patch(ops)).deprovisions,
                1,
                "{path} {ops}"
            );
        }
    }
    for ops in [
        r#"[{"op":"replace","value":{"active":true}}]"#,
        r#"[{"op":"Replace","path":"active","value":"True"}]"#,
        r#"[{"op":"replace","value":{"displayName":"x"}}]"#,
        r#"[{"op":"replace","path":"name.givenName","value":"false"}]"#,
    ] {
        assert_eq!(
            summary("PATCH", "/Users/1", &patch(ops)).deprovisions,
            0,
            "{ops}"
        );
    }
    // Groups and custom types have no `active` to deprovision.
    let off = patch(r#"[{"op":"replace","value":{"active":false}}]"#);
    assert_eq!(summary("PATCH", "/Groups/1", &off).deprovisions, 0);
    assert_eq!(summary("PATCH", "/Devices/1", &off).deprovisions, 0);
}

#[test]
fn put_with_active_false_and_deletes_count() {
    for body in [
        r#"{"userName":"a","active":false}"#,
        r#"{"userName":"a","ACTIVE":"False"}"#,
        r#"{"urn:ietf:params:scim:schemas:core:2.0:User":{"active":false}}"#,
    ] {
        assert_eq!(summary("PUT", "/Users/1", body).deprovisions, 1, "{body}");
    }
    assert_eq!(
        summary("PUT", "/Users/1", r#"{"active":true}"#).deprovisions,
        0
    );
    // Creating an inactive user deprovisions nobody.
    assert_eq!(
        summary("POST", "/Users", r#"{"active":false}"#).deprovisions,
        0
    );
    for path in ["/Users/1", "/Groups/1", "/Me", "/USERS/x"] {
        assert_eq!(summary("DELETE", path, "").deprovisions, 1, "{path}");
    }
    assert_eq!(summary("DELETE", "/Devices/1", "").deprovisions, 0);
    let s = summary("DELETE", "/Groups/g%201", "");
    assert_eq!(s.groups, vec![Box::from("g 1")]);
    assert!(!s.inspected);
}

#[test]
fn every_bulk_operation_counts() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[
        {"method":"DELETE","path":"/Users/1"},
        {"method":"delete","path":"/Groups/2"},
        {"method":"PATCH","path":"/Users/3","data":{"Operations":[{"op":"Replace","path":"active","value":"False"}]}},
        {"method":"patch","path":"/Users/4","data":{"operations":[{"op":"replace","value":{"active":false}}]}},
        {"method":"PUT","path":"/Users/5","data":{"active":"false"}},
        {"method":"POST","path":"/Users","bulkId":"n","data":{"userName":"x","roles":[{"value":"admin"}]}},
        {"method":"PATCH","path":"/Users/6","data":{"Operations":[{"op":"replace","value":{"active":true}}]}}]}"#;
    let s = summary("POST", "/Bulk", body);
    assert_eq!(s.deprovisions, 5);
    assert_eq!(s.groups, vec![Box::from("2")]);
    assert!(attrs(&s).contains(&"roles.value".to_owned()));
    // A data member that is not an object, or a write without data, cannot be judged.
    for bad in [
        r#"{"Operations":[{"method":"PATCH","path":"/Users/1","data":"x"}]}"#,
        r#"{"Operations":[{"method":"PATCH","path":"/Users/1"}]}"#,
        r#"{"Operations":[{"method":"PATCH","path":"/Users/1","data":{"Operations":[{"op":"replace","path":"active[","value":false}]}}]}"#,
        r#"{"Operations":[{"method":"POST","path":"/Bulk","data":{}}]}"#,
    ] {
        assert!(
            inspect(&req("POST", "/Bulk"), Some(bad.as_bytes()), &[]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn attribute_paths_in_every_form() {
    let cases: [(&str, &str, &str, &[&str]); 9] = [
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"add","path":"emails[type eq \"work\"].value","value":"a@b"}]"#),
            &["emails.value"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(
                r#"[{"op":"replace","value":{"name.givenName":"x","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager":"m"}}]"#,
            ),
            &["manager", "name.givenname"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(
                r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"1","manager":{"value":"m"}}}}]"#,
            ),
            &["employeenumber", "manager.value"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"remove","path":"emails[type eq \"work\"]"}]"#),
            &["emails"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"replace","path":"emails","value":[{"value":"a","type":"work"}]}]"#),
            &["emails", "emails.type", "emails.value"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(r#"[{"op":"add","path":"emails","value":[{"type":"work"}]}]"#),
            &["emails.type"],
        ),
        (
            "POST",
            "/Users",
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","Password":"p","name":{"givenName":"g"}}"#,
            &["name.givenname", "password", "schemas", "username"],
        ),
        (
            "PUT",
            "/Users/1",
            r#"{"name":{"givenName":"g"},"x509Certificates":["c"]}"#,
            &["name", "name.givenname", "x509certificates"],
        ),
        (
            "PATCH",
            "/Users/1",
            &patch(
                r#"[{"op":"remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}]"#,
            ),
            &["*"],
        ),
    ];
    for (method, path, body, want) in cases {
        assert_eq!(
            attrs(&summary(method, path, body)),
            *want,
            "{method} {body}"
        );
    }
    // An unknown extension URN is read both as schema:attribute and as a schema of its own.
    let s = summary(
        "PATCH",
        "/Users/1",
        &patch(r#"[{"op":"replace","value":{"urn:acme:ext:2.0:User":{"roles":"admin"}}}]"#),
    );
    assert_eq!(attrs(&s), ["roles", "user.roles"]);
    let s = summary(
        "PATCH",
        "/Users/1",
        &patch(r#"[{"op":"remove","path":"urn:acme:ext:2.0:User"}]"#),
    );
    assert!(attrs(&s).contains(&"*".to_owned()));
}

#[test]
fn bodies_that_cannot_be_judged_are_refused() {
    for (method, path, body) in [
        ("PATCH", "/Users/1", "not json".to_owned()),
        (
            "PATCH",
            "/Users/1",
            r#"{"Operations":[],"operations":[]}"#.to_owned(),
        ),
        (
            "PATCH",
            "/Users/1",
            r#"{"Operations":{"op":"replace"}}"#.to_owned(),
        ),
        (
            "PATCH",
            "/Users/1",
            r#"{"schemas":[],"Operations":[],"extra":1}"#.to_owned(),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":{"active":true,"ACTIVE":false}}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"Replace","Path":"x","path":"active","value":false}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"merge","path":"active","value":false}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","path":"active","value":false,"x":1}]"#),
        ),
        ("PATCH", "/Users/1", patch(r#"[{"op":"remove"}]"#)),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":"false"}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","path":1,"value":false}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","path":"active ","value":false}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":{"act ive":false}}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":{"name":{"given.Name":"x"}}}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(r#"[{"op":"replace","value":{"name":{"givenName":{"x":1}}}}]"#),
        ),
        (
            "PATCH",
            "/Users/1",
            patch(
                r#"[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"urn:acme:x:active":false}}}]"#,
            ),
        ),
        ("PUT", "/Users/1", r#"{"emails":[["a"]]}"#.to_owned()),
        ("PUT", "/Users/1", "[]".to_owned()),
    ] {
        assert!(
            inspect(&req(method, path), Some(body.as_bytes()), &[]).is_err(),
            "{method} {path} {body}"
        );
    }
}

#[test]
fn member_counts_and_group_references() {
    let ops = patch(
        r#"[{"op":"Add","path":"members","value":[{"value":"a"},{"value":"b"}]},
            {"op":"Remove","path":"members","value":[{"value":"c"}]},
            {"op":"remove","path":"members[value eq \"d\" or value eq \"e\"]"}]"#,
    );
    let s = summary("PATCH", "/Groups/g1", &ops);
    assert_eq!(
        s.members,
        Members {
            added: 2,
            removed: 3,
            replaced: false
        }
    );
    assert_eq!(s.groups, vec![Box::from("g1")]);
    let s = summary(
        "PUT",
        "/Groups/g1",
        r#"{"displayName":"x","members":[{"value":"a"}]}"#,
    );
    assert_eq!(
        s.members,
        Members {
            added: 1,
            removed: 0,
            replaced: true
        }
    );
    let s = summary(
        "PATCH",
        "/Groups/g1",
        &patch(r#"[{"op":"remove","path":"members"}]"#),
    );
    assert!(s.members.replaced);
    let s = summary(
        "POST",
        "/Groups",
        r#"{"displayName":"x","members":[{"value":"a"}]}"#,
    );
    assert_eq!((s.members.added, s.groups.len()), (1, 0));
    // A User's `groups` names group ids; forms that hide them are flagged.
    let s = summary("PUT", "/Users/1", r#"{"groups":[{"value":"admins"}]}"#);
    assert_eq!(
        (s.user_groups, s.user_groups_unknown),
        (vec![Box::from("admins")], false)
    );
    let s = summary("PUT", "/Users/1", r#"{"groups":[]}"#);
    assert!(s.user_groups.is_empty() && !s.user_groups_unknown);
    for ops in [
        r#"[{"op":"remove","path":"groups[value eq \"admins\"]"}]"#,
        r#"[{"op":"add","path":"groups","value":{"value":"admins"}}]"#,
        r#"[{"op":"add","path":"groups","value":[{"display":"admins"}]}]"#,
        r#"[{"op":"remove","path":"groups"}]"#,
    ] {
        assert!(
            summary("PATCH", "/Users/1", &patch(ops)).user_groups_unknown,
            "{ops}"
        );
    }
}
