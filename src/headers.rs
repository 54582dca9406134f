//! Step 4: header hygiene on the way up and down, and the service account's credential.
//!
//! Requests: only the fields a SCIM exchange needs reach the backend (an allow-list, plus the
//! names an operator adds in `server.forward_headers`); a list of what to remove could never
//! name every identity or override header some backend believes (threats T20–T24, T52). Then
//! ours are added, so a client cannot make us drop a header we set (RFC 9110 §7.6.1).

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{
    ACCEPT, ACCEPT_CHARSET, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CONNECTION, CONTENT_LANGUAGE,
    CONTENT_TYPE, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::config::ServiceAccount;

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the framing fields we always recompute. As
/// `HeaderName`s, so checking a field against them compares interned names, not text.
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Caller fields a SCIM exchange needs, forwarded when present: content negotiation
/// (RFC 7644 §3.1, §3.8), conditional requests (§3.14 ETags), the client's name for the
/// backend's logs, and W3C trace context. Framing is hyper's (recomputed from the body), and
/// the credential, request id and forwarding fields are set by scimgate.
const FORWARDED: [HeaderName; 12] = [
    ACCEPT,
    ACCEPT_CHARSET,
    ACCEPT_LANGUAGE,
    CONTENT_TYPE,
    CONTENT_LANGUAGE,
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    USER_AGENT,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The request-id header, kept when well-formed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Names forwarded from the caller; built once per config. A `HeaderMap` is the set: its
/// lookups hash standard names by index and the rest with a fast hasher, where a `HashSet<String>`
/// would run SipHash over every caller header on every request.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    forwarded: HeaderMap<()>,
}

/// What the connection tells us about the caller, for the forwarding headers.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The peer address as `X-Forwarded-For` text, built once per connection
    /// ([`forwarded_for`]).
    pub forwarded_for: HeaderValue,
    pub https: bool,
    /// The caller's `Host` or `:authority`, if it was a valid header value.
    pub host: Option<HeaderValue>,
    pub request_id: HeaderValue,
}

// === impl HeaderPolicy ===

impl HeaderPolicy {
    /// The built-in allow-list plus `server.forward_headers` (validated: none of them is a
    /// credential, framing, forwarding or override field).
    pub fn new(extra: &[HeaderName]) -> Self {
        let mut forwarded = HeaderMap::<()>::default();
        for name in FORWARDED.iter().chain(extra) {
            forwarded.insert(name.clone(), ());
        }
        Self { forwarded }
    }

    /// Removes every caller field not on the allow-list, and allowed ones that the caller's
    /// `Connection` nominates (hop-by-hop by nomination). The removed names are pushed to
    /// `dropped` when given (for the debug access line).
    pub fn strip_request(&self, headers: &mut HeaderMap, dropped: Option<&mut Vec<HeaderName>>) {
        let connection = Nominated::of(headers);
        let doomed: Doomed = headers
            .keys()
            .filter(|name| !self.forwarded.contains_key(*name) || connection.names(name.as_str()))
            .cloned()
            .collect();
        if let Some(dropped) = dropped {
            dropped.extend(doomed.iter().cloned());
        }
        remove_all(headers, &doomed);
    }
}

/// Sets the credential and forwarding headers after `strip_request`. `insert`, never `append`:
/// exactly one value of each reaches the upstream (threats T20).
pub fn set_upstream_headers(headers: &mut HeaderMap, account: &ServiceAccount, fwd: &Forwarding) {
    // Room for the six fields below at once, rather than growing the map twice.
    headers.reserve(6);
    headers.insert(account.header.clone(), account.value.clone());
    // The body of any response scimgate must read (errors, redirects) is screened for the key;
    // an identity coding is what it can read with certainty (see `screen`).
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    headers.insert(REQUEST_ID, fwd.request_id.clone());
    headers.insert(X_FORWARDED_FOR, fwd.forwarded_for.clone());
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if fwd.https { "https" } else { "http" }),
    );
    if let Some(host) = &fwd.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// The `X-Forwarded-For` value for a peer: its address alone (the caller's own
