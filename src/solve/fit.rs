//! Fitting the prompt into the server's context: know the context length, count the prompt's
//! tokens, and leave out retrieved examples (farthest first), then shorten the longest
//! solution, until prompt + max_tokens fit. What was left out goes into the trace.

use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{Client, Message, Role};
use super::preflight::bounded;
use super::prompt::{Example, PromptBuilder, RagFormat};
use super::trace::PromptFit;

/// Tokens kept free beyond prompt + max_tokens: chat-template tokens a count may miss.
const MARGIN: usize = 32;
/// A solution is never shortened below this many characters (then it is dropped instead).
const MIN_SOLUTION_CHARS: usize = 400;

/// How prompt tokens are counted, best first.
pub enum Counter {
    /// The solver's own tokenizer.json (`--solver-tokenizer DIR`).
    Tokenizer(Box<tokenizers::Tokenizer>),
    /// vLLM's `/tokenize` with chat messages (it applies the chat template).
    VllmServer,
    /// llama.cpp's `/apply-template` then `/tokenize`.
    LlamaCppServer,
    /// About two bytes a token: LaTeX-heavy math tokenises densely, so this over-counts.
    Estimate,
}

pub struct PromptBudget {
    pub context: Option<usize>,
    pub counter: Counter,
    client: Client,
    /// The time budget's end: no probe or count waits past it.
    end: Option<Instant>,
}

impl PromptBudget {
    /// Learn the context length (`max_model_len`, else vLLM's /v1/models, else llama.cpp's
    /// /props) and the best way to count tokens, asking the server no later than `end`.
    pub fn discover(
        client: &Client,
        max_model_len: Option<usize>,
        tokenizer: Option<&Path>,
        end: Option<Instant>,
    ) -> Result<Self> {
        let context = max_model_len.or_else(|| server_context(client, end));
        let counter = match tokenizer {
            // Without a context length there is nothing to fit: an estimate is enough.
            _ if context.is_none() => Counter::Estimate,
            Some(dir) => {
                let path = if dir.is_dir() {
                    dir.join("tokenizer.json")
                } else {
                    dir.into()
                };
                let t = tokenizers::Tokenizer::from_file(&path)
                    .map_err(|e| anyhow::anyhow!("--solver-tokenizer {}: {e}", path.display()))?;
                Counter::Tokenizer(Box::new(t))
            }
            None => probe_counter(client, end),
        };
        Ok(Self {
            context,
            counter,
            client: client.clone(),
            end,
        })
    }

    pub fn counted_by(&self) -> &'static str {
        match self.counter {
            Counter::Tokenizer(_) => "tokenizer",
            Counter::VllmServer | Counter::LlamaCppServer => "server",
            Counter::Estimate => "estimate",
        }
    }

    /// Prompt tokens of `messages`.
    pub fn count(&self, messages: &[Message]) -> Result<usize> {
        let per_message = 8;
        match &self.counter {
            Counter::Tokenizer(t) => {
                let mut n = 0;
                for m in messages {
                    // Tool calls' names and arguments are prompt text too.
                    let calls = m
                        .tool_calls
                        .iter()
                        .map(|c| format!("{} {}", c.function.name, c.function.arguments));
                    let text: String = std::iter::once(m.content.clone()).chain(calls).collect();
                    let enc = t
                        .encode(text.as_str(), false)
                        .map_err(|e| anyhow::anyhow!("counting tokens: {e}"))?;
                    n += enc.len() + per_message;
                }
                Ok(n)
            }
            Counter::VllmServer => vllm_count(&self.client, messages, self.end),
            Counter::LlamaCppServer => llama_cpp_count(&self.client, messages, self.end),
            Counter::Estimate => Ok(estimate(messages)),
        }
    }

    /// The messages for `problem` with as many of `examples` (nearest first) as fit.
    pub fn fit(
        &self,
        builder: &PromptBuilder,
        problem: &str,
        mut examples: Vec<Example>,
        max_tokens: usize,
    ) -> Result<(Vec<Message>, Vec<Example>, PromptFit)> {
        let mut fit = PromptFit {
            context: self.context,
            counted_by: self.counted_by().into(),
            ..Default::default()
        };
        loop {
            let messages = builder.messages(problem, &examples);
            // A count the server no longer gives in time is estimated (and the trace says so).
            fit.prompt_tokens = self.count(&messages).unwrap_or_else(|_| {
                fit.counted_by = "estimate".into();
                estimate(&messages)
            });
            let Some(ctx) = self.context else {
                return Ok((messages, examples, fit));
            };
            let room = ctx.saturating_sub(MARGIN);
            if fit.prompt_tokens + max_tokens <= room {
                return Ok((messages, examples, fit));
            }
            let excess = fit.prompt_tokens + max_tokens - room;
            if !self.make_room(&mut examples, &mut fit, excess, builder.format) {
                // Nothing left to take out: lower max_tokens for this problem, and say so.
                fit.max_tokens = Some(room.saturating_sub(fit.prompt_tokens).max(1));
                return Ok((messages, examples, fit));
            }
        }
    }

    /// Take `excess` tokens out: drop the farthest example while more than one remains, then
    /// shorten the last one's solution, then drop it. False when there is nothing to take.
    fn make_room(
        &self,
        examples: &mut Vec<Example>,
        fit: &mut PromptFit,
        excess: usize,
        format: RagFormat,
    ) -> bool {
        // Forms without the solution have nothing to shorten: the example is dropped.
        let sends_solution = matches!(format, RagFormat::Chat | RagFormat::Context);
        if examples.len() > 1 || (!sends_solution && !examples.is_empty()) {
            fit.dropped
                .push(examples.pop().map(|e| e.id).unwrap_or_default());
            return true;
        }
        let Some(e) = examples.last_mut() else {
            return false;
        };
        let chars = e.solution.chars().count();
        // Two bytes a token is the estimate's rate; a real tokenizer is checked on the next pass.
        let keep = chars.saturating_sub(excess * 2 + 64);
        if keep >= MIN_SOLUTION_CHARS {
            e.solution = format!(
                "{}\n[...]",
                e.solution.chars().take(keep).collect::<String>()
            );
            if !fit.shortened.contains(&e.id) {
                fit.shortened.push(e.id.clone());
            }
        } else {
            fit.dropped
                .push(examples.pop().map(|e| e.id).unwrap_or_default());
        }
        true
    }
}

