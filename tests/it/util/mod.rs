//! Helpers the integration tests share, each written once: where the fixtures are, running the
//! binaries, extractions and indexes to test against, and `solve` against a scripted server.

pub mod data;
pub mod llama;
pub mod run;
pub mod server;
pub mod solver;

pub use data::*;
pub use run::*;
pub use solver::*;

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

/// The shared cache of models, llama-server and the Python venv: $EXEMPLAR_CACHE, else .cache.
pub fn cache() -> PathBuf {
    std::env::var("EXEMPLAR_CACHE").map_or_else(|_| repo().join(".cache"), PathBuf::from)
}

/// all-MiniLM-L6-v2 as installed by scripts/fetch-models.sh. Tests fail (rather than skip) when
/// it is missing: CI installs it, and a silently skipped parity test proves nothing.
pub fn minilm() -> PathBuf {
    let dir = cache().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not installed at {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// The venv's Python (pyarrow, numpy), as scripts/test.sh installs it.
pub fn venv_python() -> PathBuf {
    let python = cache().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/test.sh",
        python.display()
    );
    python
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
