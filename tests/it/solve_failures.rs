//! `solve` when things go wrong: no server, a broken or stalled one, a wrong model, problems that
//! got no reply, retrieval that did not reach the model, values that cannot work, and input
//! files as users have them. Every failure must be said, and a run that failed must not exit 0.

use crate::util::llama::LlamaServer;
use crate::util::server::{closed_endpoint, stalling_endpoint, MockServer, Reply, Request};
use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `solve --rag k=0` on `n` problems against `endpoint`, one sample each.
fn solve_k0(dir: &Path, endpoint: &str, n: usize, extra: &[&str]) -> Output {
    let input = problems(dir, n);
    let mut args = vec!["--input", input.to_str().unwrap(), "--rag", "k=0"];
    args.extend(["--samples", "1"]);
    args.extend(extra);
    solve(dir, endpoint, &args)
}

fn right(req: &Request) -> Reply {
    Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
}

#[test]
fn a_closed_port_stops_before_the_first_problem_and_says_what_it_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    let start = Instant::now();
    let o = solve_k0(tmp.path(), &endpoint, 2, &["--retries", "2"]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(err.contains("cannot reach the server"), "{err}");
    assert!(err.contains(&endpoint) && err.contains("--launch"), "{err}");
    assert_eq!(
        err.matches("retrying in").count(),
        2,
        "each wait said: {err}"
    );
    assert!(!tmp.path().join("out/submission.csv").exists());
}

#[test]
fn a_server_answering_500_to_everything_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start_with_gets(|_, _| Reply::Status(500, "boom".into()));
    let o = solve_k0(tmp.path(), &server.url, 2, &["--retries", "1"]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("HTTP 500") && err.contains("boom"), "{err}");
    assert!(server.chat_requests().is_empty(), "no problem was sent");
}

/// A vLLM-like model list: two served names.
fn two_models(req: &Request, _: usize) -> Reply {
    match req.path.as_str() {
        "/v1/models" => Reply::Raw(
            r#"{"object":"list","data":[{"id":"served-a","owned_by":"vllm","max_model_len":8192},{"id":"served-b","owned_by":"vllm","max_model_len":8192}]}"#
                .into(),
        ),
        "/v1/chat/completions" => right(req),
        _ => Reply::Status(404, "not found".into()),
    }
}

#[test]
fn a_wrong_model_is_refused_with_the_models_the_server_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start_with_gets(two_models);
    let o = solve_k0(tmp.path(), &server.url, 1, &["--model", "served-c"]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("\"served-c\""), "{err}");
    assert!(
        err.contains("served-a") && err.contains("served-b"),
        "{err}"
    );
    assert!(server.chat_requests().is_empty());
    // The right name goes through.
    let o = solve_k0(tmp.path(), &server.url, 1, &["--model", "served-b"]);
    ok(&o);
    assert_eq!(submission(tmp.path()), vec![("p1".into(), 11)]);
}

#[test]
fn a_dry_run_needs_no_server() {
    let tmp = tempfile::tempdir().unwrap();
    ok(&solve_k0(tmp.path(), &closed_endpoint(), 2, &["--dry-run"]));
    assert_eq!(traces(tmp.path()).len(), 2);
}

/// Problems 2 and 3 get HTTP 503 (after the model list answered): no reply for them.
fn down_for_2_and_3(req: &Request, _: usize) -> Reply {
    let user = req.last_user();
    match right_answer(&user) {
        22 | 33 => Reply::Status(503, "model worker crashed".into()),
        _ => right(req),
    }
}

#[test]
fn problems_without_a_reply_fail_and_a_rerun_retries_exactly_them() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(down_for_2_and_3);
    let extra = ["--retries", "1", "--fallback", "123"];
    let o = solve_k0(tmp.path(), &server.url, 3, &extra);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "a failed problem fails the run: {err}");
    assert!(
        err.contains("2 of 3 problems got no reply from the server: p2: HTTP 503"),
        "{err}"
    );
    // The submission still has a row per id.
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 123), ("p3".into(), 123)]
    );
    let t = traces(tmp.path());
    assert_eq!(t[0]["status"], "answered");
    for line in &t[1..] {
        assert_eq!(line["status"], "failed", "{line}");
        assert!(line["failure"].as_str().unwrap().contains("HTTP 503"));
    }
    // Once the server is well, a re-run retries exactly the failed two.
    let good = MockServer::start(|req, _| right(req));
    let o = solve_k0(tmp.path(), &good.url, 3, &extra);
    let log = ok(&o);
    assert!(log.contains("2 failed earlier"), "{log}");
    let asked: Vec<u64> = good
        .chat_requests()
        .iter()
        .map(|r| right_answer(&r.last_user()))
        .collect();
    assert_eq!(asked, vec![22, 33]);
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 22), ("p3".into(), 33)]
    );
}

