//! The backend's `initialize` results, by the protocol version the client requested. That version
//! is the client's own string, so the map is bounded: at most [`CAPACITY`] versions. When a new one
//! is learned and the map is full, expired entries go first, then the least recently used one. A
//! client that floods distinct versions only evicts entries (each costs the next client of that
//! version one real `initialize`); memory stays at the bound.
//!
//! Shared state: one map behind a mutex, held only for a lookup or an insert. Two requests that
//! learn one version at once both insert a result of the same backend, so the race costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::jsonrpc::RequestId;
use serde_json::Value;

/// How long a learned `initialize` result is used.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most protocol versions remembered (there are five revisions; the rest is room).
pub const CAPACITY: usize = 32;

/// A learned result.
#[derive(Clone)]
pub struct Cached {
    pub result: Value,
    /// The backend handed out a session id with it.
    pub stateful: bool,
    learned: Instant,
}

struct Entry {
    cached: Cached,
    used: Instant,
}

/// The backend's `initialize` results, by requested protocol version.
#[derive(Default)]
pub struct InitializeCache(Mutex<HashMap<String, Entry>>);

impl InitializeCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every change is one map call: a panic elsewhere leaves the map consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fresh result learned for `version`.
    pub fn get(&self, version: &str) -> Option<Cached> {
        let mut entries = self.lock();
        let entry = entries.get_mut(version)?;
        if entry.cached.learned.elapsed() >= CACHE_TTL {
            return None;
        }
        entry.used = Instant::now();
        Some(entry.cached.clone())
    }

    /// Remembers the result of a real `initialize` of `version`.
    pub fn learn(&self, version: &str, result: Value, stateful: bool) {
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.contains_key(version) && entries.len() >= CAPACITY {
            make_room(&mut entries, now);
        }
        let cached = Cached {
            result,
            stateful,
            learned: now,
        };
        entries.insert(version.to_owned(), Entry { cached, used: now });
    }

    /// The backend restarted: learn again.
    pub fn forget(&self) {
        self.lock().clear();
    }

    /// How many versions are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees one place at least: the expired entries, else the least recently used.
fn make_room(entries: &mut HashMap<String, Entry>, now: Instant) {
    entries.retain(|_, e| now.duration_since(e.cached.learned) < CACHE_TTL);
    if entries.len() < CAPACITY {
        return;
    }
    let oldest = entries
        .iter()
        .min_by_key(|(_, e)| e.used)
        .map(|(version, _)| version.clone());
    if let Some(version) = oldest {
        entries.remove(&version);
    }
}

/// Watches a forwarded `initialize`'s reply to learn its result.
pub struct Learn {
    pub id: RequestId,
    pub version: String,
    pub stateful: bool,
    pub cache: Arc<InitializeCache>,
}

impl Learn {
    /// The reply arrived: keep its result.
    pub fn reply(self, reply: &Value) {
        if let Some(result) = reply.get("result") {
            self.cache
                .learn(&self.version, result.clone(), self.stateful);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_flood_of_versions_stays_at_the_bound_and_keeps_the_one_in_use() {
        let cache = InitializeCache::default();
        cache.learn("2025-06-18", json!({"v": "real"}), true);
        for i in 0..10 * CAPACITY {
            cache.learn(&format!("flood-{i}"), json!({"v": i}), true);
            assert!(cache.len() <= CAPACITY);
            // The real clients' version is asked for all along: it is never the least recently used.
            assert!(cache.get("2025-06-18").is_some(), "evicted after {i}");
        }
        assert_eq!(cache.len(), CAPACITY);
        // The newest flood entries are there, the oldest are gone.
        assert!(cache.get(&format!("flood-{}", 10 * CAPACITY - 1)).is_some());
        assert!(cache.get("flood-0").is_none());
    }

    #[test]
    fn relearning_a_known_version_evicts_nothing() {
        let cache = InitializeCache::default();
        for i in 0..CAPACITY {
            cache.learn(&format!("v{i}"), json!(i), false);
        }
        cache.learn("v0", json!("again"), true);
        assert_eq!(cache.len(), CAPACITY);
        let again = cache.get("v0").expect("kept");
        assert_eq!((again.result, again.stateful), (json!("again"), true));
        assert!(cache.get("v1").is_some());
        cache.forget();
        assert!(cache.is_empty());
    }

    #[test]
    fn expired_entries_go_first() {
        let cache = InitializeCache::default();
        for i in 0..CAPACITY {
            cache.learn(&format!("v{i}"), json!(i), false);
        }
        let Some(long_ago) = Instant::now().checked_sub(CACHE_TTL + Duration::from_secs(1)) else {
            return; // the clock started less than CACHE_TTL ago: nothing can have expired
        };
        if let Some(entry) = cache.lock().get_mut("v5") {
            entry.cached.learned = long_ago;
            entry.used = Instant::now() + Duration::from_secs(1); // recently used, but expired
        }
        assert!(cache.get("v5").is_none(), "expired");
        cache.learn("new", json!("n"), false);
        assert_eq!(cache.len(), CAPACITY);
        assert!(!cache.lock().contains_key("v5"));
        assert!(cache.get("v0").is_some());
    }
}
