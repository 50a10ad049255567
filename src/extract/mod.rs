//! `embed extract`: sharded, resumable embedding of a corpus into Parquet shards plus a manifest.
//!
//! Flow: check the flags, read what the checkpoint says about itself (no weights), scan the
//! inputs once without a model (validate every record, fix the schema and the split), and
//! refuse a mismatched output folder — all before any model is loaded. Then one worker per
//! device (worker.rs) takes shards from a queue; each shard runs a three-stage pipeline (read +
//! tokenise → forward pass → write) on its own threads, so the model does not wait on I/O.
//! Shards commit part files every `--checkpoint-rows` rows and are merged into their final file
//! at the end.

pub mod manifest;
pub mod plan;
pub mod shard;
pub mod template;
mod worker;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::encoder::{Checkpoint, Device, EncoderOptions};
use crate::progress::Progress;
use manifest::ExtractManifest;
use plan::{Plan, TextChoice};
use shard::shard_name;

/// Rows per pipeline chunk: one tokenisation call and one trip through the forward pass queue.
/// Texts are length-sorted within a chunk, so bigger chunks pad less: over 12,500 MATH problems
/// 256-row chunks ran at 0.86x the encoder alone, 1,024-row chunks at 0.98x (docs/benchmarks.md).
const MAX_CHUNK_ROWS: usize = 1024;

#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub model: String,
    /// Recipe, dtype and batch budget; its `device` is replaced by each worker's own.
    pub encoder: EncoderOptions,
    /// One worker per entry, each with its own copy of the model (`cpu,cpu` is two CPU workers
    /// sharing the cores).
    pub devices: Vec<Device>,
    /// Id field and text as the flags give them; the rest is detected from the first record.
    pub text: TextChoice,
    pub shards: usize,
    /// `None`: run every shard here.
    pub shard_ids: Option<Vec<usize>>,
    pub checkpoint_rows: usize,
    pub skip_bad: bool,
    pub force: bool,
    /// Log a progress line every 10% or 5 s (for --quiet and logs, where no bar is drawn).
    pub progress_lines: bool,
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
    /// Texts of this run cut at the recipe's `max_length`.
    pub truncated_now: usize,
    pub max_length: usize,
    /// The id field (or `{file}:{line}`) and template the records got.
    pub id_field: String,
    pub doc_template: String,
}

/// `--shard-id auto`: the shards this process should run, from the scheduler's environment.
/// An array task (Slurm array, Kubernetes indexed job) runs the one shard of its index; a rank of
/// a multi-process launch (`srun`, `torchrun`) runs every `world`-th shard from its rank.
pub fn shard_ids_from_env(shards: usize) -> Result<Vec<usize>> {
    let var = |name: &str| -> Result<Option<usize>> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(v.trim().parse().with_context(|| {
                format!("{name}={v:?} is not a non-negative number")
            })?)),
            Err(_) => Ok(None),
        }
    };
    for name in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Some(k) = var(name)? {
            return Ok(vec![k]);
        }
    }
    let ranked = [
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("RANK", "WORLD_SIZE"),
        ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ];
    for (rank, world) in ranked {
        if let Some(r) = var(rank)? {
            let w = var(world)?.unwrap_or(shards).max(1);
            if r >= w {
                bail!("{rank}={r} is not below {world}={w}");
            }
            return Ok((r..shards).step_by(w).collect());
        }
    }
    bail!(
        "--shard-id auto: none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, SLURM_PROCID, RANK \
         or LOCAL_RANK is set"
    )
}

pub fn run(cfg: &ExtractConfig, progress: &dyn Progress) -> Result<ExtractSummary> {
    let start = Instant::now();
    let shard_ids = check_config(cfg)?;
    check_out_dir(cfg)?;
    // Cheap refusals first: the checkpoint's own description, the input scan and the output
    // folder's manifest are all checked before any weights are read.
    let checkpoint = Checkpoint::open(&cfg.model, &cfg.encoder.overrides)?;
    let plan = scan_inputs(cfg, progress)?;
    for note in &plan.notes {
        progress.log(&format!("note: {note}"));
    }
    let total_rows: usize = plan.rows_per_shard.iter().sum();
    if total_rows == 0 {
        bail!("no usable records in {:?}", cfg.inputs);
    }
    let info = checkpoint.info(&cfg.encoder);
    let manifest = ExtractManifest::new(&info, cfg.encoder.batch_tokens(), &plan);
    prepare_out_dir(cfg, &manifest)?;
    if !plan.rejected.is_empty() {
        manifest::write_rejected(&cfg.out, &plan.rejected)?;
        progress.log(&format!(
            "{} records set aside with their reasons in {}",
            plan.rejected.len(),
            cfg.out.join("rejected.jsonl").display()
        ));
    }
    let pending = pending_shards(cfg, &shard_ids, progress);
    let totals = worker::run_workers(cfg, &checkpoint, &plan, pending, progress)?;
    let shards_done = manifest::finalize(&cfg.out, &manifest)?;
    Ok(ExtractSummary {
        rows: total_rows,
        rows_embedded_now: totals.rows,
        tokens_now: totals.tokens,
        rejected: plan.rejected.len(),
        shards_done,
        shards: cfg.shards,
        dim: manifest.dim,
        seconds: start.elapsed().as_secs_f64(),
        truncated_now: totals.truncated,
        max_length: manifest.recipe.max_length,
        id_field: plan.text.id_field.clone(),
        doc_template: plan.text.doc_template.clone(),
    })
}

