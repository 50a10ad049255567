//! `solve`: retrieval-augmented solving against an OpenAI-compatible server.
//!
//! ```text
//! problems ─► (per arm) resume from traces ─► embed queries ─► per problem:
//!     retrieve k neighbours ─► fit the prompt into the context ─► sample N (streamed,
//!     cancellable; with --tools python each sample may stop at a code block, run it in its
//!     sandbox and continue; with --think-budget a long thinking is closed for it) ─► weighted
//!     vote ─► record a trace line ─► rewrite submission.csv
//! ```
//!
//! The retriever loads before a `--launch`ed server (which may take the GPU); `--time-budget`
//! counts from process start; every finished problem is in the traces and in submission.csv
//! at once, so a kill loses at most the problem in flight. `--serve` (serve.rs) loads the same
//! things once and answers problems read from stdin instead of `--input`.
//!
//! Modules: sample.rs (N samples, C in flight, early stop), tools.rs (rounds of one sample: code
//! blocks, tool calls, tool outputs, the thinking budget), tool_calls.rs (--tool-protocol, the
//! `tools` offer and its fallback, reading a call's code), sandbox.rs + sys.rs (the Python
//! sandbox and its system calls), vote.rs (weights), trace.rs (trace lines, the resume key),
//! client.rs (SSE, tool-call fragments).

pub mod answer;
pub mod client;
pub mod fit;
pub mod launch;
pub mod problems;
pub mod prompt;
pub mod retrieve;
pub mod sample;
pub mod sandbox;
pub mod serve;
mod sys;
pub mod tool_calls;
pub mod tools;
pub mod trace;
pub mod vote;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress::Progress;
use client::{Client, Message, Sampling};
use fit::PromptBudget;
use problems::Problem;
use prompt::{Example, PromptBuilder, RagSpec};
use retrieve::Retriever;
use sample::{SamplePlan, Sampled};
use tool_calls::{ToolOffer, ToolProtocol};
use tools::ToolPlan;
use trace::{Retrieved, RunKey, Trace, TraceLog, VoteEntry};

pub use problems::read_problems;

#[derive(Debug, Clone)]
pub struct SolveConfig {
    pub input: PathBuf,
    pub index: Option<PathBuf>,
    pub rag: RagSpec,
    pub compare_rag: Option<RagSpec>,
    pub endpoint: String,
    pub model: String,
    pub api_key: Option<String>,
    pub out: PathBuf,
    pub traces: PathBuf,
    pub system: Option<String>,
    pub user_template: String,
    pub sampling: Sampling,
    pub samples: usize,
    pub concurrency: usize,
    pub agreement: f64,
    pub answer_range: RangeInclusive<u64>,
    pub fallback: u64,
    /// Counted from `started`, model and index loading and the server launch included.
    pub time_budget: Option<Duration>,
    pub started: Instant,
    pub request_timeout: Duration,
    pub retries: usize,
    pub backoff: Duration,
    /// The server's context length, when it cannot be read from the server.
    pub max_model_len: Option<usize>,
    /// The solver's tokenizer.json (or its folder), for exact prompt counts.
    pub solver_tokenizer: Option<PathBuf>,
    pub launch: Option<launch::LaunchSpec>,
    /// Start over: earlier traces are moved aside instead of resumed.
    pub force: bool,
    pub dry_run: bool,
    pub eval: bool,
    pub embed_model: Option<String>,
    pub device: crate::encoder::Device,
    /// `--tools python`: the sandbox every sample gets.
    pub sandbox: Option<sandbox::SandboxConfig>,
    pub max_tool_calls: usize,
    /// `--tool-protocol`: OpenAI tool calls, fenced blocks, or both.
    pub tool_protocol: tool_calls::ToolProtocol,
    /// `--think-budget N`: streamed tokens before the thinking is closed for it.
    pub think_budget: Option<usize>,
    /// `--serve`: answer problems read from stdin, one JSON line each.
    pub serve: Option<serve::ServeSpec>,
}

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

