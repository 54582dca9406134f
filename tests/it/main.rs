//! Every integration test in one binary: the real `scimgate` binary on loopback ports against
//! fake JWKS endpoints, recording upstreams and hostile peers (`support`), one module per area.
//! One crate instead of one per file: `support` is compiled once, and an unused helper is a
//! warning like anywhere else.

mod support;

mod audit_log;
mod auth;
mod body;
mod cache;
mod cli;
mod fail_closed;
mod forward;
mod guardrails;
mod http_front;
mod issuer;
mod jwks;
mod lifecycle;
mod lockfile;
mod metrics;
mod operations;
mod pool;
mod properties;
mod reload;
mod scim_rules;
mod security_conns;
mod security_headers;
mod security_http;
mod security_jwks;
mod security_ops;
mod security_tokens;
mod tenants;
mod tls;
mod upstream_errors;
