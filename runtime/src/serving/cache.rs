//! A bounded cache whose entries expire, with time passed in by the caller so the TTL logic is
//! testable without sleeping.
//!
//! Mirrors the caches in front of the delegated reviews: upstream's token cache
//! (staging/src/k8s.io/apiserver/pkg/authentication/token/cache) and the webhook authorizer's
//! `LRUExpireCache` (staging/src/k8s.io/apiserver/plugin/pkg/authorizer/webhook). Both are
//! size-bounded so a flood of distinct bogus tokens cannot grow memory without limit.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Upstream's webhook authorizer cache holds 8192 entries; the token cache is striped over a
/// similar total. One size for both keeps memory bounded and predictable.
pub(crate) const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(8192).unwrap();

pub(crate) struct ExpiringCache<K: Hash + Eq, V: Clone> {
    entries: LruCache<K, (V, Instant)>,
}

impl<K: Hash + Eq, V: Clone> ExpiringCache<K, V> {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: LruCache::new(capacity),
        }
    }

    /// The cached value, if it has not expired at `now`. Expired entries are dropped on sight.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, expires_at)) if now < *expires_at => Some(value.clone()),
            Some(_) => {
                self.entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Caches `value` until `now + ttl`. A zero TTL disables caching, as upstream's
    /// `--authorization-webhook-cache-*-ttl=0` does.
    pub(crate) fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        self.entries.put(key, (value, now + ttl));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn entry_is_served_until_its_ttl_elapses_and_then_forgotten() {
        let start = Instant::now();
        let mut cache = ExpiringCache::new(DEFAULT_CAPACITY);
        cache.insert("token", true, TTL, start);

        assert_eq!(cache.get(&"token", start), Some(true));
        assert_eq!(
            cache.get(&"token", start + Duration::from_millis(9_999)),
            Some(true)
        );
        assert_eq!(cache.get(&"token", start + TTL), None);
        assert_eq!(cache.len(), 0, "expired entries are evicted when seen");
    }

    #[test]
    fn reinserting_an_entry_restarts_its_ttl() {
        let start = Instant::now();
        let mut cache = ExpiringCache::new(DEFAULT_CAPACITY);
        cache.insert("k", 1, TTL, start);
        cache.insert("k", 2, TTL, start + Duration::from_secs(8));

        assert_eq!(cache.get(&"k", start + Duration::from_secs(12)), Some(2));
        assert_eq!(cache.get(&"k", start + Duration::from_secs(18)), None);
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let now = Instant::now();
        let mut cache = ExpiringCache::new(DEFAULT_CAPACITY);
        cache.insert("k", 1, Duration::ZERO, now);
        assert_eq!(cache.get(&"k", now), None);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used_entry() {
        let now = Instant::now();
        let mut cache = ExpiringCache::new(NonZeroUsize::new(2).unwrap());
        cache.insert("a", 1, TTL, now);
        cache.insert("b", 2, TTL, now);
        assert_eq!(cache.get(&"a", now), Some(1));
        cache.insert("c", 3, TTL, now);

        assert_eq!(cache.get(&"b", now), None);
        assert_eq!(cache.get(&"a", now), Some(1));
        assert_eq!(cache.get(&"c", now), Some(3));
    }
}
