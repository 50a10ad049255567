//! Memory forms (`--rag format=problem|insight`), `solve distill`, `--exclude` and the twin count
//! of `embed eval-retrieval`, against scripted servers whose replies depend on what the prompt
//! holds, and `solve distill` against a real llama-server.

use crate::util::llama::LlamaServer;
use crate::util::server::{MockServer, Reply};
use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A corpus of `(id, problem, solution, answer, insight)` records as `dir/corpus.jsonl`.
fn corpus(dir: &Path, records: &[(&str, &str, &str, &str, Option<&str>)]) -> PathBuf {
    let lines: Vec<String> = records
        .iter()
        .map(|(id, p, s, a, i)| {
            let mut r = json!({"id": id, "problem": p, "solution": s, "answer": a, "topic": "t"});
            if let Some(i) = i {
                r["insight"] = json!(i);
            }
            r.to_string()
        })
        .collect();
    write_lines(dir.join("corpus.jsonl"), &lines)
}

/// Three solved problems: two with insights, one without.
fn memory_corpus(dir: &Path) -> PathBuf {
    corpus(
        dir,
        &[
            (
                "r1",
                "How many apples are in five baskets of one apple each?",
                "SOLUTION-ONE: count them, \\boxed{5}.",
                "5",
                Some("INSIGHT-ONE: count by groups."),
            ),
            (
                "r2",
                "What is the sum of the first three odd numbers?",
                "SOLUTION-TWO: 1+3+5 = \\boxed{9}.",
                "9",
                Some("INSIGHT-TWO: odd sums are squares."),
            ),
            (
                "r3",
                "How many sides do eleven heptagons have in all?",
                "SOLUTION-THREE: 11*7 = \\boxed{77}.",
                "77",
                None,
            ),
        ],
    )
}

/// A server that answers right only when `good(prompt)` holds for the whole request body.
fn judging_server(good: fn(&str) -> bool) -> MockServer {
    MockServer::start(move |req, _| {
        let body = req.body["messages"].to_string();
        let answer = if good(&body) {
            right_answer(&req.last_user())
        } else {
            0
        };
        Reply::Completion(format!("So \\boxed{{{answer}}}."))
    })
}

fn user_text(t: &Value) -> String {
    t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn format_insight_sends_insights_not_solutions_and_says_which_fell_back() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tiny_index(tmp.path(), &memory_corpus(tmp.path()));
    let input = problems(tmp.path(), 2);
    let server = judging_server(|b| {
        b.contains("INSIGHT-ONE") && b.contains("INSIGHT-TWO") && !b.contains("SOLUTION-")
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
            "k=3,format=insight",
            "--samples",
            "1",
        ],
    );
    let log = ok(&o);
    assert_eq!(
        submission(tmp.path()),
        vec![("p1".into(), 11), ("p2".into(), 22)]
    );
    for t in traces(tmp.path()) {
        let r = t["retrieved"].as_array().unwrap();
        assert_eq!(r.len(), 3);
        let fell: Vec<&Value> = r.iter().filter(|r| r["no_insight"] == true).collect();
        assert_eq!(fell.len(), 1, "{r:?}");
        assert_eq!(fell[0]["id"], "r3");
        // The record without an insight is shown as `problem`: its answer, no solution.
        let user = user_text(&t);
        assert!(user.contains("Final answer: 77"), "{user}");
        assert!(
            !user.contains("SOLUTION-") && !user.contains("Final answer: 5"),
            "{user}"
        );
        // One user message: the reference block, then the problem.
        assert_eq!(t["messages"].as_array().unwrap().len(), 2);
    }
    assert!(
        log.contains(
            "format=insight: 2 of 6 neighbours had no insight and were sent as format=problem"
        ),
        "{log}"
    );
}

