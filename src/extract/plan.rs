//! The first, model-free pass over the inputs: validate every record, decide the output schema,
//! count rows per shard, and hash the inputs for the manifest. It streams, holding only ids.
//!
//! Everything here is a pure function of the input bytes and the flags, so every node of a Slurm
//! array computes the same plan without talking to the others.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

use crate::corpus::{json_kind, stream_records, RawRecord};

/// How a record becomes the text that is embedded, and which field is its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSpec {
    pub id_field: String,
    /// `{field}` placeholders, e.g. `{problem}` or `Problem: {problem}\nSolution: {solution}`.
    pub doc_template: String,
}

impl TextSpec {
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.doc_template.as_str();
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            match after.find('}') {
                Some(end) => {
                    out.push(after[..end].to_string());
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
        out
    }

    /// The id and the text to embed, or the reason the record cannot be used.
    pub fn apply(
        &self,
        fields: &Map<String, Value>,
    ) -> std::result::Result<(String, String), String> {
        let id = match fields.get(&self.id_field) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(_)) => return Err(format!("empty id field {:?}", self.id_field)),
            Some(other) => {
                return Err(format!(
                    "id field {:?} is {}",
                    self.id_field,
                    json_kind(other)
                ))
            }
            None => return Err(format!("missing id field {:?}", self.id_field)),
        };
        let mut text = self.doc_template.clone();
        for name in self.fields() {
            let value = match fields.get(&name) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Null) | None => String::new(),
                Some(other) => return Err(format!("field {name:?} is {}", json_kind(other))),
            };
            text = text.replace(&format!("{{{name}}}"), &value);
        }
        if text.trim().is_empty() {
            return Err(format!("empty text (template {:?})", self.doc_template));
        }
        Ok((id, text))
    }
}

/// Deterministic shard of an id: FNV-1a 64 of its UTF-8 bytes, modulo the shard count. The same
/// on every run, machine and input order.
pub fn shard_of(id: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % shards as u64) as usize
}

/// Type of a passed-through column, inferred from every value it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Utf8,
    Int64,
    Float64,
    Boolean,
    /// Objects, arrays or mixed types: stored as JSON text.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejection {
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Map<String, Value>>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub inputs: Vec<InputFile>,
    pub columns: Vec<Column>,
    pub rows_per_shard: Vec<usize>,
    pub rejected: Vec<Rejection>,
    /// (file, line) of every rejected record, so the shard pass skips exactly those.
    pub rejected_at: std::collections::HashSet<(std::sync::Arc<str>, usize)>,
}

/// Column names reserved by the shard format.
pub const RESERVED: [&str; 2] = ["id", "embedding"];

pub fn plan(
    paths: &[PathBuf],
    spec: &TextSpec,
    shards: usize,
    skip_bad: bool,
    mut on_record: impl FnMut(),
) -> Result<Plan> {
    let inputs = hash_inputs(paths)?;
    let mut columns = ColumnTypes::default();
    let mut rows_per_shard = vec![0usize; shards];
    let mut first_seen: HashMap<String, String> = HashMap::new();
    let mut rejected = Vec::new();
    let mut rejected_at = std::collections::HashSet::new();

    for raw in stream_records(paths) {
        let raw: RawRecord = raw?;
        on_record();
        let verdict = match &raw.fields {
            Err(reason) => Err((None, reason.clone())),
            Ok(fields) => match spec.apply(fields) {
                Err(reason) => Err((None, reason)),
                Ok((id, _)) => match first_seen.get(&id) {
                    Some(first) => Err((
                        Some(id.clone()),
                        format!("duplicate id {id:?} (first at {first})"),
                    )),
                    None => Ok(id),
                },
            },
        };
        match verdict {
            Ok(id) => {
                first_seen.insert(id.clone(), raw.location());
                rows_per_shard[shard_of(&id, shards)] += 1;
                if let Ok(fields) = &raw.fields {
                    columns.observe(fields, &spec.id_field);
                }
            }
            Err((id, reason)) => {
                if !skip_bad {
                    bail!(
                        "{}: {reason} (use --skip-bad to set such records aside)",
                        raw.location()
                    );
                }
                rejected_at.insert((raw.file.clone(), raw.line));
                rejected.push(Rejection {
                    location: raw.location(),
                    id,
                    reason,
                    record: raw.fields.ok(),
                });
            }
        }
    }
    Ok(Plan {
        inputs,
        columns: columns.finish(),
        rows_per_shard,
        rejected,
        rejected_at,
    })
}

