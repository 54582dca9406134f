//! SCIM grammar, permissions, bulk bodies, error and ServiceProviderConfig documents.

use super::*;
use http::Method;

fn parse(m: &str, p: &str) -> Result<Classified, PathError> {
    parse_request(&m.parse::<Method>().unwrap(), p, &[Arc::from("Devices")])
}

fn c(m: &str, p: &str) -> Classified {
    parse(m, p).unwrap_or_else(|e| panic!("{m} {p}: {e:?}"))
}

#[test]
fn permissions() {
    let read_only = Permissions {
        operations: Some(vec![Operation::Read, Operation::Search]),
        resources: None,
    };
    assert!(read_only.allows(&c("GET", "/Users")));
    assert!(read_only.allows(&c("POST", "/Users/.search")));
    assert!(!read_only.allows(&c("POST", "/Users")));
    assert!(!read_only.allows(&c("DELETE", "/Users/1")));
    assert!(!read_only.allows(&c("POST", "/Bulk")));
    assert!(
        !read_only.allows(&c("GET", "/Me")),
        "/Me needs an explicit resource_types entry"
    );
    let all = Permissions::default();
    assert!(all.allows(&c("DELETE", "/Users/1")) && all.allows(&c("GET", "/Devices/7")));
    assert!(!all.allows(&c("GET", "/Me")));
    let me = Permissions {
        operations: None,
        resources: Some(vec![Resource::Me]),
    };
    assert!(me.allows(&c("GET", "/Me")) && !me.allows(&c("GET", "/Users")));
    let groups = Permissions {
        operations: None,
        resources: Some(vec![Resource::Groups]),
    };
    assert!(groups.allows(&c("DELETE", "/Groups/2")));
    assert!(!groups.allows(&c("DELETE", "/Devices/2")));
}

#[test]
fn grammar_table() {
    use Operation::*;
    let cases: &[(&str, &str, Operation, &str)] = &[
        ("GET", "/Users", Read, "Users"),
        ("GET", "/Users/2819c223", Read, "Users"),
        ("HEAD", "/Users/1", Read, "Users"),
        ("POST", "/Users", Create, "Users"),
        ("POST", "/Groups", Create, "Groups"),
        ("PUT", "/Users/1", Replace, "Users"),
        ("PATCH", "/Groups/1", Patch, "Groups"),
        ("DELETE", "/Users/1", Delete, "Users"),
        ("POST", "/.search", Search, "root"),
        ("POST", "/Users/.search", Search, "Users"),
        ("POST", "/Groups/.search", Search, "Groups"),
        ("POST", "/Bulk", Bulk, "Bulk"),
        (
            "GET",
            "/ServiceProviderConfig",
            Read,
            "ServiceProviderConfig",
        ),
        ("GET", "/ResourceTypes", Read, "ResourceTypes"),
        ("GET", "/ResourceTypes/User", Read, "ResourceTypes"),
        ("GET", "/Schemas", Read, "Schemas"),
        (
            "GET",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            Read,
            "Schemas",
        ),
        ("GET", "/Me", Read, "Me"),
        ("PUT", "/Me", Replace, "Me"),
        ("PATCH", "/Me", Patch, "Me"),
        ("DELETE", "/Me", Delete, "Me"),
        ("GET", "/me", Read, "Me"),
        ("GET", "/Users/me", Read, "Users"),
        ("DELETE", "/Users/Groups", Delete, "Users"),
        ("POST", "/users/.SEARCH", Search, "Users"),
        ("GET", "/users/2819c223", Read, "Users"),
        ("GET", "/Users/a%40b.example", Read, "Users"),
        ("GET", "/Users/bulkId:q1", Read, "Users"),
        ("DELETE", "/Devices/9", Delete, "Devices"),
        ("POST", "/devices", Create, "Devices"),
        ("HEAD", "/Groups", Read, "Groups"),
    ];
    for (method, path, operation, resource) in cases {
        let got = c(method, path);
        assert_eq!(
            (got.operation, got.resource.as_str()),
            (*operation, *resource),
            "{method} {path}"
        );
    }
}

