//! `solve --serve`: line mode for a competition gateway that hands out one problem at a time.
//!
//! Every stdin line `{"id": ..., "problem": "..."}` is answered, in order, by a [`Solver`]
//! (loaded once), with one stdout line `{"id": ..., "answer": N, "seconds": S}` (and `"error"`
//! when the problem could not be worked on: the answer is then `--fallback`). Ids are keyed in
//! the traces as strings as they are, numbers in JSON form.

use anyhow::{bail, Result};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::time::Instant;

use super::solver::Solver;
use crate::progress::Progress;

/// Answer stdin's problems until it ends.
pub(super) fn session(mut solver: Solver, progress: &dyn Progress) -> Result<()> {
    progress.log(&format!(
        "serve: session {}: retriever loaded in {:.2} s; reading one JSON problem per line \
         on stdin",
        solver.session(),
        solver.load_seconds()
    ));
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let reply = match parse(&line) {
            Ok((id, problem)) => {
                let answer = solver.solve(&id_text(&id), &problem).map(|s| s.answer);
                answer_line(id, answer, solver.fallback(), t0)
            }
            Err(e) => answer_line(Value::Null, Err(e), solver.fallback(), t0),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
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
