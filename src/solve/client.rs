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

/// Tool calls one reply may carry: more are dropped (and counted), so a hostile stream cannot
/// make a sample answer thousands of calls.
pub const MAX_CALLS_PER_REPLY: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant turn's OpenAI tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RequestedCall>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant turn that ends in tool calls.
    pub fn with_calls(content: impl Into<String>, calls: Vec<RequestedCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new("assistant", content)
        }
    }

    /// The answer to one tool call.
    pub fn tool_result(call_id: &str, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new("tool", content)
        }
    }

    /// Bytes of text the prompt carries for this message (content and tool-call arguments).
    pub fn text_len(&self) -> usize {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| c.function.name.len() + c.function.arguments.len())
            .sum();
        self.content.len() + calls
    }
}

/// A tool call as the model requested it, in the OpenAI shape
/// (`{"id", "type": "function", "function": {"name", "arguments"}}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RequestedCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// `arguments` is the JSON text the model wrote, unparsed: it may be anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
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
    /// OpenAI tool calls (`finish_reason: "tool_calls"`), assembled from their fragments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RequestedCall>,
    /// Tool calls beyond [`MAX_CALLS_PER_REPLY`], dropped.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_calls: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Called after every streamed delta with the completion so far and the number of deltas that
/// carried text or tool-call fragments (about one token each); returning true stops the stream there and returns what
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
    /// The request offered `tools` and the server refused them (its message); not retried.
    pub tools_refused: Option<String>,
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
    /// The request offered `tools` and the server said it cannot take them (vLLM without
    /// `--enable-auto-tool-choice`: 400; llama.cpp without `--jinja`: 500).
    ToolsRefused(String),
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
        self.complete_watched(messages, None, sampling, deadline, cancel, &mut |_, _| {
            false
        })
    }

    /// [`Client::complete`] offering `tools` (an OpenAI tools array), with a watcher that may
    /// stop the stream early (see [`Watch`]).
    pub fn complete_watched(
        &self,
        messages: &[Message],
        tools: Option<&Value>,
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
            let ask = Ask {
                messages,
                tools,
                sampling,
            };
            match self.attempt(&ask, timeout, cancel, &mut *watch) {
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
                Err(Failure::ToolsRefused(e)) => {
                    out.tools_refused = Some(e);
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
        ask: &Ask,
        timeout: Duration,
        cancel: &AtomicBool,
        watch: Watch,
    ) -> Result<Completion, Failure> {
        let Ask {
            messages,
            tools,
            sampling,
        } = *ask;
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
        if let Some(tools) = tools {
            body["tools"] = tools.clone();
            body["tool_choice"] = "auto".into();
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
            let text = read_text(reader, status)?;
            return Err(match classify_status(status, &text) {
                Failure::ContextLength(m) => Failure::ContextLength(m),
                _ if tools.is_some() && is_tools_error(status, &text) => {
                    Failure::ToolsRefused(format!("HTTP {status}: {}", clip(&text)))
                }
                f => f,
            });
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
        let mut completion = completion;
        name_calls(&mut completion.tool_calls);
        if completion.tool_calls.is_empty()
            && completion.content.trim().is_empty()
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

/// Give every call an id (a `tool` message must name the call it answers; some servers leave
/// it out), unique within the process.
fn name_calls(calls: &mut [RequestedCall]) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for c in calls.iter_mut().filter(|c| c.id.is_empty()) {
        c.id = format!("call_x{}", NEXT.fetch_add(1, Ordering::Relaxed));
    }
}

/// One request's inputs.
#[derive(Clone, Copy)]
struct Ask<'a> {
    messages: &'a [Message],
    tools: Option<&'a Value>,
    sampling: &'a Sampling,
}

/// A refusal of the `tools` field: vLLM without `--enable-auto-tool-choice` ("\"auto\" tool
/// choice requires --enable-auto-tool-choice and --tool-call-parser"), llama.cpp without
/// `--jinja` ("tools param requires --jinja flag", a 500). Rate limits are not refusals.
fn is_tools_error(status: u16, text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    status >= 400 && !matches!(status, 408 | 429) && (t.contains("tool") || t.contains("jinja"))
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
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let mut parts = CallParts::default();
        for (i, call) in calls.iter().enumerate() {
            parts.add(call, i as u64, &mut c);
        }
    }
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
        let mut fragments = false;
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            fragments |= calls.add(call, calls.next_index(call), &mut c);
        }
        if fragments || c.content.len() + c.reasoning.as_deref().map_or(0, str::len) > before {
            events += 1;
            if watch(&c, events) {
                c.interrupted = true;
                return Ok(c); // dropping the reader closes the connection
            }
        }
    }
    Ok(c)
}

/// Tool-call fragments of one reply, put together by their `index`: the id, type and name come
/// once (usually first), the arguments in pieces; some servers send each call whole.
#[derive(Default)]
struct CallParts {
    /// The `index` of each call in `Completion::tool_calls`, in order of first appearance.
    indexes: Vec<u64>,
}

impl CallParts {
    /// The index a fragment belongs to: its own, else a new call when it brings a new id, else
    /// the last call.
    fn next_index(&self, call: &Value) -> u64 {
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
    fn add(&mut self, call: &Value, index: u64, c: &mut Completion) -> bool {
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
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
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
        assert!(is_tools_error(500, "tools param requires --jinja flag"));
        assert!(is_tools_error(
            400,
            "\"auto\" tool choice requires --enable-auto-tool-choice"
        ));
        assert!(!is_tools_error(429, "too many tool requests"));
        assert!(!is_tools_error(400, "Expected 'messages' to be an array"));
    }
}
