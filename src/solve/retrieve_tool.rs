//! Retrieval on demand (`--tools retrieve`, or `search=on` in an arm's `--rag`): the model may
//! call `search_similar_problems(query, k)` when it wants memory, instead of (or besides)
//! having examples put in front of it.
//!
//! The query is embedded with the index's own model (its query template), searched, filtered
//! as the arm's `--rag` says (min-score, exclude-above, and whatever else `retrieve` applies)
//! and the neighbours come back as the tool's output, formatted as the arm's `format` says.
//! Each call counts against `--max-tool-calls`, and the trace records its query, k and hits.
//!
//! Models without tool calling use the fenced equivalent: a block
//! ```` ```search ```` (or ```` ```search_similar_problems ````) whose body is the query; the
//! stream stops at its closing fence and the results follow as an ```` ```output ```` block, as
//! for ```` ```python ```` blocks.

use serde_json::{json, Value};
use std::sync::Arc;

use super::client::RequestedCall;
use super::prompt::{Example, RagSpec};
use super::retrieve::Retriever;
use super::trace::{Retrieved, ToolCall};

/// The function's name, in OpenAI `tools` and in the trace.
pub const SEARCH_TOOL: &str = "search_similar_problems";
/// Neighbours returned when the model does not say how many.
pub const DEFAULT_K: usize = 3;
/// The most neighbours one call returns.
pub const MAX_K: usize = 8;
/// A query longer than this is refused (a model stuck repeating itself).
const MAX_QUERY_BYTES: usize = 20_000;

/// The OpenAI function entry of `search_similar_problems`.
pub fn function_json() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": SEARCH_TOOL,
            "description": "Search a library of solved competition problems for the ones most \
                similar to a query (a problem statement, or the idea or technique you need). \
                Returns each match's problem and its worked solution.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "k": {
                        "type": "integer",
                        "description": format!("How many problems to return (1 to {MAX_K}, \
                            default {DEFAULT_K})."),
                        "minimum": 1,
                        "maximum": MAX_K
                    }
                },
                "required": ["query"]
            }
        }
    })
}

/// The search of one arm: the run's retriever with the arm's filters and format.
pub struct SearchTool {
    retriever: Arc<Retriever>,
    spec: RagSpec,
}

impl std::fmt::Debug for SearchTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchTool")
            .field("spec", &self.spec)
            .finish()
    }
}

impl SearchTool {
    pub fn new(retriever: Arc<Retriever>, spec: &RagSpec) -> Self {
        Self {
            retriever,
            spec: spec.clone(),
        }
    }

    /// Answer one search: the trace record (query, k, hits, and the output the model sees).
    pub fn search(&self, query: &str, k: Option<usize>) -> ToolCall {
        let k = k.unwrap_or(DEFAULT_K).clamp(1, MAX_K);
        let start = std::time::Instant::now();
        let mut record = ToolCall {
            name: Some(SEARCH_TOOL.into()),
            code: query.to_string(),
            query: Some(query.to_string()),
            k: Some(k),
            ..Default::default()
        };
        let found = self.retriever.embed_queries(&[query]).map(|mut v| {
            let spec = RagSpec {
                k,
                ..self.spec.clone()
            };
            self.retriever.retrieve(&v.remove(0), &spec)
        });
        match found {
            Ok(examples) => {
                record.hits = examples
                    .iter()
                    .map(|e| Retrieved {
                        id: e.id.clone(),
                        score: e.score,
                        no_insight: e.sent_as(self.spec.format) != self.spec.format,
                    })
                    .collect();
                record.output = self.output(&examples);
            }
            Err(e) => {
                record.output = format!("error: the search failed ({e:#})");
                record.error = true;
            }
        }
        record.seconds = start.elapsed().as_secs_f64();
        record
    }

    /// The neighbours as the model reads them.
    fn output(&self, examples: &[Example]) -> String {
        if examples.is_empty() {
            return "No similar solved problem was found (none close enough).".into();
        }
        let mut text = format!("{} similar solved problems:\n\n", examples.len());
        for (i, e) in examples.iter().enumerate() {
            text.push_str(&format!("### Result {}\n", i + 1));
            text.push_str(&neighbour_text(e, &self.spec));
            text.push_str("\n\n");
        }
        text.trim_end().to_string()
    }
}

/// One neighbour as text in the arm's format: the single place the tool formats memories, so
/// the memory forms of `--rag format=` apply here as they do in the prompt.
fn neighbour_text(e: &Example, spec: &RagSpec) -> String {
    super::memory::neighbour_text(e, spec.format)
}

/// The query and k of a `search_similar_problems` call, or what is wrong with it (said to the
/// model as the result).
pub fn args_of(call: &RequestedCall) -> Result<(String, Option<usize>), String> {
    let args = &call.function.arguments;
    if args.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the arguments are too long ({} bytes, at most {MAX_QUERY_BYTES}); not searched",
            args.len()
        ));
    }
    let v: Value = serde_json::from_str(args).map_err(|e| {
        format!("the arguments are not valid JSON ({e}); send {{\"query\": \"...\", \"k\": 3}}")
    })?;
    let query = v
        .get("query")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or("the arguments have no \"query\" text; send {\"query\": \"...\", \"k\": 3}")?;
    // Models send k as 3, 3.0 or "3"; anything else falls back to the default.
    let k = match v.get("k") {
        Some(Value::Number(n)) => n.as_f64().map(|f| f.max(1.0) as usize),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok((query.to_string(), k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::client::FunctionCall;

    fn call(arguments: &str) -> RequestedCall {
        RequestedCall {
            id: "s".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: SEARCH_TOOL.into(),
                arguments: arguments.into(),
            },
        }
    }

    #[test]
    fn arguments_are_read_or_the_fault_named() {
        assert_eq!(
            args_of(&call(r#"{"query": " modular inverse ", "k": 2}"#)),
            Ok(("modular inverse".into(), Some(2)))
        );
        assert_eq!(
            args_of(&call(r#"{"query": "x", "k": "4"}"#)).unwrap().1,
            Some(4)
        );
        assert_eq!(args_of(&call(r#"{"query": "x"}"#)).unwrap().1, None);
        for (args, says) in [
            ("{\"query\": ", "not valid JSON"),
            (r#"{"q": "x"}"#, "no \"query\""),
            (r#"{"query": "  "}"#, "no \"query\""),
        ] {
            assert!(args_of(&call(args)).unwrap_err().contains(says), "{args}");
        }
        let f = function_json();
        assert_eq!(f["function"]["name"], SEARCH_TOOL);
        assert_eq!(f["function"]["parameters"]["required"], json!(["query"]));
    }
}
