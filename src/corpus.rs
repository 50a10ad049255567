//! Reading input files into records, with errors that name the file and line.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One parsed line of a JSON-lines file.
#[derive(Debug, Clone)]
pub struct JsonLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// Read a JSON-lines file of objects. Blank lines are skipped; a line that is not UTF-8, not JSON
/// or not an object stops with `file:line: reason`.
pub fn read_jsonl(path: &Path) -> Result<Vec<JsonLine>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("{}: read error", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        out.extend(parse_jsonl_line(path, line_no, &buf)?);
    }
    Ok(out)
}

/// Parse one raw line; `Ok(None)` for a blank line.
pub fn parse_jsonl_line(path: &Path, line: usize, raw: &[u8]) -> Result<Option<JsonLine>> {
    let text = std::str::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!(
            "{}:{line}: not valid UTF-8 (byte {})",
            path.display(),
            e.valid_up_to() + 1
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}:{line}: invalid JSON: {e}", path.display()))?;
    match value {
        Value::Object(fields) => Ok(Some(JsonLine { line, fields })),
        other => bail!(
            "{}:{line}: expected a JSON object, found {}",
            path.display(),
            json_kind(&other)
        ),
    }
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field as text: strings as they are, numbers written out (ids are often numeric).
pub fn field_as_text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `{"id": .., "text": ..}` lines, as `embed encode` takes them. Ids must be unique and texts
/// non-empty; each problem is reported with its line.
pub fn read_id_text_jsonl(path: &Path) -> Result<Vec<(String, String)>> {
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::new();
    for JsonLine { line, fields } in read_jsonl(path)? {
        let where_ = format!("{}:{line}", path.display());
        let id = field_as_text(&fields, "id")
            .with_context(|| format!("{where_}: missing \"id\" (a string or number)"))?;
        let text = match fields.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => bail!(
                "{where_}: field \"text\" is {}, expected a string",
                json_kind(other)
            ),
            None => bail!("{where_}: missing field \"text\""),
        };
        if text.trim().is_empty() {
            bail!("{where_}: field \"text\" is empty (id {id:?})");
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            bail!("{where_}: duplicate id {id:?} (first seen on line {first})");
        }
        out.push((id, text));
    }
    Ok(out)
}
