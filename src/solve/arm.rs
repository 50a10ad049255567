//! One arm: a retrieval setting applied to problems. [`Arm::solve_problem`] is the per-problem
//! sequence that batch mode, `--serve` and [`super::Solver`] all use: retrieve, fit the prompt,
//! sample, vote, and return the trace line. [`Arm::run_batch`] runs it over a problems file,
//! resuming from the traces.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Message;
use super::config::{Input, SolveConfig};
use super::genselect::{Selection, Selector};
use super::loop_summary::LoopSummary;
use super::outcome;
use super::problems::Problem;
use super::prompt::{Example, PromptBuilder, RagSpec};
use super::report::{self, ArmResult};
use super::resources::Resources;
use super::retrieve_tool::SearchTool;
use super::rounds::ToolPlan;
use super::sample::{self, Mix, SamplePlan, Sampled};
use super::tool_protocol::ToolProtocol;
use super::trace::{
    self, RetrievalTrace, Retrieved, RunKey, Setting, Timing, Trace, TraceLog, Verdict, VoteEntry,
};
use super::vote::Tally;

pub(super) struct Arm<'a> {
    cfg: &'a SolveConfig,
    res: &'a Resources,
    pub name: &'a str,
    spec: &'a RagSpec,
    pub key: RunKey,
    /// When this arm's share of the time budget is spent.
    end: Option<Instant>,
    /// `search_similar_problems`, when this arm offers it.
    search: Option<Arc<SearchTool>>,
}

/// A problem's prompt, ready to send.
struct Prepared {
    examples: Vec<Example>,
    excluded: Vec<super::retrieve::Excluded>,
    messages: Vec<Message>,
    /// With `share=`: the prompt of the samples without examples.
    bare: Option<Vec<Message>>,
    fit: trace::PromptFit,
    retrieval_ms: f64,
    search_ms: f64,
}

/// A problem's query vector and the milliseconds its embedding took.
pub(super) struct Query {
    pub vector: Vec<f32>,
    pub embed_ms: f64,
}

impl<'a> Arm<'a> {
    pub fn new(
        cfg: &'a SolveConfig,
        res: &'a Resources,
        name: &'a str,
        spec: &'a RagSpec,
        end: Option<Instant>,
    ) -> Result<Self> {
        Ok(Self::with_key(
            cfg,
            res,
            name,
            spec,
            run_key(cfg, spec)?,
            end,
        ))
    }

    /// An arm whose [`RunKey`] is already known (it hashes the input and the index).
    pub fn with_key(
        cfg: &'a SolveConfig,
        res: &'a Resources,
        name: &'a str,
        spec: &'a RagSpec,
        key: RunKey,
        end: Option<Instant>,
    ) -> Self {
        let search = match (&res.retriever, spec.search) {
            (Some(r), Some(true)) => Some(Arc::new(SearchTool::new(r.clone(), spec))),
            _ => None,
        };
        Self {
            cfg,
            res,
            name,
            spec,
            key,
            end,
            search,
        }
    }

    /// Every problem not yet answered in the traces, in input order: solved, traced and (with
    /// `submission`) written to the submission file at once, so a kill loses at most one.
    pub fn run_batch(&self, problems: &[Problem], submission: Option<&Path>) -> Result<ArmResult> {
        let (cfg, progress) = (self.cfg, self.res.progress.as_ref());
        let traces = &cfg.output.traces;
        let (mut done, failed_before) = match cfg.output.dry_run {
            true => Default::default(),
            false => trace::finished_and_failed(traces, self.name, &self.key)?,
        };
        let mut log = TraceLog::open(traces)?;
        let todo: Vec<&Problem> = problems
            .iter()
            .filter(|p| !done.contains_key(&p.id))
            .collect();
        if !done.is_empty() || !failed_before.is_empty() {
            progress.log(&format!(
                "{}: {} problems already answered in {}, {} failed earlier (no reply from the \
                 server) and are retried, {} to go",
                self.name,
                done.len(),
                traces.display(),
                failed_before.len(),
                todo.len()
            ));
        }
        let queries = self.embed_queries(&todo)?;
        let task = progress.task(self.name, Some(todo.len() as u64), "problems");
        for ((i, p), query) in todo.iter().enumerate().zip(queries) {
            let t = self.solve_problem(p, &query, todo.len() - i)?;
            log.append(&t)?;
            if !cfg.output.dry_run {
                done.insert(p.id.clone(), t);
                if let Some(path) = submission {
                    // Failed problems not yet redone keep their fallback row meanwhile.
                    let answers = failed_before
                        .iter()
                        .chain(&done)
                        .filter_map(|(k, t)| Some((k.clone(), t.verdict.answer?)));
                    report::write_submission(path, problems, &answers.collect())?;
                }
            }
            task.inc(1);
        }
        drop(task);
        self.log_memory_counts(&done);
        let mut result = report::tally(problems, &done, cfg.sampling.fallback);
        result.loop_summary = LoopSummary::of(cfg, problems, &done);
        Ok(result)
    }

