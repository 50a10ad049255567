//! The retrying HTTP transport: one `ureq` agent for the whole run (its connection pool is
//! shared by every clone, so samples and retries reuse connections the server keeps open), a
//! hard limit on each request, the bearer token, and bounded retries with jittered backoff
//! that never run past a deadline and stop as soon as the caller cancels.

use serde::Serialize;
use serde_json::Value;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::clip;
use super::wire::Completion;

/// How hard one sample tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, on transient failures only.
    pub retries: usize,
    /// Upper bound on one HTTP request (connect to last byte).
    pub request_timeout: Duration,
    /// First pause between retries (doubles each time, with jitter).
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 4,
            request_timeout: Duration::from_secs(1800),
            backoff: Duration::from_millis(500),
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

/// Why one attempt failed, which decides whether another is made.
#[derive(Debug)]
pub(super) enum Failure {
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

/// Idle pooled connections are dropped before the usual 5 s keep-alive of uvicorn (vLLM) and
/// llama.cpp's server would close them under us.
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

#[derive(Clone)]
pub(super) struct Transport {
    /// Cloning shares the pool: every sample thread uses the same connections.
    agent: ureq::Agent,
    /// Never logged or written anywhere: only sent as the bearer token.
    api_key: Option<String>,
    pub policy: RetryPolicy,
}

impl Transport {
    pub fn new(api_key: Option<String>, policy: RetryPolicy) -> Self {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_idle_connections(256)
                .max_idle_connections_per_host(256)
                .max_idle_age(MAX_IDLE_AGE)
                .build(),
        );
        Self {
            agent,
            api_key: api_key.filter(|k| !k.is_empty()),
            policy,
        }
    }

    pub fn has_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The request with its time limit and the bearer token.
    fn prepared<B>(
        &self,
        req: ureq::RequestBuilder<B>,
        timeout: Duration,
    ) -> ureq::RequestBuilder<B> {
        let req = req.config().timeout_global(Some(timeout)).build();
        match &self.api_key {
            Some(key) => req.header("Authorization", &format!("Bearer {key}")),
            None => req,
        }
    }

    /// `POST url` with a JSON body; any HTTP status is a response.
    pub fn post(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        self.prepared(self.agent.post(url), timeout).send_json(body)
    }

    /// `GET url`: its status and body (at most 1 MB).
    pub fn get(&self, url: &str, timeout: Duration) -> Result<(u16, String), ureq::Error> {
        let resp = self.prepared(self.agent.get(url), timeout).call()?;
        let status = resp.status().as_u16();
        let mut body = String::new();
        resp.into_body()
            .into_reader()
            .take(1 << 20)
            .read_to_string(&mut body)?;
        Ok((status, body))
    }

