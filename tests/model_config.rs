//! config.json in both layouts (transformers 5's `rope_parameters` / `dtype`, and the older
//! `rope_theta` + `rope_scaling` / `torch_dtype`) through the `embed` binary: the same vectors,
//! the resolved settings in `embed info`, and refusals that name the field. Self-contained; the
//! config-level cases are unit tests in src/encoder/config/tests.rs.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny_llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama-embed")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `embed ARGS`: success, stdout, stderr.
fn embed(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args(args)
        .env_remove("EXEMPLAR_MODEL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tiny Llama's config.json as transformers 5 saves it.
fn transformers5_config() -> Value {
    let mut c = read_json(&tiny_llama().join("config.json"));
    let c = c.as_object_mut().unwrap();
    let mut rope: Map<String, Value> = c
        .remove("rope_scaling")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    rope.insert("rope_theta".into(), c.remove("rope_theta").unwrap());
    c.insert("rope_parameters".into(), Value::Object(rope));
    let dtype = c.remove("torch_dtype").unwrap();
    c.insert("dtype".into(), dtype);
    c.insert("transformers_version".into(), "5.0.0".into());
    Value::Object(c.clone())
}

/// The tiny Llama with `config` as its config.json (weights and tokenizer linked).
fn model_with(config: &Value) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::os::unix::fs::symlink(tiny_llama().join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    tmp
}

/// `embed encode` of a few texts with the model at `model`: the output file's text, or stderr.
fn encode(model: &Path) -> Result<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let texts = [
        "Find the remainder when 2^100 is divided by 7.",
        "A triangle has sides 3, 4 and 5. What is its area?",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i.to_string(), "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let (ok, _, err) = embed(&[
        "encode",
        "--quiet",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    if !ok {
        return Err(err);
    }
    Ok(std::fs::read_to_string(output).unwrap())
}

#[test]
fn both_layouts_encode_to_the_same_bytes() {
    let new = model_with(&transformers5_config());
    let want = encode(&tiny_llama()).unwrap();
    assert_eq!(encode(new.path()).unwrap(), want);
}

#[test]
fn info_shows_the_resolved_rope_settings() {
    let new = model_with(&transformers5_config());
    let (ok, out, err) = embed(&["info", "--model", new.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    let want = "rope:              llama3, theta 500000, factor 8, low_freq_factor 1, \
                high_freq_factor 4, original_max_position_embeddings 8192 (from rope_parameters)";
    assert!(out.contains(want), "{out}");
    assert!(out.contains("hidden act:        silu"), "{out}");
    let (ok, out, err) = embed(&["info", "--model", tiny_llama().to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let info: Value = serde_json::from_str(&out).unwrap();
    let rope = &info["config"]["rope"];
    assert_eq!(rope["rope_type"], "llama3");
    assert_eq!(rope["theta"], 500_000.0);
    assert_eq!(rope["source"], "rope_theta/rope_scaling");
}

#[test]
fn unsupported_settings_are_refused_naming_the_field() {
    let cases: [(&str, Value, &str); 3] = [
        (
            "rope_parameters",
            json!({"rope_type": "yarn", "rope_theta": 500000.0, "factor": 4.0}),
            "rope_parameters.rope_type \"yarn\"",
        ),
        ("hidden_act", json!("gelu"), "hidden_act \"gelu\""),
        ("attention_bias", json!(true), "attention_bias is true"),
    ];
    for (field, value, want) in cases {
        let mut config = transformers5_config();
        config[field] = value;
        let model = model_with(&config);
        let err = encode(model.path()).unwrap_err();
        assert!(err.contains(want), "{field}: {err}");
    }
    // The memory estimate reads config.json alone, and refuses alike.
    let mut config = transformers5_config();
    config["rope_parameters"]["rope_type"] = "longrope".into();
    let model = model_with(&config);
    let (ok, _, err) = embed(&[
        "info",
        "--estimate",
        "--model",
        model.path().to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("rope_parameters.rope_type \"longrope\""),
        "{err}"
    );
}
