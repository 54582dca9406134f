//! One generation of configuration and everything built from it, swapped atomically on reload.
//!
//! A request loads the current `Runtime` once and uses it to the end, so it never sees half of
//! an old config and half of a new one (threats T43).

use std::path::Path;
use std::sync::Arc;

use http::Uri;
use prometheus::IntCounter;

use crate::auth::discovery::{self, DiscoveryError};
use crate::auth::issuers::TenantAuth;
use crate::auth::jwks::{FetchError, Jwks};
use crate::auth::verify::Verifier;
use crate::config::{Config, JwtConfig, PrefixMatch, Rule, Tenant};
use crate::headers::HeaderPolicy;
use crate::issuer::{Issuer, IssuerError};
use crate::metrics::{GuardrailMetrics, Metrics};
use crate::tls::TlsError;
use crate::upstream::Upstream;

/// The immutable per-generation state the pipeline reads.
pub(crate) struct Runtime {
    pub config: Arc<Config>,
    /// Parallel to `config.tenants`.
    pub tenants: Vec<TenantRuntime>,
    /// Strips every tenant's credential headers: a caller must not send any account's key.
    pub header_policy: HeaderPolicy,
    /// scimgate's own issuer (`[issuer]`), built for this generation.
    pub issuer: Option<Arc<Issuer>>,
    /// The key caches of the issuer's assertion clients, refreshed in the background.
    pub assertion_jwks: Vec<Arc<Jwks>>,
}

/// Why a generation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error("the issuer's own keys: {0}")]
    LocalKeys(#[from] FetchError),
}

/// What one tenant needs at request time.
pub(crate) struct TenantRuntime {
    /// `[jwt]`'s key cache; `None` when the tenant trusts scimgate's own issuer alone.
    pub jwks: Option<Arc<Jwks>>,
    /// `[[jwt.extra_issuers]]`' key caches, parallel to `Tenant::extra_issuers`.
    pub extra_jwks: Vec<Arc<Jwks>>,
    /// The verifier of each issuer the tenant trusts; each owns its validated-token cache, so
    /// a token cached for one tenant is never a hit for another.
    pub auth: TenantAuth,
    pub upstream: Arc<Upstream>,
    /// `scimgate_rule_matches_total` for each of the tenant's rules, parallel to `rules`.
    rule_matches: Vec<IntCounter>,
    /// `scimgate_guardrail_trips_total` and the deprovision budget gauges of the tenant.
    pub guardrails: GuardrailMetrics,
    /// The bytes of `jwt.ca_file` and `upstream.ca_file` when this generation read them: a
    /// client is reused only while its CA file still holds them.
    jwt_ca: Option<Vec<u8>>,
    upstream_ca: Option<Vec<u8>>,
}

/// A request routed to its tenant.
pub(crate) struct Route<'r, 'p> {
    pub tenant: &'r Tenant,
    pub runtime: &'r TenantRuntime,
    pub matched: PrefixMatch<'p>,
}