#[test]
fn replies_without_an_answer_are_model_failures_not_failed_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(|req, _| match right_answer(&req.last_user()) {
        11 => Reply::Completion("I do not know.".into()),
        _ => right(req),
    });
    let o = solve_k0(tmp.path(), &server.url, 2, &["--json"]);
    let log = ok(&o);
    assert!(log.contains("1 fallback"), "{log}");
    let t = traces(tmp.path());
    assert_eq!(t[0]["status"], "fallback");
    assert_eq!(t[1]["status"], "answered");
    let (out, _) = text(&o);
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (s["fallbacks"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(0))
    );
    // A model failure is kept by a re-run, as before.
    let before = server.chat_requests().len();
    ok(&solve_k0(tmp.path(), &server.url, 2, &[]));
    assert_eq!(server.chat_requests().len(), before);
}

#[test]
fn a_stalled_server_cannot_hold_the_run_past_its_budget() {
    for extra in [&[][..], &["--max-model-len", "8192"][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let mut args = vec!["--time-budget", "6s"];
        args.extend(extra);
        let o = solve_k0(tmp.path(), &stalling_endpoint(), 2, &args);
        let took = start.elapsed();
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{err}");
        assert!(took < Duration::from_secs(9), "{extra:?}: {took:?}: {err}");
        assert!(err.contains("did not answer"), "{err}");
    }
}

#[test]
fn a_server_that_lists_models_then_stalls_ends_within_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    // Every POST (token counts, completions) hangs for two minutes.
    let server =
        MockServer::start(|req, _| Reply::Delay(Duration::from_secs(120), Box::new(right(req))));
    let start = Instant::now();
    let o = solve_k0(
        tmp.path(),
        &server.url,
        2,
        &["--time-budget", "6s", "--max-model-len", "8192"],
    );
    let took = start.elapsed();
    let (_, err) = text(&o);
    assert!(took < Duration::from_secs(9), "{took:?}: {err}");
    assert_eq!(submission(tmp.path()).len(), 2, "{err}");
    assert!(err.contains("ran out of time"), "{err}");
}

#[test]
fn values_that_cannot_work_are_refused_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(|req, _| right(req));
    let input = problems(tmp.path(), 1);
    let input = input.to_str().unwrap();
    std::fs::create_dir_all(tmp.path().join("sol/dirout")).unwrap();
    let out_dir = tmp.path().join("sol/dirout");
    let o = std::process::Command::new(solve_bin())
        .args([
            "--endpoint",
            &server.url,
            "--input",
            input,
            "--rag",
            "k=0",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("is a folder"), "{err}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--rag", "k=2,min-score=1.5"], "min-score"),
        (vec!["--rag", "k=2,exclude-above=-3"], "exclude-above"),
        (
            vec!["--rag", "k=0", "--compare-rag", "k=0,min-score=NaN"],
            "min-score",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--input", input];
        all.extend(args);
        let o = solve(tmp.path(), &server.url, &all);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{all:?}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
    // --eval on problems without answers.
    let bare = write_lines(
        tmp.path().join("bare.jsonl"),
        &[r#"{"id": "a", "problem": "What is 1+1?"}"#.to_string()],
    );
    let o = solve(
        tmp.path(),
        &server.url,
        &["--input", bare.to_str().unwrap(), "--rag", "k=0", "--eval"],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--eval") && err.contains("answer") && !err.contains("NaN"),
        "{err}"
    );
    assert!(
        server.requests.lock().unwrap().is_empty(),
        "nothing was asked"
    );
}

#[test]
fn serve_writes_the_submission_as_answers_come() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(|req, _| right(req));
    let mut child = solve_cmd(tmp.path(), &server.url)
        .args(["--rag", "k=0", "--samples", "1", "--serve"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for i in 1..=2u64 {
        let line =
            serde_json::json!({"id": format!("q{i}"), "problem": format!("Problem number {i}: ?")});
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut reply = String::new();
        stdout.read_line(&mut reply).unwrap();
        let want: Vec<(String, u64)> = (1..=i).map(|j| (format!("q{j}"), 11 * j)).collect();
        assert_eq!(submission(tmp.path()), want, "after answer {i}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn json_prints_one_summary_object_with_per_arm_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 40);
    let input = problems(tmp.path(), 2);
    let server = MockServer::start(|req, _| right(req));
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=2",
            "--compare-rag",
            "k=0",
            "--samples",
            "1",
            "--eval",
            "--json",
        ],
    );
    ok(&o);
    let (out, _) = text(&o);
    let line = out.lines().last().unwrap();
    let s: Value = serde_json::from_str(line).unwrap();
    assert_eq!(s["problems"], 2);
    assert_eq!(s["answered"], 2);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["fallbacks"], 0);
    assert_eq!(s["examples_sent_mean"], 2.0);
    assert_eq!(s["examples_dropped"], 0);
    assert!(s["seconds"].as_f64().unwrap() > 0.0);
    assert!(s["out"].as_str().unwrap().ends_with("submission.csv"));
    assert!(s["traces"].as_str().unwrap().ends_with("traces.jsonl"));
    let arms = s["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    assert_eq!(
        (&arms[0]["name"], &arms[0]["accuracy"]),
        (&"rag".into(), &1.0.into())
    );
    assert_eq!(arms[1]["examples_sent_mean"], 0.0);
    // The eval table says what was sent, not only the spec.
    assert!(out.contains("examples sent"), "{out}");
}

#[test]
fn problem_and_id_fields_are_found_as_extract_finds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(|req, _| right(req));
    // GSM8K-style: `question`, no id.
    let input = write_lines(
        tmp.path().join("gsm.jsonl"),
        &(1..=2)
            .map(|i| serde_json::json!({"question": format!("Problem number {i}: ?"), "answer": (11 * i).to_string()}).to_string())
            .collect::<Vec<_>>(),
    );
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "1",
        ],
    );
    let log = ok(&o);
    assert!(
        log.contains("{question}") && log.contains("FILE:LINE"),
        "{log}"
    );
    assert_eq!(
        submission(tmp.path()),
        vec![("gsm.jsonl:1".into(), 11), ("gsm.jsonl:2".into(), 22)]
    );
    // Chat-style messages: the last user turn; the id from --id-field.
    let input = write_lines(
        tmp.path().join("chat.jsonl"),
        &[serde_json::json!({"uid": 7, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "Problem number 3: ?"}]}).to_string()],
    );
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "1",
            "--id-field",
            "uid",
            "--force",
        ],
    );
    ok(&o);
    assert_eq!(submission(tmp.path()), vec![("7".into(), 33)]);
    // Nothing that looks like a problem: the fields found are listed.
    let input = write_lines(
        tmp.path().join("odd.jsonl"),
        &[r#"{"id": "a", "body": "Problem number 4: ?", "label": 3}"#.to_string()],
    );
    let o = solve(
        tmp.path(),
        &server.url,
        &["--input", input.to_str().unwrap(), "--rag", "k=0"],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("\"body\"") && err.contains("\"label\"") && err.contains("--problem-field"),
        "{err}"
    );
    // --problem-field picks it.
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "1",
            "--problem-field",
            "body",
            "--force",
        ],
    );
    ok(&o);
    assert_eq!(submission(tmp.path()), vec![("a".into(), 44)]);
}