pub fn run(cfg: &SolveConfig, progress: &dyn Progress) -> Result<()> {
    let problems = match cfg.serve {
        Some(_) => Vec::new(),
        None => read_problems(&cfg.input)?,
    };
    if cfg.force && !cfg.dry_run {
        if let Some(aside) = trace::set_aside(&cfg.traces)? {
            progress.log(&format!(
                "--force: earlier traces moved to {}",
                aside.display()
            ));
        }
    }
    let loaded = Loaded::load(cfg, progress)?;
    if let Some(spec) = &cfg.serve {
        return serve::session(cfg, spec, &loaded, progress);
    }
    let mut arms = vec![("rag", cfg.rag.clone())];
    if let Some(c) = &cfg.compare_rag {
        arms.push(("control", c.clone()));
    }
    let end = cfg.time_budget.map(|b| cfg.started + b);
    let mut results = Vec::new();
    for (i, (name, spec)) in arms.iter().enumerate() {
        // Each arm gets an equal share of the time left, so the comparison is fair.
        let arm_end = end.map(|e| {
            let now = Instant::now();
            now + e.saturating_duration_since(now) / (arms.len() - i) as u32
        });
        let arm = loaded.arm(cfg, &problems, name, spec, arm_end, i == 0)?;
        results.push((name.to_string(), spec.clone(), arm.run()?));
    }
    report(cfg, &problems, &results)
}

/// What a run loads once: the retriever (embedding model + index), the client, a launched
/// server, the prompt budget and the sandbox report.
struct Loaded<'p> {
    retriever: Option<Retriever>,
    client: Client,
    _server: Option<launch::ServerGuard>,
    budget: Option<PromptBudget>,
    sandbox: Option<sandbox::SandboxInfo>,
    /// Whether `tools` is offered, shared by every sample and arm of the run.
    offer: Arc<ToolOffer>,
    /// Seconds spent loading the retriever.
    load_seconds: f64,
    progress: &'p dyn Progress,
}

impl<'p> Loaded<'p> {
    fn load(cfg: &SolveConfig, progress: &'p dyn Progress) -> Result<Self> {
        // The retriever first: a launched server may claim the whole GPU.
        let start = Instant::now();
        let retriever = open_retriever(cfg, progress)?;
        let load_seconds = start.elapsed().as_secs_f64();
        let client = make_client(cfg);
        let _server = match (&cfg.launch, cfg.dry_run) {
            (Some(spec), false) => Some(launch::launch(spec, &client)?),
            _ => None,
        };
        let budget = match cfg.dry_run {
            true => None,
            false => Some(PromptBudget::discover(
                &client,
                cfg.max_model_len,
                cfg.solver_tokenizer.as_deref(),
            )?),
        };
        let sandbox = probe_sandbox(cfg, progress)?;
        Ok(Self {
            retriever,
            client,
            _server,
            budget,
            sandbox,
            offer: ToolOffer::new(cfg.tool_protocol),
            load_seconds,
            progress,
        })
    }

    fn arm<'a>(
        &'a self,
        cfg: &'a SolveConfig,
        problems: &'a [Problem],
        name: &'a str,
        spec: &'a RagSpec,
        end: Option<Instant>,
        write_submission: bool,
    ) -> Result<Arm<'a>> {
        Ok(Arm {
            cfg,
            problems,
            retriever: self.retriever.as_ref(),
            client: &self.client,
            budget: self.budget.as_ref(),
            name,
            spec,
            key: run_key(cfg, spec)?,
            end,
            write_submission,
            sandbox: self.sandbox.as_ref(),
            offer: &self.offer,
            progress: self.progress,
        })
    }
}

