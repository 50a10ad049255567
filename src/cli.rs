//! Command-line surface of the `embed` binary: argument structs (shared by several subcommands)
//! and the small amount of glue that turns them into library calls.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::encoder::{
    Attention, Encoder, EncoderOptions, PaddingSide, Pooling, RecipeOverrides, TextKind,
    DEFAULT_INSTRUCTION,
};
use crate::output::write_atomically;

#[derive(Parser, Debug)]
#[command(
    name = "embed",
    version,
    about = "Embed solved math problems, index them and inspect the result",
    long_about = "Embed solved math problems with a local Hugging Face embedding model \
                  (Llama-family decoder embedders such as nvidia/llama-embed-nemotron-8b, or BERT \
                  encoders such as all-MiniLM-L6-v2), then index and inspect them."
)]
pub struct EmbedCli {
    #[command(subcommand)]
    pub command: EmbedCommand,
}

#[derive(Subcommand, Debug)]
pub enum EmbedCommand {
    /// Embed the texts of a JSON-lines file ({"id", "text"} per line) into a JSON-lines file of
    /// {"id", "embedding"}, in input order.
    Encode(EncodeArgs),
    /// Show the recipe the model resolves to: architecture, dim, attention, pooling,
    /// normalisation, max length, templates, dtype and device.
    Info(InfoArgs),
    /// Embed a corpus of solved problems into Parquet shards plus manifest.json: sharded,
    /// parallel, resumable after a kill (re-run the same command).
    Extract(ExtractArgs),
    /// Build, query, evaluate and inspect HNSW indexes over extracted embeddings.
    #[command(subcommand)]
    Index(crate::index_cli::IndexCommand),
    /// Are the neighbours any good? Label precision@k, MRR and near-duplicate rate of the index
    /// for labelled queries, beside BM25 and random neighbours.
    EvalRetrieval(EvalRetrievalArgs),
    /// Draw a 2D or 3D map (PCA or UMAP-style) of an extraction or an index to PNG/SVG.
    Plot(crate::plot::cli::PlotArgs),
}

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
    /// Run one shard only (a number, or `auto` to take it from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX); without it every shard runs here.
    #[arg(long)]
    pub shard_id: Option<String>,
    /// Shards embedded at the same time, each with its own copy of the model; CPU threads are
    /// divided between them.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Field holding the record id.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Field embedded as the document text (ignored when --doc-template is given).
    #[arg(long, default_value = "problem")]
    pub text_field: String,
    /// Build the embedded text from several fields, e.g. "{problem}\n{solution}".
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
    /// Log lines instead of progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Which model, where it runs, and how texts become vectors. Every recipe flag defaults to what
/// the checkpoint's own files say.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model folder (config.json, tokenizer.json, *.safetensors) or hub id `org/name` found in
    /// the Hugging Face cache. Default: $EXEMPLAR_MODEL, else the all-MiniLM-L6-v2 folder that
    /// scripts/fetch-models.sh installs under .cache/models/.
    #[arg(long, value_name = "DIR|ORG/NAME")]
    pub model: Option<String>,
    /// `cpu`, or `cuda:N` with a build that has the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight and activation precision: f32, bf16 or f16 (pooling is always done in f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Attention mask: causal or bidirectional [default: from the checkpoint].
    #[arg(long, value_enum)]
    pub attention: Option<Attention>,
    /// Pooling: mean over real tokens, last real token, or the first ([CLS]) token
    /// [default: from the checkpoint].
    #[arg(long, value_enum)]
    pub pooling: Option<Pooling>,
    /// Do not L2-normalise the vectors (normalised by default, for cosine search).
    #[arg(long)]
    pub no_normalize: bool,
    /// Append the EOS token to every input (recipes that pool the last token on an EOS).
    #[arg(long)]
    pub append_eos: bool,
    /// Truncate inputs to this many tokens, special tokens included [default: the model's].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Task instruction inserted into the query template.
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    pub instruction: String,
    /// Query template with {instruction} and {text}; `\n` is a newline
    /// [default: from config_sentence_transformers.json, else "Instruct: {instruction}\nQuery: {text}"].
    #[arg(long)]
    pub query_template: Option<String>,
    /// Document template with {text} [default: the text as it is].
    #[arg(long)]
    pub document_template: Option<String>,
    /// Pad batches on the left or right [default: left for decoders, right for BERT]; the
    /// vectors do not depend on it.
    #[arg(long, value_enum)]
    pub padding_side: Option<PaddingSide>,
    /// Padded-token budget of one forward pass; texts are sorted by length and packed under it
    /// [default: 2048 on CPU, 16384 on GPU].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
}

