//! SCIM guardrails (issue 18): what a connector with a valid token may still not do.
//!
//! Socket-free: the pipeline calls [`Guards::check`] once the token verified and the rule matched.

pub mod attr;
pub mod inspect;

pub use attr::{AttrPath, InvalidPath};
pub use inspect::{Members, Summary, Unjudgeable, inspect};
pub mod limit;
pub mod net;
