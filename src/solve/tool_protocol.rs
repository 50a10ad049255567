//! The OpenAI side of `--tools python`: which protocol a run uses (`--tool-protocol`), the
//! `tools` array offered to the server, whether the server refused it, and reading the code out
//! of a call the model made.
//!
//! `auto` offers `tools` and also runs fenced blocks; the first refusal of `tools` (vLLM without
//! `--enable-auto-tool-choice`, llama.cpp without `--jinja`) turns the offer off for every
//! sample of the run, which then goes on with fenced blocks only. `openai` offers `tools` and
//! ignores fenced blocks; a refusal stops the run. `fenced` never offers `tools`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::client::RequestedCall;

/// The one function offered.
pub const TOOL_NAME: &str = "python";
/// Arguments longer than this are refused, not run (a model stuck repeating itself).
pub const MAX_ARGUMENT_BYTES: usize = 100_000;
/// Characters of a refused call's arguments kept in the trace.
const TRACE_ARGUMENT_CHARS: usize = 2000;

/// `--tool-protocol`: how the model calls the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolProtocol {
    /// OpenAI tool calls and fenced blocks; fenced only once the server refuses `tools`.
    Auto,
    /// OpenAI tool calls only; a refusal stops the run.
    Openai,
    /// Fenced ```python blocks only; `tools` never offered.
    Fenced,
}

crate::named_enum!(ToolProtocol { Auto => "auto", Openai => "openai", Fenced => "fenced" });

/// The OpenAI `tools` array: one function, `python(code)`.
pub fn tools_json() -> &'static Value {
    static TOOLS: OnceLock<Value> = OnceLock::new();
    TOOLS.get_or_init(|| {
        json!([{
            "type": "function",
            "function": {
                "name": TOOL_NAME,
                "description": "Run Python code in a persistent session (variables and imports \
                    are kept between calls; sympy and numpy where installed). Returns what the \
                    code prints, else the value of its last expression, or the error.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "The Python code to run."}
                    },
                    "required": ["code"]
                }
            }
        }])
    })
}

/// The `tools` array for the tools a sample has: `python`, `search_similar_problems`
/// (`--tools retrieve`), or both; None when it has neither.
pub fn tools_for(python: bool, search: bool) -> Option<&'static Value> {
    static SEARCH: OnceLock<Value> = OnceLock::new();
    static BOTH: OnceLock<Value> = OnceLock::new();
    let search_fn = super::retrieve_tool::function_json;
    match (python, search) {
        (true, false) => Some(tools_json()),
        (false, true) => Some(SEARCH.get_or_init(|| json!([search_fn()]))),
        (true, true) => Some(BOTH.get_or_init(|| json!([tools_json()[0].clone(), search_fn()]))),
        (false, false) => None,
    }
}

/// The run's offer of `tools`, shared by all its samples.
#[derive(Debug)]
pub struct ToolOffer {
    pub protocol: ToolProtocol,
    /// The server's refusal, once one came.
    refused: OnceLock<String>,
    /// The refusal was handed out to be logged.
    reported: AtomicBool,
}

impl ToolOffer {
    pub fn new(protocol: ToolProtocol) -> Arc<Self> {
        Arc::new(Self {
            protocol,
            refused: OnceLock::new(),
            reported: AtomicBool::new(false),
        })
    }

    /// The `tools` array to send now, if any (`auto` stops after a refusal; `openai` keeps
    /// sending it so that every sample reports the refusal).
    pub fn tools(&self) -> Option<&'static Value> {
        self.tools_with(true, false)
    }

    /// [`ToolOffer::tools`] for a sample with these tools (see [`tools_for`]).
    pub fn tools_with(&self, python: bool, search: bool) -> Option<&'static Value> {
        match self.protocol {
            ToolProtocol::Fenced => None,
            ToolProtocol::Auto if self.refused.get().is_some() => None,
            _ => tools_for(python, search),
        }
    }

    /// Whether fenced ```python blocks are run.
    pub fn fenced(&self) -> bool {
        self.protocol != ToolProtocol::Openai
    }

    /// Record the server's refusal (the first one is kept).
    pub fn refuse(&self, reason: String) {
        let _ = self.refused.set(reason);
    }

    pub fn refused(&self) -> Option<&str> {
        self.refused.get().map(String::as_str)
    }

    /// The refusal, the first time it is asked for: it is logged once per run.
    pub fn news(&self) -> Option<&str> {
        let r = self.refused()?;
        (!self.reported.swap(true, Ordering::Relaxed)).then_some(r)
    }
}

