//! `solve` against a scripted OpenAI-compatible server on 127.0.0.1.

use crate::util::server::{delta, MockServer, Reply};
use crate::util::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn rag_run_sends_what_the_model_needs_and_writes_submission_and_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 120);
    let input = problems(tmp.path(), 3);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!(
            "<think>hmm \\boxed{{1}}</think>So the answer is \\boxed{{{}}}.",
            right_answer(&req.last_user())
        ))
    });
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
            "2",
            "--max-tokens",
            "1234",
            "--eval",
        ],
    );
    let log = ok(&o);

    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 6, "3 problems x 2 samples");
    for r in &reqs {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        let b = &r.body;
        assert_eq!(b["model"], "nvidia/Llama-3_3-Nemotron-Super-49B-v1");
        assert_eq!(b["temperature"], 0.6);
        assert_eq!(b["top_p"], 0.95);
        assert_eq!(b["max_tokens"], 1234);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[0]["content"], "detailed thinking on");
        // 4 retrieved pairs, then the problem.
        assert_eq!(m.len(), 1 + 2 * 4 + 1);
        for pair in m[1..9].chunks(2) {
            assert_eq!(pair[0]["role"], "user");
            assert_eq!(pair[1]["role"], "assistant");
            assert!(
                pair[1]["content"].as_str().unwrap().contains("\\boxed"),
                "examples end with their boxed answer"
            );
        }
        assert!(m[9]["content"].as_str().unwrap().contains("Problem number"));
    }
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 22), ("p3".into(), 33)]
    );
    let t = traces(tmp.path());
    assert_eq!(t.len(), 3);
    for line in &t {
        assert_eq!(line["retrieved"].as_array().unwrap().len(), 4);
        assert_eq!(line["messages"].as_array().unwrap().len(), 10);
        assert_eq!(line["samples"].as_array().unwrap().len(), 2);
        assert_eq!(line["samples"][0]["completion_tokens"], 20);
        assert_eq!(line["correct"], true);
    }
    assert!(log.contains("| rag | k=4 | 1.000 | 3 |"), "{log}");
    // The key went to the server and nowhere else.
    let written = std::fs::read_to_string(tmp.path().join("out/traces.jsonl")).unwrap();
    assert!(!written.contains(KEY) && !log.contains(KEY));
}

#[test]
fn votes_and_stops_early_once_the_leader_cannot_be_overtaken() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // Answers in order: 5, 7, 7, 7, ... with one request at a time.
    let server = MockServer::start(|_, n| {
        Reply::Completion(format!("\\boxed{{{}}}", if n == 0 { 5 } else { 7 }))
    });
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "5",
            "--concurrency",
            "1",
        ],
    );
    ok(&o);
    // After 5,7,7,7 the leader has 3 votes against 1 with one sample left: settled.
    assert_eq!(server.chat_requests().len(), 4);
    let t = &traces(tmp.path())[0];
    assert_eq!(t["stopped"], "settled");
    assert_eq!(t["answer"], 7);
    assert_eq!(
        t["vote"],
        serde_json::json!([{"answer": 5, "votes": 1}, {"answer": 7, "votes": 3}])
    );
    // k=0 is the control: no retrieved examples, just system + problem.
    assert_eq!(
        server.chat_requests()[0].body["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn faults_are_retried_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    let server = MockServer::start(|req, n| match n {
        0 => Reply::Status(500, "overloaded".into()),
        1 => Reply::Raw("{\"choices\": [".into()),
        2 => Reply::Drop,
        3 => Reply::Status(429, "slow down".into()),
        4 => Reply::Completion("   ".into()),
        _ => Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user()))),
    });
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
            "--retries",
            "5",
        ],
    );
    ok(&o);
    let t = &traces(tmp.path())[0];
    let s = &t["samples"][0];
    assert_eq!(s["attempts"], 6);
    let errors: Vec<&str> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(errors[0].contains("HTTP 500"));
    assert!(errors[1].contains("malformed"));
    assert!(errors[3].contains("HTTP 429"));
    assert!(errors[4].contains("empty completion"));
    assert_eq!(submission(tmp.path()), vec![("p1".into(), 11)]);
}

#[test]
fn a_dead_server_still_gives_an_answer_per_id() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    // The server passes the check before the first problem (GET /models), then dies: every
    // request's connection is dropped unanswered. (A server dead from the start stops the run
    // before the first problem: see solve_failures.)
    let server = MockServer::start(|_, _| Reply::Drop);
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "2",
            "--retries",
            "1",
            "--fallback",
            "123",
        ],
    );
    // Problems without a reply fail the run, but every id still has its row.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("2 of 2 problems got no reply"), "{err}");
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 123), ("p2".into(), 123)]
    );
    let t = traces(tmp.path());
    assert_eq!(t[0]["fallback"], true);
    assert_eq!(t[0]["status"], "failed");
    assert!(t[0]["samples"][0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("request failed"));
}

