//! The HNSW index: recall against exact search, persistence, damaged files, filtered search.

use crate::util::*;
use exemplar::index::{self, BuildOptions, Index};
use exemplar::progress::Silent;
use std::path::Path;
use std::process::Command;

/// Vectors as an `embed extract` output folder (one shard), with a `group` column.
fn write_grouped(dir: &Path, vectors: &[Vec<f32>]) {
    write_extraction(dir, vectors, |i| {
        let fields =
            serde_json::json!({"problem": format!("problem {i}"), "group": format!("g{}", i % 3)});
        (format!("v{i}"), fields)
    });
}

fn quiet() -> BuildOptions {
    BuildOptions::default()
}

#[test]
fn recall_at_10_reaches_099_at_the_default_ef_on_20k_clustered_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let vectors = clustered(20_000, 384, 100, 0.9, 7);
    write_grouped(&tmp.path().join("emb"), &vectors);
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
    let vectors = clustered(3000, 32, 10, 0.9, 11);
    write_grouped(&tmp.path().join("emb"), &vectors);
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
    write_grouped(&emb, &clustered(500, 16, 5, 0.9, seed));
    let out = tmp.join(name);
    index::build(&emb, &out, &quiet(), &Silent).unwrap();
    out
}

/// The error of loading a damaged index. Both the default load (sizes, then sha256 unless the
/// `.verified` stamp vouches for the files) and the `--verify` load must refuse it.
fn load_error(dir: &Path) -> String {
    if Index::load_verified(dir).is_ok() {
        panic!("damaged index {} loaded with --verify", dir.display());
    }
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
    bytes[0] ^= 0xff; // the graph data file's magic number
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
    let input = sample_corpus(tmp.path(), 200);
    let emb = tmp.path().join("emb");
    let run = |args: &[&str]| embed_ok(args).0;
    extract(&tiny_llama(), &input, &emb, 2);
    let idx = tmp.path().join("indexes/small");
    build_index(&emb, &idx);
    let first: serde_json::Value =
        serde_json::from_str(&sample_lines("train.jsonl", 1)[0]).unwrap();
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
    let o = embed(&[
        "index",
        "query",
        "--index",
        idx.to_str().unwrap(),
        "--text",
        "x",
        "--model",
        minilm().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not the model this index was built with")
    );
}

/// A process id that is not running (a child that has exited and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn kill_between_the_two_renames_leaves_a_loadable_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "idx", 1);
    let before = Index::load(&dir).unwrap().search_exact(&[1.0; 16], 3, None);
    // What `fsio::replace_dir` leaves when killed after its first rename: the old index aside
    // under the dead rebuild's pid, the finished new one still in its building folder, no `idx`.
    let pid = dead_pid();
    let old = tmp.path().join(format!(".idx.old-{pid}"));
    std::fs::rename(&dir, &old).unwrap();
    let building = tmp.path().join(format!(".idx.building-{pid}"));
    std::fs::create_dir(&building).unwrap();
    std::fs::write(building.join("manifest.json"), "{}").unwrap();
    assert!(!dir.exists());
    let idx = Index::load(&dir).unwrap();
    assert!(dir.join("manifest.json").is_file() && !old.exists());
    assert_eq!(idx.search_exact(&[1.0; 16], 3, None), before);
    // read_manifest recovers too (it is what `index info` and `embed plot` read first).
    std::fs::rename(&dir, &old).unwrap();
    assert_eq!(index::read_manifest(&dir).unwrap().count, 500);
    assert!(!old.exists());
    // The next build over it removes the dead rebuild's leftovers.
    index::build(&tmp.path().join("emb-idx"), &dir, &quiet(), &Silent).unwrap();
    assert!(!building.exists());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".idx"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn out_that_is_not_an_index_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(200, 16, 5, 0.9, 3));
    let out = tmp.path().join("notes");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
    let err = index::build(&emb, &out, &quiet(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not an exemplar index") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
        "years of work"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // The same refusal through the CLI.
    let o = embed(&[
        "index",
        "build",
        "--quiet",
        "--embeddings",
        emb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an exemplar index"));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn out_inside_the_embeddings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb");
    write_grouped(&emb, &clustered(200, 16, 5, 0.9, 3));
    let listing = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&emb);
    for out in [emb.join("index"), emb.clone(), emb.join("a/b")] {
        let err = index::build(&emb, &out, &quiet(), &Silent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("inside --embeddings"), "{err}");
    }
    // Through a relative path with `..` as well.
    let sneaky = emb.join("../emb/idx");
    let err = index::build(&emb, &sneaky, &quiet(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside --embeddings"), "{err}");
    assert_eq!(listing(&emb), before);
}

#[test]
fn loads_hash_once_then_trust_the_stamp_until_a_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    // Let the clock move past the files' times, so the stamp is not "racy".
    std::thread::sleep(std::time::Duration::from_millis(30));
    // The build hashed the files it wrote and left a stamp: the first load need not hash.
    let first = Index::load(&dir).unwrap();
    assert!(dir.join(".verified").is_file());
    assert!(first.vectors.is_mapped());
    assert_eq!(first.vectors.as_slice().len(), 500 * 16);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        Index::load_verified(&dir).unwrap().verification,
        index::Verification::Hashed
    );
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        Index::load(&dir).unwrap().verification,
        index::Verification::Stamp
    );
    // Without a stamp (an index copied without it, or a read-only one) a load hashes.
    std::fs::remove_file(dir.join(".verified")).unwrap();
    assert_eq!(
        Index::load(&dir).unwrap().verification,
        index::Verification::Hashed
    );
    // Corrupt the records at equal size and put the mtime back: the ctime still moves, so the
    // stamp no longer vouches and the default load hashes and refuses.
    let path = dir.join("records.parquet");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("records.parquet") && err.contains("corrupted"),
        "{err}"
    );
    // A copy of a good index (new inodes) is hashed once again, then trusted.
    let good = built(tmp.path(), "b", 2);
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&good).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        Index::load(&copy).unwrap().verification,
        index::Verification::Hashed
    );
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        Index::load(&copy).unwrap().verification,
        index::Verification::Stamp
    );
}

