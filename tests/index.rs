//! The HNSW index: recall against exact search, persistence, damaged files, filtered search.

mod common;

use common::*;
use exemplar::encoder::DType;
use exemplar::extract::manifest::{
    write_shard_report, ExtractIdentity, ExtractManifest, ShardReport, Status,
};
use exemplar::extract::plan::{Column, ColumnType, TextSpec};
use exemplar::extract::shard::{schema, shard_name, to_batch, write_parquet, Row};
use exemplar::index::{self, BuildOptions, Index};
use exemplar::progress::Silent;
use std::path::Path;
use std::process::Command;

/// Deterministic clustered unit vectors: `clusters` random centres, Gaussian spread around them.
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
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
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.9 * gauss()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// Write vectors as an `embed extract` output folder (one shard), with a `group` column.
fn write_extraction(dir: &Path, vectors: &[Vec<f32>]) {
    std::fs::create_dir_all(dir).unwrap();
    let dim = vectors[0].len();
    let columns = vec![
        Column {
            name: "problem".into(),
            ty: ColumnType::Utf8,
        },
        Column {
            name: "group".into(),
            ty: ColumnType::Utf8,
        },
    ];
    let sch = schema(dim, &columns);
    let rows: Vec<Row> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| Row {
            id: format!("v{i}"),
            fields: serde_json::json!({"problem": format!("problem {i}"), "group": format!("g{}", i % 3)})
                .as_object()
                .unwrap()
                .clone(),
            vector: v.clone(),
        })
        .collect();
    let batch = to_batch(&sch, &columns, dim, &rows).unwrap();
    write_parquet(
        &dir.join(format!("{}.parquet", shard_name(0, 1))),
        &sch,
        &[batch],
    )
    .unwrap();
    write_shard_report(
        dir,
        &ShardReport {
            shard: 0,
            shards: 1,
            rows: rows.len(),
            file: "x".into(),
        },
    )
    .unwrap();
    let enc = exemplar::encoder::Encoder::load(tiny_llama().to_str().unwrap(), &Default::default())
        .unwrap();
    let info = enc.info();
    let m = ExtractManifest {
        identity: ExtractIdentity {
            format: exemplar::extract::manifest::FORMAT.into(),
            model_fingerprint: info.fingerprint.clone(),
            recipe: info.recipe.clone(),
            dim,
            dtype: DType::F32,
            max_batch_tokens: 2048,
            inputs: vec![],
            text: TextSpec {
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

fn quiet() -> BuildOptions {
    BuildOptions::default()
}

#[test]
fn recall_at_10_reaches_099_at_the_default_ef_on_20k_clustered_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let vectors = clustered(20_000, 384, 100, 7);
    write_extraction(&tmp.path().join("emb"), &vectors);
    index::build(
        &tmp.path().join("emb"),
        &tmp.path().join("idx"),
        &quiet(),
        &Silent,
    )
    .unwrap();
    let idx = Index::load(&tmp.path().join("idx")).unwrap();
    let rows = index::evaluate(&idx, 500, 10, &[index::DEFAULT_EF]);
    eprintln!("{rows:?}");
    assert!(
        rows[0].recall >= 0.99,
        "recall@10 {} at ef {}",
        rows[0].recall,
        index::DEFAULT_EF
    );
}

#[test]
fn persisted_index_returns_identical_results_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let vectors = clustered(3000, 32, 10, 11);
    write_extraction(&tmp.path().join("emb"), &vectors);
    index::build(
        &tmp.path().join("emb"),
        &tmp.path().join("idx"),
        &quiet(),
        &Silent,
    )
    .unwrap();
    let a = Index::load(&tmp.path().join("idx")).unwrap();
    let b = Index::load(&tmp.path().join("idx")).unwrap();
    for q in vectors.iter().step_by(97) {
        let ha = a.search_hnsw(q, 10, 64, None);
        assert_eq!(ha, b.search_hnsw(q, 10, 64, None));
        // The graph finds what the exact scan finds on this easy set.
        let exact: Vec<usize> = a.search_exact(q, 10, None).iter().map(|h| h.row).collect();
        let approx: Vec<usize> = ha.iter().map(|h| h.row).collect();
        assert_eq!(approx, exact);
    }
    // Filtered search returns only matching records, and the best of them.
    let records = a.records().unwrap();
    let allowed = index::filter_rows(&records, "group", "g1").unwrap();
    assert_eq!(allowed.len(), 1000);
    for q in vectors.iter().step_by(301) {
        let hits = a.search_hnsw(q, 5, 64, Some(&allowed));
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| records[h.row]["group"] == "g1"));
        let exact: Vec<usize> = a
            .search_exact(q, 5, Some(&allowed))
            .iter()
            .map(|h| h.row)
            .collect();
        assert_eq!(hits.iter().map(|h| h.row).collect::<Vec<_>>(), exact);
    }
    let err = index::filter_rows(&records, "colour", "red")
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour") && err.contains("group"), "{err}");
}

