//! The key schema, shared by both stores (the memory store uses the same names as map keys).
//!
//! Every key of a principal carries the hash tag `{p:<principal>}`, so in Redis Cluster they share a
//! slot and one script can touch them all. No key or value holds a credential, a signing key or a
//! handle: principals are HMACs, conversation keys are hashes, work-session ids are random.
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `msb:{p:P}:ws:<ws>` | hash | one work session, with its backend sessions (`b:<upstream>:<project>`) | idle, sliding |
//! | `msb:{p:P}:surf:<surface>` | zset | live work sessions on a surface, by last activity | idle, sliding |
//! | `msb:{p:P}:conv:<conversation>` | string | the conversation's work session | idle, sliding |
//! | `msb:{p:P}:mcp:<sid>` | string | the work session a client MCP session selected | idle, sliding |
//! | `msb:{p:P}:end:<sid>` | string | a client MCP session that was ended (DELETE) | session-id life |
//! | `msb:{p:P}:bk:<sid>:<upstream>` | string | the backend session replacing that MCP session's own there (never has a project) | idle |
//! | `msb:{p:P}:recent` | zset | recently used projects | 30 days |
//! | `msb:{p:P}:index` | zset | every work session of the principal, by last activity | idle + grace |
//! | `msb:deadlines` | zset | `<principal>:<ws>` by idle deadline (ms) | none |
//! | `msb:finalized` | stream | one entry per finalized work session; consumer group `finalizers` | trimmed to ~100k |
//!
//! A work-session hash lives for its idle TTL plus a grace period, so the sweeper can still read it
//! after its deadline; it counts as live only while `la + idle > now` and it has no `f` field.

use crate::ids::{ConversationKey, McpSessionId, PrincipalId, Surface, UpstreamId, WorkSessionId};

/// The sorted set of idle deadlines of every work session (member `<principal>:<work session>`).
/// Not hash-tagged by principal: Redis Cluster would need it sharded (not supported yet).
pub fn deadlines(prefix: &str) -> String {
    format!("{prefix}:deadlines")
}

/// The stream of finalized work sessions.
pub fn finalized_stream(prefix: &str) -> String {
    format!("{prefix}:finalized")
}

/// The member of [`deadlines`] for one work session.
pub fn deadline_member(principal: &PrincipalId, id: &WorkSessionId) -> String {
    format!("{principal}:{id}")
}

/// Key names for one principal.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(prefix: &str, principal: &PrincipalId) -> Self {
        Self {
            tag: format!("{prefix}:{{p:{principal}}}"),
        }
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

    #[test]
    fn every_key_carries_the_principal_hash_tag() {
        let p = PrincipalId::parse("0f".repeat(16)).expect("p");
        let keys = Keys::new("msb", &p);
        let ws = WorkSessionId::random();
        let sid = McpSessionId::random();
        let up = UpstreamId::parse("ab".repeat(8)).expect("up");
        let all = [
            keys.work_session(&ws),
            keys.surface(&Surface::parse("claude-ai").expect("s")),
            keys.mcp_link(&sid),
            keys.mcp_ended(&sid),
            keys.backend_session(&sid, &up),
            keys.recent(),
            keys.unused(),
        ];
        let tag = format!("{{p:{p}}}");
        for key in all {
            assert!(key.starts_with(&format!("msb:{tag}:")), "{key}");
            // The cluster slot is computed from the first {...}: it must be ours.
            let first = &key[key.find('{').expect("open")..=key.find('}').expect("close")];
            assert_eq!(first, tag);
        }
    }
}
