//! The solving loop of the AIMO 3 winners (issue 23) against a scripted server that returns
//! token log-probs, streamed and whole: entropy-weighted votes, `--stop-at`, the
//! `--problem-time` clamp, `--select genselect` on split votes, and a server without log-probs.
//! One run against the real llama-server checks that it streams log-probs.

use crate::util::llama::LlamaServer;
use crate::util::server::{
    completion_with_logprobs, delta, delta_with_logprobs, finish, MockServer, Reply,
};
use crate::util::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens nearly certain: entropy of (0.95, 0.05) = 0.199 nats.
const SURE: [f64; 2] = [-0.051_293_294_387_550_5, -2.995_732_273_553_991];
/// Tokens spread over five alternatives: entropy ln 5 = 1.609 nats.
const UNSURE: [f64; 5] = [-1.609_437_912_434_100_3; 5];

fn entropy_of(top: &[f64]) -> f64 {
    let z: f64 = top.iter().map(|l| l.exp()).sum();
    top.iter().map(|l| l.exp() / z).map(|p| -p * p.ln()).sum()
}

/// `text` with log-probs `top` per token: whole (even `form`) or streamed in three chunks.
fn scored_reply(form: usize, text: &str, top: &[f64]) -> Reply {
    if form.is_multiple_of(2) {
        return completion_with_logprobs(text, 4, top);
    }
    let third = text.len() / 3;
    let parts = [&text[..third], &text[third..2 * third], &text[2 * third..]];
    let mut events: Vec<String> = parts.iter().map(|p| delta_with_logprobs(p, top)).collect();
    events.push(finish("stop"));
    Reply::Stream(events, Duration::from_millis(5))
}

/// `solve` on one problem with `samples` in sequence; the chat requests answer `order` in turn
/// (alternately whole and streamed). The trace line and the log.
fn vote(order: &'static [(u64, &'static [f64])], extra: &[&str]) -> (Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    let n = AtomicUsize::new(0);
    let server = MockServer::start(move |_, _| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let (answer, top) = order[i % order.len()];
        scored_reply(
            i,
            &format!("<think>so</think>It is \\boxed{{{answer}}}."),
            top,
        )
    });
    let samples = order.len().to_string();
    let mut args = vec!["--input", input.to_str().unwrap(), "--rag", "k=0"];
    args.extend(["--samples", &samples, "--concurrency", "1", "--eval"]);
    args.extend(extra);
    let log = ok(&solve(tmp.path(), &server.url, &args));
    for r in server.chat_requests() {
        assert_eq!(r.body["logprobs"], true, "log-probs are asked for");
        assert_eq!(r.body["top_logprobs"], 5);
    }
    (traces(tmp.path()).remove(0), log)
}

const MINORITY: &[(u64, &[f64])] = &[(3, &SURE), (7, &UNSURE), (7, &UNSURE)];
const TIED: &[(u64, &[f64])] = &[(7, &UNSURE), (3, &SURE)];

#[test]
fn a_confident_minority_beats_an_unsure_majority_by_entropy() {
    let (t, log) = vote(MINORITY, &["--vote", "entropy"]);
    assert_eq!(t["answer"], 3, "{}", t["vote"]);
    assert_eq!(t["vote_rule"], "entropy");
    // Each sample's mean entropy and log-prob, from whole and streamed replies alike.
    let samples = t["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    for (s, (_, top)) in samples.iter().zip(MINORITY) {
        let c = &s["confidence"];
        let h = c["mean_entropy"].as_f64().unwrap();
        assert!((h - entropy_of(top)).abs() < 1e-9, "{c}");
        assert!((c["mean_logprob"].as_f64().unwrap() - top[0]).abs() < 1e-9);
        assert_eq!(c["top_k"], top.len());
        assert!(c["tokens"].as_u64().unwrap() >= 3);
    }
    // Weight 1/H: 3 has 1/0.199 = 5.0, 7 has 2/1.609 = 1.24.
    let three = &t["vote"][0];
    assert_eq!(
        (three["answer"].as_u64(), three["votes"].as_u64()),
        (Some(3), Some(1))
    );
    assert!((three["weight"].as_f64().unwrap() - 1.0 / entropy_of(&SURE)).abs() < 1e-6);
    assert!(three["mean_entropy"].as_f64().unwrap() < 0.2);
    assert!(log.contains("vote entropy (applied: entropy 1)"), "{log}");
    assert!(log.contains("log-probs on 3/3 samples"), "{log}");
}

