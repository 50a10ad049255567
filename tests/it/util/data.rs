//! What the tests search and plot: sample corpora, `embed extract` outputs (real ones made by the
//! CLI, synthetic ones written with the library's own shard and manifest code), indexes.

use super::{embed_ok, repo, tiny_llama};
use exemplar::extract::manifest::{finalize, write_shard_report, ExtractManifest, ShardReport};
use exemplar::extract::plan::{Column, ColumnType, Plan, TextSpec};
use exemplar::extract::shard::{schema, shard_name, to_batch, write_parquet, Row};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The first `n` lines of a file of the bundled sample dataset (`train.jsonl`, `test.jsonl`).
pub fn sample_lines(file: &str, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("datasets/sample").join(file)).unwrap();
    text.lines().take(n).map(String::from).collect()
}

/// Write JSON lines (each followed by a newline) to `path`; returns it.
pub fn write_lines(path: PathBuf, lines: &[String]) -> PathBuf {
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The first `n` sample training problems as `dir/corpus.jsonl`.
pub fn sample_corpus(dir: &Path, n: usize) -> PathBuf {
    write_lines(dir.join("corpus.jsonl"), &sample_lines("train.jsonl", n))
}

/// `embed extract` of `input` with `model` into `out`, in `shards` shards.
pub fn extract(model: &Path, input: &Path, out: &Path, shards: usize) {
    let shards = shards.to_string();
    embed_ok(&[
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shards",
        &shards,
        "--quiet",
    ]);
}

/// `embed index build` of the extraction `emb` into `idx`.
pub fn build_index(emb: &Path, idx: &Path) {
    embed_ok(&[
        "index",
        "build",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
        "--quiet",
    ]);
}

/// `corpus` extracted with the tiny fixture model (one shard, `dir/emb`) and indexed
/// (`dir/index`); returns the index.
pub fn tiny_index(dir: &Path, corpus: &Path) -> PathBuf {
    let (emb, idx) = (dir.join("emb"), dir.join("index"));
    extract(&tiny_llama(), corpus, &emb, 1);
    build_index(&emb, &idx);
    idx
}

/// An index of the first `n` sample problems (see [`tiny_index`]).
pub fn sample_index(dir: &Path, n: usize) -> PathBuf {
    tiny_index(dir, &sample_corpus(dir, n))
}

/// Deterministic unit vectors: `clusters` random centres, Gaussian `spread` around them (row i
/// in cluster i % clusters).
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut gauss = move || {
        let (u1, u2) = (uniform().max(1e-12), uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| gauss()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % clusters];
            let mut v: Vec<f32> = c.iter().map(|x| x + spread * gauss()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// Write `vectors` as a finished one-shard `embed extract` folder. `record(i)` gives row i's id
/// and its text fields (a JSON object; its keys, in order, are the passed-through columns). The
/// manifest names the tiny fixture model, so an index of these vectors can embed queries.
pub fn write_extraction(
    dir: &Path,
    vectors: &[Vec<f32>],
    record: impl Fn(usize) -> (String, Value),
) {
    let rows: Vec<Row> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (id, fields) = record(i);
            let fields = fields.as_object().unwrap().clone();
            Row {
                id,
                fields,
                vector: v.clone(),
            }
        })
        .collect();
    let columns: Vec<Column> = rows[0]
        .fields
        .keys()
        .map(|name| Column {
            name: name.clone(),
            ty: ColumnType::Utf8,
        })
        .collect();
    let dim = vectors[0].len();
    std::fs::create_dir_all(dir).unwrap();
    let sch = schema(dim, &columns);
    let batch = to_batch(&sch, &columns, dim, &rows).unwrap();
    let file = format!("{}.parquet", shard_name(0, 1));
    write_parquet(&dir.join(&file), &sch, &[batch]).unwrap();
    let report = ShardReport {
        shard: 0,
        shards: 1,
        rows: rows.len(),
        file,
    };
    write_shard_report(dir, &report).unwrap();
    let plan = Plan {
        inputs: vec![],
        text: TextSpec {
            id_field: "id".into(),
            doc_template: "{problem}".into(),
        },
        notes: vec![],
        columns,
        rows_per_shard: vec![rows.len()],
        rejected: vec![],
        rejected_at: Default::default(),
    };
    let enc = exemplar::encoder::Encoder::load(tiny_llama().to_str().unwrap(), &Default::default())
        .unwrap();
    let mut info = enc.info().clone();
    info.dim = dim; // synthetic vectors, of any dimension
    finalize(dir, &ExtractManifest::new(&info, 2048, &plan)).unwrap();
}

/// Every record batch of an extraction's shard files, in file-name order.
pub fn shard_batches(dir: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut batches = Vec::new();
    for f in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        batches.extend(reader.map(|b| b.unwrap()));
    }
    batches
}
