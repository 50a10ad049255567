//! Neighbour retrieval for `solve`: the index, its own query encoder, and its records; with
//! `--exclude`, the records that are the same problem as one being solved are never returned.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

use super::exclude::{TwinCounts, TwinIndex, TwinMatch};
use super::prompt::{Example, RagSpec};
use crate::encoder::TextKind;
use crate::index::Index;

/// Neighbour retrieval for one problem: embedding + search + filtering.
pub struct Retriever {
    index: Index,
    encoder: crate::encoder::Encoder,
    records: Vec<serde_json::Map<String, Value>>,
    /// Rows that are twins of an `--exclude` problem: never retrieved.
    twins: HashMap<usize, TwinMatch>,
}

/// A hit left out of a retrieval, and why (for the trace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    pub id: String,
    pub score: f32,
    /// `same id as p1`, `same text as p1`, `word 5-gram overlap 0.83 with p1`, or
    /// `score 0.991 above exclude-above 0.98`.
    pub reason: String,
}

/// The neighbours of one query, and the hits left out as the same problem.
#[derive(Debug, Clone, Default)]
pub struct Retrieval {
    pub examples: Vec<Example>,
    pub excluded: Vec<Excluded>,
}

fn text(r: &serde_json::Map<String, Value>, f: &str) -> String {
    r.get(f).and_then(|v| v.as_str()).unwrap_or("").to_string()
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
            twins: HashMap::new(),
        })
    }

    /// `--exclude`: mark every record that is the same problem as one of `set` (by id, text or
    /// n-gram overlap) so it is never retrieved; the counts by kind.
    pub fn exclude(&mut self, set: &TwinIndex) -> TwinCounts {
        let mut counts = TwinCounts::default();
        for (row, r) in self.records.iter().enumerate() {
            let problem = match text(r, "problem") {
                p if p.is_empty() => text(r, "text"),
                p => p,
            };
            if let Some(m) = set.find(&text(r, "id"), &problem) {
                counts.add(&m.why);
                self.twins.insert(row, m);
            }
        }
        counts
    }

    /// Embed every problem as a query in one batched pass (length-sorted batches amortise the
    /// forward pass far better than one text at a time).
    pub fn embed_queries(&self, problems: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.encoder.encode(problems, TextKind::Query)?.vectors)
    }

    /// The neighbours of `query` (see [`Retriever::retrieve_traced`]).
    pub fn retrieve(&self, query: &[f32], spec: &RagSpec) -> Vec<Example> {
        self.retrieve_traced(query, spec).examples
    }

    /// The `spec.k` nearest records that pass the filters, and the hits left out as the same
    /// problem (an `--exclude` twin, or a score above `exclude-above`). Weak matches
    /// (`min-score`) are dropped silently.
    pub fn retrieve_traced(&self, query: &[f32], spec: &RagSpec) -> Retrieval {
        if spec.k == 0 {
            return Retrieval::default();
        }
        // Ask for more than k: twins, near-duplicates and weak matches are dropped below.
        let want = spec.k * 3 + 5 + self.twins.len().min(100);
        let opts = crate::index::SearchOptions {
            ef: crate::index::DEFAULT_EF.max(want),
            ..Default::default()
        };
        let mut out = Retrieval::default();
        for h in self.index.search(query, want, &opts).hits {
            if out.examples.len() == spec.k {
                break;
            }
            let r = &self.records[h.row];
            let reason = match (self.twins.get(&h.row), spec.exclude_above) {
                (Some(m), _) => Some(twin_reason(m)),
                (None, Some(t)) if h.score > t => {
                    Some(format!("score {:.4} above exclude-above {t}", h.score))
                }
                _ => None,
            };
            if let Some(reason) = reason {
                out.excluded.push(Excluded {
                    id: text(r, "id"),
                    score: h.score,
                    reason,
                });
                continue;
            }
            if spec.min_score.is_some_and(|t| h.score < t) {
                continue;
            }
            out.examples.push(example(r, h.score));
        }
        out
    }
}

fn twin_reason(m: &TwinMatch) -> String {
    use super::exclude::{Twin, NGRAM};
    match &m.why {
        Twin::SameId => format!("same id as {}", m.problem),
        Twin::SameText => format!("same text as {}", m.problem),
        Twin::Overlap { jaccard } => {
            format!("word {NGRAM}-gram overlap {jaccard:.2} with {}", m.problem)
        }
    }
}

/// A record as a neighbour: its solution ends with its boxed answer; an empty insight is none.
fn example(r: &serde_json::Map<String, Value>, score: f32) -> Example {
    let answer = text(r, "answer");
    let mut e = Example {
        id: text(r, "id"),
        score,
        problem: text(r, "problem"),
        solution: text(r, "solution"),
        insight: Some(text(r, "insight")).filter(|i| !i.trim().is_empty()),
        answer,
    };
    e.solution = e.solution_with_box(Some(&e.answer));
    e
}
