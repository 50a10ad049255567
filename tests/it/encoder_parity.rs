//! The embedding engine reproduces the reference implementations (transformers /
//! sentence-transformers, see tests/fixtures/README.md) to float32 precision.

use crate::util::*;
use exemplar::encoder::{
    Attention, DType, Encoder, EncoderOptions, PaddingSide, Pooling, RecipeOverrides, TextKind,
};

const MODES: [(&str, Attention, Pooling); 2] = [
    ("causal_last_token", Attention::Causal, Pooling::Last),
    (
        "bidirectional_mean",
        Attention::Bidirectional,
        Pooling::Mean,
    ),
];

fn tiny_llama_encoder(attention: Attention, pooling: Pooling, padding: PaddingSide) -> Encoder {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let settings = &expected["settings"];
    let opts = EncoderOptions {
        overrides: RecipeOverrides {
            attention: Some(attention),
            pooling: Some(pooling),
            padding_side: Some(padding),
            query_template: Some(
                settings["query_template"]
                    .as_str()
                    .unwrap()
                    .replace("{task}", "{instruction}"),
            ),
            instruction: Some(settings["task"].as_str().unwrap().to_string()),
            // The fixture's longest text has 586 tokens; nothing may be cut.
            max_length: Some(1024),
            ..Default::default()
        },
        ..Default::default()
    };
    Encoder::load(tiny_llama().to_str().unwrap(), &opts).unwrap()
}

#[test]
fn tiny_llama_matches_reference_in_all_four_modes_batched_and_alone() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let texts = expected["texts"].as_array().unwrap();
    for (mode, attention, pooling) in MODES {
        for padding in [PaddingSide::Left, PaddingSide::Right] {
            let enc = tiny_llama_encoder(attention, pooling, padding);
            for (kind, key) in [(TextKind::Document, "document"), (TextKind::Query, "query")] {
                let inputs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
                // The exact string fed to the tokenizer, then the token ids.
                let tokenized = enc.tokenize(&inputs, kind).unwrap();
                for (t, tok) in texts.iter().zip(&tokenized) {
                    assert_eq!(
                        enc.recipe().format(t["text"].as_str().unwrap(), kind),
                        t[key]["input"].as_str().unwrap()
                    );
                    assert_eq!(
                        tok.ids,
                        u32s(&t[key]["token_ids"]),
                        "{} {key} token ids",
                        t["name"]
                    );
                }
                let batched = enc.encode(&inputs, kind).unwrap();
                assert_eq!(batched.truncated, 0);
                for (t, got) in texts.iter().zip(&batched.vectors) {
                    let want = f32s(&t[key]["embeddings"][mode]);
                    assert_close(
                        got,
                        &want,
                        &format!("{mode} {key} {} batched, {padding:?} padding", t["name"]),
                    );
                }
                for (t, input) in texts.iter().zip(&inputs) {
                    let alone = enc.encode(&[input], kind).unwrap();
                    let want = f32s(&t[key]["embeddings"][mode]);
                    assert_close(
                        &alone.vectors[0],
                        &want,
                        &format!("{mode} {key} {} alone", t["name"]),
                    );
                }
            }
        }
    }
}

#[test]
fn tiny_llama_unnormalised_norms_match_reference() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let text = &expected["texts"][2];
    for (mode, attention, pooling) in MODES {
        let opts = EncoderOptions {
            overrides: RecipeOverrides {
                attention: Some(attention),
                pooling: Some(pooling),
                normalize: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        let enc = Encoder::load(tiny_llama().to_str().unwrap(), &opts).unwrap();
        let v = &enc
            .encode(&[text["text"].as_str().unwrap()], TextKind::Document)
            .unwrap()
            .vectors[0];
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let want = text["document"]["pooled_norm_before_normalization"][mode]
            .as_f64()
            .unwrap() as f32;
        assert!(
            (norm - want).abs() / want < 1e-4,
            "{mode}: norm {norm} vs {want}"
        );
    }
}

#[test]
fn batch_composition_and_budget_do_not_change_vectors() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let inputs: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let load = |budget| {
        let opts = EncoderOptions {
            max_batch_tokens: Some(budget),
            ..Default::default()
        };
        Encoder::load(tiny_llama().to_str().unwrap(), &opts).unwrap()
    };
    let small = load(64).encode(&inputs, TextKind::Query).unwrap();
    let large = load(100_000).encode(&inputs, TextKind::Query).unwrap();
    for (a, b) in small.vectors.iter().zip(&large.vectors) {
        assert_close(a, b, "budget 64 vs 100000");
    }
}

