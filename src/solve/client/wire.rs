//! The OpenAI chat-completions wire format: messages with typed roles, tool calls, sampling
//! settings, the request body, and a completion with its typed finish reason.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::solve::confidence::TokenStats;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of one tool call.
    Tool,
}

crate::named_enum!(Role { System => "system", User => "user", Assistant => "assistant", Tool => "tool" });

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// An assistant turn's OpenAI tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RequestedCall>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant turn that ends in tool calls.
    pub fn with_calls(content: impl Into<String>, calls: Vec<RequestedCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The answer to one tool call.
    pub fn tool_result(call_id: &str, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
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
    /// Ask for token log-probabilities with this many alternatives per token
    /// (`logprobs: true, top_logprobs: K`); None asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<usize>,
    /// `--seed`: the request's `seed` (sample i of every problem and arm gets seed + i).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Why a generation ended: the server's `finish_reason`, or ours when we ended it.
/// Written to traces as the server's word, so unknown reasons survive as they came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FinishReason {
    /// The model ended its answer (or hit a stop string).
    Stop,
    /// `max_tokens` ran out.
    Length,
    /// The reply ends in OpenAI tool calls.
    ToolCalls,
    ContentFilter,
    /// Ours: the thinking budget ran out and the answer was asked for.
    ThinkBudget,
    /// Anything else a server says.
    Other(String),
}

impl From<String> for FinishReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "think budget" => Self::ThinkBudget,
            _ => Self::Other(s),
        }
    }
}

impl From<FinishReason> for String {
    fn from(f: FinishReason) -> Self {
        f.as_str().to_string()
    }
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::ThinkBudget => "think budget",
            Self::Other(s) => s,
        }
    }
}

/// One completion as the server returned it: the answer text and, from servers with a
/// reasoning parser, the thinking separately.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub reasoning: Option<String>,
    pub finish_reason: Option<FinishReason>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// The caller's watcher stopped the stream (a code block to run, a spent budget).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// OpenAI tool calls (`finish_reason: "tool_calls"`), assembled from their fragments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RequestedCall>,
    /// Tool calls beyond [`super::MAX_CALLS_PER_REPLY`], dropped.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_calls: usize,
    /// Sums over the token log-probabilities that came with the reply (none: all zero).
    #[serde(skip)]
    pub logprobs: TokenStats,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Completion {
    /// Reasoning and answer as one text, the thinking inside `<think>` as the model wrote it.
    pub fn full_text(&self) -> String {
        match &self.reasoning {
            Some(r) if !r.is_empty() => format!("<think>{r}</think>{}", self.content),
            _ => self.content.clone(),
        }
    }

    /// Bytes of answer and thinking received so far.
    pub(super) fn text_bytes(&self) -> usize {
        self.content.len() + self.reasoning.as_deref().map_or(0, str::len)
    }

    /// Neither text nor tool calls: a reply worth another try.
    pub(super) fn is_empty(&self) -> bool {
        self.tool_calls.is_empty()
            && self.content.trim().is_empty()
            && self.reasoning.as_deref().unwrap_or("").trim().is_empty()
    }
}

/// One request's inputs.
#[derive(Clone, Copy)]
pub(super) struct Ask<'a> {
    pub messages: &'a [Message],
    /// An OpenAI `tools` array to offer.
    pub tools: Option<&'a Value>,
    pub sampling: &'a Sampling,
    /// Send `sampling.top_logprobs` (false once the server refused log-probs).
    pub logprobs: bool,
}

impl Ask<'_> {
    /// The streamed chat-completions request body for `model`.
    pub fn body(&self, model: &str) -> Value {
        let mut body = serde_json::json!({
            "model": model,
            "messages": self.messages,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_tokens,
            "n": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        // A trailing assistant message is a prefill to continue (tool output, a forced
        // conclusion). llama.cpp continues one by default; vLLM needs both flags, which
        // llama.cpp accepts too (and then does not repeat the prefill in the stream).
        if self
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Assistant)
        {
            body["continue_final_message"] = true.into();
            body["add_generation_prompt"] = false.into();
        }
        if let Some(k) = self.sampling.top_logprobs.filter(|_| self.logprobs) {
            body["logprobs"] = true.into();
            body["top_logprobs"] = k.into();
        }
        if let Some(seed) = self.sampling.seed {
            body["seed"] = seed.into();
        }
        if let Some(tools) = self.tools {
            body["tools"] = tools.clone();
            body["tool_choice"] = "auto".into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_finish_reasons_keep_their_wire_spelling() {
        let m = Message::tool_result("c1", "42");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["role"], "tool");
        assert_eq!(serde_json::from_value::<Message>(v).unwrap(), m);
        for s in ["stop", "length", "tool_calls", "think budget", "abort"] {
            let f = FinishReason::from(s.to_string());
            assert_eq!(serde_json::to_value(&f).unwrap(), s);
        }
        assert_eq!(
            FinishReason::from("abort".to_string()),
            FinishReason::Other("abort".into())
        );
    }
}
