//! Sampling one problem: up to N completions with C requests in flight, each answer extracted
//! and voted as it arrives, stopping early once the vote is settled or the deadline passes.
//!
//! Every sample reports exactly once, whatever happens inside it (a panic becomes a failed
//! sample), so the loop never waits on a message that will not come. When sampling stops, the
//! samples still running are cancelled: their connections close and the server frees the slots.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::answer;
use super::client::{Attempted, Client, FinishReason, Message, Sampling};
use super::rounds::{self, ToolPlan};
use super::trace::SampleTrace;
use super::transcript;
use super::vote::{self, Tally, VoteRule};

/// What one problem's sampling asks for.
#[derive(Debug, Clone)]
pub struct SamplePlan {
    pub sampling: Sampling,
    pub samples: usize,
    pub concurrency: usize,
    pub agreement: f64,
    /// `--stop-at N`: stop once N samples agree (0: off).
    pub stop_at: usize,
    pub vote: VoteRule,
    pub answer_range: RangeInclusive<u64>,
    pub deadline: Instant,
    pub tools: ToolPlan,
    /// `--rag ...,share=S`: which samples get the examples, and the prompt of those that don't.
    pub mix: Option<Mix>,
}

/// The examples in only some of a problem's samples (`share=`).
#[derive(Debug, Clone)]
pub struct Mix {
    pub spec: super::prompt::RagSpec,
    /// The prompt without examples.
    pub bare: Arc<Vec<Message>>,
}

impl SamplePlan {
    /// The most one sample can weigh in the vote.
    fn max_weight(&self) -> f64 {
        match self.tools.sandbox {
            Some(_) => vote::CHECKED,
            None => 1.0,
        }
    }
}

pub struct Sampled {
    /// Finished samples, in sample order.
    pub traces: Vec<SampleTrace>,
    pub tally: Tally,
    /// `all samples`, `settled`, `stop-at`, `deadline` or `context overflow`.
    pub stopped: &'static str,
    pub context_overflow: bool,
}

pub fn sample_problem(client: &Client, messages: &[Message], plan: &SamplePlan) -> Sampled {
    let cancel = Arc::new(AtomicBool::new(false));
    let (result_tx, results) = channel::<SampleTrace>();
    let (ticket_tx, tickets) = channel::<usize>();
    let tickets = Arc::new(Mutex::new(tickets));
    let workers = plan.concurrency.clamp(1, plan.samples.max(1));
    let messages = Arc::new(messages.to_vec());
    for _ in 0..workers {
        let worker = SampleWorker {
            client: client.clone(),
            messages: messages.clone(),
            plan: plan.clone(),
            cancel: cancel.clone(),
        };
        let (result_tx, tickets) = (result_tx.clone(), tickets.clone());
        std::thread::spawn(move || worker.run(&tickets, &result_tx));
    }
    drop(result_tx);
    let mut issued = 0;
    while issued < workers {
        let _ = ticket_tx.send(issued);
        issued += 1;
    }
    let sampled = collect(plan, &results, &ticket_tx, &mut issued);
    // Whatever is still running is of no use now: close its connection.
    cancel.store(true, Ordering::Relaxed);
    drop(ticket_tx); // idle workers see the closed channel and exit
    sampled
}

/// Receive results until every sample is in, the vote is settled, the deadline passes or the
/// server says the prompt is too long; hand out a new ticket per result.
fn collect(
    plan: &SamplePlan,
    results: &Receiver<SampleTrace>,
    tickets: &Sender<usize>,
    issued: &mut usize,
) -> Sampled {
    let mut out = Sampled {
        traces: Vec::new(),
        tally: Tally::with_rule(plan.max_weight(), plan.vote),
        stopped: "all samples",
        context_overflow: false,
    };
    out.stopped = loop {
        if out.traces.len() == plan.samples {
            break "all samples";
        }
        let left = plan.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break "deadline";
        }
        // Waking up at least hourly keeps a far-off deadline from overflowing the clock.
        let t = match results.recv_timeout(left.min(Duration::from_secs(3600))) {
            Ok(t) => t,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break "all samples",
        };
        let overflow = t.errors.iter().any(|e| e.starts_with(OVERFLOW));
        if let Some(a) = t.answer {
            let entropy = t.confidence.as_ref().and_then(|c| c.mean_entropy);
            out.tally.add_scored(a, t.weight, entropy);
        }
        out.traces.push(t);
        if overflow {
            out.context_overflow = true;
            break "context overflow";
        }
        let remaining = plan.samples - out.traces.len();
        if remaining > 0 && out.tally.agreed(plan.stop_at) {
            break "stop-at";
        }
        if remaining > 0 && out.tally.settled(remaining, plan.samples, plan.agreement) {
            break "settled";
        }
        if *issued < plan.samples {
            let _ = tickets.send(*issued);
            *issued += 1;
        }
    };
    out.traces.sort_by_key(|t| t.index);
    out
}

/// Prefix of the error a sample records when the server refused the prompt's length.
const OVERFLOW: &str = "context length exceeded: ";

struct SampleWorker {
    client: Client,
    messages: Arc<Vec<Message>>,
    plan: SamplePlan,
    cancel: Arc<AtomicBool>,
}

