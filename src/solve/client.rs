//! A small OpenAI-compatible chat-completions client (vLLM, SGLang, NIM, llama.cpp server):
//! streamed requests (Server-Sent Events) that a caller can cancel between tokens, bounded
//! retries with jittered backoff, and a hard deadline per request.
//!
//! Cancelling drops the response body mid-stream, which closes the connection; vLLM and
//! llama.cpp abort a generation whose client has gone, so the slot is freed for other work.
//! A server that ignores `"stream": true` and answers with one JSON object is read as well.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes read from one response at most: a 2 MB completion is fine, an endless stream is not.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
}

#[derive(Clone)]
pub struct Client {
    endpoint: String,
    model: String,
    /// Never logged or written anywhere: only sent as the bearer token.
    api_key: Option<String>,
    pub retries: usize,
    pub request_timeout: Duration,
    pub backoff: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// One completion as the server returned it: the answer text and, from servers with a
/// reasoning parser, the thinking separately.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// The caller's watcher stopped the stream (a code block to run, a spent budget).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Called after every streamed delta with the completion so far and the number of deltas that
/// carried text (about one token each); returning true stops the stream there and returns what
/// arrived as the completion (`interrupted`). A non-streamed reply is shown once, whole.
pub type Watch<'a> = &'a mut dyn FnMut(&Completion, usize) -> bool;

impl Completion {
    /// Reasoning and answer as one text, the thinking inside `<think>` as the model wrote it.
    pub fn full_text(&self) -> String {
        match &self.reasoning {
            Some(r) if !r.is_empty() => format!("<think>{r}</think>{}", self.content),
            _ => self.content.clone(),
        }
    }
}

/// Outcome of one sample, with every failed attempt recorded.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Attempted {
    pub completion: Option<Completion>,
    pub errors: Vec<String>,
    pub attempts: usize,
    pub seconds: f64,
    /// The server said the prompt does not fit its context.
    pub context_overflow: bool,
    /// Stopped on purpose (early stop or deadline) before the server finished.
    pub cancelled: bool,
}

#[derive(Debug)]
enum Failure {
    /// Worth another try (connection, timeout, 429, 5xx, malformed or empty reply).
    Transient(String),
    /// Retrying cannot help (4xx other than 408/429).
    Permanent(String),
    /// The prompt (plus max_tokens) is longer than the server's context.
    ContextLength(String),
    /// The caller no longer wants this sample.
    Cancelled,
}

impl Client {
    pub fn new(endpoint: &str, model: &str, api_key: Option<String>) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            retries: 4,
            request_timeout: Duration::from_secs(1800),
            backoff: Duration::from_millis(500),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The server's root: the endpoint without its `/v1` (llama.cpp serves /props, /slots,
    /// /tokenize there).
    pub fn root(&self) -> &str {
        self.endpoint.strip_suffix("/v1").unwrap_or(&self.endpoint)
    }

    /// One sample: up to `retries + 1` attempts, none running past `deadline`, each abandoned
    /// (connection closed) as soon as `cancel` is set.
    pub fn complete(
        &self,
        messages: &[Message],
        sampling: &Sampling,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Attempted {
        self.complete_watched(messages, sampling, deadline, cancel, &mut |_, _| false)
    }

    /// [`Client::complete`] with a watcher that may stop the stream early (see [`Watch`]).
    pub fn complete_watched(
        &self,
        messages: &[Message],
        sampling: &Sampling,
        deadline: Instant,
        cancel: &AtomicBool,
        watch: Watch,
    ) -> Attempted {
        let start = Instant::now();
        let mut out = Attempted::default();
        while out.attempts <= self.retries {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                out.errors.push("deadline reached".into());
                out.cancelled = true;
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                out.cancelled = true;
                break;
            }
            out.attempts += 1;
            let timeout = left.min(self.request_timeout);
            match self.attempt(messages, sampling, timeout, cancel, &mut *watch) {
                Ok(c) => {
                    out.completion = Some(c);
                    break;
                }
                Err(Failure::Cancelled) => {
                    out.cancelled = true;
                    break;
                }
                Err(Failure::ContextLength(e)) => {
                    out.errors.push(e);
                    out.context_overflow = true;
                    break;
                }
                Err(Failure::Permanent(e)) => {
                    out.errors.push(e);
                    break;
                }
                Err(Failure::Transient(e)) => {
                    out.errors.push(e);
                    if out.attempts > self.retries {
                        break;
                    }
                    self.back_off(out.attempts, deadline, cancel);
                }
            }
        }
        out.seconds = start.elapsed().as_secs_f64();
        out
    }

    /// Exponential backoff with full jitter, never past the deadline, cut short by `cancel`.
    fn back_off(&self, attempts: usize, deadline: Instant, cancel: &AtomicBool) {
        let cap = self.backoff.saturating_mul(1 << (attempts - 1).min(6));
        let until = (Instant::now() + cap.mul_f64(jitter())).min(deadline);
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }

