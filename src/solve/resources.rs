//! What a run loads once, before the first problem: the retriever (embedding model + index),
//! the client, a launched server, the prompt budget and the sandbox report. Shared by every
//! arm and problem of the run, in batch and one-at-a-time mode alike.

use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Instant;

use super::client::Client;
use super::config::SolveConfig;
use super::fit::PromptBudget;
use super::launch::{self, ServerGuard};
use super::preflight;
use super::retrieve::Retriever;
use super::sandbox::{self, SandboxInfo};
use super::tool_protocol::ToolOffer;
use super::trace;
use crate::progress::Progress;

pub(super) struct Resources {
    /// Shared with the samples' search tool (`--tools retrieve`).
    pub retriever: Option<Arc<Retriever>>,
    pub client: Client,
    /// Stops a `--launch`ed server when the run ends.
    _server: Option<ServerGuard>,
    /// None in a dry run (nothing is asked of the server).
    pub budget: Option<PromptBudget>,
    pub sandbox: Option<SandboxInfo>,
    /// Whether `tools` is offered, shared by every sample and arm of the run.
    pub offer: Arc<ToolOffer>,
    /// Seconds spent loading the retriever.
    pub load_seconds: f64,
    pub progress: Arc<dyn Progress>,
}

impl Resources {
    pub fn load(cfg: &SolveConfig, progress: Arc<dyn Progress>) -> Result<Self> {
        let server = &cfg.server;
        let client = Client::new(
            &server.endpoint,
            &server.model,
            server.api_key.clone(),
            server.retry.clone(),
        );
        let (dry_run, end) = (cfg.output.dry_run, cfg.budget.end());
        let check = || preflight::check_server(&client, &server.retry, end, progress.as_ref());
        // A server that is not there stops the run before the slow loading.
        if !dry_run && server.launch.is_none() {
            check()?;
        }
        // The retriever before a launch: a launched server may claim the whole GPU.
        let start = Instant::now();
        let retriever = open_retriever(cfg, progress.as_ref())?;
        let load_seconds = start.elapsed().as_secs_f64();
        let _server = match (&server.launch, dry_run) {
            (Some(spec), false) => {
                let guard = launch::launch(spec, &client, end)?;
                check()?;
                Some(guard)
            }
            _ => None,
        };
        let budget = match dry_run {
            true => None,
            false => Some(PromptBudget::discover(
                &client,
                server.max_model_len,
                server.solver_tokenizer.as_deref(),
                end,
            )?),
        };
        let sandbox = probe_sandbox(cfg, progress.as_ref())?;
        Ok(Self {
            retriever,
            client,
            _server,
            budget,
            sandbox,
            offer: ToolOffer::new(cfg.tools.protocol),
            load_seconds,
            progress,
        })
    }
}

/// `--force`: earlier traces are moved aside (never deleted) before anything is loaded.
pub(super) fn set_aside_if_forced(cfg: &SolveConfig, progress: &dyn Progress) -> Result<()> {
    let out = &cfg.output;
    if out.force && !out.dry_run {
        if let Some(aside) = trace::set_aside(&out.traces)? {
            progress.log(&format!(
                "--force: earlier traces moved to {}",
                aside.display()
            ));
        }
    }
    Ok(())
}

fn open_retriever(cfg: &SolveConfig, progress: &dyn Progress) -> Result<Option<Arc<Retriever>>> {
    let r = &cfg.retrieval;
    match (&r.index, r.retrieves(&cfg.tools)) {
        (Some(p), true) => {
            let start = Instant::now();
            let mut retriever = Retriever::open(p, r.embed_model.as_deref(), r.device)?;
            if let Some(ex) = &r.exclude {
                exclude_twins(&mut retriever, ex, progress)?;
            }
            progress.log(&format!(
                "retriever: index {} and its embedding model loaded on {} in {:.1} s{}",
                p.display(),
                r.device,
                start.elapsed().as_secs_f64(),
                if cfg.server.launch.is_some() {
                    ", before launching the server"
                } else {
                    ""
                }
            ));
            Ok(Some(Arc::new(retriever)))
        }
        (None, true) if r.rag.k > 0 => bail!(
            "--rag k={} needs --index (or use --rag k=0 for no retrieval)",
            r.rag.k
        ),
        (None, true) => bail!(
            "--tools retrieve (or search=on, or a --compare-rag arm with k > 0) needs --index: \
             the search looks up solved problems in an index built by `embed index build`"
        ),
        _ => Ok(None),
    }
}

/// `--exclude`: mark the index's twins of the file's problems, and say how many there are.
fn exclude_twins(
    retriever: &mut Retriever,
    ex: &super::config::ExcludeConfig,
    progress: &dyn Progress,
) -> Result<()> {
    let set = super::exclude::TwinIndex::load(&ex.problems, ex.overlap).context("--exclude")?;
    let counts = retriever.exclude(&set);
    progress.log(&format!(
        "--exclude {}: {} index records are the same problem as one of its {} problems ({}); \
         they are never retrieved",
        ex.problems.display(),
        counts.total(),
        set.len(),
        counts.describe(ex.overlap)
    ));
    Ok(())
}

/// With `--tools python`: start one sandbox up front, so a missing interpreter fails the run
/// at once, and say once what it has and what it isolates here.
fn probe_sandbox(cfg: &SolveConfig, progress: &dyn Progress) -> Result<Option<SandboxInfo>> {
    let Some(sb) = cfg.tools.sandbox.as_ref().filter(|_| !cfg.output.dry_run) else {
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