/// Retrieved examples dropped by the prompt fitting are said per problem and counted.
#[test]
fn dropped_examples_are_warned_per_problem_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 40);
    let input = problems(tmp.path(), 3);
    let server = MockServer::start(|req, _| right(req));
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=4",
            "--samples",
            "1",
            "--max-model-len",
            "1200",
            "--max-tokens",
            "200",
            "--json",
        ],
    );
    let log = ok(&o);
    let t = traces(tmp.path());
    let with_drops: Vec<&Value> = t
        .iter()
        .filter(|l| !l["fit"]["dropped"].as_array().unwrap().is_empty())
        .collect();
    assert!(!with_drops.is_empty(), "the test needs drops: {t:?}");
    for l in &with_drops {
        let id = l["id"].as_str().unwrap();
        let line = format!("{id}: {} of", l["fit"]["dropped"].as_array().unwrap().len());
        assert!(log.contains(&line), "{line} missing: {log}");
    }
    let (out, _) = text(&o);
    let s: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(s["problems_with_dropped_examples"], with_drops.len());
    let sent: usize = t
        .iter()
        .map(|l| l["retrieved"].as_array().unwrap().len())
        .sum();
    assert_eq!(s["examples_sent_mean"], sent as f64 / 3.0);
}

/// A real llama-server with 2,048 tokens of context and the default --max-tokens 16384: no
/// example can fit; the run says so at error level, with the cause and what to change, and the
/// eval table shows 0 examples sent.
#[test]
fn every_example_dropped_by_a_small_context_is_an_error_line_with_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 40);
    let input = write_lines(
        tmp.path().join("problems.jsonl"),
        &sample_lines("test.jsonl", 2),
    );
    let server = LlamaServer::start(2048, 1, &[]);
    let o = solve_cmd(tmp.path(), &server.endpoint())
        .args(["--model", "smollm2", "--input", input.to_str().unwrap()])
        .args(["--index", idx.to_str().unwrap(), "--rag", "k=2"])
        .args(["--samples", "1", "--eval", "--time-budget", "60s"])
        .output()
        .unwrap();
    let log = ok(&o);
    assert!(
        log.contains("error: no retrieved example reached the model"),
        "{log}"
    );
    assert!(
        log.contains("--max-tokens 16384") && log.contains("2048"),
        "{log}"
    );
    assert_eq!(
        log.matches("retrieved examples dropped").count(),
        2,
        "{log}"
    );
    assert!(log.contains("| rag | k=2 |"), "{log}");
    let row = log.lines().find(|l| l.starts_with("| rag |")).unwrap();
    assert!(row.trim_end().ends_with("| 0.00 |"), "{row}");
}
