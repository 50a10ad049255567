//! One sample's generation when it may run code (`--tools python`) or has a thinking budget
//! (`--think-budget N`): a loop of streamed rounds over one growing assistant message.
//!
//! ```text
//! stream ─► a complete ```python block appears ─► cancel the stream ─► run it in the sample's
//!   sandbox ─► append "```output ... ```" ─► resend with the assistant message so far as a
//!   prefill ─► the model continues ... (at most --max-tool-calls times)
//! stream ─► the reply ends in OpenAI tool calls (--tool-protocol auto|openai) ─► run each in
//!   the same sandbox ─► append the assistant message with its tool_calls and one `tool`
//!   message per call ─► request a new turn (no prefill) ... (the same --max-tool-calls)
//! stream ─► a search call (`search_similar_problems` as a tool call, or a ```search block)
//!   ─► embed the query, search the index ─► the neighbours come back as the call's output,
//!   the same way as a code execution's (see retrieve_tool.rs)
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
//! prefill at the start of its reply; [`strip_echo`](super::transcript::strip_echo) removes it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::client::{
    Attempted, Client, Completion, FinishReason, Message, RequestedCall, Role, Sampling,
};
use super::confidence::TokenStats;
use super::retrieve_tool::{self, SearchTool, SEARCH_TOOL};
use super::sandbox::{Sandbox, SandboxConfig};
use super::tool_protocol::{self, ToolOffer, ToolProtocol, TOOL_NAME};
use super::trace::ToolCall;
use super::transcript::{
    find_block, find_fenced, open_think, round_text, strip_echo, Watcher, SEARCH_FENCES,
};

/// Appended to the thinking to ask for the conclusion when the budget is spent.
pub const CONCLUDE: &str = "\n</think>\n\nThe final answer is \\boxed{";
/// max_tokens of the conclusion request: the rest of one integer and its brace.
pub const CONCLUDE_TOKENS: usize = 48;
/// Chat-template tokens around one added message (role tags, a tool call's JSON wrapper).
const MESSAGE_TOKENS: usize = 16;

#[derive(Debug, Clone)]
pub struct ToolPlan {
    /// Some with `--tools python`.
    pub sandbox: Option<SandboxConfig>,
    pub max_tool_calls: usize,
    /// Streamed tokens allowed before the thinking must close.
    pub think_budget: Option<usize>,
    /// `--tool-protocol` and whether the server still takes `tools`.
    pub offer: Arc<ToolOffer>,
    /// Some when the arm offers `search_similar_problems` (`--tools retrieve`).
    pub search: Option<Arc<SearchTool>>,
}

impl ToolPlan {
    /// Whether a sample has any tool (and so runs in rounds).
    pub fn any_tool(&self) -> bool {
        self.sandbox.is_some() || self.search.is_some()
    }
}

/// A whole sample: every round's text joined into one assistant transcript.
#[derive(Debug, Default)]
pub struct Generated {
    /// The assistant turns as the model wrote them (thinking in `<think>`), with each code
    /// execution's code and output.
    pub text: String,
    pub finish_reason: Option<FinishReason>,
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
    /// Token log-probabilities of every round.
    pub logprobs: TokenStats,
}

