//! `solve --tools python`, `--think-budget` and `--serve` against the scripted server: the
//! model's code runs in the sandbox and its output reaches the next request; what the sandbox
//! promises to contain is contained (and what it reports matches what happened).

use crate::util::llama::LlamaServer;
use crate::util::server::{delta, MockServer, Reply, Request};
use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `solve` against the scripted server without retrieval.
fn solve_k0(dir: &Path, server: &str, extra: &[&str]) -> Output {
    solve(dir, server, &[&["--rag", "k=0"], extra].concat())
}

/// The trailing assistant message of a continuation request.
fn prefill(req: &Request) -> Option<String> {
    let m = req.body["messages"].as_array()?.last()?;
    (m["role"] == "assistant").then(|| m["content"].as_str().unwrap_or("").to_string())
}

/// How many tool outputs the request's prefill holds (= the round of the sample).
fn round(req: &Request) -> usize {
    prefill(req).map_or(0, |p| p.matches("```output").count())
}

/// A stream of content deltas, then a long tail a client that stops at the fence never reads.
fn stream_then_tail(parts: &[&str]) -> Reply {
    let mut events: Vec<String> = parts.iter().map(|p| delta(Some(p), None)).collect();
    events.extend((0..300).map(|_| delta(Some(" SHOULD NOT BE SEEN"), None)));
    Reply::Stream(events, Duration::from_millis(10))
}

fn code_block(code: &str) -> String {
    format!("```python\n{code}\n```")
}

/// Live processes of a process group, from /proc (zombies waiting for init do not count).
fn group_members(pgid: i64) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
        })
        .collect()
}

#[test]
fn sandbox_output_reaches_the_next_request_and_state_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    let server = MockServer::start(|req, _| match round(req) {
        0 => stream_then_tail(&[
            "<think>Let me compute.\n",
            "```python\nx = 41\n",
            "x\n",
            "```",
            "\nmore",
        ]),
        // llama.cpp style: the reply repeats the prefill (which holds the first block) first.
        1 => {
            let echo = prefill(req).unwrap();
            stream_then_tail(&[&echo, "Add one.\n", &code_block("print(x + 1)")])
        }
        _ => Reply::Stream(
            vec![delta(
                Some("So 42.</think>The answer is \\boxed{42}."),
                None,
            )],
            Duration::from_millis(1),
        ),
    });
    let log = ok(&solve_k0(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--samples",
            "1",
            "--tools",
            "python",
        ],
    ));
    assert!(log.contains("sandbox: python"), "{log}");
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 3, "first round, two continuations");
    assert!(reqs[0].body.get("continue_final_message").is_none());
    for r in &reqs[1..] {
        assert_eq!(r.body["continue_final_message"], true);
        assert_eq!(r.body["add_generation_prompt"], false);
        let m = r.body["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "system, problem, the assistant prefill");
    }
    let p1 = prefill(&reqs[1]).unwrap();
    assert_eq!(
        p1,
        "<think>Let me compute.\n```python\nx = 41\nx\n```\n```output\n41\n```\n"
    );
    let p2 = prefill(&reqs[2]).unwrap();
    assert!(
        p2.starts_with(&p1) && p2.ends_with("```python\nprint(x + 1)\n```\n```output\n42\n```\n"),
        "{p2}"
    );
    assert!(!p2.contains("SHOULD NOT BE SEEN"));
    // The streams were closed at the fence, not read to their end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hangups.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.hangups.lock().unwrap().len(), 2);

    let t = &traces(tmp.path())[0];
    assert_eq!(t["answer"], 42);
    let s = &t["samples"][0];
    assert_eq!(s["rounds"], 3);
    assert_eq!(s["weight"], 1.5, "an answer computed by code weighs 1.5");
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["output"], "41");
    assert_eq!(calls[1]["output"], "42");
    assert_eq!(
        calls[0]["pgid"], calls[1]["pgid"],
        "one interpreter per sample"
    );
    assert_eq!(t["vote"][0]["weight"], 1.5);
    assert!(t["sandbox"]["isolation"]["network"].is_string());
    assert!(t["run"]["tools"]["max_tool_calls"] == 8);
}