/// Flag checks that need no model: returns the shards to run here.
fn check_config(cfg: &ExtractConfig) -> Result<Vec<usize>> {
    if cfg.shards == 0 {
        bail!("--shards must be at least 1");
    }
    if cfg.checkpoint_rows == 0 {
        bail!("--checkpoint-rows must be at least 1");
    }
    if cfg.devices.is_empty() {
        bail!("no device to run on: give --device, --workers or --devices");
    }
    check_inputs(&cfg.inputs)?;
    let Some(ids) = &cfg.shard_ids else {
        return Ok((0..cfg.shards).collect());
    };
    if let Some(k) = ids.iter().find(|&&k| k >= cfg.shards) {
        bail!(
            "--shard-id {k} is out of range for --shards {} (0..{})",
            cfg.shards,
            cfg.shards - 1
        );
    }
    Ok(ids.clone())
}

/// Every input exists, and no file is given twice (under any path).
fn check_inputs(inputs: &[PathBuf]) -> Result<()> {
    let mut seen: std::collections::HashMap<PathBuf, &PathBuf> = Default::default();
    for p in inputs {
        if !p.is_file() {
            bail!("--input {}: no such file", p.display());
        }
        if let Some(first) = seen.insert(crate::fsio::canonical(p), p) {
            let also = if first == p {
                String::new()
            } else {
                format!(" (also as --input {})", first.display())
            };
            bail!(
                "--input {} is given twice{also}: name each file once",
                p.display()
            );
        }
    }
    Ok(())
}

/// `--out` must be new, empty, or an `embed extract` folder: a folder of other files is never
/// written into (nor cleared by --force).
fn check_out_dir(cfg: &ExtractConfig) -> Result<()> {
    let out = &cfg.out;
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("--out {} is a file, not a folder", out.display());
    }
    let manifest = out.join("manifest.json");
    if manifest.exists() {
        return ExtractManifest::read(&manifest)
            .map(|_| ())
            .with_context(|| {
                format!(
                    "--out {} holds a manifest.json that is not an `embed extract` manifest: \
                 refusing to write there (even with --force); choose another --out",
                    out.display()
                )
            });
    }
    let theirs: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        // A run killed while writing its first manifest leaves only its temporary file.
        .filter(|n| !(n.starts_with(".manifest.json.") && n.ends_with(".tmp")))
        .collect();
    if let Some(first) = theirs.first() {
        bail!(
            "--out {} is not empty ({} entries, e.g. {first:?}) and is not an `embed extract` \
             folder (no manifest.json): refusing to write there; choose a new or empty folder",
            out.display(),
            theirs.len()
        );
    }
    Ok(())
}

/// The model-free first pass over the inputs (see [`plan::plan`]).
fn scan_inputs(cfg: &ExtractConfig, progress: &dyn Progress) -> Result<Plan> {
    let scan = progress.task("checking input", None, "records");
    plan::plan(&cfg.inputs, &cfg.text, cfg.shards, cfg.skip_bad, || {
        scan.inc(1)
    })
}

/// Create the output folder and its manifest, or check that an existing one describes the same
/// job (`--force` starts over instead).
fn prepare_out_dir(cfg: &ExtractConfig, manifest: &ExtractManifest) -> Result<()> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let path = cfg.out.join("manifest.json");
    if path.exists() {
        if !cfg.force {
            let existing = ExtractManifest::read(&path)?;
            if let Some(d) = existing.identity.first_difference(&manifest.identity) {
                bail!(
                    "{} was made by a different job: field {} differs ({} there, {} now). \
                     Use another --out, or --force to start over",
                    path.display(),
                    d.field,
                    d.ours,
                    d.theirs
                );
            }
            return Ok(());
        }
        manifest::clear(&cfg.out)?;
    }
    manifest.write(&path)
}

/// The requested shards that are not complete yet, in order.
fn pending_shards(cfg: &ExtractConfig, ids: &[usize], progress: &dyn Progress) -> Vec<usize> {
    ids.iter()
        .copied()
        .filter(|&k| {
            let done = manifest::shard_complete(&cfg.out, k, cfg.shards);
            if done {
                progress.log(&format!(
                    "{} is already complete",
                    shard_name(k, cfg.shards)
                ));
            }
            !done
        })
        .collect()
}

/// What a run embedded.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    rows: usize,
    tokens: usize,
    /// Texts cut at the recipe's max_length.
    truncated: usize,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.rows += o.rows;
        self.tokens += o.tokens;
        self.truncated += o.truncated;
    }
}

pub use manifest::ExtractManifest as Manifest;
