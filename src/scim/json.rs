//! SCIM JSON as a SCIM server reads it: member names are case-insensitive (RFC 7643 §2.1), so
//! two names equal under ASCII case folding are one member said twice, and a body that says a
//! member twice is refused rather than read first-wins or last-wins.
//!
//! Member names must be ASCII (RFC 7643 §2.1 ATTRNAME, schema URNs): a non-ASCII name could fold
//! onto an ASCII one under a backend's Unicode case mapping (`ſ` upper-cases to `S`). The input
//! must be UTF-8 JSON with nothing before or after the value (no BOM, no comments): anything
//! scimgate cannot read with certainty is refused. Every body scimgate judges (`/Bulk` today)
//! goes through [`parse_object`].

use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

use crate::strict_json::{Names, StrictSeed};

/// Why a body is not strict SCIM JSON. The detail is for logs, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not strict SCIM JSON: {0}")]
pub(crate) struct InvalidJson(String);

/// Parses a SCIM JSON object (see the module docs for what is refused).
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, InvalidJson> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed(Names::ScimFolded)
        .deserialize(&mut de)
        .map_err(|e| InvalidJson(e.to_string()))?;
    de.end().map_err(|e| InvalidJson(e.to_string()))?;
    if let Value::Object(map) = value {
        Ok(map)
    } else {
        Err(InvalidJson("not an object".into()))
    }
}

/// The member `name` of a parsed object, compared case-insensitively (unique by construction).
pub(crate) fn member<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Whether every member name of `object` is one of `known` (case-insensitively).
pub(crate) fn only_members(object: &Map<String, Value>, known: &[&str]) -> bool {
    object
        .keys()
        .all(|k| known.iter().any(|n| n.eq_ignore_ascii_case(k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_case_insensitive_and_unique_under_folding() {
        let doc = parse_object(br#"{"Operations":[{"METHOD":"post"}]}"#).unwrap();
        let ops = member(&doc, "operations").unwrap();
        assert_eq!(
            member(ops[0].as_object().unwrap(), "method").unwrap(),
            "post"
        );
        for bad in [
            &br#"{"Operations":[],"operations":[]}"#[..],
            br#"{"a":{"Method":"GET","method":"DELETE"}}"#,
            br#"{"a":[{"x":1,"X":2}]}"#,
            br#"{"Oper\u0061tions":1,"OPERATIONS":2}"#,
            "{\"Operation\u{17f}\":1}".as_bytes(),
            "\u{feff}{\"a\":1}".as_bytes(),
            br#"{"a":1} // comment"#,
            br#"/* c */ {"a":1}"#,
            br#"{"a":1}{"b":2}"#,
            br#"{"a":"\ud800"}"#,
            b"[1]",
            b"\xff\xfe{\x00}\x00",
            b"",
        ] {
            assert!(
                parse_object(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_object(br#" {"a":"\u00e9","b":{"c":1}} "#).is_ok());
    }

    #[test]
    fn only_members_compares_folded() {
        let doc = parse_object(br#"{"SCHEMAS":[],"operations":[]}"#).unwrap();
        assert!(only_members(&doc, &["schemas", "Operations"]));
        assert!(!only_members(&doc, &["schemas"]));
    }
}
