//! The issuer's signing keys: fetched from the JWKS URL, filtered for safety, cached, refreshed.
//!
//! Refresh runs in a background task, every `refresh_interval` or sooner when the endpoint's
//! `Cache-Control: max-age` says so (never below `min_refresh_interval`), revalidating with
//! `If-None-Match`. A token with an unknown `kid` triggers at most one extra fetch per
//! `refetch_cooldown`, and concurrent requests share it. On fetch failure the last good keys
//! serve until they are older than `max_stale`.

mod parse;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::{HeaderValue, StatusCode, Uri};
use jsonwebtoken::{Algorithm, DecodingKey};

pub use super::fetch::FetchError;
use super::fetch::{self, IdpClient};
use crate::config::JwtConfig;
use crate::metrics::{JwksMetrics, JwksResult};
use crate::tls::TlsError;
pub use parse::parse_jwks;

/// A JWKS larger than this is refused (threats T36): real sets are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys beyond this count are ignored.
const MAX_KEYS: usize = 100;
/// RFC 7518 §3.3: RSA keys MUST be 2048 bits or larger.
const MIN_RSA_BITS: usize = 2048;
const ACCEPT: &str = "application/jwk-set+json, application/json";

/// One usable verification key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The algorithms this key may verify: its `alg` if published, else those its type implies,
    /// always within the configured allow-list.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// A loaded key set.
pub struct KeySet {
    pub keys: Arc<Vec<VerifyKey>>,
    /// Changes whenever the keys change (not on a 304 revalidation); lets concurrent refetches
    /// coalesce and keys the token cache.
    pub generation: u64,
    /// When the keys were last confirmed by the endpoint (200 or 304).
    pub fetched_at: Instant,
    /// The same moment in wall-clock time, for `scimgate_jwks_last_success_timestamp_seconds`.
    confirmed: SystemTime,
    etag: Option<HeaderValue>,
    max_age: Option<Duration>,
    /// SHA-256 of the JWKS body: an identical body keeps the generation (and cached tokens).
    digest: [u8; 32],
}

/// The key cache shared by all requests of a config generation.
pub struct Jwks {
    url: Uri,
    /// `None`: keys given at construction (scimgate's own issuer), never fetched nor stale.
    client: Option<IdpClient>,
    allowed: Vec<Algorithm>,
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    refetch_cooldown: Duration,
    max_stale: Duration,
    current: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    /// Single-flight gate for on-demand refetches; holds the time of the last attempt.
    refetch_gate: tokio::sync::Mutex<Option<Instant>>,
    metrics: JwksMetrics,
    /// In service: its key count and last success are what the tenant's gauges show. A cache
    /// built by a reload that may still fail fetches without touching them.
    live: AtomicBool,
}

// === impl KeySet ===

impl KeySet {
    /// A set built directly from keys, for the unit tests of key selection and verification
    /// (the proxy and `explain` only use sets `Jwks` fetched).
    #[cfg(test)]
    pub(crate) fn new(keys: Vec<VerifyKey>, generation: u64) -> Self {
        Self {
            keys: Arc::new(keys),
            generation,
            fetched_at: Instant::now(),
            confirmed: SystemTime::now(),
            etag: None,
            max_age: None,
            digest: [0; 32],
        }
    }

    /// Keys that may verify a token with this `kid` and `alg`. Without a `kid`, only an
    /// unambiguous set (exactly one key for the algorithm) is accepted (threats T03).
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&VerifyKey> {
        let for_alg = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
        match kid {
            Some(kid) => for_alg.filter(|k| k.kid.as_deref() == Some(kid)).collect(),
            None => {
                let all: Vec<&VerifyKey> = for_alg.collect();
                if all.len() == 1 { all } else { Vec::new() }
            }
        }
    }

