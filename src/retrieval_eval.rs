//! `embed eval-retrieval`: are the neighbours any good? For labelled queries, the share of the k
//! neighbours that share the query's label (label precision@k), the mean reciprocal rank of the
//! first same-label neighbour, and the near-duplicate rate (possible leakage), for the embedding
//! index beside a lexical BM25 baseline and random neighbours on the same corpus; and how many
//! queries have a twin in the corpus (the same problem: same id, same normalised text or word
//! 5-gram overlap, as `solve --exclude` judges it).

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

use crate::encoder::TextKind;
use crate::index::Index;
use crate::solve::exclude::{TwinCounts, TwinIndex};

/// Ranks searched for the first same-label neighbour (reciprocal rank 0 beyond it).
const MRR_DEPTH: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct MethodScores {
    pub method: String,
    pub precision_at_k: f64,
    pub mrr: f64,
    /// Share of queries with a neighbour at or above the duplicate threshold (cosine methods only).
    pub near_duplicate_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub queries: usize,
    pub k: usize,
    pub label: String,
    pub duplicate_threshold: f32,
    pub methods: Vec<MethodScores>,
    /// Queries (all, labelled or not) whose problem is in the corpus.
    pub queries_with_twin: usize,
    /// Those queries by the first test their twin passed.
    pub twins: TwinCounts,
    /// Word 5-gram Jaccard overlap at or above which a record is the query's twin.
    pub twin_overlap: f64,
}

struct Query {
    id: String,
    text: String,
    label: String,
}

/// Every query's (id, text), labelled or not: what the twin count looks at.
type IdTexts = Vec<(String, String)>;

/// The labelled queries, and every query's (id, text) for the twin count.
fn read_queries(path: &Path, label: &str) -> Result<(Vec<Query>, IdTexts)> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    for record in crate::corpus::records_with_ids(path) {
        let (loc, id, fields) = record?;
        let text = crate::corpus::field_as_text(&fields, "problem")
            .or_else(|| crate::corpus::field_as_text(&fields, "text"))
            .filter(|t| !t.trim().is_empty())
            .with_context(|| format!("{loc}: missing \"problem\" (or \"text\")"))?;
        all.push((id.clone(), text.clone()));
        // Queries without a label cannot be scored; they are skipped, not guessed.
        if let Some(l) = crate::corpus::field_as_text(&fields, label) {
            out.push(Query { id, text, label: l });
        }
    }
    if out.is_empty() {
        bail!("{}: no query has a {label:?} field", path.display());
    }
    Ok((out, all))
}

/// How many of `queries` have a twin among the corpus records, by kind.
fn count_twins(
    ids: &[String],
    texts: &[String],
    queries: &[(String, String)],
    overlap: f64,
) -> (usize, TwinCounts) {
    let corpus = TwinIndex::new(ids.iter().cloned().zip(texts.iter().cloned()), overlap);
    let mut counts = TwinCounts::default();
    for (id, text) in queries {
        if let Some(m) = corpus.find(id, text) {
            counts.add(&m.why);
        }
    }
    (counts.total(), counts)
}

/// Lowercased alphanumeric words (LaTeX commands become words too, which suits math text).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Okapi BM25 (k1 = 1.2, b = 0.75) over the index's problem texts. Written here: a scorer this
/// small is not worth a search-engine dependency.
struct Bm25 {
    docs: Vec<HashMap<String, u32>>,
    lengths: Vec<f64>,
    idf: HashMap<String, f64>,
    avg_len: f64,
}

impl Bm25 {
    fn new(texts: &[String]) -> Self {
        let docs: Vec<HashMap<String, u32>> = texts
            .iter()
            .map(|t| {
                let mut tf = HashMap::new();
                for w in words(t) {
                    *tf.entry(w).or_insert(0) += 1;
                }
                tf
            })
            .collect();
        let lengths: Vec<f64> = docs
            .iter()
            .map(|d| d.values().sum::<u32>() as f64)
            .collect();
        let n = docs.len() as f64;
        let mut df: HashMap<String, f64> = HashMap::new();
        for d in &docs {
            for w in d.keys() {
                *df.entry(w.clone()).or_insert(0.0) += 1.0;
            }
        }
        let idf = df
            .into_iter()
            .map(|(w, f)| (w, ((n - f + 0.5) / (f + 0.5) + 1.0).ln()))
            .collect();
        let avg_len = lengths.iter().sum::<f64>() / n.max(1.0);
        Self {
            docs,
            lengths,
            idf,
            avg_len,
        }
    }

    fn top(&self, query: &str, k: usize) -> Vec<usize> {
        let (k1, b) = (1.2, 0.75);
        let q = words(query);
        let mut scored: Vec<(f64, usize)> = self
            .docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let s: f64 = q
                    .iter()
                    .filter_map(|w| {
                        let tf = *d.get(w)? as f64;
                        let idf = self.idf.get(w)?;
                        Some(
                            idf * tf * (k1 + 1.0)
                                / (tf + k1 * (1.0 - b + b * self.lengths[i] / self.avg_len)),
                        )
                    })
                    .sum();
                (s, i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, i)| i).collect()
    }
}

/// Label precision@k and reciprocal rank for one ranked list.
fn score(ranked: &[usize], labels: &[Option<String>], label: &str, k: usize) -> (f64, f64) {
    let same = |&row: &usize| labels[row].as_deref() == Some(label);
    let top_k = ranked.iter().take(k);
    let precision = top_k.clone().filter(|r| same(r)).count() as f64 / k as f64;
    let rr = ranked
        .iter()
        .position(same)
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);
    (precision, rr)
}