#[test]
fn the_deadline_cuts_slow_requests_and_keeps_the_best_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // The first sample answers at once, the others hang far past the budget.
    let server = MockServer::start(|req, n| {
        let answer = Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())));
        if n == 0 {
            answer
        } else {
            Reply::Delay(Duration::from_secs(30), Box::new(answer))
        }
    });
    let start = Instant::now();
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "4",
            "--concurrency",
            "4",
            "--time-budget",
            "2s",
        ],
    );
    ok(&o);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the budget was not enforced"
    );
    let t = &traces(tmp.path())[0];
    assert_eq!(t["stopped"], "deadline");
    assert_eq!(t["answer"], 11);
    assert_eq!(t["fallback"], false);
}

#[test]
fn a_rerun_resumes_from_the_traces_and_redoes_a_torn_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 3);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
    });
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--rag",
        "k=0",
        "--samples",
        "1",
    ];
    ok(&solve(tmp.path(), &server.url, &args));
    assert_eq!(server.chat_requests().len(), 3);
    // Simulate a kill in the middle of writing the last trace line.
    let path = tmp.path().join("out/traces.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 20;
    std::fs::write(&path, &text[..cut]).unwrap();
    std::fs::remove_file(tmp.path().join("out/submission.csv")).unwrap();
    ok(&solve(tmp.path(), &server.url, &args));
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 4, "only the torn problem is redone");
    assert!(reqs[3].last_user().contains("Problem number 3"));
    assert_eq!(submission(tmp.path()).len(), 3);
    assert_eq!(traces(tmp.path()).len(), 3);
}

#[test]
fn dry_run_sends_nothing_and_writes_the_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 120);
    let input = problems(tmp.path(), 2);
    let server = MockServer::start(|_, _| Reply::Completion("\\boxed{1}".into()));
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=2,format=context",
            "--dry-run",
        ],
    );
    ok(&o);
    assert!(server.chat_requests().is_empty());
    let t = traces(tmp.path());
    assert_eq!(t.len(), 2);
    let m = t[0]["messages"].as_array().unwrap();
    assert_eq!(m.len(), 2, "context format: system + one user message");
    assert!(m[1]["content"].as_str().unwrap().contains("### Example 2"));
    assert!(!tmp.path().join("out/submission.csv").exists());
}

#[test]
fn compare_rag_runs_a_control_arm_for_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 120);
    let input = problems(tmp.path(), 2);
    // The model is right only when it was shown examples.
    let server = MockServer::start(|req, _| {
        let with_examples = req.body["messages"].as_array().unwrap().len() > 2;
        let a = if with_examples {
            right_answer(&req.last_user())
        } else {
            0
        };
        Reply::Completion(format!("\\boxed{{{a}}}"))
    });
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=1",
            "--compare-rag",
            "k=0",
            "--samples",
            "1",
            "--eval",
        ],
    );
    let log = ok(&o);
    assert!(log.contains("| rag | k=1 | 1.000 |"), "{log}");
    assert!(log.contains("| control | k=0 | 0.000 |"), "{log}");
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 22)]
    );
}

#[test]
fn launch_starts_the_server_waits_for_it_and_stops_it_on_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // A stand-in server in Python: once it is up (after a deliberate 1 s delay) it answers
    // GET /v1/models with 200 and every POST with a completion boxing 0.
    let script = tmp.path().join("standin.py");
    std::fs::write(&script, STAND_IN).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cmd = format!("sleep 1; exec python3 {} {port}", script.display());
    let o = solve(
        tmp.path(),
        &format!("http://127.0.0.1:{port}/v1"),
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "1",
            "--retries",
            "0",
            "--launch",
            &cmd,
            "--launch-timeout",
            "60s",
        ],
    );
    let log = ok(&o);
    assert!(log.contains("server ready"), "{log}");
    assert!(tmp.path().join("out/server.log").is_file());
    assert_eq!(submission(tmp.path()), vec![("p1".into(), 0)]);
    // Stopped on exit: nothing listens on the port any more.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the launched server is still running"
    );
}

