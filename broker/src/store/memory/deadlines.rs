//! [`Deadlines`]: the memory store's index of when each work session may come due, so that the
//! sweep visits only the work sessions whose time may have come instead of walking every principal.
//!
//! It is a min-heap of `(at, principal, work session)` with lazy validation. An entry is a hint,
//! never a verdict: the sweep pops the entries whose `at` has passed and judges each work session
//! by its own record, exactly as before the index (`expires <= now && expires + refresh <= now &&
//! finalized.is_none()`); one not due yet is pushed again at its own deadline, one gone or already
//! finalized is let go. So a stale entry (a touch moved the deadline later since it was written)
//! can make the sweep look early, never finalize early.
//!
//! **The invariant**: every work session that is not finalized has at least one entry whose `at`
//! is at most its deadline (`expires + refresh`). Then the sweep at `now` pops, among others, an
//! entry of every work session due at `now`, so none is missed. Who keeps it (all under the store's
//! one lock):
//!
//! - `Maps::bind` pushes the deadline of a work session it creates, and of one whose `expires` it
//!   moves earlier (only a clock that went back can); one it moves later keeps its entry, which is
//!   still early enough.
//! - `MemoryStore::touch_calls` only ever moves `expires` later (`max`): it pushes nothing.
//! - `Maps::act`: an operator's end moves `expires` back to `now - refresh` and pushes the new
//!   deadline (`now`), so the next sweep finalizes it; a rebind changes no deadline.
//! - `Maps::claim_expired` pops; it pushes back the work sessions popped early (at their deadline
//!   now) and, for one whose principal or id cannot be restored (never, for a validated id), the
//!   entry as it was, so it is tried again at the next sweep as before the index.
//! - Finalizing and purging need no bookkeeping: the sweep lets an entry go when its work session
//!   is finalized or gone (the purge drops records, not entries).
//!
//! Entries are never more than the work sessions created plus the operator's ends (and binds on a
//! clock that went back), and each goes at the latest when its `at` passes. An entry of the
//! broker's own ids (32 hex digits each) is 40 bytes, inline; others (shorter ids, as tests use)
//! are kept apart, boxed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::packed::Packed;

/// The inline form of a packed 32-hex-digit id.
type Hex = [u8; 16];

/// The deadline index (see the module's doc).
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// Entries whose two ids are inline: `(at, principal, work session)`, 40 bytes each.
    hex: BinaryHeap<Reverse<(u64, Hex, Hex)>>,
    /// Every other entry.
    other: BinaryHeap<Reverse<(u64, Packed, Packed)>>,
}

impl Deadlines {
    /// Adds an entry: the work session `session` of `principal` may be due at `at` (ms).
    pub(super) fn push(&mut self, at: u64, principal: &Packed, session: &Packed) {
        match (principal, session) {
            (Packed::Hex(p), Packed::Hex(s)) => self.hex.push(Reverse((at, *p, *s))),
            _ => self
                .other
                .push(Reverse((at, principal.clone(), session.clone()))),
        }
    }

    /// Removes and returns the earliest entry whose `at` is at most `now`, if any.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<(u64, Packed, Packed)> {
        let hex = self.hex.peek().map(|Reverse((at, ..))| *at);
        let other = self.other.peek().map(|Reverse((at, ..))| *at);
        match (hex, other) {
            (Some(h), o) if h <= now && o.is_none_or(|o| h <= o) => {
                let Reverse((at, p, s)) = self.hex.pop()?;
                Some((at, Packed::Hex(p), Packed::Hex(s)))
            }
            (_, Some(o)) if o <= now => {
                let Reverse(entry) = self.other.pop()?;
                Some(entry)
            }
            _ => None,
        }
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.hex.len() + self.other.len()
    }

    /// Gives back the room of entries gone, when most of it is unused (as the principals' table).
    pub(super) fn shrink(&mut self) {
        if self.hex.capacity() > 4 * self.hex.len() + 64 {
            self.hex.shrink_to_fit();
        }
        if self.other.capacity() > 4 * self.other.len() + 64 {
            self.other.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "0123456789abcdef0123456789abcdef";
    const W: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn an_entry_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<Reverse<(u64, Hex, Hex)>>(), 40);
    }

    /// An entry as a test writes it: `(at, principal, work session)`.
    type Written<'a> = (u64, &'a str, &'a str);

    /// Table: entries pushed, `now`, the entries `pop_due` gives (in order).
    #[test]
    fn due_gives_only_what_is_due_earliest_first_either_form() {
        let cases: &[(&[Written], u64, &[Written])] = &[
            (&[], 100, &[]),
            (&[(101, P, W)], 100, &[]),
            (&[(100, P, W)], 100, &[(100, P, W)]),
            (&[(5, "a", "b"), (101, P, W)], 100, &[(5, "a", "b")]),
            (
                &[(50, P, W), (10, "a", "b"), (30, P, "c"), (200, "a", "d")],
                100,
                &[(10, "a", "b"), (30, P, "c"), (50, P, W)],
            ),
            (&[(7, P, W), (7, P, W)], 7, &[(7, P, W), (7, P, W)]),
        ];
        for (pushed, now, expected) in cases {
            let mut index = Deadlines::default();
            for (at, p, s) in *pushed {
                index.push(*at, &Packed::new(p), &Packed::new(s));
            }
            let mut popped = Vec::new();
            while let Some((at, p, s)) = index.pop_due(*now) {
                popped.push((at, p.text(), s.text()));
            }
            let expected: Vec<_> = expected
                .iter()
                .map(|(at, p, s)| (*at, p.to_string(), s.to_string()))
                .collect();
            assert_eq!(popped, expected, "{pushed:?} at {now}");
            assert_eq!(index.len(), pushed.len() - expected.len());
        }
    }
}
