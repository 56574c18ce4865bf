//! Encoding helpers of the admin API and CLI: the query string of an admin request (each parameter
//! once), and on the `base64` crate a secret for `keygen` and the payload of a token `token inspect`
//! has already verified.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The payload of a JWT as JSON (no verification here: verify first).
pub fn jwt_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The parameters of a query string, percent-decoded, in order. A name given twice (in any spelling
/// that decodes to the same name) is an error carrying that name: which one counts would be a guess.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let decode = |text: &str| {
        String::from_utf8_lossy(&crate::edge::path::percent_decode(text.as_bytes())).into_owned()
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name);
        if pairs.iter().any(|(seen, _)| *seen == name) {
            return Err(name);
        }
        pairs.push((name, decode(value)));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_once_each() {
        let pairs = |q| query_pairs(q).map(|p| p.into_iter().collect::<Vec<_>>());
        assert_eq!(
            pairs("principal=ab&x=%41"),
            Ok(vec![
                ("principal".into(), "ab".into()),
                ("x".into(), "A".into())
            ])
        );
        assert_eq!(pairs(""), Ok(vec![]));
        assert_eq!(
            pairs("flag&&a="),
            Ok(vec![("flag".into(), "".into()), ("a".into(), "".into())])
        );
        assert_eq!(pairs("principal=a&principal=b"), Err("principal".into()));
        assert_eq!(pairs("principal=a&%70rincipal=b"), Err("principal".into()));
        assert_eq!(pairs("principal=a&principal=a"), Err("principal".into()));
    }

    #[test]
    fn payload_of_a_token() {
        let token = format!("h.{}.s", URL_SAFE_NO_PAD.encode(br#"{"p":"x"}"#));
        assert_eq!(jwt_payload(&token), Some(serde_json::json!({"p": "x"})));
        assert_eq!(jwt_payload("no-dots"), None);
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
