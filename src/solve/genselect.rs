//! `--select genselect`: a selector for split votes. Majority voting leaves answers on the table
//! that some sample had right (a study of 21 AIMO 3 runs: 42/50 by majority while some attempt
//! was right on ~45.5, arXiv 2603.27844); NVIDIA's AIMO 2 winner closed part of that gap with
//! GenSelect, which lets the model read the candidate solutions and pick one.
//!
//! When the vote's margin ((leader - runner-up) / total weight) is below `--select-margin`, one
//! more request shows the model the problem and the best sample of each of the top
//! `--select-candidates` answers, each cut to its written solution (the text after the
//! thinking, else the thinking's end) and its answer, within the server's context, and asks it
//! to compare them and end with `Judgment: N`. The chosen candidate's answer wins. Without a
//! judgment (an error, the deadline, no such line) the vote stands. All of it goes into the
//! trace (`select`).

use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::client::{Client, Message, Role, Sampling};
use super::confidence::Confidence;
use super::trace::SampleTrace;
use super::vote::Tally;

/// `--select`: what decides a split vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selector {
    /// The vote's answer stands.
    #[default]
    None,
    /// The model picks among the top candidates.
    Genselect,
}

crate::named_enum!(Selector { None => "none", Genselect => "genselect" });

/// The selector's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectConfig {
    pub selector: Selector,
    /// Runs when the vote margin is below this (0..1).
    pub margin: f64,
    /// Candidates (distinct answers, best first) shown at most.
    pub candidates: usize,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            selector: Selector::None,
            margin: DEFAULT_MARGIN,
            candidates: DEFAULT_CANDIDATES,
        }
    }
}

/// A 5:3 split of 8 has margin 0.25 and goes to the selector; 6:2 (0.5) does not.
pub const DEFAULT_MARGIN: f64 = 0.3;
pub const DEFAULT_CANDIDATES: usize = 4;
/// Characters of one candidate's solution at most, whatever the context allows.
const MAX_CANDIDATE_CHARS: usize = 6000;
/// Below this a candidate is not worth showing: the selector does not run.
const MIN_CANDIDATE_CHARS: usize = 300;
/// Tokens kept free for the instructions and the chat template.
const PROMPT_SLACK_TOKENS: usize = 512;

/// One candidate as shown to the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub answer: u64,
    /// The sample whose solution was shown.
    pub sample: usize,
    /// Characters of its solution shown.
    pub chars: usize,
}

/// What the selector did for one problem (the trace's `select`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectTrace {
    pub method: String,
    /// The vote's margin and the threshold it was compared with.
    pub margin: f64,
    pub threshold: f64,
    pub ran: bool,
    /// Why it did not run (a clear vote, one candidate, no time or room left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The vote's answer before selection.
    pub vote_answer: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// The request's messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// The model's reply (thinking inside `<think>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The candidate number the model named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgment: Option<usize>,
    /// The selected answer (it replaced the vote's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<u64>,
    /// The chosen answer differs from the vote's.
    #[serde(default)]
    pub changed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

/// What one selection needs from the run.
pub struct Selection<'a> {
    pub client: &'a Client,
    pub config: &'a SelectConfig,
    pub system: Option<&'a str>,
    pub sampling: &'a Sampling,
    /// The server's context length, if known.
    pub context: Option<usize>,
    pub deadline: Instant,
}

