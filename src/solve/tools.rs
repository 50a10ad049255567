//! One sample's generation when it may run code (`--tools python`) or has a thinking budget
//! (`--think-budget N`): a loop of streamed rounds over one growing assistant message.
//!
//! ```text
//! stream ─► a complete ```python block appears ─► cancel the stream ─► run it in the sample's
//!   sandbox ─► append "```output ... ```" ─► resend with the assistant message so far as a
//!   prefill ─► the model continues ... (at most --max-tool-calls times)
//! stream ─► N tokens and still thinking ─► cancel ─► resend with the thinking so far +
//!   "</think>\n\nThe final answer is \boxed{" as a prefill and a few tokens to finish it
//! ```
//!
//! Why a prefill (the transcript as a trailing assistant message) rather than the output as a
//! new user turn: the chain of thought continues exactly where it stopped, inside the same
//! thinking block; a new turn would start a fresh one, and many chat templates drop earlier
//! turns' thinking. llama.cpp continues a trailing assistant message by itself; vLLM does with
//! `continue_final_message: true, add_generation_prompt: false`, which the client sends whenever
//! the last message is an assistant's (llama.cpp accepts them too). llama.cpp may repeat the
//! prefill at the start of its reply; [`strip_echo`] removes it.

use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::client::{Client, Completion, Message, Sampling};
use super::sandbox::{Sandbox, SandboxConfig};

/// What opens a code block to run (at the start of a line).
const OPEN_FENCES: [&str; 3] = ["```python\n", "```py\n", "```python3\n"];
/// Appended to the thinking to ask for the conclusion when the budget is spent.
pub const CONCLUDE: &str = "\n</think>\n\nThe final answer is \\boxed{";
/// max_tokens of the conclusion request: the rest of one integer and its brace.
pub const CONCLUDE_TOKENS: usize = 48;

#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    /// Some with `--tools python`.
    pub sandbox: Option<SandboxConfig>,
    pub max_tool_calls: usize,
    /// Streamed tokens allowed before the thinking must close.
    pub think_budget: Option<usize>,
}

/// One executed code block, as recorded in the trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub code: String,
    /// What the model was shown (already cut to --tool-output-chars).
    pub output: String,
    pub error: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
    pub seconds: f64,
    /// Process group of the interpreter that ran it (0 when none started).
    pub pgid: i32,
}

/// A whole sample: every round's text joined into one assistant transcript.
#[derive(Debug, Default)]
pub struct Generated {
    /// The assistant message as the model wrote it (thinking in `<think>`), tool outputs in.
    pub text: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub attempts: usize,
    pub errors: Vec<String>,
    pub cancelled: bool,
    pub context_overflow: bool,
    pub tool_calls: Vec<ToolCall>,
    /// The thinking budget ran out and the answer was asked for.
    pub concluded: bool,
    pub rounds: usize,
    /// Every round failed before any text arrived.
    pub nothing: bool,
}

enum Next {
    Run(String),
    Conclude,
    Done,
}

struct Run<'a> {
    client: &'a Client,
    messages: &'a [Message],
    sampling: &'a Sampling,
    plan: &'a ToolPlan,
    deadline: Instant,
    cancel: &'a AtomicBool,
    out: Generated,
    sandbox: Option<Sandbox>,
    /// Tokens generated so far (all rounds), plus an estimate for the tool outputs.
    tokens: usize,
}