/// The escape, network and process checks, as code blocks the "model" writes one per round.
fn hostile_blocks(escape: &Path, port: u16) -> Vec<String> {
    vec![
        // 0: an allocation of 10 GB
        "b = bytearray(10 * 1024**3)\nprint(len(b))".into(),
        // 1: writing outside the working directory, by absolute path and by ../
        format!(
            "import os\nfor p in [{:?}, '../' + os.path.basename({:?}) + '-up']:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n    except OSError as e:\n        print('refused', type(e).__name__)",
            escape.display().to_string(),
            escape.display().to_string()
        ),
        // 2: a network connection to a listener of the test
        format!("import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('no network', type(e).__name__)"),
        // 3: count how many processes may exist (children sleep; the sample's end kills them)
        "import os, time\nn, err = 0, None\ntry:\n    for i in range(300):\n        if os.fork() == 0:\n            time.sleep(120)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    err = type(e).__name__\nprint('forked', n, err)".into(),
        // 4: a real fork bomb
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass".into(),
        // 5: an infinite loop
        "while True:\n    pass".into(),
        // 6: a background process left running
        "import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint('started', p.pid)".into(),
        // 7: the interpreter still works after all that
        "print(6 * 7)".into(),
    ]
}

#[test]
fn the_sandbox_contains_what_it_promises_and_reports_it() {
    hostile_code_is_contained_as_reported(None);
}

/// The same with every optional layer refused, as on a system without namespaces, Landlock or
/// a writable cgroup: the report must say "not isolated" and what happens must match it. (The
/// real fork bomb is left out here: as root with no process limit it would flood a shared
/// machine until the wall-clock kill.)
#[test]
fn without_its_optional_layers_the_sandbox_says_so_truthfully() {
    hostile_code_is_contained_as_reported(Some("namespaces,landlock,cgroup"));
}

/// What the hostile run left behind: its trace, whether files escaped, whether the test's
/// listener was reached.
struct Hostile {
    t: Value,
    escaped: (bool, bool),
    accepted: bool,
}

