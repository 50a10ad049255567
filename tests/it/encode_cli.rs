//! `embed encode` and `embed info` as a user runs them: output format and order, and clear
//! errors for bad input.

use crate::util::*;
use std::path::Path;

/// `embed` with these arguments: (success, stdout, stderr).
fn run_embed(args: &[&str]) -> (bool, String, String) {
    let out = embed(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
}

#[test]
fn encode_writes_ids_in_input_order_matching_the_reference() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let mut lines = String::new();
    for t in expected["texts"].as_array().unwrap() {
        lines.push_str(&serde_json::json!({"id": t["name"], "text": t["text"]}).to_string());
        lines.push('\n');
    }
    write(&input, lines.as_bytes());
    let output = tmp.path().join("out.jsonl");
    let (ok, _, err) = run_embed(&[
        "encode",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--kind",
        "query",
        "--attention",
        "bidirectional",
        "--pooling",
        "mean",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("encoded 8 texts"), "{err}");
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 8);
    for (g, t) in got.iter().zip(expected["texts"].as_array().unwrap()) {
        assert_eq!(g["id"], t["name"]);
        assert_close(
            &f32s(&g["embedding"]),
            &f32s(&t["query"]["embeddings"]["bidirectional_mean"]),
            "cli query",
        );
    }
}

#[test]
fn info_reports_the_resolved_recipe_as_text_and_json() {
    let (ok, out, err) = run_embed(&["info", "--model", tiny_llama().to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["architecture"], "llama");
    assert_eq!(info["dim"], 64);
    assert_eq!(info["attention"], "causal");
    assert_eq!(info["pooling"], "last");
    assert_eq!(info["normalize"], true);
    assert_eq!(info["dtype"], "f32");
    assert_eq!(info["device"], "cpu");
    assert_eq!(
        info["query_template"],
        "Instruct: {instruction}\nQuery: {text}"
    );

    let (ok, out, _) = run_embed(&[
        "info",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--pooling",
        "mean",
    ]);
    assert!(ok);
    assert!(out.contains("pooling:           Mean"), "{out}");
}

fn encode_error(input_content: &[u8]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    write(&input, input_content);
    let output = tmp.path().join("out.jsonl");
    let (ok, _, err) = run_embed(&[
        "encode",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(!ok, "bad input was accepted");
    assert!(!output.exists(), "an output file was written for bad input");
    err
}

#[test]
fn empty_text_is_reported_with_its_line() {
    let err =
        encode_error(b"{\"id\": \"a\", \"text\": \"fine\"}\n{\"id\": \"b\", \"text\": \"  \"}\n");
    assert!(
        err.contains("bad.jsonl:2") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn non_utf8_line_is_reported_with_its_line() {
    let err = encode_error(
        b"{\"id\": \"a\", \"text\": \"fine\"}\n\n{\"id\": \"b\", \"text\": \"caf\xe9\"}\n",
    );
    assert!(
        err.contains("bad.jsonl:3") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn malformed_json_and_missing_fields_are_reported() {
    let err = encode_error(b"{\"id\": \"a\", \"text\": \"fine\"\n");
    assert!(
        err.contains("bad.jsonl:1") && err.contains("invalid JSON"),
        "{err}"
    );
    let err = encode_error(b"{\"id\": \"a\", \"txt\": \"fine\"}\n");
    assert!(
        err.contains("bad.jsonl:1") && err.contains("\"text\""),
        "{err}"
    );
    let err = encode_error(b"{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n");
    assert!(
        err.contains("bad.jsonl:2") && err.contains("duplicate id"),
        "{err}"
    );
}

#[test]
fn missing_input_file_and_missing_model_are_named() {
    let (ok, _, err) = run_embed(&[
        "encode",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--input",
        "/nonexistent/texts.jsonl",
        "--output",
        "/tmp/never.jsonl",
    ]);
    assert!(!ok && err.contains("/nonexistent/texts.jsonl"), "{err}");
    let (ok, _, err) = run_embed(&["info", "--model", "/nonexistent/model-dir"]);
    assert!(!ok && err.contains("/nonexistent/model-dir"), "{err}");
    // A hub id that is not cached locally: the error says how to point at a local folder.
    let (ok, _, err) = run_embed(&["info", "--model", "nobody/not-a-cached-model"]);
    assert!(!ok && err.contains("local folder"), "{err}");
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&tiny_llama(), tmp.path());
    let mut cfg = read_json(&tmp.path().join("config.json"));
    cfg["model_type"] = "gpt2".into();
    cfg["architectures"] = serde_json::json!(["GPT2Model"]);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let (ok, _, err) = run_embed(&["info", "--model", tmp.path().to_str().unwrap()]);
    assert!(!ok, "gpt2 accepted");
    assert!(
        err.contains("config.json") && err.contains("gpt2") && err.contains("supported: llama"),
        "{err}"
    );
}

#[test]
fn tokenizer_model_vocab_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&tiny_llama(), tmp.path());
    let mut cfg = read_json(&tmp.path().join("config.json"));
    cfg["vocab_size"] = 1000.into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let (ok, _, err) = run_embed(&["info", "--model", tmp.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab_size 1000"),
        "{err}"
    );
}

#[test]
fn precision_flag_runs_int8_or_names_the_missing_instructions() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    write(
        &input,
        b"{\"id\":\"a\",\"text\":\"Find the remainder when 2^100 is divided by 7.\"}\n",
    );
    let model = minilm();
    let vector = |flags: &[&str]| -> Result<Vec<f32>, String> {
        let out = tmp.path().join("out.jsonl");
        let mut args = vec!["encode", "--model", model.to_str().unwrap()];
        args.extend_from_slice(&["--input", input.to_str().unwrap()]);
        args.extend_from_slice(&["--output", out.to_str().unwrap(), "--quiet"]);
        args.extend_from_slice(flags);
        let (ok, _, err) = run_embed(&args);
        if !ok {
            return Err(err);
        }
        let line = std::fs::read_to_string(&out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        Ok(f32s(&v["embedding"]))
    };
    let exact = vector(&[]).unwrap();
    match vector(&["--precision", "int8"]) {
        Ok(v) => {
            let cos = exemplar::encoder::cosine(&v, &exact);
            assert!((0.998..1.0).contains(&cos), "int8 cosine to f32 {cos}");
        }
        Err(err) => assert!(
            err.contains("avx512"),
            "refusal must name the instructions: {err}"
        ),
    }
    let (ok, _, err) = run_embed(&["encode", "--dtype", "int4", "--input", "x"]);
    assert!(!ok && err.contains("f32, bf16, f16 or int8"), "{err}");
}
