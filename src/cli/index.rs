//! `embed index build|query|eval|info|export`: argument structs and glue to the `index` module.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::progress::Bars;
use crate::encoder::{Device, TextKind};
use crate::index::{self, BuildOptions, Index, SearchMethod, SearchOptions};

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Build an HNSW index from `embed extract` shards (written atomically).
    Build(BuildArgs),
    /// Embed query texts with the index's own model and recipe and print their neighbours.
    Query(QueryArgs),
    /// Recall@k of the HNSW search against exact search, and queries/s, at several ef.
    Eval(EvalArgs),
    /// Manifest, counts, sizes and parameters of an index.
    Info(InfoArgs),
    /// Write the graph and vectors in another library's format (hnsw_rs 0.3.5's dump).
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Output folder of `embed extract` (manifest.json + shard-*.parquet), or with --external a
    /// Parquet file (or folder of them) another tool wrote: an id column and a list of
    /// float32/float16.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// --embeddings is Parquet another tool wrote, not an `embed extract` folder.
    #[arg(long)]
    pub external: bool,
    /// External Parquet: the id column.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// External Parquet: the embedding column (fixed-size or variable list of float32/float16).
    #[arg(long, default_value = "embedding")]
    pub embedding_field: String,
    /// Index folder to create, e.g. indexes/math.
    #[arg(long)]
    pub out: PathBuf,
    /// Graph degree (links per node per layer; twice that on the bottom layer).
    #[arg(long, default_value_t = index::DEFAULT_M)]
    pub m: usize,
    /// Candidate list size while building: higher builds slower and finds better links.
    #[arg(long, default_value_t = index::DEFAULT_EF_CONSTRUCTION)]
    pub ef_construction: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print a JSON summary object on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// One query text.
    #[arg(long, conflicts_with_all = ["input", "vectors"], required_unless_present_any = ["input", "vectors"])]
    pub text: Option<String>,
    /// JSON-lines file of {"id", "text"} queries.
    #[arg(long, conflicts_with = "vectors")]
    pub input: Option<PathBuf>,
    /// Search given vectors instead of embedding texts: Parquet (--id-field, --embedding-field)
    /// or a .npy float32 2-D array (ids are row numbers).
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// --vectors Parquet: the id column.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// --vectors Parquet: the embedding column.
    #[arg(long, default_value = "embedding")]
    pub embedding_field: String,
    /// Hash every file of the index (sha256) even when the stamp says it is unchanged.
    #[arg(long)]
    pub verify: bool,
    /// Neighbours per query.
    #[arg(short, default_value_t = 4)]
    pub k: usize,
    /// Candidate list size of the graph search (higher: better recall, slower).
    #[arg(long, default_value_t = index::DEFAULT_EF)]
    pub ef: usize,
    /// Search by a full scan (exact). Chosen automatically below 5,000 vectors.
    #[arg(long, conflicts_with = "hnsw")]
    pub exact: bool,
    /// Search through the graph even for a small index.
    #[arg(long)]
    pub hnsw: bool,
    /// Only return records whose field equals the value, e.g. `source=math`.
    #[arg(long, value_name = "FIELD=VALUE")]
    pub filter: Option<String>,
    /// Model folder, when it moved since the index was built (must be the same weights).
    #[arg(long)]
    pub model: Option<String>,
    /// Device for the query embedding: `cpu`, or `cuda:N` with a `cuda` build.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Whole records as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Stored vectors used as queries (spread evenly over the index).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Comma-separated ef values to try.
    #[arg(long, default_value = "16,32,64,128,256,512", value_delimiter = ',')]
    pub ef: Vec<usize>,
    #[arg(long)]
    pub json: bool,
    /// Hash every file of the index (sha256) even when the stamp says it is unchanged.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[arg(long)]
    pub index: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Hash every file of the index (sha256) even when the stamp says it is unchanged.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Target format: `hnsw_rs` writes BASENAME.hnsw.graph and BASENAME.hnsw.data, which
    /// `hnsw_rs::hnswio::HnswIo::new(OUT, BASENAME).load_hnsw::<f32, DistDot>()` reloads.
    #[arg(long, value_parser = ["hnsw_rs"])]
    pub format: String,
    /// Folder for the exported files (created if missing; files of the same name are replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "exemplar")]
    pub basename: String,
    /// Hash every file of the index (sha256) even when the stamp says it is unchanged.
    #[arg(long)]
    pub verify: bool,
}

