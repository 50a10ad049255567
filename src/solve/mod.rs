//! `solve`: retrieval-augmented solving against an OpenAI-compatible server.
//!
//! ```text
//! problems ─► (per arm) resume from traces ─► embed queries ─► per problem (Arm::solve_problem):
//!     retrieve k neighbours ─► fit the prompt into the context ─► sample N (streamed,
//!     cancellable, with token log-probs; with --tools python each sample may stop at a code
//!     block, run it in its sandbox and continue; with --think-budget a long thinking is closed
//!     for it; --stop-at N agreeing answers ends it) ─► vote (--vote: majority, entropy,
//!     count-then-entropy) ─► on a split vote, --select genselect ─► record a trace line ─►
//!     rewrite submission.csv
//! ```
//!
//! The retriever loads before a `--launch`ed server (which may take the GPU); `--time-budget`
//! counts from process start; every finished problem is in the traces and in submission.csv
//! at once, so a kill loses at most the problem in flight. `--serve` and programs answer one
//! problem at a time through a [`Solver`], which loads the same things once and runs the same
//! per-problem sequence.
//!
//! Modules, by room:
//! - the run: config.rs (what a run is asked: server, sampling, retrieval, tools, budget,
//!   output), duration.rs (`5h`, `90m`), time_share.rs (each problem's share of the time,
//!   `--problem-time`), resources.rs (what loads once), arm.rs (one retrieval
//!   setting; `solve_problem`, the per-problem sequence, and the batch loop), solver.rs (the
//!   one-problem-at-a-time API), serve.rs (`--serve`'s stdin/stdout loop), report.rs
//!   (submission file, summary, `--json`, `--eval` table), problems.rs (reading `--input`,
//!   finding its problem and id fields), preflight.rs (checks before the first problem: values,
//!   the server, the model), outcome.rs (answered, fallback, out of time or failed; what a
//!   re-run redoes), loop_summary.rs (vote rule, selector and time figures of an arm), compare.rs (the
//!   `--compare-rag` verdict) and stats.rs (its bootstrap and McNemar test).
//! - the prompt: retrieve.rs (neighbours), exclude.rs (`--exclude`: twins of the test
//!   problems), memory.rs (memory forms: what a neighbour shows), prompt.rs (messages, `--rag`),
//!   fit.rs (into the server's context). distill.rs (`solve distill`) writes the insights the
//!   `insight` form shows; retrieve_tool.rs (`--tools retrieve`: neighbours on the model's
//!   request).
//! - the model: client/ (OpenAI wire types, the retrying transport, SSE, tool-call assembly),
//!   launch.rs (`--launch`), sample.rs (N samples, C in flight, early stop), rounds.rs (the
//!   rounds of one sample: code blocks, tool calls, tool outputs, the thinking budget),
//!   transcript.rs (fences, thinking tags, echoes in a sample's text), tool_protocol.rs
//!   (`--tool-protocol`: the `tools` offer, its fallback, reading a call's code), sandbox/ (the
//!   Python sandbox, its isolation layers and system calls).
//! - the answer: answer.rs (the boxed integer), confidence.rs (token entropy from log-probs),
//!   vote.rs (weights and `--vote` rules), genselect.rs (`--select genselect` for split votes),
//!   trace.rs (trace lines, the resume key).

pub mod answer;
mod arm;
pub mod client;
mod compare;
pub mod confidence;
pub mod config;
pub mod distill;
pub mod duration;
pub mod exclude;
pub mod fit;
pub mod genselect;
pub mod launch;
pub mod loop_summary;
pub mod memory;
pub mod outcome;
pub mod preflight;
pub mod problems;
pub mod prompt;
mod report;
mod resources;
pub mod retrieve;
pub mod retrieve_tool;
pub mod rounds;
pub mod sample;
pub mod sandbox;
mod serve;
pub mod solver;
pub mod stats;
mod submission_parquet;
pub mod time_share;
pub mod tool_protocol;
pub mod trace;
pub mod transcript;
pub mod vote;

use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::progress::Progress;
use arm::Arm;
use resources::Resources;

pub use config::{
    BudgetConfig, ExcludeConfig, Input, OutputConfig, RetrievalConfig, SamplingConfig,
    ServerConfig, SolveConfig, ToolsConfig,
};
pub use duration::parse_duration;
pub use problems::{read_problems, ProblemFields};
pub use report::{ArmResult, ArmSummary, Summary};
pub use solver::{Solved, Solver};

/// Run `solve` as configured: a whole problems file, or `--serve`'s stdin loop. The summary
/// says what became of the problems; [`Summary::check`] turns failed ones into an error.
pub fn run(cfg: &SolveConfig, progress: Arc<dyn Progress>) -> Result<Summary> {
    preflight::check_settings(cfg)?;
    match &cfg.input {
        Input::File(path) => run_batch(cfg, path, progress),
        Input::Serve | Input::Calls => {
            let solver = Solver::open(cfg.clone(), progress.clone())?;
            serve::session(solver, progress.as_ref())
        }
    }
}

/// Every problem of the file, per arm (`--rag`, then `--compare-rag`), then the report.
fn run_batch(cfg: &SolveConfig, input: &Path, progress: Arc<dyn Progress>) -> Result<Summary> {
    let problems = read_problems(input, &cfg.fields, progress.as_ref())?;
    preflight::check_eval(cfg, &problems, input)?;
    resources::set_aside_if_forced(cfg, progress.as_ref())?;
    let res = Resources::load(cfg, progress)?;
    let arms = arm_names(cfg);
    let end = cfg.budget.end();
    let (mut results, mut runs) = (Vec::new(), Vec::new());
    for (i, (name, spec)) in arms.iter().enumerate() {
        // Each arm gets an equal share of the time left, so the comparison is fair.
        let arm_end = end.map(|e| {
            let now = Instant::now();
            now + e.saturating_duration_since(now) / (arms.len() - i) as u32
        });
        let arm = Arm::new(cfg, &res, name, spec, arm_end)?;
        // Only the first arm's answers go into the submission.
        let submission = (i == 0).then_some(cfg.output.out.as_path());
        results.push((
            name.to_string(),
            spec.clone(),
            arm.run_batch(&problems, submission)?,
        ));
        runs.push(compare::ArmRun {
            name: name.clone(),
            spec: spec.clone(),
            key: arm.key.clone(),
        });
    }
    let summary = report::report(cfg, &problems, &results)?;
    if runs.len() > 1 && !cfg.output.dry_run {
        let v = compare::verdict(&cfg.output.traces, &problems, &runs)?;
        compare::print(&v);
        if let Some(path) = &cfg.output.compare_json {
            crate::fsio::write_atomically(path, |w| Ok(serde_json::to_writer_pretty(w, &v)?))?;
        }
    }
    Ok(summary)
}

/// The arms of a batch run and their names in the traces: `rag` (from `--rag`), then
/// `control`, `control-2`, ... (from each `--compare-rag`).
fn arm_names(cfg: &SolveConfig) -> Vec<(String, prompt::RagSpec)> {
    let arms = cfg.retrieval.arms(&cfg.tools);
    arms.into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = match i {
                0 => "rag".to_string(),
                1 => "control".to_string(),
                _ => format!("control-{i}"),
            };
            (name, spec)
        })
        .collect()
}
