//! traces.jsonl: one typed line per solved problem and arm. It is the record of what was asked
//! and answered, and the state a killed run resumes from: a line counts as done only for the
//! same [`RunKey`] — everything that changes answers — so a resumed run never mixes answers of
//! another setting into its submission.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::client::{FinishReason, Message, Sampling};
use super::confidence::Confidence;
use super::genselect::SelectTrace;
use super::prompt::RagSpec;
use super::sandbox::SandboxInfo;

/// Everything that changes the answers of an arm. Long texts are kept as hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    pub input_sha256: String,
    /// sha256 of the index's manifest.json (it names every file's hash), when retrieving.
    pub index_manifest_sha256: Option<String>,
    pub rag: RagSpec,
    pub model: String,
    pub system_sha256: Option<String>,
    pub template_sha256: String,
    pub sampling: Sampling,
    pub samples: usize,
    pub agreement: f64,
    pub answer_range: String,
    pub fallback: u64,
    /// How samples are weighed in the vote (earlier versions: a plain majority).
    #[serde(default = "majority")]
    pub vote: String,
    /// `--stop-at N` (earlier versions: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<usize>,
    /// `--select` and its threshold and candidates (earlier versions: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// `--tools python` and its settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolsKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_budget: Option<usize>,
    /// `--exclude`: the problems file's sha256 and the overlap threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<ExcludeKey>,
}

/// What `--exclude` changes: which problems, and how similar counts as the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcludeKey {
    pub problems_sha256: String,
    pub overlap: f64,
}

fn majority() -> String {
    "majority".into()
}

fn fenced() -> String {
    "fenced".into()
}

/// The tool settings that change answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolsKey {
    pub tool: String,
    pub python: String,
    pub max_tool_calls: usize,
    /// `--tool-protocol` (traces from before it ran fenced blocks only).
    #[serde(default = "fenced")]
    pub protocol: String,
    pub output_chars: usize,
    pub timeout_seconds: f64,
    pub memory_mib: u64,
}

impl RunKey {
    /// The first field where an earlier run's key differs from this one.
    pub fn first_difference(&self, other: &RunKey) -> Option<String> {
        let (a, b) = (
            serde_json::to_value(self).ok()?,
            serde_json::to_value(other).ok()?,
        );
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.keys()
            .chain(b.keys())
            .find(|k| a.get(*k) != b.get(*k))
            .cloned()
    }
}

/// sha256 of a text, hex, for [`RunKey`].
pub fn text_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieved {
    pub id: String,
    pub score: f32,
    /// Under `format=insight`: the record had no insight and was sent as `problem`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_insight: bool,
}

/// How the prompt was fitted into the server's context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptFit {
    /// The server's context length, if known.
    pub context: Option<usize>,
    pub prompt_tokens: usize,
    /// `tokenizer`, `server` or `estimate`.
    pub counted_by: String,
    /// Retrieved examples left out to fit, farthest first.
    pub dropped: Vec<String>,
    /// Examples whose solution was shortened to fit.
    pub shortened: Vec<String>,
    /// max_tokens sent, when it had to be lowered below --max-tokens.
    pub max_tokens: Option<usize>,
    /// Requests answered "context length exceeded" and retried with fewer examples.
    pub overflow_retries: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleTrace {
    pub index: usize,
    /// The whole completion (reasoning inside `<think>`), or None when none arrived.
    pub text: Option<String>,
    pub answer: Option<u64>,
    /// `content`, or `reasoning` when only the thinking held an answer.
    pub answer_from: Option<String>,
    pub rejected: Option<String>,
    pub finish_reason: Option<FinishReason>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub seconds: f64,
    pub attempts: usize,
    pub errors: Vec<String>,
    /// Stopped on purpose (early stop, deadline) before the server finished.
    #[serde(default)]
    pub cancelled: bool,
    /// The sample's weight in the vote (1.5 checked by code, 0.5 truncated, see vote.rs).
    #[serde(default = "one")]
    pub weight: f64,
    /// Code blocks run, in order, with what the model was shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The thinking budget ran out and the answer was asked for with a prefill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concluded: bool,
    /// Requests this sample made (tool continuations and the conclusion are rounds).
    #[serde(default, skip_serializing_if = "is_zero_or_one")]
    pub rounds: usize,
    /// Mean token entropy and log-probability, when the server returned log-probs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
    /// With `--rag ...,share=S`: whether this sample's prompt had the retrieved examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_examples: Option<bool>,
}

