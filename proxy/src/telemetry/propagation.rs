//! W3C trace context in and out, and the span names and attributes of the MCP semantic
//! conventions. In: a client's `traceparent`/`tracestate`, as HTTP headers or as the same keys in
//! `params._meta` (which wins: it is the MCP-level context), parents the request's server span.
//! Out: every request to the backend gets a client span, child of the current one, whose context
//! goes to the backend in the headers and in `params._meta` of a JSON-RPC request or
//! notification. When traces are off nothing here runs: the client's context passes through as it
//! came.

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use serde_json::{Map, Value};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{TARGET, on};

/// The trace-context keys, in headers and in `_meta`.
const KEYS: [&str; 2] = ["traceparent", "tracestate"];

/// The context a client sent in its headers, if traces are on and it sent one.
pub fn from_headers(headers: &HeaderMap) -> Option<Context> {
    (on() && headers.contains_key("traceparent")).then(|| {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
    })
}

struct MetaExtractor<'a>(&'a Map<String, Value>);

impl Extractor for MetaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaInjector<'a>(&'a mut Map<String, Value>);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// The context a client sent in `params._meta`, if traces are on and it sent one.
pub fn from_meta(params: Option<&Map<String, Value>>) -> Option<Context> {
    let meta = params?.get("_meta")?.as_object()?;
    (on() && meta.contains_key("traceparent")).then(|| {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetaExtractor(meta)))
    })
}

/// Makes `cx` the parent of `span` (which must not have started: no child span yet).
pub fn continue_trace(span: &Span, cx: Context) {
    if let Err(error) = span.set_parent(cx) {
        tracing::debug!(%error, "trace context not applied");
    }
}

/// The span name of the conventions: `{mcp.method.name} {target}`, the target being the tool, the
/// prompt or the resource when the method names one.
pub fn span_name(method: &str, target: Option<&str>) -> String {
    match target {
        Some(target) => format!("{method} {target}"),
        None => method.to_owned(),
    }
}

/// What a JSON-RPC message's method acts on, for its span name: `params.name` (a tool, a prompt)
/// or `params.uri` (a resource).
pub fn target(method: &str, params: Option<&Map<String, Value>>) -> Option<String> {
    let params = params?;
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The client span of one request to the backend, its context written into `headers` and, for a
/// JSON-RPC request or notification, into `params._meta` of `body`. `None` when traces are off.
pub fn outbound(body: &mut Bytes, headers: &mut HeaderMap) -> Option<Span> {
    if !on() {
        return None;
    }
    let mut message = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|m| m.get("method").is_some());
    let method = message
        .as_ref()
        .and_then(|m| m.get("method"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let params = message
        .as_ref()
        .and_then(|m| m.get("params"))
        .and_then(Value::as_object);
    let target = target(method, params);
    let name = if method.is_empty() {
        "upstream".to_owned()
    } else {
        span_name(method, target.as_deref())
    };
    let span = tracing::info_span!(
        target: TARGET,
        "upstream",
        otel.name = %name,
        otel.kind = "client",
        mcp.method.name = method,
        gen_ai.tool.name = tracing::field::Empty,
        mcp.resource.uri = tracing::field::Empty,
        jsonrpc.request.id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(target) = &target {
        match method {
            "tools/call" => span.record("gen_ai.tool.name", target.as_str()),
            m if m.starts_with("resources/") => span.record("mcp.resource.uri", target.as_str()),
            _ => &span,
        };
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
    if let Some(Value::Object(message)) = message.as_mut() {
        if let Some(id) = message.get("id") {
            span.record("jsonrpc.request.id", id.to_string().trim_matches('"'));
        }
        let params = message
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(params) = params.as_object_mut() {
            let meta = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                for key in KEYS {
                    meta.remove(key);
                }
                opentelemetry::global::get_text_map_propagator(|p| {
                    p.inject_context(&cx, &mut MetaInjector(meta));
                });
            }
        }
        if let Ok(rewritten) = serde_json::to_vec(&message) {
            *body = Bytes::from(rewritten);
        }
    }
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_follow_the_conventions() {
        let params = |v: Value| v.as_object().cloned();
        let rows = [
            (
                "tools/call",
                json_params(r#"{"name":"get_last_handover"}"#),
                "tools/call get_last_handover",
            ),
            (
                "resources/read",
                json_params(r#"{"uri":"file:///a"}"#),
                "resources/read file:///a",
            ),
            (
                "prompts/get",
                json_params(r#"{"name":"brief"}"#),
                "prompts/get brief",
            ),
            ("tools/list", None, "tools/list"),
            ("tools/call", None, "tools/call"),
            ("initialize", json_params(r#"{"name":"x"}"#), "initialize"),
        ];
        for (method, p, want) in rows {
            let p = p.and_then(params);
            assert_eq!(
                span_name(method, target(method, p.as_ref()).as_deref()),
                want
            );
        }
    }

    fn json_params(text: &str) -> Option<Value> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn nothing_is_touched_when_traces_are_off() {
        let mut body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let before = body.clone();
        let mut headers = HeaderMap::new();
        assert!(outbound(&mut body, &mut headers).is_none());
        assert_eq!(body, before);
        assert!(headers.is_empty());
        assert!(from_meta(None).is_none());
    }
}
