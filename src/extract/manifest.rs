//! `manifest.json` beside the shards (what job made them), one `shard-KKKKK-of-NNNNN.json` report
//! per finished shard, and `rejected.jsonl`. Shard reports are separate files so that shards
//! running on different nodes never write the same file.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::plan::{Column, InputFile, Plan, Rejection, TextSpec};
use super::shard::shard_name;
use crate::encoder::{DType, ModelInfo, Recipe};
use crate::fsio::{hash_file, write_atomically, FileDigest};
use std::collections::BTreeMap;

pub const FORMAT: &str = "exemplar.embeddings.v1";

/// Everything that decides the vectors and their layout: two runs with the same identity are
/// parts of one job (a resume, or another node of a Slurm array); any difference refuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractIdentity {
    pub format: String,
    pub model_fingerprint: String,
    pub recipe: Recipe,
    pub dim: usize,
    pub dtype: DType,
    /// Batches decide padding, and padding moves the last bits of a vector: a resumed shard
    /// must be cut into the same batches to stay bit-identical.
    #[serde(default)]
    pub max_batch_tokens: usize,
    pub inputs: Vec<InputFile>,
    pub text: TextSpec,
    pub columns: Vec<Column>,
    pub shards: usize,
    pub rows_per_shard: Vec<usize>,
}

/// Where two identities part: the dotted field name and both values as compact JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub ours: String,
    pub theirs: String,
}

impl ExtractIdentity {
    /// The first field (dotted inside the recipe and text spec, e.g. `recipe.pooling`) where
    /// `self` and `other` differ, in the order a user would look for it.
    pub fn first_difference(&self, other: &Self) -> Option<Difference> {
        use erased::Json;
        let (a, b) = (self, other);
        // Compared typed; serialised only to describe the field that differs.
        let checks: [(&str, bool, &dyn Json, &dyn Json); 11] = [
            ("format", a.format != b.format, &a.format, &b.format),
            (
                "model_fingerprint",
                a.model_fingerprint != b.model_fingerprint,
                &a.model_fingerprint,
                &b.model_fingerprint,
            ),
            ("recipe", a.recipe != b.recipe, &a.recipe, &b.recipe),
            ("dim", a.dim != b.dim, &a.dim, &b.dim),
            ("dtype", a.dtype != b.dtype, &a.dtype, &b.dtype),
            (
                "max_batch_tokens",
                a.max_batch_tokens != b.max_batch_tokens,
                &a.max_batch_tokens,
                &b.max_batch_tokens,
            ),
            // By content: the same files named by other paths are the same job.
            (
                "inputs",
                !same_inputs(&a.inputs, &b.inputs),
                &a.inputs,
                &b.inputs,
            ),
            ("text", a.text != b.text, &a.text, &b.text),
            ("columns", a.columns != b.columns, &a.columns, &b.columns),
            ("shards", a.shards != b.shards, &a.shards, &b.shards),
            (
                "rows_per_shard",
                a.rows_per_shard != b.rows_per_shard,
                &a.rows_per_shard,
                &b.rows_per_shard,
            ),
        ];
        let (name, _, x, y) = checks.into_iter().find(|c| c.1)?;
        Some(describe(name, x.json(), y.json()))
    }
}

fn same_inputs(a: &[InputFile], b: &[InputFile]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.bytes == y.bytes && x.sha256 == y.sha256)
}

/// Name the differing field, one level down inside objects (`recipe.pooling`).
fn describe(name: &str, a: serde_json::Value, b: serde_json::Value) -> Difference {
    if let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) {
        if let Some(k) = ao
            .keys()
            .chain(bo.keys())
            .find(|k| ao.get(*k) != bo.get(*k))
        {
            let value = |o: &serde_json::Map<String, serde_json::Value>| {
                clip(&o.get(k).cloned().unwrap_or_default().to_string())
            };
            return Difference {
                field: format!("{name}.{k}"),
                ours: value(ao),
                theirs: value(bo),
            };
        }
    }
    Difference {
        field: name.to_string(),
        ours: clip(&a.to_string()),
        theirs: clip(&b.to_string()),
    }
}

