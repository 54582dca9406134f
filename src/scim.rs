//! SCIM protocol pieces: the request grammar (RFC 7644 §3), the bodies scimgate judges, the
//! error body (§3.12) and the ServiceProviderConfig rewrite.
//!
//! scimgate authorizes what it parsed, never what it guessed: a path that is not a SCIM endpoint
//! (`path`), a body that is not strict SCIM JSON (`json`), or a `/Bulk` operation outside the
//! grammar (`bulk`) is refused before anything reaches the backend.

mod bulk;
pub(crate) mod json;
mod path;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

pub(crate) use bulk::{bulk_operations, parse_bulk};
pub(crate) use path::{PathError, parse_request, percent_decode};

/// Media type of every SCIM message (RFC 7644 §3.1).
pub(crate) const CONTENT_TYPE: &str = "application/scim+json";
/// Schema URI of a SCIM error message.
pub(crate) const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// `{"schemas":[…Error],"status":"401","detail":"…"}`; `status` is a string per RFC 7644 §3.12.
pub(crate) fn error_body(status: StatusCode, detail: &str) -> Bytes {
    let body = serde_json::json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_str(),
        "detail": detail,
    });
    Bytes::from(body.to_string())
}

/// What a SCIM request does (RFC 7644 §3.2–3.7). Every request that reaches authorization is
/// one of these: there is no catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Search,
    Create,
    Replace,
    Patch,
    Delete,
    Bulk,
}

/// The endpoint a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants are RFC 7644's endpoint names, /ResourceTypes among them"
)]
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
    /// A resource type the backend adds, listed in `upstream.resource_types`.
    Custom(Arc<str>),
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

    /// Whether every request this permits, `other` also permits (used to find shadowed rules).
    /// Conservative: an unlimited `resources` is only covered by another unlimited one.
    pub fn covers(&self, other: &Permissions) -> bool {
        let ops_covered = match (&self.operations, &other.operations) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|op| mine.contains(op)),
        };
        let resources_covered = match (&self.resources, &other.resources) {
            (None, None) => true,
            (None, Some(theirs)) => !theirs.contains(&Resource::Me),
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|r| mine.contains(r)),
        };
        ops_covered && resources_covered
    }
}

/// A request the grammar recognised: what it does, and to which endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub operation: Operation,
    pub resource: Resource,
    /// The item `/{type}/{id}` addresses, percent-decoded as the backend reads it; `None` for
    /// every other endpoint (`/Me` included).
    pub id: Option<Box<str>>,
}

impl Operation {
    /// Every name accepted in `[[rules]] allow`.
    pub const NAMES: &str = "read, search, create, replace, patch, delete, bulk";

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Read,
            Self::Search,
            Self::Create,
            Self::Replace,
            Self::Patch,
            Self::Delete,
            Self::Bulk,
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
        }
    }
}

impl Resource {
    /// Every built-in name accepted in `[[rules]] resource_types`.
    pub(crate) const NAMES: &str =
        "Users, Groups, Me, ServiceProviderConfig, ResourceTypes, Schemas";

    /// A built-in endpoint name, or one of the tenant's `custom` resource types; matched
    /// case-insensitively (RFC 7644 §3: a backend that serves `/users` as `/Users` must not get
    /// it past a rule that names `Users`).
    pub(crate) fn from_name(name: &str, custom: &[Arc<str>]) -> Option<Self> {
        Self::builtin(name).or_else(|| {
            custom
                .iter()
                .find(|c| c.eq_ignore_ascii_case(name))
                .map(|c| Self::Custom(Arc::clone(c)))
        })
    }

    /// The built-in endpoint a segment names, if any (not `Bulk` or the root).
    pub(crate) fn builtin(name: &str) -> Option<Self> {
        [
            Self::Users,
            Self::Groups,
            Self::Me,
            Self::ServiceProviderConfig,
            Self::ResourceTypes,
            Self::Schemas,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(name))
    }

    pub(crate) fn as_str(&self) -> &str {
        if let Self::Custom(name) = self {
            name
        } else {
            self.static_name().unwrap_or_default()
        }
    }

    /// The name of a built-in endpoint; `None` for a custom type.
    fn static_name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Users => "Users",
            Self::Groups => "Groups",
            Self::Me => "Me",
            Self::ServiceProviderConfig => "ServiceProviderConfig",
            Self::ResourceTypes => "ResourceTypes",
            Self::Schemas => "Schemas",
            Self::Bulk => "Bulk",
            Self::Root => "root",
            Self::Custom(_) => return None,
        })
    }

    /// The name for logs: borrowed for the built-in endpoints, so the access line of a usual
    /// request copies nothing.
    pub(crate) fn label(&self) -> std::borrow::Cow<'static, str> {
        match self.static_name() {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(self.as_str().to_owned()),
        }
    }

    /// Users, Groups and custom types: endpoints with items (`/{type}/{id}`).
    fn has_items(&self) -> bool {
        matches!(self, Self::Users | Self::Groups | Self::Custom(_))
    }
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
pub(crate) fn rewrite_service_provider_config(body: &[u8]) -> Option<Bytes> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    doc.as_object_mut()?.insert(
        "authenticationSchemes".into(),
        serde_json::Value::Array(vec![bearer_scheme()]),
    );
    serde_json::to_vec(&doc).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests;
