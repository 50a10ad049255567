//! `embed encode`: texts from a JSON-lines file to vectors in a JSON-lines file.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

use super::model::ModelArgs;
use super::names;
use super::progress::Bars;
use crate::encoder::TextKind;
use crate::progress::Progress;

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
    #[arg(long, default_value = "document", value_parser = names::<TextKind>(TextKind::NAMES))]
    pub kind: TextKind,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Also print the closing figures as one JSON line on stderr (for benchmarks).
    #[arg(long)]
    pub summary_json: bool,
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let records = crate::corpus::read_id_text_jsonl(&args.input)?;
    let load_start = Instant::now();
    let encoder = args.model.load()?;
    let load_seconds = load_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let texts: Vec<&str> = records.iter().map(|(_, t)| t.as_str()).collect();
    let tokenized = encoder
        .tokenize(&texts, args.kind)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    let bars = Bars::new(args.quiet);
    let task = bars.task("encoding", Some(records.len() as u64), "texts");
    let encoded = encoder.encode_tokenized(&tokenized, |n, _| task.inc(n as u64))?;
    drop(task);
    let seconds = start.elapsed().as_secs_f64();

    crate::fsio::write_atomically(&args.output, |w| {
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
