//! `index build`: stream vectors (an `embed extract` folder, or Parquet another tool wrote) into
//! `vectors.f32` and `records.parquet`, then link the vectors (one copy in huge-page-backed memory) into the graph,
//! check reachability, save the graph and write the manifest, all in a temporary sibling folder
//! that replaces `--out` only when complete.

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::external::{self, ExternalVectors, Fields};
use super::{BuildOptions, IndexManifest, IndexParams, FILES, FORMAT};
use crate::extract::manifest::ExtractManifest;
use crate::extract::shard::shard_name;
use crate::fsio::hash_file;
use crate::progress::{Progress, Task};

/// Seed of the graph's level draw: the same vectors always get the same levels.
const LEVEL_SEED: u64 = 0x5eed_1e7e15;

/// Where the vectors come from.
enum Source {
    Extraction(Box<ExtractManifest>),
    External { files: Vec<PathBuf>, rows: usize },
}

impl Source {
    /// An `embed extract` folder (its shards checked against their recorded checksums), or with
    /// `external` Parquet vectors another tool wrote. Never guessed: a folder without its
    /// manifest is not silently taken for external vectors.
    fn open(path: &Path, external: bool) -> Result<Self> {
        if !path.exists() {
            bail!("--embeddings {}: no such file or folder", path.display());
        }
        if external::is_extraction(path) {
            if external {
                bail!(
                    "--embeddings {} is an `embed extract` folder: drop --external",
                    path.display()
                );
            }
            let m = super::check_embeddings(path)?;
            report_shard_check(path, crate::extract::manifest::verify_shards(path, &m)?);
            return Ok(Self::Extraction(Box::new(m)));
        }
        if !external {
            bail!("{}", not_an_extraction(path));
        }
        let files = external::parquet_files(path)?;
        let mut rows = 0;
        for f in &files {
            rows += crate::extract::shard::parquet_rows(f)?;
        }
        if rows == 0 {
            bail!("{}: no rows to index", path.display());
        }
        Ok(Self::External { files, rows })
    }

    fn rows(&self) -> usize {
        match self {
            Self::Extraction(m) => m.rows,
            Self::External { rows, .. } => *rows,
        }
    }
}

/// Why `path` (no extraction manifest, no --external) is refused.
fn not_an_extraction(path: &Path) -> String {
    let shards = path.is_dir()
        && std::fs::read_dir(path).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("shard-"))
        });
    if shards {
        format!(
            "{}: shard files but no manifest.json: an `embed extract` folder whose manifest was \
             lost cannot be checked (model, recipe, rows); re-run the same `embed extract` \
             (it rewrites the manifest and keeps finished shards), or pass --external to index \
             the shards as vectors another tool wrote",
            path.display()
        )
    } else {
        format!(
            "{}: not an `embed extract` folder (no manifest.json); for Parquet vectors another \
             tool wrote, pass --external (with --id-field and --embedding-field)",
            path.display()
        )
    }
}

fn report_shard_check(path: &Path, check: crate::extract::manifest::ShardCheck) {
    if let crate::extract::manifest::ShardCheck::Unrecorded(shards) = check {
        eprintln!(
            "note: {}: {} of the shards ({shards:?}) have no recorded checksum (an extraction \
             made before shard checksums): they are not verified",
            path.display(),
            shards.len()
        );
    }
}

/// Build an index from `embeddings` (an `embed extract` folder, or a Parquet file or folder of
/// Parquet files another tool wrote: `opts.fields` names its columns) into `out`, atomically:
/// everything is written to a temporary sibling folder that replaces `out` only once complete.
/// An existing `out` must be an exemplar index (nothing else is ever replaced) and must not hold
/// the embeddings.
pub fn build(
    embeddings: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<IndexManifest> {
    let start = Instant::now();
    let source = Source::open(embeddings, opts.external)?;
    if opts.m < 2 || opts.m > 255 {
        bail!("--m must be between 2 and 255, got {}", opts.m);
    }
    check_out(embeddings, out)?;
    super::recover::remove_stale(out);
    let tmp = crate::fsio::aside_path(out, "building");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?; // ours: a killed build of this very process id
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    match build_into(embeddings, &source, &tmp, opts, start, progress) {
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
    // A rebuild killed between its renames left the old index aside: put it back first.
    if out.exists() || super::recover::recover(out)?.is_some() {
        if let Err(e) = is_any_index(out) {
            bail!(
                "--out {} exists and is not an exemplar index ({e:#}): refusing to replace it; \
                 choose another --out",
                out.display()
            );
        }
    }
    Ok(())
}

/// Whether `dir` holds an exemplar index of any format version (an index in an older format is
/// rebuilt over like any other).
fn is_any_index(dir: &Path) -> Result<()> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: no readable manifest.json", dir.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: damaged or not an index manifest", path.display()))?;
    match v["format"].as_str() {
        Some(f) if f.starts_with("exemplar.index.") => Ok(()),
        _ => bail!("{}: not an exemplar index manifest", path.display()),
    }
}