    fn agent(timeout: Duration) -> ureq::Agent {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build(),
        )
    }

    fn attempt(
        &self,
        messages: &[Message],
        sampling: &Sampling,
        timeout: Duration,
        cancel: &AtomicBool,
        watch: Watch,
    ) -> Result<Completion, Failure> {
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        // A trailing assistant message is a prefill to continue (tool output, a forced
        // conclusion). llama.cpp continues one by default; vLLM needs both flags, which
        // llama.cpp accepts too (and then does not repeat the prefill in the stream).
        if messages.last().is_some_and(|m| m.role == "assistant") {
            body["continue_final_message"] = true.into();
            body["add_generation_prompt"] = false.into();
        }
        let mut req = Self::agent(timeout).post(&format!("{}/chat/completions", self.endpoint));
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let resp = req
            .send_json(&body)
            .map_err(|e| Failure::Transient(format!("request failed: {e}")))?;
        let status = resp.status().as_u16();
        let event_stream = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reader = resp.into_body().into_reader().take(MAX_RESPONSE_BYTES);
        if !(200..300).contains(&status) {
            return Err(classify_status(status, &read_text(reader, status)?));
        }
        let completion = if event_stream {
            read_stream(BufReader::new(reader), cancel, watch)?
        } else {
            let mut c = parse_whole(&read_text(reader, status)?)?;
            let chars = c.content.len() + c.reasoning.as_deref().map_or(0, str::len);
            let tokens = c.completion_tokens.map_or(chars / 4, |t| t as usize);
            c.interrupted = watch(&c, tokens.max(1));
            c
        };
        if completion.content.trim().is_empty()
            && completion
                .reasoning
                .as_deref()
                .unwrap_or("")
                .trim()
                .is_empty()
        {
            return Err(Failure::Transient("empty completion".into()));
        }
        Ok(completion)
    }

    /// Whether the server answers `GET {endpoint}/models` with 200.
    pub fn healthy(&self) -> bool {
        self.get_json("/models", Duration::from_secs(5)).is_some()
    }

    /// `GET {endpoint}{path}` (or the root when `path` starts with `//`) as JSON, if it answers.
    pub fn get_json(&self, path: &str, timeout: Duration) -> Option<Value> {
        let url = match path.strip_prefix('/').and_then(|p| p.strip_prefix('/')) {
            Some(rooted) => format!("{}/{rooted}", self.root()),
            None => format!("{}{path}", self.endpoint),
        };
        let mut req = Self::agent(timeout).get(&url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let resp = req.call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let text = resp.into_body().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `POST {root}{path}` with a JSON body, as JSON, if it answers 200.
    pub fn post_root_json(&self, path: &str, body: &Value, timeout: Duration) -> Option<Value> {
        let mut req = Self::agent(timeout).post(&format!("{}{path}", self.root()));
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let resp = req.send_json(body).ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let text = resp.into_body().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn read_text(mut reader: impl Read, status: u16) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Transient(format!("HTTP {status}: reading the body failed: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Words servers use when a prompt does not fit (vLLM: "maximum context length"; llama.cpp:
/// "exceeds the available context size"; others: "context length", "too many tokens").
fn is_context_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "maximum context length",
        "context size",
        "context length",
        "context window",
    ]
    .iter()
    .any(|w| t.contains(w))
        || (t.contains("too many tokens") || t.contains("too long")) && t.contains("prompt")
}

fn classify_status(status: u16, text: &str) -> Failure {
    let msg = format!("HTTP {status}: {}", clip(text));
    match status {
        400 | 413 if is_context_error(text) => Failure::ContextLength(msg),
        408 | 429 => Failure::Transient(msg),
        s if s >= 500 && is_context_error(text) => Failure::ContextLength(msg),
        s if s >= 500 => Failure::Transient(msg),
        _ => Failure::Permanent(msg),
    }
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

/// A non-streamed reply: `choices[0].message`.
fn parse_whole(text: &str) -> Result<Completion, Failure> {
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
        finish_reason: text_field(choice, "finish_reason"),
        ..Default::default()
    };
    read_usage(&v, &mut c);
    Ok(c)
}

/// A streamed reply: `data: {json}` lines, each with `choices[0].delta`, until `data: [DONE]`
/// or the end of the body. Checks `cancel` after every line.
fn read_stream(
    mut reader: impl BufRead,
    cancel: &AtomicBool,
    watch: Watch,
) -> Result<Completion, Failure> {
    let mut c = Completion::default();
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
        if let Some(f) = error_in(&v) {
            return Err(f);
        }
        read_usage(&v, &mut c);
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        else {
            continue; // the usage-only event, or an empty choices list
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let before = c.content.len() + c.reasoning.as_deref().map_or(0, str::len);
        c.content
            .push_str(&text_field(delta, "content").unwrap_or_default());
        for key in ["reasoning_content", "reasoning"] {
            if let Some(r) = text_field(delta, key).filter(|r| !r.is_empty()) {
                c.reasoning.get_or_insert_with(String::new).push_str(&r);
            }
        }
        if let Some(f) = text_field(choice, "finish_reason") {
            c.finish_reason = Some(f);
        }
        if c.content.len() + c.reasoning.as_deref().map_or(0, str::len) > before {
            events += 1;
            if watch(&c, events) {
                c.interrupted = true;
                return Ok(c); // dropping the reader closes the connection
            }
        }
    }
    Ok(c)
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

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A factor in [0.5, 1.0) from the clock's low bits: enough to keep retrying clients apart.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    0.5 + (nanos % 1000) as f64 / 2000.0
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
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
