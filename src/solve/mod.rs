//! `solve`: retrieval-augmented solving against an OpenAI-compatible server.
//!
//! For each problem: embed it with the index's own model and query template, retrieve the k
//! nearest solved problems, assemble the messages, sample up to N completions with C requests in
//! flight, extract each integer answer, vote, and write one trace line. `submission.csv` is
//! written from the traces at the end, so a killed run resumes from what its traces hold.

pub mod answer;
pub mod client;
pub mod launch;
pub mod prompt;
pub mod vote;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::encoder::TextKind;
use crate::index::Index;
use client::{Client, Message, Sampling};
use prompt::{Example, PromptBuilder, RagSpec};
use vote::Tally;

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
    pub time_budget: Option<Duration>,
    pub request_timeout: Duration,
    pub retries: usize,
    pub backoff: Duration,
    pub dry_run: bool,
    pub eval: bool,
    pub embed_model: Option<String>,
    pub device: crate::encoder::Device,
}

/// A problem to solve.
#[derive(Debug, Clone)]
pub struct Problem {
    pub id: String,
    pub problem: String,
    pub expected: Option<u64>,
    pub source: Option<String>,
}

/// Read `id, problem[, answer, source]` records from csv / jsonl / parquet.
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for raw in crate::corpus::stream_records(&[path.to_path_buf()]) {
        let raw = raw?;
        let loc = raw.location();
        let fields = raw.fields.map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        let id = crate::corpus::field_as_text(&fields, "id")
            .with_context(|| format!("{loc}: missing \"id\""))?;
        let problem = match fields.get("problem") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => bail!("{loc}: missing or empty \"problem\""),
        };
        if !seen.insert(id.clone()) {
            bail!("{loc}: duplicate id {id:?}");
        }
        let expected = ["answer_int", "answer"]
            .iter()
            .find_map(|k| match fields.get(*k) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => answer::parse_integer(s),
                _ => None,
            });
        let source = crate::corpus::field_as_text(&fields, "source");
        out.push(Problem {
            id,
            problem,
            expected,
            source,
        });
    }
    if out.is_empty() {
        bail!("{}: no problems", path.display());
    }
    Ok(out)
}

/// Neighbour retrieval for one problem: embedding + search + filtering.
pub struct Retriever {
    index: Index,
    encoder: crate::encoder::Encoder,
    records: Vec<serde_json::Map<String, Value>>,
}

impl Retriever {
    pub fn open(index: &Path, model: Option<&str>, device: crate::encoder::Device) -> Result<Self> {
        let index = Index::load(index)?;
        let encoder = crate::index::query_encoder(&index.manifest, model, device)?;
        let records = index.records()?;
        Ok(Self {
            index,
            encoder,
            records,
        })
    }

