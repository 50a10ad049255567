//! Neighbour retrieval for `solve`: the index, its own query encoder, and its records.

use anyhow::Result;
use serde_json::Value;
use std::path::Path;

use super::prompt::{Example, RagSpec};
use crate::encoder::TextKind;
use crate::index::Index;

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
