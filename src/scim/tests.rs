//! SCIM classification, permissions, bulk bodies, error and ServiceProviderConfig documents.

use super::*;

#[test]
fn permissions() {
    let read_only = Permissions {
        operations: Some(vec![Operation::Read, Operation::Search]),
        resources: None,
    };
    let c = |m: &str, p: &str| classify(&m.parse().unwrap(), p);
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
    assert!(all.allows(&c("DELETE", "/Users/1")) && all.allows(&c("GET", "/healthz")));
    assert!(!all.allows(&c("GET", "/Me")));
    let me = Permissions {
        operations: None,
        resources: Some(vec![Resource::Me]),
    };
    assert!(me.allows(&c("GET", "/Me")) && !me.allows(&c("GET", "/Users")));
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
fn bulk_bodies() {
    let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[
        {"method":"POST","path":"/Users","bulkId":"a","data":{}},
        {"method":"delete","path":"/Groups/1"}]}"#;
    let ops = bulk_operations(body).unwrap();
    assert_eq!(ops[0].operation, Operation::Create);
    assert_eq!(
        (ops[1].operation, ops[1].resource.as_str()),
        (Operation::Delete, "Groups")
    );
    assert_eq!(bulk_operations(b"{}"), Err(InvalidBulk));
    assert_eq!(
        bulk_operations(br#"{"Operations":[{"path":"/Users"}]}"#),
        Err(InvalidBulk)
    );
    assert_eq!(bulk_operations(b"not json"), Err(InvalidBulk));
}

#[test]
fn classification_table() {
    use Operation::*;
    let cases: &[(&str, &str, Operation, &str)] = &[
        ("GET", "/Users", Read, "Users"),
        (
            "GET",
            "/Users?filter=userName%20eq%20%22a%22",
            Read,
            "Users",
        ),
        ("GET", "/scim/v2/Users/2819c223", Read, "Users"),
        ("HEAD", "/Users/1", Read, "Users"),
        ("POST", "/Users", Create, "Users"),
        ("POST", "/scim/v2/Groups", Create, "Groups"),
        ("PUT", "/Users/1", Replace, "Users"),
        ("PATCH", "/Groups/1", Patch, "Groups"),
        ("DELETE", "/Users/1", Delete, "Users"),
        ("DELETE", "/Users", Other, "Users"),
        ("PUT", "/Users", Other, "Users"),
        ("POST", "/Users/1", Other, "Users"),
        ("POST", "/.search", Search, "root"),
        ("POST", "/scim/v2/.search", Search, "root"),
        ("POST", "/Users/.search", Search, "Users"),
        ("POST", "/Groups/.search", Search, "Groups"),
        ("GET", "/Users/.search", Other, "unknown"),
        ("POST", "/Other/.search", Other, "unknown"),
        ("POST", "/Bulk", Bulk, "Bulk"),
        ("GET", "/Bulk", Other, "unknown"),
        (
            "GET",
            "/ServiceProviderConfig",
            Read,
            "ServiceProviderConfig",
        ),
        ("GET", "/scim/v2/ResourceTypes", Read, "ResourceTypes"),
        ("GET", "/ResourceTypes/User", Read, "ResourceTypes"),
        ("GET", "/Schemas", Read, "Schemas"),
        (
            "GET",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            Read,
            "Schemas",
        ),
        ("POST", "/Schemas", Other, "unknown"),
        ("GET", "/Me", Read, "Me"),
        ("PUT", "/Me", Replace, "Me"),
        ("PATCH", "/Me", Patch, "Me"),
        ("DELETE", "/Me", Delete, "Me"),
        ("POST", "/Me", Other, "Me"),
        ("GET", "/Users/../Groups", Other, "unknown"),
        ("DELETE", "/Users/%2e%2e/Groups/1", Other, "unknown"),
        ("DELETE", "/Users//1", Other, "unknown"),
        ("GET", "/Users%2F1", Other, "unknown"),
        ("DELETE", "/Users/1;x=y", Other, "unknown"),
        ("GET", "/", Other, "unknown"),
        ("GET", "/healthz", Other, "unknown"),
        ("OPTIONS", "/Users", Other, "Users"),
        ("GET", "/Users/", Read, "Users"),
        ("GET", "/me", Read, "Me"),
        ("DELETE", "/%4De", Delete, "Me"),
        ("GET", "/Users/me", Read, "Users"),
        ("DELETE", "/Users/Groups", Delete, "Users"),
        ("POST", "/users/.SEARCH", Search, "Users"),
        ("GET", "/scim/v2/users/2819c223", Read, "Users"),
        // RFC 7644 §3 examples.
        (
            "GET",
            "/Groups?filter=displayName%20eq%20%22Admins%22",
            Read,
            "Groups",
        ),
        (
            "PATCH",
            "/Users/2819c223-7f76-453a-919d-413861904646",
            Patch,
            "Users",
        ),
        (
            "PUT",
            "/Groups/e9e30dba-f08f-4109-8486-d5c6a331660a",
            Replace,
            "Groups",
        ),
        ("GET", "/ResourceTypes/Group", Read, "ResourceTypes"),
        (
            "GET",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group",
            Read,
            "Schemas",
        ),
        ("HEAD", "/Groups", Read, "Groups"),
        (
            "DELETE",
            "/Groups/e9e30dba-f08f-4109-8486-d5c6a331660a",
            Delete,
            "Groups",
        ),
        ("POST", "/v2/.search", Search, "root"),
    ];
    for (method, path, operation, resource) in cases {
        let path_only = path.split('?').next().unwrap();
        let got = classify(&method.parse().unwrap(), path_only);
        assert_eq!(
            (got.operation, got.resource.as_str()),
            (*operation, *resource),
            "{method} {path}"
        );
    }
}

#[test]
fn status_is_a_string() {
    let body: serde_json::Value =
        serde_json::from_slice(&error_body(StatusCode::FORBIDDEN, "no")).unwrap();
    assert_eq!(body["status"], "403");
    assert_eq!(body["schemas"][0], ERROR_SCHEMA);
    assert_eq!(body["detail"], "no");
}

#[test]
fn ambiguous_paths() {
    for path in [
        "//Me",
        "/Users/../Me",
        "/Users/%2e%2e/Me",
        "/./Me",
        "/Me;x=1",
        "/Users%2F1",
        "/Users/%5c1",
        "/Users/%3Bx",
        "/Users/%zz",
        "/Users/%e2%28",
        "/a//b",
    ] {
        assert!(is_ambiguous(path), "{path}");
    }
    for path in [
        "",
        "/",
        "/Users",
        "/Users/",
        "/Users/a%40b.example",
        "/scim/v2/Users/2819c223",
        "/Schemas/urn:x:y",
    ] {
        assert!(!is_ambiguous(path), "{path}");
    }
}

#[test]
fn bulk_bodies_with_duplicate_members_are_refused() {
    let dup_ops = br#"{"Operations":[{"method":"DELETE","path":"/Users/1"}],"Operations":[{"method":"POST","path":"/Users"}]}"#;
    let dup_method = br#"{"Operations":[{"method":"DELETE","path":"/Users","method":"POST"}]}"#;
    assert_eq!(bulk_operations(dup_ops), Err(InvalidBulk));
    assert_eq!(bulk_operations(dup_method), Err(InvalidBulk));
}