impl Selection<'_> {
    /// Decide a split vote: None when the selector is off or there is no vote; otherwise the
    /// record, with `chosen` set when the model named a candidate.
    pub fn select(
        &self,
        problem: &str,
        samples: &[SampleTrace],
        tally: &Tally,
    ) -> Option<SelectTrace> {
        if self.config.selector == Selector::None {
            return None;
        }
        let verdict = tally.verdict()?;
        let mut t = SelectTrace {
            method: self.config.selector.name().into(),
            margin: verdict.margin(),
            threshold: self.config.margin,
            vote_answer: verdict.answer,
            ..Default::default()
        };
        let answers: Vec<u64> = tally.ranked().iter().map(|c| c.answer).collect();
        let (max_tokens, per_candidate) = self.room(problem, answers.len());
        t.skipped = if answers.len() < 2 {
            Some("one answer only".into())
        } else if t.margin >= t.threshold {
            Some(format!("margin {:.2} >= {:.2}", t.margin, t.threshold))
        } else if Instant::now() >= self.deadline {
            Some("no time left".into())
        } else if per_candidate < MIN_CANDIDATE_CHARS {
            Some("no room in the server's context".into())
        } else {
            None
        };
        if t.skipped.is_none() {
            let shown = &answers[..answers.len().min(self.config.candidates.max(2))];
            self.run(problem, samples, shown, max_tokens, per_candidate, &mut t);
        }
        Some(t)
    }

    /// max_tokens of the request and characters per candidate, for `n` answers.
    fn room(&self, problem: &str, n: usize) -> (usize, usize) {
        let shown = n.min(self.config.candidates.max(2)).max(1);
        let Some(ctx) = self.context else {
            return (self.sampling.max_tokens, MAX_CANDIDATE_CHARS);
        };
        // Half the context for the reply at most; the rest, at two bytes a token (the prompt
        // budget's conservative estimate), for the problem and the candidates.
        let max_tokens = self.sampling.max_tokens.min(ctx / 2).max(1);
        let prompt_tokens = ctx.saturating_sub(max_tokens + PROMPT_SLACK_TOKENS);
        let chars = (prompt_tokens * 2).saturating_sub(problem.len()) / shown;
        (max_tokens, chars.min(MAX_CANDIDATE_CHARS))
    }

    fn run(
        &self,
        problem: &str,
        samples: &[SampleTrace],
        answers: &[u64],
        max_tokens: usize,
        per_candidate: usize,
        t: &mut SelectTrace,
    ) {
        t.ran = true;
        let mut shown = Vec::new();
        for &answer in answers {
            let Some(s) = representative(samples, answer) else {
                continue;
            };
            let text = summary(s.text.as_deref().unwrap_or(""), answer, per_candidate);
            t.candidates.push(Candidate {
                answer,
                sample: s.index,
                chars: text.chars().count(),
            });
            shown.push(text);
        }
        let mut messages = Vec::new();
        if let Some(s) = self.system {
            messages.push(Message::new(Role::System, s));
        }
        messages.push(Message::new(Role::User, prompt(problem, &shown)));
        let sampling = Sampling {
            max_tokens,
            ..self.sampling.clone()
        };
        let a = self
            .client
            .complete(&messages, &sampling, self.deadline, &AtomicBool::new(false));
        t.messages = messages;
        t.errors = a.errors;
        t.seconds = a.seconds;
        let Some(c) = a.completion else { return };
        t.completion_tokens = c.completion_tokens;
        t.confidence = c.logprobs.summary();
        t.judgment = judgment(&c.content, shown.len())
            .or_else(|| judgment(c.reasoning.as_deref().unwrap_or(""), shown.len()));
        t.text = Some(c.full_text());
        if let Some(j) = t.judgment {
            let chosen = t.candidates[j].answer;
            t.chosen = Some(chosen);
            t.changed = chosen != t.vote_answer;
        }
    }
}

/// The sample to show for an answer: the heaviest in the vote, then the most confident (lowest
/// mean entropy), then the first.
fn representative(samples: &[SampleTrace], answer: u64) -> Option<&SampleTrace> {
    let entropy = |s: &SampleTrace| {
        s.confidence
            .as_ref()
            .and_then(|c| c.mean_entropy)
            .unwrap_or(f64::INFINITY)
    };
    samples
        .iter()
        .filter(|s| s.answer == Some(answer))
        .min_by(|a, b| {
            b.weight
                .total_cmp(&a.weight)
                .then(entropy(a).total_cmp(&entropy(b)))
                .then(a.index.cmp(&b.index))
        })
}

