//! Which protocol era a POST is served in, from every version it declares: the
//! `MCP-Protocol-Version` header and each message's `_meta` protocol version. A request is modern
//! when either says so (a client cannot skip the modern checks by declaring a legacy version in one
//! place and the modern one in the other: the modern ladder then refuses the mismatch). Batches do
//! not exist in 2026-07-28: a batch declaring it, or a version the broker does not know, is refused
//! here with that era's codes instead of reaching the backend unchecked.

use serde_json::json;

use super::{HANDSHAKE, Rejection, SUPPORTED, UNSUPPORTED_PROTOCOL_VERSION, is_modern};
use crate::jsonrpc::{Body, codes};

/// How a POST is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Era {
    /// Handshake era: routed on its session (or passed through without one).
    Legacy,
    /// 2026-07-28 or later, sessionless: the modern ladder ([`super::check`]) runs first.
    Modern,
    /// Refused before anything is routed.
    Refused(Rejection),
}

/// The era of a POST whose header says `header`; `has_session`: it carries a broker session id
/// (a single request with one stays legacy: its session was opened by a handshake).
pub fn era(header: Option<&str>, body: &Body, has_session: bool) -> Era {
    let metas = body
        .messages()
        .iter()
        .filter_map(|m| m.meta_str(super::META_PROTOCOL_VERSION));
    let declared: Vec<&str> = header.into_iter().chain(metas).collect();
    match body {
        Body::Batch(_) => {
            let unknown = declared
                .iter()
                .find(|v| !HANDSHAKE.contains(v) && !SUPPORTED.contains(v));
            if let Some(version) = unknown {
                Era::Refused(Rejection {
                    code: UNSUPPORTED_PROTOCOL_VERSION,
                    message: "Unsupported protocol version".into(),
                    data: Some(json!({"supported": SUPPORTED, "requested": version})),
                })
            } else if declared.iter().any(|v| SUPPORTED.contains(v)) {
                Era::Refused(Rejection::new(
                    codes::INVALID_REQUEST,
                    "protocol 2026-07-28 has no JSON-RPC batches: send each request in its own POST",
                ))
            } else {
                Era::Legacy
            }
        }
        Body::Single(_) if !has_session && declared.iter().any(|v| is_modern(Some(v))) => {
            Era::Modern
        }
        Body::Single(_) => Era::Legacy,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::jsonrpc;
    use crate::modern::{HEADER_MISMATCH, META_PROTOCOL_VERSION};

    const MODERN: &str = "2026-07-28";
    const LEGACY: &str = "2025-06-18";

    fn request(meta: Option<&str>) -> Value {
        let mut params = json!({"name": "t", "arguments": {}});
        if let Some(version) = meta {
            params["_meta"] = json!({ META_PROTOCOL_VERSION: version });
        }
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    }

    fn body(value: Value) -> Body {
        jsonrpc::parse(&serde_json::to_vec(&value).expect("json")).expect("parses")
    }

    fn code(era: &Era) -> Option<i64> {
        match era {
            Era::Refused(rejection) => Some(rejection.code),
            _ => None,
        }
    }

    /// (header, body, has a session, era or refusal code)
    type Case<'a> = (Option<&'a str>, Value, bool, Result<Era, i64>);

    #[test]
    fn every_combination() {
        let legacy = || Era::Legacy;
        let modern = || Era::Modern;
        let batch = |metas: &[Option<&str>]| {
            Value::Array(metas.iter().map(|m| request(*m)).collect::<Vec<_>>())
        };
        let cases: Vec<Case> = vec![
            (None, request(None), false, Ok(legacy())),
            (Some(LEGACY), request(Some(LEGACY)), false, Ok(legacy())),
            (Some(MODERN), request(Some(MODERN)), false, Ok(modern())),
            (None, request(Some(MODERN)), false, Ok(modern())),
            (Some(MODERN), request(None), false, Ok(modern())),
            // Header and _meta disagree: modern (the ladder then refuses the mismatch).
            (Some(LEGACY), request(Some(MODERN)), false, Ok(modern())),
            (Some(MODERN), request(Some(LEGACY)), false, Ok(modern())),
            (Some("2099-01-01"), request(None), false, Ok(modern())),
            // A session's single requests stay with their handshake.
            (Some(MODERN), request(Some(MODERN)), true, Ok(legacy())),
            (Some("1999-01-01"), request(None), true, Ok(legacy())),
            // Batches.
            (None, batch(&[None, None]), false, Ok(legacy())),
            (
                Some(LEGACY),
                batch(&[None, Some(LEGACY)]),
                true,
                Ok(legacy()),
            ),
            (
                Some(MODERN),
                batch(&[None, None]),
                false,
                Err(codes::INVALID_REQUEST),
            ),
            (
                None,
                batch(&[None, Some(MODERN)]),
                false,
                Err(codes::INVALID_REQUEST),
            ),
            (
                Some(LEGACY),
                batch(&[Some(MODERN)]),
                true,
                Err(codes::INVALID_REQUEST),
            ),
            (
                Some(MODERN),
                batch(&[None]),
                true,
                Err(codes::INVALID_REQUEST),
            ),
            (
                Some("2099-01-01"),
                batch(&[None]),
                false,
                Err(UNSUPPORTED_PROTOCOL_VERSION),
            ),
            (
                None,
                batch(&[Some("banana")]),
                false,
                Err(UNSUPPORTED_PROTOCOL_VERSION),
            ),
            (
                Some(MODERN),
                batch(&[Some("1999-01-01")]),
                false,
                Err(UNSUPPORTED_PROTOCOL_VERSION),
            ),
        ];
        for (i, (header, value, session, expected)) in cases.into_iter().enumerate() {
            let got = era(header, &body(value), session);
            match expected {
                Ok(era) => assert_eq!(got, era, "case {i}"),
                Err(expected) => assert_eq!(code(&got), Some(expected), "case {i}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_disagreeing_single_request_is_refused_by_the_ladder() {
        let message = match body(request(Some(LEGACY))) {
            Body::Single(message) => message,
            Body::Batch(_) => panic!("one"),
        };
        let headers = crate::modern::RoutingHeaders {
            protocol_version: Some(MODERN),
            method: Some("tools/call"),
            name: Some("t"),
            duplicated: false,
        };
        let refused = crate::modern::check(&message, &headers).map_err(|r| r.code);
        assert!(
            matches!(refused, Err(c) if c == HEADER_MISMATCH || c == crate::modern::INVALID_PARAMS),
            "{refused:?}"
        );
    }

    #[test]
    fn an_unsupported_version_names_what_is() {
        let Era::Refused(rejection) = era(Some("2099-01-01"), &body(json!([request(None)])), false)
        else {
            panic!("refused");
        };
        assert_eq!(rejection.http_status(), 400);
        let reply = rejection.reply(None);
        assert_eq!(reply["error"]["data"]["supported"], json!(SUPPORTED));
        assert_eq!(reply["id"], Value::Null);
    }
}
