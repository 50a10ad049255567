//! Long inputs: attention in blocks of query rows gives the vectors of unblocked attention at a
//! fraction of the memory; truncation is reported; memory estimates come from config.json alone.

use crate::util::*;
use exemplar::encoder::{
    estimate_memory, Attention, AttentionBlocks, DType, Device, Encoder, EncoderOptions, Pooling,
    RecipeOverrides, TextKind, ATTENTION_BLOCK_ENV,
};
use std::path::Path;
use std::process::Command;

/// Sample problems and solutions joined until the text is at least `chars` long.
fn long_text(chars: usize) -> String {
    let sample = std::fs::read_to_string(repo().join("datasets/sample/train.jsonl")).unwrap();
    let mut text = String::new();
    for line in sample.lines().cycle() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        text.push_str(r["problem"].as_str().unwrap());
        text.push('\n');
        text.push_str(r["solution"].as_str().unwrap());
        text.push_str("\n\n");
        if text.len() >= chars {
            return text;
        }
    }
    unreachable!()
}

fn tiny_llama_with(attention: Attention, pooling: Pooling, max_length: usize) -> Encoder {
    let opts = EncoderOptions {
        overrides: RecipeOverrides {
            attention: Some(attention),
            pooling: Some(pooling),
            max_length: Some(max_length),
            ..Default::default()
        },
        // Both texts in one padded batch.
        max_batch_tokens: Some(1 << 20),
        ..Default::default()
    };
    Encoder::load(tiny_llama().to_str().unwrap(), &opts).unwrap()
}

#[test]
fn blocked_attention_matches_unblocked_on_6000_tokens() {
    let long = long_text(40_000);
    let short = long_text(6_000);
    let texts = [long.as_str(), short.as_str()];
    for (attention, pooling) in [
        (Attention::Bidirectional, Pooling::Mean),
        (Attention::Causal, Pooling::Last),
    ] {
        let mut enc = tiny_llama_with(attention, pooling, 6000);
        // Default blocks (512 rows: 12 blocks, the last one short), the two texts padded into
        // one batch.
        let blocked = enc.encode(&texts, TextKind::Document).unwrap();
        assert_eq!(blocked.truncated, 1);
        assert_eq!(
            enc.tokenize(&texts, TextKind::Document).unwrap()[0]
                .ids
                .len(),
            6000
        );
        enc.set_attention_blocks(AttentionBlocks::UNBLOCKED);
        for (i, text) in texts.iter().enumerate() {
            let alone = enc.encode(&[text], TextKind::Document).unwrap();
            let cos = exemplar::encoder::cosine(&blocked.vectors[i], &alone.vectors[0]);
            assert!(cos >= 0.99999, "{attention:?} text {i}: cosine {cos}");
            assert_close(
                &blocked.vectors[i],
                &alone.vectors[0],
                &format!("{attention:?} {i}"),
            );
        }
    }
}

/// Peak RSS (KiB) and seconds of `embed encode` on one text, from getrusage(RUSAGE_CHILDREN)
/// in a python3 parent: the kernel's own high-water mark of the child.
fn encode_peak_rss(dir: &Path, text: &str, max_length: usize, env: &[(&str, &str)]) -> (u64, f64) {
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        serde_json::json!({"id": "long", "text": text}).to_string(),
    )
    .unwrap();
    let output = dir.join("out.jsonl");
    let args = serde_json::json!([
        embed_bin(),
        "encode",
        "--model",
        tiny_llama(),
        "--input",
        input,
        "--output",
        output,
        "--attention",
        "bidirectional",
        "--pooling",
        "mean",
        "--max-length",
        max_length.to_string(),
        "--quiet",
        "--summary-json"
    ]);
    let script = "import json, resource, subprocess, sys\n\
                  r = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)\n\
                  sys.stderr.write(r.stderr)\n\
                  print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                  sys.exit(r.returncode)";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &args.to_string()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("python3 runs the child and reports its peak RSS");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("--summary-json line");
    assert_eq!(summary["tokens"], max_length);
    let rss: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (rss, summary["seconds"].as_f64().unwrap())
}

#[test]
fn a_6000_token_input_stays_under_its_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let text = long_text(40_000);
    let (rss, seconds) = encode_peak_rss(tmp.path(), &text, 6000, &[]);
    eprintln!(
        "6000 tokens, blocked attention: peak RSS {} MiB, {seconds:.2} s",
        rss / 1024
    );
    // Measured (2-core dev machine, embed binary with mimalloc): 199-204 MiB with 512-row blocks (4 heads x 512 rows x
    // 6000 keys x 4 bytes = 47 MiB of scores per block), 1,211 MiB with the same binary forced
    // unblocked (576 MiB per 6000 x 6000 score tensor) and 1,338 MiB before blocks existed.
    assert!(rss < 400 * 1024, "peak RSS {} MiB", rss / 1024);
}

#[test]
fn forcing_unblocked_attention_by_environment_gives_the_same_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let text = long_text(12_000);
    let read = |dir: &Path| -> Vec<f32> {
        let line = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        f32s(&v["embedding"])
    };
    encode_peak_rss(tmp.path(), &text, 2000, &[(ATTENTION_BLOCK_ENV, "off")]);
    let unblocked = read(tmp.path());
    encode_peak_rss(tmp.path(), &text, 2000, &[(ATTENTION_BLOCK_ENV, "128")]);
    assert_close(&read(tmp.path()), &unblocked, "128-row blocks vs unblocked");
}