#[test]
fn rope_frequencies_follow_llama3_scaling() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let cfg: exemplar::encoder::llama::LlamaConfig =
        serde_json::from_value(read_json(&tiny_llama().join("config.json"))).unwrap();
    let got = cfg.rope_inv_freq();
    let want = f32s(&expected["model"]["rope_inv_freq"]);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn recipe_defaults_come_from_the_checkpoint() {
    // A plain Llama checkpoint: causal attention, last-token pooling.
    let enc = Encoder::load(tiny_llama().to_str().unwrap(), &EncoderOptions::default()).unwrap();
    assert_eq!(enc.recipe().attention, Attention::Causal);
    assert_eq!(enc.recipe().pooling, Pooling::Last);
    assert!(enc.recipe().normalize);

    // The same weights declared as llama-embed-nemotron declares itself: bidirectional + mean,
    // reproducing the reference bidirectional_mean vectors without any flag.
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&tiny_llama(), tmp.path());
    let mut cfg = read_json(&tmp.path().join("config.json"));
    cfg["model_type"] = "llama_bidirec".into();
    cfg["architectures"] = serde_json::json!(["LlamaBidirectionalModel"]);
    cfg["pooling"] = "avg".into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let enc = Encoder::load(tmp.path().to_str().unwrap(), &EncoderOptions::default()).unwrap();
    assert_eq!(enc.recipe().attention, Attention::Bidirectional);
    assert_eq!(enc.recipe().pooling, Pooling::Mean);
    let expected = read_json(&tiny_llama().join("expected.json"));
    let t = &expected["texts"][0];
    let v = enc
        .encode(&[t["text"].as_str().unwrap()], TextKind::Document)
        .unwrap();
    assert_close(
        &v.vectors[0],
        &f32s(&t["document"]["embeddings"]["bidirectional_mean"]),
        "llama_bidirec default",
    );
}

#[test]
fn minilm_matches_sentence_transformers() {
    let expected = read_json(&fixture("minilm/expected.json"));
    let texts = expected["texts"].as_array().unwrap();
    let enc = Encoder::load(minilm().to_str().unwrap(), &EncoderOptions::default()).unwrap();
    assert_eq!(enc.recipe().max_length, 256);
    assert_eq!(enc.recipe().pooling, Pooling::Mean);
    assert_eq!(enc.dim(), 384);
    let inputs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let tokenized = enc.tokenize(&inputs, TextKind::Document).unwrap();
    for (t, tok) in texts.iter().zip(&tokenized) {
        assert_eq!(tok.ids, u32s(&t["token_ids"]), "{} token ids", t["name"]);
        assert_eq!(
            tok.truncated,
            t["truncated"].as_bool().unwrap(),
            "{} truncated",
            t["name"]
        );
    }
    let batched = enc.encode(&inputs, TextKind::Document).unwrap();
    assert_eq!(
        batched.truncated,
        texts
            .iter()
            .filter(|t| t["truncated"].as_bool().unwrap())
            .count()
    );
    for (t, got) in texts.iter().zip(&batched.vectors) {
        assert_close(
            got,
            &f32s(&t["embedding"]),
            &format!("minilm {} batched", t["name"]),
        );
    }
    for (t, input) in texts.iter().zip(&inputs) {
        let alone = enc.encode(&[input], TextKind::Document).unwrap();
        assert_close(
            &alone.vectors[0],
            &f32s(&t["embedding"]),
            &format!("minilm {} alone", t["name"]),
        );
    }
}

