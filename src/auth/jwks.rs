//! The issuer's signing keys: fetched from `jwt.jwks_url`, filtered for safety, cached, refreshed.
//!
//! Refresh runs in a background task every `refresh_interval`. A token with an unknown `kid`
//! triggers at most one extra fetch per `refetch_cooldown`, and concurrent requests share it.
//! On fetch failure the last good keys serve until they are older than `max_stale`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::config::JwtConfig;
use crate::metrics::{JwksResult, Metrics};
use crate::tls::{TlsError, client_config};

/// A JWKS larger than this is refused (threats T36): real sets are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys beyond this count are ignored.
const MAX_KEYS: usize = 100;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 7518 §3.3: RSA keys MUST be 2048 bits or larger.
const MIN_RSA_BITS: usize = 2048;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

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
    pub keys: Vec<VerifyKey>,
    /// Increases with every successful load; lets concurrent refetches coalesce.
    pub generation: u64,
    pub fetched_at: Instant,
}

/// Why a fetch failed. The old keys stay in use.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("JWKS request failed: {0}")]
    Unreachable(String),
    #[error("JWKS request timed out")]
    Timeout,
    #[error("JWKS endpoint answered HTTP {0}")]
    Status(u16),
    #[error("JWKS body exceeds {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("JWKS is invalid: {0}")]
    Invalid(String),
}

/// The key cache shared by all requests.
pub struct Jwks {
    url: http::Uri,
    client: HttpsClient,
    allowed: Vec<Algorithm>,
    refresh_interval: Duration,
    refetch_cooldown: Duration,
    max_stale: Duration,
    current: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    /// Single-flight gate for on-demand refetches; holds the time of the last attempt.
    refetch_gate: tokio::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

// === impl KeySet ===

impl KeySet {
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
    /// Builds the cache and its HTTPS client. Nothing is fetched until `refresh` or `run`.
    pub fn new(config: &JwtConfig, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(config.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            url: config.jwks_url.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            allowed: config.algorithms.clone(),
            refresh_interval: config.refresh_interval,
            refetch_cooldown: config.refetch_cooldown,
            max_stale: config.max_stale,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            refetch_gate: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    /// The current keys, or `None` if they never loaded or are older than `max_stale`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|set| set.fetched_at.elapsed() <= self.max_stale)
    }

    /// Ready to serve: keys loaded and fresh enough.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// Fetches, parses and installs the key set. On error the previous keys stay.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, FetchError> {
        let result = self.fetch_and_parse().await;
        self.metrics.jwks_fetch(JwksResult::of(&result));
        let keys = result?;
        let set = Arc::new(KeySet {
            keys,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            fetched_at: Instant::now(),
        });
        self.metrics.jwks_loaded(set.keys.len());
        self.current.store(Some(Arc::clone(&set)));
        tracing::info!(keys = set.keys.len(), url = %self.url, "JWKS loaded");
        Ok(set)
    }

    /// An on-demand refetch (unknown `kid`, or no keys yet), shared by concurrent callers and
    /// limited to one attempt per `refetch_cooldown`. `seen` is the generation the caller
    /// looked at: if a newer set arrived meanwhile, it is returned without fetching.
    pub async fn refetch_after(&self, seen: Option<u64>) -> Option<Arc<KeySet>> {
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
                tracing::warn!(error = %e, "JWKS refetch failed");
                None
            }
        }
    }

    /// Background refresh: immediately, then every `refresh_interval`; after a failure, retry
    /// with backoff from 1 s up to the interval so an IdP outage is not hammered.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff = Duration::from_secs(1);
                    self.refresh_interval
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

    async fn fetch_and_parse(&self) -> Result<Vec<VerifyKey>, FetchError> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| FetchError::Timeout)??;
        let (keys, dropped) = parse_jwks(&body, &self.allowed)?;
        for note in dropped {
            tracing::warn!(note = %note, "JWKS key ignored");
        }
        if keys.is_empty() {
            return Err(FetchError::Invalid("no usable keys".into()));
        }
        Ok(keys)
    }

    async fn fetch(&self) -> Result<Bytes, FetchError> {
        let request = http::Request::get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        // Redirects are not followed: the key source is exactly the configured URL (T35).
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let limited = Limited::new(response.into_body(), MAX_JWKS_BYTES);
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge),
            Err(e) => Err(FetchError::Unreachable(e.to_string())),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Parses a JWK Set, keeping the keys that are safe to use and explaining each one dropped.
