//! SCIM guardrails (issue 18): what a connector with a valid token may still not do.
//!
//! One pipeline step, after the token verified and the rule matched: [`Guards::check`] judges
//! the caller's address (`source_ips`), the groups the request writes (`protected_groups`), the
//! attributes it touches (`deny_attributes`), the rule's `rate_limit` and the tenant's
//! deprovision budget (`max_deprovisions` in `deprovision_window`). Socket-free and synchronous;
//! the body, when a guardrail needs it ([`Guards::needs_body`]), is read by the caller, bounded
//! by `max_body_bytes`, and forwarded byte-exact.
//!
//! State (buckets, windows) is per replica and outlives config generations: a reload keeps the
//! counts and applies the new limits at once. N replicas allow N × the budget and N × the rate.

pub mod attr;
pub mod inspect;
pub mod limit;
pub mod net;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::HeaderMap;

use crate::config::{Rule, RuleGuardrails, Tenant};
use crate::scim::{Classified, Operation, Resource};

pub use attr::{AttrPath, InvalidPath};
pub use inspect::{Members, Summary, Unjudgeable, inspect};
use limit::{Bucket, Full, Window, retry_after};
use net::{Cidr, MalformedForwardedFor};

pub use crate::metrics::Guardrail;

/// Why a guardrail refused a request. Display texts are fit for the caller: they name a
/// guardrail or a configured attribute, never a value from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("the caller's address is not allowed for this client")]
    SourceIp,
    /// A trusted proxy's `X-Forwarded-For` is not a list of addresses: the client is unknown.
    #[error("X-Forwarded-For is not a list of IP addresses")]
    ForwardedFor,
    #[error("this client may not modify that group")]
    ProtectedGroup,
    /// `attribute`: the configured (normalised) name that the request touches.
    #[error("this client may not write the attribute {attribute}")]
    DeniedAttribute { attribute: String },
    #[error("rate limit exceeded")]
    RateLimited { retry_after: u64 },
    /// Over the tenant's deprovision budget; `used`/`limit` for logs and the gauge.
    #[error("deprovisioning budget exhausted")]
    DeprovisionBudget {
        retry_after: u64,
        used: u32,
        limit: u32,
    },
    /// One request (a `/Bulk`) carries more deprovisionings than the whole budget: it can
    /// never pass, so there is nothing to retry.
    #[error("the request carries more deprovisionings than the budget allows")]
    OverBudget { count: u32, limit: u32 },
    /// The body is one no guardrail can judge with certainty (the reason is for logs).
    #[error("the request body cannot be judged")]
    Unjudgeable(#[from] Unjudgeable),
    /// A guardrail needs the body but the caller passed none: a wiring bug (500).
    #[error("internal error")]
    BodyNotRead,
}

impl GuardError {
    /// The guardrail that tripped; `None` for a body that cannot be judged or a wiring bug.
    pub fn guardrail(&self) -> Option<Guardrail> {
        match self {
            Self::SourceIp | Self::ForwardedFor => Some(Guardrail::SourceIps),
            Self::ProtectedGroup => Some(Guardrail::ProtectedGroups),
            Self::DeniedAttribute { .. } => Some(Guardrail::DenyAttributes),
            Self::RateLimited { .. } => Some(Guardrail::RateLimit),
            Self::DeprovisionBudget { .. } | Self::OverBudget { .. } => {
                Some(Guardrail::DeprovisionBudget)
            }
            Self::Unjudgeable(_) | Self::BodyNotRead => None,
        }
    }

    /// Seconds for `Retry-After`, when waiting helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } | Self::DeprovisionBudget { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::SourceIp
            | Self::ForwardedFor
            | Self::ProtectedGroup
            | Self::DeniedAttribute { .. }
            | Self::OverBudget { .. }
            | Self::Unjudgeable(_)
            | Self::BodyNotRead => None,
        }
    }
}

/// One request as the guardrails see it.
#[derive(Debug, Clone, Copy)]
pub struct Check<'r> {
    /// `server.trusted_proxies` of the current config.
    pub trusted_proxies: &'r [Cidr],
    pub tenant: &'r Tenant,
    /// The rule that matched (from `tenant.rules`).
    pub rule: &'r Rule,
    pub request: &'r Classified,
    /// The socket peer.
    pub peer: IpAddr,
    pub headers: &'r HeaderMap,
    /// The whole body, when [`Guards::needs_body`] said so (otherwise it may be `None`).
    pub body: Option<&'r [u8]>,
}

/// Now, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The guardrails' state: one per process, shared by every config generation.
pub struct Guards {
    tenants: Mutex<HashMap<String, TenantState>>,
    clock: Clock,
}

/// A tenant's counters, kept by tenant name across reloads.
#[derive(Default)]
struct TenantState {
    window: Window,
    /// By rule name.
    buckets: HashMap<String, Bucket>,
}

impl Default for Guards {
    fn default() -> Self {
        Self::with_clock(Arc::new(Instant::now))
    }
}

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guards").finish_non_exhaustive()
    }
}

static NO_GUARDRAILS: RuleGuardrails = RuleGuardrails {
    deny_attributes: Vec::new(),
    protected_groups: Vec::new(),
    source_ips: Vec::new(),
    rate_limit: None,
};

