//! A scripted OpenAI-compatible server on 127.0.0.1 for the solve tests.
//!
//! Written on std's TcpListener rather than axum/wiremock because the tests need to misbehave at
//! the socket level (drop a connection mid-request, send a truncated body), which a framework
//! hides. One thread per connection, `Connection: close` on every reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Text of the last user message.
    pub fn last_user(&self) -> String {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

pub enum Reply {
    /// A chat completion whose message content is this text.
    Completion(String),
    Status(u16, String),
    Raw(String),
    /// Close the connection without answering.
    Drop,
    Delay(Duration, Box<Reply>),
    /// Server-Sent Events: each string is one `data:` payload, sent `gap` apart, then
    /// `data: [DONE]`. A write that fails (the client hung up) is logged in `hangups`.
    Stream(Vec<String>, Duration),
}

/// One SSE chunk carrying `content` (and optionally `reasoning_content`) as a delta.
pub fn delta(content: Option<&str>, reasoning: Option<&str>) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {"content": content, "reasoning_content": reasoning}, "finish_reason": null}]}).to_string()
}

pub struct MockServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    /// When a streaming client hung up before the stream ended.
    pub hangups: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl MockServer {
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_inner(script, false)
    }

    fn start_inner(
        script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
        script_gets: bool,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let hangups: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
        let script = Arc::new(script);
        let log = requests.clone();
        let hung = hangups.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (log, script, hung) = (log.clone(), script.clone(), hung.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut stream) else {
                        return;
                    };
                    // n counts POSTs only: GETs (health, /models, /props) are not scripted.
                    let n = {
                        let mut l = log.lock().unwrap();
                        l.push(req.clone());
                        l.iter()
                            .filter(|r| r.method == "POST")
                            .count()
                            .saturating_sub(1)
                    };
                    let reply = if req.method == "GET" && !script_gets {
                        Reply::Raw(r#"{"data":[]}"#.into())
                    } else {
                        script(&req, n)
                    };
                    if !respond(&mut stream, reply) {
                        hung.lock().unwrap().push(std::time::Instant::now());
                    }
                });
            }
        });
        Self {
            url,
            requests,
            hangups,
        }
    }

    pub fn chat_requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok()?;
        }
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Send the reply; false when a stream's client hung up before its end.
fn respond(stream: &mut std::net::TcpStream, reply: Reply) -> bool {
    let (status, body) = match reply {
        Reply::Delay(d, inner) => {
            std::thread::sleep(d);
            return respond(stream, *inner);
        }
        Reply::Drop => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return true;
        }
        Reply::Stream(events, gap) => return stream_events(stream, &events, gap),
        Reply::Completion(text) => (
            200,
            serde_json::json!({
                "id": "cmpl-test", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
            })
            .to_string(),
        ),
        Reply::Status(code, body) => (code, body),
        Reply::Raw(body) => (200, body),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    true
}

fn stream_events(stream: &mut std::net::TcpStream, events: &[String], gap: Duration) -> bool {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for e in events.iter().map(String::as_str).chain(["[DONE]"]) {
        let sent = stream
            .write_all(format!("data: {e}\n\n").as_bytes())
            .and_then(|_| stream.flush());
        if sent.is_err() {
            return false;
        }
        std::thread::sleep(gap);
    }
    true
}

/// One SSE chunk carrying a fragment of the tool call at `index` (OpenAI `delta.tool_calls`):
/// the id and name come with the first fragment, the arguments in pieces.
pub fn tool_delta(index: usize, id: Option<&str>, name: Option<&str>, args: &str) -> String {
    let mut call = serde_json::json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        call["id"] = id.into();
        call["type"] = "function".into();
    }
    if let Some(name) = name {
        call["function"]["name"] = name.into();
    }
    serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]}).to_string()
}

/// The closing SSE chunk: an empty delta with `finish_reason`.
pub fn finish(reason: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}).to_string()
}

impl MockServer {
    /// [`MockServer::start`] whose script answers GETs too (`/v1/models`, `/props`); `n` still
    /// counts POSTs only.
    pub fn start_with_gets(
        script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_inner(script, true)
    }
}

/// An endpoint where nothing listens: a port bound, noted and let go.
pub fn closed_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/v1")
}

/// An endpoint that accepts connections and never answers (the connections are held open for
/// the life of the test process).
pub fn stalling_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// The OpenAI `logprobs` object of `tokens` tokens, each chosen with log-probability `top[0]`
/// among alternatives with log-probabilities `top` (so its renormalised entropy is that of
/// `top`).
pub fn logprobs(tokens: usize, top: &[f64]) -> serde_json::Value {
    let alternatives: Vec<serde_json::Value> = top
        .iter()
        .enumerate()
        .map(|(i, lp)| serde_json::json!({"token": format!("t{i}"), "logprob": lp, "bytes": [116]}))
        .collect();
    let token = serde_json::json!({"token": "t0", "logprob": top[0], "bytes": [116], "top_logprobs": alternatives});
    serde_json::json!({"content": vec![token; tokens]})
}

/// A non-streamed completion of `text` whose `tokens` tokens carry log-probs (see [`logprobs`]).
pub fn completion_with_logprobs(text: &str, tokens: usize, top: &[f64]) -> Reply {
    Reply::Raw(
        serde_json::json!({
            "id": "cmpl-test", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": logprobs(tokens, top), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens}
        })
        .to_string(),
    )
}

/// One SSE chunk carrying `content` and the log-probs of its one token (as llama.cpp and vLLM
/// stream them: `choices[0].logprobs.content`).
pub fn delta_with_logprobs(content: &str, top: &[f64]) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {"content": content},
        "logprobs": logprobs(1, top), "finish_reason": null}]})
    .to_string()
}