///
/// Keys are parsed one by one so one bad entry does not discard the set (RFC 7517 §5).
/// Dropped: `kty: oct` (its secret is public), `use: enc`, `key_ops` without `verify`, RSA
/// below 2048 bits, curves other than P-256/P-384/Ed25519, and algorithms outside `allowed`.
pub fn parse_jwks(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<(Vec<VerifyKey>, Vec<String>), FetchError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| FetchError::Invalid(e.to_string()))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err(FetchError::Invalid("no \"keys\" array".into()));
    };
    let mut keys = Vec::new();
    let mut dropped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let name = kid
            .clone()
            .map_or_else(|| format!("#{i} (no kid)"), |k| format!("kid {k:?}"));
        if keys.len() == MAX_KEYS {
            dropped.push(format!("{name}: more than {MAX_KEYS} keys"));
            continue;
        }
        match parse_key(entry, allowed) {
            Ok((algorithms, key)) => keys.push(VerifyKey {
                kid,
                algorithms,
                key,
            }),
            Err(reason) => dropped.push(format!("{name}: {reason}")),
        }
    }
    Ok((keys, dropped))
}

fn parse_key(
    entry: &Value,
    allowed: &[Algorithm],
) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let obj = entry.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str);
    if let Some(u) = obj.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("use {u} is not \"sig\""));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let (implied, key) = match text("kty") {
        Some("RSA") => rsa_key(obj)?,
        Some("EC") => ec_key(obj)?,
        Some("OKP") => okp_key(obj)?,
        Some("oct") => return Err("symmetric (kty oct) keys are never used".into()),
        Some(other) => return Err(format!("unsupported kty {other:?}")),
        None => return Err("missing kty".into()),
    };
    let algorithms: Vec<Algorithm> = match obj.get("alg") {
        None => implied
            .into_iter()
            .filter(|a| allowed.contains(a))
            .collect(),
        Some(alg) => {
            let alg = alg.as_str().and_then(|a| a.parse::<Algorithm>().ok());
            match alg {
                Some(a) if implied.contains(&a) && allowed.contains(&a) => vec![a],
                Some(a) if implied.contains(&a) => {
                    return Err(format!("alg {a:?} is not in jwt.algorithms"));
                }
                Some(_) | None => return Err("alg does not fit the key type".into()),
            }
        }
    };
    if algorithms.is_empty() {
        return Err("none of its algorithms is in jwt.algorithms".into());
    }
    Ok((algorithms, key))
}

fn b64_len(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(format!("missing {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

fn rsa_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let n = b64_len(obj, "n")?;
    let e = b64_len(obj, "e")?;
    let significant = n.iter().skip_while(|&&b| b == 0).count();
    let bits = n
        .iter()
        .find(|&&b| b != 0)
        .map_or(0, |first| significant * 8 - first.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!("RSA key of {bits} bits is below {MIN_RSA_BITS}"));
    }
    if e.is_empty() || e.last().is_some_and(|b| b % 2 == 0) || e == [1] {
        return Err("RSA exponent is invalid".into());
    }
    use Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
    Ok((
        vec![RS256, RS384, RS512, PS256, PS384, PS512],
        DecodingKey::from_rsa_raw_components(&n, &e),
    ))
}

fn ec_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    let (alg, len) = match obj.get("crv").and_then(Value::as_str) {
        Some("P-256") => (Algorithm::ES256, 32),
        Some("P-384") => (Algorithm::ES384, 48),
        other => return Err(format!("unsupported EC curve {other:?}")),
    };
    let (x, y) = (b64_len(obj, "x")?, b64_len(obj, "y")?);
    if x.len() != len || y.len() != len {
        return Err("EC coordinates have the wrong length".into());
    }
    let key =
        DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
            .map_err(|e| format!("invalid EC key: {e}"))?;
    Ok((vec![alg], key))
}

fn okp_key(obj: &Map<String, Value>) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("unsupported OKP curve (only Ed25519)".into());
    }
    let x = b64_len(obj, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key has the wrong length".into());
    }
    let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x))
        .map_err(|e| format!("invalid Ed25519 key: {e}"))?;
    Ok((vec![Algorithm::EdDSA], key))
}

#[cfg(test)]
mod tests;