fn load(dir: &Path, verify: bool) -> Result<Index> {
    if verify {
        Index::load_verified(dir)
    } else {
        Index::load(dir)
    }
}

pub fn run(cmd: IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Build(a) => build(a),
        IndexCommand::Query(a) => query(a),
        IndexCommand::Eval(a) => eval(a),
        IndexCommand::Info(a) => info(a),
        IndexCommand::Export(a) => export(a),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let opts = BuildOptions {
        m: a.m,
        ef_construction: a.ef_construction,
        fields: index::Fields {
            id: a.id_field.clone(),
            embedding: a.embedding_field.clone(),
        },
        external: a.external,
    };
    let m = index::build(&a.embeddings, &a.out, &opts, &Bars::new(a.quiet))?;
    let bytes: u64 = m.files.values().map(|f| f.bytes).sum();
    eprintln!(
        "index: {} vectors x {} in {:.1} s ({:.0} vectors/s), M={}, ef_construction={}, {:.1} MB -> {}",
        m.count,
        m.dim,
        m.build_seconds,
        m.count as f64 / m.build_seconds.max(1e-9),
        m.params.m,
        m.params.ef_construction,
        bytes as f64 / 1e6,
        a.out.display()
    );
    if a.json {
        let summary = serde_json::json!({
            "rows": m.count,
            "dim": m.dim,
            "seconds": m.build_seconds,
            "vectors_per_s": m.count as f64 / m.build_seconds.max(1e-9),
            "m": m.params.m,
            "ef_construction": m.params.ef_construction,
            "bytes": bytes,
            "shards": m.embeddings.shards,
            "external": m.external.is_some(),
            "source": m.source,
            "model": m.embeddings.model,
            "unreachable": m.reachability.as_ref().map(|r| r.still_unreachable),
            "out": crate::fsio::canonical(&a.out),
        });
        println!("{summary}");
    }
    Ok(())
}

/// One-line preview of a record for the table.
fn snippet(record: &serde_json::Map<String, serde_json::Value>, width: usize) -> String {
    let text = ["problem", "text", "question", "title"]
        .iter()
        .find_map(|f| record.get(*f).and_then(|v| v.as_str()))
        .unwrap_or("");
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > width {
        format!("{}...", flat.chars().take(width).collect::<String>())
    } else {
        flat
    }
}

/// The queries of `index query`: ids, texts (empty for given vectors) and unit vectors.
fn query_vectors(a: &QueryArgs, idx: &Index) -> Result<Vec<(String, String, Vec<f32>)>> {
    if let Some(path) = &a.vectors {
        let fields = index::Fields {
            id: a.id_field.clone(),
            embedding: a.embedding_field.clone(),
        };
        let (ids, mut values, dim) = index::external::read_query_vectors(path, &fields)?;
        if dim != idx.dim() {
            bail!(
                "{}: {dim}-d vectors, the index holds {}-d vectors",
                path.display(),
                idx.dim()
            );
        }
        let scaled = index::external::normalize_rows(&mut values, dim, &ids)?;
        if scaled > 0 {
            eprintln!("note: {scaled} query vectors were not unit length and were normalised");
        }
        let rows = values.chunks_exact(dim).map(<[f32]>::to_vec);
        return Ok(ids
            .into_iter()
            .zip(rows)
            .map(|(id, v)| (id, String::new(), v))
            .collect());
    }
    let queries: Vec<(String, String)> = match (&a.text, &a.input) {
        (Some(t), _) => vec![("query".into(), t.clone())],
        (None, Some(p)) => crate::corpus::read_id_text_jsonl(p)?,
        (None, None) => bail!("give --text, --input or --vectors"),
    };
    let encoder = index::query_encoder(&idx.manifest, a.model.as_deref(), a.device)?;
    let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
    let vectors = encoder.encode(&texts, TextKind::Query)?.vectors;
    Ok(queries
        .into_iter()
        .zip(vectors)
        .map(|((id, text), v)| (id, text, v))
        .collect())
}

