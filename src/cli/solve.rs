//! Command line of the `solve` binary.

use anyhow::{bail, Result};
use clap::{Args, Parser};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::names;
use super::progress::Bars;
use crate::encoder::Device;
use crate::solve::client::{RetryPolicy, Sampling};
use crate::solve::config::parse_answer_range;
use crate::solve::genselect::{SelectConfig, Selector, DEFAULT_CANDIDATES, DEFAULT_MARGIN};
use crate::solve::launch::LaunchSpec;
use crate::solve::prompt::{self, RagSpec, DEFAULT_SYSTEM};
use crate::solve::sandbox::SandboxConfig;
use crate::solve::time_share::ProblemTime;
use crate::solve::tool_protocol::ToolProtocol;
use crate::solve::vote::VoteRule;
use crate::solve::{
    parse_duration, BudgetConfig, ExcludeConfig, Input, OutputConfig, RetrievalConfig,
    SamplingConfig, ServerConfig, SolveConfig, ToolsConfig,
};

/// `--tools`: what the model may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tools {
    None,
    Python,
    Retrieve,
}

crate::named_enum!(Tools { None => "none", Python => "python", Retrieve => "retrieve" });

#[derive(Parser, Debug)]
#[command(
    name = "solve",
    version,
    about = "Solve math problems with a reasoning model behind an OpenAI-compatible server, \
             grounded by retrieved solved problems",
    long_about = "For each problem: retrieve the k nearest solved problems from an exemplar index, \
                  put them in front of the model as few-shot examples, sample N completions, \
                  extract the integer in the last \\boxed{}, vote, and write submission.csv \
                  (id,answer) plus traces.jsonl. Re-running with the same --out resumes. \
                  `solve distill` turns a solved-problem corpus into condensed memories for \
                  --rag format=insight.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct SolveArgs {
    #[command(subcommand)]
    pub command: Option<SolveCommand>,
    /// Problems: .csv, .jsonl or .parquet with `id` and `problem` (an `answer` column enables
    /// --eval). Not used with --serve.
    #[arg(long, required_unless_present = "serve")]
    pub input: Option<PathBuf>,
    /// The --input field that holds the problem [default: the first of problem, question,
    /// prompt, text, else the last user turn of a messages/conversations list].
    #[arg(long, value_name = "NAME")]
    pub problem_field: Option<String>,
    /// The --input field that holds the id [default: id; without one, FILE:LINE].
    #[arg(long, value_name = "NAME")]
    pub id_field: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
    #[command(flatten)]
    pub tool: ToolArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `solve SUBCOMMAND`; without one, `solve` solves problems.
#[derive(clap::Subcommand, Debug)]
pub enum SolveCommand {
    Distill(super::distill::DistillArgs),
}

/// The model server and how requests reach it.
#[derive(Args, Debug)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// OpenAI-compatible base URL. Default: $EXEMPLAR_ENDPOINT, else http://127.0.0.1:8000/v1.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name the server serves.
    #[arg(long, default_value = "nvidia/Llama-3_3-Nemotron-Super-49B-v1")]
    pub model: String,
    /// Bearer token (default: $OPENAI_API_KEY). Never written to traces or logs.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Upper bound on one HTTP request.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Retries per sample on connection errors, timeouts, 429/5xx, malformed or empty replies.
    #[arg(long, default_value_t = 4)]
    pub retries: usize,
    /// First backoff between retries (doubles each time, with jitter).
    #[arg(long, default_value = "0.5", value_parser = parse_duration)]
    pub backoff: Duration,
    /// Start the server with this shell command and stop it on exit, e.g.
    /// "vllm serve nvidia/Llama-3_3-Nemotron-Super-49B-v1 --quantization fp8".
    #[arg(long)]
    pub launch: Option<String>,
    /// How long to wait for a launched server to answer.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub launch_timeout: Duration,
    /// The server's context length in tokens [default: read from the server: vLLM's
    /// /v1/models max_model_len, llama.cpp's /props n_ctx]. Retrieved examples are dropped
    /// (farthest first) or shortened until prompt + --max-tokens fit.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// The solver's tokenizer.json (or its folder) to count prompt tokens exactly [default: the
    /// server's /tokenize, else a conservative estimate of two bytes a token].
    #[arg(long, value_name = "DIR")]
    pub solver_tokenizer: Option<PathBuf>,
}