fn one() -> f64 {
    1.0
}

fn is_zero_or_one(n: &usize) -> bool {
    *n <= 1
}

/// One code execution (a fenced block or a tool call), as recorded in the trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `fenced` (a ```python block) or `openai` (a tool call).
    #[serde(default = "fenced")]
    pub protocol: String,
    /// A tool call's id and function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub code: String,
    /// What the model was shown (already cut to --tool-output-chars).
    pub output: String,
    pub error: bool,
    /// Not run: malformed arguments, an unknown tool, or over --max-tool-calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejected: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
    pub seconds: f64,
    /// Process group of the interpreter that ran it (0 when none started).
    pub pgid: i32,
    /// A `search_similar_problems` call: its query (also in `code`), k and the neighbours
    /// returned (`output` holds them as the model saw them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hits: Vec<Retrieved>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteEntry {
    pub answer: u64,
    pub votes: usize,
    /// Summed sample weights under the problem's vote rule, shown when any sample weighed
    /// other than 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Mean token entropy of this answer's samples, when they all had log-probs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_entropy: Option<f64>,
}

/// One line of traces.jsonl. Its parts are flattened: the JSON keeps one flat object per
/// problem, as in earlier versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub id: String,
    pub arm: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Missing in traces of exemplar versions before resume checking.
    #[serde(default)]
    pub run: Option<RunKey>,
    #[serde(flatten)]
    pub retrieval: RetrievalTrace,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub samples: Vec<SampleTrace>,
    #[serde(default)]
    pub vote: Vec<VoteEntry>,
    /// The rule the vote applied (`majority` when an entropy rule lacked log-probs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_rule: Option<String>,
    /// `--select`: what the selector did with this problem's vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<SelectTrace>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub source: Option<String>,
    #[serde(flatten)]
    pub timing: Timing,
    #[serde(flatten)]
    pub setting: Setting,
}

/// What was retrieved for a problem and what of it reached the prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalTrace {
    pub rag: Option<RagSpec>,
    pub retrieved: Vec<Retrieved>,
    /// Hits left out as the same problem (`--exclude` twins, scores above `exclude-above`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<super::retrieve::Excluded>,
    #[serde(default)]
    pub fit: PromptFit,
}

/// The problem's answer, how it came about and, with `--eval`, whether it is right.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub answer: Option<u64>,
    #[serde(default)]
    pub fallback: bool,
    /// answered, fallback, out_of_time or failed (see outcome.rs); a failed problem is redone
    /// by a re-run. Absent in older traces and dry runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<super::outcome::Status>,
    /// Why the problem has no answer of its own (the first server error, for a failed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub stopped: Option<String>,
    pub expected: Option<u64>,
    pub correct: Option<bool>,
}

/// Where the problem's time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub retrieval_ms: f64,
    pub query_embed_ms: f64,
    pub search_prompt_ms: f64,
    #[serde(default)]
    pub seconds: f64,
    /// Seconds this problem was given (its clamped share of the time left), with a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_seconds: Option<f64>,
}

/// The run's surroundings as they stood for this problem.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// With `--tools python`: the interpreter, numpy/sympy and what the sandbox isolates here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxInfo>,
    /// With `--tools python`: whether OpenAI `tools` were offered and taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_protocol: Option<ToolProtocolInfo>,
    /// With `--serve`: the session this problem was answered in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeInfo>,
}

/// The tool protocol as it stood when a problem was done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolProtocolInfo {
    /// `--tool-protocol`: `auto`, `openai` or `fenced`.
    pub setting: String,
    /// Whether requests still carry `tools` (false after an `auto` fallback).
    pub tools_sent: bool,
    /// The server's refusal of `tools`, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Where a problem stands in a `--serve` session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServeInfo {
    /// Identifies the session (process id and start time).
    pub session: String,
    /// Seconds spent loading the embedding model and the index, once per session.
    pub load_seconds: f64,
    /// How many times they were loaded in this session (always 1).
    pub loads: usize,
    /// 0-based position of the problem in the session.
    pub position: usize,
    /// Seconds this problem was allowed (time left / problems left).
    pub allowed_seconds: Option<f64>,
}