    /// Embed every problem as a query in one batched pass (length-sorted batches amortise the
    /// forward pass far better than one text at a time).
    pub fn embed_queries(&self, problems: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.encoder.encode(problems, TextKind::Query)?.vectors)
    }

    pub fn retrieve(&self, query: &[f32], spec: &RagSpec) -> Vec<Example> {
        if spec.k == 0 {
            return Vec::new();
        }
        // Ask for more than k: near-duplicates and weak matches are dropped below.
        let want = spec.k * 3 + 5;
        let opts = crate::index::SearchOptions {
            ef: crate::index::DEFAULT_EF.max(want),
            ..Default::default()
        };
        let hits = self.index.search(query, want, &opts).hits;
        let text = |r: &serde_json::Map<String, Value>, f: &str| {
            r.get(f).and_then(|v| v.as_str()).unwrap_or("").to_string()
        };
        hits.into_iter()
            .filter(|h| spec.exclude_above.is_none_or(|t| h.score <= t))
            .filter(|h| spec.min_score.is_none_or(|t| h.score >= t))
            .take(spec.k)
            .map(|h| {
                let r = &self.records[h.row];
                let mut e = Example {
                    id: text(r, "id"),
                    score: h.score,
                    problem: text(r, "problem"),
                    solution: text(r, "solution"),
                };
                let answer = text(r, "answer");
                e.solution = e.solution_with_box(Some(&answer));
                e
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
struct SampleTrace {
    index: usize,
    text: Option<String>,
    answer: Option<u64>,
    rejected: Option<String>,
    finish_reason: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    seconds: f64,
    attempts: usize,
    errors: Vec<String>,
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
    pub retrieval_ms: Vec<f64>,
}

pub fn run(cfg: &SolveConfig, progress: &dyn crate::progress::Progress) -> Result<()> {
    let problems = read_problems(&cfg.input)?;
    let needs_index = cfg.rag.k > 0 || cfg.compare_rag.as_ref().is_some_and(|c| c.k > 0);
    let retriever = match (&cfg.index, needs_index) {
        (Some(p), true) => Some(Retriever::open(p, cfg.embed_model.as_deref(), cfg.device)?),
        (None, true) => bail!(
            "--rag k={} needs --index (or use --rag k=0 for no retrieval)",
            cfg.rag.k
        ),
        _ => None,
    };
    let client = {
        let mut c = Client::new(&cfg.endpoint, &cfg.model, cfg.api_key.clone());
        c.retries = cfg.retries;
        c.request_timeout = cfg.request_timeout;
        c.backoff = cfg.backoff;
        c
    };
    let mut arms = vec![("rag", cfg.rag.clone())];
    if let Some(c) = &cfg.compare_rag {
        arms.push(("control", c.clone()));
    }
    // Each arm gets an equal share of the budget, so the comparison is fair.
    let arm_budget = cfg.time_budget.map(|b| b / arms.len() as u32);
    let mut results = Vec::new();
    for (name, spec) in &arms {
        let r = run_arm(
            cfg,
            &problems,
            retriever.as_ref(),
            &client,
            name,
            spec,
            arm_budget,
            progress,
        )?;
        results.push((name.to_string(), spec.clone(), r));
    }
    if cfg.dry_run {
        eprintln!(
            "dry run: nothing sent; the messages are in {}",
            cfg.traces.display()
        );
        return Ok(());
    }
    let main = &results[0].2;
    crate::fsio::write_atomically(&cfg.out, |w| {
        writeln!(w, "id,answer")?;
        for p in &problems {
            writeln!(w, "{},{}", csv_field(&p.id), main.answers[&p.id])?;
        }
        Ok(())
    })?;
    let n = problems.len();
    let mean_ms = mean(&main.retrieval_ms);
    eprintln!(
        "solve: {n} answers -> {} ({} fallbacks), traces -> {}; retrieval + prompt {:.1} ms/problem",
        cfg.out.display(),
        main.fallbacks,
        cfg.traces.display(),
        mean_ms
    );
    if cfg.eval {
        print_eval(&results);
    }
    Ok(())
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
    println!("| arm | rag | accuracy | scored | mean vote margin | fallbacks |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, spec, r) in results {
        let acc = if r.scored > 0 {
            r.correct as f64 / r.scored as f64
        } else {
            f64::NAN
        };
        println!(
            "| {name} | k={} | {:.3} | {} | {:.2} | {} |",
            spec.k,
            acc,
            r.scored,
            mean(&r.margins),
            r.fallbacks
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

/// Finished problems of `arm` in an existing traces file (id -> trace line).
fn finished(traces: &Path, arm: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(traces) else {
        return Ok(out);
    };
    for (i, line) in text.lines().enumerate() {
        // A line cut by a kill is the last one and incomplete: its problem is redone.
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            if i + 1 == text.lines().count() {
                break;
            }
            bail!("{}:{}: not a trace line", traces.display(), i + 1);
        };
        if v["arm"] == arm && v["answer"].is_u64() && v["dry_run"] != true {
            out.insert(v["id"].as_str().unwrap_or_default().to_string(), v);
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn run_arm(
    cfg: &SolveConfig,
    problems: &[Problem],
    retriever: Option<&Retriever>,
    client: &Client,
    arm: &str,
    spec: &RagSpec,
    budget: Option<Duration>,
    progress: &dyn crate::progress::Progress,
) -> Result<ArmResult> {
    let done = if cfg.dry_run {
        BTreeMap::new()
    } else {
        finished(&cfg.traces, arm)?
    };
    if let Some(dir) = cfg.traces.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Cut a torn last line (from a kill) before appending.
    repair_tail(&cfg.traces)?;
    let mut traces = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.traces)
        .with_context(|| format!("opening {}", cfg.traces.display()))?;
    let builder = PromptBuilder {
        system: cfg.system.clone(),
        user_template: cfg.user_template.clone(),
        format: spec.format,
    };
    let mut result = ArmResult::default();
    let start = Instant::now();
    let todo: Vec<&Problem> = problems
        .iter()
        .filter(|p| !done.contains_key(&p.id))
        .collect();
    if !done.is_empty() {
        eprintln!(
            "{arm}: {} problems already answered in {}, {} to go",
            done.len(),
            cfg.traces.display(),
            todo.len()
        );
    }
    let embed_start = Instant::now();
    let queries = match retriever {
        Some(r) if spec.k > 0 && !todo.is_empty() => {
            let texts: Vec<&str> = todo.iter().map(|p| p.problem.as_str()).collect();
            r.embed_queries(&texts)?
        }
        _ => vec![Vec::new(); todo.len()],
    };
    // Each problem's share of the batched query embedding, added to its own search time.
    let embed_ms_each = embed_start.elapsed().as_secs_f64() * 1e3 / todo.len().max(1) as f64;
    let bar = progress.task(arm, Some(todo.len() as u64), "problems");
    for (i, p) in todo.iter().enumerate() {
        let t0 = Instant::now();
        let examples = match retriever {
            Some(r) => r.retrieve(&queries[i], spec),
            None => Vec::new(),
        };
        let messages = builder.messages(&p.problem, &examples);
        let search_ms = t0.elapsed().as_secs_f64() * 1e3;
        let retrieval_ms = embed_ms_each + search_ms;
        result.retrieval_ms.push(retrieval_ms);
        let retrieved: Vec<Value> = examples
            .iter()
            .map(|e| json!({"id": e.id, "score": e.score}))
            .collect();
        if cfg.dry_run {
            let line = json!({"id": p.id, "arm": arm, "dry_run": true, "rag": spec, "retrieved": retrieved, "retrieval_ms": retrieval_ms, "query_embed_ms": embed_ms_each, "search_prompt_ms": search_ms, "messages": messages});
            writeln!(traces, "{line}")?;
            bar.inc(1);
            continue;
        }
        // Unused time flows to the problems still to come.
        let deadline = match budget {
            Some(b) => {
                let left = b.saturating_sub(start.elapsed());
                Instant::now() + left / (todo.len() - i) as u32
            }
            None => Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600),
        };
        let (samples, tally, stopped) = sample_problem(cfg, client, &messages, deadline);
        let verdict = tally.verdict();
        let (answer, fallback) = match &verdict {
            Some(v) => (v.answer, false),
            None => (cfg.fallback, true),
        };
        let line = json!({
            "id": p.id, "arm": arm, "rag": spec, "retrieved": retrieved, "retrieval_ms": retrieval_ms,
            "query_embed_ms": embed_ms_each, "search_prompt_ms": search_ms,
            "messages": messages, "samples": samples, "vote": tally.counts.iter().map(|(a, n, _)| json!({"answer": a, "votes": n})).collect::<Vec<_>>(),
            "answer": answer, "fallback": fallback, "stopped": stopped,
            "expected": p.expected, "correct": p.expected.map(|e| e == answer), "source": p.source,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        writeln!(traces, "{line}")?;
        traces.flush()?;
        bar.inc(1);
    }
    drop(bar);
    if cfg.dry_run {
        return Ok(result);
    }
    // Tally from the traces: this run's problems and those of earlier, resumed runs alike.
    let all = finished(&cfg.traces, arm)?;
    for p in problems {
        let v = all
            .get(&p.id)
            .with_context(|| format!("no trace for {}", p.id))?;
        let answer = v["answer"].as_u64().unwrap_or(cfg.fallback);
        result.answers.insert(p.id.clone(), answer);
        if v["fallback"] == true {
            result.fallbacks += 1;
        }
        let votes: Vec<u64> = v["vote"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["votes"].as_u64()).collect())
            .unwrap_or_default();
        if let Some(&top) = votes.iter().max() {
            let total: u64 = votes.iter().sum();
            let mut sorted = votes.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            result
                .margins
                .push((top - sorted.get(1).copied().unwrap_or(0)) as f64 / total.max(1) as f64);
        }
        if let Some(e) = p.expected {
            result.scored += 1;
            let ok = e == answer;
            result.correct += usize::from(ok);
            let entry = result
                .per_source
                .entry(p.source.clone().unwrap_or_else(|| "-".into()))
                .or_default();
            entry.0 += usize::from(ok);
            entry.1 += 1;
        }
    }
    Ok(result)
}

fn repair_tail(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    Ok(())
}

/// Sample completions for one problem until all are in, the vote is settled, or the deadline
/// passes. This thread hands out one ticket per sample, at most `concurrency` ahead, so no
/// request starts once the vote is settled. Requests still in flight at the end are abandoned
/// (their threads finish alone and their results are dropped).
fn sample_problem(
    cfg: &SolveConfig,
    client: &Client,
    messages: &[Message],
    deadline: Instant,
) -> (Vec<SampleTrace>, Tally, &'static str) {
    let (result_tx, results) = std::sync::mpsc::channel::<SampleTrace>();
    let (ticket_tx, tickets) = std::sync::mpsc::channel::<usize>();
    let tickets = Arc::new(std::sync::Mutex::new(tickets));
    let workers = cfg.concurrency.clamp(1, cfg.samples.max(1));
    for _ in 0..workers {
        let (result_tx, tickets) = (result_tx.clone(), tickets.clone());
        let (client, messages, sampling, range) = (
            client.clone(),
            messages.to_vec(),
            cfg.sampling.clone(),
            cfg.answer_range.clone(),
        );
        std::thread::spawn(move || loop {
            let ticket = tickets
                .lock()
                .map_err(|_| ())
                .and_then(|t| t.recv().map_err(|_| ()));
            let Ok(index) = ticket else { return };
            let a = client.complete(&messages, &sampling, deadline);
            let (answer, rejected) = match &a.completion {
                Some(c) => match answer::extract_answer(&c.text, &range) {
                    Ok(v) => (Some(v), None),
                    Err(r) => (None, Some(r.to_string())),
                },
                None => (None, Some("no completion".to_string())),
            };
            let c = a.completion.clone().unwrap_or_default();
            let trace = SampleTrace {
                index,
                text: a.completion.as_ref().map(|c| c.text.clone()),
                answer,
                rejected,
                finish_reason: c.finish_reason,
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                seconds: a.seconds,
                attempts: a.attempts,
                errors: a.errors,
            };
            if result_tx.send(trace).is_err() {
                return;
            }
        });
    }
    drop(result_tx);
    let mut issued = 0;
    while issued < workers {
        let _ = ticket_tx.send(issued);
        issued += 1;
    }
    let mut traces = Vec::new();
    let mut tally = Tally::default();
    let stopped = loop {
        if traces.len() == cfg.samples {
            break "all samples";
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(t) => {
                if let Some(a) = t.answer {
                    tally.add(a);
                }
                traces.push(t);
                if traces.len() < cfg.samples
                    && tally.settled(cfg.samples - traces.len(), cfg.samples, cfg.agreement)
                {
                    break "settled";
                }
                if issued < cfg.samples {
                    let _ = ticket_tx.send(issued);
                    issued += 1;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break "deadline",
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break "all samples",
        }
    };
    drop(ticket_tx); // idle workers see the closed channel and exit
    traces.sort_by_key(|t| t.index);
    (traces, tally, stopped)
}

/// Parse `5h`, `90m`, `45s`, `1h30m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(secs));
    }
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
    Ok(Duration::from_secs_f64(total))
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
    }
}