fn run_hostile(disable: Option<&str>) -> Hostile {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let escape = std::env::temp_dir().join(format!("escape-{}-{nanos}", std::process::id()));
    let escape_up = escape.with_file_name(format!("escape-{}-{nanos}-up", std::process::id()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut blocks = hostile_blocks(&escape, listener.local_addr().unwrap().port());
    if disable.is_some() {
        blocks[4] = "while True:\n    pass".into();
    }
    let server = MockServer::start(move |req, _| {
        let k = round(req);
        match blocks.get(k) {
            Some(code) => stream_then_tail(&[&format!("step {k}\n"), &code_block(code)]),
            None => Reply::Completion("</think>\\boxed{7}".into()),
        }
    });
    let start = Instant::now();
    let o = solve_cmd(tmp.path(), &server.url)
        .args(["--rag", "k=0", "--samples", "1", "--input"])
        .arg(&input)
        .args(["--tools", "python", "--tool-timeout", "3s"])
        .args(["--tool-memory-mb", "2048", "--max-tool-calls", "10"])
        .env("EXEMPLAR_SANDBOX_DISABLE", disable.unwrap_or(""))
        .output()
        .unwrap();
    let log = ok(&o);
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
    let t = traces(tmp.path()).remove(0);
    eprintln!("{log}\nisolation: {:#}", t["sandbox"]["isolation"]);
    let escaped = (escape.exists(), escape_up.exists());
    let _ = (
        std::fs::remove_file(&escape),
        std::fs::remove_file(&escape_up),
    );
    Hostile {
        t,
        escaped,
        accepted: listener.accept().is_ok(),
    }
}

fn hostile_code_is_contained_as_reported(disable: Option<&str>) {
    let h = run_hostile(disable);
    let (t, iso) = (&h.t, &h.t["sandbox"]["isolation"]);
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 8, "{calls:#?}");
    let out = |i: usize| calls[i]["output"].as_str().unwrap().to_string();
    // Where the machine allows a layer, the sandbox must use it; disabled, it must say so.
    let expect = |layer: &str| disable.is_none() && machine_allows(layer);
    assert!(
        out(0).contains("MemoryError") && calls[0]["error"] == true,
        "{}",
        out(0)
    );

    assert_eq!(iso["filesystem_isolated"], expect("landlock"));
    if iso["filesystem_isolated"] == true {
        let refused = out(1).matches("refused PermissionError").count();
        assert_eq!(refused, 2, "{}", out(1));
        assert_eq!(
            h.escaped,
            (false, false),
            "a write left the working directory"
        );
    } else {
        assert_eq!(
            out(1).matches("wrote").count(),
            2,
            "reported open, yet: {}",
            out(1)
        );
        assert_eq!(h.escaped, (true, true));
    }

    assert_eq!(
        iso["network_isolated"],
        expect("namespaces") || expect("landlock-net")
    );
    if iso["network_isolated"] == true {
        assert!(out(2).contains("no network"), "{}", out(2));
        assert!(!h.accepted, "the listener saw a connection");
    } else {
        assert!(out(2).contains("connected") && h.accepted, "{}", out(2));
    }
    check_processes(t, &calls);
}

/// Whether this machine lets an unprivileged process use a layer (asked outside solve).
fn machine_allows(layer: &str) -> bool {
    // Landlock ABI 1 guards files; ABI 4 added TCP rules.
    let landlock = |abi: u32| {
        let check = format!(
            "import ctypes, sys; sys.exit(ctypes.CDLL(None).syscall(444, None, 0, 1) < {abi})"
        );
        Command::new("python3").args(["-c", &check]).output()
    };
    let probe = match layer {
        "namespaces" => Command::new("unshare").args(["-rn", "true"]).output(),
        "landlock-net" => landlock(4),
        _ => landlock(1),
    };
    probe.is_ok_and(|o| o.status.success())
}

/// Fork limits as reported, the two kills, and no process group left.
fn check_processes(t: &Value, calls: &[Value]) {
    let out = |i: usize| calls[i]["output"].as_str().unwrap().to_string();
    let forked_line = out(3);
    let forked: Vec<&str> = forked_line.split_whitespace().collect();
    if t["sandbox"]["isolation"]["processes_limited"] == true {
        assert_eq!(forked[2], "BlockingIOError", "{}", out(3));
        assert!(forked[1].parse::<usize>().unwrap() < 64, "{}", out(3));
    } else {
        assert_eq!(forked[1], "300", "{}", out(3));
    }
    for i in [4, 5] {
        assert_eq!(calls[i]["timed_out"], true, "{:?}", calls[i]);
        let o = out(i);
        assert!(
            o.contains("TimeoutError") && o.contains("new interpreter"),
            "{o}"
        );
    }
    assert!(out(6).starts_with("started"), "{}", out(6));
    assert_eq!(out(7), "42", "the interpreter works after all that");
    assert_eq!(t["answer"], 7);
    // Every interpreter's process group is gone: the sleepers, the bomb, the background sleep.
    let pgids: std::collections::BTreeSet<i64> =
        calls.iter().map(|c| c["pgid"].as_i64().unwrap()).collect();
    assert_eq!(
        pgids.len(),
        3,
        "two kills made two new interpreters: {pgids:?}"
    );
    for g in pgids {
        let left = group_members(g);
        assert!(left.is_empty(), "process group {g} still has {left:?}");
    }
}

#[test]
fn tool_calls_are_capped_and_outputs_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // A model that writes code forever.
    let server = MockServer::start(|req, _| {
        let k = round(req);
        Reply::Completion(format!(
            "try {k}\n{}\nthen \\boxed{{{}}} and more",
            code_block("print('a' * 5000)"),
            11
        ))
    });
    ok(&solve_k0(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--samples",
            "1",
            "--tools",
            "python",
            "--max-tool-calls",
            "2",
            "--tool-output-chars",
            "300",
        ],
    ));
    let reqs = server.chat_requests();
    assert_eq!(
        reqs.len(),
        3,
        "two tool calls, then the third block is left alone"
    );
    let t = &traces(tmp.path())[0];
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 2);
    let shown = calls[0]["output"].as_str().unwrap();
    assert!(
        shown.chars().count() <= 300 && shown.contains("characters cut"),
        "{shown}"
    );
    // A non-streamed reply is cut after the block: the model's own continuation is not kept.
    let p = prefill(&reqs[1]).unwrap();
    assert!(p.ends_with("```\n") && !p.contains("then \\boxed"), "{p}");
    assert_eq!(t["answer"], 11);
}

