//! The top level of one JSON-RPC message, read without building it: which of the members the id
//! rules look at it has (`id`, `method`, `result`, `error`) and where its `id` is in the text, so
//! that a changed id is spliced into the text as it came instead of parsing the whole message into
//! a [`Value`] and writing it again (the relay does this for every request it forwards and every
//! reply event it relays; `docs/performance.md`, "Issue 19, third step").
//!
//! It answers exactly what [`crate::rpc_ids::request_id`], [`crate::rpc_ids::response_id`] and
//! [`crate::rpc_ids::set_id`] answer on the parsed message (`tests.rs` holds them to it). What it
//! does not read is left to them: [`Envelope::read`] is `None` for a batch, for anything that is not
//! one valid JSON object, and for an object naming one of those members twice (a parser keeps the
//! last one, a splice would leave both).

use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::RequestId;

/// One message's top level, borrowed from its text.
#[derive(Debug)]
pub struct Envelope<'a> {
    text: &'a str,
    /// Where the `id` member's value is, and the id it holds (`None`: not a string or an integer).
    id: Option<(Range<usize>, Option<RequestId>)>,
    method: bool,
    /// It has a `result` or an `error`.
    answer: bool,
}

impl<'a> Envelope<'a> {
    /// Reads `text`'s top level; `None` when the full parse must decide (see the module).
    pub fn read(text: &'a str) -> Option<Self> {
        let members = serde_json::from_str::<Members<'a>>(text).ok()?;
        let id = match members.id {
            Some(raw) => {
                let start = (raw.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
                let range = start..start + raw.get().len();
                let value = serde_json::from_str::<Value>(raw.get()).ok()?;
                Some((range, RequestId::from_value(&value)))
            }
            None => None,
        };
        Some(Self {
            text,
            id,
            method: members.method,
            answer: members.answer,
        })
    }

    /// The `id` of a request (it has a `method`), as `rpc_ids::request_id`.
    pub fn request_id(&self) -> Option<RequestId> {
        if !self.method {
            return None;
        }
        self.id.as_ref().and_then(|(_, id)| id.clone())
    }

    /// The `id` of a response (no `method`, a `result` or an `error`), as `rpc_ids::response_id`.
    pub fn response_id(&self) -> Option<RequestId> {
        if self.method || !self.answer {
            return None;
        }
        self.id.as_ref().and_then(|(_, id)| id.clone())
    }

    /// The text with its `id` replaced by `id`, every other byte as it came; `None` when it has no
    /// `id` member (`rpc_ids::set_id` would add one: this never does).
    pub fn with_id(&self, id: &RequestId) -> Option<String> {
        let (range, _) = self.id.as_ref()?;
        let written = serde_json::to_string(&id.to_value()).ok()?;
        let mut out = String::with_capacity(self.text.len() + written.len());
        out.push_str(self.text.get(..range.start)?);
        out.push_str(&written);
        out.push_str(self.text.get(range.end..)?);
        Some(out)
    }
}

/// The members the id rules look at; every other member is skipped without being built.
struct Members<'a> {
    id: Option<&'a RawValue>,
    method: bool,
    answer: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
    type Value = Members<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut members = Members {
            id: None,
            method: false,
            answer: false,
        };
        let (mut seen_method, mut seen_result, mut seen_error) = (false, false, false);
        let twice = |name: Name| M::Error::custom(format_args!("`{}` twice", name.as_str()));
        while let Some(name) = map.next_key::<Name>()? {
            match name {
                Name::Id => {
                    if members.id.is_some() {
                        return Err(twice(Name::Id));
                    }
                    members.id = Some(map.next_value::<&'a RawValue>()?);
                }
                Name::Method | Name::Result | Name::Error => {
                    let seen = match name {
                        Name::Method => &mut seen_method,
                        Name::Result => &mut seen_result,
                        _ => &mut seen_error,
                    };
                    if std::mem::replace(seen, true) {
                        return Err(twice(name));
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                Name::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        members.method = seen_method;
        members.answer = seen_result || seen_error;
        Ok(members)
    }
}

/// A member's name, unescaped by the parser (so `"\u0069d"` is `id`, as for `Value`).
#[derive(Clone, Copy)]
enum Name {
    Id,
    Method,
    Result,
    Error,
    Other,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Id => "id",
            Name::Method => "method",
            Name::Result => "result",
            Name::Error => "error",
            Name::Other => "other",
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(match name {
                    "id" => Name::Id,
                    "method" => Name::Method,
                    "result" => Name::Result,
                    "error" => Name::Error,
                    _ => Name::Other,
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests;
