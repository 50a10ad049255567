//! What became of a problem, and what a run reports about them all.
//!
//! A problem is *answered* (a sample gave a valid answer), a *fallback* (samples replied, none
//! with a valid answer: the model's failure), *out of time* (its share of the budget ran out
//! before any sample finished), or *failed* (no sample got a reply from the server: connection
//! refused, HTTP errors). All but the first get `--fallback` in the submission, since a
//! competition needs a row per id; a failed one is not kept by a resume, so a re-run retries
//! exactly the failed problems, and a run with failed problems exits non-zero.

use serde::{Deserialize, Serialize};

use super::trace::Trace;
use crate::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Answered,
    Fallback,
    OutOfTime,
    Failed,
}

/// Prefix of a sample error that is the server refusing the prompt's length: a reply.
const OVERFLOW: &str = "context length exceeded";
/// The error a sample records when its deadline passed before a try.
const DEADLINE: &str = "deadline reached";

/// A trace's status and why it is not answered; the stored one, else worked out from the
/// samples (traces written before statuses existed).
pub fn status(t: &Trace) -> (Status, Option<String>) {
    match t.verdict.status {
        Some(s) => (s, t.verdict.failure.clone()),
        None => classify(t),
    }
}

/// Work out a problem's status from its samples.
pub fn classify(t: &Trace) -> (Status, Option<String>) {
    if t.samples.iter().any(|s| s.answer.is_some()) {
        return (Status::Answered, None);
    }
    let replied = |s: &super::trace::SampleTrace| {
        s.text.is_some() || s.errors.iter().any(|e| e.starts_with(OVERFLOW))
    };
    if let Some(s) = t.samples.iter().find(|s| replied(s)) {
        let why = match (&s.rejected, s.errors.last()) {
            (Some(r), _) if s.text.is_some() => format!("no valid answer in the replies ({r})"),
            (_, Some(e)) => e.clone(),
            _ => "no valid answer in the replies".into(),
        };
        return (Status::Fallback, Some(why));
    }
    // When the problem's time ran out, a stream cut by its request's timeout is the deadline
    // at work, not a server that failed to reply (the server had answered and was streaming).
    let cut_by_deadline = |e: &str| {
        t.verdict.stopped.as_deref() == Some("deadline")
            && e.starts_with("stream interrupted: timeout")
    };
    let server_error = t
        .samples
        .iter()
        .flat_map(|s| &s.errors)
        .find(|e| e.as_str() != DEADLINE && !cut_by_deadline(e));
    match server_error {
        Some(e) => (Status::Failed, Some(e.clone())),
        None => (
            Status::OutOfTime,
            Some("no sample finished within the problem's share of the time budget".into()),
        ),
    }
}

/// Record the status in the trace.
pub fn mark(t: &mut Trace) {
    let (s, why) = classify(t);
    t.verdict.status = Some(s);
    t.verdict.failure = why;
}

/// Whether a resume must do this problem again.
pub fn retry_on_resume(t: &Trace) -> bool {
    status(t).0 == Status::Failed
}

/// One line when the prompt fitting left out retrieved examples of a problem.
pub fn warn_dropped(progress: &dyn Progress, t: &Trace) {
    let dropped = t.retrieval.fit.dropped.len();
    if dropped == 0 {
        return;
    }
    let retrieved = dropped + t.retrieval.retrieved.len();
    let context = t
        .retrieval
        .fit
        .context
        .map_or("?".into(), |c| c.to_string());
    let max_tokens = t.run.as_ref().map_or(0, |k| {
        t.retrieval.fit.max_tokens.unwrap_or(k.sampling.max_tokens)
    });
    progress.log(&format!(
        "warning: {}: {dropped} of {retrieved} retrieved examples dropped to fit the server's \
         context ({context} tokens: prompt {} + max_tokens {max_tokens})",
        t.id, t.retrieval.fit.prompt_tokens
    ));
}

/// The problems of one arm by status, and what retrieval put in front of the model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcomes {
    pub problems: usize,
    pub answered: usize,
    /// Replies without a valid answer (the model's failure).
    pub fallbacks: usize,
    pub out_of_time: usize,
    /// No reply from the server; retried by a re-run.
    pub failed: usize,
    /// `ID: error` of the first failed problem.
    pub first_failure: Option<String>,
    /// Examples in the prompts sent, over all problems.
    pub examples_sent: usize,
    /// Retrieved examples left out to fit the context.
    pub examples_dropped: usize,
    pub problems_with_dropped_examples: usize,
    /// The server's context and the prompt of the first problem that lost every example.
    #[serde(skip)]
    pub all_dropped_at: Option<(Option<usize>, usize)>,
}

