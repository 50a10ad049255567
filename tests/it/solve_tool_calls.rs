//! `solve --tools python` over OpenAI tool calls (`--tool-protocol`), against the scripted
//! server: streamed `delta.tool_calls` fragments are run in the sandbox and answered with `tool`
//! messages; a server that refuses `tools` makes `auto` fall back to fenced blocks; malformed
//! calls and calls over `--max-tool-calls` are answered with an error, never a panic.

use crate::util::server::{delta, finish, tool_delta, MockServer, Reply, Request};
use crate::util::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// `solve --tools python` on `n` problems against the scripted server, without retrieval.
fn solve_tools(dir: &Path, server: &str, n: usize, extra: &[&str]) -> Output {
    let input = problems(dir, n);
    let args = [
        "--rag",
        "k=0",
        "--input",
        input.to_str().unwrap(),
        "--tools",
        "python",
    ];
    solve(dir, server, &[&args[..], extra].concat())
}

fn messages(req: &Request) -> Vec<Value> {
    req.body["messages"].as_array().cloned().unwrap_or_default()
}

/// The `tool` messages of a request (= tool calls answered so far in this sample).
fn tool_messages(req: &Request) -> Vec<Value> {
    messages(req)
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .collect()
}

fn stream(events: Vec<String>) -> Reply {
    Reply::Stream(events, Duration::from_millis(2))
}

/// A tool call streamed in fragments: id and name first, the JSON arguments in `pieces`.
fn fragmented_call(id: &str, pieces: &[&str]) -> Vec<String> {
    let mut e = vec![tool_delta(0, Some(id), Some("python"), "")];
    e.extend(pieces.iter().map(|p| tool_delta(0, None, None, p)));
    e.push(finish("tool_calls"));
    e
}

/// The whole call in one chunk, as some servers send it.
fn whole_call(index: usize, id: &str, name: &str, args: &str) -> String {
    tool_delta(index, Some(id), Some(name), args)
}

#[test]
fn a_streamed_tool_call_runs_and_its_output_goes_back_as_a_tool_message() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockServer::start(|req, _| match tool_messages(req).len() {
        0 => {
            let mut e = vec![delta(None, Some("Let me compute."))];
            e.extend(fragmented_call(
                "call_a",
                &["{\"co", "de\": \"x = 6", "\\nx * ", "7\"}"],
            ));
            stream(e)
        }
        // The state of the first call is still there.
        1 => stream(vec![
            delta(Some("Check: "), None),
            whole_call(0, "call_b", "python", r#"{"code": "print(x + 1)"}"#),
            finish("tool_calls"),
        ]),
        _ => stream(vec![delta(Some("So \\boxed{42}."), None), finish("stop")]),
    });
    let log = ok(&solve_tools(
        tmp.path(),
        &server.url,
        1,
        &["--samples", "1"],
    ));
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 3, "{log}");
    let tools = &reqs[0].body["tools"];
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "python");
    let params = &tools[0]["function"]["parameters"];
    assert_eq!(params["required"], json!(["code"]));
    assert_eq!(params["properties"]["code"]["type"], "string");
    for r in &reqs[1..] {
        assert!(r.body.get("continue_final_message").is_none(), "a new turn");
        assert_eq!(messages(r).last().unwrap()["role"], "tool");
    }
    let m = messages(&reqs[1]);
    let (assistant, tool) = (&m[m.len() - 2], &m[m.len() - 1]);
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_a");
    assert_eq!(assistant["tool_calls"][0]["type"], "function");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "python");
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"],
        "{\"code\": \"x = 6\\nx * 7\"}"
    );
    assert!(assistant["content"]
        .as_str()
        .unwrap()
        .contains("Let me compute."));
    assert_eq!(tool["tool_call_id"], "call_a");
    assert_eq!(tool["content"], "42");
    let second = tool_messages(&reqs[2]);
    assert_eq!(second.len(), 2, "the whole history is resent");
    assert_eq!(
        (&second[1]["tool_call_id"], &second[1]["content"]),
        (&json!("call_b"), &json!("7"))
    );

    let t = &traces(tmp.path())[0];
    assert_eq!(t["answer"], 42);
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["protocol"], "openai");
    assert_eq!(calls[0]["name"], "python");
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(calls[0]["code"], "x = 6\nx * 7");
    assert_eq!(calls[0]["output"], "42");
    assert_eq!(calls[0]["error"], false);
    assert!(calls[0]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(calls[0]["pgid"], calls[1]["pgid"], "one interpreter");
    let s = &t["samples"][0];
    assert_eq!(s["rounds"], 3);
    assert_eq!(
        s["weight"], 1.5,
        "a tool call backs the answer like a block"
    );
    assert_eq!(t["vote"][0]["weight"], 1.5);
    assert_eq!(t["tool_protocol"]["setting"], "auto");
    assert_eq!(t["tool_protocol"]["tools_sent"], true);
    assert_eq!(t["run"]["tools"]["protocol"], "auto");
}

