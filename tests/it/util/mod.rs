#![allow(dead_code)]
//! Helpers shared by the integration tests.

pub mod server;

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn tiny_llama() -> PathBuf {
    fixture("tiny-llama-embed")
}

/// all-MiniLM-L6-v2 as installed by scripts/fetch-models.sh. Tests fail (rather than skip) when
/// it is missing: CI installs it, and a silently skipped parity test proves nothing.
pub fn minilm() -> PathBuf {
    let dir = match std::env::var("EXEMPLAR_CACHE") {
        Ok(c) => PathBuf::from(c).join("models/all-MiniLM-L6-v2"),
        Err(_) => repo().join(".cache/models/all-MiniLM-L6-v2"),
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not installed at {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Assert `got` matches `want` to float32 precision: cosine >= 0.99999, max abs diff <= 1e-4.
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let cos = exemplar::encoder::cosine(got, want);
    assert!(
        cos >= 0.99999 && max_abs <= 1e-4,
        "{what}: cosine {cos}, max abs diff {max_abs}"
    );
}

/// Copy a model folder (files only, one level of subfolders) so a test can edit its config.
pub fn copy_model(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_model(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

pub fn embed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_embed"))
}

/// Write `rows` (all of dimension `dim`, with these passed-through `columns`) as a finished
/// one-shard `embed extract` folder whose manifest names the tiny fixture model, so an index of
/// these vectors can embed queries.
pub fn write_one_shard_extraction(
    dir: &Path,
    dim: usize,
    columns: Vec<exemplar::extract::plan::Column>,
    rows: &[exemplar::extract::shard::Row],
) {
    use exemplar::extract::manifest::*;
    use exemplar::extract::shard::{schema, shard_name, to_batch, write_parquet};
    std::fs::create_dir_all(dir).unwrap();
    let sch = schema(dim, &columns);
    let batch = to_batch(&sch, &columns, dim, rows).unwrap();
    let file = dir.join(format!("{}.parquet", shard_name(0, 1)));
    write_parquet(&file, &sch, &[batch]).unwrap();
    let report = ShardReport {
        shard: 0,
        shards: 1,
        rows: rows.len(),
        file: "x".into(),
    };
    write_shard_report(dir, &report).unwrap();
    let enc = exemplar::encoder::Encoder::load(tiny_llama().to_str().unwrap(), &Default::default())
        .unwrap();
    let info = enc.info();
    let m = ExtractManifest {
        identity: ExtractIdentity {
            format: FORMAT.into(),
            model_fingerprint: info.fingerprint.clone(),
            recipe: info.recipe.clone(),
            dim,
            dtype: exemplar::encoder::DType::F32,
            max_batch_tokens: 2048,
            inputs: vec![],
            text: exemplar::extract::plan::TextSpec {
                id_field: "id".into(),
                doc_template: "{problem}".into(),
            },
            columns,
            shards: 1,
            rows_per_shard: vec![rows.len()],
        },
        model: info.model.clone(),
        model_path: info.path.clone(),
        rows: rows.len(),
        rejected: 0,
        status: Status::Complete,
        completed_shards: vec![0],
        created_by: "test".into(),
    };
    m.write(&dir.join("manifest.json")).unwrap();
}