impl SampleWorker {
    fn run(&self, tickets: &Mutex<Receiver<usize>>, results: &Sender<SampleTrace>) {
        loop {
            let ticket = tickets
                .lock()
                .map_err(|_| ())
                .and_then(|t| t.recv().map_err(|_| ()));
            let Ok(index) = ticket else { return };
            let start = Instant::now();
            // Any panic inside becomes a failed sample: the loop is owed one result per ticket.
            let trace = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.one(index)))
                .unwrap_or_else(|panic| SampleTrace {
                    index,
                    errors: vec![format!(
                        "internal error in the sample: {}",
                        panic_text(&panic)
                    )],
                    seconds: start.elapsed().as_secs_f64(),
                    ..Default::default()
                });
            if results.send(trace).is_err() {
                return;
            }
        }
    }

    fn one(&self, index: usize) -> SampleTrace {
        let plain = !self.plan.tools.any_tool() && self.plan.tools.think_budget.is_none();
        let with_examples = self
            .plan
            .mix
            .as_ref()
            .map(|m| m.spec.examples_in_sample(index));
        let messages = match (&self.plan.mix, with_examples) {
            (Some(m), Some(false)) => &m.bare,
            _ => &self.messages,
        };
        // `--seed S`: sample i asks for seed S+i, in every arm alike (paired comparisons).
        let sampling = Sampling {
            seed: self
                .plan
                .sampling
                .seed
                .map(|s| s.wrapping_add(index as u64)),
            ..self.plan.sampling.clone()
        };
        let mut t = match plain {
            true => self.plain(index, messages, &sampling),
            false => self.with_tools(index, messages, &sampling),
        };
        t.with_examples = with_examples;
        let checked = t.answer.is_some_and(|a| checked_by_code(&t, a));
        let truncated = t.cancelled || t.concluded || t.finish_reason == Some(FinishReason::Length);
        t.weight = vote::sample_weight(checked, truncated);
        t
    }

    /// One request, the answer from its content (else its reasoning).
    fn plain(&self, index: usize, messages: &[Message], sampling: &Sampling) -> SampleTrace {
        let a: Attempted =
            self.client
                .complete(messages, sampling, self.plan.deadline, &self.cancel);
        let mut t = SampleTrace {
            index,
            seconds: a.seconds,
            attempts: a.attempts,
            errors: overflow_marked(a.errors.clone(), a.context_overflow),
            cancelled: a.cancelled,
            ..Default::default()
        };
        let Some(c) = &a.completion else {
            t.rejected = Some("no completion".into());
            return t;
        };
        // The answer comes from the content (after any </think>); only when the content has
        // none is the reasoning searched, and the trace says which.
        let range = &self.plan.answer_range;
        let from_content = answer::extract_answer(&c.content, range);
        let (answer, from) = match (&from_content, &c.reasoning) {
            (Ok(v), _) => (Ok(*v), "content"),
            (Err(_), Some(r)) => match answer::extract_answer(r, range) {
                Ok(v) => (Ok(v), "reasoning"),
                Err(_) => (from_content.clone(), "content"),
            },
            (Err(_), None) => (from_content.clone(), "content"),
        };
        set_answer(&mut t, answer, from);
        t.text = Some(c.full_text());
        t.finish_reason = c.finish_reason.clone();
        t.prompt_tokens = c.prompt_tokens;
        t.completion_tokens = c.completion_tokens;
        t.confidence = c.logprobs.summary();
        t
    }

    /// Rounds with code execution and/or the thinking budget (see rounds.rs); the answer comes
    /// from the whole transcript, preferring boxes after the thinking.
    fn with_tools(&self, index: usize, messages: &[Message], sampling: &Sampling) -> SampleTrace {
        let start = Instant::now();
        let g = rounds::generate(
            &self.client,
            messages,
            sampling,
            &self.plan.tools,
            self.plan.deadline,
            &self.cancel,
        );
        let mut t = SampleTrace {
            index,
            seconds: start.elapsed().as_secs_f64(),
            attempts: g.attempts,
            errors: overflow_marked(g.errors, g.context_overflow),
            cancelled: g.cancelled,
            tool_calls: g.tool_calls,
            concluded: g.concluded,
            rounds: g.rounds,
            finish_reason: g.finish_reason,
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.completion_tokens,
            confidence: g.logprobs.summary(),
            ..Default::default()
        };
        if g.nothing {
            t.rejected = Some("no completion".into());
            return t;
        }
        let range = &self.plan.answer_range;
        let after = g.text.rfind("</think>").map(|p| &g.text[p..]);
        let (answer, from) = match after.map(|a| answer::extract_answer(a, range)) {
            Some(Ok(v)) if g.concluded => (Ok(v), "conclusion"),
            Some(Ok(v)) => (Ok(v), "content"),
            _ => match answer::extract_answer(&g.text, range) {
                Ok(v) if after.is_some() || open_thinking(&g.text) => (Ok(v), "reasoning"),
                other => (other, "content"),
            },
        };
        set_answer(&mut t, answer, from);
        t.text = Some(g.text);
        t
    }
}

fn open_thinking(text: &str) -> bool {
    transcript::open_think(text)
}

fn set_answer(t: &mut SampleTrace, answer: Result<u64, answer::Rejected>, from: &str) {
    match answer {
        Ok(v) => {
            t.answer = Some(v);
            t.answer_from = Some(from.into());
        }
        Err(r) => t.rejected = Some(r.to_string()),
    }
}

fn overflow_marked(mut errors: Vec<String>, overflow: bool) -> Vec<String> {
    if overflow {
        if let Some(last) = errors.last_mut() {
            *last = format!("{OVERFLOW}{last}");
        }
    }
    errors
}

/// Whether executed code backs the answer: it appears as a number in a tool output, or some
/// code ran without error. Fenced blocks and tool calls count alike; calls that were not run
/// (malformed, over the limit) do not count.
fn checked_by_code(t: &SampleTrace, answer: u64) -> bool {
    let wanted = answer.to_string();
    // A search (`--tools retrieve`) runs no code.
    let code = t.tool_calls.iter().filter(|c| c.query.is_none());
    code.filter(|c| !c.rejected).any(|c| {
        !c.error
            || c.output
                .split(|ch: char| !ch.is_ascii_digit())
                .any(|n| n == wanted)
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