/// The code of a `python` call, or what is wrong with it (said to the model as the result).
pub fn code_of(call: &RequestedCall) -> Result<String, String> {
    let f = &call.function;
    if f.name != TOOL_NAME {
        return Err(format!(
            "unknown tool {:?}: the only tool is \"python\" with one argument, \"code\"",
            clip(&f.name, 100)
        ));
    }
    if f.arguments.len() > MAX_ARGUMENT_BYTES {
        return Err(format!(
            "the arguments are too long ({} bytes, at most {MAX_ARGUMENT_BYTES}); not run",
            f.arguments.len()
        ));
    }
    let v: Value = serde_json::from_str(&f.arguments).map_err(|e| {
        format!("the arguments are not valid JSON ({e}); send {{\"code\": \"...\"}}")
    })?;
    let code = v.get("code").and_then(Value::as_str).ok_or_else(|| {
        "the arguments have no \"code\" string; send {\"code\": \"...\"}".to_string()
    })?;
    if code.trim().is_empty() {
        return Err("the code is empty; nothing was run".into());
    }
    Ok(code.to_string())
}

/// What the trace keeps of a call that was not run: its code if readable, else its arguments,
/// cut short.
pub fn traced_code(call: &RequestedCall) -> String {
    let args = &call.function.arguments;
    let code = serde_json::from_str::<Value>(args)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
    clip(code.as_deref().unwrap_or(args), TRACE_ARGUMENT_CHARS)
}

fn clip(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((i, _)) => format!("{}[... cut]", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::client::FunctionCall;

    fn call(name: &str, arguments: &str) -> RequestedCall {
        RequestedCall {
            id: "x".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }

    #[test]
    fn code_is_read_or_the_fault_named() {
        assert_eq!(
            code_of(&call("python", r#"{"code":"print(1)"}"#)),
            Ok("print(1)".into())
        );
        for (c, says) in [
            (call("python", "{\"code\": 1"), "not valid JSON"),
            (call("python", r#"{"src": "1"}"#), "no \"code\""),
            (call("python", r#"{"code": 5}"#), "no \"code\""),
            (call("shell", r#"{"code": "ls"}"#), "unknown tool \"shell\""),
            (call("python", r#"{"code": " \n"}"#), "empty"),
            (
                call("python", &"x".repeat(MAX_ARGUMENT_BYTES + 1)),
                "too long",
            ),
        ] {
            let e = code_of(&c).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let long = call("python", &format!("{{\"code\": \"{}\"}}", "é".repeat(5000)));
        assert!(traced_code(&long).chars().count() < 2100);
    }

    #[test]
    fn auto_stops_offering_after_a_refusal_and_reports_it_once() {
        let auto = ToolOffer::new(ToolProtocol::Auto);
        assert!(auto.tools().is_some() && auto.fenced());
        assert_eq!(auto.news(), None);
        auto.refuse("no".into());
        auto.refuse("later".into());
        assert!(auto.tools().is_none());
        assert_eq!((auto.news(), auto.news()), (Some("no"), None));
        let openai = ToolOffer::new(ToolProtocol::Openai);
        openai.refuse("no".into());
        assert!(openai.tools().is_some() && !openai.fenced());
        assert!(ToolOffer::new(ToolProtocol::Fenced).tools().is_none());
        assert_eq!(tools_json()[0]["function"]["name"], "python");
    }
}
