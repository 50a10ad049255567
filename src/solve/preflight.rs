//! Checks made before the first problem, so that a run that cannot work stops at once with a
//! clear message and a non-zero exit instead of writing a submission of fallbacks: values that
//! cannot be right (an `--out` that is a folder, `--eval` without answers), and the server (it
//! answers `GET /models`, and serves `--model`). Every wait here is bounded by the time budget.

use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{Client, RetryPolicy};
use super::config::SolveConfig;
use super::problems::Problem;
use crate::progress::Progress;

/// One `GET /models` may take this long (a server under load still answers it at once).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// `timeout`, cut to what is left before `end`; None when nothing is left.
pub fn bounded(timeout: Duration, end: Option<Instant>) -> Option<Duration> {
    let left = end.map_or(timeout, |e| e.saturating_duration_since(Instant::now()));
    Some(timeout.min(left)).filter(|t| !t.is_zero())
}

/// What can be refused from the settings alone, before anything loads or the server is asked.
pub fn check_settings(cfg: &SolveConfig) -> Result<()> {
    check_outputs(cfg)?;
    let r = &cfg.retrieval;
    if r.index.is_none() && r.retrieves(&cfg.tools) {
        if r.rag.k > 0 {
            bail!(
                "--rag k={} needs --index (or use --rag k=0 for no retrieval)",
                r.rag.k
            );
        }
        bail!(
            "--tools retrieve (or search=on, or a --compare-rag arm with k > 0) needs --index: \
             the search looks up solved problems in an index built by `embed index build`"
        );
    }
    Ok(())
}

/// The submission and the traces must be files that can be written.
fn check_outputs(cfg: &SolveConfig) -> Result<()> {
    let out = &cfg.output;
    for (flag, path) in [("--out", &out.out), ("--traces", &out.traces)] {
        if path.is_dir() {
            bail!(
                "{flag} {} is a folder; {flag} names a file, e.g. {}",
                path.display(),
                path.join(file_name(flag)).display()
            );
        }
    }
    Ok(())
}

fn file_name(flag: &str) -> &'static str {
    match flag {
        "--out" => "submission.csv",
        _ => "traces.jsonl",
    }
}

/// `--eval` scores against the input's answers: refused when there are none.
pub fn check_eval(cfg: &SolveConfig, problems: &[Problem], input: &Path) -> Result<()> {
    if cfg.output.eval && !cfg.output.dry_run && problems.iter().all(|p| p.expected.is_none()) {
        bail!(
            "--eval needs the right answers, but none of the {} problems in {} has an integer \
             `answer` (or `answer_int`) field; drop --eval, or add the answers",
            problems.len(),
            input.display()
        );
    }
    Ok(())
}

/// Ask the server for its models until it answers (connection errors and 5xx are retried as
/// `retry` says, each wait logged), then check that it serves the client's model.
pub fn check_server(
    client: &Client,
    retry: &RetryPolicy,
    end: Option<Instant>,
    progress: &dyn Progress,
) -> Result<()> {
    let url = format!("{}/models", client.endpoint());
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(timeout) = bounded(CHECK_TIMEOUT, end) else {
            bail!("the time budget ran out before the server at {url} answered");
        };
        let last =
            match client.get_text("/models", timeout) {
                Ok((200, body)) => return check_model(client, &body, progress),
                Ok((status, body)) if status >= 500 || matches!(status, 408 | 429) => {
                    format!("HTTP {status}: {}", super::client::clip(&body))
                }
                Ok((status, body)) => bail!(refusal(client, &url, status, &body)),
                Err(e) if e.timed_out => bail!(
                "the server at {url} accepted the connection but did not answer within {:.1} s{}",
                timeout.as_secs_f64(),
                if timeout < CHECK_TIMEOUT { " (what was left of --time-budget)" } else { "" }
            ),
                Err(e) => e.message,
            };
        if tries > retry.retries {
            bail!(
                "cannot reach the server: GET {url}: {last} ({tries} tries in {:.1} s). Start the \
                 server, point --endpoint (or $EXEMPLAR_ENDPOINT) at it, or let solve start it \
                 with --launch CMD",
                start.elapsed().as_secs_f64()
            );
        }
        let pause = retry
            .backoff
            .saturating_mul(1 << (tries - 1).min(6))
            .min(MAX_PAUSE);
        let Some(pause) = bounded(pause, end) else {
            bail!("the time budget ran out waiting for the server at {url}: {last}");
        };
        progress.log(&format!(
            "server: GET {url}: {last}; retrying in {:.1} s (try {tries} of {})",
            pause.as_secs_f64(),
            retry.retries + 1
        ));
        std::thread::sleep(pause);
    }
}

/// A 4xx on `GET /models`, said with what usually causes it.
fn refusal(client: &Client, url: &str, status: u16, body: &str) -> String {
    let hint = match status {
        401 | 403 => "the server wants another API key (--api-key or $OPENAI_API_KEY)",
        404 => "is --endpoint the server's OpenAI base URL? it usually ends in /v1",
        _ => "see the server's log",
    };
    format!(
        "the server at {} refused GET {url}: HTTP {status}: {}; {hint}",
        client.endpoint(),
        super::client::clip(body)
    )
}

/// The model list must name `--model`; llama.cpp serves its one model under any name.
fn check_model(client: &Client, body: &str, progress: &dyn Progress) -> Result<()> {
    let model = client.model();
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(data) = v.get("data").and_then(Value::as_array) else {
        progress.log("server: its GET /models answer has no model list; --model is not checked");
        return Ok(());
    };
    let names = |m: &Value| -> Vec<String> {
        let aliases = m.get("aliases").and_then(Value::as_array);
        let aliases = aliases.into_iter().flatten().filter_map(Value::as_str);
        let id = m.get("id").and_then(Value::as_str);
        id.into_iter().chain(aliases).map(str::to_string).collect()
    };
    let served: Vec<String> = data.iter().flat_map(names).collect();
    if served.is_empty() || served.iter().any(|n| n == model) {
        return Ok(());
    }
    let llama_cpp = data
        .iter()
        .all(|m| m.get("owned_by").and_then(Value::as_str) == Some("llamacpp"));
    if llama_cpp {
        progress.log(&format!(
            "server: llama.cpp serves {} whatever the request names; --model {model:?} is sent \
             as it is",
            served[0]
        ));
        return Ok(());
    }
    let list: Vec<String> = data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(|n| format!("{n:?}"))
        .collect();
    bail!(
        "the server at {} does not serve --model {model:?}; it serves {}. Pass --model {}",
        client.endpoint(),
        list.join(", "),
        list.first().map_or("NAME", String::as_str)
    )
}
