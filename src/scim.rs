//! SCIM protocol pieces: request classification (RFC 7644 §3) and the error body (§3.12).

use std::borrow::Cow;

use bytes::Bytes;
use http::{Method, StatusCode};

/// Media type of every SCIM message (RFC 7644 §3.1).
pub const CONTENT_TYPE: &str = "application/scim+json";
/// Schema URI of a SCIM error message.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// `{"schemas":[…Error],"status":"401","detail":"…"}`; `status` is a string per RFC 7644 §3.12.
pub fn error_body(status: StatusCode, detail: &str) -> Bytes {
    let body = serde_json::json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_str(),
        "detail": detail,
    });
    Bytes::from(body.to_string())
}

/// What a SCIM request does (RFC 7644 §3.2–3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Search,
    Create,
    Replace,
    Patch,
    Delete,
    Bulk,
    Other,
}

/// The endpoint a request addresses: a resource type, a discovery endpoint, or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Users,
    Groups,
    Me,
    ServiceProviderConfig,
    ResourceTypes,
    Schemas,
    Bulk,
    /// `POST /.search` across all resource types.
    Root,
    Unknown,
}

/// What a rule permits: operations and resource types (`None`: all, except `/Me` for resources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub operations: Option<Vec<Operation>>,
    pub resources: Option<Vec<Resource>>,
}

impl Permissions {
    /// Whether a request of this class is permitted. `/Me` is refused unless listed: behind a
    /// service account it would address the account itself (threats T28). The outer `/Bulk`
    /// request has no resource type of its own; its operations are checked one by one.
    pub fn allows(&self, request: &Classified) -> bool {
        let operation_ok = self
            .operations
            .as_ref()
            .is_none_or(|ops| ops.contains(&request.operation));
        let resource_ok = match &self.resources {
            _ if request.resource == Resource::Bulk => true,
            None => request.resource != Resource::Me,
            Some(list) => list.contains(&request.resource),
        };
        operation_ok && resource_ok
    }
}

impl Permissions {
    /// Whether every request this permits, `other` also permits (used to find shadowed rules).
    pub fn covers(&self, other: &Permissions) -> bool {
        let ops_covered = match (&self.operations, &other.operations) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|op| mine.contains(op)),
        };
        let all_but_me = [
            Resource::Users,
            Resource::Groups,
            Resource::ServiceProviderConfig,
            Resource::ResourceTypes,
            Resource::Schemas,
            Resource::Unknown,
        ];
        let expand = |r: &Option<Vec<Resource>>| r.clone().unwrap_or_else(|| all_but_me.to_vec());
        let (mine, theirs) = (expand(&self.resources), expand(&other.resources));
        ops_covered && theirs.iter().all(|r| mine.contains(r))
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub operation: Operation,
    pub resource: Resource,
}

impl Operation {
    /// Every name accepted in `[[rules]] allow`.
    pub const NAMES: &str = "read, search, create, replace, patch, delete, bulk, other";

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Read,
            Self::Search,
            Self::Create,
            Self::Replace,
            Self::Patch,
            Self::Delete,
            Self::Bulk,
            Self::Other,
        ]
        .into_iter()
        .find(|op| op.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Search => "search",
            Self::Create => "create",
            Self::Replace => "replace",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::Bulk => "bulk",
            Self::Other => "other",
        }
    }
}

impl Resource {
    /// Every name accepted in `[[rules]] resource_types`.
    pub const NAMES: &str = "Users, Groups, Me, ServiceProviderConfig, ResourceTypes, Schemas";

    pub fn from_name(name: &str) -> Option<Self> {
        Self::resource_type(name).or_else(|| Self::discovery(name))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Users => "Users",
            Self::Groups => "Groups",
            Self::Me => "Me",
            Self::ServiceProviderConfig => "ServiceProviderConfig",
            Self::ResourceTypes => "ResourceTypes",
            Self::Schemas => "Schemas",
            Self::Bulk => "Bulk",
            Self::Root => "root",
            Self::Unknown => "unknown",
        }
    }

    /// Endpoint names match case-insensitively: a backend that treats `/me` as `/Me` must not
    /// get it past a rule that refuses `/Me`.
    fn resource_type(segment: &str) -> Option<Self> {
        [Self::Users, Self::Groups, Self::Me]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(segment))
    }

    fn discovery(segment: &str) -> Option<Self> {
        [
            Self::ServiceProviderConfig,
            Self::ResourceTypes,
            Self::Schemas,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(segment))
    }
}

