//! The SCIM endpoint grammar (RFC 7644 §3) over the whole routed path: a request either parses
//! into one operation on one endpoint, or it is refused before authentication.
//!
//! ```text
//! /.search                          POST                      search (all types)
//! /{type}                           GET HEAD | POST           read | create
//! /{type}/.search                   POST                      search
//! /{type}/{id}                      GET HEAD | PUT | PATCH | DELETE
//! /Me                               GET HEAD | PUT | PATCH | DELETE
//! /Bulk                             POST                      bulk
//! /ServiceProviderConfig            GET HEAD
//! /ResourceTypes[/{name}]           GET HEAD
//! /Schemas[/{uri}]                  GET HEAD
//! ```
//! `{type}` is `Users`, `Groups` or a name from `upstream.resource_types`. Endpoint names match
//! case-insensitively but only as written (no `%`-escapes, no suffix such as `.json`, no
//! trailing dot): a spelling a backend framework might fold onto an endpoint is not an endpoint
//! here. Nothing may follow an endpoint's last segment: the classifier never reads the end of
//! a path and guesses at what came before (`DELETE /Users/1/Groups/2` is refused).

use std::borrow::Cow;
use std::sync::Arc;

use http::Method;

use super::{Classified, Operation, Resource};

/// Why a path is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// The backend could resolve it to another resource than we would: empty, `.` or `..`
    /// segments (raw or encoded), encoded `/` or `\`, `;` parameters, control characters,
    /// broken `%`-escapes, or an escaped spelling of an endpoint name (400).
    Ambiguous,
    /// Not a SCIM endpoint (404).
    NotFound,
    /// A SCIM endpoint, but not with this method (405).
    Method,
}

/// Parses `path` (after the tenant prefix; no query) with `method` against the grammar above.
/// `custom` is the tenant's extra resource types.
pub(crate) fn parse_request(
    method: &Method,
    path: &str,
    custom: &[Arc<str>],
) -> Result<Classified, PathError> {
    let segments = segments(path)?;
    let op = |operation, resource| {
        Ok(Classified {
            operation,
            resource,
            id: None,
        })
    };
    let item = |operation, resource, id: &Segment<'_>| {
        Ok(Classified {
            operation,
            resource,
            id: Some(Box::from(id.decoded.as_ref())),
        })
    };
    let read = *method == Method::GET || *method == Method::HEAD;
    match segments.as_slice() {
        [only] if is(only, ".search") => match *method {
            Method::POST => op(Operation::Search, Resource::Root),
            _ => Err(PathError::Method),
        },
        [only] if is(only, "Bulk") => match *method {
            Method::POST => op(Operation::Bulk, Resource::Bulk),
            _ => Err(PathError::Method),
        },
        [first, rest @ ..] => {
            let resource = endpoint(first, custom).ok_or(PathError::NotFound)?;
            match (resource, rest) {
                (Resource::Me, []) => match *method {
                    _ if read => op(Operation::Read, Resource::Me),
                    Method::PUT => op(Operation::Replace, Resource::Me),
                    Method::PATCH => op(Operation::Patch, Resource::Me),
                    Method::DELETE => op(Operation::Delete, Resource::Me),
                    _ => Err(PathError::Method),
                },
                (r, []) if r.has_items() => match *method {
                    _ if read => op(Operation::Read, r),
                    Method::POST => op(Operation::Create, r),
                    _ => Err(PathError::Method),
                },
                (r, [search]) if r.has_items() && is(search, ".search") => match *method {
                    Method::POST => op(Operation::Search, r),
                    _ => Err(PathError::Method),
                },
                (r, [id]) if r.has_items() => match *method {
                    _ if read => item(Operation::Read, r, id),
                    Method::PUT => item(Operation::Replace, r, id),
                    Method::PATCH => item(Operation::Patch, r, id),
                    Method::DELETE => item(Operation::Delete, r, id),
                    _ => Err(PathError::Method),
                },
                (
                    r @ (Resource::ServiceProviderConfig
                    | Resource::ResourceTypes
                    | Resource::Schemas),
                    [],
                )
                | (r @ (Resource::ResourceTypes | Resource::Schemas), [_]) => {
                    if read {
                        op(Operation::Read, r)
                    } else {
                        Err(PathError::Method)
                    }
                }
                _ => Err(PathError::NotFound),
            }
        }
        [] => Err(PathError::NotFound),
    }
}

/// One path segment: as sent, and percent-decoded.
struct Segment<'p> {
    raw: &'p str,
    decoded: Cow<'p, str>,
}

/// Names with a meaning in the grammar; an escaped spelling of one of them is ambiguous.
const RESERVED: [&str; 8] = [
    ".search",
    "Bulk",
    "Users",
    "Groups",
    "Me",
    "ServiceProviderConfig",
    "ResourceTypes",
    "Schemas",
];

/// The path's segments, or `Ambiguous` when any has a shape we refuse to interpret. A trailing
/// `/` is an empty segment, hence ambiguous: `/Users/` is not `/Users` to every backend.
fn segments(path: &str) -> Result<Vec<Segment<'_>>, PathError> {
    if path.is_empty() || path == "/" {
        return Err(PathError::NotFound);
    }
    let body = path.strip_prefix('/').ok_or(PathError::Ambiguous)?;
    body.split('/')
        .map(|raw| {
            let decoded = percent_decode(raw).ok_or(PathError::Ambiguous)?;
            let ambiguous = decoded.is_empty()
                || decoded == "."
                || decoded == ".."
                || decoded
                    .chars()
                    .any(|c| matches!(c, '/' | '\\' | ';') || c.is_control())
                || (raw != decoded && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&decoded)));
            if ambiguous {
                Err(PathError::Ambiguous)
            } else {
                Ok(Segment { raw, decoded })
            }
        })
        .collect()
}

/// Whether a segment is `name`, written as such (case-insensitively, no escapes).
fn is(segment: &Segment<'_>, name: &str) -> bool {
    segment.raw.eq_ignore_ascii_case(name)
}

/// The endpoint a first segment names: a built-in or the tenant's custom types, written plainly.
fn endpoint(segment: &Segment<'_>, custom: &[Arc<str>]) -> Option<Resource> {
    if segment.raw != segment.decoded {
        return None;
    }
    Resource::from_name(segment.raw, custom)
}

/// RFC 3986 §2.1 percent-decoding of one segment; `None` for a bad escape (two hex digits
/// exactly: `%+1` is not an escape) or a non-UTF-8 result.
pub(crate) fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