/// What the model is asked, and how its answers are read and voted.
#[derive(Args, Debug)]
#[command(next_help_heading = "Prompt and sampling")]
pub struct SamplingArgs {
    /// System prompt; the model's reasoning switch ("/think" for Nemotron v1.5).
    #[arg(long, default_value = DEFAULT_SYSTEM)]
    pub system: String,
    /// Send no system message at all.
    #[arg(long)]
    pub no_system: bool,
    /// File with the user-turn template; {problem} is replaced by the problem. The built-in one
    /// asks for the answer in \boxed{}, names --answer-range and says what to do with a result
    /// beyond it.
    #[arg(long)]
    pub prompt_template: Option<PathBuf>,
    /// Sampling temperature of every completion.
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus sampling: tokens within this cumulative probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Tokens one completion may generate (thinking included; tool outputs count too). Lowered
    /// for a problem whose prompt leaves less room in the server's context.
    #[arg(long, default_value_t = 16384)]
    pub max_tokens: usize,
    /// Completions per problem (self-consistency voting).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Requests in flight at once (the server batches them).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop sampling once the leading answer holds this share of the planned samples
    /// (0 = only when it can no longer be overtaken).
    #[arg(long, default_value_t = 0.0)]
    pub agreement: f64,
    /// Stop sampling once this many samples agree on an answer, cancelling those still running
    /// (0 = off; the AIMO 3 winners stopped at 4 of 8).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stop_at: usize,
    /// How the samples' answers combine: `majority` (most weight; code-backed x1.5, truncated
    /// x0.5), `entropy` (each sample also weighs 1 / its mean token entropy),
    /// `count-then-entropy` (most weight, ties to the lower mean entropy); `auto` is
    /// count-then-entropy when the server returns log-probs, else majority.
    #[arg(long, default_value = "auto", value_parser = names::<VoteRule>(VoteRule::NAMES))]
    pub vote: VoteRule,
    /// Token log-probabilities asked for: this many alternatives per token, for each sample's
    /// mean token entropy (0 = ask for none; the vote is then the majority).
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_logprobs: usize,
    /// What decides a split vote: `genselect` sends the top candidates' solutions back to the
    /// model and takes the one it names as best; `none` keeps the vote's answer.
    #[arg(long, default_value = "none", value_parser = names::<Selector>(Selector::NAMES))]
    pub select: Selector,
    /// With --select: run it when the vote margin ((leader - runner-up) / total weight) is
    /// below this.
    #[arg(long, default_value_t = DEFAULT_MARGIN, value_name = "F")]
    pub select_margin: f64,
    /// With --select: candidate answers shown at most (the best of each), best first.
    #[arg(long, default_value_t = DEFAULT_CANDIDATES, value_name = "N")]
    pub select_candidates: usize,
    /// Valid answers, inclusive, as MIN..MAX.
    #[arg(long, default_value = "0..99999", value_parser = parse_answer_range)]
    pub answer_range: RangeInclusive<u64>,
    /// Answer written when no sample gave a valid one (recorded as a fallback).
    #[arg(long, default_value_t = 0)]
    pub fallback: u64,
    /// Ask the server for reproducible sampling: sample i of every problem (and every
    /// --compare-rag arm) sends `seed` S+i [default: no seed].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

/// Which solved problems go in front of the model.
#[derive(Args, Debug)]
#[command(next_help_heading = "Retrieval")]
pub struct RetrievalArgs {
    /// Index built by `embed index build` (needed unless --rag k=0).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Retrieval:
    /// `k=N[,min-score=S][,exclude-above=S][,format=chat|context|problem|insight][,share=S][,search=on|off]`;
    /// k=0 is the no-retrieval control. exclude-above drops hits scoring above it
    /// (near-duplicates of the problem itself). format: `chat` (each neighbour's problem and
    /// solution as a user/assistant turn), `context` (the same in one reference block),
    /// `problem` (problems and final answers, no solutions), `insight` (problems and the
    /// memories `solve distill` wrote; a record without one is sent as `problem`). For
    /// reasoning models keep k at 1-3 (docs/memory.md). share=S puts the examples into that
    /// share of a problem's samples (spread evenly by sample index) and none into the rest.
    /// search=on|off offers the `search_similar_problems` tool in this arm [default: as --tools
    /// says].
    #[arg(long, default_value = "k=4")]
    pub rag: RagSpec,
    /// Also run this setting on the same problems, seeds and share of the time budget, and
    /// compare it with --rag: accuracy by vote and per sample, tokens, seconds, examples sent,
    /// paired bootstrap intervals and the exact McNemar p-value (needs an answer column).
    /// Repeat for more arms; each is compared with --rag.
    #[arg(long, value_name = "SPEC")]
    pub compare_rag: Vec<RagSpec>,
    /// Write the --compare-rag verdict (every number of its tables) to this JSON file.
    #[arg(long, value_name = "FILE", requires = "compare_rag")]
    pub compare_json: Option<PathBuf>,
    /// Embedding model folder, if it moved since the index was built.
    #[arg(long)]
    pub embed_model: Option<String>,
    /// Device for query embedding.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Never retrieve the problems of this file (ids and texts: csv, jsonl or parquet, usually
    /// the --input): an index record with the same id, the same normalised text (case,
    /// punctuation and spacing folded) or a word 5-gram overlap of at least --exclude-overlap
    /// is left out of every retrieval; how many is logged and traced.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    /// Word 5-gram Jaccard overlap at or above which an index record is the same problem as
    /// one of --exclude (1 = identical n-grams only).
    #[arg(long, default_value_t = crate::solve::exclude::DEFAULT_OVERLAP)]
    pub exclude_overlap: f64,
}

/// Code execution and the thinking budget.
#[derive(Args, Debug)]
#[command(next_help_heading = "Tools")]
pub struct ToolArgs {
    /// What the model may use, comma-separated: `python` runs each complete fenced python
    /// block (and, see --tool-protocol, each OpenAI tool call) in a per-sample sandbox
    /// (persistent interpreter, time/memory/process limits, no network where the OS allows) and
    /// shows it the output; `retrieve` offers `search_similar_problems(query, k)` (or a fenced
    /// search block) that searches --index with --rag's filters and returns the neighbours;
    /// `none` turns them off. E.g. `--tools python,retrieve`; with `--rag k=0 --tools
    /// retrieve` the model alone decides when to look.
    #[arg(long, default_value = "none", value_delimiter = ',',
          value_parser = names::<Tools>(Tools::NAMES))]
    pub tools: Vec<Tools>,
    /// How the model calls the sandbox: `openai` offers a `python` function as OpenAI `tools`
    /// and runs its tool calls; `fenced` runs ```python blocks in the text; `auto` does both,
    /// and falls back to fenced blocks for the rest of the run if the server refuses `tools`.
    #[arg(long, default_value = "auto", value_parser = names::<ToolProtocol>(ToolProtocol::NAMES))]
    pub tool_protocol: ToolProtocol,
    /// Code executions and searches (blocks and tool calls) per sample at most.
    #[arg(long, default_value_t = 8)]
    pub max_tool_calls: usize,
    /// Characters of one tool output shown to the model (head and tail kept).
    #[arg(long, default_value_t = 2000)]
    pub tool_output_chars: usize,
    /// Wall-clock limit of one code block; then the interpreter is killed and restarted.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tool_timeout: Duration,
    /// Address space of every sandbox process, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub tool_memory_mb: u64,
    /// Processes and threads per sandbox, where the system can enforce it.
    #[arg(long, default_value_t = 64)]
    pub tool_max_processes: u64,
    /// Python for the sandbox [default: $EXEMPLAR_PYTHON, else python3 on PATH].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Tokens a sample may think; then its thinking is closed for it and the answer asked for.
    #[arg(long)]
    pub think_budget: Option<usize>,
}