    /// Whether any key carries this `kid` (whatever its algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

// === impl Jwks ===

impl Jwks {
    /// Builds the cache for keys at `url`, counting into one tenant's series. Nothing is fetched
    /// until `refresh` or `run`, and the gauges are left alone until `go_live`.
    pub fn new(config: &JwtConfig, url: Uri, metrics: JwksMetrics) -> Result<Self, TlsError> {
        Ok(Self {
            url,
            client: Some(fetch::client(config.ca_file.as_deref())?),
            allowed: config.algorithms.clone(),
            refresh_interval: config.refresh_interval,
            min_refresh_interval: config.min_refresh_interval,
            refetch_cooldown: config.refetch_cooldown,
            max_stale: config.max_stale,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            refetch_gate: tokio::sync::Mutex::new(None),
            metrics,
            live: AtomicBool::new(false),
        })
    }

    /// A cache of fixed keys: `keys_json` (scimgate's own issuer's JWK Set) parsed by the same
    /// parser as a fetched set. Never fetched and never stale: refreshes and unknown-kid
    /// refetches leave it as it is, and `run` returns at once. `url` is where the set is
    /// published, for messages.
    pub fn fixed(
        config: &JwtConfig,
        url: Uri,
        keys_json: &[u8],
        metrics: JwksMetrics,
    ) -> Result<Self, FetchError> {
        let (keys, dropped) = parse_jwks(keys_json, &config.algorithms)?;
        if keys.is_empty() || !dropped.is_empty() {
            return Err(FetchError::Invalid(format!(
                "unusable local keys: {dropped:?}"
            )));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, keys_json).as_ref(),
        );
        let set = KeySet {
            keys: Arc::new(keys),
            generation: 1,
            fetched_at: Instant::now(),
            confirmed: SystemTime::now(),
            etag: None,
            max_age: None,
            digest,
        };
        Ok(Self {
            url,
            client: None,
            allowed: config.algorithms.clone(),
            refresh_interval: config.refresh_interval,
            min_refresh_interval: config.min_refresh_interval,
            refetch_cooldown: config.refetch_cooldown,
            max_stale: config.max_stale,
            current: ArcSwapOption::from_pointee(set),
            generation: AtomicU64::new(1),
            refetch_gate: tokio::sync::Mutex::new(None),
            metrics,
            live: AtomicBool::new(false),
        })
    }

