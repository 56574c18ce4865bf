//! The Redis store's key schema (the memory store keeps the same data in a layout of its own, see
//! `store::memory`).
//!
//! Every key carries the hash tag of one **bucket**, `{b:<x>}`, `x` one of [`BUCKETS`] hex digits
//! taken from the principal: a principal's keys all live in its bucket, and so do the bucket's idle
//! deadlines and finalized events. So in Redis Cluster every script touches exactly one slot, however
//! it combines a principal's keys with its bucket's deadlines and stream, and a sweep is one script
//! per bucket. No key or value holds a credential, a signing key or a handle: principals are HMACs,
//! conversation keys are hashes, work-session ids are random.
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `msb:{b:X}:p:P:ws:<ws>` | hash | one work session, with its backend sessions (`b:<upstream>:<project>`) | idle + safety until claimed, then the grace |
//! | `msb:{b:X}:p:P:surf:<surface>` | zset | work sessions on a surface, by last activity | idle, sliding |
//! | `msb:{b:X}:p:P:conv:<conversation>` | string | the conversation's work session | idle, sliding |
//! | `msb:{b:X}:p:P:mcp:<sid>` | string | the work session a client MCP session selected | idle, sliding |
//! | `msb:{b:X}:p:P:end:<sid>` | string | a client MCP session that was ended (DELETE) | session-id life |
//! | `msb:{b:X}:p:P:bk:<sid>:<upstream>` | string | the backend session replacing that MCP session's own there (never has a project) | idle |
//! | `msb:{b:X}:p:P:recent` | zset | recently used projects | 30 days |
//! | `msb:{b:X}:p:P:index` | zset | every work session of the principal, by last activity | idle + safety |
//! | `msb:{b:X}:deadlines` | zset | `<principal>:<ws>` of the bucket, by idle deadline (ms) | none |
//! | `msb:{b:X}:finalized` | stream | one entry per finalized work session of the bucket; group `finalizers` | trimmed to ~10k |
//! | `msb:{b:X}:dead` | stream | events whose actions failed every attempt (dead letters) | trimmed to ~10k |
//!
//! A work-session hash outlives its idle deadline until a sweeper claims it (bounded by the safety
//! TTL), then keeps the grace period for operators; it counts as live only while `la + idle > now`
//! and it has no `f` field.

use crate::ids::{ConversationKey, McpSessionId, PrincipalId, Surface, UpstreamId, WorkSessionId};

/// How many buckets the key space has. Fixed: changing it moves every key.
pub const BUCKETS: u8 = 16;

/// A bucket: a share of the principals, one Redis Cluster slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(u8);

impl Bucket {
    /// The principal's bucket: its first hex digit (principals are uniformly random HMACs).
    pub fn of(principal: &PrincipalId) -> Self {
        let digit = principal
            .as_str()
            .chars()
            .next()
            .and_then(|c| c.to_digit(16))
            .unwrap_or(0);
        Self(u8::try_from(digit).unwrap_or(0) % BUCKETS)
    }

    /// Every bucket, in order.
    pub fn all() -> impl Iterator<Item = Bucket> {
        (0..BUCKETS).map(Bucket)
    }

    /// The bucket named by [`Bucket::name`], if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        let digit = u8::from_str_radix(name, 16).ok()?;
        (name.len() == 1 && digit < BUCKETS).then_some(Self(digit))
    }

    /// One hex digit.
    pub fn name(&self) -> String {
        format!("{:x}", self.0)
    }

    fn tag(&self, prefix: &str) -> String {
        format!("{prefix}:{{b:{:x}}}", self.0)
    }

    /// The bucket's idle deadlines (member `<principal>:<work session>`, score the deadline in ms).
    pub fn deadlines(&self, prefix: &str) -> String {
        format!("{}:deadlines", self.tag(prefix))
    }

    /// The bucket's stream of finalized work sessions.
    pub fn finalized(&self, prefix: &str) -> String {
        format!("{}:finalized", self.tag(prefix))
    }

    /// The bucket's dead letters: finalized events whose actions failed every attempt.
    pub fn dead_letters(&self, prefix: &str) -> String {
        format!("{}:dead", self.tag(prefix))
    }
}

