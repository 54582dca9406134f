//! scimgate: an authenticating reverse proxy for SCIM 2.0 provisioning traffic.
//!
//! An identity provider calls scimgate with `Authorization: Bearer <JWT>`. scimgate verifies the
//! token against the issuer's JWKS, picks a service account by ordered claim rules, removes the
//! caller's credential and forwards the request to the SCIM backend with that account's API key.
//!
//! ```text
//! route      proxy.rs, scim/     tenant by prefix; the path against the SCIM grammar    -> 404 / 400 / 405
//! verify     auth/bearer.rs      exactly one Authorization: Bearer, token <= 8 KiB      -> 401 / 400
//!            auth/verify.rs      header policy, key by kid (auth/jwks.rs), signature,
//!                                exp/nbf/iat/iss/aud, max lifetime; auth/cache.rs       -> 401 / 503
//! body       scim/bulk.rs        a /Bulk body read and every operation parsed           -> 400 / 413
//! authorize  auth/policy.rs      first rule whose claim matches -> service account      -> 403
//! guard      guard.rs, guard/    the rule's guardrails and the tenant's deprovision
//!                                budget (a write's body read where one judges it)       -> 403 / 429 / 413 / 400
//! rewrite    headers.rs          strip caller credential, hop-by-hop, spoofable headers;
//!                                set the account's credential and forwarding headers
//! forward    upstream.rs         pooled client, streamed bodies, one timer              -> 502 / 504
//! screen     screen.rs           the key screened in response headers, trailers, bodies -> 502
//! record     proxy.rs            metrics + one access line at the single exit point
//! ```
//!
//! `proxy::Proxy::pipeline` runs the steps in order over one request context; `error::ProxyError`
//! is the only mapping from failures to HTTP responses (SCIM error bodies, RFC 6750 challenges).

#![forbid(unsafe_code)]
// The library's own items only: integration tests keep `pub` in their support modules.
#![warn(unreachable_pub)]

mod admin;
pub mod app;
pub mod auth;
mod body;
pub mod cli;
pub mod config;
pub mod demo;
mod error;
pub mod explain;
mod front;
pub mod guard;
pub mod headers;
pub mod issuer;
pub mod metrics;
mod proxy;
mod reload;
mod response;
mod runtime;
mod scim;
pub mod screen;
mod server;
pub mod signal;
mod strict_json;
pub mod telemetry;
mod text;
mod tls;
mod upstream;