fn query(a: QueryArgs) -> Result<()> {
    if a.k == 0 {
        bail!("-k must be at least 1 (neighbours per query)");
    }
    if a.ef == 0 {
        bail!("--ef must be at least 1");
    }
    let idx = load(&a.index, a.verify)?;
    let queries = query_vectors(&a, &idx)?;
    let records = idx.records()?;
    let allowed = match &a.filter {
        Some(f) => {
            let (field, value) = f
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--filter {f:?}: expected FIELD=VALUE"))?;
            Some(index::filter_rows(&records, field, value)?)
        }
        None => None,
    };
    let opts = SearchOptions {
        ef: a.ef,
        method: match (a.exact, a.hnsw) {
            (true, _) => Some(SearchMethod::Exact),
            (_, true) => Some(SearchMethod::Hnsw),
            _ => None,
        },
        allowed: allowed.as_ref(),
    };
    if opts.method.is_none() && idx.method_for(None) == SearchMethod::Exact {
        eprintln!("{} vectors: searching exactly (full scan)", idx.len());
    }
    let mut out = std::io::stdout().lock();
    for (qid, qtext, v) in &queries {
        let found = idx.search(v, a.k, &opts);
        if a.json {
            print_json(&mut out, qid, qtext, &found, &records, a.vectors.is_none())?;
        } else {
            print_table(&mut out, qid, qtext, &found.hits, &records)?;
        }
    }
    Ok(())
}

type Record = serde_json::Map<String, serde_json::Value>;

/// One JSON line per query; whole records for text queries, ids and scores for given vectors.
fn print_json(
    out: &mut impl Write,
    qid: &str,
    qtext: &str,
    found: &index::Found,
    records: &[Record],
    with_records: bool,
) -> Result<()> {
    let results: Vec<serde_json::Value> = found
        .hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut r =
                serde_json::json!({"rank": i + 1, "id": records[h.row]["id"], "score": h.score});
            if with_records {
                r["record"] = serde_json::Value::Object(records[h.row].clone());
            }
            r
        })
        .collect();
    let line = if with_records {
        serde_json::json!({"query_id": qid, "query": qtext, "method": found.method, "results": results})
    } else {
        serde_json::json!({"query_id": qid, "method": found.method, "results": results})
    };
    writeln!(out, "{line}")?;
    Ok(())
}