/// `X-Forwarded-For` is never relayed). Built once per connection, not per request.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    // Formatted on the stack: the longest IPv6 text is 45 bytes.
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let len = match write!(cursor, "{ip}") {
        Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Removes hop-by-hop and `Connection`-nominated fields from an upstream response.
pub fn strip_response(headers: &mut HeaderMap) {
    let connection = Nominated::of(headers);
    let doomed: Doomed = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || connection.names(name.as_str()))
        .cloned()
        .collect();
    remove_all(headers, &doomed);
}

/// Field names picked for removal, gathered before any is removed (a `HeaderMap` cannot be
/// changed while it is read). The usual few (host, credential, framing, encoding) stay on the
/// stack: stripping a message
/// allocates nothing.
type Doomed = SmallVec<[HeaderName; 8]>;

fn remove_all(headers: &mut HeaderMap, doomed: &Doomed) {
    for name in doomed {
        headers.remove(name);
    }
}

/// The caller's `x-request-id` when it is 1–128 visible ASCII characters of `[A-Za-z0-9._:-]`
/// (safe to log and echo), otherwise a fresh one (see [`fresh_request_id`]).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(REQUEST_ID).iter();
    if let (Some(v), None) = (values.next(), values.next()) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
        {
            return v.clone();
        }
    }
    fresh_request_id()
}

/// 32 hex digits: a per-process random half, then a per-request counter passed through a keyed
/// bijection. Unique within the process (the counter never repeats before 2^64 requests) and
/// across processes (the random half), without asking the system RNG on every request; the
/// mixing keeps the ids from reading as a request count. Ids are labels, not secrets.
pub fn fresh_request_id() -> HeaderValue {
    static SEED: OnceLock<[u64; 2]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let [process, key] = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // A failing system RNG leaves zeros: ids then stay unique per process, nothing else.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        [
            u64::from_le_bytes(a.try_into().unwrap_or_default()),
            u64::from_le_bytes(b.try_into().unwrap_or_default()),
        ]
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    crate::text::hex_into(&process.to_be_bytes(), &mut text[..16]);
    crate::text::hex_into(&mix(n ^ key).to_be_bytes(), &mut text[16..]);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The SplitMix64 finaliser: a bijection on u64, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The caller's host: HTTP/2 `:authority` (in the URI) or the HTTP/1 `Host` header.
pub fn caller_host(uri: &http::Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => headers.get(HOST).cloned(),
    }
}

/// The field names a message's `Connection` header lists (RFC 9110 §7.6.1), read in place:
/// there are seldom more than one or two, so a scan beats building a set per message.
struct Nominated<'h> {
    values: http::header::GetAll<'h, HeaderValue>,
    /// Every token is `keep-alive` or `close`, by far the usual `Connection` values: then a
    /// name is nominated exactly when it is one of those two, and no scan is needed.
    usual: bool,
}

impl<'h> Nominated<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let values = headers.get_all(CONNECTION);
        let usual = tokens(&values)
            .all(|t| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close"));
        Self { values, usual }
    }

    /// Whether `name` (lowercase, as `HeaderName` stores it) is listed, with `_` and `-` read
    /// alike and tokens compared case-insensitively.
    fn names(&self, name: &str) -> bool {
        // With only the usual tokens listed, no other name can match: skip the scan.
        if self.usual && name != "keep-alive" && name != "close" {
            return false;
        }
        tokens(&self.values).any(|t| same_field(t, name.as_bytes()))
    }
}

/// The comma-separated tokens of every `Connection` value, trimmed.
fn tokens<'a>(values: &'a http::header::GetAll<'_, HeaderValue>) -> impl Iterator<Item = &'a [u8]> {
    values
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

fn same_field(token: &[u8], name: &[u8]) -> bool {
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    token.len() == name.len() && token.iter().zip(name).all(|(&a, &b)| fold(a) == fold(b))
}

#[cfg(test)]
mod tests;