impl ModelArgs {
    pub fn model_spec(&self) -> Result<String> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        default_model()
    }

    pub fn options(&self) -> EncoderOptions {
        let unescape = |s: &String| s.replace("\\n", "\n");
        EncoderOptions {
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            max_batch_tokens: self.max_batch_tokens,
            overrides: RecipeOverrides {
                attention: self.attention,
                pooling: self.pooling,
                normalize: self.no_normalize.then_some(false),
                append_eos: self.append_eos.then_some(true),
                max_length: self.max_length,
                document_template: self.document_template.as_ref().map(unescape),
                query_template: self.query_template.as_ref().map(unescape),
                instruction: Some(self.instruction.clone()),
                padding_side: self.padding_side,
            },
        }
    }

    pub fn load(&self) -> Result<Encoder> {
        let spec = self.model_spec()?;
        Encoder::load(&spec, &self.options())
    }
}

/// The model used when `--model` is not given.
pub fn default_model() -> Result<String> {
    if let Ok(m) = std::env::var("EXEMPLAR_MODEL") {
        return Ok(m);
    }
    let cache = std::env::var("EXEMPLAR_CACHE").unwrap_or_else(|_| ".cache".into());
    let dir = Path::new(&cache).join("models/all-MiniLM-L6-v2");
    if dir.is_dir() {
        return Ok(dir.display().to_string());
    }
    anyhow::bail!(
        "no --model given and the default model is not installed at {}: run scripts/fetch-models.sh \
         (or set EXEMPLAR_MODEL)",
        dir.display()
    )
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSON-lines input, one {"id": "...", "text": "..."} per line.
    #[arg(long)]
    pub input: PathBuf,
    /// JSON-lines output, one {"id": "...", "embedding": [...]} per line, in input order.
    #[arg(long)]
    pub output: PathBuf,
    /// Embed as queries (wrapped in the query template) or as documents (document template).
    #[arg(long, value_enum, default_value = "document")]
    pub kind: TextKind,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Also print the closing figures as one JSON line on stderr (for benchmarks).
    #[arg(long)]
    pub summary_json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: EmbedCli) -> Result<()> {
    match cli.command {
        EmbedCommand::Encode(a) => encode(a),
        EmbedCommand::Info(a) => info(a),
        EmbedCommand::Extract(a) => extract(a),
        EmbedCommand::Index(c) => crate::index_cli::run(c),
        EmbedCommand::Plot(a) => crate::plot::cli::run(a),
        EmbedCommand::EvalRetrieval(a) => eval_retrieval(a),
    }
}

pub fn progress_bar(total: u64, quiet: bool, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("static template"),
    );
    bar
}