#[test]
fn think_budget_closes_a_thinking_that_never_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    let server = MockServer::start(|req, _| match prefill(req) {
        // Reasoning (a reasoning parser's field) that never closes.
        None => Reply::Stream(
            vec![delta(None, Some("step ")); 3000],
            Duration::from_millis(5),
        ),
        // llama.cpp style: the whole prefill repeated, then the continuation.
        Some(p) => Reply::Completion(format!("{p}42}}.")),
    });
    let start = Instant::now();
    ok(&solve_k0(
        tmp.path(),
        &server.url,
        &[
            "--input",
            input.to_str().unwrap(),
            "--samples",
            "1",
            "--think-budget",
            "50",
        ],
    ));
    // Read to its end, the stream would take 15 s.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the stream was not cut"
    );
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[1].body;
    assert_eq!(r["max_tokens"], 48);
    assert_eq!(r["continue_final_message"], true);
    assert_eq!(r["add_generation_prompt"], false);
    let p = prefill(&reqs[1]).unwrap();
    assert!(p.starts_with("<think>step step "), "{p}");
    assert!(
        p.ends_with("step\n</think>\n\nThe final answer is \\boxed{"),
        "{p}"
    );
    let steps = p.matches("step").count();
    assert!((50..60).contains(&steps), "cut near the budget: {steps}");
    let t = &traces(tmp.path())[0];
    assert_eq!(t["answer"], 42);
    let s = &t["samples"][0];
    assert_eq!(s["concluded"], true);
    assert_eq!(s["answer_from"], "conclusion");
    assert_eq!(s["finish_reason"], "think budget");
    assert_eq!(
        s["weight"], 0.5,
        "a forced conclusion is a truncated sample"
    );
    assert_eq!(t["run"]["think_budget"], 50);
}

#[test]
fn code_checked_answers_outweigh_truncated_ones_and_resume_checks_the_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 1);
    // Sample 0 checks 11 with code; samples 1 and 2 are cut by max_tokens and say 99.
    let server = MockServer::start(|req, n| {
        match (round(req), n) {
        (0, 0) => Reply::Completion(format!("{}\n", code_block("print(11 * 1)"))),
        (1, _) => Reply::Completion("</think>\\boxed{11}".into()),
        _ => Reply::Raw(
            serde_json::json!({"choices": [{"index": 0, "message": {"content": "\\boxed{99}"}, "finish_reason": "length"}]})
                .to_string(),
        ),
    }
    });
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--samples",
        "3",
        "--concurrency",
        "1",
        "--tools",
        "python",
        "--eval",
    ];
    let log = ok(&solve_k0(tmp.path(), &server.url, &args));
    let t = &traces(tmp.path())[0];
    assert_eq!(t["answer"], 11, "1.5 beats 0.5 + 0.5");
    assert_eq!(
        t["vote"],
        serde_json::json!([{"answer": 11, "votes": 1, "weight": 1.5}, {"answer": 99, "votes": 2, "weight": 1.0}])
    );
    let weights: Vec<f64> = t["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, vec![1.5, 0.5, 0.5]);
    // The weights made the difference: the plain majority (99, two votes) was wrong.
    assert!(
        log.contains("| rag | k=0 | 1.000 | 1 | 0.20 | 0 | 0.000 |"),
        "{log}"
    );
    // The same traces without tools would mix settings: refused by name.
    let o = solve_k0(tmp.path(), &server.url, &args[..6]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tools"), "{err}");
}

#[test]
fn serve_answers_lines_in_order_and_loads_once() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = sample_index(tmp.path(), 60);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
    });
    let mut child = solve_cmd(tmp.path(), &server.url)
        .args([
            "--index",
            idx.to_str().unwrap(),
            "--rag",
            "k=2",
            "--samples",
            "2",
        ])
        .args([
            "--serve",
            "--expected-problems",
            "3",
            "--time-budget",
            "60s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // One at a time, as a gateway does: the next problem only after the previous answer.
    let ids = [Value::from("a"), Value::from(7), Value::from("c")];
    for (i, id) in ids.iter().enumerate() {
        let problem = format!("Problem number {}: eleven times?", i + 1);
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"id": id, "problem": problem})
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut reply = String::new();
        stdout.read_line(&mut reply).unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(&v["id"], id);
        assert_eq!(v["answer"], 11 * (i as u64 + 1));
        assert!(v["seconds"].as_f64().unwrap() >= 0.0);
    }
    writeln!(stdin, "not json").unwrap();
    stdin.flush().unwrap();
    let mut reply = String::new();
    stdout.read_line(&mut reply).unwrap();
    let v: Value = serde_json::from_str(&reply).unwrap();
    assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    drop(stdin); // end of input ends the session
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("retriever: index").count(),
        1,
        "loaded once: {err}"
    );
    check_serve_traces(&traces(tmp.path()));
    assert_eq!(server.chat_requests().len(), 6, "3 problems x 2 samples");
}