#[test]
fn every_point_is_checked_for_reachability_after_a_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    let m = index::read_manifest(&dir).unwrap();
    let r = m
        .reachability
        .clone()
        .expect("reachability in the manifest");
    assert_eq!((r.checked, r.sampled, r.ef), (500, false, 200));
    assert_eq!(r.still_unreachable, 0);
    assert_eq!(r.unreachable, r.repaired);
    assert_eq!(index::reach::rows_to_check(10).0.len(), 10);
    let (rows, sampled) = index::reach::rows_to_check(5_000_000);
    assert!(sampled && rows.len() == index::reach::SAMPLE && rows[1] == 50);
}

/// Run a Python snippet (pyarrow + numpy) with `dir` as its working directory.
fn python(dir: &Path, code: &str) {
    let mut c = Command::new(venv_python());
    c.arg("-c").arg(code).current_dir(dir);
    run_ok(c);
}

const EXTERNAL_VECTORS: &str = r#"
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, os
rng = np.random.default_rng(5)
v = (rng.standard_normal((300, 24)) * 3).astype(np.float16)
os.makedirs("ext", exist_ok=True)
for part, (s, e) in enumerate([(0, 180), (180, 300)]):
    vec = pa.array([list(map(float, r)) for r in v[s:e]], type=pa.list_(pa.float16()))
    t = pa.table({"doc_id": pa.array(np.arange(s, e) * 10, type=pa.int64()), "vec": vec,
                  "title": [f"title {i}" for i in range(s, e)]})
    pq.write_table(t, f"ext/part-{part}.parquet")
q = v[[5, 17]].astype(np.float32)
np.save("queries.npy", q)
flat = pa.array(q.reshape(-1), type=pa.float32())
pq.write_table(pa.table({"doc_id": ["q5", "q17"],
                         "vec": pa.FixedSizeListArray.from_arrays(flat, 24)}), "queries.parquet")