    /// Where the keys come from.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The current keys, or `None` if they never loaded or are older than `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|set| self.client.is_none() || set.fetched_at.elapsed() <= self.max_stale)
    }

    /// Ready to serve: keys loaded and fresh enough.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// Fetches (or revalidates), parses and installs the key set. On error the previous keys stay.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, FetchError> {
        if self.client.is_none() {
            return self
                .current
                .load_full()
                .ok_or_else(|| FetchError::Invalid("no local keys".into()));
        }
        let result = self.fetch_key_set().await;
        self.metrics.fetch(fetch_result(&result));
        let set = result?;
        self.current.store(Some(Arc::clone(&set)));
        if self.live.load(Ordering::Acquire) {
            self.metrics.loaded(set.keys.len(), set.confirmed);
        }
        Ok(set)
    }

    /// Puts the cache in service: from now on the tenant's gauges show its keys.
    pub fn go_live(&self) {
        self.live.store(true, Ordering::Release);
        if let Some(set) = self.current.load_full() {
            self.metrics.loaded(set.keys.len(), set.confirmed);
        }
    }

    /// Takes the cache out of service (a reload replaced it): a refetch by a request still
    /// running on the old generation no longer moves the tenant's gauges.
    pub fn retire(&self) {
        self.live.store(false, Ordering::Release);
    }

    async fn fetch_key_set(&self) -> Result<Arc<KeySet>, FetchError> {
        let previous = self.current.load_full();
        let etag = previous.as_ref().and_then(|s| s.etag.clone());
        let Some(client) = &self.client else {
            return previous.ok_or_else(|| FetchError::Invalid("no local keys".into()));
        };
        let fetched = fetch::get(client, &self.url, ACCEPT, etag.as_ref(), MAX_JWKS_BYTES).await?;
        let max_age = fetch::max_age(&fetched.headers);
        let new_etag = fetched.headers.get(http::header::ETAG).cloned();
        let unchanged = |prev: &KeySet, digest: [u8; 32]| KeySet {
            keys: Arc::clone(&prev.keys),
            generation: prev.generation,
            fetched_at: Instant::now(),
            confirmed: SystemTime::now(),
            etag: new_etag.clone().or_else(|| etag.clone()),
            max_age,
            digest,
        };
        match (fetched.status, previous) {
            (StatusCode::NOT_MODIFIED, Some(prev)) if etag.is_some() => {
                tracing::debug!(url = %self.url, "JWKS not modified");
                Ok(Arc::new(unchanged(&prev, prev.digest)))
            }
            (StatusCode::OK, previous) => {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &fetched.body).as_ref(),
                );
                if let Some(prev) = previous.filter(|p| p.digest == digest) {
                    return Ok(Arc::new(unchanged(&prev, digest)));
                }
                let (keys, dropped) = parse_jwks(&fetched.body, &self.allowed)?;
                for note in dropped {
                    tracing::warn!(note = %note, "JWKS key ignored");
                }
                if keys.is_empty() {
                    return Err(FetchError::Invalid("no usable keys".into()));
                }
                tracing::info!(keys = keys.len(), url = %self.url, "JWKS loaded");
                Ok(Arc::new(KeySet {
                    keys: Arc::new(keys),
                    generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
                    fetched_at: Instant::now(),
                    confirmed: SystemTime::now(),
                    etag: new_etag,
                    max_age,
                    digest,
                }))
            }
            (status, _) => Err(FetchError::Status(status.as_u16())),
        }
    }

    /// An on-demand refetch (unknown `kid`, or no keys yet), shared by concurrent callers and
    /// limited to one attempt per `refetch_cooldown`. `seen` is the generation the caller
    /// looked at: if a newer set arrived meanwhile, it is returned without fetching.
    pub async fn refetch_after(&self, seen: Option<u64>) -> Option<Arc<KeySet>> {
        // Fixed keys are all there is: an unknown kid stays unknown.
        self.client.as_ref()?;
        let mut last_attempt = self.refetch_gate.lock().await;
        if let Some(set) = self.current()
            && Some(set.generation) != seen
        {
            return Some(set);
        }
        if last_attempt.is_some_and(|t| t.elapsed() < self.refetch_cooldown) {
            return None;
        }
        *last_attempt = Some(Instant::now());
        match self.refresh().await {
            Ok(_) => self.current(),
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "JWKS refetch failed");
                None
            }
        }
    }

    /// Background refresh: immediately, then per `next_refresh`; after a failure, retry with
    /// backoff from 1 s up to the interval so an IdP outage is not hammered.
    pub async fn run(self: Arc<Self>) {
        if self.client.is_none() {
            return;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(set) => {
                    backoff = Duration::from_secs(1);
                    self.next_refresh(set.max_age)
                }
                Err(e) => {
                    tracing::warn!(error = %e, url = %self.url, "JWKS refresh failed; keeping the last good keys");
                    let wait = backoff.min(self.refresh_interval);
                    backoff = (backoff * 2).min(self.refresh_interval);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// `max-age` from the endpoint, bounded by `[min_refresh_interval, refresh_interval]`.
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.refresh_interval)
            .clamp(self.min_refresh_interval, self.refresh_interval)
    }
}

/// The `result` label of one fetch.
fn fetch_result<T>(result: &Result<T, FetchError>) -> JwksResult {
    match result {
        Ok(_) => JwksResult::Ok,
        Err(FetchError::Unreachable(_)) => JwksResult::Unreachable,
        Err(FetchError::Timeout) => JwksResult::Timeout,
        Err(FetchError::Status(_)) => JwksResult::BadStatus,
        Err(FetchError::TooLarge) => JwksResult::TooLarge,
        Err(FetchError::Invalid(_)) => JwksResult::Invalid,
    }
}

#[cfg(test)]
mod tests;