fn print_table(
    out: &mut impl Write,
    qid: &str,
    qtext: &str,
    hits: &[index::Hit],
    records: &[Record],
) -> Result<()> {
    let text = Record::from_iter([("text".to_string(), qtext.into())]);
    writeln!(out, "query {qid}: {}", snippet(&text, 100))?;
    for (i, h) in hits.iter().enumerate() {
        let id = records[h.row]["id"].as_str().unwrap_or("?");
        writeln!(
            out,
            "  {:>2}  {:.4}  {:<36} {}",
            i + 1,
            h.score,
            id,
            snippet(&records[h.row], 70)
        )?;
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.k == 0 || a.queries == 0 {
        bail!("--k and --queries must be at least 1");
    }
    if a.ef.contains(&0) {
        bail!("--ef values must be at least 1");
    }
    let idx = load(&a.index, a.verify)?;
    let rows = index::evaluate(&idx, a.queries, a.k, &a.ef);
    let recommended = rows.iter().find(|r| r.recall >= 0.99).map(|r| r.ef);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"k": a.k, "queries": a.queries.min(idx.len()), "rows": rows, "recommended_ef": recommended})
        );
        return Ok(());
    }
    println!(
        "recall@{} of HNSW vs exact search, {} stored vectors as queries (self excluded), 1 thread",
        a.k,
        a.queries.min(idx.len())
    );
    println!("{:>6} {:>10} {:>12}", "ef", "recall", "queries/s");
    for r in &rows {
        println!("{:>6} {:>10.4} {:>12.0}", r.ef, r.recall, r.qps);
    }
    match recommended {
        Some(ef) => println!("smallest ef reaching recall 0.99: {ef}"),
        None => println!(
            "no ef tried reaches recall 0.99; try larger --ef values or rebuild with a larger --m"
        ),
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn export(a: ExportArgs) -> Result<()> {
    let start = Instant::now();
    let idx = load(&a.index, a.verify)?;
    let x = index::export::hnsw_rs(&idx, &a.out, &a.basename)?;
    let layers: Vec<String> = x
        .per_layer
        .iter()
        .take_while(|&&n| n > 0)
        .map(usize::to_string)
        .collect();
    eprintln!(
        "exported {} points (per top layer: {}) in {:.1} s:\n  {}\n  {}\nreload with \
         hnsw_rs::hnswio::HnswIo::new(Path::new({:?}), {:?}).load_hnsw::<f32, DistDot>() \
         (hnsw_rs 0.3.5; ids are the index's rows; queries must be unit vectors)",
        x.points,
        layers.join("/"),
        start.elapsed().as_secs_f64(),
        x.graph.display(),
        x.data.display(),
        a.out.display().to_string(),
        a.basename,
    );
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    let m = index::read_manifest(&a.index)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    let start = Instant::now();
    let loaded = load(&a.index, a.verify).map(|i| i.verification);
    println!("index:            {}", a.index.display());
    println!("vectors:          {} x {}", m.count, m.dim);
    match &m.external {
        Some(x) => println!(
            "model:            none of ours: external vectors ({}, fields {:?}/{:?}, {} normalised)",
            x.value_type, x.fields.id, x.fields.embedding, x.normalized
        ),
        None => {
            let e = &m.embeddings;
            println!("model:            {} ({})", e.model, e.model_fingerprint);
            println!(
                "recipe:           {:?} attention, {:?} pooling, max length {}",
                e.recipe.attention, e.recipe.pooling, e.recipe.max_length
            );
        }
    }
    println!(
        "source:           {} ({} inputs, {} shards)",
        m.source,
        m.embeddings.inputs.len(),
        m.embeddings.shards
    );
    println!(
        "parameters:       M={}, ef_construction={}, default ef={}",
        m.params.m, m.params.ef_construction, m.params.default_ef
    );
    println!("build time:       {:.1} s", m.build_seconds);
    if let Some(r) = &m.reachability {
        println!("{}", index::reach::summary(r));
    }
    for (name, f) in &m.files {
        println!("  {name:<18} {:>12} bytes", f.bytes);
    }
    println!(
        "size on disk:     {:.1} MB",
        dir_size(&a.index) as f64 / 1e6
    );
    let secs = start.elapsed().as_secs_f64();
    match loaded {
        Ok(index::Verification::Hashed) => println!(
            "verified:         all files match the manifest (sha256 of every file, now; load {secs:.2} s)"
        ),
        Ok(index::Verification::Stamp) => println!(
            "verified:         all files match the manifest (sizes now; sha256 at an earlier load, \
             files unchanged since per the .verified stamp; --verify re-hashes; load {secs:.2} s)"
        ),
        Err(e) => println!("verified:         NO: {e:#}"),
    }
    Ok(())
}
