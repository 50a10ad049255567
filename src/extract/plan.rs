//! The first, model-free pass over the inputs: validate every record, decide the output schema,
//! count rows per shard, and hash the inputs for the manifest. It streams, holding only ids.
//!
//! Everything here is a pure function of the input bytes and the flags, so every node of a Slurm
//! array computes the same plan without talking to the others.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

use super::template::Template;
use crate::corpus::{json_kind, stream_records, RawRecord};

/// How a record becomes the text that is embedded, and which field is its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSpec {
    /// A field name, or [`LINE_IDS`]: ids made from the file name and line (or row) number.
    pub id_field: String,
    /// `{path}` placeholders, e.g. `{problem}`, `Problem: {problem}\nSolution: {solution}` or
    /// `{messages[-1].content}` (see [`super::template`]).
    pub doc_template: String,
}

/// `id_field` of records that have no id: `FILE:LINE`, the file's name (not its folder, so a
/// moved file keeps its ids) and the line (JSON lines, CSV) or 1-based row (Parquet).
pub const LINE_IDS: &str = "{file}:{line}";

/// What the flags say about ids and text; unset parts are detected from the first record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextChoice {
    pub id_field: Option<String>,
    pub text_field: Option<String>,
    pub doc_template: Option<String>,
}

/// Fields tried, in order, when neither --text-field nor --doc-template is given.
pub const TEXT_FIELDS: [&str; 4] = ["problem", "question", "prompt", "text"];
/// Chat lists whose last user turn is the text when none of [`TEXT_FIELDS`] is there.
pub const CHAT_FIELDS: [&str; 2] = ["messages", "conversations"];

impl TextChoice {
    /// The spec for a corpus whose first usable record is `first` (at `loc`), and a line for
    /// the log for each thing that was detected rather than given.
    pub fn resolve(
        &self,
        first: &Map<String, Value>,
        loc: &str,
    ) -> Result<(TextSpec, Vec<String>)> {
        let mut notes = Vec::new();
        let id_field = match &self.id_field {
            Some(f) => f.clone(),
            None if first.contains_key("id") => "id".into(),
            None => {
                notes.push(format!(
                    "records have no \"id\" field: ids are FILE:LINE (the first is {}); \
                     --id-field NAME to use a field",
                    line_id(loc_file(loc), loc_line(loc))
                ));
                LINE_IDS.into()
            }
        };
        let doc_template = match (&self.doc_template, &self.text_field) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => format!("{{{f}}}"),
            (None, None) => {
                let t = detect_text(first).with_context(|| {
                    format!(
                        "{loc}: no text field found: looked for {}, or a {} list of \
                         {{role, content}} turns with a user turn; this record has fields {}. \
                         Choose one with --text-field NAME or --doc-template \"{{NAME}}\"",
                        TEXT_FIELDS.join(", "),
                        CHAT_FIELDS.join("/"),
                        field_list(first.keys())
                    )
                })?;
                if t != "{problem}" {
                    notes.push(format!(
                        "text: {t} (detected; --text-field or --doc-template to choose)"
                    ));
                }
                t
            }
        };
        Ok((
            TextSpec {
                id_field,
                doc_template,
            },
            notes,
        ))
    }
}

/// The template of the first known text field of a record.
fn detect_text(fields: &Map<String, Value>) -> Option<String> {
    let plain = TEXT_FIELDS
        .iter()
        .find(|f| fields.get(**f).is_some_and(Value::is_string));
    if let Some(f) = plain {
        return Some(format!("{{{f}}}"));
    }
    CHAT_FIELDS
        .iter()
        .find_map(|f| super::template::chat_path(f, fields.get(*f)?))
}

/// Field names quoted and comma-separated (at most 40).
pub fn field_list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if names.is_empty() {
        return "(none)".into();
    }
    let more = names.len().saturating_sub(40);
    let mut s = names[..names.len().min(40)].join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

fn loc_file(loc: &str) -> &str {
    loc.rsplit_once(':').map_or(loc, |(f, _)| f)
}