fn encode(args: EncodeArgs) -> Result<()> {
    let records = crate::corpus::read_id_text_jsonl(&args.input)?;
    let load_start = Instant::now();
    let encoder = args.model.load()?;
    let load_seconds = load_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let texts: Vec<&str> = records.iter().map(|(_, t)| t.as_str()).collect();
    let tokenized = encoder
        .tokenize(&texts, args.kind)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    let bar = progress_bar(records.len() as u64, args.quiet, "texts");
    let encoded = encoder.encode_tokenized(&tokenized, |n, _| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    write_atomically(&args.output, |w| {
        for ((id, _), v) in records.iter().zip(&encoded.vectors) {
            serde_json::to_writer(&mut *w, &serde_json::json!({"id": id, "embedding": v}))?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;

    let n = records.len();
    eprintln!(
        "encoded {n} texts ({} tokens, {} truncated at {}) in {seconds:.2} s: {:.1} texts/s, {:.0} tokens/s -> {}",
        encoded.tokens,
        encoded.truncated,
        encoder.recipe().max_length,
        n as f64 / seconds,
        encoded.tokens as f64 / seconds,
        args.output.display()
    );
    if args.summary_json {
        eprintln!(
            "{}",
            serde_json::json!({
                "impl": "exemplar",
                "texts": n,
                "tokens": encoded.tokens,
                "truncated": encoded.truncated,
                "seconds": seconds,
                "load_seconds": load_seconds,
                "texts_per_s": n as f64 / seconds,
                "tokens_per_s": encoded.tokens as f64 / seconds,
                "dim": encoder.dim(),
            })
        );
    }
    Ok(())
}

fn info(args: InfoArgs) -> Result<()> {
    let encoder = args.model.load()?;
    let info = encoder.info();
    if args.json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    let r = &info.recipe;
    let mut out = std::io::stdout().lock();
    writeln!(out, "model:             {}", info.model)?;
    writeln!(out, "path:              {}", info.path)?;
    writeln!(out, "fingerprint:       {}", info.fingerprint)?;
    writeln!(out, "architecture:      {:?}", r.architecture)?;
    writeln!(out, "dim:               {}", info.dim)?;
    writeln!(out, "attention:         {:?}", r.attention)?;
    writeln!(out, "pooling:           {:?}", r.pooling)?;
    writeln!(out, "normalize:         {}", r.normalize)?;
    writeln!(out, "append eos:        {}", r.append_eos)?;
    writeln!(out, "max length:        {}", r.max_length)?;
    writeln!(out, "padding side:      {:?}", r.padding_side)?;
    writeln!(out, "document template: {:?}", r.document_template)?;
    writeln!(out, "query template:    {:?}", r.query_template)?;
    writeln!(out, "instruction:       {:?}", r.instruction)?;
    writeln!(out, "dtype:             {}", info.dtype)?;
    writeln!(out, "device:            {}", info.device)?;
    Ok(())
}

/// Shared error-reporting entry point for the binaries: print the whole error chain, exit 1.
pub fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn extract(args: ExtractArgs) -> Result<()> {
    use crate::extract::{plan::TextSpec, ExtractConfig};
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let stem = args.input[0]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "corpus".into());
            PathBuf::from("embeddings").join(stem)
        }
    };
    let shard_ids = match args.shard_id.as_deref() {
        None => None,
        Some("auto") => Some(vec![crate::extract::shard_id_from_env()?]),
        Some(k) => Some(vec![k.parse().map_err(|_| {
            anyhow::anyhow!("--shard-id {k:?}: expected a number or `auto`")
        })?]),
    };
    let doc_template = match &args.doc_template {
        Some(t) => t.replace("\\n", "\n"),
        None => format!("{{{}}}", args.text_field),
    };
    let cfg = ExtractConfig {
        inputs: args.input.clone(),
        out: out.clone(),
        model: args.model.model_spec()?,
        encoder: args.model.options(),
        text: TextSpec {
            id_field: args.id_field.clone(),
            doc_template,
        },
        shards: args.shards,
        shard_ids,
        workers: args.workers,
        checkpoint_rows: args.checkpoint_rows,
        skip_bad: args.skip_bad,
        force: args.force,
        quiet: args.quiet,
    };
    let s = crate::extract::run(&cfg)?;
    let secs = s.seconds.max(1e-9);
    eprintln!(
        "extract: {} rows ({} embedded in this run), {} rejected, {}/{} shards complete, dim {}, \
         {:.1} s, {:.1} texts/s, {:.0} tokens/s -> {}",
        s.rows,
        s.rows_embedded_now,
        s.rejected,
        s.shards_done,
        s.shards,
        s.dim,
        s.seconds,
        s.rows_embedded_now as f64 / secs,
        s.tokens_now as f64 / secs,
        out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalRetrievalArgs {
    /// Index built by `embed index build`.
    #[arg(long)]
    pub index: PathBuf,
    /// Labelled queries: .jsonl/.csv/.parquet with id, problem and the label field.
    #[arg(long)]
    pub queries: PathBuf,
    /// Neighbours per query.
    #[arg(short, default_value_t = 4)]
    pub k: usize,
    /// Field that must match between a query and its neighbours.
    #[arg(long, default_value = "subject")]
    pub label: String,
    /// Cosine at or above which a neighbour counts as a near-duplicate (possible leakage).
    #[arg(long, default_value_t = 0.95)]
    pub duplicate_threshold: f32,
    /// Model folder, if it moved since the index was built.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn eval_retrieval(a: EvalRetrievalArgs) -> Result<()> {
    let r = crate::retrieval_eval::evaluate(
        &a.index,
        &a.queries,
        a.k,
        &a.label,
        a.duplicate_threshold,
        a.model.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        crate::retrieval_eval::print_table(&r);
    }
    Ok(())
}