pub fn generate(
    client: &Client,
    messages: &[Message],
    sampling: &Sampling,
    plan: &ToolPlan,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Generated {
    let mut run = Run {
        client,
        messages,
        sampling,
        plan,
        deadline,
        cancel,
        out: Generated {
            nothing: true,
            ..Default::default()
        },
        sandbox: None,
        tokens: 0,
    };
    loop {
        match run.round() {
            Next::Run(code) => run.execute(code),
            Next::Conclude => {
                run.conclude();
                break;
            }
            Next::Done => break,
        }
    }
    // Dropping the sandbox kills its process group now, not when the thread ends.
    drop(run.sandbox.take());
    run.out
}

impl Run<'_> {
    fn tools_left(&self) -> bool {
        self.plan.sandbox.is_some() && self.out.tool_calls.len() < self.plan.max_tool_calls
    }

    fn request(&self, prefill: &str) -> Vec<Message> {
        let mut m = self.messages.to_vec();
        if !prefill.is_empty() {
            m.push(Message::new("assistant", prefill));
        }
        m
    }

    /// One streamed request continuing the transcript; what to do next.
    fn round(&mut self) -> Next {
        let left = self.sampling.max_tokens.saturating_sub(self.tokens);
        if left == 0 {
            self.out.finish_reason = Some("length".into());
            return Next::Done;
        }
        let sampling = Sampling {
            max_tokens: left,
            ..self.sampling.clone()
        };
        let prefill = self.out.text.clone();
        let mut watcher = Watcher::new(&prefill, self.tools_left(), self.budget_left());
        let a = self.client.complete_watched(
            &self.request(&prefill),
            &sampling,
            self.deadline,
            self.cancel,
            &mut |c, events| watcher.stop(c, events),
        );
        // Only the first request's overflow means "fewer examples": a continuation that no
        // longer fits ends this sample with what it has.
        let overflow = a.context_overflow && prefill.is_empty();
        self.note(&a.errors, a.attempts, a.cancelled, overflow);
        let Some(c) = a.completion else {
            return Next::Done;
        };
        self.out.nothing = false;
        self.out.rounds += 1;
        self.out.prompt_tokens = c.prompt_tokens.or(self.out.prompt_tokens);
        let new = strip_echo(&prefill, &round_text(&c, open_think(&prefill))).to_string();
        let used = match (c.interrupted, c.completion_tokens) {
            (false, Some(t)) => t as usize,
            _ => watcher.events.max(1),
        };
        self.tokens += used;
        self.out.completion_tokens = Some(self.out.completion_tokens.unwrap_or(0) + used as u64);
        if watcher.over_budget {
            self.out.text.push_str(&new);
            return Next::Conclude;
        }
        if self.tools_left() {
            if let Some((code, end)) = find_block(&new) {
                self.out.text.push_str(&new[..end]);
                return Next::Run(code);
            }
        }
        self.out.text.push_str(&new);
        self.out.finish_reason = c.finish_reason.clone();
        Next::Done
    }

    /// Tokens the thinking may still use, when there is a budget.
    fn budget_left(&self) -> Option<usize> {
        self.plan
            .think_budget
            .map(|b| b.saturating_sub(self.tokens).max(1))
    }

    fn note(&mut self, errors: &[String], attempts: usize, cancelled: bool, overflow: bool) {
        self.out.errors.extend(errors.iter().cloned());
        self.out.attempts += attempts;
        self.out.cancelled |= cancelled;
        self.out.context_overflow |= overflow;
    }

    /// Run a code block in the sample's sandbox (started on first use) and append its output.
    fn execute(&mut self, code: String) {
        let Some(cfg) = &self.plan.sandbox else {
            return;
        };
        if self.sandbox.is_none() {
            match Sandbox::start(cfg) {
                Ok(s) => self.sandbox = Some(s),
                Err(e) => {
                    self.out.errors.push(format!("sandbox: {e:#}"));
                    self.append_output(
                        code,
                        format!("the Python sandbox could not start: {e}"),
                        true,
                        None,
                    );
                    return;
                }
            }
        }
        let Some(sb) = self.sandbox.as_mut() else {
            return;
        };
        let pgid = sb.pgid;
        let r = sb.run(&code, self.cancel);
        let mut call = ToolCall {
            pgid,
            timed_out: r.timed_out,
            restarted: r.restarted,
            seconds: r.seconds,
            ..Default::default()
        };
        call.error = r.error;
        self.append_output(code, r.text, r.error, Some(call));
    }

    fn append_output(&mut self, code: String, text: String, error: bool, call: Option<ToolCall>) {
        let shown = match text.trim().is_empty() {
            true => "(no output: print() what you need)".to_string(),
            false => text,
        };
        let block = format!("\n```output\n{shown}\n```\n");
        // The output becomes prompt text the next round: count it against max_tokens too.
        self.tokens += block.len() / 3;
        self.out.text.push_str(&block);
        let mut call = call.unwrap_or_default();
        call.code = code;
        call.output = shown;
        call.error = error;
        self.out.tool_calls.push(call);
    }

    /// The budget is spent while thinking: close the thinking and ask for the boxed answer.
    fn conclude(&mut self) {
        self.out.concluded = true;
        self.out.finish_reason = Some("think budget".into());
        let prefill = format!("{}{CONCLUDE}", self.out.text.trim_end());
        let sampling = Sampling {
            max_tokens: CONCLUDE_TOKENS,
            ..self.sampling.clone()
        };
        let a = self.client.complete(
            &self.request(&prefill),
            &sampling,
            self.deadline,
            self.cancel,
        );
        self.note(&a.errors, a.attempts, a.cancelled, false);
        self.out.text = prefill.clone();
        if let Some(c) = a.completion {
            self.out.rounds += 1;
            self.out
                .text
                .push_str(strip_echo(&prefill, &round_text(&c, false)));
        }
    }
}

/// Decides, delta by delta, whether the stream should stop: a complete code block to run, or
/// the thinking budget spent with the thinking still open.
struct Watcher<'p> {
    prefill: &'p str,
    tools: bool,
    budget: Option<usize>,
    events: usize,
    over_budget: bool,
    closed: bool,
    /// Bytes of content and reasoning already looked at.
    seen: (usize, usize),
}

impl<'p> Watcher<'p> {
    fn new(prefill: &'p str, tools: bool, budget: Option<usize>) -> Self {
        Self {
            prefill,
            tools,
            budget,
            events: 0,
            over_budget: false,
            closed: thinking_closed(prefill),
            seen: (0, 0),
        }
    }