fn loc_line(loc: &str) -> usize {
    loc.rsplit_once(':')
        .and_then(|(_, l)| l.parse().ok())
        .unwrap_or(0)
}

/// The id of a record without one: `NAME:LINE`, NAME the file's last path component.
pub fn line_id(file: &str, line: usize) -> String {
    format!(
        "{}:{line}",
        crate::fsio::file_name(std::path::Path::new(file))
    )
}

impl TextSpec {
    /// The template's placeholders as written.
    pub fn fields(&self) -> Vec<String> {
        Template::parse(&self.doc_template).placeholders()
    }

    /// The id and the text to embed, or the reason the record cannot be used. For specs with
    /// [`LINE_IDS`] use [`TextSpec::apply_at`].
    pub fn apply(
        &self,
        fields: &Map<String, Value>,
    ) -> std::result::Result<(String, String), String> {
        self.apply_at(fields, "", 0).map(|(id, text, _)| (id, text))
    }

    /// [`TextSpec::apply`] for the record at `file:line`; also returns which placeholders
    /// (by position) found nothing in this record.
    pub fn apply_at(
        &self,
        fields: &Map<String, Value>,
        file: &str,
        line: usize,
    ) -> std::result::Result<(String, String, Vec<usize>), String> {
        let id = if self.id_field == LINE_IDS {
            line_id(file, line)
        } else {
            match fields.get(&self.id_field) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(_)) => {
                    return Err(format!("empty id field {:?}", self.id_field))
                }
                Some(other) => {
                    return Err(format!(
                        "id field {:?} is {}",
                        self.id_field,
                        json_kind(other)
                    ))
                }
                None => {
                    return Err(format!(
                        "missing id field {:?} (fields: {})",
                        self.id_field,
                        field_list(fields.keys())
                    ))
                }
            }
        };
        let template = Template::parse(&self.doc_template);
        let out = template.render(fields);
        if out.text.trim().is_empty() {
            let names = template.placeholders();
            let missing: Vec<String> = out.missing.iter().map(|&k| names[k].clone()).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "empty text: the template {:?} names {}, which this record does not have \
                     (fields: {})",
                    self.doc_template,
                    missing
                        .iter()
                        .map(|m| format!("{{{m}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    field_list(fields.keys())
                ));
            }
            return Err(format!("empty text (template {:?})", self.doc_template));
        }
        Ok((id, out.text, out.missing))
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
    /// The ids and text the records get (flags, completed by detection on the first record).
    pub text: TextSpec,
    /// What was detected rather than given, one line each for the log.
    pub notes: Vec<String>,
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
    choice: &TextChoice,
    shards: usize,
    skip_bad: bool,
    mut on_record: impl FnMut(),
) -> Result<Plan> {
    let inputs = hash_inputs(paths)?;
    let mut scan = Scan::new(shards);
    for raw in stream_records(paths) {
        let raw: RawRecord = raw?;
        on_record();
        if let (None, Ok(fields)) = (&scan.spec, &raw.fields) {
            let (spec, notes) = choice.resolve(fields, &raw.location())?;
            check_line_ids(&spec, paths)?;
            scan.found = vec![false; spec.fields().len()];
            scan.spec = Some(spec);
            scan.notes = notes;
        }
        if let Err((id, reason)) = scan.record(&raw) {
            if !skip_bad {
                let hint = if reason.starts_with("empty text") {
                    "use --skip-bad to set such records aside, or --text-field / --doc-template \
                     to choose the text"
                } else {
                    "use --skip-bad to set such records aside"
                };
                bail!("{}: {reason} ({hint})", raw.location());
            }
            scan.rejected_at.insert((raw.file.clone(), raw.line));
            scan.rejected.push(Rejection {
                location: raw.location(),
                id,
                reason,
                record: raw.fields.ok(),
            });
        }
    }
    scan.finish(inputs)
}

