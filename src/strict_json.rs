//! JSON parsing that refuses members said twice, for the two kinds of document scimgate judges.
//!
//! `serde_json::Value` keeps the last of two equal keys, so a token carrying
//! `"groups":"x","groups":"admins"` would be read differently by us and by other parsers. Token
//! claims compare names exactly (RFC 7519 §4, RFC 7515 §4); SCIM bodies compare them ASCII
//! case-insensitively and allow only ASCII names (RFC 7643 §2.1, see `scim::json`).

use std::fmt;

use std::collections::BTreeSet;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How member names are compared when looking for one said twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Names {
    /// Byte-for-byte (JOSE headers, JWT claims).
    Exact,
    /// ASCII case-insensitively; a non-ASCII name is refused (SCIM bodies).
    ScimFolded,
}

/// Deserializes a JSON value in which no object, at any depth, repeats a member name.
#[derive(Clone, Copy)]
pub(crate) struct StrictSeed(pub(crate) Names);

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate object members")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        // Folded names seen so far: a set, so an object with many members costs n log n.
        let mut folded = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let repeated = match self.0 {
                Names::Exact => out.contains_key(&key),
                Names::ScimFolded => {
                    if !key.is_ascii() {
                        return Err(de::Error::custom("non-ASCII member name"));
                    }
                    !folded.insert(key.to_ascii_lowercase())
                }
            };
            if repeated {
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A JSON value in which no object, at any depth, repeats a member name (exact comparison), as
/// a type for decoders that take one (jsonwebtoken's claims).
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StrictSeed(Names::Exact)
            .deserialize(deserializer)
            .map(StrictValue)
    }
}

/// Parses bytes as a JSON object with unique member names at every depth (exact comparison).
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match StrictSeed(Names::Exact).deserialize(&mut de) {
        Ok(Value::Object(map)) if de.end().is_ok() => Some(map),
        Ok(_) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_some());
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_none());
        assert!(parse_object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(parse_object(br#"{"a":[{"b":1,"b":2}]}"#).is_none());
        assert!(parse_object(br#"{"r\u006fle":1,"role":2}"#).is_none());
        assert!(parse_object(b"[1]").is_none());
        assert!(parse_object(br#"{"a":1} x"#).is_none());
    }
}
