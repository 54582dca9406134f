//! What a SCIM write does, read with the strict body parser (`scim::json`): how many users or
//! groups it deprovisions, which attribute paths it touches, which groups it writes and how many
//! members it adds or removes. Never a value: the summary is fit for an access line.
//!
//! Deprovisionings: `DELETE` of a User, Group or `/Me`; a write that sets a User's `active` to
//! anything but `true` (a boolean, or the string `"true"` in any case), in any shape clients send
//! (pathless replace, `path: "active"`, URN-qualified, inside the core schema object, `add` as
//! well as `replace`) or removes it. A PATCH or PUT counts once; each `/Bulk` operation counts.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::attr::{AttrPath, InvalidPath, Target, is_sub_name, parse_path};
use crate::scim::json::{member, only_members, parse_object};
use crate::scim::{Classified, Operation, Resource, parse_bulk};

/// What a request writes, as far as the guardrails judge it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Deletes and deactivations (each `/Bulk` operation counted).
    pub deprovisions: u32,
    /// Attribute paths the body touches, sorted and without repeats.
    pub attributes: Vec<AttrPath>,
    /// Ids of the groups written (`PUT`/`PATCH`/`DELETE /Groups/{id}`, also inside `/Bulk`).
    pub groups: Vec<Box<str>>,
    /// Group ids a User write names in its `groups` attribute.
    pub user_groups: Vec<Box<str>>,
    /// A User write touches `groups` in a form whose group ids cannot be read (a filter, a
    /// removal of all): it may change any group's membership.
    pub user_groups_unknown: bool,
    pub members: Members,
    /// The body was read and judged (otherwise only the path was).
    pub inspected: bool,
    /// Deprovisionings counted in the tenant's window after this request, when a budget is set.
    pub budget_used: Option<u32>,
}

/// Group member changes: counts, never ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Members {
    pub added: u32,
    /// Removed by value list, or the comparisons of a `members[…]` filter (an estimate).
    pub removed: u32,
    /// The whole member list was replaced or cleared: how many left is unknown.
    pub replaced: bool,
}

/// How a body that cannot be judged fails. For logs; the detail never reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unjudgeable {
    /// Not strict SCIM JSON, or not the message the endpoint takes (scimType invalidSyntax).
    #[error("the body cannot be judged: {0}")]
    Syntax(&'static str),
    /// An attribute path or member name outside the grammar (scimType invalidPath).
    #[error("the body cannot be judged: {0}")]
    Path(#[from] InvalidPath),
}

/// Summarises `request` with its body. `body: None` judges the path alone (`inspected` stays
/// false; for `/Bulk`, that is nothing). `custom`: the tenant's extra resource types.
pub fn inspect(
    request: &Classified,
    body: Option<&[u8]>,
    custom: &[Arc<str>],
) -> Result<Summary, Unjudgeable> {
    let mut summary = Summary::default();
    if request.operation == Operation::Bulk {
        let Some(body) = body else {
            return Ok(summary);
        };
        let ops = parse_bulk(body, custom).map_err(|e| Unjudgeable::Syntax(e.0))?;
        for op in &ops {
            let data = match &op.data {
                None => None,
                Some(Value::Object(map)) => Some(map),
                Some(_) => return Err(Unjudgeable::Syntax("bulk operation data is not an object")),
            };
            one(&mut summary, &op.request, data, true)?;
        }
        summary.inspected = true;
    } else {
        let doc = body
            .map(parse_object)
            .transpose()
            .map_err(|_| Unjudgeable::Syntax("not strict SCIM JSON"))?;
        one(&mut summary, request, doc.as_ref(), false)?;
        summary.inspected = doc.is_some();
    }
    summary.attributes.sort_unstable();
    summary.attributes.dedup();
    Ok(summary)
}

/// Which resource a write addresses, for what its attributes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
    Other,
}