fn open_retriever(cfg: &SolveConfig, progress: &dyn Progress) -> Result<Option<Retriever>> {
    let needs_index = cfg.rag.k > 0 || cfg.compare_rag.as_ref().is_some_and(|c| c.k > 0);
    match (&cfg.index, needs_index) {
        (Some(p), true) => {
            let start = Instant::now();
            let r = Retriever::open(p, cfg.embed_model.as_deref(), cfg.device)?;
            progress.log(&format!(
                "retriever: index {} and its embedding model loaded on {} in {:.1} s{}",
                p.display(),
                cfg.device,
                start.elapsed().as_secs_f64(),
                if cfg.launch.is_some() {
                    ", before launching the server"
                } else {
                    ""
                }
            ));
            Ok(Some(r))
        }
        (None, true) => bail!(
            "--rag k={} needs --index (or use --rag k=0 for no retrieval)",
            cfg.rag.k
        ),
        _ => Ok(None),
    }
}

/// With `--tools python`: start one sandbox up front, so a missing interpreter fails the run
/// at once, and say once what it has and what it isolates here.
fn probe_sandbox(
    cfg: &SolveConfig,
    progress: &dyn Progress,
) -> Result<Option<sandbox::SandboxInfo>> {
    let Some(sb) = cfg.sandbox.as_ref().filter(|_| !cfg.dry_run) else {
        return Ok(None);
    };
    let info = sandbox::probe(sb).context("--tools python")?;
    let module = |name: &str, v: &Option<String>| match v {
        Some(v) => format!("{name} {v}"),
        None => format!("{name} NOT importable (code that imports it will fail)"),
    };
    let iso = &info.isolation;
    progress.log(&format!(
        "sandbox: python {} ({}), {}, {}\n  network: {}\n  filesystem: {}\n  processes: {}\n  \
         memory: {}\n  time: {}\n  signals: {}",
        info.python,
        info.executable,
        module("numpy", &info.numpy),
        module("sympy", &info.sympy),
        iso.network,
        iso.filesystem,
        iso.processes,
        iso.memory,
        iso.time,
        iso.signals
    ));
    Ok(Some(info))
}

fn make_client(cfg: &SolveConfig) -> Client {
    let mut c = Client::new(&cfg.endpoint, &cfg.model, cfg.api_key.clone());
    c.retries = cfg.retries;
    c.request_timeout = cfg.request_timeout;
    c.backoff = cfg.backoff;
    c
}

/// Everything that changes this arm's answers (see [`trace::RunKey`]).
fn run_key(cfg: &SolveConfig, spec: &RagSpec) -> Result<RunKey> {
    let index_manifest_sha256 = match (&cfg.index, spec.k > 0) {
        (Some(dir), true) => Some(crate::fsio::hash_file(&dir.join("manifest.json"))?.sha256),
        _ => None,
    };
    let input_sha256 = match cfg.serve {
        Some(_) => "stdin (--serve)".to_string(),
        None => crate::fsio::hash_file(&cfg.input)?.sha256,
    };
    Ok(RunKey {
        input_sha256,
        index_manifest_sha256,
        rag: spec.clone(),
        model: cfg.model.clone(),
        system_sha256: cfg.system.as_deref().map(trace::text_sha256),
        template_sha256: trace::text_sha256(&cfg.user_template),
        sampling: cfg.sampling.clone(),
        samples: cfg.samples,
        agreement: cfg.agreement,
        answer_range: format!("{}..{}", cfg.answer_range.start(), cfg.answer_range.end()),
        fallback: cfg.fallback,
        vote: vote::RULE.into(),
        tools: cfg.sandbox.as_ref().map(|sb| trace::ToolsKey {
            tool: "python".into(),
            python: sb.python.display().to_string(),
            max_tool_calls: cfg.max_tool_calls,
            protocol: cfg.tool_protocol.name().into(),
            output_chars: sb.output_chars,
            timeout_seconds: sb.timeout.as_secs_f64(),
            memory_mib: sb.memory_bytes >> 20,
        }),
        think_budget: cfg.think_budget,
    })
}

