//! `solve` against a real OpenAI-compatible server: llama.cpp's llama-server serving
//! SmolLM2-135M-Instruct (Q4_1 GGUF), both installed by scripts/fetch-llama-server.sh. The tests
//! fail (rather than skip) when they are missing: CI installs them, and a skipped test of the
//! real-server path proves nothing.

use crate::util::llama::LlamaServer;
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// An index of sample problems (tiny fixture embedder). Problems and solutions are cut to 150
/// characters (prompt processing dominates on a CPU), then `pad` sentences are put in front of
/// each solution.
fn padded_index(dir: &Path, pad: usize) -> PathBuf {
    let lines: Vec<String> = sample_lines("train.jsonl", 60)
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let cut = |f: &str| -> String { v[f].as_str().unwrap().chars().take(150).collect() };
            let (s, problem) = (cut("solution"), cut("problem"));
            v["problem"] = problem.into();
            v["solution"] = format!(
                "{}{s}",
                "We work through every step with care. ".repeat(pad)
            )
            .into();
            v.to_string()
        })
        .collect();
    tiny_index(dir, &write_lines(dir.join("corpus.jsonl"), &lines))
}

/// The first `n` sample test problems (they have answers).
fn test_problems(dir: &Path, n: usize) -> PathBuf {
    write_lines(dir.join("problems.jsonl"), &sample_lines("test.jsonl", n))
}

/// `solve` against the real server, as a careful mathematician.
fn solve_smollm2(dir: &Path, endpoint: &str, extra: &[&str]) -> Output {
    solve_cmd(dir, endpoint)
        .args(["--model", "smollm2"])
        .args(["--system", "You are a careful mathematician."])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn rag_solving_against_llama_server_answers_every_id_with_real_completions() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = padded_index(tmp.path(), 0);
    let input = test_problems(tmp.path(), 2);
    let server = LlamaServer::start(8192, 4, &[]);
    let o = solve_smollm2(
        tmp.path(),
        &server.endpoint(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=4",
            "--samples",
            "4",
            "--concurrency",
            "4",
            "--max-tokens",
            "24",
        ],
    );
    ok(&o);
    let sub = std::fs::read_to_string(tmp.path().join("out/submission.csv")).unwrap();
    assert_eq!(sub.lines().count(), 3, "{sub}");
    let t = traces(tmp.path());
    assert_eq!(t.len(), 2);
    for line in &t {
        assert_eq!(line["retrieved"].as_array().unwrap().len(), 4);
        assert_eq!(line["fit"]["counted_by"], "server");
        assert_eq!(line["fit"]["context"], 2048, "n_ctx per slot from /props");
        let samples = line["samples"].as_array().unwrap();
        assert!(!samples.is_empty());
        for s in samples {
            let text = s["text"].as_str().unwrap_or("");
            assert!(!text.trim().is_empty(), "empty completion: {s}");
            assert!(s["completion_tokens"].as_u64().unwrap() > 0, "{s}");
        }
    }
}

#[test]
fn a_deadline_leaves_the_server_idle_within_two_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let input = test_problems(tmp.path(), 1);
    // --ignore-eos: every sample would run to max_tokens (minutes on this CPU).
    let server = LlamaServer::start(8192, 4, &["--ignore-eos"]);
    let o = solve_smollm2(
        tmp.path(),
        &server.endpoint(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "4",
            "--concurrency",
            "4",
            "--max-tokens",
            "1500",
            "--time-budget",
            "4",
        ],
    );
    ok(&o);
    let done = Instant::now();
    assert_eq!(traces(tmp.path())[0]["stopped"], "deadline");
    while server.busy_slots() > 0 {
        assert!(
            done.elapsed() < Duration::from_secs(2),
            "{} slots still generating 2 s after the deadline",
            server.busy_slots()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn long_examples_are_trimmed_to_a_small_context_without_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    // Every solution is ~2,500 tokens: four of them cannot fit in 1,024.
    let idx = padded_index(tmp.path(), 80);
    let input = test_problems(tmp.path(), 2);
    let server = LlamaServer::start(1024, 1, &[]);
    let o = solve_smollm2(
        tmp.path(),
        &server.endpoint(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=4",
            "--samples",
            "2",
            "--concurrency",
            "1",
            "--max-tokens",
            "24",
        ],
    );
    ok(&o);
    for line in traces(tmp.path()) {
        let fit = &line["fit"];
        assert_eq!(fit["context"], 1024);
        assert_eq!(fit["overflow_retries"], 0, "{fit}");
        assert!(!fit["dropped"].as_array().unwrap().is_empty(), "{fit}");
        for s in line["samples"].as_array().unwrap() {
            let errors = s["errors"].as_array().unwrap();
            assert!(errors.is_empty(), "{errors:?}");
            assert!(s["text"].is_string());
        }
    }
}

/// `--tools python` offers OpenAI `tools` to llama-server: with its chat templates on (the
/// default, `--jinja`) the requests are taken as they are; with `--no-jinja` it refuses them
/// (HTTP 500 "tools param requires --jinja flag") and `auto` goes on with fenced blocks. Whether
/// SmolLM2 calls the tool is its own business and not asserted.
#[test]
fn tools_are_accepted_with_jinja_and_auto_falls_back_without() {
    for (flags, protocol) in [(&[][..], "openai"), (&["--no-jinja"][..], "auto")] {
        let tmp = tempfile::tempdir().unwrap();
        let input = test_problems(tmp.path(), 1);
        let server = LlamaServer::start(4096, 1, flags);
        let o = solve_smollm2(
            tmp.path(),
            &server.endpoint(),
            &[
                "--input",
                input.to_str().unwrap(),
                "--rag",
                "k=0",
                "--samples",
                "1",
                "--max-tokens",
                "64",
                "--temperature",
                "0",
                "--tools",
                "python",
                "--tool-protocol",
                protocol,
            ],
        );
        ok(&o);
        let log = String::from_utf8_lossy(&o.stderr);
        let t = &traces(tmp.path())[0];
        let p = &t["tool_protocol"];
        let s = &t["samples"][0];
        assert_eq!(s["errors"], serde_json::json!([]), "{s:#}");
        assert!(s["text"].is_string(), "{s:#}");
        if flags.is_empty() {
            assert_eq!(
                (&p["tools_sent"], &p["refused"]),
                (&true.into(), &None::<()>.into())
            );
            assert!(!log.contains("falling back"), "{log}");
        } else {
            assert_eq!(p["tools_sent"], false);
            assert!(p["refused"].as_str().unwrap().contains("--jinja"), "{p}");
            assert_eq!(log.matches("falling back to fenced").count(), 1, "{log}");
        }
    }
}
