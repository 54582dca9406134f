//! One generation of configuration and everything built from it, swapped atomically on reload.
//!
//! A request loads the current `Runtime` once and uses it to the end, so it never sees half of
//! an old config and half of a new one (threats T43).

use std::sync::Arc;

use crate::auth::jwks::Jwks;
use crate::auth::verify::Verifier;
use crate::config::{Config, JwtConfig};
use crate::headers::HeaderPolicy;
use crate::metrics::Metrics;
use crate::tls::TlsError;
use crate::upstream::Upstream;

/// The immutable per-generation state the pipeline reads.
pub struct Runtime {
    pub config: Arc<Config>,
    pub jwks: Arc<Jwks>,
    pub verifier: Verifier,
    pub upstream: Arc<Upstream>,
    pub header_policy: HeaderPolicy,
    /// Increases with every applied config; part of the token-cache key.
    pub generation: u64,
}

impl Runtime {
    /// Builds a generation, reusing the previous one's JWKS cache and upstream client when their
    /// settings did not change (keys stay loaded, pooled connections stay warm).
    pub fn build(
        config: Config,
        jwks_url: http::Uri,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
        generation: u64,
    ) -> Result<Self, TlsError> {
        let jwks = match previous {
            Some(prev)
                if prev.jwks.url() == &jwks_url
                    && same_key_source(&prev.config.jwt, &config.jwt) =>
            {
                Arc::clone(&prev.jwks)
            }
            _ => Arc::new(Jwks::new(&config.jwt, jwks_url, Arc::clone(metrics))?),
        };
        let upstream = match previous {
            Some(prev) if prev.config.upstream == config.upstream => Arc::clone(&prev.upstream),
            _ => Arc::new(Upstream::new(&config.upstream)?),
        };
        let verifier = Verifier::new(&config.jwt, Arc::clone(&jwks), Arc::clone(metrics));
        let header_policy = HeaderPolicy::new(config.service_accounts.iter().map(AsRef::as_ref));
        Ok(Self {
            config: Arc::new(config),
            jwks,
            verifier,
            upstream,
            header_policy,
            generation,
        })
    }
}

/// The JWKS cache depends only on where keys come from and which algorithms may use them.
fn same_key_source(a: &JwtConfig, b: &JwtConfig) -> bool {
    a.ca_file == b.ca_file
        && a.algorithms == b.algorithms
        && a.refresh_interval == b.refresh_interval
        && a.min_refresh_interval == b.min_refresh_interval
        && a.refetch_cooldown == b.refetch_cooldown
        && a.max_stale == b.max_stale
}
