//! The solving loop's figures for one arm, from its trace lines: which vote rule decided the
//! problems, how confident the samples were, why sampling stopped, what the selector did, and
//! the time each problem was given against the time it used. Printed under the `--eval` table
//! and serialisable as one field of the run's `--json` summary.

use serde::Serialize;
use std::collections::BTreeMap;

use super::config::SolveConfig;
use super::problems::Problem;
use super::trace::Trace;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoopSummary {
    /// `--vote` as asked.
    pub vote: String,
    /// Problems per rule actually applied (`majority` where log-probs were missing).
    pub voted_by: BTreeMap<String, usize>,
    pub logprobs: LogprobFigures,
    /// `--stop-at N` (0: off).
    pub stop_at: usize,
    /// Problems per reason sampling stopped (`all samples`, `settled`, `stop-at`, ...).
    pub stopped: BTreeMap<String, usize>,
    pub selector: SelectorFigures,
    pub time: TimeFigures,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogprobFigures {
    /// `top_logprobs` asked for (None: log-probs off).
    pub top_logprobs: Option<usize>,
    /// Samples that came back, and those with log-probs.
    pub samples: usize,
    pub samples_with: usize,
    /// Mean over samples of their mean token entropy.
    pub mean_entropy: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SelectorFigures {
    /// `--select` (`none`, `genselect`).
    pub method: String,
    pub threshold: Option<f64>,
    /// Problems where it ran, where its choice differed from the vote, and (of those scored)
    /// where the changed answer was right and where the vote had been right.
    pub runs: usize,
    pub changed: usize,
    pub changed_right: usize,
    pub changed_wrong_vote_right: usize,
    /// Scored problems where it ran, and where its answer was right.
    pub scored_runs: usize,
    pub right_when_ran: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeFigures {
    /// `--problem-time` as given (None: the even share only).
    pub problem_time: Option<String>,
    pub planned_seconds: f64,
    pub used_seconds: f64,
    /// In input order, answered problems only.
    pub problems: Vec<ProblemTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProblemTime {
    pub id: String,
    /// None without a time budget (and without a --problem-time maximum).
    pub planned_seconds: Option<f64>,
    pub used_seconds: f64,
}

impl LoopSummary {
    /// The figures of one arm's answered problems, in input order.
    pub fn of(cfg: &SolveConfig, problems: &[Problem], done: &BTreeMap<String, Trace>) -> Self {
        let s = &cfg.sampling;
        let pt = cfg.budget.problem_time;
        let mut out = LoopSummary {
            vote: s.vote.name().into(),
            stop_at: s.stop_at,
            logprobs: LogprobFigures {
                top_logprobs: s.params.top_logprobs,
                ..Default::default()
            },
            selector: SelectorFigures {
                method: s.select.selector.name().into(),
                threshold: (s.select.selector != super::genselect::Selector::None)
                    .then_some(s.select.margin),
                ..Default::default()
            },
            time: TimeFigures {
                problem_time: (pt.min.is_some() || pt.max.is_some()).then(|| pt.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut entropies = Vec::new();
        for t in problems.iter().filter_map(|p| done.get(&p.id)) {
            out.add(t, &mut entropies);
        }
        out.logprobs.mean_entropy =
            (!entropies.is_empty()).then(|| entropies.iter().sum::<f64>() / entropies.len() as f64);
        out
    }

    fn add(&mut self, t: &Trace, entropies: &mut Vec<f64>) {
        if let Some(rule) = &t.vote_rule {
            *self.voted_by.entry(rule.clone()).or_default() += 1;
        }
        if let Some(why) = &t.verdict.stopped {
            *self.stopped.entry(why.clone()).or_default() += 1;
        }
        for s in t.samples.iter().filter(|s| s.text.is_some()) {
            self.logprobs.samples += 1;
            if let Some(c) = &s.confidence {
                self.logprobs.samples_with += 1;
                entropies.extend(c.mean_entropy);
            }
        }
        if let Some(sel) = t.select.as_ref().filter(|s| s.ran) {
            let f = &mut self.selector;
            f.runs += 1;
            f.changed += usize::from(sel.changed);
            if let Some(e) = t.verdict.expected {
                f.scored_runs += 1;
                f.right_when_ran += usize::from(t.verdict.answer == Some(e));
                f.changed_right += usize::from(sel.changed && t.verdict.answer == Some(e));
                f.changed_wrong_vote_right += usize::from(sel.changed && sel.vote_answer == e);
            }
        }
        self.time.planned_seconds += t.timing.planned_seconds.unwrap_or(0.0);
        self.time.used_seconds += t.timing.seconds;
        self.time.problems.push(ProblemTime {
            id: t.id.clone(),
            planned_seconds: t.timing.planned_seconds,
            used_seconds: t.timing.seconds,
        });
    }

    /// The lines under the `--eval` table for arm `name`.
    pub fn eval_lines(&self, name: &str) -> Vec<String> {
        let count = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lp = &self.logprobs;
        let entropy = lp
            .mean_entropy
            .map_or("-".into(), |h| format!("{h:.3} nats"));
        let mut lines = vec![
            format!(
                "  {name:<8} vote {} (applied: {}); log-probs on {}/{} samples, mean entropy {entropy}",
                self.vote,
                count(&self.voted_by),
                lp.samples_with,
                lp.samples
            ),
            format!("  {name:<8} stopped: {}", count(&self.stopped)),
        ];
        let f = &self.selector;
        if let Some(th) = f.threshold {
            lines.push(format!(
                "  {name:<8} selector {} (margin < {th}): ran {}, changed {}, changed and right \
                 {}, changed a right vote {}, right when ran {}/{}",
                f.method,
                f.runs,
                f.changed,
                f.changed_right,
                f.changed_wrong_vote_right,
                f.right_when_ran,
                f.scored_runs
            ));
        }
        let tf = &self.time;
        if tf.problems.iter().any(|p| p.planned_seconds.is_some()) {
            let each: Vec<String> = tf
                .problems
                .iter()
                .map(|p| {
                    let planned = p.planned_seconds.map_or("-".into(), |s| format!("{s:.1}"));
                    format!("{} {planned}/{:.1}", p.id, p.used_seconds)
                })
                .collect();
            lines.push(format!(
                "  {name:<8} time planned/used s{}: total {:.1}/{:.1}; {}",
                tf.problem_time
                    .as_ref()
                    .map_or(String::new(), |c| format!(" (--problem-time {c})")),
                tf.planned_seconds,
                tf.used_seconds,
                each.join(", ")
            ));
        }
        lines
    }
}
