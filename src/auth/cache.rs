//! The validated-token cache: skips signature verification for a token seen before.
//!
//! Keyed by SHA-256 of the *entire* token string, so a token with the same header and payload
//! but another signature is a different key (threats T40). An entry remembers the JWKS key-set
//! generation it was verified under and is ignored once the keys change; `exp` and `nbf` are
//! re-checked on every hit, so the cache never extends a token's life. Failures are never cached.
//! One cache belongs to one config generation, so a reload starts empty.
//!
//! Bounded by entry count and by weight at once: every entry weighs at least [`ENTRY_WEIGHT`]
//! (more when its token is large) against a capacity of `jwt.token_cache_size` × that weight,
//! so the cache never holds more than `token_cache_size` entries, nor more than that many
//! typical entries' worth of memory when callers present large tokens.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;

use super::VerifiedToken;

/// Entries are dropped after this long even if the token lives longer.
const MAX_ENTRY_AGE: Duration = Duration::from_secs(600);

/// The least an entry weighs: a typical token's parsed claims, key and bookkeeping fit in it.
pub const ENTRY_WEIGHT: u32 = 4096;
/// Parsed claims take about this many bytes per byte of token (base64 text, then a JSON map).
const BYTES_PER_TOKEN_BYTE: u32 = 3;

/// The cache key: the token's SHA-256.
pub type TokenKey = [u8; 32];

struct Entry {
    token: VerifiedToken,
    jwks_generation: u64,
    exp: f64,
    nbf: Option<f64>,
    weight: u32,
}

/// A bounded map from token digest to verified claims; a size of 0 disables it.
pub struct TokenCache {
    entries: Option<moka::sync::Cache<TokenKey, Arc<Entry>>>,
    leeway: f64,
}

impl TokenCache {
    pub fn new(capacity: u64, leeway: Duration) -> Self {
        let entries = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .weigher(|_, entry: &Arc<Entry>| entry.weight)
                .max_capacity(capacity.saturating_mul(u64::from(ENTRY_WEIGHT)))
                .time_to_live(MAX_ENTRY_AGE)
                .build()
        });
        Self {
            entries,
            leeway: leeway.as_secs_f64(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The cache key for a token's bytes.
    pub fn key(token: impl AsRef<[u8]>) -> TokenKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, token.as_ref()).as_ref());
        key
    }

    /// A cached verification still valid at `now` under the current key set, if any.
    pub fn get(&self, key: &TokenKey, jwks_generation: u64, now: u64) -> Option<VerifiedToken> {
        let entry = self.entries.as_ref()?.get(key)?;
        let now = now as f64;
        let fresh = entry.jwks_generation == jwks_generation
            // Expired at `exp` itself (RFC 7519 §4.1.4), as the verifier decides.
            && entry.exp + self.leeway > now
            && entry.nbf.is_none_or(|nbf| nbf - self.leeway <= now);
        if fresh {
            Some(entry.token.clone())
        } else {
            self.entries.as_ref()?.invalidate(key);
            None
        }
    }

    /// Remembers a token (`token_len` bytes long) that passed every check under
    /// `jwks_generation`.
    pub fn insert(
        &self,
        key: TokenKey,
        token: &VerifiedToken,
        token_len: usize,
        jwks_generation: u64,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let Some(exp) = token.claims.get("exp").and_then(Value::as_f64) else {
            return;
        };
        let nbf = token.claims.get("nbf").and_then(Value::as_f64);
        entries.insert(
            key,
            Arc::new(Entry {
                token: token.clone(),
                jwks_generation,
                exp,
                nbf,
                weight: weight(token_len),
            }),
        );
    }

    /// Entries and total weight, after pending evictions.
    #[cfg(test)]
    fn usage(&self) -> (u64, u64) {
        self.entries.as_ref().map_or((0, 0), |entries| {
            entries.run_pending_tasks();
            (entries.entry_count(), entries.weighted_size())
        })
    }
}

fn weight(token_len: usize) -> u32 {
    u32::try_from(token_len)
        .unwrap_or(u32::MAX)
        .saturating_mul(BYTES_PER_TOKEN_BYTE)
        .max(ENTRY_WEIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn verified(exp: u64, nbf: Option<u64>) -> VerifiedToken {
        let mut claims = Map::new();
        claims.insert("exp".into(), json!(exp));
        if let Some(nbf) = nbf {
            claims.insert("nbf".into(), json!(nbf));
        }
        VerifiedToken {
            claims: Arc::new(claims),
            digest: [0; 32],
        }
    }

    #[test]
    fn hit_returns_the_same_claims() {
        let cache = TokenCache::new(10, Duration::ZERO);
        let key = TokenCache::key("a.b.c");
        cache.insert(key, &verified(1_000, None), 5, 7);
        let hit = cache.get(&key, 7, 900).unwrap();
        assert_eq!(hit.claims["exp"], 1_000);
        assert!(
            cache.get(&TokenCache::key("a.b.d"), 7, 900).is_none(),
            "other signature, other key"
        );
    }

    #[test]
    fn expiry_and_nbf_are_rechecked_on_every_hit() {
        let cache = TokenCache::new(10, Duration::from_secs(30));
        let key = TokenCache::key("t");
        cache.insert(key, &verified(1_000, Some(500)), 1, 1);
        assert!(cache.get(&key, 1, 1_029).is_some(), "within leeway");
        assert!(
            cache.get(&key, 1, 1_030).is_none(),
            "expired at exp + leeway itself, while cached"
        );
        assert!(
            cache.get(&key, 1, 900).is_none(),
            "an expired entry is dropped, not resurrected"
        );
        cache.insert(key, &verified(1_000, Some(500)), 1, 1);
        assert!(cache.get(&key, 1, 400).is_none(), "not yet valid");
    }

    #[test]
    fn new_key_set_invalidates() {
        let cache = TokenCache::new(10, Duration::ZERO);
        let key = TokenCache::key("t");
        cache.insert(key, &verified(1_000, None), 1, 1);
        assert!(cache.get(&key, 2, 900).is_none());
    }

    #[test]
    fn size_zero_disables() {
        let cache = TokenCache::new(0, Duration::ZERO);
        assert!(!cache.is_enabled());
        let key = TokenCache::key("t");
        cache.insert(key, &verified(1_000, None), 1, 1);
        assert!(cache.get(&key, 1, 900).is_none());
    }

    /// A cache of 10 typical entries after 50 distinct tokens of `token_len` bytes.
    fn filled(token_len: usize) -> (u64, u64) {
        let cache = TokenCache::new(10, Duration::ZERO);
        for i in 0..50 {
            let key = TokenCache::key(format!("{token_len}-{i}"));
            cache.insert(key, &verified(1_000, None), token_len, 1);
        }
        cache.usage()
    }

    #[test]
    fn bounded_by_entry_count_and_by_weight() {
        let (entries, weight) = filled(600);
        assert!(
            (5..=10).contains(&entries),
            "{entries} entries in a cache of 10"
        );
        assert!(weight <= 10 * u64::from(ENTRY_WEIGHT));

        // 8 KiB tokens (the bearer limit) weigh six typical entries each.
        let (entries, weight) = filled(8192);
        assert!(
            entries <= 1,
            "{entries} large entries where 10 typical ones fit"
        );
        assert!(weight <= 10 * u64::from(ENTRY_WEIGHT));
        assert_eq!(super::weight(600), ENTRY_WEIGHT);
        assert_eq!(super::weight(8192), 3 * 8192);
    }
}