    /// The run's count of hits left out as the same problem, and of neighbours sent as
    /// `problem` for want of an insight.
    fn log_memory_counts(&self, done: &BTreeMap<String, Trace>) {
        let excluded: usize = done.values().map(|t| t.retrieval.excluded.len()).sum();
        let with = done
            .values()
            .filter(|t| !t.retrieval.excluded.is_empty())
            .count();
        if excluded > 0 {
            self.res.progress.log(&format!(
                "{}: {excluded} retrieved hits left out as the same problem (--exclude twins, \
                 exclude-above) for {with} of {} problems; see \"excluded\" in the traces",
                self.name,
                done.len()
            ));
        }
        if self.spec.format == super::prompt::RagFormat::Insight {
            let all = done.values().flat_map(|t| &t.retrieval.retrieved);
            let (sent, fell) = all.fold((0, 0), |(n, f), r| (n + 1, f + r.no_insight as usize));
            if fell > 0 {
                self.res.progress.log(&format!(
                    "{}: format=insight: {fell} of {sent} neighbours had no insight and were sent \
                     as format=problem (run `solve distill` on the corpus, then extract and \
                     index it again)",
                    self.name
                ));
            }
        }
    }

    /// Every problem as a query in one batched pass (length-sorted batches amortise the
    /// forward pass); each gets an equal share of the time.
    pub fn embed_queries(&self, todo: &[&Problem]) -> Result<Vec<Query>> {
        let start = Instant::now();
        let vectors = match &self.res.retriever {
            Some(r) if self.spec.k > 0 && !todo.is_empty() => {
                let texts: Vec<&str> = todo.iter().map(|p| p.problem.as_str()).collect();
                r.embed_queries(&texts)?
            }
            _ => vec![Vec::new(); todo.len()],
        };
        let each = start.elapsed().as_secs_f64() * 1e3 / todo.len().max(1) as f64;
        Ok(vectors
            .into_iter()
            .map(|vector| Query {
                vector,
                embed_ms: each,
            })
            .collect())
    }

    /// One problem, start to end: retrieve, fit the prompt, sample and vote (unless a dry
    /// run). `left` counts this problem and those after it: the problem may use that share of
    /// the arm's time left. The trace line is returned, not yet written.
    pub fn solve_problem(&self, p: &Problem, query: &Query, left: usize) -> Result<Trace> {
        let t0 = Instant::now();
        // This problem's share of the arm's time left, clamped by --problem-time.
        let remaining = self.end.map(|e| e.saturating_duration_since(t0));
        let planned = self.cfg.budget.problem_time.share(remaining, left);
        let deadline = t0 + planned.unwrap_or(Duration::from_secs(10 * 365 * 24 * 3600));
        let mut prepared = self.prepare(p, &query.vector)?;
        prepared.retrieval_ms += query.embed_ms;
        let mut t = self.base_trace(p, &prepared, query.embed_ms);
        t.timing.planned_seconds = planned.map(|d| d.as_secs_f64());
        if !self.cfg.output.dry_run {
            self.sample_and_vote(p, prepared, deadline, &mut t)?;
            outcome::mark(&mut t);
        }
        outcome::warn_dropped(self.res.progress.as_ref(), &t);
        t.timing.seconds = t0.elapsed().as_secs_f64();
        Ok(t)
    }

