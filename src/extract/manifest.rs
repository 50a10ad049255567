//! `manifest.json` beside the shards (what job made them), one `shard-KKKKK-of-NNNNN.json` report
//! per finished shard, and `rejected.jsonl`. Shard reports are separate files so that shards
//! running on different nodes never write the same file.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::plan::{Column, InputFile, Rejection, TextSpec};
use super::shard::shard_name;
use super::ExtractConfig;
use crate::encoder::{ModelInfo, Recipe};
use crate::output::write_atomically;

pub const FORMAT: &str = "exemplar.embeddings.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractManifest {
    pub format: String,
    pub model: String,
    pub model_path: String,
    pub model_fingerprint: String,
    pub recipe: Recipe,
    pub dim: usize,
    pub dtype: String,
    pub inputs: Vec<InputFile>,
    pub text: TextSpec,
    pub columns: Vec<Column>,
    pub shards: usize,
    pub rows_per_shard: Vec<usize>,
    pub rows: usize,
    pub rejected: usize,
    /// `in_progress` until every shard has its report, then `complete`.
    pub status: String,
    pub completed_shards: Vec<usize>,
    pub created_by: String,
}

/// Fields that must agree for two runs to be parts of the same job, in the order checked.
const IDENTITY: &[&str] = &[
    "format",
    "model_fingerprint",
    "recipe",
    "dim",
    "dtype",
    "inputs",
    "text",
    "columns",
    "shards",
    "rows_per_shard",
];

impl ExtractManifest {
    pub fn new(info: &ModelInfo, cfg: &ExtractConfig, plan: &super::plan::Plan) -> Self {
        Self {
            format: FORMAT.into(),
            model: info.model.clone(),
            model_path: info.path.clone(),
            model_fingerprint: info.fingerprint.clone(),
            recipe: info.recipe.clone(),
            dim: info.dim,
            dtype: info.dtype.clone(),
            inputs: plan.inputs.clone(),
            text: cfg.text.clone(),
            columns: plan.columns.clone(),
            shards: cfg.shards,
            rows_per_shard: plan.rows_per_shard.clone(),
            rows: plan.rows_per_shard.iter().sum(),
            rejected: plan.rejected.len(),
            status: "in_progress".into(),
            completed_shards: Vec::new(),
            created_by: format!("exemplar {}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not an exemplar embeddings manifest", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, |w| {
            serde_json::to_writer_pretty(&mut *w, self)?;
            w.write_all(b"\n")?;
            Ok(())
        })
    }

    /// The first identity field (dotted, e.g. `recipe.pooling`) where `self` and `other` differ.
    pub fn first_difference(&self, other: &Self) -> Option<String> {
        let a = serde_json::to_value(self).ok()?;
        let b = serde_json::to_value(other).ok()?;
        for key in IDENTITY {
            if a[key] != b[key] {
                if let (Some(ao), Some(bo)) = (a[key].as_object(), b[key].as_object()) {
                    for (k, v) in ao {
                        if bo.get(k) != Some(v) {
                            return Some(format!("{key}.{k}"));
                        }
                    }
                }
                return Some(key.to_string());
            }
        }
        None
    }

    /// A dotted field's value as compact JSON, for error messages.
    pub fn field_value(&self, dotted: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        for part in dotted.split('.') {
            v = v[part].take();
        }
        let s = v.to_string();
        if s.len() > 120 {
            format!(
                "{}...",
                &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)]
            )
        } else {
            s
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: usize,
    pub shards: usize,
    pub rows: usize,
    pub file: String,
}

pub fn write_shard_report(dir: &Path, report: &ShardReport) -> Result<()> {
    let path = dir.join(format!("{}.json", shard_name(report.shard, report.shards)));
    write_atomically(&path, |w| Ok(serde_json::to_writer_pretty(w, report)?))
}

/// A shard is complete when its Parquet file and its report both exist (the report is written
/// only after the file has been renamed into place).
pub fn shard_complete(dir: &Path, k: usize, n: usize) -> bool {
    let name = shard_name(k, n);
    dir.join(format!("{name}.parquet")).is_file() && dir.join(format!("{name}.json")).is_file()
}

/// Record which shards are complete in manifest.json; returns how many are.
pub fn finalize(dir: &Path, manifest: &ExtractManifest) -> Result<usize> {
    let mut m = manifest.clone();
    m.completed_shards = (0..m.shards)
        .filter(|&k| shard_complete(dir, k, m.shards))
        .collect();
    if m.completed_shards.len() == m.shards {
        m.status = "complete".into();
    }
    m.write(&dir.join("manifest.json"))?;
    // Only removed once empty: another node may still be filling its own shard's parts.
    let _ = std::fs::remove_dir(dir.join(".parts"));
    Ok(m.completed_shards.len())
}

pub fn write_rejected(dir: &Path, rejected: &[Rejection]) -> Result<()> {
    write_atomically(&dir.join("rejected.jsonl"), |w| {
        for r in rejected {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// `--force`: remove everything a previous job wrote here (and nothing else).
pub fn clear(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ours = name == "manifest.json"
            || name == "rejected.jsonl"
            || (name.starts_with("shard-")
                && (name.ends_with(".parquet") || name.ends_with(".json")));
        if ours {
            std::fs::remove_file(&p)?;
        } else if name == ".parts" {
            std::fs::remove_dir_all(&p)?;
        }
    }
    Ok(())
}

/// Read the manifest of a finished extraction: refuses a folder without one, or with shards that
/// are not complete yet (naming them). Every reader of an extraction goes through here.
pub fn read_complete(dir: &Path) -> Result<ExtractManifest> {
    let path = dir.join("manifest.json");
    if !path.is_file() {
        anyhow::bail!(
            "{}: no manifest.json; is this an `embed extract` output folder?",
            dir.display()
        );
    }
    let m = ExtractManifest::read(&path)?;
    let missing: Vec<usize> = (0..m.shards)
        .filter(|&k| !shard_complete(dir, k, m.shards))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{}: shards {missing:?} of {} are not complete; finish `embed extract` first",
            dir.display(),
            m.shards
        );
    }
    Ok(m)
}
