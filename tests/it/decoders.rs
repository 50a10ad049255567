//! Qwen3, Qwen2 and Mistral decoders against transformers (tests/fixtures/tiny-*-embed, made by
//! tests/fixtures/make_decoder_fixtures.py): the Qwen3-Embedding recipe found in the checkpoint's
//! files, f32 parity on both engines, bf16 / int8 on the CPU engine, `--dim` truncation,
//! `embed info`.

use crate::util::*;
use exemplar::encoder::recipe::{self, Architecture};
use exemplar::encoder::{
    cosine, Attention, DType, Encoder, EncoderOptions, ModelFiles, PaddingSide, Pooling,
    RecipeOverrides, TextKind,
};
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 3] = ["tiny-qwen3-embed", "tiny-qwen2-embed", "tiny-mistral-embed"];

/// Options that reproduce the fixture's inputs: its task as the instruction; everything else
/// is found in the checkpoint's files.
fn options(expected: &serde_json::Value, dtype: Option<DType>) -> EncoderOptions {
    EncoderOptions {
        dtype,
        overrides: RecipeOverrides {
            instruction: Some(expected["settings"]["task"].as_str().unwrap().to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The lowest cosine to the reference over every text, documents and queries, batched and
/// alone; token ids and inputs are checked exactly on the way.
fn worst_cosine(name: &str, dtype: Option<DType>) -> anyhow::Result<f32> {
    let dir = fixture(name);
    let expected = read_json(&dir.join("expected.json"));
    let enc = Encoder::load(dir.to_str().unwrap(), &options(&expected, dtype))?;
    let texts = expected["texts"].as_array().unwrap();
    let inputs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let mut worst = 1f32;
    for (kind, key) in [(TextKind::Document, "document"), (TextKind::Query, "query")] {
        let tokenized = enc.tokenize(&inputs, kind).unwrap();
        for (t, tok) in texts.iter().zip(&tokenized) {
            let text = t["text"].as_str().unwrap();
            assert_eq!(
                enc.recipe().format(text, kind),
                t[key]["input"].as_str().unwrap()
            );
            assert_eq!(
                tok.ids,
                u32s(&t[key]["token_ids"]),
                "{name} {key} {}",
                t["name"]
            );
        }
        let batched = enc.encode(&inputs, kind)?.vectors;
        for (i, t) in texts.iter().enumerate() {
            let want = f32s(&t[key]["embedding"]);
            let alone = &enc.encode(&[inputs[i]], kind)?.vectors[0];
            worst = worst
                .min(cosine(&batched[i], &want))
                .min(cosine(alone, &want));
        }
    }
    Ok(worst)
}

#[test]
fn the_qwen3_embedding_recipe_is_read_from_the_checkpoint() {
    for name in FIXTURES {
        let enc = Encoder::load(fixture(name).to_str().unwrap(), &Default::default()).unwrap();
        let r = enc.recipe();
        assert_eq!(
            (r.attention, r.pooling, r.padding_side),
            (Attention::Causal, Pooling::Last, PaddingSide::Left),
            "{name}"
        );
        // The SmolLM2 tokenizer appends nothing, so the engine appends the EOS.
        assert!(r.append_eos, "{name}");
        assert!(r.normalize, "{name}");
        assert_eq!(r.document_template, "{text}", "{name}");
    }
}

#[test]
fn f32_matches_transformers_on_the_cpu_engine() {
    for name in FIXTURES {
        let worst = worst_cosine(name, None).unwrap();
        eprintln!("{name}: f32, CPU engine: lowest cosine {worst}");
        assert!(worst >= 0.99999, "{name}: cosine {worst}");
    }
}

#[test]
fn f32_matches_transformers_on_candle() {
    // nextest runs each test in its own process, so the variable reaches only these loads.
    std::env::set_var(exemplar::encoder::cpu::ENGINE_ENV, "candle");
    for name in FIXTURES {
        let worst = worst_cosine(name, None).unwrap();
        eprintln!("{name}: f32, candle: lowest cosine {worst}");
        assert!(worst >= 0.99999, "{name}: cosine {worst}");
    }
    std::env::remove_var(exemplar::encoder::cpu::ENGINE_ENV);
}

#[test]
fn bf16_and_int8_stay_close_on_the_cpu_engine() {
    for (dtype, floor) in [(DType::BF16, 0.999), (DType::Int8, 0.998)] {
        for name in FIXTURES {
            match worst_cosine(name, Some(dtype)) {
                Ok(worst) => {
                    eprintln!("{name}: {dtype}: lowest cosine {worst}");
                    assert!(worst >= floor, "{name} {dtype}: cosine {worst} < {floor}");
                }
                // Refused on a CPU without the instructions: that refusal must say so.
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("avx512"), "{dtype}: {msg}");
                    eprintln!("skipping {dtype}: {msg}");
                }
            }
        }
    }
}

#[test]
fn dim_keeps_the_first_components_renormalised() {
    let dir = fixture("tiny-qwen3-embed");
    let expected = read_json(&dir.join("expected.json"));
    let t = &expected["texts"][2];
    let mut opts = options(&expected, None);
    opts.overrides.truncate_dim = Some(12);
    let enc = Encoder::load(dir.to_str().unwrap(), &opts).unwrap();
    assert_eq!(enc.dim(), 12);
    assert_eq!(enc.info().recipe.truncate_dim, Some(12));
    let got = &enc
        .encode(&[t["text"].as_str().unwrap()], TextKind::Query)
        .unwrap()
        .vectors[0];
    let full = f32s(&t["query"]["embedding"]);
    let norm = full[..12].iter().map(|x| x * x).sum::<f32>().sqrt();
    let want: Vec<f32> = full[..12].iter().map(|x| x / norm).collect();
    assert_eq!(got.len(), 12);
    assert!(cosine(got, &want) >= 0.99999);
    assert!((got.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);

    opts.overrides.truncate_dim = Some(33);
    let err = format!(
        "{:#}",
        Encoder::load(dir.to_str().unwrap(), &opts).err().unwrap()
    );
    assert!(err.contains("--dim 33") && err.contains("32"), "{err}");
}

#[test]
fn dim_is_recorded_and_the_index_embeds_queries_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen3-embed");
    let corpus = sample_corpus(tmp.path(), 40);
    let (emb, idx) = (tmp.path().join("emb"), tmp.path().join("idx"));
    embed_ok(&[
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        corpus.to_str().unwrap(),
        "--out",
        emb.to_str().unwrap(),
        "--dim",
        "16",
        "--quiet",
    ]);
    let manifest = read_json(&emb.join("manifest.json"));
    assert_eq!(manifest["dim"], 16, "{manifest}");
    assert_eq!(manifest["recipe"]["truncate_dim"], 16, "{manifest}");
    build_index(&emb, &idx);
    // Queries go through the index's own recipe: 16 components, or the search would fail.
    let (out, _) = embed_ok(&[
        "index",
        "query",
        "--index",
        idx.to_str().unwrap(),
        "--text",
        "How many triangles are there?",
        "-k",
        "3",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["results"].as_array().unwrap().len(), 3, "{line}");
}

#[test]
fn embed_info_shows_the_recipe() {
    let m = fixture("tiny-qwen3-embed");
    let (out, _) = embed_ok(&["info", "--model", m.to_str().unwrap(), "--dim", "8"]);
    for line in [
        "architecture:      Qwen3",
        "dim:               8 (the first 8 of 32 components, --dim)",
        "pooling:           Last",
        "append eos:        true",
        "padding side:      Left",
        "rope:              default, theta 1000000 (from rope_parameters)",
        r#"query template:    "Instruct: {instruction}\nQuery:{text}""#,
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let m = fixture("tiny-mistral-embed");
    let (out, _) = embed_ok(&["info", "--model", m.to_str().unwrap()]);
    assert!(out.contains("sliding window:    48"), "{out}");
}

/// A folder holding config.json only (no weights, no tokenizer), as for an 8B `--estimate`.
fn config_only(dir: &Path, name: &str, config: serde_json::Value) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    d
}

#[test]
fn estimate_handles_the_8b_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let qwen3 = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151665,
        "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 40960, "rope_theta": 1000000, "rms_norm_eps": 1e-6,
        "use_sliding_window": false, "sliding_window": null, "max_window_layers": 36,
        "attention_bias": false, "hidden_act": "silu", "torch_dtype": "bfloat16"
    });
    let mistral = serde_json::json!({
        "architectures": ["MistralModel"], "model_type": "mistral", "vocab_size": 32000,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": 4096,
        "hidden_act": "silu", "torch_dtype": "float16"
    });
    let qwen2 = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151646,
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 131072,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "use_sliding_window": false,
        "sliding_window": 131072, "max_window_layers": 28, "hidden_act": "silu",
        "torch_dtype": "float32"
    });
    // Parameters counted by hand from the shapes (the published 7.57 B, 7.11 B, 7.07 B).
    for (name, config, parameters) in [
        ("Qwen3-Embedding-8B", qwen3, 7_567_295_488u64),
        ("e5-mistral-7b-instruct", mistral, 7_110_660_096),
        ("gte-Qwen2-7B-instruct", qwen2, 7_069_121_024),
    ] {
        let dir = config_only(tmp.path(), name, config);
        let (out, _) = embed_ok(&[
            "info",
            "--estimate",
            "--json",
            "--model",
            dir.to_str().unwrap(),
            "--device",
            "cpu",
            "--dtype",
            "bf16",
            "--max-length",
            "4096",
        ]);
        let e: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(e["parameters"], parameters, "{name}: {e}");
        assert_eq!(e["weight_bytes"], parameters * 2, "{name}");
    }
}

