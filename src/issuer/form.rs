//! The token request's wire forms, read strictly: the form body, its media type, HTTP Basic.
//!
//! RFC 6749 §3.2 forbids a parameter twice, and a parameter that two readers could see
//! differently (a bad `%` escape, bytes that are no UTF-8, a name spelled with escapes) is
//! refused rather than repaired: lenient decoders replace bad bytes with U+FFFD, which would make
//! two different requests equal.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

/// Token requests are a few parameters and one assertion of a few KiB; this is far above.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Parameters beyond this many are not a token request.
const MAX_PARAMS: usize = 32;

/// Why a request's form, media type or Basic credentials could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FormError {
    /// A `%` not followed by two hex digits, a segment without `=`, no UTF-8, too many.
    Malformed,
    /// One name twice, after decoding (RFC 6749 §3.2).
    Duplicate,
}

/// A decoded form: each name once.
#[derive(Debug, Default)]
pub(super) struct Form {
    params: BTreeMap<String, String>,
}

impl Form {
    /// Parses `application/x-www-form-urlencoded` (WHATWG URL §5.1, without its repairs).
    /// Empty segments (`a=1&&b=2`, a trailing `&`) carry nothing and are skipped.
    pub(super) fn parse(body: &[u8]) -> Result<Self, FormError> {
        let mut params = BTreeMap::new();
        for segment in body.split(|&b| b == b'&').filter(|s| !s.is_empty()) {
            let eq = segment
                .iter()
                .position(|&b| b == b'=')
                .ok_or(FormError::Malformed)?;
            let name = decode(&segment[..eq])?;
            let value = decode(&segment[eq + 1..])?;
            if params.len() == MAX_PARAMS {
                return Err(FormError::Malformed);
            }
            if params.insert(name, value).is_some() {
                return Err(FormError::Duplicate);
            }
        }
        Ok(Self { params })
    }

    /// The value of `name`. A parameter sent without a value is treated as omitted
    /// (RFC 6749 §3.2), so `Some` is never empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Percent-decoding with `+` as space, refusing a bad escape or bytes that are no UTF-8.
pub(super) fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |at: usize| raw.get(at).and_then(|&c| char::from(c).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(FormError::Malformed);
                };
                out.push(u8::try_from(hi * 16 + lo).map_err(|_| FormError::Malformed)?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Malformed)
}

/// Whether the one `Content-Type` is `application/x-www-form-urlencoded`, optionally with
/// `charset=utf-8` (the only charset RFC 6749 Appendix B uses), and the body is not encoded.
pub(super) fn is_form_content(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return false;
    };
    if headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return false;
    }
    parts.all(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
    })
}

/// What the `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Authorization {
    None,
    /// RFC 7617 Basic with the client id and secret, each form-decoded (RFC 6749 §2.3.1).
    Basic {
        id: String,
        secret: String,
    },
    /// More than one `Authorization` field.
    Several,
    /// A scheme other than Basic, or Basic credentials that do not decode.
    Unusable,
}

/// Reads the `Authorization` header as RFC 6749 §2.3.1 client credentials.
pub(super) fn authorization(headers: &HeaderMap) -> Authorization {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Authorization::None;
    };
    if values.next().is_some() {
        return Authorization::Several;
    }
    basic(value.as_bytes()).unwrap_or(Authorization::Unusable)
}

fn basic(value: &[u8]) -> Option<Authorization> {
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let mut credentials = &value[space..];
    while let [b' ', rest @ ..] = credentials {
        credentials = rest;
    }
    let decoded = STANDARD.decode(credentials).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let id = decode(&decoded[..colon]).ok()?;
    let secret = decode(&decoded[colon + 1..]).ok()?;
    Some(Authorization::Basic { id, secret })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn decodes_names_and_values_and_treats_empty_as_omitted() {
        let form =
            Form::parse(b"grant%5Ftype=client_credentials&scope=a+b%20c&client_id=&&").unwrap();
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), Some("a b c"));
        assert_eq!(
            form.get("client_id"),
            None,
            "RFC 6749 §3.2: no value = omitted"
        );
        assert_eq!(form.get("absent"), None);
    }

    /// The attacker's duplicates: the same name twice, once spelled with escapes, once empty.
    #[test]
    fn refuses_a_parameter_twice_however_spelled() {
        for body in [
            &b"grant_type=client_credentials&grant_type=password"[..],
            b"grant_type=password&grant%5Ftype=client_credentials",
            b"scope=&scope=admin",
            b"client_id=a&client%5fid=b",
        ] {
            assert_eq!(
                Form::parse(body).err(),
                Some(FormError::Duplicate),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Whatever a lenient decoder would repair: bad escapes, invalid or overlong UTF-8, no `=`.
    #[test]
    fn refuses_what_a_lenient_decoder_would_repair() {
        for body in [
            &b"client_id=a%"[..],
            b"client_id=a%2",
            b"client_id=a%zz",
            b"client_id=%ff",
            b"client_id=%c0%af",
            b"client_id=\xff",
            b"grant_type",
            b"a=1&b",
        ] {
            assert_eq!(
                Form::parse(body).err(),
                Some(FormError::Malformed),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=x")).collect();
        assert_eq!(
            Form::parse(many.join("&").as_bytes()).err(),
            Some(FormError::Malformed)
        );
    }

    #[test]
    fn content_type_is_the_form_type_with_at_most_utf8() {
        let check = |values: &[&str], encoding: Option<&str>| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            if let Some(e) = encoding {
                h.insert(CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
            }
            is_form_content(&h)
        };
        assert!(check(&["application/x-www-form-urlencoded"], None));
        assert!(check(
            &["Application/X-WWW-Form-URLEncoded ; charset=\"UTF-8\""],
            None
        ));
        assert!(check(
            &["application/x-www-form-urlencoded"],
            Some("identity")
        ));
        assert!(!check(&[], None));
        assert!(!check(&["application/json"], None));
        assert!(!check(&["multipart/form-data; boundary=x"], None));
        assert!(!check(
            &["application/x-www-form-urlencoded; charset=iso-8859-1"],
            None
        ));
        assert!(!check(
            &["application/x-www-form-urlencoded; boundary=x"],
            None
        ));
        assert!(!check(
            &["application/x-www-form-urlencoded", "application/json"],
            None
        ));
        assert!(!check(&["application/x-www-form-urlencoded"], Some("gzip")));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = |v: &str| {
            let mut h = HeaderMap::new();
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        let basic = |raw: &str| header(&format!("Basic {}", STANDARD.encode(raw)));
        assert_eq!(
            authorization(&basic("entra%2Dwif:s%3Ac+r")),
            Authorization::Basic {
                id: "entra-wif".into(),
                secret: "s:c r".into()
            }
        );
        assert_eq!(
            authorization(&header(&format!("bAsIc   {}", STANDARD.encode("a:b")))),
            Authorization::Basic {
                id: "a".into(),
                secret: "b".into()
            }
        );
        assert_eq!(authorization(&HeaderMap::new()), Authorization::None);
        for unusable in [
            header("Bearer abc"),
            header("Basic"),
            header("Basic !!!"),
            basic("no-colon"),
            basic("id:%zz"),
            basic("%ff:secret"),
        ] {
            assert_eq!(
                authorization(&unusable),
                Authorization::Unusable,
                "{unusable:?}"
            );
        }
        let mut two = basic("a:b");
        two.append(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(authorization(&two), Authorization::Several);
    }
}
