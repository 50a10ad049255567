//! `solve --serve`: line mode for a competition gateway that hands out one problem at a time.
//!
//! Every stdin line `{"id": ..., "problem": "..."}` is answered, in order, by a [`Solver`]
//! (loaded once), with one stdout line `{"id": ..., "answer": N, "seconds": S}` (and `"error"`
//! when the problem could not be worked on: the answer is then `--fallback`). Ids are keyed in
//! the traces as strings as they are, numbers in JSON form. The submission at `--out` is
//! rewritten (atomically) after every answer, so it holds every id answered so far.

use anyhow::{bail, Result};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::time::Instant;

use super::outcome::Status;
use super::report::{self, Summary};
use super::solver::{Solved, Solver};
use crate::progress::Progress;

/// Answer stdin's problems until it ends; what became of them.
pub(super) fn session(mut solver: Solver, progress: &dyn Progress) -> Result<Summary> {
    progress.log(&format!(
        "serve: session {}: retriever loaded in {:.2} s; reading one JSON problem per line \
         on stdin",
        solver.session(),
        solver.load_seconds()
    ));
    let mut out = std::io::stdout().lock();
    let mut rows = Rows::default();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let reply = match parse(&line) {
            Ok((id, problem)) => {
                let key = id_text(&id);
                let solved = solver.solve(&key, &problem);
                rows.add(&solver, key, &solved)?;
                let answer = solved.and_then(|s| match (s.status, s.failure) {
                    (Status::Failed, Some(why)) => bail!("no reply from the server: {why}"),
                    _ => Ok(s.answer),
                });
                answer_line(id, answer, solver.fallback(), t0)
            }
            Err(e) => answer_line(Value::Null, Err(e), solver.fallback(), t0),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    let (out_path, traces) = solver.outputs();
    let summary = Summary {
        out: out_path.into(),
        traces: traces.into(),
        ..rows.summary
    };
    report::say_summary(&summary, "serve");
    Ok(summary)
}

/// The submission's rows in the order the problems came, and the tally of outcomes.
#[derive(Default)]
struct Rows {
    rows: Vec<(String, u64)>,
    summary: Summary,
}

impl Rows {
    /// Record a problem's answer (the fallback when it could not be worked on) and rewrite
    /// the submission.
    fn add(&mut self, solver: &Solver, id: String, solved: &Result<Solved>) -> Result<()> {
        let s = &mut self.summary;
        let answer = match solved {
            Ok(v) => {
                match v.status {
                    Status::Answered => s.answered += 1,
                    Status::Fallback => s.fallbacks += 1,
                    Status::OutOfTime => s.out_of_time += 1,
                    Status::Failed => s.failed += 1,
                }
                if v.status == Status::Failed && s.first_failure.is_none() {
                    s.first_failure =
                        Some(format!("{id}: {}", v.failure.as_deref().unwrap_or("?")));
                }
                v.answer
            }
            Err(_) => solver.fallback(),
        };
        s.problems += 1;
        match self.rows.iter_mut().find(|(k, _)| *k == id) {
            Some(row) => row.1 = answer,
            None => self.rows.push((id, answer)),
        }
        let rows: Vec<(&str, u64)> = self.rows.iter().map(|(k, a)| (k.as_str(), *a)).collect();
        report::write_rows(solver.outputs().0, &rows)
    }
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