#[test]
fn count_then_entropy_keeps_the_majority_and_breaks_ties_by_entropy() {
    let (t, _) = vote(MINORITY, &["--vote", "count-then-entropy"]);
    assert_eq!(
        (t["answer"].as_u64(), t["vote_rule"].as_str()),
        (Some(7), Some("count-then-entropy"))
    );
    // The default with log-probs is count-then-entropy.
    let (t, _) = vote(MINORITY, &[]);
    assert_eq!(
        (t["answer"].as_u64(), t["vote_rule"].as_str()),
        (Some(7), Some("count-then-entropy"))
    );
    // One vote each: the surer answer wins, although 7 came first...
    let (t, _) = vote(TIED, &[]);
    assert_eq!(t["answer"], 3, "{}", t["vote"]);
    // ...where the majority rule gives the tie to the first.
    let (t, _) = vote(TIED, &["--vote", "majority"]);
    assert_eq!(
        (t["answer"].as_u64(), t["vote_rule"].as_str()),
        (Some(7), Some("majority"))
    );
}

#[test]
fn stop_at_four_stops_after_the_fourth_agreement_and_cancels_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // Four quick agreeing answers; the other four stream without end.
    let n = AtomicUsize::new(0);
    let server = MockServer::start(move |_, _| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        if i < 4 {
            let text = "<think>ok</think>\\boxed{7}";
            Reply::Delay(
                Duration::from_millis(200 * (i as u64 + 1)),
                Box::new(scored_reply(i, text, &SURE)),
            )
        } else {
            let events = vec![delta_with_logprobs("hmm ", &UNSURE); 600];
            Reply::Stream(events, Duration::from_millis(50))
        }
    });
    let start = Instant::now();
    let args = ["--input", input.to_str().unwrap(), "--rag", "k=0"];
    let more = [
        "--samples",
        "8",
        "--concurrency",
        "8",
        "--stop-at",
        "4",
        "--eval",
    ];
    let log = ok(&solve(
        tmp.path(),
        &server.url,
        &[&args[..], &more].concat(),
    ));
    let finished = Instant::now();
    assert!(finished - start < Duration::from_secs(15));
    let t = &traces(tmp.path())[0];
    assert_eq!(t["stopped"], "stop-at");
    assert_eq!(t["answer"], 7);
    let vote = t["vote"].as_array().unwrap();
    assert_eq!(
        (vote.len(), &vote[0]["answer"], &vote[0]["votes"]),
        (1, &7.into(), &4.into())
    );
    assert_eq!(t["samples"].as_array().unwrap().len(), 4);
    assert_eq!(server.chat_requests().len(), 8, "8 in flight at once");
    // The four still streaming are closed at once.
    while server.hangups.lock().unwrap().len() < 4 && finished.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hangups = server.hangups.lock().unwrap();
    assert_eq!(hangups.len(), 4, "the running streams were not all closed");
    assert!(hangups
        .iter()
        .all(|h| *h < finished + Duration::from_secs(2)));
    assert!(log.contains("stopped: stop-at 1"), "{log}");
}

/// A server whose every sample streams for a minute without an answer.
fn endless_server() -> MockServer {
    MockServer::start(|_, _| {
        Reply::Stream(
            vec![delta(Some("x "), None); 600],
            Duration::from_millis(100),
        )
    })
}

/// `solve` on `n` problems within `budget`, each clamped to `clamp`; the trace lines.
fn clamped_run(n: usize, budget: &str, clamp: &str) -> (Vec<Value>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), n);
    let server = endless_server();
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--rag",
        "k=0",
        "--samples",
        "2",
    ];
    let more = ["--time-budget", budget, "--problem-time", clamp, "--eval"];
    let log = ok(&solve(
        tmp.path(),
        &server.url,
        &[&args[..], &more].concat(),
    ));
    (traces(tmp.path()), log)
}

