//! Typed identifiers, validated where they enter the broker.
//!
//! Every id that crosses a boundary (a header, a token, a store key) is a newtype here, so a principal
//! can never be passed where a work session is expected, and nothing unvalidated reaches a Redis key.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Why a value was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} contains a character outside {allowed}")]
    BadCharacter {
        kind: &'static str,
        allowed: &'static str,
    },
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed_desc:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate(&value, $kind, $max, $allowed_desc, $allowed)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn validate(
    value: &str,
    kind: &'static str,
    max: usize,
    allowed_desc: &'static str,
    allowed: fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !value.chars().all(allowed) {
        return Err(IdError::BadCharacter {
            kind,
            allowed: allowed_desc,
        });
    }
    Ok(())
}

fn is_hex(c: char) -> bool {
    c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
}

fn is_slug(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | ':')
}

fn is_visible_ascii(c: char) -> bool {
    ('\x21'..='\x7e').contains(&c)
}

fn is_project_char(c: char) -> bool {
    !c.is_control()
}

string_id!(
    /// Who calls: a keyed hash of the credential (32 lowercase hex), never the credential itself.
    PrincipalId, "principal id", 64, "lowercase hex", is_hex
);
string_id!(
    /// One work session: `32` lowercase hex chosen at random by the broker.
    WorkSessionId, "work session id", 64, "lowercase hex", is_hex
);
string_id!(
    /// One client-facing MCP session (the broker's, not the backend's): 32 lowercase hex.
    McpSessionId, "mcp session id", 64, "lowercase hex", is_hex
);
string_id!(
    /// Which UI the call comes from, normalized (`claude-ai`, `claude-code-cli`, `chatgpt`, ...).
    Surface, "surface", 64, "[a-z0-9._:-]", is_slug
);
string_id!(
    /// A conversation, as a hash of whatever the client sent (32 lowercase hex).
    ConversationKey, "conversation key", 64, "lowercase hex", is_hex
);
string_id!(
    /// One upstream instance (a backend process behind one broker replica): 16+ lowercase hex.
    UpstreamId, "upstream id", 64, "lowercase hex", is_hex
);
string_id!(
    /// A backend's own `Mcp-Session-Id` (visible ASCII, as the protocol allows).
    BackendSessionId, "backend session id", 512, "visible ASCII", is_visible_ascii
);
string_id!(
    /// The project a work session works on, as the select tool named it.
    Project, "project", 256, "printable characters", is_project_char
);

/// 128 random bits as 32 lowercase hex characters.
pub fn random_hex128() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl WorkSessionId {
    /// A fresh random work-session id.
    pub fn random() -> Self {
        Self(random_hex128())
    }
}

impl McpSessionId {
    /// A fresh random client-facing MCP session id.
    pub fn random() -> Self {
        Self(random_hex128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_would_break_a_key_or_header() {
        assert!(PrincipalId::parse("").is_err());
        assert!(PrincipalId::parse("ABC").is_err());
        assert!(Surface::parse("claude ai").is_err());
        assert!(Surface::parse("claude-ai").is_ok());
        assert!(BackendSessionId::parse("a b").is_err());
        assert!(BackendSessionId::parse("x".repeat(513)).is_err());
        assert!(Project::parse("linkedin\n").is_err());
        assert!(Project::parse("Projet été").is_ok());
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = WorkSessionId::random();
        let b = WorkSessionId::random();
        assert_ne!(a, b);
        assert!(WorkSessionId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let bad: Result<Surface, _> = serde_json::from_str("\"Not Valid\"");
        assert!(bad.is_err());
    }
}