fn build_into(
    embeddings: &Path,
    source: &Source,
    tmp: &Path,
    opts: &BuildOptions,
    start: Instant,
    progress: &dyn Progress,
) -> Result<IndexManifest> {
    let mut w = Writer::new(tmp, source.rows(), progress)?;
    let external = match source {
        Source::Extraction(em) => {
            insert_shards(embeddings, em, &mut w)?;
            None
        }
        Source::External { files, .. } => Some(insert_external(files, &opts.fields, &mut w)?),
    };
    let (rows, dim) = w.finish()?;
    release_freed_memory(); // and the records writer's
    if rows != source.rows() {
        bail!(
            "{}: read {rows} rows, the files say {}",
            embeddings.display(),
            source.rows()
        );
    }
    let reach = link_graph(tmp, (rows, dim), opts, start, progress)?;
    let mut files = BTreeMap::new();
    for f in FILES {
        files.insert(f.to_string(), hash_file(&tmp.join(f))?);
    }
    let embeddings_manifest = match (source, &external) {
        (Source::Extraction(em), _) => (**em).clone(),
        (_, Some(x)) => external_manifest(dim, rows, x)?,
        _ => unreachable!("external vectors always come with their description"),
    };
    let manifest = IndexManifest {
        format: FORMAT.into(),
        count: rows,
        dim,
        params: IndexParams {
            m: opts.m,
            ef_construction: opts.ef_construction,
            default_ef: super::DEFAULT_EF,
            distance: "1 - dot on unit vectors (ranks as L2; score = cosine)".into(),
        },
        build_seconds: start.elapsed().as_secs_f64(),
        source: crate::fsio::canonical(embeddings).display().to_string(),
        files,
        // From the temporary folder: a sibling of --out, so the same path from there.
        model_from_index: external
            .is_none()
            .then(|| {
                let model = crate::fsio::canonical(Path::new(&embeddings_manifest.model_path));
                crate::fsio::relative_path(&model, &crate::fsio::canonical(tmp))
                    .map(|p| p.display().to_string())
            })
            .flatten(),
        embeddings: embeddings_manifest,
        external,
        reachability: Some(reach),
    };
    crate::fsio::write_atomically(&tmp.join("manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &manifest)?;
        Ok(())
    })?;
    super::load::write_stamp(tmp, &manifest);
    Ok(manifest)
}

/// Link the HNSW graph over the vectors written to `tmp`, check that every node is reachable
/// (repairing where not), and save it beside them.
fn link_graph(
    tmp: &Path,
    (rows, dim): (usize, usize),
    opts: &BuildOptions,
    start: Instant,
    progress: &dyn Progress,
) -> Result<super::reach::Reachability> {
    let vectors = super::vectors::Vectors::read_huge(&tmp.join("vectors.f32"))?;
    let params = super::hnsw::Params {
        m: opts.m,
        ef_construction: opts.ef_construction,
        seed: LEVEL_SEED,
    };
    let (read_s, t) = (start.elapsed().as_secs_f64(), Instant::now());
    let graph = super::hnsw::Hnsw::build(&vectors, dim, &params, progress);
    let (link_s, t) = (t.elapsed().as_secs_f64(), Instant::now());
    let reach =
        super::reach::check_and_repair(&graph, &vectors, dim, opts.ef_construction, progress);
    progress.log(&format!(
        "build: read {rows} vectors in {read_s:.1} s, linked in {link_s:.1} s, checked \
         reachability in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    graph
        .save(&tmp.join("graph.hnsw.data"), &tmp.join("graph.hnsw.graph"))
        .context("writing the HNSW graph")?;
    Ok(reach)
}

/// Return freed Parquet decode buffers to the OS. mimalloc (the binaries' allocator) did not
/// reuse them from batch to batch and kept them committed until its purge delay passed on this
/// thread, which then only waits for the graph: about 95 MiB stayed resident into every build
/// (3.2x the raw vectors at 20k x 384). No effect under another global allocator.
fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps and takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Writes `vectors.f32` and `records.parquet` batch by batch.
struct Writer {
    tmp: PathBuf,
    vectors: std::io::BufWriter<std::fs::File>,
    records: Option<ArrowWriter<std::fs::File>>,
    rows: usize,
    dim: usize,
    bar: Box<dyn Task>,
}

impl Writer {
    fn new(tmp: &Path, total: usize, progress: &dyn Progress) -> Result<Self> {
        Ok(Self {
            tmp: tmp.to_path_buf(),
            vectors: std::io::BufWriter::new(std::fs::File::create(tmp.join("vectors.f32"))?),
            records: None,
            rows: 0,
            dim: 0,
            bar: progress.task("reading", Some(total as u64), "vectors"),
        })
    }

    /// One batch: `values` is `records.num_rows()` unit vectors of `dim`, row-major.
    fn push(&mut self, records: &RecordBatch, values: &[f32], dim: usize) -> Result<()> {
        let rows = records.num_rows();
        self.dim = dim;
        for v in &values[..rows * dim] {
            self.vectors.write_all(&v.to_le_bytes())?;
        }
        let w = match &mut self.records {
            Some(w) => w,
            None => self.records.insert(ArrowWriter::try_new(
                std::fs::File::create(self.tmp.join("records.parquet"))?,
                records.schema(),
                // Row groups of 16k rows: the writer holds one group in memory, not the corpus.
                Some(
                    parquet::file::properties::WriterProperties::builder()
                        .set_max_row_group_row_count(Some(16_384))
                        .build(),
                ),
            )?),
        };
        w.write(records)
            .context("records.parquet (do all input files have the same columns?)")?;
        self.rows += rows;
        self.bar.inc(rows as u64);
        release_freed_memory(); // the previous batch's decode buffers
        Ok(())
    }

    /// Flush both files; returns (rows, dim).
    fn finish(self) -> Result<(usize, usize)> {
        self.vectors
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        match self.records {
            Some(w) => w.close().map(|_| (self.rows, self.dim)).map_err(Into::into),
            None => bail!("no rows to index"),
        }
    }
}

/// Decoded bytes per batch the reader aims at: 4,096 rows of 384-d vectors are 6 MiB, but of
/// 4096-d vectors 64 MiB, and the reader holds about as much again while decoding.
const BATCH_BYTES: usize = 4 << 20;

fn batches(path: &Path) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let rows = batch_rows(builder.metadata());
    Ok(builder.with_batch_size(rows).build()?)
}

/// Rows per batch for about [`BATCH_BYTES`] of decoded data, from the file's own row sizes.
fn batch_rows(meta: &parquet::file::metadata::ParquetMetaData) -> usize {
    let (bytes, rows) = meta.row_groups().iter().fold((0i64, 0i64), |(b, r), g| {
        (b + g.total_byte_size(), r + g.num_rows())
    });
    let per_row = (bytes / rows.max(1)).max(1) as usize;
    (BATCH_BYTES / per_row).clamp(64, 4096)
}

/// Every shard of an extraction, in order; records are all columns but the embedding.
fn insert_shards(embeddings: &Path, em: &ExtractManifest, w: &mut Writer) -> Result<()> {
    for k in 0..em.shards {
        let path = embeddings.join(format!("{}.parquet", shard_name(k, em.shards)));
        for batch in batches(&path)? {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let values = crate::extract::shard::embedding_values(&batch, em.dim, &path)?;
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&c| batch.schema().field(c).name() != "embedding")
                .collect();
            w.push(&batch.project(&keep)?, values, em.dim)?;
        }
    }
    Ok(())
}