#[test]
fn the_problem_time_clamp_holds_within_a_second_on_a_slow_server() {
    // 30 s over 3 problems would be 10 s each; at most 3 s.
    let (t, log) = clamped_run(3, "30s", "2s..3s");
    assert_eq!(t.len(), 3);
    for line in &t {
        assert_eq!(line["stopped"], "deadline");
        assert!(
            (line["planned_seconds"].as_f64().unwrap() - 3.0).abs() < 0.05,
            "{}",
            line["planned_seconds"]
        );
        let used = line["seconds"].as_f64().unwrap();
        assert!((used - 3.0).abs() < 1.0, "used {used} s of 3");
    }
    assert!(log.contains("time: planned 9.0 s"), "{log}");
    assert!(
        log.contains("time planned/used s (--problem-time 2s..3s): total 9.0/"),
        "{log}"
    );
    // 5 s over 4 problems would be 1.25 s each; at least 2 s while time is left.
    let (t, _) = clamped_run(4, "5s", "2s..3s");
    let planned: Vec<f64> = t
        .iter()
        .map(|l| l["planned_seconds"].as_f64().unwrap())
        .collect();
    for (line, p) in t.iter().zip(&planned).take(2) {
        assert!((p - 2.0).abs() < 0.05, "{planned:?}");
        assert!((line["seconds"].as_f64().unwrap() - 2.0).abs() < 1.0);
    }
    assert!(
        planned[2] < 1.5 && planned[3] < 0.5,
        "never beyond the time left: {planned:?}"
    );
    let used: f64 = t.iter().map(|l| l["seconds"].as_f64().unwrap()).sum();
    assert!(used < 6.0, "the budget holds: {used}");
}

/// The number of the candidate solution in a GenSelect request whose answer is `answer`.
fn candidate_with(request: &str, answer: u64) -> usize {
    let boxed = format!("\\boxed{{{answer}}}");
    request
        .split("### Solution ")
        .skip(1)
        .find(|s| s.contains(&boxed))
        .and_then(|s| s.split('\n').next()?.trim().parse().ok())
        .unwrap()
}

#[test]
fn genselect_runs_only_on_split_votes_and_its_choice_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    // p1: every sample right. p2: 99 (wrong) and 22 (right) split 2:2, 99 first to 2.
    let per_problem = Mutex::new(HashMap::<u64, usize>::new());
    let server = MockServer::start(move |req, _| {
        let user = req.last_user();
        if user.contains("candidate solutions") {
            let pick = candidate_with(&user, 22);
            return Reply::Completion(format!(
                "<think>Solution {pick} checks out.</think>Judgment: {pick}"
            ));
        }
        let right = right_answer(&user);
        let mut seen = per_problem.lock().unwrap();
        let i = seen.entry(right).or_default();
        *i += 1;
        let answer = match (right, *i % 2) {
            (22, 1) => 99,
            _ => right,
        };
        Reply::Completion(format!(
            "<think>work</think>Multiplying out, the product is \\boxed{{{answer}}}."
        ))
    });
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--rag",
        "k=0",
        "--top-logprobs",
        "0",
    ];
    let more = [
        "--samples",
        "4",
        "--concurrency",
        "1",
        "--select",
        "genselect",
        "--eval",
    ];
    let log = ok(&solve(
        tmp.path(),
        &server.url,
        &[&args[..], &more].concat(),
    ));
    let selections: Vec<_> = server
        .chat_requests()
        .into_iter()
        .filter(|r| r.last_user().contains("candidate solutions"))
        .collect();
    assert_eq!(
        selections.len(),
        1,
        "only the split vote goes to the selector"
    );
    let asked = selections[0].last_user();
    assert!(asked.contains("Problem number 2") && asked.contains("Final answer: \\boxed{99}"));
    assert!(
        selections[0].body.get("logprobs").is_none(),
        "--top-logprobs 0 asks for none"
    );
    let t = traces(tmp.path());
    let clear = &t[0]["select"];
    assert_eq!(clear["ran"], false);
    assert_eq!(clear["skipped"], "one answer only");
    let s = &t[1]["select"];
    assert_eq!(s["ran"], true, "{s}");
    assert_eq!(s["vote_answer"], 99);
    assert_eq!(s["margin"], 0.0);
    let shown: Vec<u64> = s["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["answer"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, vec![99, 22]);
    assert_eq!(
        (
            s["judgment"].as_u64(),
            s["chosen"].as_u64(),
            s["changed"].as_bool()
        ),
        (Some(1), Some(22), Some(true))
    );
    assert!(s["text"].as_str().unwrap().contains("Judgment: 1"));
    assert_eq!(
        s["messages"].as_array().unwrap().len(),
        2,
        "system and the request"
    );
    assert_eq!(
        (t[1]["answer"].as_u64(), t[1]["correct"].as_bool()),
        (Some(22), Some(true))
    );
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 22)]
    );
    assert!(log.contains("| rag | k=0 | 1.000 | 2 |"), "{log}");
    assert!(
        log.contains("| 0.500 |"),
        "the unweighted majority had p2 wrong: {log}"
    );
    assert!(
        log.contains("selector genselect (margin < 0.3): ran 1, changed 1, changed and right 1, changed a right vote 0, right when ran 1/1"),
        "{log}"
    );
}