#[test]
fn what_the_grammar_refuses() {
    use PathError::*;
    let cases: &[(&str, &str, PathError)] = &[
        // Nothing after an endpoint's last segment: the end of a path decides nothing.
        ("DELETE", "/Users/1/Groups/2", NotFound),
        ("GET", "/Users/1/Groups", NotFound),
        ("GET", "/scim/v2/Users", NotFound),
        ("POST", "/v2/.search", NotFound),
        ("GET", "/Me/Groups", NotFound),
        ("GET", "/ServiceProviderConfig/x", NotFound),
        ("GET", "/Schemas/a/b", NotFound),
        ("GET", "/Bulk/1", NotFound),
        ("GET", "/healthz", NotFound),
        ("GET", "/", NotFound),
        ("GET", "", NotFound),
        // Alias spellings a framework may fold onto an endpoint.
        ("GET", "/Users.json", NotFound),
        ("GET", "/Users.", NotFound),
        ("GET", "/Users%20", NotFound),
        ("GET", "/%20Users", NotFound),
        ("GET", "/U\u{17f}ers", NotFound),
        ("DELETE", "/%55sers/1", Ambiguous),
        ("DELETE", "/%4De", Ambiguous),
        ("POST", "/Users/%2esearch", Ambiguous),
        ("POST", "/Bulk%00", Ambiguous),
        // Ambiguous shapes.
        ("GET", "/Users/", Ambiguous),
        ("GET", "//Users", Ambiguous),
        ("GET", "/Users/../Groups", Ambiguous),
        ("DELETE", "/Users/%2e%2e/Groups/1", Ambiguous),
        ("DELETE", "/Users//1", Ambiguous),
        ("GET", "/Users%2F1", Ambiguous),
        ("DELETE", "/Users/1;x=y", Ambiguous),
        ("GET", "/Users/%5c1", Ambiguous),
        ("GET", "/Users/%zz", Ambiguous),
        ("GET", "/Users/%+1", Ambiguous),
        ("GET", "/Users/%-1", Ambiguous),
        ("GET", "/Users/%e2%28", Ambiguous),
        ("GET", "/Users/a%0ab", Ambiguous),
        ("GET", "/./Users", Ambiguous),
        ("GET", "Users", Ambiguous),
        // Endpoints, wrong method.
        ("DELETE", "/Users", Method),
        ("PUT", "/Users", Method),
        ("POST", "/Users/1", Method),
        ("GET", "/Users/.search", Method),
        ("GET", "/.search", Method),
        ("GET", "/Bulk", Method),
        ("POST", "/Schemas", Method),
        ("POST", "/Me", Method),
        ("OPTIONS", "/Users", Method),
        ("get", "/Users", Method),
    ];
    for (method, path, want) in cases {
        assert_eq!(parse(method, path), Err(*want), "{method} {path}");
    }
}

#[test]
fn bulk_bodies() {
    let custom = [Arc::from("Devices")];
    let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[
        {"method":"POST","path":"/Users","bulkId":"a","data":{}},
        {"method":"delete","path":"/Groups/1"},
        {"Method":"PATCH","PATH":"/Devices/2","data":{}}]}"#;
    let ops = bulk_operations(body, &custom).unwrap();
    assert_eq!(ops[0].operation, Operation::Create);
    assert_eq!(
        (ops[1].operation, ops[1].resource.as_str()),
        (Operation::Delete, "Groups")
    );
    assert_eq!(ops[2].resource.as_str(), "Devices");
    let ops = parse_bulk(body, &custom).unwrap();
    assert_eq!(ops[1].request.id.as_deref(), Some("1"));
    assert_eq!(ops[0].data, Some(serde_json::json!({})));
    assert_eq!(ops[1].data, None);
}

#[test]
fn item_ids_are_decoded_and_only_on_items() {
    assert_eq!(c("PATCH", "/Groups/a%20b").id.as_deref(), Some("a b"));
    assert_eq!(c("DELETE", "/users/X1").id.as_deref(), Some("X1"));
    assert_eq!(c("GET", "/Devices/7").id.as_deref(), Some("7"));
    for (m, p) in [
        ("GET", "/Users"),
        ("PATCH", "/Me"),
        ("POST", "/Users/.search"),
    ] {
        assert_eq!(c(m, p).id, None, "{m} {p}");
    }
}

#[test]
fn bulk_bodies_that_are_refused() {
    for bad in [
        &b"{}"[..],
        b"not json",
        br#"{"Operations":[{"path":"/Users"}]}"#,
        // Member names fold: a second spelling is the same member said twice.
        br#"{"Operations":[{"method":"POST","path":"/Users"}],"operations":[{"method":"DELETE","path":"/Users/2"}]}"#,
        br#"{"OPERATIONS":[],"Operations":[]}"#,
        br#"{"Operations":[{"method":"POST","path":"/Users","Method":"DELETE"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/1","PATH":"/Groups/1"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users","method":"POST"}]}"#,
        // Not a bulk method, not in the grammar, nested, query, unknown members.
        br#"{"Operations":[{"method":"GET","path":"/Users/1"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/1/Groups/2"}]}"#,
        br#"{"Operations":[{"method":"POST","path":"/Bulk"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/1?x=1"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/scim/v2/Users/1"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/%2e%2e"}]}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/1","op":"x"}]}"#,
        br#"{"Operations":[],"extra":1}"#,
        br#"{"Operations":[{"method":"DELETE","path":"/Users/1"}],"Operations":[]}"#,
        br#"{"Operations":["DELETE /Users/1"]}"#,
        br#"{"Operations":{"method":"DELETE","path":"/Users/1"}}"#,
    ] {
        assert!(
            bulk_operations(bad, &[]).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn service_provider_config_advertises_bearer() {
    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch":{"supported":true},"authenticationSchemes":[{"type":"httpbasic","name":"API key"}]}"#;
    let out: serde_json::Value =
        serde_json::from_slice(&rewrite_service_provider_config(body).unwrap()).unwrap();
    assert_eq!(out["authenticationSchemes"][0]["type"], "oauthbearertoken");
    assert_eq!(out["authenticationSchemes"].as_array().unwrap().len(), 1);
    assert_eq!(out["patch"]["supported"], true);
    assert!(rewrite_service_provider_config(b"[1]").is_none());
    assert!(rewrite_service_provider_config(b"<html>").is_none());
}

#[test]
fn status_is_a_string() {
    let body: serde_json::Value =
        serde_json::from_slice(&error_body(StatusCode::FORBIDDEN, "no")).unwrap();
    assert_eq!(body["status"], "403");
    assert_eq!(body["schemas"][0], ERROR_SCHEMA);
    assert_eq!(body["detail"], "no");
}
