//! A small OpenAI-compatible chat-completions client (vLLM, SGLang, NIM, llama.cpp server):
//! streamed requests (Server-Sent Events) that a caller can cancel between tokens, bounded
//! retries with jittered backoff, and a hard deadline per request.
//!
//! Cancelling drops the response body mid-stream, which closes the connection; vLLM and
//! llama.cpp abort a generation whose client has gone, so the slot is freed for other work.
//! A server that ignores `"stream": true` and answers with one JSON object is read as well.
//!
//! Files: wire.rs (the OpenAI types: messages, roles, tool calls, finish reasons, the request
//! body), transport.rs (one pooled HTTP agent, time limits, retries and backoff, how a failed
//! reply is classified), sse.rs (reading a streamed or whole reply), calls.rs (putting tool-call
//! fragments together).

mod calls;
mod sse;
mod transport;
mod wire;

use serde_json::Value;
use std::io::{BufReader, Read};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use calls::MAX_CALLS_PER_REPLY;
pub use transport::{Attempted, RetryPolicy};
pub use wire::{Completion, FinishReason, FunctionCall, Message, RequestedCall, Role, Sampling};

use transport::{Failure, Transport};
use wire::Ask;

/// Bytes read from one response at most: a 2 MB completion is fine, an endless stream is not.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Called after every streamed delta with the completion so far and the number of deltas that
/// carried text or tool-call fragments (about one token each); returning true stops the stream
/// there and returns what arrived as the completion (`interrupted`). A non-streamed reply is
/// shown once, whole.
pub type Watch<'a> = &'a mut dyn FnMut(&Completion, usize) -> bool;

/// A server and a model; clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    endpoint: String,
    model: String,
    transport: Transport,
    /// The server's refusal of `logprobs`, shared by every clone: asked once, then never again.
    logprobs_refused: Arc<Mutex<Option<String>>>,
    /// The run was told that log-probs are missing (said once, whatever the clone).
    logprobs_told: Arc<AtomicBool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.transport.has_key().then_some("<set>"))
            .finish()
    }
}

impl Client {
    pub fn new(endpoint: &str, model: &str, api_key: Option<String>, retry: RetryPolicy) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            model: model.to_string(),
            transport: Transport::new(api_key, retry),
            logprobs_refused: Arc::default(),
            logprobs_told: Arc::default(),
        }
    }

    /// True the first time only: the missing log-probs are reported once per run.
    pub fn first_logprobs_notice(&self) -> bool {
        !self
            .logprobs_told
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the server refused `logprobs`, if it did (requests go without them since).
    pub fn logprobs_refused(&self) -> Option<String> {
        self.logprobs_refused.lock().ok()?.clone()
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
        let ask = Ask {
            messages,
            tools,
            sampling,
            logprobs: true,
        };
        self.transport.retry(deadline, cancel, |timeout| {
            self.attempt(&ask, timeout, cancel, &mut *watch)
        })
    }

    /// One request and its reply, streamed or whole.
    fn attempt(
        &self,
        ask: &Ask,
        timeout: Duration,
        cancel: &AtomicBool,
        watch: Watch,
    ) -> Result<Completion, Failure> {
        let url = format!("{}/chat/completions", self.endpoint);
        let ask = &Ask {
            logprobs: ask.logprobs && self.logprobs_refused().is_none(),
            ..*ask
        };
        let resp = self
            .transport
            .post(&url, &ask.body(&self.model), timeout)
            .map_err(|e| Failure::Transient(format!("request failed: {e}")))?;
        let status = resp.status().as_u16();
        let event_stream = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reader = resp.into_body().into_reader().take(MAX_RESPONSE_BYTES);
        if !(200..300).contains(&status) {
            let text = transport::read_text(reader, status)?;
            let asked = ask.logprobs && ask.sampling.top_logprobs.is_some();
            if asked && transport::is_logprobs_error(status, &text) {
                // Remembered for the whole run; this request goes again at once without them.
                if let Ok(mut r) = self.logprobs_refused.lock() {
                    r.get_or_insert_with(|| format!("HTTP {status}: {}", clip(&text)));
                }
                return self.attempt(ask, timeout, cancel, watch);
            }
            return Err(transport::failure_of(status, &text, ask.tools.is_some()));
        }
        let mut completion = if event_stream {
            sse::read_stream(BufReader::new(reader), cancel, watch)?
        } else {
            let mut c = sse::parse_whole(&transport::read_text(reader, status)?)?;
            let tokens = c
                .completion_tokens
                .map_or(c.text_bytes() / 4, |t| t as usize);
            c.interrupted = watch(&c, tokens.max(1));
            c
        };
        calls::name_calls(&mut completion.tool_calls);
        if completion.is_empty() {
            return Err(Failure::Transient("empty completion".into()));
        }
        Ok(completion)
    }

    /// Whether the server answers `GET {endpoint}/models` with 200.
    pub fn healthy(&self) -> bool {
        self.healthy_within(Duration::from_secs(5))
    }

    /// [`Client::healthy`], waiting at most `timeout`.
    pub fn healthy_within(&self, timeout: Duration) -> bool {
        self.get_json("/models", timeout).is_some()
    }

    /// `GET {endpoint}{path}` (or the root when `path` starts with `//`) as JSON, if it answers.
    pub fn get_json(&self, path: &str, timeout: Duration) -> Option<Value> {
        let url = match path.strip_prefix('/').and_then(|p| p.strip_prefix('/')) {
            Some(rooted) => format!("{}/{rooted}", self.root()),
            None => format!("{}{path}", self.endpoint),
        };
        self.transport.json(&url, None, timeout)
    }

    /// `GET {endpoint}{path}`: the status and body, or why no reply came.
    pub fn get_text(&self, path: &str, timeout: Duration) -> Result<(u16, String), GetError> {
        let url = format!("{}{path}", self.endpoint);
        self.transport.get(&url, timeout).map_err(|e| GetError {
            timed_out: matches!(e, ureq::Error::Timeout(_)),
            message: e.to_string(),
        })
    }

    /// `POST {root}{path}` with a JSON body, as JSON, if it answers 200.
    pub fn post_root_json(&self, path: &str, body: &Value, timeout: Duration) -> Option<Value> {
        let url = format!("{}{path}", self.root());
        self.transport.json(&url, Some(body), timeout)
    }
}

/// Why a GET got no reply.
#[derive(Debug)]
pub struct GetError {
    pub message: String,
    /// It was sent (or being connected) and the time ran out.
    pub timed_out: bool,
}

/// At most 200 characters of a server's text, for error messages.
pub(in crate::solve) fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}