    fn stop(&mut self, c: &Completion, events: usize) -> bool {
        self.events = events;
        // Only a delta holding a backtick can complete a fence: skip the scan otherwise, so a
        // long stream costs linear time. Both texts only grow, so the old lengths are char
        // boundaries.
        let reasoning = c.reasoning.as_deref().unwrap_or("");
        let fresh = |text: &str, seen: usize| text.get(seen..).is_some_and(|t| t.contains('`'));
        let fence = self.tools && (fresh(&c.content, self.seen.0) || fresh(reasoning, self.seen.1));
        self.seen = (c.content.len(), reasoning.len());
        let spent = !self.closed && self.budget.is_some_and(|b| events >= b);
        if !fence && !spent {
            return false;
        }
        let raw = round_text(c, open_think(self.prefill));
        let new = strip_echo(self.prefill, &raw);
        if spent {
            if thinking_closed(&format!("{}{new}", self.prefill)) {
                self.closed = true;
            } else {
                self.over_budget = true;
                return true;
            }
        }
        fence && find_block(new).is_some()
    }
}

/// A round's text as the model wrote it: servers with a reasoning parser send the thinking
/// separately (without its tags); put it back inside `<think>` unless the transcript already
/// has the thinking open.
pub fn round_text(c: &Completion, in_think: bool) -> String {
    let r = c.reasoning.as_deref().unwrap_or("");
    if r.is_empty() {
        return c.content.clone();
    }
    let open = if in_think { "" } else { "<think>" };
    match c.content.is_empty() {
        true => format!("{open}{r}"),
        false => format!("{open}{r}</think>{}", c.content),
    }
}

/// The reply without a repeated prefill: llama.cpp repeats it (non-streamed, or streamed
/// without `continue_final_message`), possibly without the leading `<think>` when its reasoning
/// parser took the tag; vLLM sends only the new text.
pub fn strip_echo<'a>(prefill: &str, reply: &'a str) -> &'a str {
    if prefill.is_empty() {
        return reply;
    }
    let bare = prefill.strip_prefix("<think>").unwrap_or(prefill);
    for p in [prefill, bare, bare.trim_start()] {
        if !p.is_empty() {
            if let Some(rest) = reply.strip_prefix(p) {
                return rest;
            }
        }
    }
    reply
}

/// Whether the text has a `<think>` that is not closed yet.
pub fn open_think(text: &str) -> bool {
    match (text.rfind("<think>"), text.rfind("</think>")) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether the thinking is over: a `</think>` after the last `<think>` (templates that open
/// the thinking in the prompt only ever show the closing tag).
pub fn thinking_closed(text: &str) -> bool {
    match (text.rfind("<think>"), text.rfind("</think>")) {
        (Some(o), Some(c)) => c > o,
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The first complete fenced python block: its code and the byte offset just after its
/// closing fence.
pub fn find_block(text: &str) -> Option<(String, usize)> {
    let mut from = 0;
    while from < text.len() {
        let (start, fence) = OPEN_FENCES
            .iter()
            .filter_map(|f| text[from..].find(f).map(|i| (from + i, *f)))
            .min_by_key(|(i, _)| *i)?;
        let at_line_start = start == 0 || text[..start].ends_with('\n');
        let body = start + fence.len();
        if !at_line_start {
            from = body;
            continue;
        }
        // The first line starting with ``` closes it (markdown has no nesting).
        let close = if text[body..].starts_with("```") {
            Some(body)
        } else {
            text[body..].find("\n```").map(|i| body + i + 1)
        }?;
        return Some((text[body..close].trim_end().to_string(), close + 3));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_complete_block_at_a_line_start() {
        let t = "so:\n```python\nx = 41\nprint(x)\n```\nmore ```python\nno\n```";
        let (code, end) = find_block(t).unwrap();
        assert_eq!(code, "x = 41\nprint(x)");
        assert_eq!(&t[..end], "so:\n```python\nx = 41\nprint(x)\n```");
        assert!(find_block("```python\nx = 1\n").is_none(), "not closed yet");
        assert!(
            find_block("text ```python\nx\n```").is_none(),
            "not at a line start"
        );
        assert_eq!(find_block("```py\n```").unwrap().0, "");
    }

    #[test]
    fn echoes_are_stripped_and_thinking_tracked() {
        let pre = "<think>\nplan\n```python\n1\n```\n```output\n1\n```\n";
        assert_eq!(strip_echo(pre, &format!("{pre}next")), "next");
        assert_eq!(strip_echo(pre, &format!("{}next", &pre[7..])), "next");
        assert_eq!(strip_echo(pre, "next"), "next");
        assert!(open_think(pre) && !thinking_closed(pre));
        assert!(thinking_closed("a</think>b") && !open_think("a</think>b"));
        let c = Completion {
            reasoning: Some("r".into()),
            content: "c".into(),
            ..Default::default()
        };
        assert_eq!(round_text(&c, false), "<think>r</think>c");
        assert_eq!(round_text(&c, true), "r</think>c");
    }
}