enum Next {
    /// A fenced block to run, continuing the same turn.
    Run(String),
    /// A fenced search to answer, continuing the same turn.
    Search(String),
    /// Tool calls to answer, then a new turn.
    Calls(Vec<RequestedCall>),
    /// The server refused `tools`: ask again without them.
    Again,
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
    /// After the prompt: assistant turns that ended in tool calls, and the tool results.
    history: Vec<Message>,
    /// The assistant turn so far (a prefill when the turn is continued after a fenced block).
    turn: String,
    /// Executions and tool calls counted against --max-tool-calls.
    used: usize,
    /// A tool call was answered "limit reached".
    told_limit: bool,
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
        history: Vec::new(),
        turn: String::new(),
        used: 0,
        told_limit: false,
    };
    loop {
        match run.round() {
            Next::Run(code) => run.run_block(code),
            Next::Search(query) => run.run_search(query),
            Next::Calls(calls) => {
                if !run.answer_calls(calls) {
                    break;
                }
            }
            Next::Again => {}
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
    fn python_left(&self) -> bool {
        self.plan.sandbox.is_some() && self.used < self.plan.max_tool_calls
    }

    fn search_left(&self) -> bool {
        self.plan.search.is_some() && self.used < self.plan.max_tool_calls
    }

    /// The `tools` array to offer this round: the sample's tools, while the server takes them.
    fn offered(&self) -> Option<&'static serde_json::Value> {
        let p = &self.plan;
        p.offer.tools_with(p.sandbox.is_some(), p.search.is_some())
    }

    fn request(&self, prefill: &str) -> Vec<Message> {
        let mut m = self.messages.to_vec();
        m.extend(self.history.iter().cloned());
        if !prefill.is_empty() {
            m.push(Message::new(Role::Assistant, prefill));
        }
        m
    }

    /// Text for both the current turn and the transcript.
    fn push_text(&mut self, text: &str) {
        self.turn.push_str(text);
        self.out.text.push_str(text);
    }

    /// One streamed request continuing the transcript; what to do next.
    fn round(&mut self) -> Next {
        let left = self.sampling.max_tokens.saturating_sub(self.tokens);
        if left == 0 {
            self.out.finish_reason = Some(FinishReason::Length);
            return Next::Done;
        }
        let sampling = Sampling {
            max_tokens: left,
            ..self.sampling.clone()
        };
        let prefill = self.turn.clone();
        let fenced = self.plan.offer.fenced();
        let mut watcher = Watcher::new(&prefill, fenced && self.python_left(), self.budget_left())
            .with_search(fenced && self.search_left());
        let a = self.client.complete_watched(
            &self.request(&prefill),
            self.offered(),
            &sampling,
            self.deadline,
            self.cancel,
            &mut |c, events| watcher.stop(c, events),
        );
        if let Some(reason) = &a.tools_refused {
            return self.refused(reason, &a);
        }
        // Only the first request's overflow means "fewer examples": a continuation that no
        // longer fits ends this sample with what it has.
        let first = prefill.is_empty() && self.history.is_empty();
        self.note(
            &a.errors,
            a.attempts,
            a.cancelled,
            a.context_overflow && first,
        );
        let Some(c) = a.completion else {
            return Next::Done;
        };
        self.after_round(c, &prefill, &watcher)
    }

    /// What a completed round leads to: conclude, run a block, answer tool calls, or stop.
    fn after_round(&mut self, c: Completion, prefill: &str, watcher: &Watcher) -> Next {
        self.out.nothing = false;
        self.out.rounds += 1;
        self.out.logprobs.merge(&c.logprobs);
        self.out.prompt_tokens = c.prompt_tokens.or(self.out.prompt_tokens);
        let new = strip_echo(prefill, &round_text(&c, open_think(prefill))).to_string();
        let used = match (c.interrupted, c.completion_tokens) {
            (false, Some(t)) => t as usize,
            _ => watcher.events.max(1),
        };
        self.tokens += used;
        self.out.completion_tokens = Some(self.out.completion_tokens.unwrap_or(0) + used as u64);
        if watcher.over_budget {
            self.push_text(&new);
            return Next::Conclude;
        }
        if c.dropped_calls > 0 {
            self.out.errors.push(format!(
                "{} tool calls beyond {} in one reply were dropped",
                c.dropped_calls,
                super::client::MAX_CALLS_PER_REPLY
            ));
        }
        if !c.interrupted && !c.tool_calls.is_empty() && self.plan.any_tool() {
            self.push_text(&new);
            self.out.finish_reason = c.finish_reason.clone();
            return Next::Calls(c.tool_calls);
        }
        if self.plan.offer.fenced() {
            if let Some((next, end)) = self.fenced_call(&new) {
                self.push_text(&new[..end]);
                return next;
            }
        }
        self.push_text(&new);
        self.out.finish_reason = c.finish_reason.clone();
        Next::Done
    }

    /// The server refused `tools`: share that with the run; `auto` asks again without them,
    /// `openai` ends the sample with the error (the run then stops).
    fn refused(&mut self, reason: &str, a: &Attempted) -> Next {
        self.plan.offer.refuse(reason.to_string());
        self.note(&a.errors, a.attempts, a.cancelled, false);
        if self.plan.offer.protocol == ToolProtocol::Openai {
            self.out
                .errors
                .push(format!("the server refused `tools`: {reason}"));
            return Next::Done;
        }
        Next::Again
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

    /// The first complete fenced call in the new text: a python block or a search, whichever
    /// closes first, with the offset after its fence.
    fn fenced_call(&self, new: &str) -> Option<(Next, usize)> {
        let code = find_block(new).filter(|_| self.python_left());
        let search = find_fenced(new, &SEARCH_FENCES).filter(|_| self.search_left());
        match (code, search) {
            (Some((c, ce)), Some((_, se))) if ce <= se => Some((Next::Run(c), ce)),
            (_, Some((q, se))) => Some((Next::Search(q.trim().to_string()), se)),
            (Some((c, ce)), None) => Some((Next::Run(c), ce)),
            (None, None) => None,
        }
    }

    /// Answer a fenced search and append the neighbours to the turn.
    fn run_search(&mut self, query: String) {
        self.used += 1;
        let call = match query.is_empty() {
            true => ToolCall {
                name: Some(SEARCH_TOOL.into()),
                output: "error: the search block is empty; put the query inside it".into(),
                error: true,
                rejected: true,
                ..Default::default()
            },
            false => self.search(&query, None),
        };
        let block = format!("\n```output\n{}\n```\n", call.output);
        self.tokens += block.len() / 3;
        self.push_text(&block);
        self.out.tool_calls.push(call);
    }

    /// Run a search (the plan has a search tool whenever a search is answered).
    fn search(&self, query: &str, k: Option<usize>) -> ToolCall {
        let mut call = match &self.plan.search {
            Some(s) => s.search(query, k),
            None => ToolCall {
                output: "error: no search tool".into(),
                error: true,
                rejected: true,
                ..Default::default()
            },
        };
        call.protocol = "fenced".into();
        call
    }

    /// Run a fenced block and append its output to the turn, which the model then continues.
    fn run_block(&mut self, code: String) {
        self.used += 1;
        let call = self.execute(code);
        let block = format!("\n```output\n{}\n```\n", call.output);
        // The output becomes prompt text the next round: count it against max_tokens too.
        self.tokens += block.len() / 3;
        self.push_text(&block);
        self.out.tool_calls.push(call);
    }

    /// Answer every tool call of a turn in order (each counts against --max-tool-calls), as
    /// the assistant message with its calls and one `tool` message per call; false when the
    /// sample ends instead (the model called again after being told the limit was reached).
    fn answer_calls(&mut self, calls: Vec<RequestedCall>) -> bool {
        if self.told_limit {
            self.out.errors.push(format!(
                "the model kept calling tools after --max-tool-calls {} was reached; the sample \
                 ends with its last turn",
                self.plan.max_tool_calls
            ));
            return false;
        }
        let turn = std::mem::take(&mut self.turn);
        self.history.push(Message::with_calls(turn, calls.clone()));
        self.tokens += MESSAGE_TOKENS;
        for call in calls {
            let record = self.answer_call(&call);
            let fence = match record.query.is_some() {
                true => "search",
                false => "python",
            };
            let shown = format!(
                "\n```{fence}\n{}\n```\n```output\n{}\n```\n",
                record.code, record.output
            );
            self.out.text.push_str(&shown);
            self.tokens += record.output.len() / 3 + MESSAGE_TOKENS;
            self.history
                .push(Message::tool_result(&call.id, record.output.clone()));
            self.out.tool_calls.push(record);
        }
        true
    }

    /// Run one tool call, or say why not (limit reached, malformed): the record to keep.
    fn answer_call(&mut self, call: &RequestedCall) -> ToolCall {
        let name = call.function.name.as_str();
        if name == SEARCH_TOOL && self.search_left() {
            self.used += 1;
            let mut record = match retrieve_tool::args_of(call) {
                Ok((query, k)) => self.search(&query, k),
                Err(why) => rejected(call, why),
            };
            record.protocol = "openai".into();
            record.id = Some(call.id.clone());
            record.name = Some(name.to_string());
            return record;
        }
        let known = (name == TOOL_NAME && self.plan.sandbox.is_some())
            || (name == SEARCH_TOOL && self.plan.search.is_some());
        let code = if !known && self.plan.search.is_some() {
            Err(self.unknown_tool(name))
        } else if self.python_left() {
            self.used += 1;
            tool_protocol::code_of(call)
        } else {
            self.told_limit = true;
            Err(format!(
                "the limit of {} tool calls for this problem was reached (--max-tool-calls); \
                 the code was not run. Give your final answer now.",
                self.plan.max_tool_calls
            ))
        };
        let mut record = match code {
            Ok(code) => self.execute(code),
            Err(why) => rejected(call, why),
        };
        record.protocol = "openai".into();
        record.id = Some(call.id.clone());
        record.name = Some(call.function.name.clone());
        record
    }

    /// What the model is told when it calls a function it was not offered.
    fn unknown_tool(&self, name: &str) -> String {
        let mut offered = Vec::new();
        if self.plan.sandbox.is_some() {
            offered.push("\"python\" (code)");
        }
        offered.push("\"search_similar_problems\" (query, k)");
        let name: String = name.chars().take(100).collect();
        format!(
            "unknown tool {name:?}: the tools are {}",
            offered.join(" and ")
        )
    }

    /// Run code in the sample's sandbox (started on first use): the record, output cut and
    /// never empty.
    fn execute(&mut self, code: String) -> ToolCall {
        let mut call = ToolCall {
            protocol: "fenced".into(),
            ..Default::default()
        };
        let cancel = self.cancel;
        let r = match self.sandbox() {
            Ok(sb) => {
                call.pgid = sb.pgid;
                sb.run(&code, cancel)
            }
            Err(e) => super::sandbox::Executed {
                text: format!("the Python sandbox could not start: {e}"),
                error: true,
                ..Default::default()
            },
        };
        call.output = match r.text.trim().is_empty() {
            true => "(no output: print() what you need)".to_string(),
            false => r.text,
        };
        call.code = code;
        call.error = r.error;
        call.timed_out = r.timed_out;
        call.restarted = r.restarted;
        call.seconds = r.seconds;
        call
    }

    /// The sample's sandbox, started on first use (a failure is recorded in the errors).
    fn sandbox(&mut self) -> Result<&mut Sandbox, String> {
        if self.sandbox.is_none() {
            let cfg = self.plan.sandbox.as_ref().ok_or("no --tools python")?;
            match Sandbox::start(cfg) {
                Ok(s) => self.sandbox = Some(s),
                Err(e) => {
                    self.out.errors.push(format!("sandbox: {e:#}"));
                    return Err(e.to_string());
                }
            }
        }
        self.sandbox.as_mut().ok_or_else(|| "no sandbox".into())
    }

    /// The budget is spent while thinking: close the thinking and ask for the boxed answer.
    fn conclude(&mut self) {
        self.out.concluded = true;
        self.out.finish_reason = Some(FinishReason::ThinkBudget);
        let prefill = format!("{}{CONCLUDE}", self.turn.trim_end());
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
        let kept = self.out.text.trim_end().len();
        self.out.text.truncate(kept);
        self.out.text.push_str(CONCLUDE);
        if let Some(c) = a.completion {
            self.out.rounds += 1;
            self.out.logprobs.merge(&c.logprobs);
            self.out
                .text
                .push_str(strip_echo(&prefill, &round_text(&c, false)));
        }
    }
}

/// The record of a call that was not run, with why (also what the model is told).
fn rejected(call: &RequestedCall, why: String) -> ToolCall {
    ToolCall {
        code: tool_protocol::traced_code(call),
        output: format!("error: {why}"),
        error: true,
        rejected: true,
        ..Default::default()
    }
}