/// A minimal OpenAI-compatible server: an empty model list, and `\boxed{0}` to every POST.
const STAND_IN: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        b = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        self.reply({"data": []})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = {"role": "assistant", "content": "\\boxed{0}"}
        self.reply({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// What a real model (or a broken server) may send, one kind per request.
fn hostile_reply(n: usize, user: &str) -> Reply {
    let right = right_answer(user);
    let chat = |message: serde_json::Value| {
        Reply::Raw(serde_json::json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).to_string())
    };
    match n % 10 {
        0 => Reply::Completion("The limit is \\boxed ∞ so \\boxed{∞}".into()),
        1 => Reply::Completion(format!("{}\\boxed{{{right}", "{".repeat(5000))),
        2 => chat(
            serde_json::json!({"content": null, "reasoning_content": format!("so \\boxed{{{right}}}")}),
        ),
        3 => Reply::Raw(r#"{"choices": []}"#.into()),
        4 => Reply::Status(
            400,
            r#"{"object":"error","message":"This model's maximum context length is 512 tokens"}"#
                .into(),
        ),
        5 => Reply::Completion(format!("{}\\boxed{{{right}}}", "x".repeat(2 << 20))),
        6 => Reply::Completion(format!("\0\0\\boxed{{\0{right}}}\0")),
        7 => Reply::Stream(
            vec![
                delta(None, Some("thinking \\boxed{1} ")),
                delta(Some("\\boxed{"), None),
                delta(Some(&format!("{right}}}")), None),
            ],
            Duration::from_millis(1),
        ),
        8 => Reply::Raw(r#"{"object":"error","message":"internal failure"}"#.into()),
        _ => Reply::Completion(format!("</think>\\boxed{{\\text{{{right}}}}}")),
    }
}

#[test]
fn hostile_completions_finish_in_bounded_time_with_one_answer_per_id() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 6);
    let server = MockServer::start(|req, n| hostile_reply(n, &req.last_user()));
    let start = Instant::now();
    let o = solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "4",
            "--concurrency",
            "4",
            "--retries",
            "1",
            "--request-timeout",
            "20",
        ],
    );
    ok(&o);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let t = traces(tmp.path());
    assert_eq!(t.len(), 6, "one trace line per problem");
    let ids: std::collections::BTreeSet<&str> =
        t.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6);
    let sub = submission(tmp.path());
    assert_eq!(sub.len(), 6, "every id answered exactly once");
    // Reasoning-only replies were answered from the reasoning, and said so.
    let from: Vec<&str> = t
        .iter()
        .flat_map(|l| l["samples"].as_array().unwrap())
        .filter_map(|s| s["answer_from"].as_str())
        .collect();
    assert!(
        from.contains(&"reasoning") && from.contains(&"content"),
        "{from:?}"
    );
}

#[test]
fn early_stop_closes_the_streams_still_running() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // Three quick agreeing samples; the fourth streams a token every 50 ms for a minute.
    let server = MockServer::start(|req, n| {
        if n == 3 {
            Reply::Stream(
                vec![delta(Some("tok "), None); 1200],
                Duration::from_millis(50),
            )
        } else {
            Reply::Delay(
                Duration::from_millis(300),
                Box::new(Reply::Completion(format!(
                    "\\boxed{{{}}}",
                    right_answer(&req.last_user())
                ))),
            )
        }
    });
    let start = Instant::now();
    ok(&solve(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "4",
            "--concurrency",
            "4",
        ],
    ));
    let finished = Instant::now();
    assert!(finished - start < Duration::from_secs(20));
    assert_eq!(traces(tmp.path())[0]["stopped"], "settled");
    // The server sees the hang-up within two seconds of the early stop.
    while server.hangups.lock().unwrap().is_empty() && finished.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hangups = server.hangups.lock().unwrap();
    assert_eq!(hangups.len(), 1, "the running stream was not closed");
    assert!(hangups[0] < finished + Duration::from_secs(2));
}

#[test]
fn a_rerun_with_other_settings_is_refused_by_name_and_force_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
    });
    let base = [
        "--input",
        input.to_str().unwrap(),
        "--rag",
        "k=0",
        "--samples",
        "1",
    ];
    ok(&solve(tmp.path(), &server.url, &base));
    let changed = [&base[..], &["--temperature", "0.2"]].concat();
    let o = solve(tmp.path(), &server.url, &changed);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sampling") && err.contains("--force"), "{err}");
    let requests = server.chat_requests().len();
    ok(&solve(
        tmp.path(),
        &server.url,
        &[&changed[..], &["--force"]].concat(),
    ));
    assert_eq!(
        server.chat_requests().len(),
        requests + 2,
        "--force redoes every problem"
    );
    let aside = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".old-")
        })
        .count();
    assert_eq!(aside, 1, "the old traces are kept aside");
}

#[test]
fn a_kill_leaves_a_complete_submission_of_what_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 3);
    let server = MockServer::start(|req, n| {
        let answer = Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())));
        match n {
            0 => answer,
            _ => Reply::Delay(Duration::from_secs(60), Box::new(answer)),
        }
    });
    let mut child = solve_cmd(tmp.path(), &server.url)
        .args([
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
            "--samples",
            "1",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = tmp.path().join("out/submission.csv");
    let start = Instant::now();
    while submission_rows(&path) < 1 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(submission(tmp.path()), vec![("p1".into(), 11)]);
}

fn submission_rows(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(1))
}

#[test]
fn absurd_durations_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    for (flag, value) in [
        ("--time-budget", "-5"),
        ("--backoff", "NaN"),
        ("--request-timeout", "inf"),
        ("--launch-timeout", "1e300"),
    ] {
        let o = solve(
            tmp.path(),
            "http://127.0.0.1:9/v1",
            &[
                "--input",
                input.to_str().unwrap(),
                "--rag",
                "k=0",
                &format!("{flag}={value}"),
            ],
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
    }
}
