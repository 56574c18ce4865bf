//! [`Packed`]: an id as the memory store keeps it. The broker's own ids (principals, work
//! sessions, MCP sessions, conversation keys) are 32 lowercase hex digits, kept as their 16 bytes
//! inline; any other text (a shorter id, a backend's session id) is kept as it came, boxed. The
//! form is chosen by the text alone, so equal texts are equal [`Packed`] values (and hash alike),
//! and [`Packed`] orders as its text does.

use std::cmp::Ordering;
use std::fmt;

/// Hex digits in the inline form.
const HEX_DIGITS: usize = 32;

/// One id, compact (see the module's doc).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Packed {
    /// Exactly 32 lowercase hex digits, as their bytes.
    Hex([u8; HEX_DIGITS / 2]),
    /// Any other text, as it is.
    Text(Box<str>),
}

fn is_lower_hex(text: &str) -> bool {
    text.len() == HEX_DIGITS
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Packed {
    /// The compact form of `text`.
    pub(super) fn new(text: &str) -> Self {
        let mut bytes = [0u8; HEX_DIGITS / 2];
        if is_lower_hex(text) && hex::decode_to_slice(text, &mut bytes).is_ok() {
            Self::Hex(bytes)
        } else {
            Self::Text(text.into())
        }
    }

    /// The text it was made from.
    pub(super) fn text(&self) -> String {
        match self {
            Self::Hex(bytes) => hex::encode(bytes),
            Self::Text(text) => text.to_string(),
        }
    }

    /// The typed id it was made from. Only a validated id is ever packed, so this is `None` only
    /// if `T` is not the type it was packed from.
    pub(super) fn restore<T: TryFrom<String>>(&self) -> Option<T> {
        T::try_from(self.text()).ok()
    }
}

impl Ord for Packed {
    /// As the texts order (bytewise, as Redis orders members of equal score): two inline ids by
    /// their bytes, which order as their hex digits do.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Hex(a), Self::Hex(b)) => a.cmp(b),
            _ => self.text().cmp(&other.text()),
        }
    }
}

impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_follows_the_text_and_gives_it_back() {
        let id = "0123456789abcdef0123456789abcdef";
        assert!(matches!(Packed::new(id), Packed::Hex(_)));
        for text in [
            id,
            "ab",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdef0",
            "x-backend session",
        ] {
            let packed = Packed::new(text);
            assert_eq!(packed.text(), text);
            assert_eq!(packed, Packed::new(text));
        }
        assert!(matches!(Packed::new(&id.to_uppercase()), Packed::Text(_)));
        assert_ne!(Packed::new(id), Packed::new("ab"));
    }

    #[test]
    fn it_orders_as_its_text() {
        let texts = [
            "ffffffffffffffffffffffffffffffff",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdf0",
            "a",
            "0",
            "9a",
            "fffffffffffffffffffffffffffffffff",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(Packed::new(a).cmp(&Packed::new(b)), a.cmp(b), "{a} {b}");
            }
        }
    }

    #[test]
    fn an_inline_id_is_no_bigger_than_a_string() {
        assert!(std::mem::size_of::<Packed>() <= std::mem::size_of::<String>());
    }
}