/// A sample cut to its written solution and its answer, in at most `chars` characters: the
/// text after the thinking when there is some, else the end of the thinking (where the result
/// is reached); a long one keeps its head and tail.
pub fn summary(text: &str, answer: u64, chars: usize) -> String {
    let after = text
        .rfind("</think>")
        .map(|p| text[p + "</think>".len()..].trim());
    let body = match after {
        Some(a) if a.chars().count() >= 40 => a,
        _ => text.trim(),
    };
    let tail = format!("\n\nFinal answer: \\boxed{{{answer}}}");
    let room = chars.saturating_sub(tail.len() + 8);
    let n = body.chars().count();
    let cut = if n <= room {
        body.to_string()
    } else if after.is_some_and(|a| a == body) {
        let head: String = body.chars().take(room / 2).collect();
        let rest: String = body.chars().skip(n - room / 2).collect();
        format!("{head}\n[...]\n{rest}")
    } else {
        // The thinking: its end holds the conclusion.
        format!("[...]\n{}", body.chars().skip(n - room).collect::<String>())
    };
    format!("{cut}{tail}")
}

/// The request text (after GenSelect's: the problem, numbered solutions, a judgment line).
fn prompt(problem: &str, solutions: &[String]) -> String {
    let mut p = format!(
        "Below are a math problem and {} candidate solutions, numbered 0 to {}. They reach \
         different final answers, so at most one of them is right. Check each solution's key \
         steps and computations, find where the wrong ones fail, and decide which solution is \
         correct.\n\nProblem:\n{}\n",
        solutions.len(),
        solutions.len() - 1,
        problem.trim()
    );
    for (i, s) in solutions.iter().enumerate() {
        p.push_str(&format!("\n### Solution {i}\n{s}\n"));
    }
    p.push_str(
        "\nEnd your reply with one line `Judgment: N`, where N is the number of the best \
         solution.",
    );
    p
}

/// The number after the last `Judgment` (any case; `:`, `**`, `\boxed{`, `Solution` and
/// spaces between), if it names one of `n` candidates.
pub fn judgment(text: &str, n: usize) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let at = lower.rfind("judgment")? + "judgment".len();
    let rest = &text[at..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let between = rest[..start]
        .to_ascii_lowercase()
        .replace("solution", "")
        .replace("boxed", "");
    if between.len() > 24 || between.chars().any(char::is_alphanumeric) {
        return None;
    }
    let digits: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&j| j < n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgments_are_read_from_the_last_line_that_names_one() {
        assert_eq!(judgment("thinking... Judgment: 1", 3), Some(1));
        assert_eq!(judgment("**Judgment:** \\boxed{2}", 3), Some(2));
        assert_eq!(judgment("judgment: 0\nlater, JUDGMENT: 2", 3), Some(2));
        assert_eq!(judgment("Judgment: 3", 3), None);
        assert_eq!(judgment("Judgment: Solution 1", 3), Some(1));
        assert_eq!(judgment("Judgment: solution one is right 1", 3), None);
        assert_eq!(judgment("no verdict 1", 3), None);
    }

    #[test]
    fn summaries_keep_the_written_solution_and_the_answer_within_the_room() {
        let text = format!("<think>{}</think>{}", "t".repeat(5000), "w".repeat(3000));
        let s = summary(&text, 42, 1000);
        assert!(s.chars().count() <= 1000, "{}", s.len());
        assert!(s.starts_with('w') && s.contains("[...]"));
        assert!(s.ends_with("Final answer: \\boxed{42}"));
        // No written solution: the end of the thinking.
        let s = summary(&format!("<think>{}end", "t".repeat(5000)), 7, 500);
        assert!(s.starts_with("[...]") && s.contains("tend\n"));
        assert!(s.chars().count() <= 500);
        let short = summary(
            "<think>x</think>It is 5 because of a long enough reason here.",
            5,
            900,
        );
        assert!(short.starts_with("It is 5"));
    }
}
