//! `embed info`: the recipe a model resolves to, and (`--estimate`) the memory it needs.

use anyhow::Result;
use clap::Args;
use std::io::Write;

use super::model::ModelArgs;
use crate::encoder::{estimate_memory, MemoryEstimate};

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Estimate the memory of embedding at --device, --dtype, --max-length and
    /// --max-batch-tokens (weights, activations of the largest batch, attention scores per
    /// block, peak) from config.json alone, without loading the weights.
    #[arg(long)]
    pub estimate: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    if args.estimate {
        let e = estimate_memory(&args.model.model_spec()?, &args.model.options())?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&e)?);
        } else {
            print_estimate(&e)?;
        }
        return Ok(());
    }
    let encoder = args.model.load()?;
    let info = encoder.info();
    let settings = encoder.settings();
    if args.json {
        let mut json = serde_json::to_value(info)?;
        json["config"] = serde_json::to_value(settings)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let r = &info.recipe;
    let mut out = std::io::stdout().lock();
    writeln!(out, "model:             {}", info.model)?;
    writeln!(out, "path:              {}", info.path)?;
    writeln!(out, "fingerprint:       {}", info.fingerprint)?;
    writeln!(out, "architecture:      {:?}", r.architecture)?;
    match r.truncate_dim {
        Some(n) => writeln!(
            out,
            "dim:               {n} (the first {n} of {} components, --dim)",
            encoder.model_dim()
        )?,
        None => writeln!(out, "dim:               {}", info.dim)?,
    }
    writeln!(out, "hidden act:        {}", settings.hidden_act)?;
    match &settings.rope {
        Some(rope) => writeln!(out, "rope:              {rope}")?,
        None => writeln!(out, "rope:              none (absolute positions)")?,
    }
    if let Some(w) = settings.sliding_window {
        writeln!(out, "sliding window:    {w}")?;
    }
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

/// Bytes as GiB with two decimals (MiB below 1 GiB).
fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

fn print_estimate(e: &MemoryEstimate) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let blocks = match e.attention_block_rows {
        Some(rows) => format!("{rows} query rows"),
        None => "unblocked".to_string(),
    };
    writeln!(out, "model:                {}", e.model)?;
    writeln!(
        out,
        "shape:                {:?}, {} layers, hidden {}, intermediate {}, {} heads",
        e.architecture, e.layers, e.hidden_size, e.intermediate_size, e.heads
    )?;
    writeln!(out, "device / dtype:       {} / {}", e.device, e.dtype)?;
    writeln!(out, "max length:           {}", e.max_length)?;
    writeln!(out, "max batch tokens:     {}", e.max_batch_tokens)?;
    writeln!(out, "attention blocks:     {blocks}")?;
    writeln!(
        out,
        "attention budget:     {} of scores per batch",
        size(e.max_attention_bytes as u64)
    )?;
    writeln!(
        out,
        "parameters:           {} ({:.2} B)",
        e.parameters,
        e.parameters as f64 / 1e9
    )?;
    writeln!(
        out,
        "weights:              {} ({:.2} GB)",
        size(e.weight_bytes),
        e.weight_bytes as f64 / 1e9
    )?;
    writeln!(
        out,
        "largest batch:        {} x {} tokens",
        e.batch.batch_sequences, e.batch.batch_length
    )?;
    writeln!(
        out,
        "  hidden states:      {} each",
        size(e.batch.hidden_state_bytes)
    )?;
    writeln!(
        out,
        "  MLP intermediate:   {} each",
        size(e.batch.mlp_intermediate_bytes)
    )?;
    writeln!(
        out,
        "  attention scores:   {} per block (f32)",
        size(e.batch.attention_block_bytes)
    )?;
    writeln!(
        out,
        "  activations:        {}",
        size(e.batch.activation_bytes)
    )?;
    writeln!(out, "peak estimate:        {}", size(e.peak_bytes))?;
    writeln!(
        out,
        "(config.json only; add the runtime itself: ~0.5-1 GiB of CUDA context and workspace on a GPU)"
    )?;
    Ok(())
}