/// `max_model_len` from vLLM's /v1/models, else `n_ctx` from llama.cpp's /props (per slot:
/// llama.cpp divides its context between parallel slots).
fn server_context(client: &Client, end: Option<Instant>) -> Option<usize> {
    let timeout = || bounded(Duration::from_secs(10), end);
    if let Some(models) = client.get_json("/models", timeout()?) {
        let lens = models.get("data").and_then(|d| d.as_array()).map(|d| {
            d.iter()
                .filter_map(|m| m.get("max_model_len").and_then(|v| v.as_u64()))
                .collect::<Vec<_>>()
        });
        if let Some(&len) = lens.as_deref().and_then(|l| l.iter().min()) {
            return Some(len as usize);
        }
    }
    let props = client.get_json("//props", timeout()?)?;
    let settings = props.get("default_generation_settings");
    let n_ctx = settings
        .and_then(|s| s.get("n_ctx"))
        .or_else(|| props.get("n_ctx"))
        .and_then(|v| v.as_u64())?;
    Some(n_ctx as usize)
}

fn probe_counter(client: &Client, end: Option<Instant>) -> Counter {
    let probe = [Message::new(Role::User, "1 + 1")];
    if vllm_count(client, &probe, end).is_ok() {
        Counter::VllmServer
    } else if llama_cpp_count(client, &probe, end).is_ok() {
        Counter::LlamaCppServer
    } else {
        Counter::Estimate
    }
}

/// About two bytes a token, plus a few per message.
fn estimate(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.text_len() / 2 + 8).sum()
}

/// 30 s for one token-count request, or what is left of the time budget.
fn count_timeout(end: Option<Instant>) -> Result<Duration> {
    bounded(Duration::from_secs(30), end).context("the time budget is spent")
}

fn vllm_count(client: &Client, messages: &[Message], end: Option<Instant>) -> Result<usize> {
    let body = json!({"model": client.model(), "messages": messages});
    let v = client
        .post_root_json("/tokenize", &body, count_timeout(end)?)
        .context("the server's /tokenize did not answer")?;
    v.get("count")
        .and_then(|c| c.as_u64())
        .map(|c| c as usize)
        .context("/tokenize gave no count")
}

fn llama_cpp_count(client: &Client, messages: &[Message], end: Option<Instant>) -> Result<usize> {
    let prompt = client
        .post_root_json(
            "/apply-template",
            &json!({"messages": messages}),
            count_timeout(end)?,
        )
        .and_then(|v| v.get("prompt").and_then(|p| p.as_str()).map(str::to_string))
        .context("the server's /apply-template did not answer")?;
    let v = client
        .post_root_json(
            "/tokenize",
            &json!({"content": prompt}),
            count_timeout(end)?,
        )
        .context("the server's /tokenize did not answer")?;
    v.get("tokens")
        .and_then(|t| t.as_array())
        .map(|t| t.len())
        .context("/tokenize gave no tokens")
}
