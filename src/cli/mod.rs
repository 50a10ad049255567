//! The command line: argument structs (one file per command) and the glue that turns them into
//! library calls. Nothing outside this folder and src/bin/ knows about clap or progress bars.

pub mod distill;
pub mod encode;
pub mod eval;
pub mod extract;
pub mod index;
pub mod info;
pub mod model;
pub mod plot;
pub mod progress;
pub mod reference;
pub mod solve;

use anyhow::Result;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

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
    Encode(encode::EncodeArgs),
    /// Show the recipe the model resolves to: architecture, dim, attention, pooling,
    /// normalisation, max length, templates, dtype and device.
    Info(info::InfoArgs),
    /// Embed a corpus of solved problems into Parquet shards plus manifest.json: sharded,
    /// parallel, resumable after a kill (re-run the same command).
    Extract(extract::ExtractArgs),
    /// Build, query, evaluate and inspect HNSW indexes over extracted embeddings.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Are the neighbours any good? Label precision@k, MRR and near-duplicate rate of the index
    /// for labelled queries, beside BM25 and random neighbours.
    EvalRetrieval(eval::EvalRetrievalArgs),
    /// Draw a 2D or 3D map (PCA or UMAP-style) of an extraction or an index to PNG/SVG.
    Plot(plot::PlotArgs),
}

/// The `embed` binary: run one subcommand.
pub fn run_embed(cli: EmbedCli) -> Result<()> {
    match cli.command {
        EmbedCommand::Encode(a) => encode::run(a),
        EmbedCommand::Info(a) => info::run(a),
        EmbedCommand::Extract(a) => extract::run(a),
        EmbedCommand::Index(c) => index::run(c),
        EmbedCommand::Plot(a) => plot::run(a),
        EmbedCommand::EvalRetrieval(a) => eval::run(a),
    }
}

/// A value parser for a library enum spelt by [`crate::named_enum`]: `--help` lists the names.
pub fn names<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| {
        s.parse::<T>()
            .map_err(|_| format!("{s:?} is listed but does not parse"))
    })
}

/// Shared error-reporting entry point for the binaries: print the whole error chain, exit 1.
pub fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
