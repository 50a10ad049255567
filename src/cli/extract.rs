//! `embed extract`: a corpus into Parquet shards plus manifest.json.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use super::model::ModelArgs;
use super::progress::Bars;
use crate::encoder::Device;
use crate::extract::{plan::TextChoice, ExtractConfig};
use std::io::IsTerminal;

#[derive(Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Corpus file(s): .jsonl, .csv or .parquet, by extension. Repeat for several files.
    #[arg(long, required = true)]
    pub input: Vec<PathBuf>,
    /// Output folder for shard-KKKKK-of-NNNNN.parquet and manifest.json
    /// [default: embeddings/<first input's name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of shards; records are split by a hash of their id, the same on every machine.
    #[arg(long, default_value_t = 8)]
    pub shards: usize,
    /// Run one shard only (a number), or `auto`: the shard of SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX, or every WORLD-th shard from this process's rank (SLURM_PROCID of
    /// SLURM_NTASKS, RANK of WORLD_SIZE, LOCAL_RANK of LOCAL_WORLD_SIZE). Without it every shard
    /// runs here.
    #[arg(long)]
    pub shard_id: Option<String>,
    /// Shards embedded at the same time on --device, each worker with its own copy of the model;
    /// CPU threads are divided between them.
    #[arg(long, default_value_t = 1, conflicts_with = "devices")]
    pub workers: usize,
    /// One worker per listed device, e.g. cuda:0,cuda:1,cuda:2 (or cpu,cpu); shards go to
    /// workers as they free up. Replaces --device and --workers.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<Device>,
    /// Field holding the record id [default: `id`; records without one get FILE:LINE ids].
    #[arg(long)]
    pub id_field: Option<String>,
    /// Field embedded as the document text [default: the first of problem, question, prompt,
    /// text, or the last user turn of messages/conversations]. --doc-template overrides it.
    #[arg(long)]
    pub text_field: Option<String>,
    /// Build the embedded text from fields and paths, e.g. "{problem}\n{solution}" or
    /// "{messages[-1].content}" (docs/corpora.md).
    #[arg(long)]
    pub doc_template: Option<String>,
    /// Commit finished rows every this many rows: a kill loses at most this much work.
    #[arg(long, default_value_t = 10_000)]
    pub checkpoint_rows: usize,
    /// Set malformed records, empty texts and duplicate ids aside in rejected.jsonl instead of
    /// stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Start over when --out holds a different job (otherwise refused, naming the field).
    #[arg(long)]
    pub force: bool,
    /// Log lines instead of progress bars (a progress line every 10% or 5 s).
    #[arg(long)]
    pub quiet: bool,
    /// Print a JSON summary object on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

impl ExtractArgs {
    fn config(&self) -> Result<ExtractConfig> {
        let out = match &self.out {
            Some(o) => o.clone(),
            None => {
                let stem = self.input[0]
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "corpus".into());
                PathBuf::from("embeddings").join(stem)
            }
        };
        let shard_ids = match self.shard_id.as_deref() {
            None => None,
            Some("auto") => Some(crate::extract::shard_ids_from_env(self.shards)?),
            Some(k) => Some(vec![k.parse().map_err(|_| {
                anyhow::anyhow!("--shard-id {k:?}: expected a number or `auto`")
            })?]),
        };
        if self.workers == 0 {
            anyhow::bail!("--workers must be at least 1");
        }
        let devices = if self.devices.is_empty() {
            vec![self.model.device; self.workers]
        } else {
            self.devices.clone()
        };
        Ok(ExtractConfig {
            inputs: self.input.clone(),
            out,
            model: self.model.model_spec()?,
            // The first device decides the dtype a manifest records (the checkpoint's on CUDA).
            encoder: crate::encoder::EncoderOptions {
                device: devices[0],
                ..self.model.options()
            },
            devices,
            text: TextChoice {
                id_field: self.id_field.clone(),
                text_field: self.text_field.clone(),
                doc_template: self.doc_template.as_ref().map(|t| t.replace("\\n", "\n")),
            },
            shards: self.shards,
            shard_ids,
            checkpoint_rows: self.checkpoint_rows,
            skip_bad: self.skip_bad,
            force: self.force,
            progress_lines: self.quiet || !std::io::stderr().is_terminal(),
        })
    }
}

pub fn run(args: ExtractArgs) -> Result<()> {
    let cfg = args.config()?;
    let s = crate::extract::run(&cfg, &Bars::new(args.quiet))?;
    let secs = s.seconds.max(1e-9);
    eprintln!(
        "extract: {} rows ({} embedded in this run), {} truncated at {} tokens, {} rejected, \
         {}/{} shards complete, dim {}, {:.1} s, {:.1} texts/s, {:.0} tokens/s -> {}",
        s.rows,
        s.rows_embedded_now,
        s.truncated_now,
        s.max_length,
        s.rejected,
        s.shards_done,
        s.shards,
        s.dim,
        s.seconds,
        s.rows_embedded_now as f64 / secs,
        s.tokens_now as f64 / secs,
        cfg.out.display()
    );
    if s.truncated_now > 0 {
        eprintln!(
            "note: {} of {} texts were longer than {} tokens and were cut (--max-length to change)",
            s.truncated_now, s.rows_embedded_now, s.max_length
        );
    }
    if args.json {
        let summary = serde_json::json!({
            "rows": s.rows,
            "embedded_now": s.rows_embedded_now,
            "tokens_now": s.tokens_now,
            "truncated": s.truncated_now,
            "max_length": s.max_length,
            "rejected": s.rejected,
            "shards": s.shards,
            "shards_complete": s.shards_done,
            "dim": s.dim,
            "seconds": s.seconds,
            "texts_per_s": s.rows_embedded_now as f64 / secs,
            "id_field": s.id_field,
            "doc_template": s.doc_template,
            "out": crate::fsio::canonical(&cfg.out),
        });
        println!("{summary}");
    }
    Ok(())
}
