//! The problems to solve: `id, problem[, answer, source]` records from csv / jsonl / parquet.

use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

use super::answer;

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
    for record in crate::corpus::records_with_ids(path) {
        let (loc, id, fields) = record?;
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