/// Object-safe "serialise me to JSON" for the field comparison above.
mod erased {
    pub trait Json {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            // Plain data (strings, numbers, derived structs) always serialises; a failure
            // would still be reported, as a null that differs from the other side.
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 120 {
        format!("{}...", s.chars().take(117).collect::<String>())
    } else {
        s.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Some shards have no report yet.
    InProgress,
    /// Every shard is written and reported.
    Complete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractManifest {
    #[serde(flatten)]
    pub identity: ExtractIdentity,
    pub model: String,
    pub model_path: String,
    pub rows: usize,
    pub rejected: usize,
    pub status: Status,
    pub completed_shards: Vec<usize>,
    pub created_by: String,
}

impl std::ops::Deref for ExtractManifest {
    type Target = ExtractIdentity;
    fn deref(&self) -> &ExtractIdentity {
        &self.identity
    }
}

impl ExtractManifest {
    /// The manifest of a job; the model's path is stored canonical (see [`crate::fsio::canonical`]).
    pub fn new(info: &ModelInfo, max_batch_tokens: usize, plan: &Plan) -> Self {
        Self {
            identity: ExtractIdentity {
                format: FORMAT.into(),
                model_fingerprint: info.fingerprint.clone(),
                recipe: info.recipe.clone(),
                dim: info.dim,
                dtype: info.dtype,
                max_batch_tokens,
                inputs: plan.inputs.clone(),
                text: plan.text.clone(),
                columns: plan.columns.clone(),
                shards: plan.rows_per_shard.len(),
                rows_per_shard: plan.rows_per_shard.clone(),
            },
            model: info.model.clone(),
            model_path: crate::fsio::canonical(Path::new(&info.path))
                .display()
                .to_string(),
            rows: plan.rows_per_shard.iter().sum(),
            rejected: plan.rejected.len(),
            status: Status::InProgress,
            completed_shards: Vec::new(),
            created_by: format!("exemplar {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Read a manifest; a missing, misspelt or mistyped field is refused by name.
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: usize,
    pub shards: usize,
    pub rows: usize,
    pub file: String,
}

/// A report on disk: the report and the size and sha256 of the shard file (absent in reports
/// written before shard checksums existed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReportFile {
    #[serde(flatten)]
    report: ShardReport,
    #[serde(flatten)]
    digest: Option<FileDigest>,
}

/// What manifest.json records of each finished shard file (by file name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    pub rows: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// Write the report of shard `report.shard`, whose file is in place: its size and sha256 are
/// taken now and recorded with it.
pub fn write_shard_report(dir: &Path, report: &ShardReport) -> Result<()> {
    let name = shard_name(report.shard, report.shards);
    let digest = hash_file(&dir.join(format!("{name}.parquet")))?;
    let path = dir.join(format!("{name}.json"));
    let file = ReportFile {
        report: report.clone(),
        digest: Some(digest),
    };
    write_atomically(&path, |w| Ok(serde_json::to_writer_pretty(w, &file)?))
}

/// The recorded rows, size and sha256 of shard `k` of `n` (None for an older report).
pub fn read_shard_file(dir: &Path, k: usize, n: usize) -> Result<Option<ShardFile>> {
    let path = dir.join(format!("{}.json", shard_name(k, n)));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r: ReportFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a shard report", path.display()))?;
    Ok(r.digest.map(|d| ShardFile {
        rows: r.report.rows,
        bytes: d.bytes,
        sha256: d.sha256,
    }))
}

/// A shard is complete when its Parquet file and its report both exist (the report is written
/// only after the file has been renamed into place).
pub fn shard_complete(dir: &Path, k: usize, n: usize) -> bool {
    let name = shard_name(k, n);
    dir.join(format!("{name}.parquet")).is_file() && dir.join(format!("{name}.json")).is_file()
}

/// manifest.json on disk: the manifest and, once shards are finished, what each shard file
/// must be.
#[derive(Serialize)]
struct ManifestFile<'a> {
    #[serde(flatten)]
    manifest: &'a ExtractManifest,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    shard_files: BTreeMap<String, ShardFile>,
}

/// Record which shards are complete, and their checksums, in manifest.json; returns how many
/// are complete.
pub fn finalize(dir: &Path, manifest: &ExtractManifest) -> Result<usize> {
    let mut m = manifest.clone();
    m.completed_shards = (0..m.shards)
        .filter(|&k| shard_complete(dir, k, m.shards))
        .collect();
    if m.completed_shards.len() == m.shards {
        m.status = Status::Complete;
    }
    let mut shard_files = BTreeMap::new();
    for &k in &m.completed_shards {
        if let Some(f) = read_shard_file(dir, k, m.shards)? {
            shard_files.insert(format!("{}.parquet", shard_name(k, m.shards)), f);
        }
    }
    let file = ManifestFile {
        manifest: &m,
        shard_files,
    };
    write_atomically(&dir.join("manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &file)?;
        w.write_all(b"\n")?;
        Ok(())
    })?;
    // Only removed once empty: another node may still be filling its own shard's parts.
    let _ = std::fs::remove_dir(dir.join(".parts"));
    Ok(m.completed_shards.len())
}

/// The shard checksums manifest.json records (empty in manifests older than them).
fn manifest_shard_files(dir: &Path) -> Result<BTreeMap<String, ShardFile>> {
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    match v.get("shard_files") {
        None => Ok(BTreeMap::new()),
        Some(f) => serde_json::from_value(f.clone())
            .with_context(|| format!("{}: damaged \"shard_files\"", path.display())),
    }
}

/// How the shards of an extraction were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardCheck {
    /// Every shard matched its recorded row count and sha256.
    Verified(usize),
    /// These shards have no recorded checksum (an extraction older than them): not verified.
    Unrecorded(Vec<usize>),
}

/// Check every shard file of a complete extraction against its recorded rows, size and sha256
/// (from manifest.json, else the shard's report). A damaged shard is an error naming it.
pub fn verify_shards(dir: &Path, m: &ExtractManifest) -> Result<ShardCheck> {
    let recorded = manifest_shard_files(dir)?;
    let mut unrecorded = Vec::new();
    for k in 0..m.shards {
        let name = format!("{}.parquet", shard_name(k, m.shards));
        let want = match recorded.get(&name) {
            Some(f) => f.clone(),
            None => match read_shard_file(dir, k, m.shards)? {
                Some(f) => f,
                None => {
                    unrecorded.push(k);
                    continue;
                }
            },
        };
        let path = dir.join(&name);
        let got = hash_file(&path)?;
        if got.bytes != want.bytes || got.sha256 != want.sha256 {
            anyhow::bail!(
                "{}: damaged shard: its content does not match the sha256 recorded when it was \
                 written ({} bytes now, {} recorded). Delete it and its .json report, then \
                 re-run the same `embed extract` to remake it",
                path.display(),
                got.bytes,
                want.bytes
            );
        }
        let rows = super::shard::parquet_rows(&path)?;
        if rows != want.rows || rows != m.rows_per_shard.get(k).copied().unwrap_or(rows) {
            anyhow::bail!(
                "{}: damaged shard: {rows} rows, the manifest records {}",
                path.display(),
                want.rows
            );
        }
    }
    Ok(if unrecorded.is_empty() {
        ShardCheck::Verified(m.shards)
    } else {
        ShardCheck::Unrecorded(unrecorded)
    })
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
        let name = crate::fsio::file_name(&p);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{Architecture, Attention, PaddingSide, Pooling};

    fn manifest() -> ExtractManifest {
        let info = ModelInfo {
            model: "m".into(),
            path: "/m".into(),
            fingerprint: "sha256:abc".into(),
            dim: 4,
            vocab_size: 10,
            dtype: DType::F32,
            device: crate::encoder::Device::Cpu,
            recipe: Recipe {
                architecture: Architecture::Llama,
                attention: Attention::Bidirectional,
                pooling: Pooling::Mean,
                normalize: true,
                append_eos: false,
                max_length: 512,
                document_template: "{text}".into(),
                query_template: "Q: {text}".into(),
                instruction: "i".into(),
                padding_side: PaddingSide::Left,
                truncate_dim: None,
            },
        };
        let plan = Plan {
            inputs: vec![],
            text: TextSpec {
                id_field: "id".into(),
                doc_template: "{problem}".into(),
            },
            notes: vec![],
            columns: vec![],
            rows_per_shard: vec![3, 4],
            rejected: vec![],
            rejected_at: Default::default(),
        };
        ExtractManifest::new(&info, 2048, &plan)
    }

    #[test]
    fn the_first_differing_identity_field_is_named() {
        let a = manifest();
        assert_eq!(a.identity.first_difference(&a.identity), None);
        let mut b = a.clone();
        b.identity.recipe.pooling = Pooling::Last;
        b.identity.shards = 3;
        let d = a.identity.first_difference(&b.identity).unwrap();
        assert_eq!(
            (d.field.as_str(), d.ours.as_str(), d.theirs.as_str()),
            ("recipe.pooling", "\"mean\"", "\"last\"")
        );
        let mut c = a.clone();
        c.identity.max_batch_tokens = 4096;
        assert_eq!(
            a.identity.first_difference(&c.identity).unwrap().field,
            "max_batch_tokens"
        );
        // Fields outside the identity (status, counts) never make two runs different jobs.
        let mut d2 = a.clone();
        d2.status = Status::Complete;
        assert_eq!(a.identity.first_difference(&d2.identity), None);
    }

    #[test]
    fn a_misspelt_or_missing_identity_field_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("manifest.json");
        let good = serde_json::to_string(&manifest()).unwrap();
        std::fs::write(&path, &good).unwrap();
        assert!(ExtractManifest::read(&path).is_ok());
        for (from, to) in [
            ("\"model_fingerprint\"", "\"model_fingerprnt\""),
            ("\"rows_per_shard\"", "\"rows_per_shards\""),
            ("\"pooling\"", "\"poling\""),
        ] {
            std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
            let err = format!("{:#}", ExtractManifest::read(&path).unwrap_err());
            let name = from.trim_matches('"');
            assert!(err.contains(&format!("missing field `{name}`")), "{err}");
        }
        std::fs::write(&path, good.replacen("\"in_progress\"", "\"done\"", 1)).unwrap();
        let err = format!("{:#}", ExtractManifest::read(&path).unwrap_err());
        assert!(err.contains("unknown variant `done`"), "{err}");
    }
}