impl Outcomes {
    pub fn add(&mut self, t: &Trace) {
        self.problems += 1;
        let (status, why) = status(t);
        match status {
            Status::Answered => self.answered += 1,
            Status::Fallback => self.fallbacks += 1,
            Status::OutOfTime => self.out_of_time += 1,
            Status::Failed => {
                self.failed += 1;
                if self.first_failure.is_none() {
                    let why = why.unwrap_or_else(|| "no reply".into());
                    self.first_failure = Some(format!("{}: {why}", t.id));
                }
            }
        }
        self.examples_sent += t.retrieval.retrieved.len();
        let dropped = t.retrieval.fit.dropped.len();
        self.examples_dropped += dropped;
        self.problems_with_dropped_examples += usize::from(dropped > 0);
        if dropped > 0 && t.retrieval.retrieved.is_empty() && self.all_dropped_at.is_none() {
            self.all_dropped_at = Some((t.retrieval.fit.context, t.retrieval.fit.prompt_tokens));
        }
    }

    /// Mean examples sent per problem.
    pub fn sent_mean(&self) -> f64 {
        self.examples_sent as f64 / self.problems.max(1) as f64
    }

    /// Every retrieved example of every problem was left out.
    pub fn none_reached_the_model(&self) -> bool {
        self.examples_sent == 0 && self.examples_dropped > 0
    }
}

/// Why no example fitted, and what to change: the context against `--max-tokens`.
pub fn all_dropped_advice(o: &Outcomes, max_tokens: usize) -> String {
    let (context, prompt) = o.all_dropped_at.unwrap_or((None, 0));
    let Some(ctx) = context else {
        return "the prompts did not fit the server's context; see `fit` in the traces".into();
    };
    if max_tokens + prompt >= ctx {
        format!(
            "--max-tokens {max_tokens} leaves no room in the server's context of {ctx} tokens \
             (the bare prompt alone is {prompt}). Lower --max-tokens (to at most about {} to keep \
             examples of ~1,000 tokens each), or serve a longer context (vLLM --max-model-len, \
             llama.cpp -c / per-slot context)",
            ctx.saturating_sub(prompt + 1000).max(1)
        )
    } else {
        format!(
            "the retrieved examples are longer than the {} tokens the server's context of {ctx} \
             leaves beside --max-tokens {max_tokens} and the bare prompt ({prompt}). Lower \
             --max-tokens, or serve a longer context",
            ctx - max_tokens - prompt
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::trace::SampleTrace;

    fn trace(samples: Vec<SampleTrace>) -> Trace {
        Trace {
            samples,
            ..Default::default()
        }
    }

    fn failed_sample(errors: &[&str]) -> SampleTrace {
        SampleTrace {
            errors: errors.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_tell_the_server_from_the_model_and_the_clock() {
        let answered = SampleTrace {
            text: Some("\\boxed{3}".into()),
            answer: Some(3),
            ..Default::default()
        };
        let no_box = SampleTrace {
            text: Some("no idea".into()),
            rejected: Some("no \\boxed{}".into()),
            ..Default::default()
        };
        let refused = failed_sample(&["request failed: connection refused", "HTTP 503: down"]);
        let overflow = failed_sample(&["context length exceeded: HTTP 400: too long"]);
        let cases = [
            (vec![refused.clone(), answered], Status::Answered),
            (vec![refused.clone(), no_box], Status::Fallback),
            (vec![overflow], Status::Fallback),
            (
                vec![refused.clone(), failed_sample(&[DEADLINE])],
                Status::Failed,
            ),
            (vec![failed_sample(&[DEADLINE])], Status::OutOfTime),
            (vec![], Status::OutOfTime),
        ];
        for (samples, want) in cases {
            let t = trace(samples);
            assert_eq!(classify(&t).0, want, "{t:?}");
        }
        let (_, why) = classify(&trace(vec![refused]));
        assert_eq!(why.as_deref(), Some("request failed: connection refused"));
    }

    /// A stream the deadline cut (its request timed out when the problem's time ran out) is out
    /// of time; the same error without the deadline is a server that stopped answering.
    #[test]
    fn a_stream_cut_by_the_deadline_is_out_of_time() {
        let cut = failed_sample(&["stream interrupted: timeout: global"]);
        let mut t = trace(vec![cut.clone(), failed_sample(&[DEADLINE])]);
        t.verdict.stopped = Some("deadline".into());
        assert_eq!(classify(&t).0, Status::OutOfTime);
        let t = trace(vec![cut]);
        assert_eq!(classify(&t).0, Status::Failed);
    }

    #[test]
    fn a_stored_status_is_kept_and_only_failed_ones_are_redone() {
        let mut t = trace(vec![failed_sample(&["HTTP 500: x"])]);
        mark(&mut t);
        assert_eq!(t.verdict.status, Some(Status::Failed));
        assert!(retry_on_resume(&t));
        t.verdict.status = Some(Status::Fallback);
        assert!(!retry_on_resume(&t));
    }
}