fn hash_inputs(paths: &[PathBuf]) -> Result<Vec<InputFile>> {
    paths
        .iter()
        .map(|p| {
            let d = crate::fsio::hash_file(p)?;
            Ok(InputFile {
                path: p.display().to_string(),
                bytes: d.bytes,
                sha256: d.sha256,
            })
        })
        .collect()
}

/// The passed-through columns in first-seen order, each typed by every value it holds.
#[derive(Default)]
struct ColumnTypes {
    columns: Vec<(String, Option<ColumnType>)>,
    index: HashMap<String, usize>,
}

impl ColumnTypes {
    fn observe(&mut self, fields: &Map<String, Value>, id_field: &str) {
        for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != id_field) {
            let columns = &mut self.columns;
            let idx = *self.index.entry(k.clone()).or_insert_with(|| {
                columns.push((k.clone(), None));
                columns.len() - 1
            });
            self.columns[idx].1 = merge_type(self.columns[idx].1, v);
        }
    }

    fn finish(self) -> Vec<Column> {
        self.columns
            .into_iter()
            .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
            .map(|(name, ty)| Column {
                name,
                ty: ty.unwrap_or(ColumnType::Utf8),
            })
            .collect()
    }
}

fn merge_type(current: Option<ColumnType>, v: &Value) -> Option<ColumnType> {
    let this = match v {
        Value::Null => return current,
        Value::String(_) => ColumnType::Utf8,
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if n.is_i64() => ColumnType::Int64,
        Value::Number(_) => ColumnType::Float64,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
    };
    Some(match (current, this) {
        (None, t) => t,
        (Some(a), b) if a == b => a,
        (Some(ColumnType::Int64), ColumnType::Float64)
        | (Some(ColumnType::Float64), ColumnType::Int64) => ColumnType::Float64,
        _ => ColumnType::Json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_assignment_is_pinned() {
        // Fixed values (FNV-1a 64, computed independently): changing the hash would silently
        // re-split every existing extraction, so this must fail if it ever changes.
        let pinned = [
            ("math/train/algebra/1", 1, 1),
            ("gsm8k/test/17", 1, 0),
            ("aime/2024/I/5", 2, 2),
            ("", 5, 2),
            ("é-unicode-id", 3, 0),
            ("id-0", 5, 1),
            ("id-1", 2, 0),
            ("id-2", 7, 2),
        ];
        for (id, of8, of3) in pinned {
            assert_eq!((shard_of(id, 8), shard_of(id, 3)), (of8, of3), "{id:?}");
        }
        let counts = (0..10_000).fold(vec![0; 8], |mut c, i| {
            c[shard_of(&format!("id-{i}"), 8)] += 1;
            c
        });
        assert!(counts.iter().all(|&c| c > 1000), "unbalanced: {counts:?}");
    }

    #[test]
    fn template_fields_and_errors() {
        let spec = TextSpec {
            id_field: "id".into(),
            doc_template: "P: {problem}\nS: {solution}".into(),
        };
        assert_eq!(spec.fields(), vec!["problem", "solution"]);
        let rec: Map<String, Value> =
            serde_json::from_str(r#"{"id": 7, "problem": "x", "solution": null}"#).unwrap();
        assert_eq!(spec.apply(&rec).unwrap(), ("7".into(), "P: x\nS: ".into()));
        let rec: Map<String, Value> = serde_json::from_str(r#"{"problem": "x"}"#).unwrap();
        assert!(spec.apply(&rec).unwrap_err().contains("missing id"));
    }
}
