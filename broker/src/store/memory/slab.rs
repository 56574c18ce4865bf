//! [`Principals`]: the principals' records, kept in chunks of [`CHUNK`] records allocated at once
//! (a slab) and found through a map from the packed principal id to the record's slot, so that 100k
//! principals are about a hundred large allocations instead of 100k small ones scattered through the
//! allocator's heap between the requests' short-lived buffers.
//!
//! A slot is a plain number, and it never leaves this module: the map is the only holder of one,
//! and a slot is emptied and put on the free list in the same step that removes its map entry (or,
//! when the purge moves a record down to release a chunk, the entry is pointed at the new slot in
//! the step that moves it). So a slot in the map always holds that principal's record, and a freed
//! slot, reused by the next new principal, is pointed at by that principal's entry only.
//!
//! A free slot holds an empty [`Principal`] (no allocation of its own). Freed slots are reused
//! first (the free list), and when the purge leaves more than a chunk to spare, the records in the
//! trailing chunks are moved into free slots below and those chunks are dropped (see
//! [`Principals::release`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::packed::Packed;
use super::principal::Principal;

/// Records per chunk: one allocation of about 272 KiB.
pub(super) const CHUNK: usize = 1024;

/// Every principal's record, by its packed id (see the module's doc).
#[derive(Default)]
pub(super) struct Principals {
    /// The slot of each principal's record: chunk `slot / CHUNK`, record `slot % CHUNK`.
    slots: HashMap<Packed, usize>,
    /// Every chunk but the last is full (`CHUNK` records, live or free); none ever grows past
    /// `CHUNK`, so a chunk is never reallocated and never moves.
    chunks: Vec<Vec<Principal>>,
    /// Slots holding no principal's record (an empty one), reused before a chunk grows.
    free: Vec<usize>,
}

impl Principals {
    /// How many principals have a record.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many chunks are allocated.
    #[cfg(test)]
    pub(super) fn chunks(&self) -> usize {
        self.chunks.len()
    }

    pub(super) fn get(&self, key: &Packed) -> Option<&Principal> {
        let slot = *self.slots.get(key)?;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    pub(super) fn get_mut(&mut self, key: &Packed) -> Option<&mut Principal> {
        let slot = *self.slots.get(key)?;
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    /// The principal's record, made empty in a free slot if it has none.
    pub(super) fn get_or_default(&mut self, key: Packed) -> &mut Principal {
        let slot = match self.slots.entry(key) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => *entry.insert(vacant(&mut self.chunks, &mut self.free)),
        };
        // Every slot in the map is within the chunks (the module's doc).
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// Every principal's record with its id, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Packed, &Principal)> {
        self.slots.iter().filter_map(|(key, slot)| {
            let record = self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)?;
            Some((key, record))
        })
    }

    /// Keeps the records `keep` says to (it may change them); the others' slots are emptied and
    /// freed. Then gives back what the live set no longer needs ([`Self::release`]).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Packed, &mut Principal) -> bool) {
        let (chunks, free) = (&mut self.chunks, &mut self.free);
        self.slots.retain(|key, slot| {
            let Some(record) = chunks
                .get_mut(*slot / CHUNK)
                .and_then(|chunk| chunk.get_mut(*slot % CHUNK))
            else {
                return false;
            };
            if keep(key, record) {
                return true;
            }
            *record = Principal::default();
            free.push(*slot);
            false
        });
        self.release();
    }

    /// When more than one chunk beyond what the live set needs is allocated: moves the records of
    /// the chunks past those into free slots below, drops those chunks, and keeps the free slots
    /// that are left. One chunk is kept spare, so a live set that moves around a chunk's boundary
    /// does not allocate and drop one at every purge. Also shrinks the map and the free list when
    /// they hold far more room than they use.
    fn release(&mut self) {
        let keep = self.slots.len().div_ceil(CHUNK) + 1;
        if self.chunks.len() > keep {
            let limit = keep * CHUNK;
            let mut below: Vec<usize> = self.free.iter().copied().filter(|s| *s < limit).collect();
            // Each of the first `keep` chunks is full (only the last chunk may not be), so there
            // are `limit - live` free slots below `limit`: more than the records above it. Checked
            // anyway: nothing is dropped unless every record above has a place below.
            let above = self.slots.values().filter(|slot| **slot >= limit).count();
            if below.len() >= above {
                for slot in self.slots.values_mut().filter(|slot| **slot >= limit) {
                    let Some(to) = below.pop() else { break };
                    let record = std::mem::take(&mut self.chunks[*slot / CHUNK][*slot % CHUNK]);
                    self.chunks[to / CHUNK][to % CHUNK] = record;
                    *slot = to;
                }
                self.chunks.truncate(keep);
                self.chunks.shrink_to_fit();
                self.free = below;
            }
        }
        if self.free.capacity() > 4 * self.free.len() + 64 {
            self.free.shrink_to_fit();
        }
        if self.slots.capacity() > 4 * self.slots.len() + 64 {
            self.slots.shrink_to_fit();
        }
    }
}