    /// Retrieve, then fit the prompt into the server's context.
    fn prepare(&self, p: &Problem, query: &[f32]) -> Result<Prepared> {
        let t0 = Instant::now();
        let retrieval = match &self.res.retriever {
            Some(r) => r.retrieve_traced(query, self.spec),
            None => Default::default(),
        };
        let (examples, excluded) = (retrieval.examples, retrieval.excluded);
        let builder = self.builder();
        let max_tokens = self.cfg.sampling.params.max_tokens;
        let (messages, examples, fit) = match &self.res.budget {
            Some(b) => b.fit(&builder, &p.problem, examples, max_tokens)?,
            None => (
                builder.messages(&p.problem, &examples),
                examples,
                Default::default(),
            ),
        };
        let bare = (self.spec.share.is_some() && !examples.is_empty())
            .then(|| builder.messages(&p.problem, &[]));
        // Search and prompt assembly (with fitting); the caller adds the query embedding.
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(Prepared {
            examples,
            excluded,
            messages,
            bare,
            fit,
            retrieval_ms: ms,
            search_ms: ms,
        })
    }

    fn builder(&self) -> PromptBuilder {
        PromptBuilder {
            system: self.cfg.sampling.system.clone(),
            user_template: self.cfg.sampling.user_template.clone(),
            format: self.spec.format,
        }
    }

