//! Tool-call assembly: a streamed reply carries its OpenAI tool calls in fragments (the id, type
//! and name once, usually first; the arguments in pieces; some servers send each call whole),
//! keyed by an `index` that may be absent or far out of range. Put them back together, at most
//! [`MAX_CALLS_PER_REPLY`] per reply, each with an id.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::{Completion, RequestedCall};

/// Tool calls one reply may carry: more are dropped (and counted), so a hostile stream cannot
/// make a sample answer thousands of calls.
pub const MAX_CALLS_PER_REPLY: usize = 32;

/// The tool-call fragments of one reply seen so far.
#[derive(Default)]
pub(super) struct CallParts {
    /// The `index` of each call in `Completion::tool_calls`, in order of first appearance.
    indexes: Vec<u64>,
}

impl CallParts {
    /// The index a fragment belongs to: its own, else a new call when it brings a new id, else
    /// the last call.
    pub fn next_index(&self, call: &Value) -> u64 {
        if let Some(i) = call.get("index").and_then(Value::as_u64) {
            return i;
        }
        let id = call.get("id").and_then(Value::as_str).unwrap_or("");
        match self.indexes.last() {
            Some(&last) if id.is_empty() => last,
            Some(&last) => last + 1,
            None => 0,
        }
    }

    /// Merge one fragment into `c.tool_calls`; true when it was kept.
    pub fn add(&mut self, call: &Value, index: u64, c: &mut Completion) -> bool {
        let pos = match self.indexes.iter().position(|&i| i == index) {
            Some(p) => p,
            None if self.indexes.len() >= MAX_CALLS_PER_REPLY => {
                c.dropped_calls += 1;
                return false;
            }
            None => {
                self.indexes.push(index);
                c.tool_calls.push(RequestedCall {
                    kind: "function".into(),
                    ..Default::default()
                });
                self.indexes.len() - 1
            }
        };
        let slot = &mut c.tool_calls[pos];
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            if slot.id.is_empty() {
                slot.id = id.to_string();
            }
        }
        let f = call.get("function").unwrap_or(&Value::Null);
        if let Some(name) = f.get("name").and_then(Value::as_str) {
            // Some servers repeat the whole name in every fragment.
            if slot.function.name != name {
                slot.function.name.push_str(name);
            }
        }
        match f.get("arguments") {
            Some(Value::String(a)) => slot.function.arguments.push_str(a),
            // A server that sends the arguments as an object: keep them as JSON text.
            Some(v) if !v.is_null() => slot.function.arguments.push_str(&v.to_string()),
            _ => {}
        }
        true
    }
}

/// Give every call an id (a `tool` message must name the call it answers; some servers leave
/// it out), unique within the process.
pub(super) fn name_calls(calls: &mut [RequestedCall]) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    for c in calls.iter_mut().filter(|c| c.id.is_empty()) {
        c.id = format!("call_x{}", NEXT.fetch_add(1, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::super::sse::{parse_whole, read_stream};
    use super::*;
    use crate::solve::client::FinishReason;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn tool_call_fragments_are_put_together_by_index() {
        let ev = |calls: serde_json::Value| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"choices": [{"delta": {"tool_calls": calls}}]})
            )
        };
        let sse = [
            ev(serde_json::json!([{"index": 0, "id": "a", "type": "function",
                "function": {"name": "python", "arguments": ""}}])),
            ev(serde_json::json!([{"index": 0, "function": {"arguments": "{\"code\": "}}])),
            // A second call, whole, interleaved; an index far out of range is only a key.
            ev(serde_json::json!([{"index": 4000000000u64, "id": "b",
                "function": {"name": "python", "arguments": {"code": "2"}}}])),
            ev(serde_json::json!([{"index": 0, "function": {"name": "python", "arguments": "\"1\"}"}}])),
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n".into(),
        ]
        .concat();
        let mut events = 0;
        let c = read_stream(sse.as_bytes(), &AtomicBool::new(false), &mut |_, n| {
            events = n;
            false
        })
        .unwrap();
        assert_eq!(events, 4, "tool-call fragments count as deltas");
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        let got: Vec<(&str, &str, &str)> = c
            .tool_calls
            .iter()
            .map(|t| {
                (
                    t.id.as_str(),
                    t.function.name.as_str(),
                    t.function.arguments.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "python", "{\"code\": \"1\"}"),
                ("b", "python", "{\"code\":\"2\"}")
            ]
        );
    }

    #[test]
    fn too_many_calls_are_dropped_and_ids_filled_in() {
        let calls: Vec<_> = (0..MAX_CALLS_PER_REPLY + 5)
            .map(|i| serde_json::json!({"index": i, "function": {"name": "python", "arguments": "{}"}}))
            .collect();
        let sse = format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"delta": {"tool_calls": calls}}]})
        );
        let mut c =
            read_stream(sse.as_bytes(), &AtomicBool::new(false), &mut |_, _| false).unwrap();
        assert_eq!(
            (c.tool_calls.len(), c.dropped_calls),
            (MAX_CALLS_PER_REPLY, 5)
        );
        name_calls(&mut c.tool_calls);
        let ids: std::collections::BTreeSet<_> = c.tool_calls.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), MAX_CALLS_PER_REPLY, "unique ids");
        let whole = parse_whole(
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"z","type":"function","function":{"name":"python","arguments":"{\"code\":\"1\"}"}}]},"finish_reason":"tool_calls"}]}"#,
        )
        .unwrap();
        assert_eq!(whole.tool_calls[0].id, "z");
        assert_eq!(whole.tool_calls[0].function.arguments, r#"{"code":"1"}"#);
    }
}
