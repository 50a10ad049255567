//! Reading a chat-completions reply: a Server-Sent Events stream (`data: {json}` lines with
//! `choices[0].delta`), or, from a server that ignores `"stream": true`, one JSON object. Both
//! come out as one [`Completion`]; an error object inside either is a [`Failure`].

use serde_json::Value;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};

use super::calls::CallParts;
use super::transport::{is_context_error, Failure};
use super::wire::Completion;
use super::{clip, Watch};

/// A streamed reply: `data: {json}` lines, each with `choices[0].delta`, until `data: [DONE]`
/// or the end of the body. Checks `cancel` after every line.
pub(super) fn read_stream(
    mut reader: impl BufRead,
    cancel: &AtomicBool,
    watch: Watch,
) -> Result<Completion, Failure> {
    let mut c = Completion::default();
    let mut calls = CallParts::default();
    let mut events = 0;
    let mut line = Vec::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Failure::Cancelled); // dropping the reader closes the connection
        }
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Transient(format!("stream interrupted: {e}")))?;
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let Some(data) = text.trim_end().strip_prefix("data:") else {
            continue; // comments, event names, blank separators
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Failure::Transient(format!("malformed stream event ({e}): {}", clip(data)))
        })?;
        if apply_event(&v, &mut c, &mut calls)? {
            events += 1;
            if watch(&c, events) {
                c.interrupted = true;
                return Ok(c); // dropping the reader closes the connection
            }
        }
    }
    Ok(c)
}

/// Merge one stream event into `c`; true when it brought text or tool-call fragments (about one
/// token: what the watcher counts).
fn apply_event(v: &Value, c: &mut Completion, calls: &mut CallParts) -> Result<bool, Failure> {
    if let Some(f) = error_in(v) {
        return Err(f);
    }
    read_usage(v, c);
    let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    else {
        return Ok(false); // the usage-only event, or an empty choices list
    };
    let delta = choice.get("delta").unwrap_or(&Value::Null);
    let before = c.text_bytes();
    c.content
        .push_str(&text_field(delta, "content").unwrap_or_default());
    for key in ["reasoning_content", "reasoning"] {
        if let Some(r) = text_field(delta, key).filter(|r| !r.is_empty()) {
            c.reasoning.get_or_insert_with(String::new).push_str(&r);
        }
    }
    if let Some(f) = text_field(choice, "finish_reason") {
        c.finish_reason = Some(f.into());
    }
    if let Some(lp) = choice.get("logprobs") {
        c.logprobs.add_logprobs(lp);
    }
    let mut fragments = false;
    for call in delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        fragments |= calls.add(call, calls.next_index(call), c);
    }
    Ok(fragments || c.text_bytes() > before)
}

/// A non-streamed reply: `choices[0].message`.
pub(super) fn parse_whole(text: &str) -> Result<Completion, Failure> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Failure::Transient(format!("malformed response ({e}): {}", clip(text))))?;
    if let Some(f) = error_in(&v) {
        return Err(f);
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| Failure::Transient("response has no choices".into()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut c = Completion {
        content: text_field(message, "content").unwrap_or_default(),
        reasoning: text_field(message, "reasoning_content")
            .or_else(|| text_field(message, "reasoning")),
        finish_reason: text_field(choice, "finish_reason").map(Into::into),
        ..Default::default()
    };
    if let Some(lp) = choice.get("logprobs") {
        c.logprobs.add_logprobs(lp);
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let mut parts = CallParts::default();
        for (i, call) in calls.iter().enumerate() {
            parts.add(call, i as u64, &mut c);
        }
    }
    read_usage(&v, &mut c);
    Ok(c)
}

/// `{"error": ...}` or `{"object": "error", "message": ...}` inside a 200 reply or a stream.
fn error_in(v: &Value) -> Option<Failure> {
    let message = if let Some(e) = v.get("error") {
        e.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
    } else if v.get("object").and_then(Value::as_str) == Some("error") {
        v.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    } else {
        return None;
    };
    Some(if is_context_error(&message) {
        Failure::ContextLength(format!("server error: {}", clip(&message)))
    } else {
        Failure::Transient(format!("server error: {}", clip(&message)))
    })
}

fn text_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn read_usage(v: &Value, c: &mut Completion) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        c.prompt_tokens = u
            .get("prompt_tokens")
            .and_then(Value::as_u64)
            .or(c.prompt_tokens);
        c.completion_tokens = u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .or(c.completion_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::classify_status;
    use super::super::FinishReason;
    use super::*;

    #[test]
    fn reads_a_vllm_style_stream_with_reasoning_and_usage() {
        let sse = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think \"}}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\\boxed{7}\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n"
        );
        let c = read_stream(sse.as_bytes(), &AtomicBool::new(false), &mut |_, _| false).unwrap();
        assert_eq!(c.content, "\\boxed{7}");
        assert_eq!(c.reasoning.as_deref(), Some("think "));
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(5), Some(3)));
    }

    #[test]
    fn a_watcher_stops_the_stream_and_keeps_what_arrived() {
        let sse = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\n",
        );
        let mut seen = Vec::new();
        let c = read_stream(sse.as_bytes(), &AtomicBool::new(false), &mut |c, n| {
            seen.push(n);
            c.content == "b"
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2], "only deltas with text count");
        assert!(c.interrupted);
        assert_eq!(
            (c.reasoning.as_deref(), c.content.as_str()),
            (Some("a"), "b")
        );
    }

    #[test]
    fn error_shapes_and_context_errors_are_told_apart() {
        let e = parse_whole(
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens"}"#,
        );
        assert!(matches!(e, Err(Failure::ContextLength(_))));
        let e = parse_whole(r#"{"error":{"message":"overloaded"}}"#);
        assert!(matches!(e, Err(Failure::Transient(_))));
        assert!(matches!(
            parse_whole(r#"{"choices":[]}"#),
            Err(Failure::Transient(_))
        ));
        let c =
            parse_whole(r#"{"choices":[{"message":{"content":null,"reasoning_content":"r"}}]}"#)
                .unwrap();
        assert_eq!(
            (c.content.as_str(), c.reasoning.as_deref()),
            ("", Some("r"))
        );
        assert!(matches!(
            classify_status(400, "the request exceeds the available context size"),
            Failure::ContextLength(_)
        ));
        assert!(matches!(
            classify_status(404, "no route"),
            Failure::Permanent(_)
        ));
        let stream = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
        let never = &mut |_: &Completion, _| false;
        assert!(read_stream(stream.as_bytes(), &AtomicBool::new(false), never).is_err());
        assert!(matches!(
            read_stream("data: {}\n".as_bytes(), &AtomicBool::new(true), never),
            Err(Failure::Cancelled)
        ));
    }
}