/// Time, outputs and the mode of the run.
#[derive(Args, Debug)]
#[command(next_help_heading = "Time, output and mode")]
pub struct RunArgs {
    /// Submission (id,answer): CSV, or Parquet (id: string, answer: int64, the AIMO 3 gateway's
    /// format) when the name ends in .parquet.
    #[arg(long, default_value = "submission.csv")]
    pub out: PathBuf,
    /// Traces, one JSON line per problem [default: traces.jsonl beside --out].
    #[arg(long)]
    pub traces: Option<PathBuf>,
    /// Total time for all problems, e.g. 5h or 90m; unused time moves to later problems.
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<Duration>,
    /// Clamp each problem's share of the time left (time left / problems left) to MIN..MAX,
    /// e.g. 300s..900s; either side may be left out. Without --time-budget, MAX alone limits
    /// each problem.
    #[arg(long, value_name = "MIN..MAX")]
    pub problem_time: Option<ProblemTime>,
    /// Send nothing; write the messages that would be sent to the traces.
    #[arg(long)]
    pub dry_run: bool,
    /// Print accuracy, per-source accuracy and vote margins (needs an answer column).
    #[arg(long)]
    pub eval: bool,
    /// Start over even though the traces were made with other settings (they are moved aside
    /// to traces.jsonl.old-TIME, not deleted). Without it such a rerun is refused.
    #[arg(long)]
    pub force: bool,
    /// No progress bars; log lines and the summary only.
    #[arg(long)]
    pub quiet: bool,
    /// Line mode: read `{"id": ..., "problem": ...}` lines on stdin, answer each with
    /// `{"id": ..., "answer": N, "seconds": S}` on stdout; the model and index load once.
    #[arg(long)]
    pub serve: bool,
    /// With --serve: problems expected, to share --time-budget (time left / problems left).
    #[arg(long, default_value_t = 50)]
    pub expected_problems: usize,
    /// Print one JSON object on stdout at the end: problems, answered, fallbacks, failed,
    /// examples sent and dropped, seconds, the output paths, and per-arm accuracy.
    #[arg(long)]
    pub json: bool,
}

