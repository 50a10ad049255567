//! What a batch run reports: the submission file (`id,answer`), the summary line, and with
//! `--eval` the accuracy table per arm and per source.

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config::SolveConfig;
use super::loop_summary::LoopSummary;
use super::outcome::{self, Outcomes};
use super::problems::Problem;
use super::prompt::RagSpec;
use super::trace::Trace;

/// Outcome of one arm (the RAG run or the control) over all problems.
#[derive(Debug, Clone, Default)]
pub struct ArmResult {
    pub answers: BTreeMap<String, u64>,
    pub correct: usize,
    pub scored: usize,
    pub per_source: BTreeMap<String, (usize, usize)>,
    pub margins: Vec<f64>,
    pub fallbacks: usize,
    pub overflow_failures: usize,
    /// Problems the unweighted majority (every sample 1 vote) would have got right: what the
    /// vote weights gain or lose.
    pub majority_correct: usize,
    /// Problems by status, and the examples that reached the model.
    pub outcomes: Outcomes,
    /// Vote rule, log-probs, stops, selector and time per problem (serialisable).
    pub loop_summary: LoopSummary,
}

/// What a run did, as `--json` prints it (one object on stdout) and the summary lines say.
/// Features add fields here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub problems: usize,
    /// A sample gave a valid answer.
    pub answered: usize,
    /// Replies without a valid answer: `--fallback` (the model's failure).
    pub fallbacks: usize,
    /// No sample finished within the problem's share of the time: `--fallback`.
    pub out_of_time: usize,
    /// No reply from the server: `--fallback` in the submission, retried by a re-run.
    pub failed: usize,
    /// `ID: error` of the first failed problem.
    pub first_failure: Option<String>,
    /// Retrieved examples in the prompts sent, per problem (first arm).
    pub examples_sent_mean: f64,
    pub examples_sent: usize,
    /// Retrieved examples left out to fit the server's context.
    pub examples_dropped: usize,
    pub problems_with_dropped_examples: usize,
    pub seconds: f64,
    pub dry_run: bool,
    pub out: PathBuf,
    pub traces: PathBuf,
    pub arms: Vec<ArmSummary>,
}

/// One arm's line of the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArmSummary {
    pub name: String,
    pub rag: Option<RagSpec>,
    pub examples_sent_mean: f64,
    /// Share right among the problems with an answer in the input (None: none had one).
    pub accuracy: Option<f64>,
    pub correct: usize,
    pub scored: usize,
    pub fallbacks: usize,
    pub failed: usize,
    /// `ID: error` of the arm's first failed problem.
    pub first_failure: Option<String>,
    /// Vote rule, log-probs, early stops, the selector and time planned vs used.
    pub solving_loop: LoopSummary,
}

