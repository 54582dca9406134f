//! scimgate: an authenticating reverse proxy for SCIM 2.0 provisioning traffic.
//!
//! An identity provider calls scimgate with `Authorization: Bearer <JWT>`. scimgate verifies the
//! token against the issuer's JWKS, picks a service account by ordered claim rules, removes the
//! caller's credential and forwards the request to the SCIM backend with that account's API key.
//!
//! ```text
//! 1 bearer     auth/bearer.rs   exactly one Authorization: Bearer, token <= 8 KiB      -> 401 / 400
//! 2 verify     auth/verify.rs   header policy, key by kid (auth/jwks.rs), signature,
//!                               exp/nbf/iat/iss/aud, max lifetime                       -> 401 / 503
//! 3 authorize  auth/policy.rs   first rule whose claim matches -> service account       -> 403
//! 4 rewrite    headers.rs       strip caller credential, hop-by-hop, spoofable headers;
//!                               set the account's credential and forwarding headers
//! 5 forward    upstream.rs      pooled client, streamed bodies, timeouts                -> 502 / 504
//! 6 record     proxy.rs         metrics + one access line at the single exit point
//! ```
//!
//! `proxy::Proxy::handle` runs the steps in order; `error::ProxyError` is the only mapping from
//! failures to HTTP responses (SCIM error bodies, RFC 6750 challenges).

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod explain;
pub mod front;
pub mod guard;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod scim;
pub mod screen;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod tls;
pub mod upstream;
