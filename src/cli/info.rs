//! `embed info`: the recipe a model resolves to.

use anyhow::Result;
use clap::Args;
use std::io::Write;

use super::model::ModelArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
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