#[test]
fn format_problem_sends_problems_and_answers_without_solutions() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tiny_index(tmp.path(), &memory_corpus(tmp.path()));
    let input = problems(tmp.path(), 2);
    let server = judging_server(|b| {
        b.contains("Final answer: 5")
            && b.contains("Final answer: 9")
            && b.contains("heptagons")
            && !b.contains("SOLUTION-")
            && !b.contains("INSIGHT-")
    });
    let run = |dir: &Path, format: &str| {
        std::fs::create_dir_all(dir).unwrap();
        let rag = format!("k=3,format={format}");
        ok(&solve(
            dir,
            &server.url,
            &[
                "--input",
                input.to_str().unwrap(),
                "--index",
                idx.to_str().unwrap(),
                "--rag",
                &rag,
                "--samples",
                "1",
            ],
        ));
        submission(dir)
    };
    assert_eq!(
        run(&tmp.path().join("problem"), "problem"),
        vec![("p1".into(), 11), ("p2".into(), 22)]
    );
    // The same server judges `context` (solutions shown) wrong: the check above is not vacuous.
    assert_eq!(
        run(&tmp.path().join("context"), "context"),
        vec![("p1".into(), 0), ("p2".into(), 0)]
    );
}

/// Problems long enough for word 5-grams to tell a copy from a look-alike.
fn long_problems(dir: &Path) -> PathBuf {
    let lines: Vec<String> = (1..=2)
        .map(|i| json!({"id": format!("p{i}"), "problem": long_problem(i), "answer": (11 * i).to_string()}).to_string())
        .collect();
    write_lines(dir.join("test.jsonl"), &lines)
}

fn long_problem(i: usize) -> String {
    format!("Problem number {i}: a farmer keeps sheep and goats in a large green field near the river; what is {i} times eleven?")
}

#[test]
fn exclude_removes_a_planted_twin_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = long_problem(1).to_uppercase().replace(';', " --  ");
    let paraphrase = format!("{} Explain your reasoning.", long_problem(2));
    let mut records = vec![
        ("c-copy", copy.as_str(), "TWIN-TEXT \\boxed{11}", "11", None),
        (
            "p2",
            "A note about apples and pears in a basket.",
            "TWIN-ID \\boxed{1}",
            "1",
            None,
        ),
        (
            "c-para",
            paraphrase.as_str(),
            "TWIN-OVERLAP \\boxed{22}",
            "22",
            None,
        ),
    ];
    let others: Vec<(String, String)> = (0..4)
        .map(|k| {
            (
                format!("o{k}"),
                format!("Other problem {k}: how many rivers cross {k} valleys?"),
            )
        })
        .collect();
    for (id, o) in &others {
        records.push((id.as_str(), o.as_str(), "fine \\boxed{3}", "3", None));
    }
    let idx = tiny_index(tmp.path(), &corpus(tmp.path(), &records));
    let input = long_problems(tmp.path());
    let server = judging_server(|b| !b.contains("TWIN-"));
    let run = |name: &str, extra: &[&str]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=7,format=context",
            "--samples",
            "1",
        ];
        args.extend_from_slice(extra);
        let log = ok(&solve(&dir, &server.url, &args));
        (dir, log)
    };
    // Without --exclude the twins are retrieved (and the server says so with wrong answers).
    let (dir, _) = run("plain", &[]);
    assert_eq!(submission(&dir), vec![("p1".into(), 0), ("p2".into(), 0)]);

    let (dir, log) = run("excluded", &["--exclude", input.to_str().unwrap()]);
    assert_eq!(submission(&dir), vec![("p1".into(), 11), ("p2".into(), 22)]);
    assert!(
        log.contains("3 index records are the same problem as one of its 2 problems (1 same id, 1 same text, 1 word 5-gram overlap >= 0.5)"),
        "{log}"
    );
    assert!(
        log.contains("6 retrieved hits left out as the same problem"),
        "{log}"
    );
    for t in traces(&dir) {
        assert_eq!(t["retrieved"].as_array().unwrap().len(), 4);
        let reasons: Vec<String> = t["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["id"].as_str().unwrap(),
                    e["reason"].as_str().unwrap()
                )
            })
            .collect();
        let mut sorted = reasons.clone();
        sorted.sort();
        assert_eq!(sorted.len(), 3, "{reasons:?}");
        assert_eq!(sorted[0], "c-copy: same text as p1");
        assert!(
            sorted[1].starts_with("c-para: word 5-gram overlap 0.8"),
            "{sorted:?}"
        );
        assert_eq!(sorted[2], "p2: same id as p2");
        assert!(!user_text(&t).contains("TWIN-"));
    }
    // A different threshold is a different run: resuming it is refused by name.
    let o = solve(
        &dir,
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=7,format=context",
            "--samples",
            "1",
            "--exclude",
            input.to_str().unwrap(),
            "--exclude-overlap",
            "0.9",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exclude"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn eval_retrieval_counts_queries_with_a_twin_in_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "A farmer keeps sheep and goats in a large green field near the quiet river bend.",
        "Find the remainder when two to the hundredth power is divided by seven today.",
        "A circle of radius three is inscribed in a square drawn on the classroom board.",
        "How many ways can five distinct books be arranged on one long wooden shelf?",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("c{i}"), "problem": t, "topic": "t"}).to_string())
        .collect();
    let idx = tiny_index(
        tmp.path(),
        &write_lines(tmp.path().join("corpus.jsonl"), &lines),
    );
    let queries = [
        json!({"id": "c0", "problem": "a different text, same id", "topic": "t"}),
        json!({"id": "q1", "problem": texts[1].to_uppercase(), "topic": "t"}),
        json!({"id": "q2", "problem": format!("{} Give the area outside the circle.", texts[2]), "topic": "t"}),
        json!({"id": "q3", "problem": "How many ways can five distinct pens be put into three cups?", "topic": "t"}),
        json!({"id": "q4", "problem": "Unlabelled, and a copy of the last one: How many ways can five distinct books be arranged on one long wooden shelf?"}),
    ];
    let q = write_lines(
        tmp.path().join("queries.jsonl"),
        &queries.iter().map(Value::to_string).collect::<Vec<_>>(),
    );
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "eval-retrieval",
            "--index",
            idx.to_str().unwrap(),
            "--queries",
            q.to_str().unwrap(),
            "-k",
            "2",
            "--label",
            "topic",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        embed_ok(&a.iter().map(String::as_str).collect::<Vec<_>>()).0
    };
    let r: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    // q4's 5-gram overlap with c3 is 11/14: a twin although it has no label.
    assert_eq!(r["queries_with_twin"], 4, "{r}");
    assert_eq!(
        r["twins"],
        json!({"same_id": 1, "same_text": 1, "overlap": 2})
    );
    let table = run(&[]);
    assert!(table.contains("twins: 4 queries have the same problem in the corpus (1 same id, 1 same text, 2 word 5-gram overlap >= 0.5)"), "{table}");
    let strict: Value = serde_json::from_str(&run(&["--json", "--twin-overlap", "0.8"])).unwrap();
    assert_eq!(strict["twins"]["overlap"], 0, "{strict}");
}

