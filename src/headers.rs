//! Step 4: header hygiene on the way up and down, and the service account's credential.
//!
//! Requests: remove everything the caller must not control (its credential, every service
//! account's credential header in any spelling, hop-by-hop and `Connection`-nominated fields,
//! forwarding and method-override headers), *then* add ours, so a client cannot make us drop
//! a header we set (RFC 9110 §7.6.1; threats T20–T24).

use std::collections::HashSet;
use std::net::IpAddr;

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::ServiceAccount;

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the framing fields we always recompute.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Caller-supplied fields that would let it speak for us: credentials, identity, routing.
const SPOOFABLE: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-request-id",
    // Identity headers other auth proxies set for their upstreams (threats T21).
    "remote-user",
    "x-remote-user",
    "x-user",
    "x-email",
    "x-authenticated-userid",
    "x-auth-token",
    "api-key",
    "apikey",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// The request-id header, kept when well-formed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Names removed from every request, normalised (lowercase, `_` read as `-`); built once per config.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    removed: HashSet<String>,
}

/// What the connection tells us about the caller, for the forwarding headers.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub peer_ip: IpAddr,
    pub https: bool,
    /// The caller's `Host` or `:authority`, if it was a valid header value.
    pub host: Option<HeaderValue>,
    pub request_id: HeaderValue,
}

// === impl HeaderPolicy ===

impl HeaderPolicy {
    /// Every service account's credential header joins the fixed list: a caller must not be
    /// able to send a key for another account, or the same key twice.
    pub fn new<'a>(accounts: impl IntoIterator<Item = &'a ServiceAccount>) -> Self {
        let mut removed: HashSet<String> = HOP_BY_HOP
            .iter()
            .chain(SPOOFABLE)
            .map(|s| (*s).to_owned())
            .collect();
        removed.extend(accounts.into_iter().map(|a| normalise(a.header.as_str())));
        Self { removed }
    }

    /// Removes caller headers per the policy, including every name listed in `Connection`.
    pub fn strip_request(&self, headers: &mut HeaderMap) {
        let nominated = connection_nominated(headers);
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                let name = name.as_str();
                // `_` names are dropped outright (as nginx does): WSGI/PHP backends read
                // `X_Forwarded_User` as `X-Forwarded-User` (CVE-2025-64484). Every
                // `x-forwarded-*` is ours to set, not the caller's.
                name.contains('_')
                    || name.starts_with("x-forwarded-")
                    || listed(&self.removed, name)
                    || listed(&nominated, name)
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
    }
}

/// Sets the credential and forwarding headers after `strip_request`. `insert`, never `append`:
/// exactly one value of each reaches the upstream (threats T20).
pub fn set_upstream_headers(headers: &mut HeaderMap, account: &ServiceAccount, fwd: &Forwarding) {
    headers.insert(account.header.clone(), account.value.clone());
    headers.insert(REQUEST_ID, fwd.request_id.clone());
    if let Ok(ip) = HeaderValue::from_str(&fwd.peer_ip.to_string()) {
        headers.insert(X_FORWARDED_FOR, ip);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if fwd.https { "https" } else { "http" }),
    );
    if let Some(host) = &fwd.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Removes hop-by-hop and `Connection`-nominated fields from an upstream response.
pub fn strip_response(headers: &mut HeaderMap) {
    let nominated = connection_nominated(headers);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()) || listed(&nominated, name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Drops upstream response headers that carry the service account's key (an upstream that
/// echoes request headers, e.g. in a debug header, must not hand the key to the caller).
pub fn strip_echoed_key(headers: &mut HeaderMap, key: &[u8]) {
    if key.is_empty() {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes().windows(key.len()).any(|w| w == key))
        .map(|(n, _)| n.clone())
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// The caller's `x-request-id` when it is 1–128 visible ASCII characters of `[A-Za-z0-9._:-]`
/// (safe to log and echo), otherwise a fresh random one.
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
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves zeros: the id then only loses uniqueness, nothing else.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    HeaderValue::from_str(&hex(&bytes)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The caller's host: HTTP/2 `:authority` (in the URI) or the HTTP/1 `Host` header.
pub fn caller_host(uri: &http::Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => headers.get(HOST).cloned(),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Whether a (lowercase) header name, read with `_` as `-`, is in `set` — allocating only for
/// the rare name that contains an underscore.
fn listed(set: &HashSet<String>, name: &str) -> bool {
    if name.contains('_') {
        set.contains(&normalise(name))
    } else {
        set.contains(name)
    }
}

fn connection_nominated(headers: &HeaderMap) -> HashSet<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| normalise(token.trim()))
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
