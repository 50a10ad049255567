//! `embed eval-retrieval`: label precision@k, MRR and near-duplicates of an index.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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
    /// Word 5-gram Jaccard overlap at or above which a corpus record is a query's twin (the
    /// same problem), as `solve --exclude-overlap`; same ids and same normalised texts are
    /// twins too.
    #[arg(long, default_value_t = crate::solve::exclude::DEFAULT_OVERLAP)]
    pub twin_overlap: f64,
    /// Model folder, if it moved since the index was built.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalRetrievalArgs) -> Result<()> {
    let r = crate::retrieval_eval::evaluate(
        &a.index,
        &a.queries,
        a.k,
        &a.label,
        &crate::retrieval_eval::Thresholds {
            duplicate: a.duplicate_threshold,
            twin_overlap: a.twin_overlap,
        },
        a.model.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        crate::retrieval_eval::print_table(&r);
    }
    Ok(())
}