/// External Parquet files: ids as text, vectors as f32, normalised to unit length.
fn insert_external(files: &[PathBuf], fields: &Fields, w: &mut Writer) -> Result<ExternalVectors> {
    let mut dim = None;
    let mut normalized = 0;
    let mut value_type = "float32";
    for path in files {
        for batch in batches(path)? {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let ids = external::id_strings(&batch, fields, path)?;
            let (mut values, kind) = external::column_vectors(&batch, fields, &mut dim, path)?;
            value_type = kind;
            let d = dim.unwrap_or(1);
            normalized += external::normalize_rows(&mut values, d, &ids)
                .with_context(|| format!("{}", path.display()))?;
            let records = external::records_batch(&batch, fields, &ids)?;
            w.push(&records, &values, d)?;
        }
    }
    let mut inputs = Vec::new();
    for f in files {
        let d = hash_file(f)?;
        inputs.push(crate::extract::plan::InputFile {
            path: f.display().to_string(),
            bytes: d.bytes,
            sha256: d.sha256,
        });
    }
    if normalized > 0 {
        eprintln!(
            "note: {normalized} of {} vectors were not unit length and were normalised \
             (the index searches by cosine)",
            w.rows
        );
    }
    Ok(ExternalVectors {
        files: inputs,
        fields: fields.clone(),
        value_type: value_type.into(),
        normalized,
        note: "vectors from files another tool wrote; no exemplar model made them, so \
               `index query --text` needs --model naming the model that did"
            .into(),
    })
}

/// The `embeddings` part of the manifest for external vectors: no model of ours; placeholders
/// that say so.
fn external_manifest(dim: usize, rows: usize, x: &ExternalVectors) -> Result<ExtractManifest> {
    let m = serde_json::json!({
        "format": "external",
        "model_fingerprint": "none (external vectors)",
        "recipe": {
            "architecture": "bert", "attention": "bidirectional", "pooling": "mean",
            "normalize": true, "append_eos": false, "max_length": 0,
            "document_template": "{text}", "query_template": "{text}", "instruction": "",
            "padding_side": "right"
        },
        "dim": dim,
        "dtype": "f32",
        "inputs": x.files,
        "text": {"id_field": x.fields.id, "doc_template": ""},
        "columns": [],
        "shards": 0,
        "rows_per_shard": [],
        "model": "external (not made by an exemplar model)",
        "model_path": "",
        "rows": rows,
        "rejected": 0,
        "status": "complete",
        "completed_shards": [],
        "created_by": format!("exemplar {} index build (external vectors)", env!("CARGO_PKG_VERSION")),
    });
    serde_json::from_value(m).context("describing external vectors")
}
