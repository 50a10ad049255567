//! The retrieval index: an HNSW graph (`hnsw`) over the extracted embeddings, the raw vectors
//! for exact search, the records for display, and a manifest that ties them together.
//!
//! ```text
//! indexes/NAME/
//!   manifest.json      extraction manifest + index parameters, counts, and a sha256 per file
//!   vectors.f32        N x dim little-endian f32, row i = internal id i
//!   records.parquet    id and every passed-through column, row i = internal id i
//!   graph.hnsw.graph   links: flat u32 lists, layer 0 then the upper layers
//!   graph.hnsw.data    graph header and every point's level
//!   .verified          stamp of the last full sha256 check (see `load`)
//! ```
//!
//! Every file is checked against the manifest's size (always) and sha256 (see `load` for when),
//! and the graph's own header, sizes and link ids are checked when it is read: a damaged index
//! is an error, never a panic in a later search.

mod build;
pub mod exact;
pub mod export;
pub mod external;
pub mod hnsw;
pub mod load;
pub mod reach;
pub mod recover;
pub mod simd;
pub mod vectors;

pub use build::build;
pub use external::{ExternalVectors, Fields};
pub use load::{read_manifest, read_manifest_at, Verification};
pub use reach::Reachability;
pub use vectors::Vectors;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::encoder::{Checkpoint, Device, Encoder, EncoderOptions, RecipeOverrides};
use crate::extract::manifest::ExtractManifest;
use crate::fsio::FileDigest;

pub const FORMAT: &str = "exemplar.index.v2";
pub const DEFAULT_M: usize = 16;
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Query-time candidate list. Measured (docs/benchmarks.md): recall@10 >= 0.99 from ef 16 on the
/// MATH+AIME MiniLM index and >= 0.9986 at ef 32 on 100k-200k clustered synthetic sets; 64 keeps a
/// margin at half the cost of 128.
pub const DEFAULT_EF: usize = 64;
/// Below this many vectors a full scan is as fast as the graph and exact.
pub const EXACT_BELOW: usize = 5_000;

/// The files of an index, with the size and sha256 each must have.
const FILES: [&str; 4] = [
    "vectors.f32",
    "records.parquet",
    "graph.hnsw.graph",
    "graph.hnsw.data",
];

/// How a query is answered: a full scan, or the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMethod {
    Exact,
    Hnsw,
}
crate::named_enum!(SearchMethod { Exact => "exact", Hnsw => "hnsw" });

/// One search: `method: None` lets the index choose by its size (the one rule every caller
/// shares: exact below [`EXACT_BELOW`] vectors, else the graph).
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions<'a> {
    pub ef: usize,
    pub method: Option<SearchMethod>,
    /// Sorted rows that may be returned (a filter); `None` for all.
    pub allowed: Option<&'a Vec<usize>>,
}

impl Default for SearchOptions<'_> {
    fn default() -> Self {
        Self {
            ef: DEFAULT_EF,
            method: None,
            allowed: None,
        }
    }
}

/// Hits, best first, and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub hits: Vec<Hit>,
    pub method: SearchMethod,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexParams {
    pub m: usize,
    pub ef_construction: usize,
    pub default_ef: usize,
    pub distance: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexManifest {
    pub format: String,
    pub count: usize,
    pub dim: usize,
    pub params: IndexParams,
    pub build_seconds: f64,
    pub source: String,
    pub embeddings: ExtractManifest,
    pub files: BTreeMap<String, FileDigest>,
    /// Set when the vectors came from files another tool wrote (no model of ours made them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalVectors>,
    /// The post-build reachability check (absent in indexes built before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
    /// The model folder relative to the index folder, for when both moved together (absent in
    /// older indexes and for external vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_from_index: Option<String>,
}

pub type Graph = hnsw::Hnsw;

/// A loaded, checked index.
pub struct Index {
    pub dir: PathBuf,
    pub manifest: IndexManifest,
    /// Memory-mapped `vectors.f32`; `vectors.as_slice()` is the N x dim `&[f32]`.
    pub vectors: Vectors,
    /// Whether the files were hashed at this load or vouched for by the `.verified` stamp.
    pub verification: Verification,
    graph: Graph,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Internal id (row in vectors.f32 and records.parquet).
    pub row: usize,
    /// Cosine similarity (the vectors are unit length).
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub m: usize,
    pub ef_construction: usize,
    /// Column names when `--embeddings` is Parquet another tool wrote.
    pub fields: Fields,
    /// `--embeddings` is Parquet another tool wrote (`--external`); otherwise it must be an
    /// `embed extract` folder.
    pub external: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            m: DEFAULT_M,
            ef_construction: DEFAULT_EF_CONSTRUCTION,
            fields: Fields::default(),
            external: false,
        }
    }
}