/// The member of a bucket's deadlines for one work session.
pub fn deadline_member(principal: &PrincipalId, id: &WorkSessionId) -> String {
    format!("{principal}:{id}")
}

/// Key names for one principal.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    bucket: Bucket,
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str, principal: &PrincipalId) -> Self {
        let bucket = Bucket::of(principal);
        Self {
            prefix: prefix.to_owned(),
            tag: format!("{}:p:{principal}", bucket.tag(prefix)),
            bucket,
        }
    }

    /// The principal's bucket.
    pub fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// The deadlines of the principal's bucket.
    pub fn deadlines(&self) -> String {
        self.bucket.deadlines(&self.prefix)
    }

    /// The finalized stream of the principal's bucket.
    pub fn finalized(&self) -> String {
        self.bucket.finalized(&self.prefix)
    }

    /// Prefix of work-session hashes (the id follows).
    pub fn work_session_prefix(&self) -> String {
        format!("{}:ws:", self.tag)
    }

    pub fn work_session(&self, id: &WorkSessionId) -> String {
        format!("{}:ws:{id}", self.tag)
    }

    pub fn surface(&self, surface: &Surface) -> String {
        format!("{}:surf:{surface}", self.tag)
    }

    pub fn conversation(&self, key: &ConversationKey) -> String {
        format!("{}:conv:{key}", self.tag)
    }

    pub fn mcp_link(&self, sid: &McpSessionId) -> String {
        format!("{}:mcp:{sid}", self.tag)
    }

    pub fn mcp_ended(&self, sid: &McpSessionId) -> String {
        format!("{}:end:{sid}", self.tag)
    }

    pub fn backend_session(&self, sid: &McpSessionId, upstream: &UpstreamId) -> String {
        format!("{}:bk:{sid}:{upstream}", self.tag)
    }

    /// What a parked multi round-trip call left for its next round (`key`: random hex per call).
    pub fn parked(&self, key: &str) -> String {
        format!("{}:park:{key}", self.tag)
    }

    /// Every work session of the principal, by last activity (for the admin API).
    pub fn index(&self) -> String {
        format!("{}:index", self.tag)
    }

    pub fn recent(&self) -> String {
        format!("{}:recent", self.tag)
    }

    /// A key in the principal's slot that is never written: a placeholder for absent keys, so scripts
    /// always receive the same number of keys.
    pub fn unused(&self) -> String {
        format!("{}:unused", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: the first `{...}` with something inside.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("open");
        let close = open + key[open..].find('}').expect("close");
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_principal_shares_its_buckets_slot() {
        let p = PrincipalId::parse("0f".repeat(16)).expect("p");
        let keys = Keys::new("msb", &p);
        let ws = WorkSessionId::random();
        let sid = McpSessionId::random();
        let up = UpstreamId::parse("ab".repeat(8)).expect("up");
        let all = [
            keys.work_session(&ws),
            keys.surface(&Surface::parse("claude-ai").expect("s")),
            keys.conversation(&ConversationKey::parse("cd".repeat(16)).expect("c")),
            keys.mcp_link(&sid),
            keys.mcp_ended(&sid),
            keys.backend_session(&sid, &up),
            keys.recent(),
            keys.index(),
            keys.unused(),
            keys.deadlines(),
            keys.finalized(),
            keys.bucket().dead_letters("msb"),
        ];
        for key in all {
            assert!(key.starts_with("msb:{b:0}:"), "{key}");
            assert_eq!(hash_tag(&key), "b:0", "{key}");
        }
    }

    #[test]
    fn buckets_cover_every_principal_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for first in "0123456789abcdef".chars() {
            let p = PrincipalId::parse(format!("{first}{}", "0".repeat(31))).expect("p");
            let bucket = Bucket::of(&p);
            assert_eq!(Bucket::parse(&bucket.name()), Some(bucket));
            seen.insert(bucket);
        }
        assert_eq!(seen.len(), usize::from(BUCKETS));
        assert_eq!(Bucket::all().count(), usize::from(BUCKETS));
        assert_eq!(Bucket::parse("10"), None);
        assert_eq!(Bucket::parse("g"), None);
    }
}
