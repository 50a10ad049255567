//! `solve distill`: turn a solved-problem corpus into condensed memories. For each record one
//! request to the solver server (a template asking for the key idea, the technique and the trap
//! in at most N words, without the final answer's numbers); the corpus is written back with an
//! `insight` field, which `embed extract` and `embed index build` carry into the index records
//! for `--rag format=insight`.
//!
//! Resumable: every outcome is appended to `OUT.distill.jsonl` as it finishes; a re-run skips
//! the records it already holds an insight for and tries the failed ones again. The output is
//! written atomically at the end of every run (records without an insight get null).
//!
//! Files: corpus.rs (reading fields, writing JSON lines or Parquet), log.rs (the resumable
//! log), reply.rs (the template, cleaning a reply, redacting a restated answer).

pub mod corpus;
pub mod log;
pub mod reply;

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Client, Message, Role, Sampling};
use super::config::ServerConfig;
use crate::progress::Progress;
use corpus::{Corpus, FieldChoice, Item};
use log::{DistillKey, Entry, Log};

/// What a distill run is asked to do.
#[derive(Debug, Clone)]
pub struct DistillConfig {
    pub input: PathBuf,
    /// .jsonl or .parquet; its log is `OUT.distill.jsonl`.
    pub out: PathBuf,
    pub server: ServerConfig,
    pub fields: FieldChoice,
    /// The request; `{problem}`, `{solution}`, `{answer}`, `{words}` are filled in.
    pub template: String,
    pub system: Option<String>,
    /// Words asked for at most.
    pub words: usize,
    pub sampling: Sampling,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Counted from `started`; records not begun by then are left for a re-run.
    pub time_budget: Option<Duration>,
    pub started: Instant,
    /// Start over when the log was made with other settings (it is moved aside).
    pub force: bool,
}

/// How a run went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistillSummary {
    pub records: usize,
    /// Insights already in the log from an earlier run.
    pub resumed: usize,
    pub distilled: usize,
    /// Failed after every retry in this run (in the log, tried again on a re-run).
    pub failed: Vec<(String, String)>,
    /// Not started before the time budget ran out.
    pub not_started: usize,
    /// Replies that restated the final answer (redacted).
    pub redacted: usize,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl DistillSummary {
    /// Records without an insight in the output.
    pub fn missing(&self) -> usize {
        self.failed.len() + self.not_started
    }
}

/// Distill every record not yet done, then write the output.
pub fn run(cfg: &DistillConfig, progress: &dyn Progress) -> Result<DistillSummary> {
    check(cfg)?;
    let corpus = corpus::read(&cfg.input, &cfg.fields)?;
    for n in &corpus.notes {
        progress.log(&format!("distill: {n}"));
    }
    let key = DistillKey {
        model: cfg.server.model.clone(),
        template_sha256: super::trace::text_sha256(&cfg.template),
        system_sha256: cfg.system.as_deref().map(super::trace::text_sha256),
        words: cfg.words,
        sampling: cfg.sampling.clone(),
    };
    let log_path = log::path_for(&cfg.out);
    let mut done = resumed(&log_path, &key, cfg.force, &corpus, progress)?;
    let todo: Vec<&Item> = corpus
        .items
        .iter()
        .filter(|i| !done.contains_key(&i.id))
        .collect();
    let mut summary = DistillSummary {
        records: corpus.items.len(),
        resumed: done.len(),
        out: cfg.out.clone(),
        log: log_path.clone(),
        ..Default::default()
    };
    if summary.resumed > 0 {
        progress.log(&format!(
            "distill: {} of {} records already distilled in {}, {} to go",
            summary.resumed,
            summary.records,
            log_path.display(),
            todo.len()
        ));
    }
    let log = Log::open(&log_path, &key)?;
    let client = Client::new(
        &cfg.server.endpoint,
        &cfg.server.model,
        cfg.server.api_key.clone(),
        cfg.server.retry.clone(),
    );
    let _server = match &cfg.server.launch {
        Some(spec) if !todo.is_empty() => Some(super::launch::launch(
            spec,
            &client,
            cfg.time_budget.map(|b| cfg.started + b),
        )?),
        _ => None,
    };
    let fresh = distill_all(cfg, &client, &todo, &log, progress)?;
    for e in fresh {
        match (&e.insight, &e.error) {
            (Some(_), _) => {
                summary.distilled += 1;
                summary.redacted += (e.redacted > 0) as usize;
                done.insert(e.id.clone(), e);
            }
            (None, err) => summary
                .failed
                .push((e.id.clone(), err.clone().unwrap_or_default())),
        }
    }
    summary.not_started = summary.records - done.len() - summary.failed.len();
    write_output(cfg, &corpus, &done)?;
    Ok(summary)
}

