//! Step 1: the `Authorization` header → the bearer token (RFC 6750 §2.1).

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::{AuthError, TokenRejection};

/// Tokens above this size are rejected before any base64 or JSON work (threats T12).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Extracts the token from exactly one `Authorization: Bearer <token>` header.
///
/// The scheme is case-insensitive and may be followed by one or more spaces (RFC 6750 §2.1,
/// `1*SP`). A request with another scheme (`Basic`) carries no bearer credential, so it is
/// `MissingToken` (RFC 6750 §3.1). The token must be a `b64token`; anything else is malformed.
/// Every check runs on every request, before the token is looked up anywhere.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let malformed = AuthError::InvalidToken(TokenRejection::Malformed);
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::DuplicateAuthorization);
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        return Err(if bytes.eq_ignore_ascii_case(b"bearer") {
            malformed
        } else {
            AuthError::MissingToken
        });
    };
    if !bytes[..space].eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = trim_leading_spaces(&bytes[space..]);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::InvalidToken(TokenRejection::TooLarge));
    }
    if !is_b64token(token) {
        return Err(malformed);
    }
    // is_b64token admits ASCII only, so this cannot fail; stay total anyway.
    std::str::from_utf8(token).map_err(|_| malformed)
}

fn trim_leading_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 6750 §2.1).
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    // Every token the cache has not seen passes through here: range tests combined without
    // short-circuits and folded the same way, which the compiler turns into a vector loop.
    body_len > 0
        && token[..body_len]
            .iter()
            .fold(true, |ok, &b| ok & is_b64token_byte(b))
}

fn is_b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn accepts_bearer_in_any_case_with_spaces() {
        for v in [&b"Bearer a.b.c"[..], b"bearer a.b.c", b"BEARER   a.b.c"] {
            assert_eq!(bearer_token(&headers(&[v])), Ok("a.b.c"));
        }
    }

    #[test]
    fn classifies_bad_forms() {
        let malformed = Err(AuthError::InvalidToken(TokenRejection::Malformed));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(&headers(&[b"Basic dXNlcjpwYXNz"])),
            Err(AuthError::MissingToken)
        );
        assert_eq!(bearer_token(&headers(&[b"Bearer"])), malformed);
        assert_eq!(bearer_token(&headers(&[b"Bearer "])), malformed);
        assert_eq!(bearer_token(&headers(&[b"Bearer a b"])), malformed);
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a.b.c, Bearer d"])),
            malformed
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer\ta.b.c"])),
            Err(AuthError::MissingToken)
        );
        assert_eq!(bearer_token(&headers(&[b"Bearer \xff"])), malformed);
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a.b.c", b"Bearer a.b.c"])),
            Err(AuthError::DuplicateAuthorization)
        );
    }

    #[test]
    fn rejects_oversized_tokens_before_parsing() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            bearer_token(&headers(&[big.as_bytes()])),
            Err(AuthError::InvalidToken(TokenRejection::TooLarge))
        );
    }

    #[test]
    fn b64token_bytes_are_exactly_the_rfc_6750_set() {
        for b in 0..=u8::MAX {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), expected, "byte {b:#04x}");
        }
    }
}