"#;

/// Write EXTERNAL_VECTORS in `tmp` and build `tmp/idx` from them; returns the build's stderr.
fn build_external(tmp: &Path) -> String {
    python(tmp, EXTERNAL_VECTORS);
    let p = |n: &str| tmp.join(n).to_str().unwrap().to_string();
    embed_ok(&[
        "index",
        "build",
        "--quiet",
        "--external",
        "--embeddings",
        &p("ext"),
        "--out",
        &p("idx"),
        "--id-field",
        "doc_id",
        "--embedding-field",
        "vec",
    ])
    .1
}

#[test]
fn external_parquet_vectors_are_indexed_normalised_and_searched_by_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let err = build_external(tmp.path());
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    assert!(
        err.contains("300 of 300 vectors") && err.contains("normalised"),
        "{err}"
    );
    let m = read_json(&tmp.path().join("idx/manifest.json"));
    assert_eq!(m["count"], 300);
    assert_eq!(m["dim"], 24);
    assert_eq!(m["external"]["normalized"], 300);
    assert_eq!(m["external"]["value_type"], "float16");
    assert_eq!(m["external"]["files"].as_array().unwrap().len(), 2);
    assert!(m["embeddings"]["model"]
        .as_str()
        .unwrap()
        .contains("external"));
    // Given vectors: .npy (ids are row numbers) and Parquet (the query file's own ids).
    let (out, _) = embed_ok(&[
        "index",
        "query",
        "--index",
        &p("idx"),
        "--vectors",
        &p("queries.npy"),
        "-k",
        "3",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["query_id"], "0");
    assert_eq!(lines[0]["results"][0]["id"], "50");
    assert_eq!(lines[1]["results"][0]["id"], "170");
    assert!(lines[1]["results"][0]["score"].as_f64().unwrap() > 0.999);
    let (out, _) = embed_ok(&[
        "index",
        "query",
        "--index",
        &p("idx"),
        "--vectors",
        &p("queries.parquet"),
        "--id-field",
        "doc_id",
        "--embedding-field",
        "vec",
        "-k",
        "2",
        "--json",
        "--hnsw",
    ]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["query_id"], "q5");
    assert_eq!(first["method"], "hnsw");
    assert_eq!(first["results"][0]["id"], "50");
    // Records keep the other columns, and the table output names the ids.
    let (out, _) = embed_ok(&[
        "index",
        "query",
        "--index",
        &p("idx"),
        "--vectors",
        &p("queries.npy"),
    ]);
    assert!(out.contains("50") && out.contains("title 5"), "{out}");
}

#[test]
fn external_index_text_queries_need_the_model_that_made_the_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    build_external(tmp.path());
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    // A text query needs the model that made the vectors, and says so.
    let o = embed(&["index", "query", "--index", &p("idx"), "--text", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--model") && err.contains("no exemplar model"),
        "{err}"
    );
    let (info, _) = embed_ok(&["index", "info", "--index", &p("idx"), "--verify"]);
    assert!(
        info.contains("external vectors") && info.contains("sha256 of every file, now"),
        "{info}"
    );
}

#[test]
fn external_vectors_that_cannot_be_indexed_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    python(
        tmp.path(),
        r#"
import pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"id": ["a", "b"], "embedding": pa.array([[1.0, 0.0], [0.0, 0.0]], type=pa.list_(pa.float32()))}), "zero.parquet")
pq.write_table(pa.table({"id": ["a", "b"], "embedding": pa.array([[1.0, 0.0], [0.0, 1.0, 0.0]], type=pa.list_(pa.float32()))}), "ragged.parquet")
pq.write_table(pa.table({"id": ["a"], "embedding": pa.array([[1, 0]], type=pa.list_(pa.int64()))}), "ints.parquet")
pq.write_table(pa.table({"key": ["a"], "embedding": pa.array([[1.0, 0.0]], type=pa.list_(pa.float32()))}), "noid.parquet")
"#,
    );
    let cases = [
        ("zero.parquet", "\"b\" has norm 0"),
        ("ragged.parquet", "row 1 has 3 values"),
        ("ints.parquet", "expected float32 or float16"),
        ("noid.parquet", "no column \"id\""),
    ];
    for (file, want) in cases {
        let external = BuildOptions {
            external: true,
            ..quiet()
        };
        let err = index::build(
            &tmp.path().join(file),
            &tmp.path().join("idx"),
            &external,
            &Silent,
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains(want), "{file}: {err}");
        assert!(!tmp.path().join("idx").exists());
    }
}

