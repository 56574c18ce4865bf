//! Encoding helpers of the admin CLI, on the `base64` crate: a secret for `keygen`, and the payload of
//! a token `token inspect` has already verified.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_of_a_token() {
        let token = format!("h.{}.s", URL_SAFE_NO_PAD.encode(br#"{"p":"x"}"#));
        assert_eq!(jwt_payload(&token), Some(serde_json::json!({"p": "x"})));
        assert_eq!(jwt_payload("no-dots"), None);
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