// ---------------------------------------------------------------- distill

/// `solve distill` with these arguments (quiet, quick retries); $EXEMPLAR_ENDPOINT removed.
fn distill_cmd(endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(solve_bin());
    c.args([
        "distill",
        "--endpoint",
        endpoint,
        "--quiet",
        "--backoff",
        "0.01",
    ])
    .args(args)
    .env_remove("EXEMPLAR_ENDPOINT");
    c
}

fn distill(endpoint: &str, args: &[&str]) -> Output {
    distill_cmd(endpoint, args).output().unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A reply naming the record by the first words of its problem; the first sample problem's
/// reply restates its answer (36).
fn memo(req: &crate::util::server::Request) -> String {
    let user = req.last_user();
    let problem = user.split("Problem:\n").nth(1).unwrap_or("").trim_start();
    let head: Vec<&str> = problem.split_whitespace().take(4).collect();
    let leak = if problem.starts_with("The perimeter of a rectangle is 24") {
        " The area peaks at 36 here."
    } else {
        ""
    };
    format!(
        "<think>let me see</think>Key idea: MEMO {}.{leak}\nTechnique: algebra.\nTrap: signs.",
        head.join(" ")
    )
}

#[test]
fn distill_writes_insights_that_reach_the_index_and_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 5);
    let server = MockServer::start(|req, _| Reply::Completion(memo(req)));
    let o = distill(
        &server.url,
        &["--input", input.to_str().unwrap(), "--words", "40"],
    );
    let log = ok(&o);
    assert!(log.contains("5 records: 5 distilled now, 0 from earlier runs, 0 failed, 0 not started; 1 replies restated the final answer"), "{log}");

    // One request per record, holding its problem and solution and the word limit.
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 5);
    let originals: Vec<Value> = read_jsonl(&input);
    for o in &originals {
        let asked = reqs
            .iter()
            .find(|r| r.last_user().contains(o["problem"].as_str().unwrap()))
            .expect("asked");
        assert!(asked.last_user().contains(o["solution"].as_str().unwrap()));
        assert!(asked.last_user().contains("at most 40 words"));
    }
    let out = tmp.path().join("corpus.insights.jsonl");
    let rows = read_jsonl(&out);
    assert_eq!(rows.len(), 5);
    for (row, orig) in rows.iter().zip(&originals) {
        for (k, v) in orig.as_object().unwrap() {
            assert_eq!(&row[k], v, "field {k} kept");
        }
        let insight = row["insight"].as_str().unwrap();
        assert!(
            insight.starts_with("Key idea: MEMO") && !insight.contains("think"),
            "{insight}"
        );
    }
    assert!(
        rows[0]["insight"]
            .as_str()
            .unwrap()
            .contains("peaks at [answer] here"),
        "{}",
        rows[0]["insight"]
    );
    let log_lines = read_jsonl(&tmp.path().join("corpus.insights.jsonl.distill.jsonl"));
    assert_eq!(log_lines.len(), 6, "settings line + one per record");
    assert_eq!(
        log_lines[1..].iter().filter(|e| e["redacted"] == 1).count(),
        1
    );

    // A re-run has nothing to do.
    let log = ok(&distill(
        &server.url,
        &["--input", input.to_str().unwrap(), "--words", "40"],
    ));
    assert!(
        log.contains("0 distilled now, 5 from earlier runs"),
        "{log}"
    );
    assert_eq!(server.chat_requests().len(), 5);
    // Other settings are refused by name.
    let o = distill(
        &server.url,
        &["--input", input.to_str().unwrap(), "--words", "20"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("words differs"));

    // extract + index build carry the field; format=insight sends it.
    let idx = tiny_index(tmp.path(), &out);
    let records = exemplar::index::Index::load(&idx)
        .unwrap()
        .records()
        .unwrap();
    assert!(records
        .iter()
        .all(|r| r["insight"].as_str().is_some_and(|i| i.contains("MEMO"))));
    let input_problems = problems(tmp.path(), 1);
    let solver = judging_server(|b| b.contains("Key idea: MEMO") && !b.contains("Solution:"));
    ok(&solve(
        tmp.path(),
        &solver.url,
        &[
            "--input",
            input_problems.to_str().unwrap(),
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=2,format=insight",
            "--samples",
            "1",
        ],
    ));
    assert_eq!(submission(tmp.path()), vec![("p1".into(), 11)]);
}

