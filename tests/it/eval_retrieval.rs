//! `embed eval-retrieval` on a tiny labelled corpus whose right answer is known: three topics with
//! disjoint vocabulary, so a working retriever (dense or lexical) returns only same-topic
//! neighbours, while random neighbours share the label about a third of the time.

use crate::util::*;

const TOPICS: [(&str, [&str; 8]); 3] = [
    (
        "geometry",
        [
            "triangle",
            "circle",
            "radius",
            "angle",
            "polygon",
            "area of the square",
            "hypotenuse",
            "perimeter",
        ],
    ),
    (
        "probability",
        [
            "dice",
            "coin flips",
            "probability",
            "cards drawn",
            "random marble",
            "expected value",
            "lottery",
            "spinner",
        ],
    ),
    (
        "money",
        [
            "dollars",
            "price",
            "discount",
            "salary",
            "profit",
            "interest rate",
            "tax",
            "coupon",
        ],
    ),
];

#[test]
fn dense_and_lexical_retrieval_beat_random_on_a_known_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let mut corpus = String::new();
    let mut queries = String::new();
    for (label, words) in TOPICS {
        for (i, w) in words.iter().enumerate() {
            let problem = format!(
                "A question about the {w}: compute the {w} and the {} in this {label} problem.",
                words[(i + 3) % 8]
            );
            let line = serde_json::json!({"id": format!("{label}-{i}"), "problem": problem, "topic": label});
            if i < 6 {
                corpus.push_str(&format!("{line}\n"));
            } else {
                queries.push_str(&format!("{line}\n"));
            }
        }
    }
    // One query copied from the corpus under another id: a near-duplicate, i.e. leakage.
    queries.push_str(&format!("{}\n", serde_json::json!({"id": "dup", "problem": "A question about the triangle: compute the triangle and the angle in this geometry problem.", "topic": "geometry"})));
    let corpus_path = tmp.path().join("corpus.jsonl");
    let queries_path = tmp.path().join("queries.jsonl");
    std::fs::write(&corpus_path, corpus).unwrap();
    std::fs::write(&queries_path, queries).unwrap();
    let (emb, idx) = (tmp.path().join("emb"), tmp.path().join("idx"));
    extract(&minilm(), &corpus_path, &emb, 1);
    build_index(&emb, &idx);
    let (out, _) = embed_ok(&[
        "eval-retrieval",
        "--index",
        idx.to_str().unwrap(),
        "--queries",
        queries_path.to_str().unwrap(),
        "-k",
        "3",
        "--label",
        "topic",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["queries"], 7);
    let m = r["methods"].as_array().unwrap();
    let (dense, bm25, random) = (&m[0], &m[1], &m[2]);
    assert!(dense["precision_at_k"].as_f64().unwrap() >= 0.9, "{dense}");
    assert!(dense["mrr"].as_f64().unwrap() >= 0.95, "{dense}");
    assert!(bm25["precision_at_k"].as_f64().unwrap() >= 0.9, "{bm25}");
    assert!(random["precision_at_k"].as_f64().unwrap() < 0.7, "{random}");
    // Exactly the copied query is flagged as a near-duplicate.
    assert!(
        (dense["near_duplicate_rate"].as_f64().unwrap() - 1.0 / 7.0).abs() < 1e-9,
        "{dense}"
    );

    // An unknown label lists the fields that exist.
    let o = embed(&[
        "eval-retrieval",
        "--index",
        idx.to_str().unwrap(),
        "--queries",
        queries_path.to_str().unwrap(),
        "--label",
        "colour",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("topic"));
}