/// Refuse settings that cannot run, before anything is loaded.
fn check_counts(a: &SolveArgs) -> Result<()> {
    let s = &a.sampling;
    if s.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if s.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&s.agreement) {
        bail!(
            "--agreement {}: expected a share between 0 and 1",
            s.agreement
        );
    }
    if a.run.serve && !a.retrieval.compare_rag.is_empty() {
        bail!("--serve answers with one setting; --compare-rag needs a whole --input");
    }
    if a.tool.think_budget == Some(0) {
        bail!("--think-budget must be at least 1 token");
    }
    if !(0.0..=1.0).contains(&s.select_margin) {
        bail!(
            "--select-margin {}: expected a vote margin between 0 and 1",
            s.select_margin
        );
    }
    if s.select_candidates < 2 {
        bail!("--select-candidates must be at least 2 (there is nothing to select among one)");
    }
    if s.top_logprobs > 20 {
        bail!(
            "--top-logprobs {}: at most 20 (what OpenAI-compatible servers accept)",
            s.top_logprobs
        );
    }
    Ok(())
}

pub fn run(mut a: SolveArgs) -> Result<()> {
    if let Some(SolveCommand::Distill(d)) = a.command.take() {
        return super::distill::run(d, Instant::now());
    }
    let cfg = config(&a)?;
    let summary = crate::solve::run(&cfg, Arc::new(Bars::new(a.run.quiet)))?;
    if a.run.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    summary.check()
}

/// The checked run the flags describe. Also how a binding (Python's `exemplar.Solver`) turns
/// its keyword arguments into a [`SolveConfig`], so that defaults and messages are the CLI's.
pub fn config(a: &SolveArgs) -> Result<SolveConfig> {
    // The time budget counts from here: model and index loading and the launch included.
    let started = Instant::now();
    check_counts(a)?;
    let (r, run) = (&a.retrieval, &a.run);
    let cfg = SolveConfig {
        input: match (&a.input, run.serve) {
            (_, true) => Input::Serve,
            (Some(path), false) => Input::File(path.clone()),
            (None, false) => bail!("--input is needed (or --serve)"),
        },
        fields: crate::solve::ProblemFields {
            problem: a.problem_field.clone(),
            id: a.id_field.clone(),
        },
        server: server_config(&a.server, &run.out),
        sampling: sampling_config(&a.sampling)?,
        retrieval: RetrievalConfig {
            index: r.index.clone(),
            rag: r.rag.clone(),
            compare_rag: r.compare_rag.clone(),
            embed_model: r.embed_model.clone(),
            device: r.device,
            exclude: exclude_config(r)?,
        },
        tools: ToolsConfig {
            sandbox: sandbox_config(&a.tool)?,
            retrieve: a.tool.tools.contains(&Tools::Retrieve),
            max_tool_calls: a.tool.max_tool_calls,
            protocol: a.tool.tool_protocol,
            think_budget: a.tool.think_budget,
        },
        budget: BudgetConfig {
            time_budget: run.time_budget,
            started,
            expected_problems: run.expected_problems.max(1),
            problem_time: run.problem_time.unwrap_or_default(),
        },
        output: OutputConfig {
            traces: run
                .traces
                .clone()
                .unwrap_or_else(|| run.out.with_file_name("traces.jsonl")),
            out: run.out.clone(),
            eval: run.eval,
            compare_json: r.compare_json.clone(),
            dry_run: run.dry_run,
            force: run.force,
        },
    };
    Ok(cfg)
}