impl Summary {
    /// An error (so a non-zero exit) when problems got no reply from the server.
    pub fn check(&self) -> Result<()> {
        if self.failed > 0 {
            bail!(
                "{} of {} problems got no reply from the server: {}; their rows in {} hold \
                 --fallback. Re-run the same command to retry exactly these",
                self.failed,
                self.problems,
                self.first_failure.as_deref().unwrap_or("?"),
                self.out.display()
            );
        }
        // A comparison arm that lost problems to the server compares nothing.
        if let Some(a) = self.arms.iter().find(|a| a.failed > 0) {
            bail!(
                "arm {}: {} problems got no reply from the server: {}. Re-run the same command \
                 to retry exactly these",
                a.name,
                a.failed,
                a.first_failure.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }

    fn from_arms(cfg: &SolveConfig, results: &[(String, RagSpec, ArmResult)]) -> Self {
        let o = results
            .first()
            .map(|r| r.2.outcomes.clone())
            .unwrap_or_default();
        Self {
            problems: o.problems,
            answered: o.answered,
            fallbacks: o.fallbacks,
            out_of_time: o.out_of_time,
            failed: o.failed,
            first_failure: o.first_failure.clone(),
            examples_sent_mean: o.sent_mean(),
            examples_sent: o.examples_sent,
            examples_dropped: o.examples_dropped,
            problems_with_dropped_examples: o.problems_with_dropped_examples,
            seconds: cfg.budget.started.elapsed().as_secs_f64(),
            dry_run: cfg.output.dry_run,
            out: cfg.output.out.clone(),
            traces: cfg.output.traces.clone(),
            arms: results
                .iter()
                .map(|(name, spec, r)| ArmSummary {
                    name: name.clone(),
                    rag: Some(spec.clone()),
                    examples_sent_mean: r.outcomes.sent_mean(),
                    accuracy: (r.scored > 0).then(|| r.correct as f64 / r.scored as f64),
                    correct: r.correct,
                    scored: r.scored,
                    fallbacks: r.fallbacks,
                    failed: r.outcomes.failed,
                    first_failure: r.outcomes.first_failure.clone(),
                    solving_loop: r.loop_summary.clone(),
                })
                .collect(),
        }
    }
}

/// Final submission, summary lines and (with --eval) the accuracy table; the summary is
/// returned (a caller checks it with [`Summary::check`]).
pub(super) fn report(
    cfg: &SolveConfig,
    problems: &[Problem],
    results: &[(String, RagSpec, ArmResult)],
) -> Result<Summary> {
    let summary = Summary::from_arms(cfg, results);
    if cfg.output.dry_run {
        eprintln!(
            "dry run: nothing sent; the messages are in {}",
            cfg.output.traces.display()
        );
        return Ok(summary);
    }
    let main = &results[0].2;
    write_submission(&cfg.output.out, problems, &main.answers)?;
    say_summary(&summary, "solve");
    say_retrieval(&main.outcomes, cfg.sampling.params.max_tokens);
    if main.overflow_failures > 0 {
        eprintln!(
            "warning: {} problems got no answer because the prompt did not fit the server's \
             context even after dropping examples; see `fit` in their traces",
            main.overflow_failures
        );
    }
    let time = &main.loop_summary.time;
    if time.problems.iter().any(|p| p.planned_seconds.is_some()) {
        eprintln!(
            "time: planned {:.1} s, used {:.1} s over {} problems (per problem in the traces' \
             planned_seconds and seconds, and under --eval)",
            time.planned_seconds,
            time.used_seconds,
            time.problems.len()
        );
    }
    if cfg.output.eval {
        print_eval(results);
    }
    Ok(summary)
}

/// The summary lines: how many problems, and what became of them.
pub(super) fn say_summary(s: &Summary, what: &str) {
    let mut parts = vec![format!("{} answered", s.answered)];
    if s.fallbacks > 0 {
        parts.push(format!(
            "{} fallback{} (replies without a valid answer)",
            s.fallbacks,
            if s.fallbacks == 1 { "" } else { "s" }
        ));
    }
    if s.out_of_time > 0 {
        parts.push(format!(
            "{} ran out of time before any sample finished",
            s.out_of_time
        ));
    }
    if s.failed > 0 {
        parts.push(format!("{} failed (no reply from the server)", s.failed));
    }
    eprintln!(
        "{what}: {} problems: {} -> {}, traces -> {}",
        s.problems,
        parts.join(", "),
        s.out.display(),
        s.traces.display(),
    );
}

/// Retrieval that did not reach the model: a count, or an error line when none did.
fn say_retrieval(o: &Outcomes, max_tokens: usize) {
    if o.none_reached_the_model() {
        eprintln!(
            "error: no retrieved example reached the model: all {} were left out to fit the \
             server's context. {}",
            o.examples_dropped,
            outcome::all_dropped_advice(o, max_tokens)
        );
    } else if o.problems_with_dropped_examples > 0 {
        eprintln!(
            "warning: {} of {} problems lost examples to the context fitting ({} examples left \
             out; {:.2} sent per problem); see `fit` in the traces",
            o.problems_with_dropped_examples,
            o.problems,
            o.examples_dropped,
            o.sent_mean()
        );
    }
}

/// `id,answer` for every problem that has one, in input order, written atomically: CSV, or
/// Parquet (id: string, answer: int64, as the AIMO 3 gateway expects) when `path` ends in
/// `.parquet`.
pub fn write_submission(
    path: &Path,
    problems: &[Problem],
    answers: &BTreeMap<String, u64>,
) -> Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        return super::submission_parquet::write(path, problems, answers);
    }
    let rows: Vec<(&str, u64)> = problems
        .iter()
        .filter_map(|p| Some((p.id.as_str(), *answers.get(&p.id)?)))
        .collect();
    write_rows(path, &rows)
}

