//! The PATCH path grammar: every spelling a SCIM server resolves to an attribute, and what is
//! refused because it cannot be read with certainty.

use super::*;

fn attr(text: &str) -> (String, Option<u32>, bool) {
    match parse_path(text).unwrap_or_else(|e| panic!("{text}: {e}")) {
        Target::Attribute {
            path,
            filter,
            maybe_schema,
        } => (path.to_string(), filter, maybe_schema),
        Target::Schema => ("<schema>".into(), None, false),
    }
}

#[test]
fn paths_resolve_to_case_folded_attributes() {
    let cases = [
        ("active", "active", None, false),
        ("Active", "active", None, false),
        ("name.givenName", "name.givenname", None, false),
        ("NAME.GIVENNAME", "name.givenname", None, false),
        (
            r#"emails[type eq "work"].value"#,
            "emails.value",
            Some(1),
            false,
        ),
        (r#"emails[type eq "work"]"#, "emails", Some(1), false),
        (r#"members[value eq "a]b\"c"]"#, "members", Some(1), false),
        (
            r#"members[value eq "1" or value eq "2" or (value eq "3" and display pr)]"#,
            "members",
            Some(4),
            false,
        ),
        (
            r#"addresses[not (type EQ "work")].streetAddress"#,
            "addresses.streetaddress",
            Some(1),
            false,
        ),
        (
            r#"x509Certificates[primary eq true]"#,
            "x509certificates",
            Some(1),
            false,
        ),
        (
            r#"emails[type eq null and primary ne false]"#,
            "emails",
            Some(2),
            false,
        ),
        (r#"roles[value gt 1.5e3]"#, "roles", Some(1), false),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:active",
            "active",
            None,
            false,
        ),
        (
            "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:Active",
            "active",
            None,
            false,
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "manager",
            None,
            false,
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "manager.value",
            None,
            false,
        ),
        (
            "urn:ietf:params:scim:schemas:extension:CustomExt:2.0:User:roles",
            "roles",
            None,
            true,
        ),
        (
            r#"urn:acme:ext:entitlements[value eq "a:b"].display"#,
            "entitlements.display",
            Some(1),
            true,
        ),
        ("members.$ref", "members.$ref", None, false),
    ];
    for (text, want, filter, maybe_schema) in cases {
        assert_eq!(
            attr(text),
            (want.to_owned(), filter, maybe_schema),
            "{text}"
        );
    }
    for schema in [
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:user",
    ] {
        assert_eq!(parse_path(schema), Ok(Target::Schema), "{schema}");
    }
}

#[test]
fn what_cannot_be_read_with_certainty_is_refused() {
    for bad in [
        "",
        " active",
        "active ",
        "active.",
        ".active",
        "1active",
        "name.givenName.x",
        "name..givenName",
        "name/givenName",
        "active\u{0}",
        "aktív",
        "emails[",
        "emails[]",
        r#"emails[type eq "work""#,
        r#"emails[type eq "work"]x"#,
        r#"emails[type eq "work"][value eq "x"]"#,
        r#"emails[type eq work]"#,
        r#"emails[type eq "work]"#,
        r#"emails[type  "work"]"#,
        r#"emails[type xx "work"]"#,
        r#"emails[type eq"work"]"#,
        r#"emails[type eq "work"and value pr]"#,
        r#"emails[type eq "a" or]"#,
        r#"emails[(type eq "a"]"#,
        r#"emails[type eq "a")]"#,
        r#"emails[type[value eq "x"] pr]"#,
        r#"emails[type eq "\x"]"#,
        "emails[type\teq \"a\"]",
        r#"name.givenName[value pr]"#,
        r#"emails[type eq "work"].value.x"#,
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User[value pr]",
        "urn:",
        "urn:x",
        "urn::x:active",
        "urn:a b:c:active",
        "urn:a:b:",
        "urn:a:b:2.0",
    ] {
        assert!(parse_path(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn configured_names() {
    assert_eq!(
        AttrPath::parse_name("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:Manager")
            .unwrap()
            .to_string(),
        "manager"
    );
    assert_eq!(
        AttrPath::parse_name("Name.GivenName").unwrap().to_string(),
        "name.givenname"
    );
    assert!(AttrPath::parse_name(r#"emails[type eq "work"]"#).is_err());
    assert!(
        AttrPath::parse_name("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").is_err()
    );
    assert!(AttrPath::parse_name("pass word").is_err());
}

#[test]
fn what_a_denied_attribute_covers() {
    let p = |t: &str| AttrPath::parse_name(t).unwrap();
    let cases = [
        ("name", "name", true),
        ("name", "name.givenName", true),
        ("name.givenName", "name", true),
        ("name.givenName", "name.givenName", true),
        ("name.givenName", "name.familyName", false),
        ("emails.value", "emails", true),
        ("emails.value", "emails.type", false),
        ("emails", "emails.type", true),
        ("roles", "rolesx", false),
        ("roles", "entitlements", false),
    ];
    for (denied, touched, want) in cases {
        assert_eq!(p(denied).covers(&p(touched)), want, "{denied} vs {touched}");
    }
    assert!(p("password").covers(&AttrPath::any()));
}