/// `--exclude FILE --exclude-overlap J`, checked.
fn exclude_config(r: &RetrievalArgs) -> Result<Option<ExcludeConfig>> {
    if !(0.0..=1.0).contains(&r.exclude_overlap) {
        bail!(
            "--exclude-overlap {}: expected a share between 0 and 1",
            r.exclude_overlap
        );
    }
    Ok(r.exclude.as_ref().map(|p| ExcludeConfig {
        problems: p.clone(),
        overlap: r.exclude_overlap,
    }))
}

/// The server, its credentials and how requests to it are retried; a launched server logs
/// beside `out`.
pub(super) fn server_config(a: &ServerArgs, out: &Path) -> ServerConfig {
    ServerConfig {
        endpoint: a
            .endpoint
            .clone()
            .or_else(|| std::env::var("EXEMPLAR_ENDPOINT").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8000/v1".into()),
        model: a.model.clone(),
        api_key: a
            .api_key
            .clone()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok()),
        retry: RetryPolicy {
            retries: a.retries,
            request_timeout: a.request_timeout,
            backoff: a.backoff,
        },
        launch: a.launch.as_ref().map(|cmd| LaunchSpec {
            command: cmd.clone(),
            log: out.with_file_name("server.log"),
            timeout: a.launch_timeout,
        }),
        max_model_len: a.max_model_len,
        solver_tokenizer: a.solver_tokenizer.clone(),
    }
}

fn sampling_config(a: &SamplingArgs) -> Result<SamplingConfig> {
    Ok(SamplingConfig {
        system: (!a.no_system).then(|| a.system.clone()),
        user_template: user_template(a.prompt_template.as_deref(), &a.answer_range)?,
        params: Sampling {
            temperature: a.temperature,
            top_p: a.top_p,
            max_tokens: a.max_tokens,
            top_logprobs: (a.top_logprobs > 0).then_some(a.top_logprobs),
            seed: a.seed,
        },
        samples: a.samples,
        concurrency: a.concurrency,
        agreement: a.agreement,
        stop_at: a.stop_at,
        vote: a.vote,
        select: SelectConfig {
            selector: a.select,
            margin: a.select_margin,
            candidates: a.select_candidates,
        },
        answer_range: a.answer_range.clone(),
        fallback: a.fallback,
    })
}

/// `--tools python` settings; None with `--tools none`.
fn sandbox_config(a: &ToolArgs) -> Result<Option<SandboxConfig>> {
    if a.tools.contains(&Tools::None) && a.tools.len() > 1 {
        bail!("--tools none cannot be combined with other tools");
    }
    if !a.tools.contains(&Tools::Python) {
        return Ok(None);
    }
    if a.tool_output_chars < 100 {
        bail!("--tool-output-chars {}: at least 100", a.tool_output_chars);
    }
    let timeout = a.tool_timeout;
    if timeout.is_zero() {
        bail!("--tool-timeout must be above 0");
    }
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("EXEMPLAR_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| "python3".into());
    Ok(Some(SandboxConfig {
        python,
        timeout,
        memory_bytes: a.tool_memory_mb.max(64) << 20,
        max_processes: a.tool_max_processes.max(4),
        output_chars: a.tool_output_chars,
        // A backstop for processes that outlive their call: every call's limit, plus slack.
        cpu_seconds: (timeout.as_secs() + 1) * (a.max_tool_calls as u64 + 1) + 30,
    }))
}

fn user_template(path: Option<&Path>, range: &RangeInclusive<u64>) -> Result<String> {
    let Some(p) = path else {
        return Ok(prompt::default_user_template(range));
    };
    let t = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    if !t.contains("{problem}") {
        bail!(
            "{}: the template has no {{problem}} placeholder",
            p.display()
        );
    }
    Ok(t)
}
