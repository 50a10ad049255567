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
use arrow::array::{Array, AsArray, RecordBatch};
use hnsw_rs::prelude::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::extract::manifest::ExtractManifest;
use crate::extract::shard::shard_name;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
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
    pub files: BTreeMap<String, FileEntry>,
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
    pub quiet: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            m: DEFAULT_M,
            ef_construction: DEFAULT_EF_CONSTRUCTION,
            quiet: false,
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
/// temporary sibling folder that replaces `out` only once complete.
pub fn build(embeddings: &Path, out: &Path, opts: &BuildOptions) -> Result<IndexManifest> {
    let start = Instant::now();
    let em = check_embeddings(embeddings)?;
    if opts.m < 2 || opts.m > 255 {
        bail!("--m must be between 2 and 255, got {}", opts.m);
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .context("--out needs a folder name")?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.building-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let result = build_into(embeddings, &em, &tmp, opts, start);
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Swap in: the old index (if any) stays whole until the new one is complete.
    if out.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old)?;
        std::fs::rename(&tmp, out)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&tmp, out)?;
    }
    Ok(manifest)
}

fn build_into(
    embeddings: &Path,
    em: &ExtractManifest,
    tmp: &Path,
    opts: &BuildOptions,
    start: Instant,
) -> Result<IndexManifest> {
    let n = em.rows;
    let dim = em.dim;
    let graph: Graph = Hnsw::new(
        opts.m,
        n.max(1),
        MAX_LAYERS,
        opts.ef_construction,
        DistL2 {},
    );
    let bar = crate::cli::progress_bar(n as u64, opts.quiet, "vectors");
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
    bar.finish_and_clear();
    if row != n {
        bail!(
            "{}: shards hold {row} rows, manifest says {n}",
            embeddings.display()
        );
    }
    vectors_out
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    match records_out {
        Some(w) => {
            w.close()?;
        }
        None => bail!("{}: no rows to index", embeddings.display()),
    }
    graph
        .file_dump(tmp, GRAPH_BASENAME)
        .context("writing the HNSW graph")?;

    let mut files = BTreeMap::new();
    for f in [
        "vectors.f32",
        "records.parquet",
        "graph.hnsw.graph",
        "graph.hnsw.data",
    ] {
        files.insert(f.to_string(), hash_file(&tmp.join(f))?);
    }
    let manifest = IndexManifest {
        format: FORMAT.into(),
        count: n,
        dim,
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
    crate::output::write_atomically(&tmp.join("manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &manifest)?;
        Ok(())
    })?;
    Ok(manifest)
}

fn hash_file(path: &Path) -> Result<FileEntry> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok(FileEntry {
        bytes,
        sha256: format!("{:x}", h.finalize()),
    })
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
        for required in [
            "vectors.f32",
            "records.parquet",
            "graph.hnsw.graph",
            "graph.hnsw.data",
        ] {
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

    /// Approximate k nearest neighbours through the graph, best first.
    pub fn search(
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
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch?;
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            let mut m = serde_json::Map::new();
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                m.insert(f.name().clone(), cell_json(col.as_ref(), i));
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn cell_json(col: &dyn Array, i: usize) -> serde_json::Value {
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    if col.is_null(i) {
        return serde_json::Value::Null;
    }
    match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(i).into(),
        DataType::Boolean => col.as_boolean().value(i).into(),
        _ => serde_json::Value::Null,
    }
}

/// A field value as text, for `--filter field=value`.
pub fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
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
        .filter(|(_, r)| r.get(field).and_then(field_text).as_deref() == Some(value))
        .map(|(i, _)| i)
        .collect())
}

/// The encoder that embeds queries for this index: the model and recipe the index was built
/// with (`model` replaces the stored path when the folder moved; it must be the same weights).
pub fn query_encoder(
    manifest: &IndexManifest,
    model: Option<&str>,
    device: &str,
) -> Result<crate::encoder::Encoder> {
    use crate::encoder::{Encoder, EncoderOptions, RecipeOverrides};
    let em = &manifest.embeddings;
    let r = &em.recipe;
    let path = model
        .map(str::to_owned)
        .unwrap_or_else(|| em.model_path.clone());
    let opts = EncoderOptions {
        device: device.to_string(),
        dtype: em.dtype.clone(),
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
    let files =
        crate::encoder::source::locate_files(&crate::encoder::source::resolve_model_dir(&path)?)?;
    let fingerprint = crate::encoder::fingerprint(&files)?;
    if fingerprint != em.model_fingerprint {
        bail!(
            "model {path:?} (fingerprint {fingerprint}) is not the model this index was built with ({}, fingerprint {})",
            em.model,
            em.model_fingerprint
        );
    }
    let encoder = Encoder::load(&path, &opts).with_context(|| {
        format!("loading the index's model {path:?} (pass --model if the folder moved)")
    })?;
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
    let truth: Vec<Vec<usize>> = rows
        .iter()
        .map(|&r| {
            index
                .search_exact(index.vector(r), k + 1, None)
                .into_iter()
                .map(|h| h.row)
                .filter(|&x| x != r)
                .take(k)
                .collect()
        })
        .collect();
    efs.iter()
        .map(|&ef| {
            let start = Instant::now();
            let found: Vec<Vec<usize>> = rows
                .iter()
                .map(|&r| {
                    index
                        .search(index.vector(r), k + 1, ef, None)
                        .into_iter()
                        .map(|h| h.row)
                        .filter(|&x| x != r)
                        .take(k)
                        .collect()
                })
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
