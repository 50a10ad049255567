//! What a `solve` run is asked to do, in small typed parts the command line (or a binding)
//! fills: where the problems come from, the server, sampling, retrieval, tools, the time
//! budget and the outputs. Values are parsed and checked before they get here.

use anyhow::{bail, Result};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::client::{RetryPolicy, Sampling};
use super::genselect::SelectConfig;
use super::launch::LaunchSpec;
use super::prompt::RagSpec;
use super::sandbox::SandboxConfig;
use super::time_share::ProblemTime;
use super::tool_protocol::ToolProtocol;
use super::vote::VoteRule;

#[derive(Debug, Clone)]
pub struct SolveConfig {
    pub input: Input,
    /// Which fields of `--input` hold the problem and its id (detected when unset).
    pub fields: super::problems::ProblemFields,
    pub server: ServerConfig,
    pub sampling: SamplingConfig,
    pub retrieval: RetrievalConfig,
    pub tools: ToolsConfig,
    pub budget: BudgetConfig,
    pub output: OutputConfig,
}

/// Where the problems come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `--input`: a csv / jsonl / parquet file, solved as a batch.
    File(PathBuf),
    /// `--serve`: one JSON line per problem on stdin.
    Serve,
    /// Handed over one at a time by a program through [`super::Solver`].
    Calls,
}

impl Input {
    /// Problems arrive one at a time (no file to read, hash or tally).
    pub fn one_by_one(&self) -> bool {
        !matches!(self, Input::File(_))
    }
}

/// The model server and how requests to it are made.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub endpoint: String,
    pub model: String,
    /// Bearer token; never written to traces or logs.
    pub api_key: Option<String>,
    pub retry: RetryPolicy,
    /// `--launch`: start the server and stop it on exit.
    pub launch: Option<LaunchSpec>,
    /// The server's context length, when it cannot be read from the server.
    pub max_model_len: Option<usize>,
    /// The solver's tokenizer.json (or its folder), for exact prompt counts.
    pub solver_tokenizer: Option<PathBuf>,
}

/// What is asked of the model per problem, and how its answers are read and voted.
#[derive(Debug, Clone)]
pub struct SamplingConfig {
    /// The system message (None: send none).
    pub system: Option<String>,
    /// The user turn; `{problem}` is replaced by the problem.
    pub user_template: String,
    pub params: Sampling,
    /// Completions per problem.
    pub samples: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Stop once the leader holds this share of the planned samples (0: when it cannot be
    /// overtaken).
    pub agreement: f64,
    /// `--stop-at N`: stop once N samples agree on an answer (0: off).
    pub stop_at: usize,
    /// `--vote`: how the samples' answers combine.
    pub vote: VoteRule,
    /// `--select`: what decides a split vote.
    pub select: SelectConfig,
    pub answer_range: RangeInclusive<u64>,
    /// Answer written when no sample gave a valid one.
    pub fallback: u64,
}

/// Which solved problems go in front of the model.
#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    /// Index built by `embed index build` (needed when any arm has k > 0).
    pub index: Option<PathBuf>,
    pub rag: RagSpec,
    /// More arms on the same problems, seeds and budget share, compared with the first.
    pub compare_rag: Vec<RagSpec>,
    /// Embedding model folder, if it moved since the index was built.
    pub embed_model: Option<String>,
    pub device: crate::encoder::Device,
    /// `--exclude`: records that are the same problem as one of these are never retrieved.
    pub exclude: Option<ExcludeConfig>,
}

/// `--exclude FILE --exclude-overlap J`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcludeConfig {
    /// A problems file (ids and texts).
    pub problems: PathBuf,
    /// Word n-gram Jaccard overlap at or above which a record is the same problem.
    pub overlap: f64,
}

impl RetrievalConfig {
    /// Whether any arm retrieves or offers the search tool (and so needs the index).
    pub fn retrieves(&self, tools: &ToolsConfig) -> bool {
        self.arms(tools)
            .iter()
            .any(|s| s.k > 0 || s.search == Some(true))
    }

    /// Every arm's setting, `--rag` first, with `search` settled by `--tools retrieve` where
    /// the spec leaves it open.
    pub fn arms(&self, tools: &ToolsConfig) -> Vec<RagSpec> {
        std::iter::once(&self.rag)
            .chain(&self.compare_rag)
            .map(|s| RagSpec {
                search: s.search.unwrap_or(tools.retrieve).then_some(true),
                ..s.clone()
            })
            .collect()
    }
}

/// Code execution and the thinking budget.
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    /// `--tools python`: the sandbox every sample gets.
    pub sandbox: Option<SandboxConfig>,
    /// `--tools retrieve`: offer `search_similar_problems` (arms may say `search=on|off`).
    pub retrieve: bool,
    pub max_tool_calls: usize,
    /// `--tool-protocol`: OpenAI tool calls, fenced blocks, or both.
    pub protocol: ToolProtocol,
    /// `--think-budget N`: streamed tokens before the thinking is closed for it.
    pub think_budget: Option<usize>,
}

/// Time: the whole run's budget, counted from `started`, shared out problem by problem.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Counted from `started`, model and index loading and the server launch included.
    pub time_budget: Option<Duration>,
    pub started: Instant,
    /// Problems expected when they come one at a time (`--serve`, [`super::Solver`]): each may
    /// use (time left) / (problems left).
    pub expected_problems: usize,
    /// `--problem-time MIN..MAX`: clamps each problem's share of the time left.
    pub problem_time: ProblemTime,
}

impl BudgetConfig {
    /// When the whole budget is spent, if there is one.
    pub fn end(&self) -> Option<Instant> {
        self.time_budget.map(|b| self.started + b)
    }
}

/// What is written, and how earlier output is treated.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// Submission (id,answer): CSV, or Parquet when the name ends in `.parquet`.
    pub out: PathBuf,
    /// traces.jsonl: one line per problem, and the state a rerun resumes from.
    pub traces: PathBuf,
    /// Print the accuracy table (needs answers in the input).
    pub eval: bool,
    /// `--compare-json FILE`: the `--compare-rag` verdict as JSON.
    pub compare_json: Option<PathBuf>,
    /// Send nothing; write the messages that would be sent to the traces.
    pub dry_run: bool,
    /// Start over: earlier traces are moved aside instead of resumed.
    pub force: bool,
}

/// `MIN..MAX` (inclusive) of valid answers, e.g. `0..99999`.
pub fn parse_answer_range(s: &str) -> Result<RangeInclusive<u64>> {
    let Some((a, b)) = s.split_once("..") else {
        bail!("{s:?}: expected MIN..MAX");
    };
    let bound = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| anyhow::anyhow!("{s:?}: {v:?} is not a non-negative integer ({e})"))
    };
    let (a, b) = (bound(a)?, bound(b.trim().trim_start_matches('='))?);
    if a > b {
        bail!("{s:?}: MIN is above MAX");
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_ranges() {
        assert_eq!(parse_answer_range("0..99999").unwrap(), 0..=99999);
        assert_eq!(parse_answer_range("1..=9").unwrap(), 1..=9);
        for bad in ["5", "9..1", "a..3", "-1..3", ""] {
            assert!(parse_answer_range(bad).is_err(), "{bad:?} accepted");
        }
    }
}
