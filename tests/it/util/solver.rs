//! Running `solve` against a server (scripted or real) and reading what it wrote.

use super::{solve_bin, write_lines};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The API key the tests give `solve`; it must reach the server and nothing else.
pub const KEY: &str = "sk-test-secret-4711";

/// Problems "p1".."pN" whose expected answers are 11, 22, 33, ... as `dir/test.jsonl`.
pub fn problems(dir: &Path, n: usize) -> PathBuf {
    let lines: Vec<String> = (1..=n)
        .map(|i| serde_json::json!({"id": format!("p{i}"), "problem": format!("Problem number {i}: what is {i} times eleven?"), "answer": (11 * i).to_string(), "source": "unit"}).to_string())
        .collect();
    write_lines(dir.join("test.jsonl"), &lines)
}

/// The right answer for the "Problem number N: ..." in a user message.
pub fn right_answer(user: &str) -> u64 {
    let n: u64 = user
        .split("Problem number ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    11 * n
}

/// `solve` against `endpoint`, writing under `dir/out`, quiet; $EXEMPLAR_ENDPOINT removed.
pub fn solve_cmd(dir: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(solve_bin());
    c.args(["--endpoint", endpoint, "--out"])
        .arg(dir.join("out/submission.csv"))
        .arg("--quiet")
        .env_remove("EXEMPLAR_ENDPOINT");
    c
}

/// `solve` against a scripted server: quick retries, the test key, then `extra`.
pub fn solve(dir: &Path, endpoint: &str, extra: &[&str]) -> Output {
    solve_cmd(dir, endpoint)
        .args(["--backoff", "0.01"])
        .args(extra)
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap()
}

/// The lines of `dir/out/traces.jsonl`.
pub fn traces(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out/traces.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (id, answer) rows of `dir/out/submission.csv`.
pub fn submission(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(dir.join("out/submission.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (id, a) = l.split_once(',').unwrap();
            (id.to_string(), a.parse().unwrap())
        })
        .collect()
}

/// The tool calls of a trace line's first sample.
pub fn tool_calls(t: &Value) -> Vec<Value> {
    t["samples"][0]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