/// Read the extraction manifest and check that every shard is complete.
pub fn check_embeddings(dir: &Path) -> Result<ExtractManifest> {
    let m = crate::extract::manifest::read_complete(dir)?;
    let path = dir.join("manifest.json");
    if !m.recipe.normalize {
        bail!(
            "{}: the index needs L2-normalised embeddings (extracted without --no-normalize)",
            path.display()
        );
    }
    Ok(m)
}

impl Index {
    pub fn len(&self) -> usize {
        self.manifest.count
    }
    pub fn is_empty(&self) -> bool {
        self.manifest.count == 0
    }
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }
    /// The HNSW graph (read-only: exports and tests walk its links).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim()..(row + 1) * self.dim()]
    }

    /// How a search with `forced` (or none) is answered: the one rule every caller shares.
    pub fn method_for(&self, forced: Option<SearchMethod>) -> SearchMethod {
        forced.unwrap_or(if self.len() < EXACT_BELOW {
            SearchMethod::Exact
        } else {
            SearchMethod::Hnsw
        })
    }

    /// The k nearest neighbours of `query`, best first, by the method `opts` asks for (or the
    /// index's size decides).
    pub fn search(&self, query: &[f32], k: usize, opts: &SearchOptions) -> Found {
        let method = self.method_for(opts.method);
        let hits = match method {
            SearchMethod::Exact => self.search_exact(query, k, opts.allowed),
            SearchMethod::Hnsw => self.search_hnsw(query, k, opts.ef, opts.allowed),
        };
        Found { hits, method }
    }

    /// Approximate k nearest neighbours through the graph, best first.
    pub fn search_hnsw(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allowed: Option<&Vec<usize>>,
    ) -> Vec<Hit> {
        let allowed = allowed.map(|rows| hnsw::Allowed::new(rows, self.len()));
        let found = self.graph.search(
            &self.vectors,
            self.dim(),
            query,
            k,
            ef.max(k),
            allowed.as_ref(),
        );
        // Scores from the same dot product as the exact scan, so both report identical cosines.
        let mut hits: Vec<Hit> = found
            .iter()
            .map(|c| Hit {
                row: c.id as usize,
                score: simd::dot(self.vector(c.id as usize), query),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        hits
    }

    /// Exact k nearest neighbours by a full scan, best first.
    pub fn search_exact(&self, query: &[f32], k: usize, allowed: Option<&Vec<usize>>) -> Vec<Hit> {
        exact::top_k(&self.vectors, self.dim(), query, k, allowed)
    }

    /// Read records.parquet rows as JSON objects (all columns), in row order.
    pub fn records(&self) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        read_records(&self.dir.join("records.parquet"))
    }
}

/// The graph files of `dir`, checked against the manifest's point count.
fn load_graph(dir: &Path, count: usize) -> Result<Graph> {
    hnsw::Hnsw::load(
        &dir.join("graph.hnsw.data"),
        &dir.join("graph.hnsw.graph"),
        count,
    )
    .with_context(|| format!("{}: cannot load the HNSW graph", dir.display()))
}

pub fn read_records(path: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.with_context(|| format!("reading {}", path.display()))?;
        out.extend((0..batch.num_rows()).map(|i| crate::arrow_json::row_json(&batch, i, &[])));
    }
    Ok(out)
}

/// Rows whose `field` equals `value`, sorted (the form `SearchOptions::allowed` takes).
pub fn filter_rows(
    records: &[serde_json::Map<String, serde_json::Value>],
    field: &str,
    value: &str,
) -> Result<Vec<usize>> {
    if let Some(first) = records.first() {
        if !first.contains_key(field) {
            let fields: Vec<&String> = first.keys().collect();
            bail!("--filter: no field {field:?} in the index records; fields: {fields:?}");
        }
    }
    Ok(records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.get(field)
                .and_then(crate::arrow_json::value_text)
                .as_deref()
                == Some(value)
        })
        .map(|(i, _)| i)
        .collect())
}