/// One request or `/Bulk` operation. `required`: a write without a body cannot be judged.
fn one(
    s: &mut Summary,
    request: &Classified,
    doc: Option<&Map<String, Value>>,
    required: bool,
) -> Result<(), Unjudgeable> {
    let kind = match request.resource {
        Resource::Users | Resource::Me => Kind::User,
        Resource::Groups => Kind::Group,
        Resource::ServiceProviderConfig
        | Resource::ResourceTypes
        | Resource::Schemas
        | Resource::Bulk
        | Resource::Root
        | Resource::Custom(_) => Kind::Other,
    };
    let mode = match request.operation {
        Operation::Read | Operation::Search => return Ok(()),
        Operation::Bulk => return Err(Unjudgeable::Syntax("nested /Bulk")),
        Operation::Delete => {
            if kind != Kind::Other {
                s.deprovisions = s.deprovisions.saturating_add(1);
            }
            s.groups.extend(group_id(kind, request));
            return Ok(());
        }
        Operation::Create => Mode::Create,
        Operation::Replace => Mode::Put,
        Operation::Patch => Mode::Replace,
    };
    s.groups.extend(group_id(kind, request));
    let Some(doc) = doc else {
        return if required {
            Err(Unjudgeable::Syntax("a write without a body"))
        } else {
            Ok(())
        };
    };
    let mut walk = Walk {
        kind,
        s,
        deactivates: false,
    };
    if request.operation == Operation::Patch {
        walk.patch(doc)?;
    } else {
        walk.members(doc, mode)?;
    }
    if walk.deactivates {
        walk.s.deprovisions = walk.s.deprovisions.saturating_add(1);
    }
    Ok(())
}

fn group_id(kind: Kind, request: &Classified) -> Option<Box<str>> {
    request.id.clone().filter(|_| kind == Kind::Group)
}

/// How a value is written. PUT and a PATCH `replace` without a filter replace a multi-valued
/// attribute as a whole; `add` and POST only add to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Put,
    Add,
    Replace,
    Remove,
}

struct Walk<'s> {
    kind: Kind,
    s: &'s mut Summary,
    deactivates: bool,
}

const PATCH_MEMBERS: [&str; 2] = ["schemas", "Operations"];
const OPERATION_MEMBERS: [&str; 3] = ["op", "path", "value"];