/// One trace line per problem, same session and load, positions in order, time carried on.
fn check_serve_traces(t: &[Value]) {
    assert_eq!(t.len(), 3);
    let first = &t[0]["serve"];
    assert!(first["load_seconds"].as_f64().unwrap() > 0.0);
    for (i, line) in t.iter().enumerate() {
        let s = &line["serve"];
        assert_eq!(s["position"], i);
        assert_eq!(s["loads"], 1);
        assert_eq!(s["session"], first["session"]);
        assert_eq!(s["load_seconds"], first["load_seconds"]);
        assert_eq!(line["retrieved"].as_array().unwrap().len(), 2);
        let allowed = s["allowed_seconds"].as_f64().unwrap();
        assert!(
            allowed > 0.0 && allowed <= 60.0 / (3 - i) as f64 + 0.5,
            "{allowed}"
        );
    }
    // Unused time moves on: the last problem may use nearly all that is left.
    assert!(t[2]["serve"]["allowed_seconds"].as_f64().unwrap() > 40.0);
}

/// The prefill continuation on a real llama.cpp server: SmolLM2 never closes a thinking, so
/// --think-budget cuts it and asks for the answer with an assistant prefill, which llama-server
/// continues (streamed, with `continue_final_message`, so without repeating the prefill).
#[test]
fn think_budget_prefill_is_continued_by_a_real_llama_server() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 2);
    let server = LlamaServer::start(2048, 1, &[]);
    ok(&solve_k0(
        tmp.path(),
        &server.endpoint(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--samples",
            "1",
            "--think-budget",
            "4",
            "--max-tokens",
            "200",
            "--temperature",
            "0",
            "--no-system",
        ],
    ));
    for t in traces(tmp.path()) {
        let s = &t["samples"][0];
        assert_eq!(s["concluded"], true, "{s:#}");
        assert_eq!(s["rounds"], 2);
        assert_eq!(s["errors"], serde_json::json!([]));
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            text.matches("The final answer is \\boxed{").count(),
            1,
            "the prefill was not repeated: {text}"
        );
        let (thinking, conclusion) = text.split_once("\n</think>\n\n").unwrap();
        assert!(!thinking.is_empty() && !conclusion.is_empty(), "{text}");
        assert!(
            conclusion.len() > "The final answer is \\boxed{".len(),
            "the server continued the prefill: {text}"
        );
    }
}

/// The tool loop on a real llama.cpp server: SmolLM2 asked for a python block (greedy) writes
/// one; it is run, its output appended after the fence, and the server continues the message.
#[test]
fn code_runs_and_the_model_continues_on_a_real_llama_server() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let problem = "Write a short Python program in a ```python code block that prints 2+3.";
    std::fs::write(
        &input,
        serde_json::json!({"id": "a", "problem": problem}).to_string() + "\n",
    )
    .unwrap();
    let server = LlamaServer::start(2048, 1, &[]);
    ok(&solve_k0(
        tmp.path(),
        &server.endpoint(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--samples",
            "1",
            "--tools",
            "python",
            "--max-tokens",
            "150",
            "--temperature",
            "0",
            "--no-system",
        ],
    ));
    let t = &traces(tmp.path())[0];
    let s = &t["samples"][0];
    let text = s["text"].as_str().unwrap();
    let calls = tool_calls(t);
    assert!(!calls.is_empty(), "SmolLM2 wrote no python block: {text}");
    assert_eq!(s["errors"], serde_json::json!([]));
    assert_eq!(s["rounds"].as_u64().unwrap(), calls.len() as u64 + 1);
    for c in &calls {
        let block = format!(
            "```python\n{}\n```\n```output\n{}\n```\n",
            c["code"].as_str().unwrap(),
            c["output"].as_str().unwrap()
        );
        assert!(text.contains(&block), "{block:?} not in {text:?}");
    }
    let after = text.rsplit("```output\n").next().unwrap();
    let continuation = after.split_once("\n```\n").unwrap().1;
    assert!(!continuation.trim().is_empty(), "no continuation: {text:?}");
    assert!(!continuation.contains("```output"), "{text:?}");
}
