//! `/Bulk` request bodies (RFC 7644 §3.7): every operation parsed with the same grammar as a
//! request path, so a rule's permissions apply to each as to a separate request.

use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use super::json::{member, only_members, parse_object};
use super::{Classified, Operation, parse_request};

/// Why a `/Bulk` body cannot be authorized. The reason is for logs, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the bulk request body is not a SCIM BulkRequest: {0}")]
pub(crate) struct InvalidBulk(pub(crate) &'static str);

/// Members a BulkRequest and its operations may carry (RFC 7644 §3.7); any other member is a
/// body we cannot judge with certainty, hence refused.
const REQUEST_MEMBERS: [&str; 3] = ["schemas", "failOnErrors", "Operations"];
const OPERATION_MEMBERS: [&str; 5] = ["method", "bulkId", "version", "path", "data"];

/// One operation of a BulkRequest: its class (with the item id its path names) and its `data`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BulkOperation {
    pub request: Classified,
    /// The operation's `data` member (a resource for POST/PUT, a PatchOp for PATCH), if any.
    pub data: Option<Value>,
}

/// The operations of a BulkRequest body, each classified by its own method and path.
/// `custom` is the tenant's extra resource types.
pub(crate) fn bulk_operations(
    body: &[u8],
    custom: &[Arc<str>],
) -> Result<Vec<Classified>, InvalidBulk> {
    Ok(parse_bulk(body, custom)?
        .into_iter()
        .map(|op| op.request)
        .collect())
}

/// [`bulk_operations`] with each operation's `data`, for judging what the operations write
/// (guardrails): the same parse, so both read the body alike.
pub(crate) fn parse_bulk(
    body: &[u8],
    custom: &[Arc<str>],
) -> Result<Vec<BulkOperation>, InvalidBulk> {
    let mut doc = parse_object(body).map_err(|_| InvalidBulk("not strict SCIM JSON"))?;
    if !only_members(&doc, &REQUEST_MEMBERS) {
        return Err(InvalidBulk("unknown member in the BulkRequest"));
    }
    let Some(Value::Array(ops)) = take_member(&mut doc, "Operations") else {
        return Err(InvalidBulk("no Operations array"));
    };
    ops.into_iter().map(|op| operation(op, custom)).collect()
}

/// Removes the member `name` (matched case-insensitively, unique by the parser) from `object`.
fn take_member(object: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))?
        .clone();
    object.remove(&key)
}

fn operation(op: Value, custom: &[Arc<str>]) -> Result<BulkOperation, InvalidBulk> {
    let Value::Object(mut op) = op else {
        return Err(InvalidBulk("operation is not an object"));
    };
    if !only_members(&op, &OPERATION_MEMBERS) {
        return Err(InvalidBulk("unknown member in an operation"));
    }
    let method = member(&op, "method")
        .and_then(Value::as_str)
        .and_then(bulk_method)
        .ok_or(InvalidBulk(
            "operation method is not POST, PUT, PATCH or DELETE",
        ))?;
    let path = member(&op, "path")
        .and_then(Value::as_str)
        .ok_or(InvalidBulk("operation has no path"))?;
    // An operation path is relative to the SCIM root and names one resource: a query or
    // fragment has no meaning there, and the backend would parse it on its own terms.
    if path.contains(['?', '#']) {
        return Err(InvalidBulk("operation path has a query or fragment"));
    }
    let request =
        parse_request(&method, path, custom).map_err(|_| InvalidBulk("operation path"))?;
    if request.operation == Operation::Bulk {
        return Err(InvalidBulk("nested /Bulk"));
    }
    Ok(BulkOperation {
        request,
        data: take_member(&mut op, "data"),
    })
}

/// The methods a bulk operation may use (RFC 7644 §3.7), matched case-insensitively as SCIM
/// servers do.
fn bulk_method(text: &str) -> Option<Method> {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(text))
}