/// Qwen3-Embedding's own files, minus the weights: the recipe must come from them alone.
fn qwen3_embedding_files(dir: &Path, tokenizer_adds_eos: bool) -> ModelFiles {
    let src = fixture("tiny-qwen3-embed");
    for f in [
        "config.json",
        "config_sentence_transformers.json",
        "modules.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::copy(
        src.join("1_Pooling/config.json"),
        dir.join("1_Pooling/config.json"),
    )
    .unwrap();
    // A tokenizer.json that is only a post-processor, as Qwen3-Embedding's (which appends
    // <|endoftext|>), or one that appends nothing.
    let single = if tokenizer_adds_eos {
        serde_json::json!([{"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}])
    } else {
        serde_json::json!([{"Sequence": {"id": "A", "type_id": 0}}])
    };
    let tokenizer = serde_json::json!({
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true}],
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": [],
                           "special_tokens": {}}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    ModelFiles {
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        weights: Vec::new(),
        dir: dir.to_path_buf(),
    }
}

#[test]
fn recipe_detection_needs_the_config_files_alone() {
    for adds_eos in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let files = qwen3_embedding_files(tmp.path(), adds_eos);
        let config = recipe::read_json(&files.config).unwrap();
        let arch = recipe::detect_architecture(&files.config, &config).unwrap();
        assert_eq!(arch, Architecture::Qwen3);
        let r = recipe::resolve_recipe(&files, &config, arch, &Default::default()).unwrap();
        assert_eq!(r.pooling, Pooling::Last);
        assert_eq!(r.attention, Attention::Causal);
        assert_eq!(r.padding_side, PaddingSide::Left);
        assert_eq!(r.append_eos, !adds_eos, "tokenizer adds EOS: {adds_eos}");
        // The prompt becomes the instruct template, its task the default instruction.
        assert_eq!(r.query_template, "Instruct: {instruction}\nQuery:{text}");
        assert_eq!(
            r.instruction,
            "Given a web search query, retrieve relevant passages that answer the query"
        );
        assert_eq!(r.document_template, "{text}");
        // Flags still override.
        let flags = RecipeOverrides {
            append_eos: Some(adds_eos),
            pooling: Some(Pooling::Mean),
            instruction: Some("Find similar problems".into()),
            ..Default::default()
        };
        let r = recipe::resolve_recipe(&files, &config, arch, &flags).unwrap();
        assert_eq!((r.append_eos, r.pooling), (adds_eos, Pooling::Mean));
        assert_eq!(
            r.format("x", TextKind::Query),
            "Instruct: Find similar problems\nQuery:x"
        );
    }
}

#[test]
fn what_is_not_implemented_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Qwen's sliding window applies to some layers only.
    let dir = tmp.path().join("qwen2");
    copy_model(&fixture("tiny-qwen2-embed"), &dir);
    let mut cfg = read_json(&dir.join("config.json"));
    cfg["use_sliding_window"] = true.into();
    cfg["sliding_window"] = 64.into();
    cfg.as_object_mut().unwrap().remove("layer_types");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = format!(
        "{:#}",
        Encoder::load(dir.to_str().unwrap(), &Default::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("use_sliding_window"), "{err}");

    // Mistral's window is implemented for causal attention only.
    let opts = EncoderOptions {
        overrides: RecipeOverrides {
            attention: Some(Attention::Bidirectional),
            ..Default::default()
        },
        ..Default::default()
    };
    let m = fixture("tiny-mistral-embed");
    let enc = Encoder::load(m.to_str().unwrap(), &opts).unwrap();
    let long = "a b c d e f g h i j k l m n o p q r s t u v w x y z ".repeat(4);
    let err = format!(
        "{:#}",
        enc.encode(&[&long], TextKind::Document).unwrap_err()
    );
    assert!(err.contains("sliding_window 48"), "{err}");

    // Qwen3's q/k norms in weights declared as another architecture would be dropped.
    let dir = tmp.path().join("qwen3-as-llama");
    copy_model(&fixture("tiny-qwen3-embed"), &dir);
    let mut cfg = read_json(&dir.join("config.json"));
    cfg["model_type"] = "llama".into();
    cfg["architectures"] = serde_json::json!(["LlamaModel"]);
    cfg.as_object_mut().unwrap().remove("layer_types");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = format!(
        "{:#}",
        Encoder::load(dir.to_str().unwrap(), &Default::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("q_norm"), "{err}");
}