/// The encoder that embeds queries for this index: the model and recipe the index was built
/// with (`model` replaces the stored path when the folder moved; it must be the same weights).
pub fn query_encoder(
    manifest: &IndexManifest,
    model: Option<&str>,
    device: Device,
) -> Result<Encoder> {
    if manifest.external.is_some() {
        return external_query_encoder(manifest, model, device);
    }
    let em = &manifest.embeddings;
    let r = &em.recipe;
    let path = model.unwrap_or(&em.model_path);
    let opts = EncoderOptions {
        device,
        dtype: Some(em.dtype),
        max_batch_tokens: None,
        overrides: RecipeOverrides {
            attention: Some(r.attention),
            pooling: Some(r.pooling),
            normalize: Some(r.normalize),
            append_eos: Some(r.append_eos),
            max_length: Some(r.max_length),
            document_template: Some(r.document_template.clone()),
            query_template: Some(r.query_template.clone()),
            instruction: Some(r.instruction.clone()),
            padding_side: Some(r.padding_side),
            truncate_dim: r.truncate_dim,
        },
    };
    // Same weights first: a different model would give vectors from another space.
    let moved = || {
        format!(
            "opening the index's model {path:?} (if the model folder moved, pass --model DIR \
             naming the same weights)"
        )
    };
    let checkpoint = Checkpoint::open_checked(path, &opts.overrides, |found| {
        if found != em.model_fingerprint {
            bail!(
                "model {path:?} (fingerprint {found}) is not the model this index was built with \
                 ({}, fingerprint {})",
                em.model,
                em.model_fingerprint
            );
        }
        Ok(())
    })
    .with_context(moved)?;
    Encoder::from_checkpoint(&checkpoint, &opts).with_context(|| {
        format!("loading the index's model {path:?} (pass --model if the folder moved)")
    })
}

/// Query encoder for an index of external vectors: no model of ours made them, so the caller
/// names the model (`--model`), which is used with its own recipe; only the dimension can be
/// checked.
fn external_query_encoder(
    manifest: &IndexManifest,
    model: Option<&str>,
    device: Device,
) -> Result<Encoder> {
    let Some(path) = model else {
        bail!(
            "this index holds vectors another tool wrote ({}); no exemplar model made them, so \
             embedding a query text needs --model naming the model that did (or search with \
             --vectors FILE)",
            manifest.source
        );
    };
    let opts = EncoderOptions {
        device,
        ..Default::default()
    };
    let encoder = Encoder::load(path, &opts)?;
    if encoder.dim() != manifest.dim {
        bail!(
            "model {path:?} makes {}-d vectors, the index holds {}-d vectors",
            encoder.dim(),
            manifest.dim
        );
    }
    eprintln!(
        "note: external vectors: queries are embedded by {path} with its own recipe; the index \
         cannot check that this model made its vectors"
    );
    Ok(encoder)
}

/// One row of `embed index eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub ef: usize,
    pub recall: f64,
    pub qps: f64,
}

/// Recall@k of the graph against exact search, on `queries` stored vectors spread evenly over
/// the index. Each query's own row is left out of both answers, so it measures finding the
/// other neighbours.
pub fn evaluate(index: &Index, queries: usize, k: usize, efs: &[usize]) -> Vec<EvalRow> {
    let n = index.len();
    let queries = queries.min(n).max(1);
    let rows: Vec<usize> = (0..queries).map(|i| i * n / queries).collect();
    // The k nearest other rows (a query's own row is left out).
    let others = |r: usize, hits: Vec<Hit>| -> Vec<usize> {
        hits.into_iter()
            .map(|h| h.row)
            .filter(|&x| x != r)
            .take(k)
            .collect()
    };
    let truth: Vec<Vec<usize>> = rows
        .iter()
        .map(|&r| others(r, index.search_exact(index.vector(r), k + 1, None)))
        .collect();
    efs.iter()
        .map(|&ef| {
            let start = Instant::now();
            let found: Vec<Vec<usize>> = rows
                .iter()
                .map(|&r| others(r, index.search_hnsw(index.vector(r), k + 1, ef, None)))
                .collect();
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            let hit: usize = found
                .iter()
                .zip(&truth)
                .map(|(f, t)| f.iter().filter(|x| t.contains(x)).count())
                .sum();
            let total: usize = truth.iter().map(Vec::len).sum();
            EvalRow {
                ef,
                recall: hit as f64 / total.max(1) as f64,
                qps: rows.len() as f64 / secs,
            }
        })
        .collect()
}