#[test]
fn distill_records_failures_and_a_rerun_retries_only_them() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 4);
    let out = tmp.path().join("memories.jsonl");
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let flaky = MockServer::start(|req, _| {
        if req.last_user().contains("3p+4q=8") {
            Reply::Status(400, r#"{"error": "refused for the test"}"#.into())
        } else {
            Reply::Completion(memo(req))
        }
    });
    let o = distill(&flaky.url, &args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 records have no insight yet (1 failed: math/train/algebra/7: "),
        "{err}"
    );
    assert!(
        err.contains("refused for the test") && err.contains("re-run the same command"),
        "{err}"
    );
    let rows = read_jsonl(&out);
    assert_eq!(
        rows.iter().filter(|r| r["insight"].is_null()).count(),
        1,
        "written anyway"
    );

    let good = MockServer::start(|req, _| Reply::Completion(memo(req)));
    let log = ok(&distill(&good.url, &args));
    assert!(
        log.contains("1 distilled now, 3 from earlier runs"),
        "{log}"
    );
    assert_eq!(good.chat_requests().len(), 1);
    assert!(good.chat_requests()[0].last_user().contains("3p+4q=8"));
    assert!(read_jsonl(&out).iter().all(|r| r["insight"].is_string()));
}

#[test]
fn distill_resumes_after_a_kill_without_losing_or_repeating_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 12);
    let out = tmp.path().join("memories.jsonl");
    let log_path = tmp.path().join("memories.jsonl.distill.jsonl");
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--concurrency",
        "2",
    ];
    let slow = MockServer::start(|req, _| {
        if req.last_user().contains("3p+4q=8") {
            return Reply::Status(400, "no".into());
        }
        Reply::Delay(
            Duration::from_millis(300),
            Box::new(Reply::Completion(memo(req))),
        )
    });
    let mut child = distill_cmd(&slow.url, &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let entries =
        || std::fs::read_to_string(&log_path).map_or(0, |t| t.lines().count().saturating_sub(1));
    while entries() < 5 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "killed before the output was written");
    let logged = read_jsonl(&log_path);
    let succeeded = logged[1..]
        .iter()
        .filter(|e| e["insight"].is_string())
        .count();
    assert!(
        succeeded < 12 && logged[1..].iter().any(|e| e["error"].is_string()),
        "{logged:?}"
    );

    let fast = MockServer::start(|req, _| Reply::Completion(memo(req)));
    let log = ok(&distill(&fast.url, &args));
    assert!(
        log.contains(&format!("{} from earlier runs", succeeded)),
        "{log}"
    );
    // Only what had no insight was asked again (the failed record among them).
    let asked = fast.chat_requests();
    assert_eq!(asked.len(), 12 - succeeded);
    assert!(asked.iter().any(|r| r.last_user().contains("3p+4q=8")));
    let rows = read_jsonl(&out);
    let want: Vec<Value> = read_jsonl(&input).iter().map(|r| r["id"].clone()).collect();
    let got: Vec<Value> = rows.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(got, want, "every record once, in input order");
    assert!(rows
        .iter()
        .all(|r| r["insight"].as_str().is_some_and(|i| i.contains("MEMO"))));
}

