//! A small OpenAI-compatible chat-completions client (vLLM, SGLang, NIM, llama.cpp server)
//! with bounded retries, backoff with jitter, and a hard deadline per request.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

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

#[derive(Debug, Clone)]
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

/// One completion as the server returned it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Completion {
    pub text: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// Outcome of one sample, with every failed attempt recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Attempted {
    pub completion: Option<Completion>,
    pub errors: Vec<String>,
    pub attempts: usize,
    pub seconds: f64,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}
#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    /// vLLM's reasoning parsers put the thinking here.
    #[serde(default)]
    reasoning_content: Option<String>,
}
#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

enum Failure {
    /// Worth another try (connection, timeout, 429, 5xx, malformed or empty reply).
    Transient(String),
    /// Retrying cannot help (4xx other than 408/429).
    Permanent(String),
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

    /// One sample: up to `retries + 1` attempts, none running past `deadline`.
    pub fn complete(
        &self,
        messages: &[Message],
        sampling: &Sampling,
        deadline: Instant,
    ) -> Attempted {
        let start = Instant::now();
        let mut errors = Vec::new();
        let mut attempts = 0;
        while attempts <= self.retries {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                errors.push("deadline reached".into());
                break;
            }
            attempts += 1;
            match self.attempt(messages, sampling, left.min(self.request_timeout)) {
                Ok(c) => {
                    return Attempted {
                        completion: Some(c),
                        errors,
                        attempts,
                        seconds: start.elapsed().as_secs_f64(),
                    }
                }
                Err(Failure::Permanent(e)) => {
                    errors.push(e);
                    break;
                }
                Err(Failure::Transient(e)) => {
                    errors.push(e);
                    if attempts > self.retries {
                        break;
                    }
                    // Exponential backoff with full jitter, never past the deadline.
                    let cap = self.backoff.saturating_mul(1 << (attempts - 1).min(6));
                    let wait = cap.mul_f64(jitter());
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(wait.min(left));
                }
            }
        }
        Attempted {
            completion: None,
            errors,
            attempts,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    fn attempt(
        &self,
        messages: &[Message],
        sampling: &Sampling,
        timeout: Duration,
    ) -> Result<Completion, Failure> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build(),
        );
        let body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": 1,
        });
        let mut req = agent.post(&format!("{}/chat/completions", self.endpoint));
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let resp = req
            .send_json(&body)
            .map_err(|e| Failure::Transient(format!("request failed: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().map_err(|e| {
            Failure::Transient(format!("HTTP {status}: reading the body failed: {e}"))
        })?;
        if status == 429 || status == 408 || status >= 500 {
            return Err(Failure::Transient(format!(
                "HTTP {status}: {}",
                clip(&text)
            )));
        }
        if status >= 400 {
            return Err(Failure::Permanent(format!(
                "HTTP {status}: {}",
                clip(&text)
            )));
        }
        let parsed: ChatResponse = serde_json::from_str(&text).map_err(|e| {
            Failure::Transient(format!("malformed response ({e}): {}", clip(&text)))
        })?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| Failure::Transient("response has no choices".into()))?;
        let content = choice.message.content.unwrap_or_default();
        let text = match choice.message.reasoning_content {
            Some(r) if !r.is_empty() => format!("<think>{r}</think>{content}"),
            _ => content,
        };
        if text.trim().is_empty() {
            return Err(Failure::Transient("empty completion".into()));
        }
        Ok(Completion {
            text,
            finish_reason: choice.finish_reason,
            prompt_tokens: parsed.usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: parsed.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }

    /// Whether the server answers `GET {endpoint}/models` with 200.
    pub fn healthy(&self) -> bool {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let mut req = agent.get(&format!("{}/models", self.endpoint));
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        matches!(req.call(), Ok(r) if r.status().as_u16() == 200)
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