impl Walk<'_> {
    /// A PatchOp (RFC 7644 §3.5.2); an unknown member is a body we cannot judge.
    fn patch(&mut self, doc: &Map<String, Value>) -> Result<(), Unjudgeable> {
        if !only_members(doc, &PATCH_MEMBERS) {
            return Err(Unjudgeable::Syntax("unknown member in a PatchOp"));
        }
        let ops = member(doc, "Operations")
            .and_then(Value::as_array)
            .ok_or(Unjudgeable::Syntax("no Operations array"))?;
        for op in ops {
            let op = op
                .as_object()
                .filter(|op| only_members(op, &OPERATION_MEMBERS))
                .ok_or(Unjudgeable::Syntax("operation is not {op, path, value}"))?;
            let name = member(op, "op").and_then(Value::as_str).unwrap_or_default();
            let mode = [
                ("add", Mode::Add),
                ("replace", Mode::Replace),
                ("remove", Mode::Remove),
            ]
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, m)| m)
            .ok_or(Unjudgeable::Syntax("op is not add, replace or remove"))?;
            let value = member(op, "value");
            match member(op, "path") {
                None if mode == Mode::Remove => {
                    return Err(InvalidPath("remove without a path").into());
                }
                None => self.members(object(value)?, mode)?,
                Some(Value::String(path)) => self.target(parse_path(path)?, value, mode)?,
                Some(_) => return Err(InvalidPath("path is not a string").into()),
            }
        }
        Ok(())
    }

    /// The members of a resource (POST, PUT) or of a pathless `add`/`replace` value: each name
    /// read as a path (URN-qualified, dotted, even filtered), as a lenient server might.
    fn members(&mut self, doc: &Map<String, Value>, mode: Mode) -> Result<(), Unjudgeable> {
        for (name, value) in doc {
            self.target(parse_path(name)?, Some(value), mode)?;
        }
        Ok(())
    }

    /// A known schema's object: members are plain attributes, never another schema.
    fn schema(&mut self, doc: &Map<String, Value>, mode: Mode) -> Result<(), Unjudgeable> {
        for (name, value) in doc {
            match parse_path(name)? {
                Target::Attribute {
                    path,
                    filter,
                    maybe_schema: false,
                } if !name
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("urn:")) =>
                {
                    self.value(&path, filter, Some(value), mode)?;
                }
                Target::Attribute { .. } | Target::Schema => {
                    return Err(InvalidPath("a schema inside a schema").into());
                }
            }
        }
        Ok(())
    }

    fn target(
        &mut self,
        target: Target,
        value: Option<&Value>,
        mode: Mode,
    ) -> Result<(), Unjudgeable> {
        match target {
            Target::Schema => match value {
                Some(v) => self.schema(object(Some(v))?, mode),
                None => {
                    // The whole schema removed: every attribute, `active` among them.
                    self.touch(AttrPath::any());
                    self.deactivates |= self.kind == Kind::User;
                    Ok(())
                }
            },
            Target::Attribute {
                path,
                filter,
                maybe_schema,
            } => {
                if maybe_schema {
                    match value {
                        Some(Value::Object(doc)) => self.schema(doc, mode)?,
                        None if filter.is_none() && path.sub().is_none() => {
                            self.touch(AttrPath::any());
                        }
                        _ => {}
                    }
                }
                self.value(&path, filter, value, mode)
            }
        }
    }

    /// One attribute written with `value` (`None`: removed).
    fn value(
        &mut self,
        path: &AttrPath,
        filter: Option<u32>,
        value: Option<&Value>,
        mode: Mode,
    ) -> Result<(), Unjudgeable> {
        match (path.sub(), value) {
            (Some(_), _) | (None, None) => self.touch(path.clone()),
            (None, Some(Value::Object(doc))) => {
                self.subs(path, doc)?;
                if mode == Mode::Put {
                    self.touch(path.clone());
                }
            }
            (None, Some(Value::Array(items))) => {
                let whole = matches!(mode, Mode::Put | Mode::Replace) && filter.is_none();
                if whole || items.is_empty() {
                    self.touch(path.clone());
                }
                for item in items {
                    match item {
                        Value::Object(doc) => self.subs(path, doc)?,
                        Value::Array(_) => {
                            return Err(Unjudgeable::Syntax("an array in an array"));
                        }
                        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
                            self.touch(path.clone());
                        }
                    }
                }
            }
            (None, Some(_)) => self.touch(path.clone()),
        }
        match self.kind {
            Kind::User if path.is("active") && mode != Mode::Create => {
                self.deactivates |= mode == Mode::Remove || !value.is_some_and(is_true);
            }
            Kind::User if path.attr() == "groups" => self.user_groups(path, filter, value),
            Kind::Group if path.attr() == "members" => {
                self.member_counts(path, filter, value, mode);
            }
            Kind::User | Kind::Group | Kind::Other => {}
        }
        Ok(())
    }

    /// The sub-attributes of one complex value; SCIM has no deeper nesting (RFC 7643 §2.3.8).
    fn subs(&mut self, path: &AttrPath, doc: &Map<String, Value>) -> Result<(), Unjudgeable> {
        for (sub, value) in doc {
            if !is_sub_name(sub) {
                return Err(InvalidPath("sub-attribute name").into());
            }
            if value.is_object() || value.is_array() {
                return Err(Unjudgeable::Syntax("a complex sub-attribute"));
            }
            self.touch(path.with_sub(sub));
        }
        Ok(())
    }

    fn touch(&mut self, path: AttrPath) {
        self.s.attributes.push(path);
    }

    /// `groups` on a User: the ids named, or unknown when a form names none we can read.
    fn user_groups(&mut self, path: &AttrPath, filter: Option<u32>, value: Option<&Value>) {
        let ids = match value {
            Some(Value::Array(items)) if filter.is_none() && path.sub().is_none() => items
                .iter()
                .map(|item| item.as_object().and_then(|o| member(o, "value")?.as_str()))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        match ids {
            Some(ids) => self.s.user_groups.extend(ids.into_iter().map(Box::from)),
            None => self.s.user_groups_unknown = true,
        }
    }

    fn member_counts(
        &mut self,
        path: &AttrPath,
        filter: Option<u32>,
        value: Option<&Value>,
        mode: Mode,
    ) {
        let count = match value {
            Some(Value::Array(items)) => u32::try_from(items.len()).unwrap_or(u32::MAX),
            Some(Value::Object(_)) => 1,
            _ => 0,
        };
        let m = &mut self.s.members;
        match mode {
            Mode::Create | Mode::Add => m.added = m.added.saturating_add(count),
            Mode::Put | Mode::Replace => {
                m.replaced = true;
                m.added = m.added.saturating_add(count);
            }
            Mode::Remove => match (value, filter) {
                (Some(_), _) => m.removed = m.removed.saturating_add(count),
                (None, Some(terms)) if path.sub().is_none() => {
                    m.removed = m.removed.saturating_add(terms);
                }
                // All members removed, or a sub-attribute of some: how many changed is unknown.
                _ => m.replaced = true,
            },
        }
    }
}

fn object(value: Option<&Value>) -> Result<&Map<String, Value>, Unjudgeable> {
    value.and_then(Value::as_object).ok_or(Unjudgeable::Syntax(
        "a pathless add or replace needs an object value",
    ))
}

/// `true`, or the string `"true"` in any case: every other value deactivates.
fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        Value::Null | Value::Number(_) | Value::Array(_) | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests;