    /// `GET url` (or `POST` with `body`) as JSON, if it answers 200 in time.
    pub fn json(&self, url: &str, body: Option<&Value>, timeout: Duration) -> Option<Value> {
        let resp = match body {
            Some(b) => self.post(url, b, timeout).ok()?,
            None => self.prepared(self.agent.get(url), timeout).call().ok()?,
        };
        if resp.status().as_u16() != 200 {
            return None;
        }
        let text = resp.into_body().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Up to `retries + 1` calls of `attempt` (given the time it may take), none past
    /// `deadline`, with backoff between transient failures, until one succeeds, fails for
    /// good, or `cancel` is set.
    pub fn retry(
        &self,
        deadline: Instant,
        cancel: &AtomicBool,
        mut attempt: impl FnMut(Duration) -> Result<Completion, Failure>,
    ) -> Attempted {
        let start = Instant::now();
        let mut out = Attempted::default();
        while out.attempts <= self.policy.retries {
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
            match attempt(left.min(self.policy.request_timeout)) {
                Ok(c) => {
                    out.completion = Some(c);
                    break;
                }
                Err(Failure::Transient(e)) => {
                    out.errors.push(e);
                    if out.attempts > self.policy.retries {
                        break;
                    }
                    self.back_off(out.attempts, deadline, cancel);
                }
                Err(f) => {
                    record_final(&mut out, f);
                    break;
                }
            }
        }
        out.seconds = start.elapsed().as_secs_f64();
        out
    }

    /// Exponential backoff with full jitter, never past the deadline, cut short by `cancel`.
    fn back_off(&self, attempts: usize, deadline: Instant, cancel: &AtomicBool) {
        let cap = self
            .policy
            .backoff
            .saturating_mul(1 << (attempts - 1).min(6));
        let until = (Instant::now() + cap.mul_f64(jitter())).min(deadline);
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }
}

/// A failure that ends the sample without another try.
fn record_final(out: &mut Attempted, f: Failure) {
    match f {
        Failure::Cancelled => out.cancelled = true,
        Failure::ContextLength(e) => {
            out.errors.push(e);
            out.context_overflow = true;
        }
        Failure::Permanent(e) | Failure::Transient(e) => out.errors.push(e),
        Failure::ToolsRefused(e) => out.tools_refused = Some(e),
    }
}

/// A non-2xx reply as a failure: a context overflow, a refusal of `tools` (when they were
/// offered), or by its status.
pub(super) fn failure_of(status: u16, text: &str, offered_tools: bool) -> Failure {
    match classify_status(status, text) {
        Failure::ContextLength(m) => Failure::ContextLength(m),
        _ if offered_tools && is_tools_error(status, text) => {
            Failure::ToolsRefused(format!("HTTP {status}: {}", clip(text)))
        }
        f => f,
    }
}

pub(super) fn classify_status(status: u16, text: &str) -> Failure {
    let msg = format!("HTTP {status}: {}", clip(text));
    match status {
        400 | 413 if is_context_error(text) => Failure::ContextLength(msg),
        408 | 429 => Failure::Transient(msg),
        s if s >= 500 && is_context_error(text) => Failure::ContextLength(msg),
        s if s >= 500 => Failure::Transient(msg),
        _ => Failure::Permanent(msg),
    }
}

/// A refusal of the `tools` field: vLLM without `--enable-auto-tool-choice` ("\"auto\" tool
/// choice requires --enable-auto-tool-choice and --tool-call-parser"), llama.cpp without
/// `--jinja` ("tools param requires --jinja flag", a 500). Rate limits are not refusals.
fn is_tools_error(status: u16, text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    status >= 400 && !matches!(status, 408 | 429) && (t.contains("tool") || t.contains("jinja"))
}

/// A refusal of `logprobs` / `top_logprobs` (a server or model without them): a client error
/// naming them. Rate limits and server errors are not refusals.
pub(super) fn is_logprobs_error(status: u16, text: &str) -> bool {
    (400..500).contains(&status)
        && !matches!(status, 408 | 429)
        && text.to_ascii_lowercase().contains("logprob")
}

/// Words servers use when a prompt does not fit (vLLM: "maximum context length"; llama.cpp:
/// "exceeds the available context size"; others: "context length", "too many tokens").
pub(super) fn is_context_error(text: &str) -> bool {
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

/// A whole (error) body as text.
pub(super) fn read_text(mut reader: impl Read, status: u16) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Transient(format!("HTTP {status}: reading the body failed: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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
    fn tools_refusals_are_told_from_rate_limits_and_other_errors() {
        assert!(is_tools_error(500, "tools param requires --jinja flag"));
        assert!(is_tools_error(
            400,
            "\"auto\" tool choice requires --enable-auto-tool-choice"
        ));
        assert!(!is_tools_error(429, "too many tool requests"));
        assert!(!is_tools_error(400, "Expected 'messages' to be an array"));
        assert!(matches!(
            failure_of(500, "tools param requires --jinja flag", true),
            Failure::ToolsRefused(_)
        ));
        assert!(matches!(
            failure_of(500, "tools param requires --jinja flag", false),
            Failure::Transient(_)
        ));
    }

    #[test]
    fn retries_stop_at_the_limit_and_on_a_final_failure() {
        let t = Transport::new(
            None,
            RetryPolicy {
                retries: 2,
                request_timeout: Duration::from_secs(1),
                backoff: Duration::from_millis(1),
            },
        );
        let far = Instant::now() + Duration::from_secs(60);
        let no = AtomicBool::new(false);
        let a = t.retry(far, &no, |_| Err(Failure::Transient("x".into())));
        assert_eq!((a.attempts, a.errors.len()), (3, 3));
        let a = t.retry(far, &no, |_| Err(Failure::ContextLength("long".into())));
        assert!(a.attempts == 1 && a.context_overflow);
        let a = t.retry(far, &AtomicBool::new(true), |_| unreachable!());
        assert!(a.cancelled && a.attempts == 0);
    }
}