/// MiniLM through the CPU engine with `options`, against the sentence-transformers fixture:
/// the lowest cosine over the fixture's texts, batched and alone.
fn minilm_worst_cosine(options: &EncoderOptions, cpu_engine: bool) -> f32 {
    let expected = read_json(&fixture("minilm/expected.json"));
    let texts = expected["texts"].as_array().unwrap();
    let enc = Encoder::load(minilm().to_str().unwrap(), options).unwrap();
    let inputs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let batched = enc.encode(&inputs, TextKind::Document).unwrap();
    let mut worst = 1f32;
    for (i, t) in texts.iter().enumerate() {
        let want = f32s(&t["embedding"]);
        let alone = enc.encode(&[inputs[i]], TextKind::Document).unwrap();
        if cpu_engine {
            // Texts share nothing in the CPU engine: alone and batched are the same bits.
            assert_eq!(
                alone.vectors[0], batched.vectors[i],
                "{} alone vs batched",
                t["name"]
            );
        }
        worst = worst.min(exemplar::encoder::cosine(&batched.vectors[i], &want));
    }
    worst
}

#[test]
fn low_precision_stays_within_its_stated_tolerance() {
    for (dtype, floor) in [(DType::BF16, 0.9995), (DType::Int8, 0.998)] {
        let opts = EncoderOptions {
            dtype: Some(dtype),
            ..Default::default()
        };
        if let Err(e) = Encoder::load(minilm().to_str().unwrap(), &opts) {
            // Refused on a CPU without the instructions: that refusal must say so.
            let msg = format!("{e:#}");
            assert!(msg.contains("avx512"), "{dtype}: {msg}");
            eprintln!("skipping {dtype}: {msg}");
            continue;
        }
        let worst = minilm_worst_cosine(&opts, true);
        eprintln!("{dtype}: lowest cosine to sentence-transformers {worst}");
        assert!(worst >= floor, "{dtype}: cosine {worst} < {floor}");
    }
}

#[test]
fn every_instruction_set_reproduces_the_reference() {
    // nextest runs each test in its own process, so the variable reaches only these loads.
    for isa in ["avx2", "portable"] {
        std::env::set_var(exemplar::encoder::cpu::ISA_ENV, isa);
        let worst = minilm_worst_cosine(&EncoderOptions::default(), true);
        assert!(worst >= 0.99999, "{isa}: MiniLM cosine {worst}");
        let enc = tiny_llama_encoder(Attention::Causal, Pooling::Last, PaddingSide::Left);
        let expected = read_json(&tiny_llama().join("expected.json"));
        for t in expected["texts"].as_array().unwrap() {
            let got = enc
                .encode(&[t["text"].as_str().unwrap()], TextKind::Document)
                .unwrap();
            let want = f32s(&t["document"]["embeddings"]["causal_last_token"]);
            assert_close(
                &got.vectors[0],
                &want,
                &format!("{isa}: tiny llama {}", t["name"]),
            );
        }
    }
    std::env::remove_var(exemplar::encoder::cpu::ISA_ENV);
}

#[test]
fn candle_and_the_cpu_engine_agree() {
    std::env::set_var(exemplar::encoder::cpu::ENGINE_ENV, "candle");
    let worst = minilm_worst_cosine(&EncoderOptions::default(), false);
    std::env::remove_var(exemplar::encoder::cpu::ENGINE_ENV);
    assert!(worst >= 0.99999, "candle: MiniLM cosine {worst}");
}

#[test]
fn low_precision_llama_stays_close_to_f32() {
    let expected = read_json(&tiny_llama().join("expected.json"));
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let f32_vectors =
        tiny_llama_encoder(Attention::Bidirectional, Pooling::Mean, PaddingSide::Left)
            .encode(&texts, TextKind::Document)
            .unwrap()
            .vectors;
    for dtype in [DType::BF16, DType::Int8] {
        let opts = EncoderOptions {
            dtype: Some(dtype),
            overrides: RecipeOverrides {
                attention: Some(Attention::Bidirectional),
                pooling: Some(Pooling::Mean),
                max_length: Some(1024),
                ..Default::default()
            },
            ..Default::default()
        };
        let Ok(enc) = Encoder::load(tiny_llama().to_str().unwrap(), &opts) else {
            eprintln!("skipping {dtype}: not on this CPU");
            continue;
        };
        let got = enc.encode(&texts, TextKind::Document).unwrap().vectors;
        for (g, w) in got.iter().zip(&f32_vectors) {
            let cos = exemplar::encoder::cosine(g, w);
            assert!(cos >= 0.998, "{dtype}: tiny llama cosine to f32 {cos}");
        }
    }
}