#[test]
fn truncation_is_reported_even_when_the_cut_falls_between_words() {
    // tokenizers stops at the limit when a word ends exactly there and then reports no
    // overflow; 600 tokens of "hello world" cut at 100 used to count as not truncated.
    let enc = tiny_llama_with(Attention::Bidirectional, Pooling::Mean, 100);
    let text = "hello world ".repeat(300);
    let full = tiny_llama_with(Attention::Bidirectional, Pooling::Mean, 4096)
        .tokenize(&[&text], TextKind::Document)
        .unwrap();
    assert!(full[0].ids.len() > 100 && !full[0].truncated);
    let cut = enc
        .tokenize(&[&text, "hello world"], TextKind::Document)
        .unwrap();
    assert!(cut[0].truncated);
    assert_eq!(cut[0].ids, full[0].ids[..100]);
    assert!(!cut[1].truncated);
    assert_eq!(
        enc.encode(&[&text], TextKind::Document).unwrap().truncated,
        1
    );
}

/// Parameters stored in a safetensors file (float tensors: not BERT's integer position ids).
fn stored_parameters(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum()
}

#[test]
fn estimate_counts_the_fixture_parameters_exactly() {
    let opts = EncoderOptions::default();
    let e = estimate_memory(tiny_llama().to_str().unwrap(), &opts).unwrap();
    assert_eq!(
        e.parameters,
        stored_parameters(&tiny_llama().join("model.safetensors"))
    );
    assert_eq!((e.device, e.dtype), (Device::Cpu, DType::F32));
    assert_eq!(e.weight_bytes, e.parameters * 4);
    assert_eq!(e.attention_block_rows, Some(512));
    assert!(e.peak_bytes > e.weight_bytes);
    let bert = estimate_memory(minilm().to_str().unwrap(), &opts).unwrap();
    assert_eq!(
        bert.parameters,
        stored_parameters(&minilm().join("model.safetensors")) - 384 * 384 - 384, // the pooler, which embedding never runs
    );
    assert_eq!(bert.attention_block_rows, None);
}

/// config.json of Llama-3.1-8B as llama-embed-nemotron-8b ships it (no weights needed).
fn write_nemotron_config(dir: &Path) {
    let cfg = serde_json::json!({
        "architectures": ["LlamaBidirectionalModel"], "model_type": "llama_bidirec",
        "pooling": "avg", "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "torch_dtype": "bfloat16"
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

/// `embed info` with these arguments, which must succeed: its stdout.
fn run_info(args: &[&str]) -> String {
    embed_ok(&[&["info"], args].concat()).0
}

#[test]
fn estimate_sizes_an_8b_checkpoint_from_config_json_alone() {
    let tmp = tempfile::tempdir().unwrap();
    write_nemotron_config(tmp.path());
    let dir = tmp.path().to_str().unwrap();
    let json = run_info(&[
        "--model",
        dir,
        "--estimate",
        "--json",
        "--device",
        "cuda:0",
        "--max-length",
        "32768",
    ]);
    let e: serde_json::Value = serde_json::from_str(&json).unwrap();
    // 128256 x 4096 embeddings + 32 layers x 218,112,000 + the final norm.
    assert_eq!(e["parameters"], 7_504_924_672u64);
    assert_eq!(e["dtype"], "bf16", "the checkpoint's torch_dtype on CUDA");
    assert_eq!(e["weight_bytes"], 2 * 7_504_924_672u64); // 15.0 GB = 13.98 GiB
    assert_eq!(e["max_length"], 32768);
    assert_eq!(e["max_batch_tokens"], 16384);
    // One 32k text alone: 32 heads x 512 rows x 32768 keys x 4 bytes = 2 GiB per block.
    assert_eq!(
        (e["batch_sequences"].as_u64(), e["batch_length"].as_u64()),
        (Some(1), Some(32768))
    );
    assert_eq!(e["attention_block_bytes"], 2u64 << 30);
    let peak = e["peak_bytes"].as_u64().unwrap() as f64 / (1u64 << 30) as f64;
    assert!((15.0..30.0).contains(&peak), "peak {peak} GiB");

    let text = run_info(&["--model", dir, "--estimate", "--device", "cuda:0"]);
    for want in [
        "device / dtype:       cuda:0 / bf16",
        "7504924672 (7.50 B)",
        "15.01 GB",
        "peak estimate:",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // On the CPU the default is f32, and --dtype wins over both rules.
    let cpu: serde_json::Value =
        serde_json::from_str(&run_info(&["--model", dir, "--estimate", "--json"])).unwrap();
    assert_eq!(cpu["dtype"], "f32");
    let f16: serde_json::Value = serde_json::from_str(&run_info(&[
        "--model",
        dir,
        "--estimate",
        "--json",
        "--device",
        "cuda:0",
        "--dtype",
        "f16",
    ]))
    .unwrap();
    assert_eq!(f16["dtype"], "f16");
}

#[test]
fn manifests_record_the_resolved_dtype() {
    // No --dtype on the CPU: f32, whatever the checkpoint says.
    let tmp = tempfile::tempdir().unwrap();
    copy_model(&tiny_llama(), tmp.path());
    let mut cfg = read_json(&tmp.path().join("config.json"));
    cfg["torch_dtype"] = "bfloat16".into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let model = tmp.path().to_str().unwrap();
    let ck = exemplar::encoder::Checkpoint::open(model, &RecipeOverrides::default()).unwrap();
    let cpu = EncoderOptions::default();
    assert_eq!(ck.info(&cpu).dtype, DType::F32);
    let cuda = EncoderOptions {
        device: Device::Cuda(0),
        ..Default::default()
    };
    assert_eq!(ck.info(&cuda).dtype, DType::BF16);
    let asked = EncoderOptions {
        dtype: Some(DType::F16),
        ..cuda
    };
    assert_eq!(ck.info(&asked).dtype, DType::F16);
    let enc = Encoder::load(model, &cpu).unwrap();
    assert_eq!(enc.info().dtype, DType::F32);
}
