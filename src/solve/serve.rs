//! `solve --serve`: line mode for a competition gateway that hands out one problem at a time.
//!
//! The embedding model, the index, the server (with `--launch`) and the sandbox are loaded
//! once; then every stdin line `{"id": ..., "problem": "..."}` is answered, in order, with one
//! stdout line `{"id": ..., "answer": N, "seconds": S}` (and `"error"` when the problem could
//! not be worked on: the answer is then `--fallback`). `--time-budget` counts from process start
//! and is shared across the session: each problem may use (time left) / (problems left), with
//! `--expected-problems` saying how many will come, so unused time moves on. Every problem gets
//! its trace line as usual, with the session, its position and the load time; an id already
//! answered in the traces with the same settings is answered from them (a restarted gateway).

use anyhow::{bail, Result};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::time::Instant;

use super::problems::Problem;
use super::trace::{self, ServeInfo, Trace, TraceLog};
use super::{Loaded, SolveConfig};
use crate::progress::Progress;

/// How a `--serve` session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSpec {
    /// Problems the session expects (the per-problem time is time left / problems left).
    pub expected_problems: usize,
}

pub(super) fn session(
    cfg: &SolveConfig,
    spec: &ServeSpec,
    loaded: &Loaded<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    if cfg.dry_run {
        bail!("--serve answers problems; it cannot be a --dry-run");
    }
    let end = cfg.time_budget.map(|b| cfg.started + b);
    let arm = loaded.arm(cfg, &[], "rag", &cfg.rag, end, false)?;
    let done = trace::finished(&cfg.traces, arm.name, &arm.key)?;
    let mut log = TraceLog::open(&cfg.traces)?;
    let session = format!("{}-{}", std::process::id(), unix_seconds());
    progress.log(&format!(
        "serve: session {session}: retriever loaded in {:.2} s; reading one JSON problem per line \
         on stdin",
        loaded.load_seconds
    ));
    let info = |position: usize, allowed: Option<f64>| ServeInfo {
        session: session.clone(),
        load_seconds: loaded.load_seconds,
        loads: 1,
        position,
        allowed_seconds: allowed,
    };
    let mut out = std::io::stdout().lock();
    let mut position = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let reply = match parse(&line) {
            Ok((id, problem)) => {
                let left = spec.expected_problems.saturating_sub(position).max(1);
                let allowed = end.map(|e| {
                    e.saturating_duration_since(Instant::now()).as_secs_f64() / left as f64
                });
                let key = id_text(&id);
                let answer = match done.get(&key).and_then(|t| t.answer) {
                    Some(a) => Ok(a),
                    None => solve(&arm, &mut log, key, problem, left, info(position, allowed)),
                };
                position += 1;
                answer_line(id, answer, cfg.fallback, t0)
            }
            Err(e) => answer_line(Value::Null, Err(e), cfg.fallback, t0),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// One problem: retrieve, prompt, sample, vote, trace.
fn solve(
    arm: &super::Arm,
    log: &mut TraceLog,
    id: String,
    problem: String,
    left: usize,
    serve: ServeInfo,
) -> Result<u64> {
    let t0 = Instant::now();
    let p = Problem {
        id,
        problem,
        expected: None,
        source: None,
    };
    let (queries, embed_ms) = arm.embed_queries(&[&p])?;
    let mut prepared = arm.prepare(&p, &queries[0])?;
    prepared.retrieval_ms += embed_ms;
    let mut t: Trace = arm.base_trace(&p, &prepared, embed_ms);
    t.serve = Some(serve);
    arm.solve_one(&p, prepared, left, &mut t)?;
    t.seconds = t0.elapsed().as_secs_f64();
    log.append(&t)?;
    t.answer
        .ok_or_else(|| anyhow::anyhow!("no answer was recorded"))
}

fn parse(line: &str) -> Result<(Value, String)> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not a JSON object line: {e}"))?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    if id.is_null() {
        bail!("the line has no \"id\"");
    }
    match v.get("problem").and_then(Value::as_str) {
        Some(p) if !p.trim().is_empty() => Ok((id, p.to_string())),
        _ => bail!("the line has no \"problem\" text"),
    }
}

/// The id as the traces key it: strings as they are, numbers in JSON form.
fn id_text(id: &Value) -> String {
    id.as_str().map_or_else(|| id.to_string(), str::to_string)
}

fn answer_line(id: Value, answer: Result<u64>, fallback: u64, t0: Instant) -> Value {
    let seconds = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    match answer {
        Ok(a) => serde_json::json!({"id": id, "answer": a, "seconds": seconds}),
        Err(e) => {
            serde_json::json!({"id": id, "answer": fallback, "seconds": seconds, "error": format!("{e:#}")})
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
