//! The per-problem API: load once, then answer problems one at a time as a caller hands them
//! over — the `--serve` loop, or a program (a Python binding's `Solver(...).solve(id, problem)`).
//!
//! The time budget counts from [`super::BudgetConfig::started`] and is shared across calls:
//! each problem may use (time left) / (problems left), with `expected_problems` saying how many
//! will come, so unused time moves on. Every problem gets its trace line as in batch mode, with
//! the session, its position and the load time; an id already answered in the traces with the
//! same settings is answered from them (a restarted caller).

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::arm::Arm;
use super::config::{Input, SolveConfig};
use super::outcome::{self, Status};
use super::preflight;
use super::problems::Problem;
use super::resources::{self, Resources};
use super::trace::{self, RunKey, ServeInfo, Trace, TraceLog};
use crate::progress::Progress;

/// The name of the only arm a solver runs (as in batch mode's first arm).
const ARM: &str = "rag";

/// Loaded resources and the state carried from one problem to the next.
pub struct Solver {
    cfg: SolveConfig,
    res: Resources,
    key: RunKey,
    /// Problems answered in earlier sessions with the same settings, by id.
    done: BTreeMap<String, Trace>,
    log: TraceLog,
    session: String,
    /// Problems handed over so far (0-based position of the next one).
    position: usize,
}

/// One problem's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Solved {
    pub answer: u64,
    /// No sample gave a valid answer: `answer` is the configured fallback.
    pub fallback: bool,
    /// Answered from an earlier session's trace, not solved again.
    pub resumed: bool,
    /// Answered, a fallback (replies without a valid answer), out of time, or failed (no reply
    /// from the server: the answer is the fallback, and a new session solves it again).
    pub status: Status,
    /// Why there is no answer of the model's own.
    pub failure: Option<String>,
    /// Wall-clock seconds of this call.
    pub seconds: f64,
}

impl Solver {
    /// Load the retriever, the client (and a `--launch`ed server), the prompt budget and the
    /// sandbox, and read which problems the traces already answer. `cfg.input` must be
    /// [`Input::Serve`] or [`Input::Calls`]; a dry run and a second arm are refused.
    pub fn open(mut cfg: SolveConfig, progress: Arc<dyn Progress>) -> Result<Self> {
        let what = match cfg.input {
            Input::Serve => "--serve",
            Input::Calls => "a Solver",
            Input::File(_) => bail!("a Solver takes problems one at a time, not from --input"),
        };
        if cfg.output.dry_run {
            bail!("{what} answers problems; it cannot be a --dry-run");
        }
        if !cfg.retrieval.compare_rag.is_empty() {
            bail!("{what} answers with one setting; --compare-rag needs a whole --input");
        }
        preflight::check_settings(&cfg)?;
        // `--tools retrieve` settles the arm's `search`, as in batch mode.
        cfg.retrieval.rag = cfg.retrieval.arms(&cfg.tools).remove(0);
        resources::set_aside_if_forced(&cfg, progress.as_ref())?;
        let res = Resources::load(&cfg, progress)?;
        let key = Arm::new(&cfg, &res, ARM, &cfg.retrieval.rag, None)?.key;
        let done = trace::finished(&cfg.output.traces, ARM, &key)?;
        let log = TraceLog::open(&cfg.output.traces)?;
        Ok(Self {
            session: format!("{}-{}", std::process::id(), unix_seconds()),
            cfg,
            res,
            key,
            done,
            log,
            position: 0,
        })
    }

    /// Identifies this session in the traces (process id and start time).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Seconds spent loading the embedding model and the index.
    pub fn load_seconds(&self) -> f64 {
        self.res.load_seconds
    }

    /// The submission file and the traces.
    pub fn outputs(&self) -> (&std::path::Path, &std::path::Path) {
        (&self.cfg.output.out, &self.cfg.output.traces)
    }

    /// The answer written when a problem cannot be worked on.
    pub fn fallback(&self) -> u64 {
        self.cfg.sampling.fallback
    }

    /// Answer one problem within its share of the time left, and append its trace line. An
    /// error (the traces cannot be written, `--tool-protocol openai` refused) leaves the
    /// problem unanswered; the caller decides what to answer instead ([`Solver::fallback`]).
    pub fn solve(&mut self, id: &str, problem: &str) -> Result<Solved> {
        let t0 = Instant::now();
        let position = self.position;
        self.position += 1;
        if let Some((t, answer)) = self.done.get(id).and_then(|t| Some((t, t.verdict.answer?))) {
            let (status, failure) = outcome::status(t);
            return Ok(Solved {
                answer,
                fallback: t.verdict.fallback,
                resumed: true,
                status,
                failure,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        let left = self
            .cfg
            .budget
            .expected_problems
            .saturating_sub(position)
            .max(1);
        let end = self.cfg.budget.end();
        let allowed =
            end.map(|e| e.saturating_duration_since(Instant::now()).as_secs_f64() / left as f64);
        let p = Problem {
            id: id.to_string(),
            problem: problem.to_string(),
            expected: None,
            source: None,
        };
        let (cfg, key) = (&self.cfg, self.key.clone());
        let arm = Arm::with_key(cfg, &self.res, ARM, &cfg.retrieval.rag, key, end);
        let query = arm.embed_queries(&[&p])?.remove(0);
        let mut t = arm.solve_problem(&p, &query, left)?;
        t.setting.serve = Some(ServeInfo {
            session: self.session.clone(),
            load_seconds: self.res.load_seconds,
            loads: 1,
            position,
            // The share as --problem-time clamped it, when there is a budget.
            allowed_seconds: t.timing.planned_seconds.or(allowed),
        });
        t.timing.seconds = t0.elapsed().as_secs_f64();
        self.log.append(&t)?;
        let answer = t
            .verdict
            .answer
            .ok_or_else(|| anyhow::anyhow!("no answer was recorded"))?;
        let (status, failure) = outcome::status(&t);
        Ok(Solved {
            answer,
            fallback: t.verdict.fallback,
            resumed: false,
            status,
            failure,
            seconds: t.timing.seconds,
        })
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    /// A binding (a Python `Solver` object) may be moved to another thread between calls.
    #[test]
    fn a_solver_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::Solver>();
    }
}