/// What the scoring needs of each index record: its id, label and text.
struct Columns {
    ids: Vec<String>,
    labels: Vec<Option<String>>,
    texts: Vec<String>,
}

fn columns(records: &[serde_json::Map<String, serde_json::Value>], label: &str) -> Result<Columns> {
    if !records.first().is_some_and(|r| r.contains_key(label)) {
        let fields: Vec<&String> = records
            .first()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        bail!("the index records have no field {label:?}; fields: {fields:?}");
    }
    let text = |r: &serde_json::Map<String, serde_json::Value>, f: &str| -> Option<String> {
        r.get(f).and_then(|v| v.as_str()).map(str::to_string)
    };
    Ok(Columns {
        ids: records
            .iter()
            .map(|r| text(r, "id").unwrap_or_default())
            .collect(),
        labels: records
            .iter()
            .map(|r| r.get(label).and_then(crate::arrow_json::value_text))
            .collect(),
        texts: records
            .iter()
            .map(|r| {
                text(r, "problem")
                    .or_else(|| text(r, "text"))
                    .unwrap_or_default()
            })
            .collect(),
    })
}

/// `depth` distinct random rows (xorshift; seeded by the caller, so runs repeat) that pass
/// `keep`.
fn random_rows(
    state: &mut u64,
    n: usize,
    depth: usize,
    keep: impl Fn(&usize) -> bool,
) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(depth);
    while out.len() < depth.min(n.saturating_sub(1)) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let row = (*state % n as u64) as usize;
        if keep(&row) && !out.contains(&row) {
            out.push(row);
        }
    }
    out
}

/// What `evaluate` measures against which threshold.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Cosine at or above which a neighbour is a near-duplicate.
    pub duplicate: f32,
    /// Word 5-gram Jaccard overlap at or above which a record is a query's twin.
    pub twin_overlap: f64,
}

pub fn evaluate(
    index_dir: &Path,
    queries_path: &Path,
    k: usize,
    label: &str,
    thresholds: &Thresholds,
    model: Option<&str>,
) -> Result<RetrievalReport> {
    let duplicate_threshold = thresholds.duplicate;
    if k == 0 {
        bail!("-k must be at least 1");
    }
    let index = Index::load(index_dir)?;
    let Columns { ids, labels, texts } = columns(&index.records()?, label)?;
    let (queries, all_queries) = read_queries(queries_path, label)?;
    let (queries_with_twin, twins) =
        count_twins(&ids, &texts, &all_queries, thresholds.twin_overlap);
    let encoder = crate::index::query_encoder(&index.manifest, model, crate::encoder::Device::Cpu)?;
    let qtexts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let vectors = encoder.encode(&qtexts, TextKind::Query)?.vectors;
    let bm25 = Bm25::new(&texts);
    let depth = MRR_DEPTH.max(k) + 1;

    let mut sums = [(0.0, 0.0); 3];
    let mut duplicates = 0usize;
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    for (q, v) in queries.iter().zip(&vectors) {
        // A query that is itself in the corpus must not count as its own neighbour.
        let not_self = |row: &usize| ids[*row] != q.id;
        let hits = index.search_exact(v, depth, None);
        if hits
            .iter()
            .filter(|h| not_self(&h.row))
            .any(|h| h.score >= duplicate_threshold)
        {
            duplicates += 1;
        }
        let dense: Vec<usize> = hits.iter().map(|h| h.row).filter(not_self).collect();
        let lexical: Vec<usize> = bm25
            .top(&q.text, depth)
            .into_iter()
            .filter(not_self)
            .collect();
        let random = random_rows(&mut rng_state, ids.len(), depth, not_self);
        for (slot, ranked) in [dense, lexical, random].iter().enumerate() {
            let (p, rr) = score(ranked, &labels, &q.label, k);
            sums[slot].0 += p;
            sums[slot].1 += rr;
        }
    }
    let n = queries.len() as f64;
    let names = ["embedding (exact search)", "BM25 (lexical)", "random"];
    let methods = names
        .iter()
        .zip(sums)
        .enumerate()
        .map(|(i, (name, (p, rr)))| MethodScores {
            method: name.to_string(),
            precision_at_k: p / n,
            mrr: rr / n,
            near_duplicate_rate: (i == 0).then_some(duplicates as f64 / n),
        })
        .collect();
    Ok(RetrievalReport {
        queries: queries.len(),
        k,
        label: label.to_string(),
        duplicate_threshold,
        methods,
        queries_with_twin,
        twins,
        twin_overlap: thresholds.twin_overlap,
    })
}

pub fn print_table(r: &RetrievalReport) {
    println!(
        "{} labelled queries, k = {}, label = {}, near-duplicate = cosine >= {}",
        r.queries, r.k, r.label, r.duplicate_threshold
    );
    println!(
        "| method | label precision@{} | MRR (first same-label) | near-duplicate rate |",
        r.k
    );
    println!("|---|---:|---:|---:|");
    for m in &r.methods {
        let dup = m
            .near_duplicate_rate
            .map_or("-".to_string(), |d| format!("{d:.3}"));
        println!(
            "| {} | {:.3} | {:.3} | {} |",
            m.method, m.precision_at_k, m.mrr, dup
        );
    }
    println!(
        "twins: {} queries have the same problem in the corpus ({}){}",
        r.queries_with_twin,
        r.twins.describe(r.twin_overlap),
        if r.queries_with_twin > 0 {
            "; leave them out of a solve evaluation with `solve --exclude QUERIES`"
        } else {
            ""
        }
    );
}