    fn base_trace(&self, p: &Problem, prep: &Prepared, embed_ms: f64) -> Trace {
        let retrieved = prep.examples.iter().map(|e| Retrieved {
            id: e.id.clone(),
            score: e.score,
            no_insight: e.sent_as(self.spec.format) != self.spec.format,
        });
        Trace {
            id: p.id.clone(),
            arm: self.name.to_string(),
            dry_run: self.cfg.output.dry_run,
            run: Some(self.key.clone()),
            retrieval: RetrievalTrace {
                rag: Some(self.spec.clone()),
                retrieved: retrieved.collect(),
                excluded: prep.excluded.clone(),
                fit: prep.fit.clone(),
            },
            timing: Timing {
                retrieval_ms: prep.retrieval_ms,
                query_embed_ms: embed_ms,
                search_prompt_ms: prep.search_ms,
                ..Default::default()
            },
            messages: prep.messages.clone(),
            source: p.source.clone(),
            verdict: Verdict {
                expected: p.expected,
                ..Default::default()
            },
            setting: Setting {
                sandbox: self.res.sandbox.clone(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Sample and vote (then, with `--select`, decide a split vote); a context-length refusal
    /// is retried once with one example fewer.
    fn sample_and_vote(
        &self,
        p: &Problem,
        mut prep: Prepared,
        deadline: Instant,
        t: &mut Trace,
    ) -> Result<()> {
        let mut sampled = self.sample(&prep, deadline);
        if sampled.context_overflow && !prep.examples.is_empty() {
            prep.fit.overflow_retries += 1;
            if let Some(e) = prep.examples.pop() {
                prep.fit.dropped.push(e.id);
            }
            prep.messages = self.builder().messages(&p.problem, &prep.examples);
            t.messages = prep.messages.clone();
            t.retrieval.retrieved.truncate(prep.examples.len());
            sampled = self.sample(&prep, deadline);
        }
        t.retrieval.fit = prep.fit;
        let tally = sampled.tally.clone();
        self.record_vote(t, sampled);
        self.note_logprobs(t);
        self.select(p, t, &tally, deadline);
        self.record_protocol(t)
    }

    /// With `--select`: the selector's record, and its answer when it named one.
    fn select(&self, p: &Problem, t: &mut Trace, tally: &Tally, deadline: Instant) {
        let s = &self.cfg.sampling;
        if s.select.selector == Selector::None || t.verdict.fallback {
            return;
        }
        let selection = Selection {
            client: &self.res.client,
            config: &s.select,
            system: s.system.as_deref(),
            sampling: &s.params,
            context: self.res.budget.as_ref().and_then(|b| b.context),
            deadline,
        };
        t.select = selection.select(&p.problem, &t.samples, tally);
        if let Some(chosen) = t.select.as_ref().and_then(|s| s.chosen) {
            t.verdict.answer = Some(chosen);
            t.verdict.correct = t.verdict.expected.map(|e| e == chosen);
        }
    }

    /// Log-probs were asked for but none came (refused, or silently left out): said once per
    /// run; the vote is then the majority (see `vote_rule` in the traces).
    fn note_logprobs(&self, t: &Trace) {
        let client = &self.res.client;
        let asked = self.cfg.sampling.params.top_logprobs.is_some();
        let answered = t.samples.iter().any(|s| s.text.is_some());
        if !asked || !answered || t.samples.iter().any(|s| s.confidence.is_some()) {
            return;
        }
        if client.first_logprobs_notice() {
            let why = match client.logprobs_refused() {
                Some(r) => format!("the server refused them ({r})"),
                None => "the server returned none".into(),
            };
            self.res.progress.log(&format!(
                "log-probs: {why}; samples get no entropy, so problems are voted by the \
                 majority (see vote_rule in the traces)"
            ));
        }
    }

    /// With `--tools python`: what was offered to the server and whether it refused; a refusal
    /// is logged once, and stops the run under `--tool-protocol openai`.
    fn record_protocol(&self, t: &mut Trace) -> Result<()> {
        if self.cfg.tools.sandbox.is_none() && self.search.is_none() {
            return Ok(());
        }
        let offer = &self.res.offer;
        let refused = offer.refused().map(str::to_string);
        if let (ToolProtocol::Openai, Some(r)) = (offer.protocol, &refused) {
            bail!(
                "--tool-protocol openai: the server refused `tools` ({r}). Start vLLM with \
                 --enable-auto-tool-choice --tool-call-parser <parser>, llama.cpp's llama-server \
                 with --jinja, or use --tool-protocol auto (falls back to fenced blocks)"
            );
        }
        if let Some(r) = offer.news() {
            self.res.progress.log(&format!(
                "tool calls: the server refused `tools` ({r}); falling back to fenced ```python \
                 blocks for the rest of the run (vLLM needs --enable-auto-tool-choice \
                 --tool-call-parser <parser>, llama.cpp --jinja)"
            ));
        }
        t.setting.tool_protocol = Some(trace::ToolProtocolInfo {
            setting: offer.protocol.name().into(),
            tools_sent: offer.tools().is_some(),
            refused,
        });
        Ok(())
    }

    fn sample(&self, prep: &Prepared, deadline: Instant) -> Sampled {
        let (s, tools) = (&self.cfg.sampling, &self.cfg.tools);
        let mut sampling = s.params.clone();
        if let Some(m) = prep.fit.max_tokens {
            sampling.max_tokens = m;
        }
        let plan = SamplePlan {
            sampling,
            samples: s.samples,
            concurrency: s.concurrency,
            agreement: s.agreement,
            stop_at: s.stop_at,
            vote: s.vote,
            answer_range: s.answer_range.clone(),
            deadline,
            tools: ToolPlan {
                sandbox: tools.sandbox.clone(),
                max_tool_calls: tools.max_tool_calls,
                think_budget: tools.think_budget,
                offer: self.res.offer.clone(),
                search: self.search.clone(),
            },
            mix: self.mix(prep),
        };
        sample::sample_problem(&self.res.client, &prep.messages, &plan)
    }

    /// With `share=`: the samples without examples get the bare prompt. Without examples to
    /// share, every sample is marked as having none.
    fn mix(&self, prep: &Prepared) -> Option<Mix> {
        self.spec.share?;
        let (spec, bare) = match &prep.bare {
            Some(b) => (self.spec.clone(), b.clone()),
            None => (
                RagSpec {
                    share: Some(0.0),
                    ..self.spec.clone()
                },
                prep.messages.clone(),
            ),
        };
        Some(Mix {
            spec,
            bare: Arc::new(bare),
        })
    }

    fn record_vote(&self, t: &mut Trace, s: Sampled) {
        let verdict = s.tally.verdict();
        t.verdict.fallback = verdict.is_none();
        t.verdict.answer = Some(verdict.map_or(self.cfg.sampling.fallback, |v| v.answer));
        t.verdict.correct = t.verdict.expected.map(|e| Some(e) == t.verdict.answer);
        let (tally, weighted) = (&s.tally, s.tally.weighted());
        t.vote = tally
            .counts
            .iter()
            .map(|c| VoteEntry {
                answer: c.answer,
                votes: c.votes,
                weight: weighted.then_some(tally.weight_of(c)),
                mean_entropy: c.mean_entropy(),
            })
            .collect();
        t.vote_rule = (tally.votes > 0).then(|| tally.applied().name().to_string());
        t.verdict.stopped = Some(s.stopped.to_string());
        t.samples = s.traces;
    }
}

/// Everything that changes this arm's answers (see [`trace::RunKey`]).
fn run_key(cfg: &SolveConfig, spec: &RagSpec) -> Result<RunKey> {
    let index_manifest_sha256 = match (&cfg.retrieval.index, spec.k > 0) {
        (Some(dir), true) => Some(crate::fsio::hash_file(&dir.join("manifest.json"))?.sha256),
        _ => None,
    };
    let input_sha256 = match &cfg.input {
        Input::File(path) => crate::fsio::hash_file(path)?.sha256,
        Input::Serve => "stdin (--serve)".to_string(),
        Input::Calls => "calls (Solver)".to_string(),
    };
    let (s, tools) = (&cfg.sampling, &cfg.tools);
    Ok(RunKey {
        input_sha256,
        index_manifest_sha256,
        rag: spec.clone(),
        model: cfg.server.model.clone(),
        system_sha256: s.system.as_deref().map(trace::text_sha256),
        template_sha256: trace::text_sha256(&s.user_template),
        sampling: s.params.clone(),
        samples: s.samples,
        agreement: s.agreement,
        answer_range: format!("{}..{}", s.answer_range.start(), s.answer_range.end()),
        fallback: s.fallback,
        vote: s.vote.key(),
        stop_at: (s.stop_at > 0).then_some(s.stop_at),
        select: (s.select.selector != Selector::None).then(|| {
            format!(
                "{} below margin {}, {} candidates",
                s.select.selector, s.select.margin, s.select.candidates
            )
        }),
        tools: tools_key(cfg, spec),
        think_budget: tools.think_budget,
        exclude: exclude_key(cfg, spec)?,
    })
}

/// `--exclude` changes which neighbours a retrieving arm may get.
fn exclude_key(cfg: &SolveConfig, spec: &RagSpec) -> Result<Option<trace::ExcludeKey>> {
    match (&cfg.retrieval.exclude, spec.k > 0) {
        (Some(ex), true) => Ok(Some(trace::ExcludeKey {
            problems_sha256: crate::fsio::hash_file(&ex.problems)?.sha256,
            overlap: ex.overlap,
        })),
        _ => Ok(None),
    }
}

/// The tool settings that change this arm's answers: `python` (with its sandbox), `retrieve`
/// (the search tool; its filters are in the rag spec), or both.
fn tools_key(cfg: &SolveConfig, spec: &RagSpec) -> Option<trace::ToolsKey> {
    let tools = &cfg.tools;
    let search = spec.search == Some(true);
    let tool = match (&tools.sandbox, search) {
        (None, false) => return None,
        (Some(_), false) => "python",
        (None, true) => "retrieve",
        (Some(_), true) => "python,retrieve",
    };
    let sb = tools.sandbox.as_ref();
    Some(trace::ToolsKey {
        tool: tool.into(),
        python: sb.map_or(String::new(), |sb| sb.python.display().to_string()),
        max_tool_calls: tools.max_tool_calls,
        protocol: tools.protocol.name().into(),
        output_chars: sb.map_or(0, |sb| sb.output_chars),
        timeout_seconds: sb.map_or(0.0, |sb| sb.timeout.as_secs_f64()),
        memory_mib: sb.map_or(0, |sb| sb.memory_bytes >> 20),
    })
}