/// Ids from file names must not clash: two inputs of the same name are refused.
fn check_line_ids(spec: &TextSpec, paths: &[PathBuf]) -> Result<()> {
    if spec.id_field != LINE_IDS {
        return Ok(());
    }
    let mut seen = HashMap::new();
    for p in paths {
        let name = crate::fsio::file_name(p);
        if let Some(first) = seen.insert(name.clone(), p) {
            bail!(
                "--input {} and --input {} are both named {name:?}: ids made from the file name \
                 and line would clash; give --id-field, or rename one",
                first.display(),
                p.display()
            );
        }
    }
    Ok(())
}

/// The state of the first pass.
struct Scan {
    spec: Option<TextSpec>,
    notes: Vec<String>,
    /// Whether each template placeholder found a value in at least one record.
    found: Vec<bool>,
    /// Every field name seen, in first-seen order (for messages that list them).
    names: Vec<String>,
    name_set: std::collections::HashSet<String>,
    columns: ColumnTypes,
    rows_per_shard: Vec<usize>,
    first_seen: HashMap<String, String>,
    rejected: Vec<Rejection>,
    rejected_at: std::collections::HashSet<(std::sync::Arc<str>, usize)>,
}

type Verdict = std::result::Result<String, (Option<String>, String)>;

impl Scan {
    fn new(shards: usize) -> Self {
        Self {
            spec: None,
            notes: Vec::new(),
            found: Vec::new(),
            names: Vec::new(),
            name_set: Default::default(),
            columns: ColumnTypes::default(),
            rows_per_shard: vec![0; shards],
            first_seen: HashMap::new(),
            rejected: Vec::new(),
            rejected_at: Default::default(),
        }
    }

    /// Check one record; a usable one is counted into its shard.
    fn record(&mut self, raw: &RawRecord) -> Verdict {
        let fields = raw.fields.as_ref().map_err(|r| (None, r.clone()))?;
        for k in fields.keys() {
            if !self.name_set.contains(k) {
                self.name_set.insert(k.clone());
                self.names.push(k.clone());
            }
        }
        let spec = self
            .spec
            .as_ref()
            .expect("resolved on the first readable record");
        let (id, _, missing) = spec
            .apply_at(fields, &raw.file, raw.line)
            .map_err(|r| (None, r))?;
        if let Some(first) = self.first_seen.get(&id) {
            return Err((
                Some(id.clone()),
                format!("duplicate id {id:?} (first at {first})"),
            ));
        }
        for (k, f) in self.found.iter_mut().enumerate() {
            *f |= !missing.contains(&k);
        }
        self.first_seen.insert(id.clone(), raw.location());
        let n = self.rows_per_shard.len();
        self.rows_per_shard[shard_of(&id, n)] += 1;
        self.columns.observe(fields, &spec.id_field);
        Ok(id)
    }

    /// A template placeholder that no record has is a flag mistake (a typo), not bad data.
    fn finish(self, inputs: Vec<InputFile>) -> Result<Plan> {
        let text = self.spec.unwrap_or_else(|| TextSpec {
            id_field: "id".into(),
            doc_template: "{problem}".into(),
        });
        let names = text.fields();
        let unknown: Vec<String> = self
            .found
            .iter()
            .zip(&names)
            .filter(|(f, _)| !**f)
            .map(|(_, n)| format!("{{{n}}}"))
            .collect();
        if !unknown.is_empty() && !self.names.is_empty() {
            bail!(
                "the template {:?} names {}, which no record has; the records have fields {}",
                text.doc_template,
                unknown.join(", "),
                field_list(self.names.iter())
            );
        }
        Ok(Plan {
            inputs,
            text,
            notes: self.notes,
            columns: self.columns.finish(),
            rows_per_shard: self.rows_per_shard,
            rejected: self.rejected,
            rejected_at: self.rejected_at,
        })
    }
}

/// Size, sha256 and canonical path of each input (the path as given when it cannot be
/// resolved): a job is the same whatever path names its files.
fn hash_inputs(paths: &[PathBuf]) -> Result<Vec<InputFile>> {
    paths
        .iter()
        .map(|p| {
            let d = crate::fsio::hash_file(p)?;
            Ok(InputFile {
                path: crate::fsio::canonical(p).display().to_string(),
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
