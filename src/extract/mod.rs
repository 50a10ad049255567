//! `embed extract`: sharded, resumable embedding of a corpus into Parquet shards plus a manifest.
//!
//! Flow: a model-free planning pass validates every record and fixes the schema and the split;
//! then each shard runs a three-stage pipeline (read + tokenise → forward pass → write) on its
//! own threads, so the model does not wait on I/O. Shards commit part files every
//! `--checkpoint-rows` rows and are merged into their final file at the end.

pub mod manifest;
pub mod plan;
pub mod shard;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::encoder::{Encoder, EncoderOptions, TextKind};
use manifest::{ExtractManifest, ShardReport};
use plan::{Plan, TextSpec};
use shard::{shard_name, Row};

/// Rows per pipeline chunk: one tokenisation call and one trip through the forward pass queue.
/// Texts are length-sorted within a chunk, so bigger chunks pad less: over 12,500 MATH problems
/// 256-row chunks ran at 0.86x the encoder alone, 1,024-row chunks at 0.98x (README, Benchmarks).
const MAX_CHUNK_ROWS: usize = 1024;

#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub model: String,
    pub encoder: EncoderOptions,
    pub text: TextSpec,
    pub shards: usize,
    /// `None`: run every shard here.
    pub shard_ids: Option<Vec<usize>>,
    pub workers: usize,
    pub checkpoint_rows: usize,
    pub skip_bad: bool,
    pub force: bool,
    pub quiet: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ExtractSummary {
    pub rows: usize,
    pub rows_embedded_now: usize,
    pub tokens_now: usize,
    pub rejected: usize,
    pub shards_done: usize,
    pub shards: usize,
    pub dim: usize,
    pub seconds: f64,
}

/// `--shard-id auto`: the array index a scheduler gives each task.
pub fn shard_id_from_env() -> Result<usize> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v
                .trim()
                .parse()
                .with_context(|| format!("{var}={v:?} is not a shard number"));
        }
    }
    bail!("--shard-id auto: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set")
}