/// Classifies by method and path. Any prefix before the SCIM endpoint (`/scim/v2`) is allowed; a
/// path whose segments are not a SCIM endpoint shape is `Other`/`Unknown`. Paths carrying
/// dot-segments, empty segments, encoded slashes or `;` parameters are `Other` (never a more
/// permissive class than what they would be read as elsewhere).
pub fn classify(method: &Method, path: &str) -> Classified {
    let other = Classified {
        operation: Operation::Other,
        resource: Resource::Unknown,
    };
    let Some((before, last)) = last_two_segments(path) else {
        return other;
    };
    let (last, before): (&str, Option<&str>) = (&last, before.as_deref());
    let op = |operation: Operation, resource: Resource| Classified {
        operation,
        resource,
    };
    let m = method;
    let read = m == Method::GET || m == Method::HEAD;
    if last.eq_ignore_ascii_case(".search") {
        let resource = match before.map(|b| (b, Resource::resource_type(b))) {
            None => Resource::Root,
            Some((_, Some(r))) => r,
            Some((b, None)) if b.eq_ignore_ascii_case("v2") || b.eq_ignore_ascii_case("scim") => {
                Resource::Root
            }
            Some(_) => return other,
        };
        return if m == Method::POST {
            op(Operation::Search, resource)
        } else {
            other
        };
    }
    // `/Users/{id}`: whatever the id says, it is an item of that type (an id may be "Me").
    if let Some(r) = before
        .and_then(Resource::resource_type)
        .filter(|r| *r != Resource::Me)
    {
        let operation = match *m {
            Method::GET | Method::HEAD => Operation::Read,
            Method::PUT => Operation::Replace,
            Method::PATCH => Operation::Patch,
            Method::DELETE => Operation::Delete,
            _ => Operation::Other,
        };
        return op(operation, r);
    }
    if last.eq_ignore_ascii_case("Bulk") {
        return if m == Method::POST {
            op(Operation::Bulk, Resource::Bulk)
        } else {
            other
        };
    }
    if let Some(d) = Resource::discovery(last).or_else(|| before.and_then(Resource::discovery)) {
        return if read { op(Operation::Read, d) } else { other };
    }
    if let Some(r) = Resource::resource_type(last) {
        let operation = match (m, &r) {
            (&Method::GET | &Method::HEAD, _) => Operation::Read,
            (&Method::POST, Resource::Users | Resource::Groups) => Operation::Create,
            (&Method::PUT, Resource::Me) => Operation::Replace,
            (&Method::PATCH, Resource::Me) => Operation::Patch,
            (&Method::DELETE, Resource::Me) => Operation::Delete,
            _ => Operation::Other,
        };
        return op(operation, r);
    }
    other
}

/// The authentication scheme scimgate enforces, as a ServiceProviderConfig entry (RFC 7643 §5).
fn bearer_scheme() -> serde_json::Value {
    serde_json::json!({
        "type": "oauthbearertoken",
        "name": "OAuth Bearer Token",
        "description": "A bearer JWT from the identity provider, verified by scimgate (RFC 6750)",
        "specUri": "https://www.rfc-editor.org/info/rfc6750",
        "primary": true
    })
}

/// Replaces `authenticationSchemes` in a ServiceProviderConfig document with the bearer-token
/// scheme scimgate enforces: the backend's own API-key scheme is an internal detail. `None` when
/// the body is not a JSON object (then it is passed through unchanged).
pub fn rewrite_service_provider_config(body: &[u8]) -> Option<Bytes> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    doc.as_object_mut()?.insert(
        "authenticationSchemes".into(),
        serde_json::Value::Array(vec![bearer_scheme()]),
    );
    serde_json::to_vec(&doc).ok().map(Bytes::from)
}

/// Why a `/Bulk` body cannot be authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bulk request body is not a SCIM BulkRequest")]
pub struct InvalidBulk;

/// The operations inside a BulkRequest body (RFC 7644 §3.7), each classified by its own method
/// and path, so a rule's permissions apply to them as to separate requests.
pub fn bulk_operations(body: &[u8]) -> Result<Vec<Classified>, InvalidBulk> {
    // Duplicate members are refused: a first-wins backend would run an operation we never saw.
    let doc = crate::auth::strict_json::parse_object(body)
        .map(serde_json::Value::Object)
        .ok_or(InvalidBulk)?;
    let ops = doc
        .get("Operations")
        .and_then(serde_json::Value::as_array)
        .ok_or(InvalidBulk)?;
    ops.iter()
        .map(|op| {
            let method = op
                .get("method")
                .and_then(serde_json::Value::as_str)
                .ok_or(InvalidBulk)?;
            let path = op
                .get("path")
                .and_then(serde_json::Value::as_str)
                .ok_or(InvalidBulk)?;
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| InvalidBulk)?;
            // The backend resolves each operation's path itself: refuse the ambiguous ones.
            if is_ambiguous(path) {
                return Err(InvalidBulk);
            }
            Ok(classify(&method, path))
        })
        .collect()
}

/// Whether the backend could resolve `path` to a different resource than the one classified:
/// empty, `.` or `..` segments (raw or percent-encoded), an encoded `/` or `\`, `;` parameters,
/// or broken percent-encoding. Such paths are refused before authentication (threats T27).
pub fn is_ambiguous(path: &str) -> bool {
    !(path.is_empty()
        || path == "/"
        || plain_segments(path).is_some_and(|mut s| s.all(|s| s.is_some())))
}

/// The last two plain segments (the one before the last, if any, and the last), or `None` when
/// the path is not plain (see [`plain_segments`]). Nothing is collected.
fn last_two_segments(path: &str) -> Option<(Option<Cow<'_, str>>, Cow<'_, str>)> {
    let mut before = None;
    let mut last = None;
    for segment in plain_segments(path)? {
        before = last.replace(segment?);
    }
    Some((before, last?))
}

/// The path's percent-decoded segments (a trailing `/` ignored), each `None` when it has a
/// shape we refuse to interpret; `None` for a path that does not start with `/`. A path is
/// plain when every segment is `Some`.
fn plain_segments(path: &str) -> Option<impl Iterator<Item = Option<Cow<'_, str>>>> {
    let trimmed = path.strip_prefix('/')?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    Some(trimmed.split('/').map(|raw| {
        let decoded = percent_decode(raw)?;
        let ambiguous = decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded.contains(['/', '\\', ';']);
        (!ambiguous).then_some(decoded)
    }))
}

/// RFC 3986 §2.1 percent-decoding of one segment; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests;
