//! The retrieval index: an HNSW graph (hnsw_rs) over the extracted embeddings, the raw vectors
//! for exact search, the records for display, and a manifest that ties them together.
//!
//! ```text
//! indexes/NAME/
//!   manifest.json      extraction manifest + index parameters, counts, and a sha256 per file
//!   vectors.f32        N x dim little-endian f32, row i = internal id i
//!   records.parquet    id and every passed-through column, row i = internal id i
//!   graph.hnsw.graph   hnsw_rs graph dump
//!   graph.hnsw.data    hnsw_rs data dump
//! ```
//!
//! hnsw_rs panics (asserts) on mismatched or damaged dump files, so every file is checked
//! against the manifest's size and sha256 before hnsw_rs sees it.

pub mod exact;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use hnsw_rs::prelude::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::encoder::{Checkpoint, Device, Encoder, EncoderOptions, RecipeOverrides};
use crate::extract::manifest::ExtractManifest;
use crate::extract::shard::shard_name;
use crate::fsio::{hash_file, FileDigest};
use crate::progress::Progress;

pub const FORMAT: &str = "exemplar.index.v1";
const GRAPH_BASENAME: &str = "graph";
/// hnsw_rs only dumps graphs built with 16 layers.
const MAX_LAYERS: usize = 16;
pub const DEFAULT_M: usize = 16;
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Query-time candidate list. Measured (README, "Benchmarks"): recall@10 >= 0.99 from ef 16 on the
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
}

pub type Graph = Hnsw<'static, f32, DistL2>;