/// A fenced-blocks-only server: `tools` is refused with `refusal`; without it, one code block
/// then the answer.
fn refusing_server(refusal: (u16, &'static str)) -> MockServer {
    MockServer::start(move |req, _| {
        if req.body.get("tools").is_some() {
            return Reply::Status(refusal.0, refusal.1.into());
        }
        let last = messages(req).last().cloned().unwrap_or_default();
        match last["role"] == "assistant" {
            false => Reply::Completion("```python\nprint(11 * 1)\n```\n".into()),
            true => Reply::Completion("\\boxed{11}".into()),
        }
    })
}

const VLLM_REFUSAL: &str = r#"{"object":"error","message":"\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set","type":"BadRequestError","param":null,"code":400}"#;
const LLAMA_REFUSAL: &str =
    r#"{"error":{"code":500,"message":"tools param requires --jinja flag","type":"server_error"}}"#;

#[test]
fn a_server_refusing_tools_makes_auto_fall_back_to_fenced_blocks() {
    for refusal in [(400, VLLM_REFUSAL), (500, LLAMA_REFUSAL)] {
        let tmp = tempfile::tempdir().unwrap();
        let server = refusing_server(refusal);
        let args = ["--samples", "2", "--concurrency", "1", "--retries", "3"];
        let log = ok(&solve_tools(tmp.path(), &server.url, 2, &args));
        assert_eq!(
            log.matches("falling back to fenced").count(),
            1,
            "said once: {log}"
        );
        let reqs = server.chat_requests();
        let with_tools = reqs.iter().filter(|r| r.body.get("tools").is_some());
        assert_eq!(with_tools.count(), 1, "refused once, then never sent");
        // 1 refused + 2 problems x 2 samples x 2 rounds.
        assert_eq!(reqs.len(), 9);
        for (i, t) in traces(tmp.path()).iter().enumerate() {
            assert_eq!(t["answer"], 11, "{t:#}");
            assert_eq!(tool_calls(t)[0]["protocol"], "fenced");
            assert_eq!(t["tool_protocol"]["tools_sent"], false);
            let refused = t["tool_protocol"]["refused"].as_str().unwrap();
            assert!(refused.contains("tool"), "{refused}");
            let errors = &t["samples"][0]["errors"];
            assert_eq!(errors, &json!([]), "a fallback is no error (problem {i})");
        }
    }
}

#[test]
fn tool_protocol_openai_stops_on_a_refusal_and_fenced_sends_no_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let server = refusing_server((400, VLLM_REFUSAL));
    let o = solve_tools(tmp.path(), &server.url, 1, &["--tool-protocol", "openai"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--enable-auto-tool-choice") && err.contains("--jinja"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let server = refusing_server((400, VLLM_REFUSAL));
    let args = ["--tool-protocol", "fenced", "--samples", "1"];
    ok(&solve_tools(tmp.path(), &server.url, 1, &args));
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body.get("tools").is_none()));
    assert_eq!(traces(tmp.path())[0]["answer"], 11);
}

