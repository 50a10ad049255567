//! `--compare-rag`: the verdict on retrieval. Every arm ran on the same problems with the same
//! seeds and an equal share of the time; this reads each arm's trace lines back and reports,
//! per arm, majority-vote accuracy, per-sample accuracy (right samples / all samples: far more
//! statistical power than the vote), tokens and seconds per problem and the examples actually
//! sent; and for each arm against the first, the paired differences with bootstrap 95%
//! intervals over problems and the exact McNemar p-value on per-problem correctness.

use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

use super::problems::Problem;
use super::prompt::RagSpec;
use super::stats::{self, Interval};
use super::trace::{self, RunKey, Trace};

/// An arm as run: its name in the traces, its setting and its run key.
pub(super) struct ArmRun {
    pub name: String,
    pub spec: RagSpec,
    pub key: RunKey,
}

/// What one arm did on one problem.
#[derive(Debug, Clone, Default)]
struct Outcome {
    correct: bool,
    right_samples: f64,
    samples: f64,
    prompt_tokens: f64,
    completion_tokens: f64,
    seconds: f64,
    examples: f64,
    searches: f64,
}

#[derive(Debug, Serialize)]
pub struct ArmStats {
    pub arm: String,
    pub rag: String,
    pub problems: usize,
    pub vote_accuracy: f64,
    pub sample_accuracy: f64,
    pub samples: usize,
    pub prompt_tokens_per_problem: f64,
    pub completion_tokens_per_problem: f64,
    pub seconds_per_problem: f64,
    /// Examples in the prompt plus neighbours returned by the search tool, per sample.
    pub examples_per_sample: f64,
    pub searches_per_sample: f64,
}

/// A paired difference (this arm minus the first) with its bootstrap interval.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub difference: f64,
    pub interval_95: Option<Interval>,
}

#[derive(Debug, Serialize)]
pub struct Versus {
    pub arm: String,
    pub against: String,
    /// Problems both arms answered and the input has an answer for.
    pub problems: usize,
    pub vote_accuracy: Difference,
    pub sample_accuracy: Difference,
    /// Problems only the first arm got right (b) and only this arm (c).
    pub only_first_right: usize,
    pub only_this_right: usize,
    pub mcnemar_p: f64,
    /// Plain words: "cannot tell apart", or which way and by which measure.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub resamples: usize,
    pub seed: u64,
    pub arms: Vec<ArmStats>,
    pub versus: Vec<Versus>,
}

/// Read every arm's answered problems back from the traces and compare them.
pub(super) fn verdict(
    traces: &std::path::Path,
    problems: &[Problem],
    arms: &[ArmRun],
) -> Result<Verdict> {
    let mut outcomes = Vec::new();
    for arm in arms {
        let done = trace::finished(traces, &arm.name, &arm.key)?;
        outcomes.push(outcomes_of(problems, &done));
    }
    let stats = arms
        .iter()
        .zip(&outcomes)
        .map(|(a, o)| arm_stats(a, o))
        .collect();
    let versus = arms
        .iter()
        .zip(&outcomes)
        .skip(1)
        .map(|(a, o)| versus(&arms[0].name, &outcomes[0], &a.name, o))
        .collect();
    Ok(Verdict {
        resamples: stats::RESAMPLES,
        seed: stats::SEED,
        arms: stats,
        versus,
    })
}

/// Outcomes by problem id, for problems with an expected answer.
fn outcomes_of(problems: &[Problem], done: &BTreeMap<String, Trace>) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    for p in problems {
        let (Some(expected), Some(t)) = (p.expected, done.get(&p.id)) else {
            continue;
        };
        let mut o = Outcome {
            correct: t.verdict.answer == Some(expected),
            seconds: t.timing.seconds,
            ..Default::default()
        };
        for s in &t.samples {
            o.samples += 1.0;
            o.right_samples += f64::from(u8::from(s.answer == Some(expected)));
            o.prompt_tokens += s.prompt_tokens.unwrap_or(0) as f64;
            o.completion_tokens += s.completion_tokens.unwrap_or(0) as f64;
            if s.with_examples != Some(false) {
                o.examples += t.retrieval.retrieved.len() as f64;
            }
            for c in s.tool_calls.iter().filter(|c| c.query.is_some()) {
                o.searches += 1.0;
                o.examples += c.hits.len() as f64;
            }
        }
        out.insert(p.id.clone(), o);
    }
    out
}

fn arm_stats(arm: &ArmRun, o: &BTreeMap<String, Outcome>) -> ArmStats {
    let n = o.len().max(1) as f64;
    let sum = |f: fn(&Outcome) -> f64| o.values().map(f).sum::<f64>();
    let samples = sum(|o| o.samples);
    ArmStats {
        arm: arm.name.clone(),
        rag: spec_text(&arm.spec),
        problems: o.len(),
        vote_accuracy: sum(|o| f64::from(u8::from(o.correct))) / n,
        sample_accuracy: sum(|o| o.right_samples) / samples.max(1.0),
        samples: samples as usize,
        prompt_tokens_per_problem: sum(|o| o.prompt_tokens) / n,
        completion_tokens_per_problem: sum(|o| o.completion_tokens) / n,
        seconds_per_problem: sum(|o| o.seconds) / n,
        examples_per_sample: sum(|o| o.examples) / samples.max(1.0),
        searches_per_sample: sum(|o| o.searches) / samples.max(1.0),
    }
}