impl Runtime {
    /// Builds a generation. `jwks_urls` are the resolved key locations, per tenant `[jwt]`'s
    /// then each extra issuer's. A
    /// tenant's JWKS cache and upstream client are reused from the previous generation (same
    /// tenant name, unchanged settings and CA file contents), so keys stay loaded and pooled
    /// connections stay warm. Reads the CA files: blocking.
    pub(crate) fn build(
        config: Config,
        jwks_urls: Vec<Vec<Uri>>,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let mut assertion_jwks = Vec::new();
        let issuer = match &config.issuer {
            Some(issuer_config) => {
                let built = Issuer::build(Arc::clone(issuer_config), |_, settings| {
                    let url = settings.jwks_url.clone().unwrap_or_default();
                    let jwks = Arc::new(Jwks::new(
                        settings,
                        url,
                        crate::metrics::JwksMetrics::unexported(),
                    )?);
                    assertion_jwks.push(Arc::clone(&jwks));
                    Ok(Verifier::new(settings, jwks, Arc::clone(metrics)))
                })?;
                let old = previous.and_then(|p| p.issuer.as_deref());
                Some(Arc::new(match old {
                    Some(old) => built.carry_over(old),
                    None => built,
                }))
            }
            None => None,
        };
        let mut tenants = Vec::with_capacity(config.tenants.len());
        for (tenant, urls) in config.tenants.iter().zip(jwks_urls) {
            let mut urls = urls.into_iter();
            let old = previous.and_then(|p| p.find(&tenant.name));
            let jwt_ca = read_ca(tenant.jwt.ca_file.as_deref());
            let upstream_ca = read_ca(tenant.upstream.ca_file.as_deref());
            let jwks = match (tenant.jwt.is_external(), old) {
                (false, _) => None,
                (true, Some((old, old_runtime)))
                    if old_runtime.jwks.as_ref().is_some_and(|j| {
                        Some(j.url()) == urls.as_slice().first()
                            && same_key_source(&old.jwt, &tenant.jwt)
                            && old_runtime.jwt_ca == jwt_ca
                    }) =>
                {
                    urls.next();
                    old_runtime.jwks.clone()
                }
                (true, _) => {
                    let url = urls.next().unwrap_or_default();
                    Some(Arc::new(Jwks::new(
                        &tenant.jwt,
                        url,
                        metrics.jwks(&tenant.name),
                    )?))
                }
            };
            let upstream = match old {
                Some((old, old_runtime))
                    if old.upstream == tenant.upstream
                        && old_runtime.upstream_ca == upstream_ca =>
                {
                    Arc::clone(&old_runtime.upstream)
                }
                _ => Arc::new(Upstream::new(&tenant.upstream)?),
            };
            let mut external: Vec<(Option<String>, Verifier)> = jwks
                .iter()
                .map(|jwks| {
                    let verifier =
                        Verifier::new(&tenant.jwt, Arc::clone(jwks), Arc::clone(metrics));
                    (tenant.jwt.issuer.clone(), verifier)
                })
                .collect();
            let mut extra_jwks = Vec::with_capacity(tenant.extra_issuers.len());
            for (extra, url) in tenant.extra_issuers.iter().zip(urls.by_ref()) {
                let reused = old.and_then(|(old, old_runtime)| {
                    let found =
                        old.extra_issuers
                            .iter()
                            .zip(&old_runtime.extra_jwks)
                            .find(|(o, j)| {
                                j.url() == &url
                                    && same_key_source(o, extra)
                                    && old_runtime.jwt_ca == jwt_ca
                            });
                    found.map(|(_, j)| Arc::clone(j))
                });
                let extra_keys = match reused {
                    Some(j) => j,
                    None => Arc::new(Jwks::new(extra, url, metrics.jwks(&tenant.name))?),
                };
                external.push((
                    extra.issuer.clone(),
                    Verifier::new(extra, Arc::clone(&extra_keys), Arc::clone(metrics)),
                ));
                extra_jwks.push(extra_keys);
            }
            let mut auth = TenantAuth::new(external);
            if let Some(issuer) = &issuer {
                let name = (issuer.config().tenancy == crate::issuer::config::TenancyKind::Named)
                    .then(|| tenant.name.clone());
                let settings = issuer.config().local_jwt(name.as_deref());
                let url = settings.jwks_url.clone().unwrap_or_default();
                let keys = Jwks::fixed(
                    &settings,
                    url,
                    issuer.jwks_json().as_bytes(),
                    metrics.jwks(&tenant.name),
                )?;
                let verifier = Verifier::new(&settings, Arc::new(keys), Arc::clone(metrics));
                auth = auth.with_local(Arc::clone(issuer), verifier, name);
            }
            let rule_matches = tenant
                .rules
                .iter()
                .map(|rule| metrics.rule_counter(&tenant.name, &rule.name))
                .collect();
            let guardrails = metrics.guardrails(&tenant.name, tenant.guardrails.max_deprovisions);
            tenants.push(TenantRuntime {
                jwks,
                extra_jwks,
                auth,
                upstream,
                rule_matches,
                guardrails,
                jwt_ca,
                upstream_ca,
            });
        }
        let header_policy = HeaderPolicy::new(&config.server.forward_headers);
        Ok(Self {
            config: Arc::new(config),
            tenants,
            header_policy,
            issuer,
            assertion_jwks,
        })
    }

    /// The first tenant whose prefix matches the path.
    pub(crate) fn route<'p>(&self, path: &'p str) -> Option<Route<'_, 'p>> {
        self.config
            .tenants
            .iter()
            .zip(&self.tenants)
            .find_map(|(tenant, runtime)| {
                let matched = tenant.prefix.matches(path)?;
                Some(Route {
                    tenant,
                    runtime,
                    matched,
                })
            })
    }

    /// Every tenant's signing keys are loaded and fresh.
    pub(crate) fn is_ready(&self) -> bool {
        self.tenants
            .iter()
            .all(|t| t.jwks.iter().chain(&t.extra_jwks).all(|j| j.is_ready()))
    }

    /// Every key cache refreshed in the background: the tenants' and the assertion issuers'.
    pub(crate) fn fetched_key_sets(&self) -> Vec<Arc<Jwks>> {
        let tenants = self
            .tenants
            .iter()
            .flat_map(|t| t.jwks.iter().chain(&t.extra_jwks));
        tenants.chain(&self.assertion_jwks).cloned().collect()
    }

    fn find(&self, name: &str) -> Option<(&Tenant, &TenantRuntime)> {
        self.config
            .tenants
            .iter()
            .zip(&self.tenants)
            .find(|(t, _)| t.name == name)
    }
}

impl TenantRuntime {
    /// Counts a request `rule` (one of `tenant`'s rules) allowed.
    pub(crate) fn rule_matched(&self, tenant: &Tenant, rule: &Rule) {
        // By identity: `rule` is an element of `tenant.rules`, which this runtime was built from.
        let index = tenant.rules.iter().position(|r| std::ptr::eq(r, rule));
        if let Some(counter) = index.and_then(|i| self.rule_matches.get(i)) {
            counter.inc();
        }
    }
}

/// Each tenant's JWKS URLs, configured or discovered: `[jwt]`'s, then each extra issuer's.
pub(crate) async fn jwks_urls(config: &Config) -> Result<Vec<Vec<http::Uri>>, DiscoveryError> {
    let mut urls = Vec::with_capacity(config.tenants.len());
    for tenant in &config.tenants {
        let mut tenant_urls = Vec::new();
        if tenant.jwt.is_external() {
            tenant_urls.push(discovery::jwks_url(&tenant.jwt).await?);
        }
        for extra in &tenant.extra_issuers {
            tenant_urls.push(discovery::jwks_url(extra).await?);
        }
        urls.push(tenant_urls);
    }
    Ok(urls)
}

/// A CA file's bytes (`None` when there is none, or it cannot be read: then building the client
/// fails and says why).
fn read_ca(path: Option<&Path>) -> Option<Vec<u8>> {
    path.and_then(|p| std::fs::read(p).ok())
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
