//! One HTTP/1 request head, read with the parser and settings hyper uses (httparse, default
//! config, 100 fields) so that both see the same head, the same fields and the same end. What
//! hyper would refuse with a bare status is refused here first, with a reason; the query bytes
//! the `http` crate refuses but real clients send are percent-encoded on the way.

use std::mem::MaybeUninit;

use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::error::HeadError;

/// Largest request head accepted, in bytes, before and after escaping. hyper's read buffer
/// (`server.rs`, `max_buf_size`) must be at least this large, so that it never answers 431
/// itself.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one head: hyper's default, past which it would answer 431 itself.
const MAX_FIELDS: usize = 100;
/// Largest Content-Length hyper takes (its `DecodedLength::MAX_LEN`).
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete head that may pass.
#[derive(Debug)]
pub(super) struct Head {
    /// Its length in the input, leading empty lines included.
    pub len: usize,
    pub framing: Framing,
    /// The head to pass on instead, when its query had bytes to escape.
    pub rewritten: Option<Vec<u8>>,
}

/// Reads the head at the start of `input`: `Ok(None)` while it is incomplete.
pub(super) fn read(input: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(input, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    // hyper builds an `http::Method` next; both take any token today, checked here for drift.
    Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    let framing = framing(version, req.headers)?;
    let Some(escaped) = check_target(target.as_bytes())? else {
        return Ok(Some(Head {
            len,
            framing,
            rewritten: None,
        }));
    };
    let start = target.as_ptr().addr() - input.as_ptr().addr();
    let mut head = Vec::with_capacity(len + escaped.len() - target.len());
    head.extend_from_slice(&input[..start]);
    head.extend_from_slice(&escaped);
    head.extend_from_slice(&input[start + target.len()..len]);
    if head.len() > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    Ok(Some(Head {
        len,
        framing,
        rewritten: Some(head),
    }))
}

/// The body framing of a request with these fields, refusing every combination on which two
/// HTTP implementations could disagree (RFC 9112 §6.3): more than one Content-Length field,
/// a Content-Length that is not plain digits, Content-Length together with Transfer-Encoding
/// (which hyper would decode as chunked), a Transfer-Encoding other than one field that says
/// exactly `chunked`, and Transfer-Encoding on HTTP/1.0. What passes is framed as hyper frames it.
fn framing(version: u8, fields: &[httparse::Header<'_>]) -> Result<Framing, HeadError> {
    let (mut lengths, mut length) = (0u32, None);
    let (mut encodings, mut chunked) = (0u32, false);
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = digits(field.value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            chunked = field.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    match (lengths, encodings) {
        (0, 0) => Ok(Framing::Length(0)),
        (1, 0) => length.map(Framing::Length).ok_or(HeadError::Framing),
        (0, 1) if chunked && version == 1 => Ok(Framing::Chunked),
        _ => Err(HeadError::Framing),
    }
}

/// A Content-Length value as hyper reads it: ASCII digits only (no sign, no list, no spaces:
/// httparse has already trimmed the field's surrounding whitespace).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

/// RFC 3986 characters that may appear in a path or query as they are (unreserved, sub-delims,
/// `:` `@` `/` `?` and `%`): the `http` crate takes every one of them in both parts.
const fn plain_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        i += 1;
    }
    t
}
static PLAIN: [bool; 256] = plain_table();

/// The longest target the `http` crate parses.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Checks a request target: `Ok(None)` when it passes as it is, `Ok(Some(escaped))` when it
/// passes with `"` `<` `>` `#` in its query percent-encoded (`%22` `%3C` `%3E` `%23`).
///
/// - In the query of an origin-form target (`/path?query`), every byte hyper takes passes:
///   RFC 3986 characters and `` ` `` `{` `|` `}` `^` `[` `]` `\` as they are, UTF-8 as it is.
///   `"` `<` `>` cannot pass raw (the `http` crate refuses them, and hyper would answer a bare
///   400), and a raw `#` would make it drop the rest of the query as a fragment: these are
///   escaped. A server decodes the escape to the same byte, so the query means what the
///   client sent; the query never takes part in authorization.
/// - In the path, and anywhere in other target forms, ASCII outside RFC 3986 is refused: the
///   path decides the SCIM operation and resource type, and a byte that servers may read in
///   different ways (`\`, `|`, `"`, `[`, a raw `#`) must not reach that decision.
/// - Whatever passes is then parsed by the `http` crate here, exactly as hyper will parse it
///   (UTF-8, length, structure), so hyper never refuses a head this module let through.
fn check_target(target: &[u8]) -> Result<Option<Vec<u8>>, HeadError> {
    if target.first() == Some(&b'/')
        && target.len() <= MAX_TARGET
        && target.iter().all(|&b| PLAIN[usize::from(b)])
    {
        return Ok(None);
    }
    let escaped = escape_query(target)?;
    let checked = escaped.as_deref().unwrap_or(target);
    if checked.len() > MAX_TARGET {
        // Only escaping can grow a target this far, and the head with it past the limit.
        return Err(HeadError::TooLarge);
    }
    Uri::try_from(checked).map_err(|_| HeadError::Target)?;
    Ok(escaped)
}

/// The target with its query's `"` `<` `>` `#` escaped (`None`: nothing to escape); refuses
/// ASCII outside RFC 3986 anywhere else.
fn escape_query(target: &[u8]) -> Result<Option<Vec<u8>>, HeadError> {
    let split = if target.first() == Some(&b'/') {
        target.iter().position(|&b| b == b'?')
    } else {
        None
    };
    let (path, query) = match split {
        Some(q) => target.split_at(q + 1),
        None => (target, &[][..]),
    };
    if path.iter().any(|&b| b.is_ascii() && !PLAIN[usize::from(b)]) {
        return Err(HeadError::Target);
    }
    let escapes = query
        .iter()
        .filter(|&&b| matches!(b, b'"' | b'<' | b'>' | b'#'))
        .count();
    if escapes == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(target.len() + 2 * escapes);
    out.extend_from_slice(path);
    for &b in query {
        match b {
            b'"' => out.extend_from_slice(b"%22"),
            b'<' => out.extend_from_slice(b"%3C"),
            b'>' => out.extend_from_slice(b"%3E"),
            b'#' => out.extend_from_slice(b"%23"),
            _ => out.push(b),
        }
    }
    Ok(Some(out))
}

/// What could be read of a refused head, for its access line.
#[derive(Debug, Default)]
pub(super) struct Described {
    pub method: Option<Method>,
    pub target: Option<Uri>,
    pub request_id: Option<HeaderValue>,
}

/// Reads what it can of a head that was refused (cold path: it parses again).
pub(super) fn describe(input: &[u8]) -> Described {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let complete = matches!(req.parse(input), Ok(httparse::Status::Complete(_)));
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let target = req.path.and_then(|t| {
        let t = t.as_bytes();
        let escaped = escape_query(t).ok().flatten();
        Uri::try_from(escaped.as_deref().unwrap_or(t)).ok()
    });
    let request_id = complete.then(|| {
        let mut ids = HeaderMap::new();
        for field in req.headers.iter() {
            if field
                .name
                .eq_ignore_ascii_case(crate::headers::REQUEST_ID.as_str())
                && let Ok(value) = HeaderValue::from_bytes(field.value)
            {
                ids.append(crate::headers::REQUEST_ID, value);
            }
        }
        crate::headers::request_id(&ids)
    });
    Described {
        method,
        target,
        request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, HeadError> {
        read(text.as_bytes())
    }

    fn target_of(h: &Head) -> String {
        let text = String::from_utf8(h.rewritten.clone().unwrap()).unwrap();
        text.split(' ').nth(1).unwrap().to_owned()
    }

    #[test]
    fn framing_follows_rfc9112_and_refuses_what_is_ambiguous() {
        let f = |fields: &str| {
            head(&format!("POST / HTTP/1.1\r\n{fields}\r\n"))
                .map(|h| h.map(|h| h.framing))
                .map(Option::unwrap)
        };
        assert_eq!(f(""), Ok(Framing::Length(0)));
        assert_eq!(f("Content-Length: 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(f("content-length:\t002 \r\n"), Ok(Framing::Length(2)));
        assert_eq!(f("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(f("transfer-encoding:\tCHUNKED\r\n"), Ok(Framing::Chunked));
        for refused in [
            "Content-Length: 2\r\nContent-Length: 2\r\n",
            "Content-Length: 2, 2\r\n",
            "Content-Length: +2\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x2\r\n",
            "Content-Length: 2 2\r\n",
            "Content-Length: \r\n",
            "Content-Length: 18446744073709551614\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
        ] {
            assert_eq!(f(refused), Err(HeadError::Framing), "{refused:?}");
        }
        assert_eq!(
            f("Content-Length: 18446744073709551613\r\n"),
            Ok(Framing::Length(u64::MAX - 2))
        );
        assert_eq!(
            head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").map(|h| h.is_some()),
            Err(HeadError::Framing)
        );
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused_with_their_reason() {
        for malformed in [
            "GET /Users HTTP/2.0\r\n\r\n",
            "GET /Users x HTTP/1.1\r\n\r\n",
            "GET  /Users HTTP/1.1\r\n\r\n",
            "GET /Users HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET /Users HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET /Users HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            "GET /Users HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "G(T /Users HTTP/1.1\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03",
        ] {
            assert_eq!(
                head(malformed).map(|h| h.is_some()),
                Err(HeadError::Malformed),
                "{malformed:?}"
            );
        }
        let fields = "X: y\r\n".repeat(101);
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{fields}\r\n")).map(|h| h.is_some()),
            Err(HeadError::TooLarge)
        );
        let fields = "X: y\r\n".repeat(100);
        assert!(matches!(
            head(&format!("GET / HTTP/1.1\r\n{fields}\r\n")),
            Ok(Some(_))
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&big).map(|h| h.is_some()), Err(HeadError::TooLarge));
        assert!(matches!(head(&big[..MAX_HEAD_BYTES - 1]), Ok(None)));
        // Exactly at the limit passes; one byte more is refused.
        let pad = |n: usize| {
            let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(n - fixed))
        };
        assert!(matches!(head(&pad(MAX_HEAD_BYTES)), Ok(Some(_))));
        assert_eq!(
            head(&pad(MAX_HEAD_BYTES + 1)).map(|h| h.is_some()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn heads_are_incomplete_until_the_empty_line() {
        let full = "\r\nGET /Users HTTP/1.1\r\nHost: gw\r\n\r\n";
        for cut in 0..full.len() {
            assert!(matches!(head(&full[..cut]), Ok(None)), "cut at {cut}");
        }
        let h = head(full).unwrap().unwrap();
        assert_eq!(h.len, full.len());
        assert!(h.rewritten.is_none());
        let h = head(&format!("{full}{{}}")).unwrap().unwrap();
        assert_eq!(h.len, full.len());
    }

    #[test]
    fn query_bytes_real_clients_send_raw_pass_or_are_escaped() {
        // Entra ID's lookup with raw quotes: escaped, everything else byte-exact.
        let h = head("GET /Users?filter=externalId+eq+\"9edf\" HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(target_of(&h), "/Users?filter=externalId+eq+%229edf%22");
        let h = head("GET /Users?filter=a\"<>#b&x=`{|}^[]\\ HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(target_of(&h), "/Users?filter=a%22%3C%3E%23b&x=`{|}^[]\\");
        // The rewritten head is the original with only the target changed.
        let raw = "GET /Users?filter=\"x\" HTTP/1.1\r\nHost: gw\r\n\r\n";
        let h = head(raw).unwrap().unwrap();
        assert_eq!(h.len, raw.len());
        assert_eq!(
            h.rewritten.unwrap(),
            b"GET /Users?filter=%22x%22 HTTP/1.1\r\nHost: gw\r\n\r\n"
        );
        for plain in [
            "/Users?filter=userName%20eq%20%22a%22&startIndex=1&count=100",
            "/Users?filter=userName+eq+%22a%22",
            "/Users?filter=emails[type+eq+\u{60}work\u{60}]",
            "/Users?filter=displayName+eq+Zo\u{eb}",
            "/Users/2819c223-7f76-453a-919d-413861904646",
            "/Users?",
            "*",
        ] {
            let h = head(&format!("GET {plain} HTTP/1.1\r\n\r\n"))
                .unwrap()
                .unwrap();
            assert!(h.rewritten.is_none(), "{plain}");
        }
    }

    #[test]
    fn path_bytes_outside_rfc3986_are_refused() {
        for target in [
            "/Users/a\"b",
            "/Users/a|b",
            "/Users\\Me",
            "/Users/{id}",
            "/Users/[x]",
            "/Users/a^b",
            "/Users/a`b",
            "/Users/a<b",
            "/healthz#/../Users",
            "/Users#?x=\"",
            "http://h/Users?filter=\"x\"",
            "http://h/Us|ers",
        ] {
            assert_eq!(
                head(&format!("GET {target} HTTP/1.1\r\n\r\n")).map(|h| h.is_some()),
                Err(HeadError::Target),
                "{target:?}"
            );
        }
        // Not UTF-8 (a raw Latin-1 byte), in the path or the query: httparse refuses it.
        for raw in [
            &b"GET /Users/\xe9 HTTP/1.1\r\n\r\n"[..],
            b"GET /Users?x=\xe9 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(read(raw).map(|h| h.is_some()), Err(HeadError::Malformed));
        }
        // UTF-8 in the path passes as the `http` crate takes it; so does an absolute form.
        assert!(matches!(
            head("GET /Users/Zo\u{eb} HTTP/1.1\r\n\r\n"),
            Ok(Some(_))
        ));
        assert!(matches!(
            head("GET http://h/Users?filter=x HTTP/1.1\r\n\r\n"),
            Ok(Some(_))
        ));
    }

    /// Whatever `check_target` lets through, the `http` crate (and so hyper) parses: a path
    /// byte-exact, a query that decodes to the bytes the client sent. Every byte httparse takes
    /// in a target is tried, in the path and in the query.
    #[test]
    fn what_passes_parses_in_http_as_it_will_in_hyper() {
        let mut candidates: Vec<Vec<u8>> = (0x21..=0x7e).map(|b| vec![b]).collect();
        candidates.push("\u{e9}".as_bytes().to_vec());
        for c in &candidates {
            for in_query in [false, true] {
                if !in_query && c[..] == *b"?" {
                    continue;
                }
                let mut target = b"/Users".to_vec();
                if in_query {
                    target.extend_from_slice(b"?filter=");
                }
                target.extend_from_slice(c);
                match check_target(&target) {
                    Ok(escaped) => {
                        let sent = escaped.clone().unwrap_or_else(|| target.clone());
                        let uri = Uri::try_from(sent.as_slice()).expect("passes in http");
                        if in_query {
                            assert_eq!(uri.path(), "/Users");
                            let query = uri.query().expect("query").as_bytes();
                            assert_eq!(percent_decode(query), &target[7..], "{c:?}");
                        } else {
                            assert_eq!(uri.path().as_bytes(), &target[..], "{c:?}");
                            assert!(escaped.is_none());
                        }
                    }
                    Err(e) => {
                        assert_eq!(e, HeadError::Target);
                        assert!(!in_query, "query byte {c:?} refused");
                        assert!(c.is_ascii() && !PLAIN[usize::from(c[0])], "{c:?}");
                    }
                }
            }
        }
    }

    fn percent_decode(s: &[u8]) -> Vec<u8> {
        let hex = |b: u8| char::from(b).to_digit(16);
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
                s[i],
                s.get(i + 1).map(|&b| hex(b)),
                s.get(i + 2).map(|&b| hex(b)),
            ) {
                out.push(u8::try_from(hi * 16 + lo).unwrap());
                i += 3;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn the_plain_set_is_taken_by_http_in_path_and_query() {
        for b in 0..=255u8 {
            if PLAIN[usize::from(b)] && b != b'?' {
                let path = [b'/', b];
                assert!(Uri::try_from(&path[..]).is_ok(), "path {b:#x}");
                let query = [b'/', b'?', b];
                assert!(Uri::try_from(&query[..]).is_ok(), "query {b:#x}");
            }
        }
    }

    #[test]
    fn refused_heads_are_described_for_the_access_line() {
        let d = describe(b"POST /Users?filter=\"x\" HTTP/1.1\r\nX-Request-Id: abc-1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(d.method, Some(Method::POST));
        assert_eq!(d.target.unwrap(), "/Users?filter=%22x%22");
        assert_eq!(d.request_id.unwrap(), "abc-1");
        let d = describe(b"\x16\x03\x01\x02\x00");
        assert!(d.method.is_none() && d.target.is_none() && d.request_id.is_none());
        // An invalid X-Request-Id is replaced, as for any other request.
        let d = describe(b"GET / HTTP/1.1\r\nX-Request-Id: a b\r\nX-Folded: a\r\n b\r\n\r\n");
        assert!(d.request_id.is_none());
        let d = describe(b"GET / HTTP/1.1\r\nX-Request-Id: a\"b\r\n\r\n");
        assert_ne!(d.request_id.unwrap(), "a\"b");
    }
}