/// Final submission, summary line and (with --eval) the accuracy table.
fn report(
    cfg: &SolveConfig,
    problems: &[Problem],
    results: &[(String, RagSpec, ArmResult)],
) -> Result<()> {
    if cfg.dry_run {
        eprintln!(
            "dry run: nothing sent; the messages are in {}",
            cfg.traces.display()
        );
        return Ok(());
    }
    let main = &results[0].2;
    write_submission(&cfg.out, problems, &main.answers)?;
    eprintln!(
        "solve: {} answers -> {} ({} fallbacks), traces -> {}",
        main.answers.len(),
        cfg.out.display(),
        main.fallbacks,
        cfg.traces.display(),
    );
    if main.overflow_failures > 0 {
        eprintln!(
            "warning: {} problems got no answer because the prompt did not fit the server's \
             context even after dropping examples; see `fit` in their traces",
            main.overflow_failures
        );
    }
    if cfg.eval {
        print_eval(results);
    }
    Ok(())
}

/// `id,answer` for every problem that has one, in input order, written atomically.
fn write_submission(
    path: &Path,
    problems: &[Problem],
    answers: &BTreeMap<String, u64>,
) -> Result<()> {
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

/// One arm: a retrieval setting run over every problem, resuming from its traces.
struct Arm<'a> {
    cfg: &'a SolveConfig,
    problems: &'a [Problem],
    retriever: Option<&'a Retriever>,
    client: &'a Client,
    budget: Option<&'a PromptBudget>,
    name: &'a str,
    spec: &'a RagSpec,
    key: RunKey,
    end: Option<Instant>,
    write_submission: bool,
    sandbox: Option<&'a sandbox::SandboxInfo>,
    offer: &'a Arc<ToolOffer>,
    progress: &'a dyn Progress,
}

/// A problem's prompt, ready to send.
struct Prepared {
    examples: Vec<Example>,
    messages: Vec<Message>,
    fit: trace::PromptFit,
    retrieval_ms: f64,
    search_ms: f64,
}