fn graph_over(vectors: &[Vec<f32>]) -> (Vec<f32>, index::hnsw::Hnsw) {
    let flat: Vec<f32> = vectors.concat();
    let params = index::hnsw::Params {
        m: 16,
        ef_construction: 200,
        seed: 9,
    };
    let g = index::hnsw::Hnsw::build(&flat, vectors[0].len(), &params, &Silent);
    (flat, g)
}

#[test]
fn a_planted_unreachable_point_is_found_and_repaired() {
    let vectors = clustered(3000, 32, 10, 0.9, 21);
    let (flat, g) = graph_over(&vectors);
    let dim = 32;
    let rows: Vec<usize> = (0..3000).collect();
    // Pruning alone can leave a few points unreachable: the check repairs them first.
    let fresh = index::reach::check_and_repair(&g, &flat, dim, 200, &Silent);
    eprintln!("fresh graph: {fresh:?}");
    assert_eq!(fresh.still_unreachable, 0);
    assert!(index::reach::unreachable(&g, &flat, dim, &rows, 200, &Silent).is_empty());
    // Plant: no point links to these any more (the entry point is left alone: searches start
    // there, so it is always reached).
    let planted: Vec<usize> = [17usize, 1234, 2999]
        .into_iter()
        .filter(|&r| r as u32 != g.entry())
        .collect();
    for &r in &planted {
        g.cut_in_links(r as u32);
        assert!(!index::reach::found(&g, &flat, dim, r, 400));
    }
    let report = index::reach::check_and_repair(&g, &flat, dim, 200, &Silent);
    assert_eq!(report.unreachable, planted.len(), "{report:?}");
    assert_eq!(report.repaired, planted.len());
    assert_eq!(report.still_unreachable, 0);
    for &r in &planted {
        let hits = g.search(&flat, dim, &vectors[r], 1, 64, None);
        assert_eq!(hits[0].id as usize, r);
        assert!(g.neighbours(hits[0].id, 0).len() >= 2);
    }
    assert!(index::reach::unreachable(&g, &flat, dim, &rows, 200, &Silent).is_empty());
}

#[test]
fn damaged_graph_links_are_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let vectors = clustered(400, 8, 4, 0.9, 5);
    let (_, g) = graph_over(&vectors);
    let (data, graph) = (tmp.path().join("g.data"), tmp.path().join("g.graph"));
    g.save(&data, &graph).unwrap();
    assert!(index::hnsw::Hnsw::load(&data, &graph, 400).is_ok());
    let err = index::hnsw::Hnsw::load(&data, &graph, 401).unwrap_err();
    assert!(format!("{err:#}").contains("index has 401"), "{err:#}");
    // An out-of-range id at equal size (what a bit flip would leave).
    let good = std::fs::read(&graph).unwrap();
    let mut bytes = good.clone();
    bytes[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&graph, &bytes).unwrap();
    let err = format!(
        "{:#}",
        index::hnsw::Hnsw::load(&data, &graph, 400).unwrap_err()
    );
    assert!(err.contains("damaged links"), "{err}");
    // A count beyond the list.
    let mut bytes = good.clone();
    bytes[16..20].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&graph, &bytes).unwrap();
    let err = format!(
        "{:#}",
        index::hnsw::Hnsw::load(&data, &graph, 400).unwrap_err()
    );
    assert!(err.contains("damaged links"), "{err}");
    std::fs::write(&graph, &good[..good.len() - 4]).unwrap();
    assert!(index::hnsw::Hnsw::load(&data, &graph, 400).is_err());
}