/// The traces file of a run: finished problems read back typed, new lines appended and flushed
/// one by one.
pub struct TraceLog {
    path: PathBuf,
    file: std::fs::File,
}

impl TraceLog {
    /// Open for appending (creating folders), after cutting a line torn by a kill.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        repair_tail(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, t: &Trace) -> Result<()> {
        let line = serde_json::to_string(t)?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Answered problems of `arm` in a traces file, by id (failed ones are left to be redone). A
/// line of the same arm made with another [`RunKey`] is refused, naming the field (`--force`
/// starts a new traces file instead).
pub fn finished(path: &Path, arm: &str, key: &RunKey) -> Result<BTreeMap<String, Trace>> {
    Ok(finished_and_failed(path, arm, key)?.0)
}

/// [`finished`], and the problems whose latest line is a failure (no reply from the server).
pub fn finished_and_failed(path: &Path, arm: &str, key: &RunKey) -> Result<(Done, Done)> {
    let (mut out, mut failed) = (BTreeMap::new(), BTreeMap::new());
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok((out, failed));
    };
    let total = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let t: Trace = match serde_json::from_str(line) {
            Ok(t) => t,
            // A line cut by a kill is the last one: its problem is redone.
            Err(_) if i + 1 == total => break,
            Err(e) => bail!("{}:{}: not a trace line ({e})", path.display(), i + 1),
        };
        if t.arm != arm || t.dry_run || t.verdict.answer.is_none() {
            continue;
        }
        match &t.run {
            Some(k) if k == key => {}
            Some(k) => bail!(
                "{}:{}: made with a different {} than this run; use another --out (or --traces), \
                 or --force to start over (the old traces are kept aside)",
                path.display(),
                i + 1,
                k.first_difference(key).unwrap_or_else(|| "setting".into())
            ),
            None => bail!(
                "{}:{}: written by an older exemplar without a run key; use another --out, or \
                 --force to start over (the old traces are kept aside)",
                path.display(),
                i + 1
            ),
        }
        let (to, from) = match super::outcome::retry_on_resume(&t) {
            true => (&mut failed, &mut out),
            false => (&mut out, &mut failed),
        };
        from.remove(&t.id);
        to.insert(t.id.clone(), t);
    }
    Ok((out, failed))
}

/// Trace lines by problem id.
pub type Done = BTreeMap<String, Trace>;

/// `--force`: move an existing traces file aside (never deleted) so the run starts clean.
pub fn set_aside(path: &Path) -> Result<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = path.with_extension(format!("jsonl.old-{stamp}"));
    std::fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
    Ok(Some(aside))
}

fn repair_tail(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a trace are flattened: one flat JSON object per line, as before they were
    /// grouped, and a line written by an older version still reads.
    #[test]
    fn a_trace_line_stays_one_flat_object_and_reads_back() {
        let mut t = Trace {
            id: "p1".into(),
            arm: "rag k=4".into(),
            source: Some("MATH".into()),
            ..Default::default()
        };
        t.verdict.answer = Some(42);
        t.verdict.expected = Some(42);
        t.verdict.correct = Some(true);
        t.timing.seconds = 1.5;
        t.timing.planned_seconds = Some(300.0);
        t.retrieval.retrieved.push(Retrieved {
            id: "n1".into(),
            score: 0.9,
            no_insight: false,
        });
        let v = serde_json::to_value(&t).unwrap();
        for key in [
            "answer",
            "correct",
            "seconds",
            "planned_seconds",
            "retrieved",
            "fit",
        ] {
            assert!(v.get(key).is_some(), "{key} missing at the top: {v}");
        }
        for part in ["retrieval", "verdict", "timing", "setting"] {
            assert!(v.get(part).is_none(), "{part} nested: {v}");
        }
        assert_eq!(serde_json::from_value::<Trace>(v).unwrap(), t);
        let old = r#"{"id":"a","arm":"bare","rag":null,"retrieved":[],"retrieval_ms":0.1,
            "query_embed_ms":0.0,"search_prompt_ms":0.1,"messages":[],"answer":7,
            "stopped":null,"expected":null,"correct":null,"source":null}"#;
        let t: Trace = serde_json::from_str(old).unwrap();
        assert_eq!((t.verdict.answer, t.timing.retrieval_ms), (Some(7), 0.1));
    }
}
