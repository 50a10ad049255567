use super::*;
use crate::encoder::{fingerprint, Encoder, EncoderOptions, TextKind};
use serde_json::json;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn tiny_llama_config() -> Value {
    let path = fixture("tests/fixtures/tiny-llama-embed/config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// all-MiniLM-L6-v2's config.json as the hub ships it (transformers 4.8).
fn minilm_config() -> Value {
    json!({
        "_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": false,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 384,
        "initializer_range": 0.02, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
        "transformers_version": "4.8.2", "type_vocab_size": 2, "use_cache": true,
        "vocab_size": 30522
    })
}

/// `config` as transformers 5 saves it: `rope_theta` and `rope_scaling` moved into
/// `rope_parameters`, `torch_dtype` renamed `dtype`.
fn transformers5(config: &Value) -> Value {
    let mut c = config.as_object().unwrap().clone();
    let theta = c.remove("rope_theta");
    let scaling = c.remove("rope_scaling");
    if theta.is_some() || scaling.is_some() {
        let mut p = Map::new();
        p.insert("rope_type".into(), "default".into());
        if let Some(Value::Object(s)) = scaling {
            p.extend(s);
        }
        p.insert("rope_theta".into(), theta.unwrap_or(json!(10_000.0)));
        c.insert("rope_parameters".into(), Value::Object(p));
    }
    if let Some(d) = c.remove("torch_dtype") {
        c.insert("dtype".into(), d);
    }
    c.insert("transformers_version".into(), "5.0.0".into());
    Value::Object(c)
}

fn llama(config: &Value) -> Result<ModelConfig> {
    ModelConfig::resolve(config, Architecture::Llama)
}

fn error(r: Result<ModelConfig>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn both_layouts_resolve_to_the_same_settings() {
    let old = llama(&tiny_llama_config()).unwrap();
    let new = llama(&transformers5(&tiny_llama_config())).unwrap();
    let (a, b) = (old.rope.clone().unwrap(), new.rope.clone().unwrap());
    assert_eq!(
        (a.source, b.source),
        ("rope_theta/rope_scaling", "rope_parameters")
    );
    assert_eq!(a.rope_type, RopeType::Llama3);
    assert_eq!((a.theta, a.factor), (500_000.0, Some(8.0)));
    assert_eq!(
        Rope {
            source: b.source,
            ..a.clone()
        },
        b
    );
    assert_eq!(a.inv_freq(16), b.inv_freq(16));
    assert_eq!(old.checkpoint_dtype, Some(DType::F32));
    assert_eq!(
        new.checkpoint_dtype,
        Some(DType::F32),
        "dtype, transformers 5's name"
    );
    // No rotary settings at all: transformers' default base, no scaling.
    let mut bare = tiny_llama_config();
    bare.as_object_mut().unwrap().remove("rope_scaling");
    bare.as_object_mut().unwrap().remove("rope_theta");
    let rope = llama(&bare).unwrap().rope.unwrap();
    assert_eq!((rope.rope_type, rope.theta), (RopeType::Default, 10_000.0));
}

#[test]
fn an_unknown_rope_type_is_refused_naming_the_field() {
    for name in ["yarn", "longrope", "dynamic"] {
        let mut c = transformers5(&tiny_llama_config());
        c["rope_parameters"]["rope_type"] = name.into();
        let err = error(llama(&c));
        assert!(
            err.contains("rope_parameters.rope_type") && err.contains(name),
            "{err}"
        );
        let mut c = tiny_llama_config();
        c["rope_scaling"] = json!({"type": name, "factor": 2.0});
        let err = error(llama(&c));
        assert!(
            err.contains("rope_scaling.rope_type") && err.contains(name),
            "{err}"
        );
    }
    // Keys of a rope type not implemented, and missing parameters of one that is.
    let mut c = transformers5(&tiny_llama_config());
    c["rope_parameters"]["beta_fast"] = 32.into();
    assert!(error(llama(&c)).contains("rope_parameters.beta_fast"));
    let mut c = tiny_llama_config();
    c["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("low_freq_factor");
    assert!(error(llama(&c)).contains("rope_scaling.low_freq_factor"));
}

#[test]
fn layouts_that_disagree_are_refused() {
    let mut c = transformers5(&tiny_llama_config());
    c["rope_theta"] = json!(10_000.0);
    let err = error(llama(&c));
    assert!(
        err.contains("rope_parameters") && err.contains("disagree"),
        "{err}"
    );
    // Saying the same thing twice is fine.
    c["rope_theta"] = json!(500_000.0);
    c["rope_scaling"] = tiny_llama_config()["rope_scaling"].clone();
    assert!(llama(&c).is_ok());
}

#[test]
fn a_foreign_hidden_act_is_refused_naming_the_field() {
    let mut c = tiny_llama_config();
    c["hidden_act"] = "gelu".into();
    let err = error(llama(&c));
    assert!(
        err.contains("hidden_act \"gelu\"") && err.contains("silu"),
        "{err}"
    );
    let mut c = minilm_config();
    c["hidden_act"] = "gelu_new".into();
    let err = error(ModelConfig::resolve(&c, Architecture::Bert));
    assert!(err.contains("hidden_act \"gelu_new\""), "{err}");
    c["hidden_act"] = "relu".into();
    assert!(
        ModelConfig::resolve(&c, Architecture::Bert).is_ok(),
        "candle runs relu"
    );
}

#[test]
fn unsupported_settings_are_refused_with_their_value() {
    let cases = [
        ("partial_rotary_factor", json!(0.5)),
        (
            "layer_types",
            json!(["sliding_attention", "full_attention"]),
        ),
        ("attn_logit_softcapping", json!(50.0)),
    ];
    for (field, value) in cases {
        let mut c = tiny_llama_config();
        c[field] = value.clone();
        let err = error(llama(&c));
        assert!(
            err.contains(field) && err.contains(&value.to_string()),
            "{err}"
        );
    }
    let mut c = minilm_config();
    c["position_embedding_type"] = "relative_key".into();
    let err = error(ModelConfig::resolve(&c, Architecture::Bert));
    assert!(
        err.contains("position_embedding_type \"relative_key\""),
        "{err}"
    );
}

#[test]
fn a_sliding_window_shorter_than_the_inputs_is_refused() {
    let mut c = tiny_llama_config();
    c["sliding_window"] = 4096.into();
    let s = llama(&c).unwrap();
    assert!(s.check_length(4096).is_ok());
    let err = s.check_length(8192).unwrap_err().to_string();
    assert!(
        err.contains("sliding_window 4096") && err.contains("--max-length"),
        "{err}"
    );
    // Qwen2 writes a window it does not use.
    c["use_sliding_window"] = false.into();
    assert_eq!(llama(&c).unwrap().sliding_window, None);
}

/// Layer 0's tensor shapes of the tiny Llama (hidden 64, 4 heads of 16, 2 key-value heads).
fn tiny_shapes() -> HashMap<String, Vec<usize>> {
    let shapes = [
        ("layers.0.self_attn.q_proj.weight", vec![64, 64]),
        ("layers.0.self_attn.k_proj.weight", vec![32, 64]),
        ("layers.0.mlp.gate_proj.weight", vec![128, 64]),
    ];
    shapes
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[test]
fn declared_biases_must_be_in_the_weights() {
    let c = tiny_llama_config();
    let s = llama(&c).unwrap();
    assert!(s.check_weights(&c, &tiny_shapes()).is_ok());
    for (field, bias) in [
        ("attention_bias", "layers.0.self_attn.q_proj.bias"),
        ("mlp_bias", "layers.0.mlp.gate_proj.bias"),
    ] {
        let mut declared = c.clone();
        declared[field] = true.into();
        let err = llama(&declared)
            .unwrap()
            .check_weights(&declared, &tiny_shapes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(field) && err.contains(bias), "{err}");
        // The other way round: a bias the config does not declare would be dropped.
        let mut shapes = tiny_shapes();
        shapes.insert(bias.to_string(), vec![64]);
        let err = s.check_weights(&c, &shapes).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains(bias), "{err}");
    }
}

#[test]
fn head_dim_must_match_the_weights() {
    let mut c = tiny_llama_config();
    c["head_dim"] = 32.into();
    let err = llama(&c)
        .unwrap()
        .check_weights(&c, &tiny_shapes())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head_dim 32") && err.contains("q_proj"),
        "{err}"
    );
    // Weights without layer 0 (a hollow checkpoint) are left to the loader.
    assert!(llama(&c)
        .unwrap()
        .check_weights(&c, &HashMap::new())
        .is_ok());
}

#[test]
fn every_field_of_the_supported_configs_is_listed() {
    let known: Vec<&str> = [READ, REFUSED_IF_UNSUPPORTED, IGNORED].concat();
    for config in [
        tiny_llama_config(),
        transformers5(&tiny_llama_config()),
        minilm_config(),
        transformers5(&minilm_config()),
    ] {
        for key in config.as_object().unwrap().keys() {
            assert!(known.contains(&key.as_str()), "{key} is in no list");
        }
    }
    for list in [READ, REFUSED_IF_UNSUPPORTED] {
        for field in list {
            assert!(!IGNORED.contains(field), "{field} is listed twice");
        }
    }
}

#[test]
fn the_fingerprint_covers_the_resolved_settings() {
    let dir = fixture("tests/fixtures/tiny-llama-embed");
    let files = crate::encoder::source::locate_files(&dir).unwrap();
    let right = llama(&tiny_llama_config()).unwrap();
    let mut misread = right.clone();
    misread.rope = Some(Rope {
        rope_type: RopeType::Default,
        theta: 10_000.0,
        factor: None,
        llama3: None,
        source: "rope_theta/rope_scaling",
    });
    assert_ne!(
        fingerprint(&files, &right).unwrap(),
        fingerprint(&files, &misread).unwrap()
    );
}

/// A copy of the model folder `from` (weights and tokenizer linked) with `config` as its
/// config.json.
fn rewritten(from: &Path, config: &Value) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    tmp
}

/// `texts` through the model at `dir`, with its resolved settings.
fn embed(dir: &Path, texts: &[&str]) -> (Vec<Vec<f32>>, ModelConfig) {
    let enc = Encoder::load(dir.to_str().unwrap(), &EncoderOptions::default()).unwrap();
    let vectors = enc.encode(texts, TextKind::Document).unwrap().vectors;
    (vectors, enc.settings().clone())
}

const TEXTS: [&str; 3] = [
    "Find the remainder when 2^100 is divided by 7.",
    "A triangle has sides 3, 4 and 5. What is its area?",
    "Solve $x^2 - 5x + 6 = 0$ for every real x, and explain each step.",
];

#[test]
fn the_tiny_llama_in_both_layouts_gives_bit_identical_vectors() {
    let dir = fixture("tests/fixtures/tiny-llama-embed");
    let new = rewritten(&dir, &transformers5(&tiny_llama_config()));
    let (want, old_settings) = embed(&dir, &TEXTS);
    let (got, new_settings) = embed(new.path(), &TEXTS);
    assert_eq!(got, want);
    assert_eq!(new_settings.rope.unwrap().source, "rope_parameters");
    assert_eq!(old_settings.rope.unwrap().source, "rope_theta/rope_scaling");
}

#[test]
fn minilm_in_the_transformers5_layout_gives_bit_identical_vectors() {
    let dir = fixture(".cache/models/all-MiniLM-L6-v2");
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-models.sh",
        dir.display()
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut new_config = transformers5(&config);
    new_config["dtype"] = "float32".into();
    let new = rewritten(&dir, &new_config);
    let (want, _) = embed(&dir, &TEXTS);
    let (got, settings) = embed(new.path(), &TEXTS);
    assert_eq!(got, want);
    assert_eq!(settings.checkpoint_dtype, Some(DType::F32));
    assert_eq!(settings.rope, None);
}