/// A loaded, verified index.
pub struct Index {
    pub dir: PathBuf,
    pub manifest: IndexManifest,
    pub vectors: Vec<f32>,
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
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            m: DEFAULT_M,
            ef_construction: DEFAULT_EF_CONSTRUCTION,
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

/// Build an index from an extraction folder into `out`, atomically: everything is written to a
/// temporary sibling folder that replaces `out` only once complete. An existing `out` must be
/// an exemplar index (nothing else is ever replaced) and must not hold the embeddings.
pub fn build(
    embeddings: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<IndexManifest> {
    let start = Instant::now();
    let em = check_embeddings(embeddings)?;
    if opts.m < 2 || opts.m > 255 {
        bail!("--m must be between 2 and 255, got {}", opts.m);
    }
    check_out(embeddings, out)?;
    let tmp = crate::fsio::aside_path(out, "building");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?; // ours: a killed build of this very process id
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    match build_into(embeddings, &em, &tmp, opts, start, progress) {
        Ok(manifest) => {
            crate::fsio::replace_dir(&tmp, out)?;
            Ok(manifest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// `--out` may be new or an exemplar index, and never the embeddings folder or inside it.
fn check_out(embeddings: &Path, out: &Path) -> Result<()> {
    if out.file_name().is_none() {
        bail!("--out {}: needs a folder name", out.display());
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let emb = canon(embeddings);
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let out_abs = match parent {
        Some(p) => canon(p).join(out.file_name().unwrap_or_default()),
        None => canon(Path::new(".")).join(out),
    };
    if out_abs.starts_with(&emb) {
        bail!(
            "--out {} is inside --embeddings {}: choose a folder outside the extraction",
            out.display(),
            embeddings.display()
        );
    }
    if out.exists() && read_manifest(out).is_err() {
        bail!(
            "--out {} exists and is not an exemplar index (no readable manifest.json of ours): \
             refusing to replace it; choose another --out",
            out.display()
        );
    }
    Ok(())
}

fn build_into(
    embeddings: &Path,
    em: &ExtractManifest,
    tmp: &Path,
    opts: &BuildOptions,
    start: Instant,
    progress: &dyn Progress,
) -> Result<IndexManifest> {
    let graph: Graph = Hnsw::new(
        opts.m,
        em.rows.max(1),
        MAX_LAYERS,
        opts.ef_construction,
        DistL2 {},
    );
    let rows = insert_shards(embeddings, em, tmp, &graph, progress)?;
    if rows != em.rows {
        bail!(
            "{}: shards hold {rows} rows, manifest says {}",
            embeddings.display(),
            em.rows
        );
    }
    graph
        .file_dump(tmp, GRAPH_BASENAME)
        .context("writing the HNSW graph")?;
    let mut files = BTreeMap::new();
    for f in FILES {
        files.insert(f.to_string(), hash_file(&tmp.join(f))?);
    }
    let manifest = IndexManifest {
        format: FORMAT.into(),
        count: em.rows,
        dim: em.dim,
        params: IndexParams {
            m: opts.m,
            ef_construction: opts.ef_construction,
            default_ef: DEFAULT_EF,
            distance: "l2 on unit vectors (score = cosine)".into(),
        },
        build_seconds: start.elapsed().as_secs_f64(),
        source: embeddings.display().to_string(),
        embeddings: em.clone(),
        files,
    };
    crate::fsio::write_atomically(&tmp.join("manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &manifest)?;
        Ok(())
    })?;
    Ok(manifest)
}

/// Stream every shard into the graph, `vectors.f32` and `records.parquet` (all columns but the
/// embedding); returns the rows read.
fn insert_shards(
    embeddings: &Path,
    em: &ExtractManifest,
    tmp: &Path,
    graph: &Graph,
    progress: &dyn Progress,
) -> Result<usize> {
    let dim = em.dim;
    let bar = progress.task("indexing", Some(em.rows as u64), "vectors");
    let mut vectors_out = std::io::BufWriter::new(std::fs::File::create(tmp.join("vectors.f32"))?);
    let mut records_out: Option<ArrowWriter<std::fs::File>> = None;
    let mut row = 0usize;
    for k in 0..em.shards {
        let path = embeddings.join(format!("{}.parquet", shard_name(k, em.shards)));
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a readable Parquet file", path.display()))?
            .with_batch_size(4096)
            .build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let values = crate::extract::shard::embedding_values(&batch, dim, &path)?;
            let rows = batch.num_rows();
            let items: Vec<(&[f32], usize)> = (0..rows)
                .map(|i| (&values[i * dim..(i + 1) * dim], row + i))
                .collect();
            graph.parallel_insert_slice(&items);
            for v in values.iter() {
                vectors_out.write_all(&v.to_le_bytes())?;
            }
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&c| batch.schema().field(c).name() != "embedding")
                .collect();
            let records = batch.project(&keep)?;
            let w = match &mut records_out {
                Some(w) => w,
                None => records_out.insert(ArrowWriter::try_new(
                    std::fs::File::create(tmp.join("records.parquet"))?,
                    records.schema(),
                    None,
                )?),
            };
            w.write(&records)?;
            row += rows;
            bar.inc(rows as u64);
        }
    }
    vectors_out
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    match records_out {
        Some(w) => w.close().map(|_| row).map_err(Into::into),
        None => bail!("{}: no rows to index", embeddings.display()),
    }
}

pub fn read_manifest(dir: &Path) -> Result<IndexManifest> {
    let path = dir.join("manifest.json");
    if !dir.is_dir() {
        bail!("index {} does not exist", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: missing manifest.json; not an exemplar index",
            dir.display()
        )
    })?;
    let m: IndexManifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: damaged or not an exemplar index manifest",
            path.display()
        )
    })?;
    if m.format != FORMAT {
        bail!(
            "{}: format {:?}, this build reads {FORMAT:?}",
            path.display(),
            m.format
        );
    }
    Ok(m)
}

impl Index {
    /// Load and verify an index. Every file must match the manifest's size and sha256, so a
    /// truncated, corrupted or mixed-up file is an error here, before hnsw_rs reads it.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        if manifest.count == 0 || manifest.dim == 0 {
            bail!(
                "{}: empty index (count {}, dim {})",
                dir.display(),
                manifest.count,
                manifest.dim
            );
        }
        for (name, want) in &manifest.files {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("{}: missing {name}", dir.display()))?;
            if meta.len() != want.bytes {
                bail!(
                    "{}: {} bytes, the manifest says {} (truncated, or from another build)",
                    path.display(),
                    meta.len(),
                    want.bytes
                );
            }
            let got = hash_file(&path)?;
            if got.sha256 != want.sha256 {
                bail!(
                    "{}: content does not match the manifest (corrupted, or from another build)",
                    path.display()
                );
            }
        }
        for required in FILES {
            if !manifest.files.contains_key(required) {
                bail!("{}: the manifest lists no {required}", dir.display());
            }
        }
        let bytes = std::fs::read(dir.join("vectors.f32"))?;
        if bytes.len() != manifest.count * manifest.dim * 4 {
            bail!(
                "{}: vectors.f32 holds {} bytes, expected {} x {} x 4",
                dir.display(),
                bytes.len(),
                manifest.count,
                manifest.dim
            );
        }
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let records_rows = crate::extract::shard::parquet_rows(&dir.join("records.parquet"))?;
        if records_rows != manifest.count {
            bail!(
                "{}: records.parquet has {records_rows} rows, index has {}",
                dir.display(),
                manifest.count
            );
        }
        let graph = load_graph(dir)?;
        if graph.get_nb_point() != manifest.count {
            bail!(
                "{}: graph holds {} points, manifest says {}",
                dir.display(),
                graph.get_nb_point(),
                manifest.count
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            vectors,
            graph,
        })
    }

    pub fn len(&self) -> usize {
        self.manifest.count
    }
    pub fn is_empty(&self) -> bool {
        self.manifest.count == 0
    }
    pub fn dim(&self) -> usize {
        self.manifest.dim
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
        let ef = ef.max(k);
        let found = match allowed {
            Some(ids) => self
                .graph
                .search_filter(query, k, ef, Some(ids as &dyn FilterT)),
            None => self.graph.search(query, k, ef),
        };
        // Re-score from the stored vectors: the same cosine an exact scan reports, rather than
        // one derived from hnsw_rs's rounded L2 distance.
        let mut hits: Vec<Hit> = found
            .iter()
            .map(|n| Hit {
                row: n.d_id,
                score: self
                    .vector(n.d_id)
                    .iter()
                    .zip(query)
                    .map(|(a, b)| a * b)
                    .sum(),
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

/// hnsw_rs reload. Its `HnswIo` must outlive the graph it returns; an index lives for the whole
/// process, so the loader is leaked rather than threaded through every owner.
fn load_graph(dir: &Path) -> Result<Graph> {
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, GRAPH_BASENAME)));
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let io = io; // moved, not reborrowed: the graph may borrow it for 'static
        io.load_hnsw::<f32, DistL2>()
    }));
    std::panic::set_hook(previous);
    match loaded {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => bail!("{}: cannot load the HNSW graph: {e}", dir.display()),
        Err(_) => bail!("{}: the HNSW graph files are inconsistent", dir.display()),
    }
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

/// Rows whose `field` equals `value`, sorted (the form hnsw_rs's filter wants).
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
        },
    };
    // Same weights first: a different model would give vectors from another space.
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
    })?;
    Encoder::from_checkpoint(&checkpoint, &opts).with_context(|| {
        format!("loading the index's model {path:?} (pass --model if the folder moved)")
    })
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