#[test]
fn malformed_tool_calls_are_answered_with_errors_and_the_sample_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = format!(r#"{{"code": "x = '{}'"}}"#, "a".repeat(400_000));
    let server = MockServer::start(move |req, _| match tool_messages(req).len() {
        // Six calls in one turn, five of them broken.
        0 => stream(vec![
            whole_call(0, "c0", "python", "print(1"),
            whole_call(1, "c1", "python", r#"{"cmd": "print(1)"}"#),
            whole_call(2, "c2", "bash", r#"{"code": "ls"}"#),
            whole_call(3, "c3", "python", r#"{"code": "   "}"#),
            whole_call(4, "c4", "python", &huge),
            whole_call(5, "c5", "python", r#"{"code": "print(5 + 6)"}"#),
            finish("tool_calls"),
        ]),
        _ => stream(vec![delta(Some("\\boxed{11}"), None), finish("stop")]),
    });
    ok(&solve_tools(
        tmp.path(),
        &server.url,
        1,
        &["--samples", "1"],
    ));
    let reqs = server.chat_requests();
    assert_eq!(reqs.len(), 2);
    let answers = tool_messages(&reqs[1]);
    let ids: Vec<&str> = answers
        .iter()
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["c0", "c1", "c2", "c3", "c4", "c5"],
        "every call answered"
    );
    let text = |i: usize| answers[i]["content"].as_str().unwrap().to_string();
    assert!(text(0).contains("not valid JSON"), "{}", text(0));
    assert!(text(1).contains("\"code\""), "{}", text(1));
    assert!(text(2).contains("unknown tool \"bash\""), "{}", text(2));
    assert!(text(3).contains("empty"), "{}", text(3));
    assert!(text(4).contains("too long"), "{}", text(4));
    assert_eq!(text(5), "11");
    let t = &traces(tmp.path())[0];
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 6);
    for c in &calls[..5] {
        assert_eq!((&c["error"], &c["rejected"]), (&json!(true), &json!(true)));
    }
    assert_eq!(calls[2]["name"], "bash");
    assert!(calls[4]["code"].as_str().unwrap().len() < 10_000, "cut");
    assert_eq!(calls[5]["error"], false);
    assert_eq!(t["answer"], 11);
    assert_eq!(t["samples"][0]["weight"], 1.5);
}

#[test]
fn max_tool_calls_is_honoured_on_the_tool_call_path() {
    let tmp = tempfile::tempdir().unwrap();
    // A model that calls the tool every turn and never stops on its own.
    let server = MockServer::start(|req, _| {
        let k = tool_messages(req).len();
        if k == 1 {
            // A server that ignores "stream": the call arrives in `message.tool_calls`.
            return Reply::Raw(
                json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "try 1, maybe \\boxed{11}\n",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "python",
                "arguments": "{\"code\": \"print('ran')\"}"}}]}}]})
                .to_string(),
            );
        }
        stream(vec![
            delta(Some(&format!("try {k}, maybe \\boxed{{11}}\n")), None),
            whole_call(0, &format!("c{k}"), "python", r#"{"code": "print('ran')"}"#),
            finish("tool_calls"),
        ])
    });
    let args = ["--samples", "1", "--max-tool-calls", "2"];
    ok(&solve_tools(tmp.path(), &server.url, 1, &args));
    let reqs = server.chat_requests();
    // Two calls run, the third answered "limit reached"; the fourth ends the sample.
    assert_eq!(reqs.len(), 4);
    let answers = tool_messages(&reqs[3]);
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[1]["tool_call_id"], "c1");
    assert_eq!(answers[1]["content"], "ran");
    let limit = answers[2]["content"].as_str().unwrap();
    assert!(
        limit.contains("limit") && limit.contains("final answer"),
        "{limit}"
    );
    let t = &traces(tmp.path())[0];
    let calls = tool_calls(t);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2]["rejected"], true);
    assert_eq!(t["answer"], 11);
    let errors = t["samples"][0]["errors"].to_string();
    assert!(errors.contains("--max-tool-calls"), "{errors}");
}
