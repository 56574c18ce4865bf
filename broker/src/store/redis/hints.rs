//! What the pointers (MCP-session links, conversation links, surface indexes) held when this
//! process last read them, so that the next lookup can name the work session they most likely still
//! point at and read it in the same script ([`super::lookup`]): one round trip instead of two.
//!
//! Advisory only: `lookup.lua` reads a hinted work session only when a pointer it has just read
//! names it, so a stale or wrong hint costs the second step, never a wrong answer. Shared by every
//! request of the process behind one mutex held for a map operation; concurrent writers each store
//! an id they read from Redis, and any of them is as good a hint as the others. Bounded: past
//! [`CAPACITY`] entries the map starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::WorkSessionId;

/// Pointers remembered (about 150 bytes each).
pub const CAPACITY: usize = 16_384;

/// The work session each pointer key named when last read.
#[derive(Default)]
pub struct Hints {
    map: Mutex<HashMap<String, WorkSessionId>>,
}

impl Hints {
    /// The work session `pointer` (a Redis key) named when last read.
    pub fn get(&self, pointer: &str) -> Option<WorkSessionId> {
        self.lock().get(pointer).cloned()
    }

    /// Remembers that `pointer` names `id` (now).
    pub fn remember(&self, pointer: &str, id: &WorkSessionId) {
        let mut map = self.lock();
        if map.get(pointer) == Some(id) {
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(pointer.to_owned(), id.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkSessionId>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_value_and_stays_bounded() {
        let hints = Hints::default();
        let (a, b) = (WorkSessionId::random(), WorkSessionId::random());
        hints.remember("link", &a);
        hints.remember("link", &b);
        assert_eq!(hints.get("link"), Some(b));
        for i in 0..CAPACITY + 1 {
            hints.remember(&format!("k{i}"), &a);
        }
        assert!(hints.lock().len() <= CAPACITY);
    }
}
