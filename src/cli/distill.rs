//! `solve distill`: condensed memories of a solved-problem corpus (see crate::solve::distill).

use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::progress::Bars;
use super::solve::ServerArgs;
use crate::solve::client::Sampling;
use crate::solve::distill::corpus::FieldChoice;
use crate::solve::distill::reply::{DEFAULT_TEMPLATE, PLACEHOLDERS};
use crate::solve::distill::{self, DistillConfig, DistillSummary};
use crate::solve::parse_duration;

/// Turn a solved-problem corpus into condensed memories: per record, one request to the solver
/// server for the key idea, the technique and the trap (no final answer); the corpus is written
/// back with an `insight` field for `--rag format=insight`. Resumable (re-run the same command;
/// failed records are tried again) and concurrent.
#[derive(Args, Debug)]
#[command(
    mut_arg("max_model_len", |a| a.hide(true)),
    mut_arg("solver_tokenizer", |a| a.hide(true))
)]
pub struct DistillArgs {
    /// Solved problems: .jsonl, .csv or .parquet. Fields are detected as `embed extract` does
    /// (id; problem, question, prompt, text or a chat's last user turn) plus the solution
    /// (solution, generated_solution, response, output, completion or a chat's last assistant
    /// turn) and the final answer (answer, expected_answer, final_answer, else the solution's
    /// last \boxed{}).
    #[arg(long)]
    pub input: PathBuf,
    /// The corpus with an `insight` field: .jsonl or .parquet [default: INPUT-NAME.insights
    /// with the input's extension (.jsonl for .csv)]. Its log, which a re-run resumes from, is
    /// OUT.distill.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// File with the request template; {problem}, {solution}, {answer} and {words} are filled
    /// in [default: the template in docs/memory.md].
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Words the memory may have at most (asked of the model; a reply over twice as long is
    /// cut and logged).
    #[arg(long, default_value_t = 60)]
    pub words: usize,
    /// System prompt (none by default; e.g. "/no_think" for a model that should not reason).
    #[arg(long)]
    pub system: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus sampling: tokens within this cumulative probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Tokens one reply may generate (a reasoning model's thinking included).
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Field holding the id [default: id, else FILE:LINE ids].
    #[arg(long)]
    pub id_field: Option<String>,
    /// Field holding the problem [default: detected].
    #[arg(long)]
    pub problem_field: Option<String>,
    /// Field holding the worked solution [default: detected].
    #[arg(long)]
    pub solution_field: Option<String>,
    /// Field holding the final answer [default: detected].
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Total time; records not started by then are left for a re-run.
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<Duration>,
    /// Start over although the log was made with other settings (it is moved aside).
    #[arg(long)]
    pub force: bool,
    /// No progress bar; log lines and the summary only.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `corpus.jsonl` → `corpus.insights.jsonl`; a CSV input gives JSON lines.
fn default_out(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy().into_owned());
    let ext = match input.extension().and_then(|e| e.to_str()) {
        Some("parquet") => "parquet",
        _ => "jsonl",
    };
    input.with_file_name(format!("{stem}.insights.{ext}"))
}

fn template(path: Option<&Path>) -> Result<String> {
    let Some(p) = path else {
        return Ok(DEFAULT_TEMPLATE.to_string());
    };
    let t = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    if !t.contains("{solution}") {
        bail!(
            "{}: the template has no {{solution}} placeholder (placeholders: {})",
            p.display(),
            PLACEHOLDERS.map(|n| format!("{{{n}}}")).join(", ")
        );
    }
    Ok(t)
}

pub fn run(a: DistillArgs, started: Instant) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.input));
    let cfg = DistillConfig {
        input: a.input.clone(),
        server: super::solve::server_config(&a.server, &out),
        out,
        fields: FieldChoice {
            id: a.id_field,
            problem: a.problem_field,
            solution: a.solution_field,
            answer: a.answer_field,
        },
        template: template(a.template.as_deref())?,
        system: a.system,
        words: a.words,
        sampling: Sampling {
            temperature: a.temperature,
            top_p: a.top_p,
            max_tokens: a.max_tokens,
            seed: None,
            top_logprobs: None,
        },
        concurrency: a.concurrency,
        time_budget: a.time_budget,
        started,
        force: a.force,
    };
    let bars = Bars::new(a.quiet);
    let s = distill::run(&cfg, &bars)?;
    report(&s)
}

/// The summary on stderr; an error (exit status 1) when records are left without an insight.
fn report(s: &DistillSummary) -> Result<()> {
    eprintln!(
        "distill: {} records: {} distilled now, {} from earlier runs, {} failed, {} not started; \
         {} replies restated the final answer (replaced by [answer]); wrote {} (log {})",
        s.records,
        s.distilled,
        s.resumed,
        s.failed.len(),
        s.not_started,
        s.redacted,
        s.out.display(),
        s.log.display()
    );
    if s.missing() == 0 {
        return Ok(());
    }
    let shown: Vec<String> = s
        .failed
        .iter()
        .take(5)
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    bail!(
        "{} records have no insight yet ({} failed{}{}); re-run the same command to try them \
         again (failures are in {})",
        s.missing(),
        s.failed.len(),
        if shown.is_empty() {
            String::new()
        } else {
            format!(": {}", shown.join("; "))
        },
        if s.failed.len() > 5 { ", ..." } else { "" },
        s.log.display()
    )
}