/// This arm against the first, on the problems both answered.
fn versus(
    first: &str,
    a: &BTreeMap<String, Outcome>,
    name: &str,
    b: &BTreeMap<String, Outcome>,
) -> Versus {
    let pairs: Vec<(&Outcome, &Outcome)> = a
        .iter()
        .filter_map(|(id, x)| Some((x, b.get(id)?)))
        .collect();
    let votes: Vec<(f64, f64)> = pairs
        .iter()
        .map(|(x, y)| {
            (
                f64::from(u8::from(x.correct)),
                f64::from(u8::from(y.correct)),
            )
        })
        .collect();
    let (vd, vi) = stats::paired_mean_difference(&votes, stats::SEED);
    let rate = |o: &Outcome| (o.right_samples, o.samples);
    let (ra, rb): (Vec<_>, Vec<_>) = pairs.iter().map(|(x, y)| (rate(x), rate(y))).unzip();
    let (sd, si) = stats::paired_ratio_difference(&ra, &rb, stats::SEED);
    let b = pairs
        .iter()
        .filter(|(x, y)| x.correct && !y.correct)
        .count();
    let c = pairs
        .iter()
        .filter(|(x, y)| !x.correct && y.correct)
        .count();
    let p = stats::mcnemar_exact(b, c);
    Versus {
        arm: name.to_string(),
        against: first.to_string(),
        problems: pairs.len(),
        verdict: say(vd, p, sd, si.as_ref()),
        vote_accuracy: Difference {
            difference: vd,
            interval_95: vi,
        },
        sample_accuracy: Difference {
            difference: sd,
            interval_95: si,
        },
        only_first_right: b,
        only_this_right: c,
        mcnemar_p: p,
    }
}

/// The verdict in words: a difference counts when McNemar's p < 0.05 (the vote) or the
/// per-sample interval leaves out 0.
fn say(vote_diff: f64, p: f64, sample_diff: f64, sample_ci: Option<&Interval>) -> String {
    let way = |d: f64| if d > 0.0 { "better" } else { "worse" };
    let mut found = Vec::new();
    if p < 0.05 {
        found.push(format!("{} by vote (McNemar p < 0.05)", way(vote_diff)));
    }
    if sample_ci.is_some_and(|ci| !ci.covers_zero()) {
        found.push(format!(
            "{} per sample (95% interval excludes 0)",
            way(sample_diff)
        ));
    }
    match found.is_empty() {
        true => "cannot tell apart: every interval covers 0 and p >= 0.05".into(),
        false => found.join("; "),
    }
}

/// An arm's setting as written on the command line.
pub fn spec_text(s: &RagSpec) -> String {
    let mut t = format!("k={}", s.k);
    if s.k > 0 || s.search == Some(true) {
        // Through serde, so formats added later are named without a change here.
        let f = serde_json::to_value(s.format).unwrap_or_default();
        t.push_str(&format!(",format={}", f.as_str().unwrap_or("?")));
    }
    for (key, v) in [
        ("min-score", s.min_score),
        ("exclude-above", s.exclude_above),
    ] {
        if let Some(v) = v {
            t.push_str(&format!(",{key}={v}"));
        }
    }
    if let Some(v) = s.share {
        t.push_str(&format!(",share={v}"));
    }
    if s.search == Some(true) {
        t.push_str(",search=on");
    }
    t
}

/// The verdict as markdown tables, on stdout.
pub(super) fn print(v: &Verdict) {
    println!(
        "\n| arm | rag | problems | vote acc | sample acc | samples | prompt tok/problem | gen \
         tok/problem | s/problem | examples/sample | searches/sample |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for a in &v.arms {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} |",
            a.arm,
            a.rag,
            a.problems,
            a.vote_accuracy,
            a.sample_accuracy,
            a.samples,
            a.prompt_tokens_per_problem,
            a.completion_tokens_per_problem,
            a.seconds_per_problem,
            a.examples_per_sample,
            a.searches_per_sample
        );
    }
    println!(
        "\n| arm vs {} | problems | vote acc diff [95% CI] | sample acc diff [95% CI] | only \
         first right / only arm right | McNemar p | verdict |",
        v.versus.first().map_or("first", |x| x.against.as_str())
    );
    println!("|---|---:|---|---|---:|---:|---|");
    let d = |x: &Difference| match x.interval_95 {
        Some(ci) => format!("{:+.3} [{:+.3}, {:+.3}]", x.difference, ci.low, ci.high),
        None => "-".into(),
    };
    for x in &v.versus {
        println!(
            "| {} | {} | {} | {} | {} / {} | {:.4} | {} |",
            x.arm,
            x.problems,
            d(&x.vote_accuracy),
            d(&x.sample_accuracy),
            x.only_first_right,
            x.only_this_right,
            x.mcnemar_p,
            x.verdict
        );
    }
    println!(
        "(paired over problems; intervals: percentile bootstrap, {} resamples, seed {:#x})",
        v.resamples, v.seed
    );
}
