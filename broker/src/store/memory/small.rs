//! [`Small`]: a map that costs nothing when empty, holds one entry inline (no allocation: most
//! principals have one work session, one MCP-session link, one surface), a few in an exactly sized
//! vector searched in order, and many in a hash map, so that a principal with thousands of entries
//! (every anonymous client is one principal) is still read in constant time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Most entries kept in a vector; past it, a hash map.
const FEW: usize = 8;

/// A map sized for its usual one entry (see the module's doc).
#[derive(Debug, Default)]
pub(super) enum Small<K, V> {
    #[default]
    Empty,
    One(K, V),
    Few(Vec<(K, V)>),
    /// Boxed: a hash map is twice a vector's size, and every [`Small`] would carry that room.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, V>>),
}

impl<K: Hash + Eq, V> Small<K, V> {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(..) => 1,
            Self::Few(entries) => entries.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::Empty => None,
            Self::One(k, v) => (<K as Borrow<Q>>::borrow(k) == key).then_some(v),
            Self::Few(entries) => entries
                .iter()
                .find(|(k, _)| <K as Borrow<Q>>::borrow(k) == key)
                .map(|(_, v)| v),
            Self::Many(map) => map.get(key),
        }
    }

    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::Empty => None,
            Self::One(k, v) => (<K as Borrow<Q>>::borrow(k) == key).then_some(v),
            Self::Few(entries) => entries
                .iter_mut()
                .find(|(k, _)| <K as Borrow<Q>>::borrow(k) == key)
                .map(|(_, v)| v),
            Self::Many(map) => map.get_mut(key),
        }
    }

    /// Sets `key` to `value`, replacing what it held.
    pub(super) fn insert(&mut self, key: K, value: V) {
        if let Some(held) = self.get_mut(&key) {
            *held = value;
            return;
        }
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(key, value),
            Self::One(k, v) => Self::Few(vec![(k, v), (key, value)]),
            Self::Few(mut entries) if entries.len() < FEW => {
                entries.reserve_exact(1);
                entries.push((key, value));
                Self::Few(entries)
            }
            Self::Few(entries) => {
                let mut map: HashMap<K, V> = entries.into_iter().collect();
                map.insert(key, value);
                Self::Many(Box::new(map))
            }
            Self::Many(mut map) => {
                map.insert(key, value);
                Self::Many(map)
            }
        };
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (removed, rest) = match std::mem::take(self) {
            Self::Empty => (None, Self::Empty),
            Self::One(k, v) if <K as Borrow<Q>>::borrow(&k) == key => (Some(v), Self::Empty),
            one @ Self::One(..) => (None, one),
            Self::Few(mut entries) => match entries
                .iter()
                .position(|(k, _)| <K as Borrow<Q>>::borrow(k) == key)
            {
                Some(at) => {
                    let (_, v) = entries.swap_remove(at);
                    (Some(v), Self::settled(entries))
                }
                None => (None, Self::Few(entries)),
            },
            Self::Many(mut map) => {
                let removed = map.remove(key);
                if map.len() <= FEW {
                    (removed, Self::settled(map.into_iter().collect()))
                } else {
                    (removed, Self::Many(map))
                }
            }
        };
        *self = rest;
        removed
    }

    /// Keeps the entries `keep` says to (it may change them), then shrinks to fit what is left.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::Empty,
            Self::One(k, mut v) => {
                if keep(&k, &mut v) {
                    Self::One(k, v)
                } else {
                    Self::Empty
                }
            }
            Self::Few(mut entries) => {
                entries.retain_mut(|(k, v)| keep(k, v));
                Self::settled(entries)
            }
            Self::Many(mut map) => {
                map.retain(|k, v| keep(k, v));
                if map.len() <= FEW {
                    Self::settled(map.into_iter().collect())
                } else {
                    if map.capacity() > 4 * map.len() {
                        map.shrink_to_fit();
                    }
                    Self::Many(map)
                }
            }
        };
    }

    /// The smallest form for `entries` (at most [`FEW`]).
    fn settled(mut entries: Vec<(K, V)>) -> Self {
        match entries.len() {
            0 => Self::Empty,
            1 => match entries.pop() {
                Some((k, v)) => Self::One(k, v),
                None => Self::Empty,
            },
            _ => {
                entries.shrink_to_fit();
                Self::Few(entries)
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (one, few, many) = match self {
            Self::Empty => (None, [].iter(), None),
            Self::One(k, v) => (Some((k, v)), [].iter(), None),
            Self::Few(entries) => (None, entries.iter(), None),
            Self::Many(map) => (None, [].iter(), Some(map.iter())),
        };
        one.into_iter()
            .chain(few.map(|(k, v)| (k, v)))
            .chain(many.into_iter().flatten())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        let (one, few, many) = match self {
            Self::Empty => (None, [].iter_mut(), None),
            Self::One(_, v) => (Some(v), [].iter_mut(), None),
            Self::Few(entries) => (None, entries.iter_mut(), None),
            Self::Many(map) => (None, [].iter_mut(), Some(map.values_mut())),
        };
        one.into_iter()
            .chain(few.map(|(_, v)| v))
            .chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(map: &Small<u32, u32>) -> Vec<(u32, u32)> {
        let mut all: Vec<(u32, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn it_reads_as_a_map_in_every_form() {
        let mut map = Small::default();
        let mut model = std::collections::BTreeMap::new();
        // Up past FEW and back down to nothing, with replacements and misses on the way.
        for n in 0..40u32 {
            map.insert(n % 23, n);
            model.insert(n % 23, n);
            assert_eq!(map.len(), model.len());
            assert_eq!(map.get(&(n % 23)), Some(&n));
            assert_eq!(map.get(&99), None);
        }
        assert!(matches!(map, Small::Many(_)));
        if let Some(v) = map.get_mut(&3) {
            *v += 100;
        }
        *model.entry(3).or_default() += 100;
        assert_eq!(
            sorted(&map),
            model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        );
        map.retain(|k, v| {
            *v += 1;
            k % 2 == 0
        });
        model.retain(|k, _| k % 2 == 0);
        model.values_mut().for_each(|v| *v += 1);
        assert_eq!(
            sorted(&map),
            model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        );
        for k in 0..23 {
            assert_eq!(map.remove(&k), model.remove(&k), "{k}");
            assert_eq!(map.len(), model.len());
            assert_eq!(map.remove(&k), None);
        }
        assert!(matches!(map, Small::Empty));
        assert!(map.is_empty());
    }

    #[test]
    fn it_takes_the_smallest_form_for_what_it_holds() {
        let mut map = Small::default();
        map.insert(1u32, 1u32);
        assert!(matches!(map, Small::One(..)));
        map.insert(2, 2);
        assert!(matches!(&map, Small::Few(entries) if entries.capacity() == 2));
        for n in 3..=20 {
            map.insert(n, n);
        }
        map.retain(|k, _| *k <= 2);
        assert!(matches!(&map, Small::Few(entries) if entries.capacity() == 2));
        map.values_mut().for_each(|v| *v = 0);
        assert_eq!(sorted(&map), vec![(1, 0), (2, 0)]);
        assert_eq!(map.remove(&1), Some(0));
        assert!(matches!(map, Small::One(2, 0)));
    }
}