impl Guards {
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            tenants: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Whether a guardrail must read this request's body. Only writes have bodies worth
    /// reading: any write under `deny_attributes`; a `/Bulk` under any body guardrail; a User
    /// write (its `groups`) under `protected_groups`; a User PUT/PATCH (`active`) under a budget.
    pub fn needs_body(tenant: &Tenant, rule: &Rule, request: &Classified) -> bool {
        let g = rule_guardrails(tenant, rule);
        let budget = tenant.guardrails.max_deprovisions > 0;
        let user = matches!(request.resource, Resource::Users | Resource::Me);
        match request.operation {
            Operation::Read | Operation::Search | Operation::Delete => false,
            Operation::Bulk => {
                budget || !g.deny_attributes.is_empty() || !g.protected_groups.is_empty()
            }
            Operation::Create => {
                !g.deny_attributes.is_empty() || (user && !g.protected_groups.is_empty())
            }
            Operation::Replace | Operation::Patch => {
                !g.deny_attributes.is_empty()
                    || (user && (budget || !g.protected_groups.is_empty()))
            }
        }
    }

    /// Judges one request: address, protected groups, denied attributes, rate, budget, in that
    /// order; only a request that passes all is counted against the budget (all of its
    /// deprovisionings or none). The summary is for the access line and the budget gauge.
    pub fn check(&self, c: &Check<'_>) -> Result<Summary, GuardError> {
        let g = rule_guardrails(c.tenant, c.rule);
        if !g.source_ips.is_empty() {
            let client = net::client_address(c.peer, c.headers, c.trusted_proxies)
                .map_err(|MalformedForwardedFor| GuardError::ForwardedFor)?;
            if !g.source_ips.iter().any(|range| range.contains(client)) {
                return Err(GuardError::SourceIp);
            }
        }
        let needs_body = Self::needs_body(c.tenant, c.rule, c.request);
        if needs_body && c.body.is_none() {
            return Err(GuardError::BodyNotRead);
        }
        // A body no guardrail needs is not judged: what passed before guardrails still passes.
        let body = c.body.filter(|_| needs_body);
        let mut summary = inspect(c.request, body, &c.tenant.upstream.resource_types)?;
        protected_groups(g, &summary)?;
        if let Some(attribute) = g
            .deny_attributes
            .iter()
            .find(|d| summary.attributes.iter().any(|t| d.covers(t)))
        {
            return Err(GuardError::DeniedAttribute {
                attribute: attribute.to_string(),
            });
        }
        let limit = c.tenant.guardrails.max_deprovisions;
        if g.rate_limit.is_none() && limit == 0 {
            return Ok(summary);
        }
        let now = (self.clock)();
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let state = state(&mut tenants, &c.tenant.name);
        if let Some(rate) = &g.rate_limit {
            if !state.buckets.contains_key(&c.rule.name) {
                state.buckets.insert(c.rule.name.clone(), Bucket::new(now));
            }
            if let Some(bucket) = state.buckets.get_mut(&c.rule.name) {
                bucket
                    .take(rate, now)
                    .map_err(|wait| GuardError::RateLimited {
                        retry_after: retry_after(wait),
                    })?;
            }
        }
        if limit > 0 {
            let window = c.tenant.guardrails.deprovision_window;
            let n = summary.deprovisions;
            let used = if n == 0 {
                state.window.used(window, now)
            } else {
                match state.window.admit(n, limit, window, now) {
                    Ok(used) => used,
                    Err(Full::Never) => return Err(GuardError::OverBudget { count: n, limit }),
                    Err(Full::Wait(wait)) => {
                        return Err(GuardError::DeprovisionBudget {
                            retry_after: retry_after(wait),
                            used: state.window.used(window, now),
                            limit,
                        });
                    }
                }
            };
            summary.budget_used = Some(used);
        }
        Ok(summary)
    }

    /// Deprovisionings counted in `tenant`'s current window (for the budget gauge at scrape).
    pub fn budget_used(&self, tenant: &Tenant) -> u32 {
        let now = (self.clock)();
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.get_mut(&tenant.name).map_or(0, |state| {
            state.window.used(tenant.guardrails.deprovision_window, now)
        })
    }
}

fn rule_guardrails<'t>(tenant: &'t Tenant, rule: &Rule) -> &'t RuleGuardrails {
    tenant
        .guardrails
        .rules
        .get(&rule.name)
        .unwrap_or(&NO_GUARDRAILS)
}

/// The tenant's state, created on its first counted request (the name is copied only then).
fn state<'m>(tenants: &'m mut HashMap<String, TenantState>, name: &str) -> &'m mut TenantState {
    if !tenants.contains_key(name) {
        tenants.insert(name.to_owned(), TenantState::default());
    }
    tenants
        .get_mut(name)
        .expect("the tenant's state was inserted above")
}

/// A protected group written by path, or named in a User's `groups`; a `groups` write whose ids
/// cannot be read may name one. Ids compare ASCII case-insensitively and a requested id with
/// surrounding whitespace is trimmed: a backend that folds or trims ids must not open a way
/// round the list.
fn protected_groups(g: &RuleGuardrails, summary: &Summary) -> Result<(), GuardError> {
    if g.protected_groups.is_empty() {
        return Ok(());
    }
    let protected = |id: &str| {
        let id = id.trim_matches(|c: char| c.is_ascii_whitespace());
        g.protected_groups
            .iter()
            .any(|p| p.eq_ignore_ascii_case(id))
    };
    let named = summary.groups.iter().chain(&summary.user_groups);
    if summary.user_groups_unknown || named.into_iter().any(|id| protected(id)) {
        return Err(GuardError::ProtectedGroup);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
