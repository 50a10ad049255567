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

/// Every record of one file with its location and id, or the error naming its line: the
/// common first step of reading problems (`solve`) and labelled queries (`eval-retrieval`).
pub fn records_with_ids(
    path: &Path,
) -> impl Iterator<Item = Result<(String, String, Map<String, Value>)>> {
    let records: RecordIter = match open_records(path) {
        Ok(it) => it,
        Err(e) => Box::new(std::iter::once(Err(e))),
    };
    records.map(|raw| {
        let raw = raw?;
        let loc = raw.location();
        let fields = raw.fields.map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        let id = field_as_text(&fields, "id").with_context(|| format!("{loc}: missing \"id\""))?;
        Ok((loc, id, fields))
    })
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

/// One record read from an input file, or the reason it could not be read. `line` is the line
/// number for JSON lines and CSV, the 1-based row number for Parquet.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub file: std::sync::Arc<str>,
    pub line: usize,
    pub fields: std::result::Result<Map<String, Value>, String>,
}

impl RawRecord {
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Jsonl,
    Csv,
    Parquet,
}

pub fn input_format(path: &Path) -> Result<InputFormat> {
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        Ok(InputFormat::Jsonl)
    } else if name.ends_with(".csv") {
        Ok(InputFormat::Csv)
    } else if name.ends_with(".parquet") {
        Ok(InputFormat::Parquet)
    } else {
        bail!(
            "{}: unknown input format (expected .jsonl, .csv or .parquet)",
            path.display()
        )
    }
}

/// Stream the records of several files in order, never holding more than one Parquet batch.
/// I/O errors (a file that cannot be opened or read) end the stream with an `Err`; a malformed
/// record is an `Ok(RawRecord)` whose `fields` holds the reason, so the caller decides whether
/// to stop or to skip it.
pub fn stream_records(
    paths: &[std::path::PathBuf],
) -> impl Iterator<Item = Result<RawRecord>> + '_ {
    paths.iter().flat_map(|p| match open_records(p) {
        Ok(it) => it,
        Err(e) => Box::new(std::iter::once(Err(e))),
    })
}

type RecordIter = Box<dyn Iterator<Item = Result<RawRecord>> + Send>;

fn open_records(path: &Path) -> Result<RecordIter> {
    let file_name: std::sync::Arc<str> = path.display().to_string().into();
    let open =
        || std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()));
    match input_format(path)? {
        InputFormat::Jsonl => {
            let mut reader = BufReader::new(open()?);
            let mut line = 0usize;
            let mut buf = Vec::new();
            let path = path.to_path_buf();
            Ok(Box::new(std::iter::from_fn(move || loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Err(e) => {
                        return Some(Err(anyhow::anyhow!("{}: read error: {e}", path.display())))
                    }
                    Ok(0) => return None,
                    Ok(_) => {}
                }
                line += 1;
                let fields = match parse_jsonl_line(&path, line, &buf) {
                    Ok(None) => continue,
                    Ok(Some(l)) => Ok(l.fields),
                    Err(e) => Err(strip_location(&e.to_string())),
                };
                return Some(Ok(RawRecord {
                    file: file_name.clone(),
                    line,
                    fields,
                }));
            })))
        }
        InputFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(open()?);
            let headers: Vec<String> = reader
                .headers()
                .with_context(|| format!("{}:1: cannot read the CSV header", path.display()))?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut records = reader.into_byte_records();
            Ok(Box::new(std::iter::from_fn(move || {
                let rec = records.next()?;
                Some(Ok(match rec {
                    Ok(r) => {
                        let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                        let mut fields = Map::new();
                        let mut bad = None;
                        for (h, v) in headers.iter().zip(r.iter()) {
                            match std::str::from_utf8(v) {
                                Ok(s) => {
                                    fields.insert(h.clone(), Value::String(s.to_owned()));
                                }
                                Err(_) => bad = Some(format!("field {h:?} is not valid UTF-8")),
                            }
                        }
                        RawRecord {
                            file: file_name.clone(),
                            line,
                            fields: bad.map_or(Ok(fields), Err),
                        }
                    }
                    Err(e) => {
                        let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                        RawRecord {
                            file: file_name.clone(),
                            line,
                            fields: Err(format!("malformed CSV: {}", csv_reason(&e))),
                        }
                    }
                }))
            })))
        }
        InputFormat::Parquet => parquet_records(path, file_name),
    }
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => e.to_string(),
    }
}

/// `parse_jsonl_line` errors start with `file:line: `; the stream carries the location apart.
fn strip_location(msg: &str) -> String {
    match msg.split_once(": ") {
        Some((loc, rest))
            if loc
                .rsplit(':')
                .next()
                .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            rest.to_string()
        }
        _ => msg.to_string(),
    }
}

fn parquet_records(path: &Path, file_name: std::sync::Arc<str>) -> Result<RecordIter> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?
        .with_batch_size(1024)
        .build()?;
    let path = path.to_path_buf();
    let mut row = 0usize;
    let mut pending: std::collections::VecDeque<RawRecord> = Default::default();
    let mut batches = reader;
    Ok(Box::new(std::iter::from_fn(move || loop {
        if let Some(r) = pending.pop_front() {
            return Some(Ok(r));
        }
        let batch = match batches.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(anyhow::anyhow!("{}: {e}", path.display()))),
        };
        for i in 0..batch.num_rows() {
            row += 1;
            pending.push_back(RawRecord {
                file: file_name.clone(),
                line: row,
                fields: Ok(crate::arrow_json::row_json(&batch, i, &[])),
            });
        }
    })))
}