#[test]
fn an_index_in_an_older_format_says_rebuild_and_is_rebuilt_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built(tmp.path(), "a", 1);
    let mut m = read_json(&dir.join("manifest.json"));
    m["format"] = "exemplar.index.v1".into();
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("v1") && err.contains("rebuild"), "{err}");
    index::build(&tmp.path().join("emb-a"), &dir, &quiet(), &Silent).unwrap();
    assert_eq!(Index::load(&dir).unwrap().len(), 500);
}

/// `index export --format hnsw_rs`: hnsw_rs 0.3.5's own reader loads the files, holds our graph
/// link for link, and its search finds what ours and the exact scan find.
#[test]
fn export_to_hnsw_rs_reloads_our_graph_and_searches_like_it() {
    use hnsw_rs::prelude::{DistDot, Hnsw, HnswIo, ReloadOptions};
    let tmp = tempfile::tempdir().unwrap();
    let vectors = clustered(6000, 48, 40, 0.9, 13);
    write_grouped(&tmp.path().join("emb"), &vectors);
    let dir = tmp.path().join("idx");
    index::build(&tmp.path().join("emb"), &dir, &quiet(), &Silent).unwrap();
    let out = tmp.path().join("hnsw_rs");
    let (_, err) = embed_ok(&[
        "index",
        "export",
        "--index",
        dir.to_str().unwrap(),
        "--format",
        "hnsw_rs",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("exported 6000 points"), "{err}");
    let idx = Index::load(&dir).unwrap();
    let mut io = HnswIo::new(&out, "exemplar");
    let theirs: Hnsw<f32, DistDot> = io.load_hnsw().unwrap();
    assert_eq!(theirs.get_nb_point(), 6000);
    let g = idx.graph();
    let mut seen = 0;
    for point in theirs.get_point_indexation() {
        let row = point.get_origin_id() as u32;
        for (layer, links) in point.get_neighborhood_id().iter().enumerate() {
            let mut got: Vec<u32> = links.iter().map(|n| n.d_id as u32).collect();
            let mut want = match layer as u8 <= g.level(row) {
                true => g.neighbours(row, layer as u8),
                false => Vec::new(),
            };
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "row {row} layer {layer}");
        }
        seen += 1;
    }
    assert_eq!(seen, 6000);
    let (mut exact_hits, mut same, mut total) = (0, 0, 0);
    for q in vectors.iter().step_by(30) {
        let found: Vec<usize> = theirs.search(q, 10, 64).iter().map(|n| n.d_id).collect();
        let ours: Vec<usize> = idx
            .search_hnsw(q, 10, 64, None)
            .iter()
            .map(|h| h.row)
            .collect();
        let exact: Vec<usize> = idx
            .search_exact(q, 10, None)
            .iter()
            .map(|h| h.row)
            .collect();
        exact_hits += found.iter().filter(|r| exact.contains(r)).count();
        same += found.iter().filter(|r| ours.contains(r)).count();
        total += exact.len();
    }
    let (recall, agree) = (exact_hits as f64 / total as f64, same as f64 / total as f64);
    eprintln!("hnsw_rs on the exported graph: recall@10 {recall:.4}, agreement {agree:.4}");
    assert!(recall >= 0.95, "recall@10 {recall}");
    assert!(agree >= 0.95, "same ids as our search: {agree}");
    // hnsw_rs's memory-mapped reload reads the data file by offsets: same answers.
    let mut io = HnswIo::new(&out, "exemplar");
    io.set_options(ReloadOptions::default().set_mmap(true));
    let mapped: Hnsw<f32, DistDot> = io.load_hnsw().unwrap();
    for q in vectors.iter().step_by(500) {
        let ids = |h: &Hnsw<f32, DistDot>| -> Vec<usize> {
            h.search(q, 10, 64).iter().map(|n| n.d_id).collect()
        };
        assert_eq!(ids(&mapped), ids(&theirs));
    }
}