fn built(tmp: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let emb = tmp.join(format!("emb-{name}"));
    write_extraction(&emb, &clustered(500, 16, 5, seed));
    let out = tmp.join(name);
    index::build(&emb, &out, &quiet(), &Silent).unwrap();
    out
}

fn load_error(dir: &Path) -> String {
    match Index::load(dir) {
        Ok(_) => panic!("damaged index {} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn truncated_graph_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    let graph = dir.join("graph.hnsw.graph");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("graph.hnsw.graph") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn corrupted_data_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    let data = dir.join("graph.hnsw.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0xff; // the magic number hnsw_rs asserts on
    std::fs::write(&data, &bytes).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("graph.hnsw.data") && err.contains("corrupted"),
        "{err}"
    );
}

#[test]
fn graph_from_another_build_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built(tmp.path(), "a", 1);
    let b = built(tmp.path(), "b", 2);
    std::fs::copy(b.join("graph.hnsw.graph"), a.join("graph.hnsw.graph")).unwrap();
    let err = load_error(&a);
    assert!(
        err.contains("graph.hnsw.graph") && err.contains("another build"),
        "{err}"
    );
}

#[test]
fn wrong_dimension_in_the_manifest_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    let mut m = read_json(&dir.join("manifest.json"));
    m["dim"] = 32.into();
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("vectors.f32") && err.contains("x 32"), "{err}");
}

#[test]
fn missing_records_and_missing_manifest_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    std::fs::remove_file(dir.join("records.parquet")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("missing records.parquet"), "{err}");
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("not an exemplar index"), "{err}");
    let err = load_error(&tmp.path().join("nowhere"));
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn empty_or_garbage_manifest_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    std::fs::write(
        dir.join("manifest.json"),
        "{\"format\": \"exemplar.index.v1\"",
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("manifest.json") && err.contains("damaged"),
        "{err}"
    );
}

#[test]
fn cli_builds_and_queries_an_index_of_extracted_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("datasets/sample/train.jsonl")).unwrap();
    let input = tmp.path().join("corpus.jsonl");
    std::fs::write(
        &input,
        text.lines().take(200).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let emb = tmp.path().join("emb");
    let run = |args: &[&str]| {
        let o = Command::new(embed_bin()).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&[
        "extract",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        emb.to_str().unwrap(),
        "--shards",
        "2",
        "--quiet",
    ]);
    let idx = tmp.path().join("indexes/small");
    run(&[
        "index",
        "build",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
        "--quiet",
    ]);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let problem = first["problem"].as_str().unwrap();
    let out = run(&[
        "index",
        "query",
        "--index",
        idx.to_str().unwrap(),
        "--text",
        problem,
        "-k",
        "3",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(line["method"], "exact");
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // HNSW and exact agree on this small index.
    let out2 = run(&[
        "index",
        "query",
        "--index",
        idx.to_str().unwrap(),
        "--text",
        problem,
        "-k",
        "3",
        "--json",
        "--hnsw",
        "--ef",
        "200",
    ]);
    let line2: serde_json::Value = serde_json::from_str(out2.lines().next().unwrap()).unwrap();
    assert_eq!(line2["method"], "hnsw");
    assert_eq!(line2["results"], line["results"]);
    let info = run(&["index", "info", "--index", idx.to_str().unwrap()]);
    assert!(
        info.contains("200 x 64") && info.contains("all files match"),
        "{info}"
    );
    // A different model than the index's is refused.
    let o = Command::new(embed_bin())
        .args([
            "index",
            "query",
            "--index",
            idx.to_str().unwrap(),
            "--text",
            "x",
            "--model",
            minilm().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not the model this index was built with")
    );
}