#[test]
fn distill_writes_parquet_and_keeps_a_parquet_input_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 3);
    let server =
        MockServer::start(|req, n| Reply::Completion(format!("{} run{}", memo(req), n / 3)));
    let pq = tmp.path().join("memories.parquet");
    ok(&distill(
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--out",
            pq.to_str().unwrap(),
        ],
    ));
    let rows = exemplar::index::read_records(&pq).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["answer_int"], 36, "integers stay integers");
    assert_eq!(rows[1]["answer_int"], Value::Null);
    assert!(
        rows[0]["meta"].as_str().unwrap().contains("unique_id"),
        "objects as JSON text"
    );
    assert!(rows
        .iter()
        .all(|r| r["insight"].as_str().unwrap().ends_with("run0")));

    // Parquet in, Parquet out (default name): the insight column replaced, the rest as it was.
    ok(&distill(&server.url, &["--input", pq.to_str().unwrap()]));
    let again =
        exemplar::index::read_records(&tmp.path().join("memories.insights.parquet")).unwrap();
    for (a, b) in again.iter().zip(&rows) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for k in b.keys().filter(|k| *k != "insight") {
            assert_eq!(a[k], b[k]);
        }
        assert!(a["insight"].as_str().unwrap().ends_with("run1"));
    }
}

#[test]
fn distill_refuses_what_cannot_work() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 2);
    let template = write_lines(
        tmp.path().join("t.txt"),
        &["Summarise {problem}".to_string()],
    );
    let err = run_err(distill_cmd(
        "http://127.0.0.1:9/v1",
        &[
            "--input",
            input.to_str().unwrap(),
            "--template",
            template.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("no {solution} placeholder"), "{err}");
    let err = run_err(distill_cmd(
        "http://127.0.0.1:9/v1",
        &["--input", input.to_str().unwrap(), "--out", "x.csv"],
    ));
    assert!(err.contains("expected a .jsonl or .parquet"), "{err}");
    let bare = write_lines(
        tmp.path().join("bare.jsonl"),
        &[json!({"id": 1, "problem": "q"}).to_string()],
    );
    let err = run_err(distill_cmd(
        "http://127.0.0.1:9/v1",
        &["--input", bare.to_str().unwrap()],
    ));
    assert!(
        err.contains("no solution field found") && err.contains("--solution-field"),
        "{err}"
    );
}

#[test]
fn distill_against_a_real_llama_server_writes_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 3);
    let server = LlamaServer::start(4096, 2, &[]);
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--model",
        "smollm2",
        "--max-tokens",
        "48",
        "--words",
        "30",
        "--concurrency",
        "2",
    ];
    let log = ok(&distill(&server.endpoint(), &args));
    assert!(log.contains("3 distilled now"), "{log}");
    let rows = read_jsonl(&tmp.path().join("corpus.insights.jsonl"));
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["insight"].as_str().is_some_and(|i| !i.trim().is_empty())),
        "{rows:?}"
    );
    let log = ok(&distill(&server.endpoint(), &args));
    assert!(
        log.contains("0 distilled now, 3 from earlier runs"),
        "{log}"
    );
}