/// The insights an earlier run logged for records whose content is unchanged.
fn resumed(
    log_path: &std::path::Path,
    key: &DistillKey,
    force: bool,
    corpus: &Corpus,
    progress: &dyn Progress,
) -> Result<HashMap<String, Entry>> {
    let (mut done, aside) = log::read(log_path, key, force)?;
    if let Some(a) = aside {
        progress.log(&format!(
            "--force: the earlier log moved to {}",
            a.display()
        ));
    }
    let content: HashMap<&str, String> = corpus
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.content_sha()))
        .collect();
    done.retain(|id, e| e.insight.is_some() && content.get(id.as_str()) == Some(&e.content));
    Ok(done)
}

fn check(cfg: &DistillConfig) -> Result<()> {
    if cfg.words == 0 {
        bail!("--words must be at least 1");
    }
    if cfg.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !cfg.template.contains("{solution}") {
        bail!("the template has no {{solution}} placeholder: there would be nothing to distill");
    }
    corpus::out_format(&cfg.out)?;
    if crate::fsio::canonical(&cfg.out) == crate::fsio::canonical(&cfg.input) {
        bail!(
            "--out {} is the input: write the distilled corpus to a new file",
            cfg.out.display()
        );
    }
    Ok(())
}

/// Every record of `todo`, `concurrency` at a time; each outcome is logged as it finishes.
fn distill_all(
    cfg: &DistillConfig,
    client: &Client,
    todo: &[&Item],
    log: &Log,
    progress: &dyn Progress,
) -> Result<Vec<Entry>> {
    let deadline = cfg.time_budget.map(|b| cfg.started + b);
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let out = Mutex::new(Vec::with_capacity(todo.len()));
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let task = progress.task("distill", Some(todo.len() as u64), "records");
    std::thread::scope(|s| {
        for _ in 0..cfg.concurrency.min(todo.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len()
                    || deadline.is_some_and(|d| Instant::now() >= d)
                    || failure.lock().unwrap().is_some()
                {
                    return;
                }
                let far = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
                let e = distill_one(cfg, client, todo[i], deadline.unwrap_or(far), &cancel);
                if let Err(err) = log.append(&e) {
                    *failure.lock().unwrap() = Some(err);
                    return;
                }
                out.lock().unwrap().push(e);
                task.inc(1);
            });
        }
    });
    drop(task);
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e.context("writing the distill log"));
    }
    Ok(out.into_inner().unwrap())
}

/// One record's request and what is kept of its reply.
fn distill_one(
    cfg: &DistillConfig,
    client: &Client,
    item: &Item,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Entry {
    let mut e = Entry {
        id: item.id.clone(),
        content: item.content_sha(),
        insight: None,
        error: None,
        attempts: 0,
        seconds: 0.0,
        redacted: 0,
        truncated: false,
    };
    if item.solution.trim().is_empty() {
        e.error = Some("the record has no solution text".into());
        return e;
    }
    let words = cfg.words.to_string();
    let prompt = reply::fill(
        &cfg.template,
        &[
            ("problem", item.problem.trim()),
            ("solution", item.solution.trim()),
            ("answer", item.answer.trim()),
            ("words", &words),
        ],
    );
    let mut messages = Vec::new();
    if let Some(s) = &cfg.system {
        messages.push(Message::new(Role::System, s.clone()));
    }
    messages.push(Message::new(Role::User, prompt));
    let a = client.complete(&messages, &cfg.sampling, deadline, cancel);
    (e.attempts, e.seconds) = (a.attempts, a.seconds);
    let Some(c) = a.completion else {
        e.error = Some(match a.errors.last() {
            Some(last) => format!("{} attempts failed; last: {last}", a.attempts),
            None => "no reply before the time budget ran out".into(),
        });
        return e;
    };
    match reply::clean(&c, cfg.words) {
        Ok((text, truncated)) => {
            let (text, redacted) = reply::redact(&text, &item.answer);
            (e.insight, e.redacted, e.truncated) = (Some(text), redacted, truncated);
        }
        Err(why) => e.error = Some(why),
    }
    e
}

fn write_output(cfg: &DistillConfig, corpus: &Corpus, done: &HashMap<String, Entry>) -> Result<()> {
    let insights: Vec<Option<String>> = corpus
        .items
        .iter()
        .map(|i| done.get(&i.id).and_then(|e| e.insight.clone()))
        .collect();
    corpus::write(&cfg.input, corpus, &insights, &cfg.out)
}