/// A slot holding an empty record: a freed one, else the next one of the last chunk, else the
/// first one of a new chunk.
fn vacant(chunks: &mut Vec<Vec<Principal>>, free: &mut Vec<usize>) -> usize {
    if let Some(slot) = free.pop() {
        return slot;
    }
    match chunks.last_mut() {
        Some(chunk) if chunk.len() < CHUNK => chunk.push(Principal::default()),
        _ => {
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.push(Principal::default());
            chunks.push(chunk);
        }
    }
    (chunks.len() - 1) * CHUNK + chunks.last().map_or(0, |chunk| chunk.len() - 1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::ids::{PrincipalId, Project};
    use crate::store::Lifetimes;
    use crate::store::memory::maps::Maps;

    fn key(n: usize) -> Packed {
        Packed::new(&format!("{n:032x}"))
    }

    /// Marks the record of principal `n` as its own (its recent projects' expiry), so a test can
    /// tell whose record a slot holds.
    fn make(principals: &mut Principals, n: usize) {
        principals.get_or_default(key(n)).recent.expires = n as u64 + 1;
    }

    fn owner(principals: &Principals, n: usize) -> Option<u64> {
        principals.get(&key(n)).map(|record| record.recent.expires)
    }

    #[test]
    fn a_removed_principals_slot_is_reused_empty_by_the_next_one() {
        let mut principals = Principals::default();
        for n in 0..3 {
            make(&mut principals, n);
        }
        let freed = principals.slots[&key(1)];
        principals.retain(|key, _| *key != self::key(1));
        assert_eq!(owner(&principals, 1), None);
        assert_eq!(principals.free, vec![freed]);
        // The next new principal takes the freed slot, and finds it empty (not the old record).
        let record = principals.get_or_default(key(7));
        assert_eq!(record.recent.expires, 0);
        assert!(record.sessions.is_empty());
        assert_eq!(principals.slots[&key(7)], freed);
        assert!(principals.free.is_empty());
        assert_eq!((principals.len(), principals.chunks()), (3, 1));
        assert_eq!(owner(&principals, 0), Some(1));
        assert_eq!(owner(&principals, 2), Some(3));
        // An existing principal keeps its slot.
        make(&mut principals, 2);
        assert_eq!(principals.len(), 3);
    }

    #[test]
    fn purging_most_principals_releases_their_chunks_and_keeps_the_rest_whole() {
        let mut principals = Principals::default();
        let total = 10 * CHUNK + 5;
        for n in 0..total {
            make(&mut principals, n);
        }
        assert_eq!(principals.chunks(), 11);
        // Keep one in 100, spread over every chunk (the last ones included).
        principals.retain(|_, record| record.recent.expires % 100 == 1);
        let live = total.div_ceil(100);
        assert_eq!(principals.len(), live);
        assert_eq!(principals.chunks(), live.div_ceil(CHUNK) + 1);
        for n in 0..total {
            let expected = (n % 100 == 0).then_some(n as u64 + 1);
            assert_eq!(owner(&principals, n), expected, "{n}");
        }
        let mut seen: Vec<usize> = principals.slots.values().copied().collect();
        seen.extend(&principals.free);
        seen.sort_unstable();
        let slots: usize = principals.chunks.iter().map(Vec::len).sum();
        assert_eq!(seen, (0..slots).collect::<Vec<_>>(), "each slot once");
        // New principals fill the free slots before any chunk is added.
        let room = principals.free.len();
        for n in total..total + room {
            make(&mut principals, n);
        }
        assert_eq!(principals.chunks(), live.div_ceil(CHUNK) + 1);
        assert_eq!(
            owner(&principals, total + room - 1),
            Some((total + room) as u64)
        );
        // Nothing left: one chunk stays, spare.
        principals.retain(|_, _| false);
        assert_eq!((principals.len(), principals.chunks()), (0, 1));
    }

    #[test]
    fn the_purge_gives_back_the_chunks_of_principals_left_empty() {
        let mut maps = Maps::default();
        let lifetimes = Lifetimes::with_idle(Duration::from_secs(60));
        let project = Arc::new(Project::parse("alpha").expect("project"));
        let ttl = Duration::from_secs(60);
        let now = 1_000_000;
        maps.purge_now_and_then(now, &lifetimes);
        for n in 0..4 * CHUNK {
            let id = PrincipalId::parse(format!("{n:032x}")).expect("principal");
            // Principal 0's recent projects outlive the others'.
            let ttl = if n == 0 { 100 * ttl } else { ttl };
            maps.principal_or_new(&id)
                .add_recent(Arc::clone(&project), now, ttl, now);
        }
        assert_eq!(maps.principals.chunks(), 4);
        maps.purge_now_and_then(now + 3_600_000, &lifetimes);
        assert_eq!((maps.principals.len(), maps.principals.chunks()), (1, 2));
        let first = PrincipalId::parse(format!("{:032x}", 0)).expect("principal");
        let record = maps.principal(&first).expect("principal 0 is left");
        assert_eq!(record.recent.value.len(), 1);
    }
}