/// `id,answer` rows in the order given, written atomically.
pub fn write_rows(path: &Path, rows: &[(&str, u64)]) -> Result<()> {
    crate::fsio::write_atomically(path, |w| {
        writeln!(w, "id,answer")?;
        for (id, a) in rows {
            writeln!(w, "{},{a}", csv_field(id))?;
        }
        Ok(())
    })
}

/// Accuracy, margins and fallbacks over every answered problem (this run's and earlier).
pub fn tally(problems: &[Problem], done: &BTreeMap<String, Trace>, fallback: u64) -> ArmResult {
    let mut r = ArmResult::default();
    for p in problems {
        let Some(t) = done.get(&p.id) else { continue };
        r.outcomes.add(t);
        let answer = t.verdict.answer.unwrap_or(fallback);
        r.answers.insert(p.id.clone(), answer);
        r.fallbacks += usize::from(t.verdict.fallback);
        let overflowed = t.samples.iter().any(|s| {
            s.errors
                .iter()
                .any(|e| e.starts_with("context length exceeded"))
        });
        r.overflow_failures += usize::from(t.verdict.fallback && overflowed);
        // Margins in vote weight (= votes when every sample weighed 1).
        let mut votes: Vec<f64> = t
            .vote
            .iter()
            .map(|v| v.weight.unwrap_or(v.votes as f64))
            .collect();
        votes.sort_unstable_by(|a, b| b.total_cmp(a));
        if let Some(&top) = votes.first() {
            let total: f64 = votes.iter().sum();
            let second = votes.get(1).copied().unwrap_or(0.0);
            r.margins.push((top - second) / total.max(1e-9));
        }
        if let Some(e) = p.expected {
            let ok = e == answer;
            r.scored += 1;
            r.correct += usize::from(ok);
            r.majority_correct += usize::from(majority(t).unwrap_or(answer) == e);
            let entry = r
                .per_source
                .entry(p.source.clone().unwrap_or_else(|| "-".into()))
                .or_default();
            entry.0 += usize::from(ok);
            entry.1 += 1;
        }
    }
    r
}

/// The plain majority answer of a trace's vote (ties to the answer seen first).
fn majority(t: &Trace) -> Option<u64> {
    let top = t.vote.iter().map(|v| v.votes).max()?;
    t.vote.iter().find(|v| v.votes == top).map(|v| v.answer)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn print_eval(results: &[(String, RagSpec, ArmResult)]) {
    println!(
        "| arm | rag | accuracy | scored | mean vote margin | fallbacks | unweighted majority \
         | examples sent |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let share = |n: usize, of: usize| match of {
        0 => f64::NAN,
        _ => n as f64 / of as f64,
    };
    for (name, spec, r) in results {
        println!(
            "| {name} | k={} | {:.3} | {} | {:.2} | {} | {:.3} | {:.2} |",
            spec.k,
            share(r.correct, r.scored),
            r.scored,
            mean(&r.margins),
            r.fallbacks,
            share(r.majority_correct, r.scored),
            r.outcomes.sent_mean()
        );
    }
    println!("\nsolving loop:");
    for (name, _, r) in results {
        for line in r.loop_summary.eval_lines(name) {
            println!("{line}");
        }
    }
    println!("\nper source:");
    for (name, _, r) in results {
        for (source, (c, n)) in &r.per_source {
            println!(
                "  {name:<8} {source:<20} {c}/{n} = {:.3}",
                *c as f64 / (*n).max(1) as f64
            );
        }
    }
}