impl Arm<'_> {
    fn run(&self) -> Result<ArmResult> {
        let (cfg, progress) = (self.cfg, self.progress);
        let mut done = match cfg.dry_run {
            true => BTreeMap::new(),
            false => trace::finished(&cfg.traces, self.name, &self.key)?,
        };
        let mut log = TraceLog::open(&cfg.traces)?;
        let todo: Vec<&Problem> = self
            .problems
            .iter()
            .filter(|p| !done.contains_key(&p.id))
            .collect();
        if !done.is_empty() {
            progress.log(&format!(
                "{}: {} problems already answered in {}, {} to go",
                self.name,
                done.len(),
                cfg.traces.display(),
                todo.len()
            ));
        }
        let (queries, embed_ms_each) = self.embed_queries(&todo)?;
        let task = progress.task(self.name, Some(todo.len() as u64), "problems");
        for (i, p) in todo.iter().enumerate() {
            let t0 = Instant::now();
            let mut prepared = self.prepare(p, &queries[i])?;
            prepared.retrieval_ms += embed_ms_each;
            let mut t = self.base_trace(p, &prepared, embed_ms_each);
            if !cfg.dry_run {
                self.solve_one(p, prepared, todo.len() - i, &mut t)?;
            }
            t.seconds = t0.elapsed().as_secs_f64();
            log.append(&t)?;
            if !cfg.dry_run {
                done.insert(p.id.clone(), t);
                if self.write_submission {
                    let answers = done
                        .iter()
                        .filter_map(|(k, t)| Some((k.clone(), t.answer?)));
                    write_submission(&cfg.out, self.problems, &answers.collect())?;
                }
            }
            task.inc(1);
        }
        drop(task);
        Ok(self.tally(&done))
    }

    /// Every problem as a query in one batched pass (length-sorted batches amortise the
    /// forward pass); returns the vectors and each problem's share of the time.
    fn embed_queries(&self, todo: &[&Problem]) -> Result<(Vec<Vec<f32>>, f64)> {
        let start = Instant::now();
        let vectors = match self.retriever {
            Some(r) if self.spec.k > 0 && !todo.is_empty() => {
                let texts: Vec<&str> = todo.iter().map(|p| p.problem.as_str()).collect();
                r.embed_queries(&texts)?
            }
            _ => vec![Vec::new(); todo.len()],
        };
        let each = start.elapsed().as_secs_f64() * 1e3 / todo.len().max(1) as f64;
        Ok((vectors, each))
    }

    /// Retrieve, then fit the prompt into the server's context.
    fn prepare(&self, p: &Problem, query: &[f32]) -> Result<Prepared> {
        let t0 = Instant::now();
        let examples = match self.retriever {
            Some(r) => r.retrieve(query, self.spec),
            None => Vec::new(),
        };
        let builder = self.builder();
        let (messages, examples, fit) = match self.budget {
            Some(b) => b.fit(&builder, &p.problem, examples, self.cfg.sampling.max_tokens)?,
            None => (
                builder.messages(&p.problem, &examples),
                examples,
                Default::default(),
            ),
        };
        // Search and prompt assembly (with fitting); the caller adds the query embedding.
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(Prepared {
            examples,
            messages,
            fit,
            retrieval_ms: ms,
            search_ms: ms,
        })
    }

    fn builder(&self) -> PromptBuilder {
        PromptBuilder {
            system: self.cfg.system.clone(),
            user_template: self.cfg.user_template.clone(),
            format: self.spec.format,
        }
    }

    fn base_trace(&self, p: &Problem, prep: &Prepared, embed_ms: f64) -> Trace {
        Trace {
            id: p.id.clone(),
            arm: self.name.to_string(),
            dry_run: self.cfg.dry_run,
            run: Some(self.key.clone()),
            rag: Some(self.spec.clone()),
            retrieved: prep
                .examples
                .iter()
                .map(|e| Retrieved {
                    id: e.id.clone(),
                    score: e.score,
                })
                .collect(),
            retrieval_ms: prep.retrieval_ms,
            query_embed_ms: embed_ms,
            search_prompt_ms: prep.search_ms,
            fit: prep.fit.clone(),
            messages: prep.messages.clone(),
            source: p.source.clone(),
            expected: p.expected,
            sandbox: self.sandbox.cloned(),
            ..Default::default()
        }
    }

    /// Sample and vote; a context-length refusal is retried once with one example fewer.
    fn solve_one(&self, p: &Problem, mut prep: Prepared, left: usize, t: &mut Trace) -> Result<()> {
        let deadline = match self.end {
            Some(end) => {
                let now = Instant::now();
                now + end.saturating_duration_since(now) / left.max(1) as u32
            }
            None => Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600),
        };
        let mut sampled = self.sample(&prep, deadline);
        if sampled.context_overflow && !prep.examples.is_empty() {
            prep.fit.overflow_retries += 1;
            if let Some(e) = prep.examples.pop() {
                prep.fit.dropped.push(e.id);
            }
            prep.messages = self.builder().messages(&p.problem, &prep.examples);
            t.messages = prep.messages.clone();
            t.retrieved.truncate(prep.examples.len());
            sampled = self.sample(&prep, deadline);
        }
        t.fit = prep.fit;
        self.record_vote(t, sampled);
        self.record_protocol(t)
    }

    /// With `--tools python`: what was offered to the server and whether it refused; a refusal
    /// is logged once, and stops the run under `--tool-protocol openai`.
    fn record_protocol(&self, t: &mut Trace) -> Result<()> {
        if self.cfg.sandbox.is_none() {
            return Ok(());
        }
        let offer = self.offer;
        let refused = offer.refused().map(str::to_string);
        if let (ToolProtocol::Openai, Some(r)) = (offer.protocol, &refused) {
            bail!(
                "--tool-protocol openai: the server refused `tools` ({r}). Start vLLM with \
                 --enable-auto-tool-choice --tool-call-parser <parser>, llama.cpp's llama-server \
                 with --jinja, or use --tool-protocol auto (falls back to fenced blocks)"
            );
        }
        if let Some(r) = offer.news() {
            self.progress.log(&format!(
                "tool calls: the server refused `tools` ({r}); falling back to fenced ```python \
                 blocks for the rest of the run (vLLM needs --enable-auto-tool-choice \
                 --tool-call-parser <parser>, llama.cpp --jinja)"
            ));
        }
        t.tool_protocol = Some(trace::ToolProtocolInfo {
            setting: offer.protocol.name().into(),
            tools_sent: offer.tools().is_some(),
            refused,
        });
        Ok(())
    }

    fn sample(&self, prep: &Prepared, deadline: Instant) -> Sampled {
        let mut sampling = self.cfg.sampling.clone();
        if let Some(m) = prep.fit.max_tokens {
            sampling.max_tokens = m;
        }
        let plan = SamplePlan {
            sampling,
            samples: self.cfg.samples,
            concurrency: self.cfg.concurrency,
            agreement: self.cfg.agreement,
            answer_range: self.cfg.answer_range.clone(),
            deadline,
            tools: ToolPlan {
                sandbox: self.cfg.sandbox.clone(),
                max_tool_calls: self.cfg.max_tool_calls,
                think_budget: self.cfg.think_budget,
                offer: self.offer.clone(),
            },
        };
        sample::sample_problem(self.client, &prep.messages, &plan)
    }

    fn record_vote(&self, t: &mut Trace, s: Sampled) {
        let verdict = s.tally.verdict();
        t.fallback = verdict.is_none();
        t.answer = Some(verdict.map_or(self.cfg.fallback, |v| v.answer));
        t.correct = t.expected.map(|e| Some(e) == t.answer);
        let weighted = s.tally.weighted();
        t.vote = s
            .tally
            .counts
            .iter()
            .map(|c| VoteEntry {
                answer: c.answer,
                votes: c.votes,
                weight: weighted.then_some(c.weight),
            })
            .collect();
        t.stopped = Some(s.stopped.to_string());
        t.samples = s.traces;
    }

    /// Accuracy, margins and fallbacks over every answered problem (this run's and earlier).
    fn tally(&self, done: &BTreeMap<String, Trace>) -> ArmResult {
        let mut r = ArmResult::default();
        for p in self.problems {
            let Some(t) = done.get(&p.id) else { continue };
            let answer = t.answer.unwrap_or(self.cfg.fallback);
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

/// Longest duration accepted: anything longer is a typo, not a plan.
const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// Parse `5h`, `90m`, `45s`, `1h30m` or plain seconds. Negative, NaN, infinite and absurdly
/// long (over 30 days) values are refused with the reason, never a panic.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s.is_empty() {
        bail!("duration is empty: give seconds, or 5h, 90m, 45s");
    }
    let total = match s.parse::<f64>() {
        Ok(secs) => secs,
        Err(_) => sum_units(s)?,
    };
    if total.is_nan() || total < 0.0 {
        bail!("duration {s:?}: must be a non-negative number of seconds (or 5h, 90m, 45s)");
    }
    if total > MAX_DURATION_SECS {
        bail!("duration {s:?}: longer than 30 days; give h, m or s (e.g. 5h)");
    }
    Ok(Duration::from_secs_f64(total))
}

fn sum_units(s: &str) -> Result<f64> {
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => bail!("duration {s:?}: unknown unit {c:?} (use h, m, s)"),
        };
        let v: f64 = num
            .parse()
            .with_context(|| format!("duration {s:?}: missing number before {c:?}"))?;
        total += v * unit;
        num.clear();
    }
    if !num.is_empty() {
        bail!("duration {s:?}: trailing number without unit");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5h").unwrap(), Duration::from_secs(18000));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        for bad in [
            "-1", "NaN", "inf", "-inf", "1e300", "99999h", "", "h", "5h-",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
