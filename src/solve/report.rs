//! What a batch run reports: the submission file (`id,answer`), the summary line, and with
//! `--eval` the accuracy table per arm and per source.

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

use super::config::SolveConfig;
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
}

/// Final submission, summary line and (with --eval) the accuracy table.
pub(super) fn report(
    cfg: &SolveConfig,
    problems: &[Problem],
    results: &[(String, RagSpec, ArmResult)],
) -> Result<()> {
    if cfg.output.dry_run {
        eprintln!(
            "dry run: nothing sent; the messages are in {}",
            cfg.output.traces.display()
        );
        return Ok(());
    }
    let main = &results[0].2;
    write_submission(&cfg.output.out, problems, &main.answers)?;
    eprintln!(
        "solve: {} answers -> {} ({} fallbacks), traces -> {}",
        main.answers.len(),
        cfg.output.out.display(),
        main.fallbacks,
        cfg.output.traces.display(),
    );
    if main.overflow_failures > 0 {
        eprintln!(
            "warning: {} problems got no answer because the prompt did not fit the server's \
             context even after dropping examples; see `fit` in their traces",
            main.overflow_failures
        );
    }
    if cfg.output.eval {
        print_eval(results);
    }
    Ok(())
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
    crate::fsio::write_atomically(path, |w| {
        writeln!(w, "id,answer")?;
        for p in problems {
            if let Some(a) = answers.get(&p.id) {
                writeln!(w, "{},{a}", csv_field(&p.id))?;
            }
        }
        Ok(())
    })
}

/// Accuracy, margins and fallbacks over every answered problem (this run's and earlier).
pub fn tally(problems: &[Problem], done: &BTreeMap<String, Trace>, fallback: u64) -> ArmResult {
    let mut r = ArmResult::default();
    for p in problems {
        let Some(t) = done.get(&p.id) else { continue };
        let answer = t.answer.unwrap_or(fallback);
        r.answers.insert(p.id.clone(), answer);
        r.fallbacks += usize::from(t.fallback);
        let overflowed = t.samples.iter().any(|s| {
            s.errors
                .iter()
                .any(|e| e.starts_with("context length exceeded"))
        });
        r.overflow_failures += usize::from(t.fallback && overflowed);
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
        "| arm | rag | accuracy | scored | mean vote margin | fallbacks | unweighted majority |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let share = |n: usize, of: usize| match of {
        0 => f64::NAN,
        _ => n as f64 / of as f64,
    };
    for (name, spec, r) in results {
        println!(
            "| {name} | k={} | {:.3} | {} | {:.2} | {} | {:.3} |",
            spec.k,
            share(r.correct, r.scored),
            r.scored,
            mean(&r.margins),
            r.fallbacks,
            share(r.majority_correct, r.scored)
        );
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