#[test]
fn a_server_without_logprobs_degrades_to_the_majority_with_one_message() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
    });
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--rag",
        "k=0",
        "--samples",
        "2",
    ];
    let log = ok(&solve(
        tmp.path(),
        &server.url,
        &[&args[..], &["--vote", "entropy"]].concat(),
    ));
    assert_eq!(
        log.matches("log-probs: the server returned none").count(),
        1,
        "{log}"
    );
    for t in traces(tmp.path()) {
        assert_eq!(t["vote_rule"], "majority");
        assert!(t["samples"][0].get("confidence").is_none());
        assert_eq!(t["correct"], true);
    }
}

#[test]
fn a_server_refusing_logprobs_is_asked_without_them_with_one_message() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    let server = MockServer::start(|req, _| match req.body.get("logprobs") {
        Some(_) => Reply::Status(
            400,
            r#"{"error":{"message":"logprobs is not supported by this model"}}"#.into(),
        ),
        None => Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user()))),
    });
    let args = ["--input", input.to_str().unwrap(), "--rag", "k=0"];
    let log = ok(&solve(
        tmp.path(),
        &server.url,
        &[&args[..], &["--samples", "2", "--concurrency", "1"]].concat(),
    ));
    assert_eq!(
        log.matches("log-probs: the server refused them (HTTP 400")
            .count(),
        1,
        "{log}"
    );
    let asked = server
        .chat_requests()
        .iter()
        .filter(|r| r.body.get("logprobs").is_some())
        .count();
    assert_eq!(asked, 1, "asked once, then never again");
    for t in traces(tmp.path()) {
        assert_eq!(
            (t["vote_rule"].as_str(), t["correct"].as_bool()),
            (Some("majority"), Some(true))
        );
        assert_eq!(
            t["samples"][0]["attempts"], 1,
            "the refusal costs no attempt"
        );
    }
}

#[test]
fn a_real_llama_server_streams_logprobs_and_the_entropies_reach_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_lines(tmp.path().join("p.jsonl"), &sample_lines("test.jsonl", 1));
    let server = LlamaServer::start(4096, 2, &[]);
    let o = solve_cmd(tmp.path(), &server.endpoint())
        .args([
            "--model",
            "smollm2",
            "--input",
            input.to_str().unwrap(),
            "--rag",
            "k=0",
        ])
        .args([
            "--samples",
            "2",
            "--concurrency",
            "2",
            "--max-tokens",
            "24",
            "--eval",
        ])
        .output()
        .unwrap();
    let log = ok(&o);
    let t = &traces(tmp.path())[0];
    let samples = t["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{t}");
    for s in samples {
        let c = &s["confidence"];
        let h = c["mean_entropy"].as_f64().unwrap_or(f64::NAN);
        assert!(
            h.is_finite() && (0.0..=5f64.ln() + 1e-9).contains(&h),
            "{s}"
        );
        assert!(c["mean_logprob"].as_f64().unwrap() < 0.0, "{c}");
        assert_eq!(c["top_k"], 5);
        // Every streamed token came with its log-prob; llama.cpp sends the byte pieces of one
        // character (" ≡" is two tokens) as one entry, so a sample may count a few fewer.
        let (n, done) = (
            c["tokens"].as_u64().unwrap(),
            s["completion_tokens"].as_u64().unwrap(),
        );
        assert!(n <= done && 4 * n >= 3 * done, "{s}");
    }
    assert!(!log.contains("log-probs: the server"), "{log}");
    assert!(log.contains("log-probs on 2/2 samples"), "{log}");
}