pub fn run(cfg: &ExtractConfig) -> Result<ExtractSummary> {
    let start = Instant::now();
    if cfg.shards == 0 {
        bail!("--shards must be at least 1");
    }
    if cfg.checkpoint_rows == 0 {
        bail!("--checkpoint-rows must be at least 1");
    }
    let shard_ids = match &cfg.shard_ids {
        Some(ids) => {
            for &k in ids {
                if k >= cfg.shards {
                    bail!(
                        "--shard-id {k} is out of range for --shards {} (0..{})",
                        cfg.shards,
                        cfg.shards - 1
                    );
                }
            }
            ids.clone()
        }
        None => (0..cfg.shards).collect(),
    };
    let workers = cfg.workers.clamp(1, shard_ids.len().max(1));

    let multi = MultiProgress::new();
    if cfg.quiet {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let log = |msg: String| {
        if cfg.quiet {
            eprintln!("{msg}");
        } else {
            let _ = multi.println(msg);
        }
    };

    let first_encoder = Encoder::load(&cfg.model, &cfg.encoder)?;
    let scan = multi.add(ProgressBar::new_spinner());
    scan.set_style(
        ProgressStyle::with_template("{spinner} checking input: {pos} records ({per_sec})")
            .expect("static"),
    );
    let plan = plan::plan(&cfg.inputs, &cfg.text, cfg.shards, cfg.skip_bad, || {
        scan.inc(1)
    })?;
    scan.finish_and_clear();
    let total_rows: usize = plan.rows_per_shard.iter().sum();
    if total_rows == 0 {
        bail!("no usable records in {:?}", cfg.inputs);
    }

    let manifest = ExtractManifest::new(first_encoder.info(), cfg, &plan);
    prepare_out_dir(cfg, &manifest)?;
    if !plan.rejected.is_empty() {
        manifest::write_rejected(&cfg.out, &plan.rejected)?;
        log(format!(
            "{} records set aside with their reasons in {}",
            plan.rejected.len(),
            cfg.out.join("rejected.jsonl").display()
        ));
    }

    let pending: VecDeque<usize> = shard_ids
        .iter()
        .copied()
        .filter(|&k| {
            let done = manifest::shard_complete(&cfg.out, k, cfg.shards);
            if done {
                log(format!("{} is already complete", shard_name(k, cfg.shards)));
            }
            !done
        })
        .collect();
    let todo_rows: usize = pending.iter().map(|&k| plan.rows_per_shard[k]).sum();
    let total = multi.add(ProgressBar::new(todo_rows as u64));
    total.set_style(
        ProgressStyle::with_template(
            "total    [{elapsed_precise}] {bar:30} {pos}/{len} texts ({per_sec}, eta {eta}) {msg}",
        )
        .expect("static"),
    );

    let queue = Mutex::new(pending);
    let totals = Mutex::new((0usize, 0usize)); // (rows, tokens) embedded in this run
    let first_encoder = Mutex::new(Some(first_encoder));
    let threads_per_worker =
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / workers).max(1);
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        for w in 0..workers {
            let (queue, totals, first_encoder, errors, plan, multi, total) = (
                &queue,
                &totals,
                &first_encoder,
                &errors,
                &plan,
                &multi,
                &total,
            );
            s.spawn(move || {
                let work = || -> Result<()> {
                    let encoder = match first_encoder.lock().unwrap().take() {
                        Some(e) => e,
                        None => Encoder::load(&cfg.model, &cfg.encoder)?,
                    };
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads_per_worker)
                        .build()?;
                    loop {
                        let Some(k) = queue.lock().unwrap().pop_front() else {
                            return Ok(());
                        };
                        if !errors.lock().unwrap().is_empty() {
                            return Ok(());
                        }
                        let bar = multi
                            .insert_before(total, ProgressBar::new(plan.rows_per_shard[k] as u64));
                        bar.set_style(
                            ProgressStyle::with_template(&format!(
                                "worker {w} {} {{bar:30}} {{pos}}/{{len}} ({{per_sec}}) {{msg}}",
                                shard_name(k, cfg.shards)
                            ))
                            .expect("static"),
                        );
                        let (rows, tokens) =
                            pool.install(|| run_shard(cfg, plan, &encoder, k, &bar, total))?;
                        bar.finish_and_clear();
                        let mut t = totals.lock().unwrap();
                        t.0 += rows;
                        t.1 += tokens;
                    }
                };
                if let Err(e) = work() {
                    errors.lock().unwrap().push(e);
                }
            });
        }
    });
    total.finish_and_clear();
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }

    let shards_done = manifest::finalize(&cfg.out, &manifest)?;
    let (rows_now, tokens_now) = *totals.lock().unwrap();
    Ok(ExtractSummary {
        rows: total_rows,
        rows_embedded_now: rows_now,
        tokens_now,
        rejected: plan.rejected.len(),
        shards_done,
        shards: cfg.shards,
        dim: manifest.dim,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Create the output folder and its manifest, or check that an existing one describes the same
/// job (`--force` starts over instead).
fn prepare_out_dir(cfg: &ExtractConfig, manifest: &ExtractManifest) -> Result<()> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let path = cfg.out.join("manifest.json");
    if path.exists() {
        if cfg.force {
            manifest::clear(&cfg.out)?;
        } else {
            let existing = ExtractManifest::read(&path)?;
            if let Some(field) = existing.first_difference(manifest) {
                bail!(
                    "{} was made by a different job: field {field} differs ({} there, {} now). \
                     Use another --out, or --force to start over",
                    path.display(),
                    existing.field_value(&field),
                    manifest.field_value(&field)
                );
            }
            return Ok(());
        }
    }
    manifest.write(&path)
}

/// Embed one shard, resuming after its committed parts. Returns (rows, tokens) embedded now.
fn run_shard(
    cfg: &ExtractConfig,
    plan: &Plan,
    encoder: &Encoder,
    k: usize,
    bar: &ProgressBar,
    total: &ProgressBar,
) -> Result<(usize, usize)> {
    let n = cfg.shards;
    let parts_dir = cfg.out.join(".parts").join(shard_name(k, n));
    std::fs::create_dir_all(&parts_dir)?;
    let parts = shard::committed_parts(&parts_dir)?;
    let mut done = 0;
    for p in &parts {
        done += shard::parquet_rows(p)?;
    }
    bar.set_position(done as u64);
    let dim = encoder.dim();
    let schema = shard::schema(dim, &plan.columns);
    let chunk_rows = cfg.checkpoint_rows.min(MAX_CHUNK_ROWS);
    let started = Instant::now();

    let (to_model, from_reader) =
        std::sync::mpsc::sync_channel::<Result<(Vec<Row>, Vec<crate::encoder::Tokenized>)>>(2);
    let (to_writer, from_model) = std::sync::mpsc::sync_channel::<Vec<Row>>(2);
    let spec = &cfg.text;

    let (rows_now, tokens_now) = std::thread::scope(|s| -> Result<(usize, usize)> {
        // Stage 1: read this shard's records (after the committed ones) and tokenise them.
        let reader = s.spawn(move || {
            let mut skip = done;
            let mut chunk: Vec<Row> = Vec::with_capacity(chunk_rows);
            let send = |chunk: Vec<Row>| -> bool {
                let texts: Vec<String> = chunk
                    .iter()
                    .map(|r| spec.apply(&r.fields).map(|(_, t)| t).unwrap_or_default())
                    .collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let tokenized = encoder.tokenize(&refs, TextKind::Document);
                to_model.send(tokenized.map(|t| (chunk, t))).is_ok()
            };
            for raw in crate::corpus::stream_records(&cfg.inputs) {
                let raw = match raw {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = to_model.send(Err(e));
                        return;
                    }
                };
                if plan.rejected_at.contains(&(raw.file.clone(), raw.line)) {
                    continue;
                }
                let Ok(fields) = raw.fields else { continue };
                let Ok((id, _)) = spec.apply(&fields) else {
                    continue;
                };
                if plan::shard_of(&id, n) != k {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                chunk.push(Row {
                    id,
                    fields,
                    vector: Vec::new(),
                });
                if chunk.len() == chunk_rows
                    && !send(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(chunk_rows),
                    ))
                {
                    return;
                }
            }
            if !chunk.is_empty() {
                send(chunk);
            }
        });

        // Stage 3: commit part files every `checkpoint_rows` rows.
        let writer = s.spawn(|| -> Result<()> {
            let mut part_index = parts.len();
            let mut pending: Vec<Row> = Vec::new();
            let commit = |rows: &mut Vec<Row>, index: &mut usize| -> Result<()> {
                if rows.is_empty() {
                    return Ok(());
                }
                let batch = shard::to_batch(&schema, &plan.columns, dim, rows)?;
                shard::write_parquet(
                    &parts_dir.join(format!("part-{:05}.parquet", *index)),
                    &schema,
                    &[batch],
                )?;
                *index += 1;
                rows.clear();
                Ok(())
            };
            for chunk in from_model {
                pending.extend(chunk);
                // Parts hold whole chunks, so a resumed run re-forms exactly the same batches.
                if pending.len() + chunk_rows > cfg.checkpoint_rows {
                    commit(&mut pending, &mut part_index)?;
                }
            }
            commit(&mut pending, &mut part_index)
        });

        // Stage 2 (this thread): the forward pass.
        let mut rows_now = 0;
        let mut tokens_now = 0;
        let mut failure = None;
        for item in from_reader {
            let (mut rows, tokenized) = match item {
                Ok(x) => x,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let encoded = match encoder.encode_tokenized(&tokenized, |_, _| {}) {
                Ok(e) => e,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            for (r, v) in rows.iter_mut().zip(encoded.vectors) {
                r.vector = v;
            }
            rows_now += rows.len();
            tokens_now += encoded.tokens;
            bar.inc(rows.len() as u64);
            total.inc(rows.len() as u64);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tokens/s", tokens_now as f64 / secs));
            if to_writer.send(rows).is_err() {
                break;
            }
        }
        drop(to_writer);
        let write_result = writer.join().expect("writer thread panicked");
        let _ = reader.join();
        if let Some(e) = failure {
            return Err(e.context(format!("embedding {}", shard_name(k, n))));
        }
        write_result?;
        Ok((rows_now, tokens_now))
    })?;

    // All parts are committed: merge them into the final shard file, then record it.
    let parts = shard::committed_parts(&parts_dir)?;
    let dest = cfg.out.join(format!("{}.parquet", shard_name(k, n)));
    let rows = shard::merge_parts(&parts, &dest, &schema)?;
    if rows != plan.rows_per_shard[k] {
        bail!(
            "{}: {rows} rows written but the plan has {}; the input changed during the run?",
            dest.display(),
            plan.rows_per_shard[k]
        );
    }
    manifest::write_shard_report(
        &cfg.out,
        &ShardReport {
            shard: k,
            shards: n,
            rows,
            file: dest.file_name().unwrap().to_string_lossy().into_owned(),
        },
    )?;
    std::fs::remove_dir_all(&parts_dir).ok();
    Ok((rows_now, tokens_now))
}

/// Read every vector of an extraction (all shards, in shard order): ids and a flat buffer.
pub fn read_embeddings(dir: &Path) -> Result<(Vec<String>, Vec<f32>, usize)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float32Type;
    let manifest = manifest::read_complete(dir)?;
    let mut ids = Vec::new();
    let mut data = Vec::new();
    for k in 0..manifest.shards {
        let path = dir.join(format!("{}.parquet", shard_name(k, manifest.shards)));
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?;
        for batch in reader {
            let batch = batch?;
            let id_col = batch
                .column_by_name("id")
                .context("no id column")?
                .as_string::<i32>();
            ids.extend(id_col.iter().map(|s| s.unwrap_or_default().to_string()));
            let emb = batch
                .column_by_name("embedding")
                .context("no embedding column")?
                .as_fixed_size_list();
            data.extend_from_slice(emb.values().as_primitive::<Float32Type>().values());
        }
    }
    Ok((ids, data, manifest.dim))
}

pub use manifest::ExtractManifest as Manifest;
