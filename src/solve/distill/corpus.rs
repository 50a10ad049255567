//! Reading a solved-problem corpus for `solve distill` (id, problem, solution and answer
//! detected as `embed extract` detects its text) and writing it back with an `insight` field,
//! atomically: JSON lines, or Parquet (a Parquet input keeps its exact schema).

use anyhow::{bail, Context, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::corpus::{input_format, InputFormat};
use crate::extract::plan::{TextChoice, TextSpec};
use crate::extract::template::{chat_path, Template};

/// The field written.
pub const INSIGHT: &str = "insight";
/// Solution fields tried in order, then the last assistant turn of a chat list.
pub const SOLUTION_FIELDS: [&str; 5] = [
    "solution",
    "generated_solution",
    "response",
    "output",
    "completion",
];
/// Final-answer fields tried in order, then the last `\boxed{}` of the solution.
pub const ANSWER_FIELDS: [&str; 3] = ["answer", "expected_answer", "final_answer"];

/// Which fields hold what (flags; unset ones are detected on the first record).
#[derive(Debug, Clone, Default)]
pub struct FieldChoice {
    pub id: Option<String>,
    pub problem: Option<String>,
    pub solution: Option<String>,
    pub answer: Option<String>,
}

/// What one record asks of the model.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub problem: String,
    pub solution: String,
    pub answer: String,
}

impl Item {
    /// A short hash of what the request is made of: a resumed entry counts only for the same
    /// record content.
    pub fn content_sha(&self) -> String {
        let all = format!("{}\u{0}{}\u{0}{}", self.problem, self.solution, self.answer);
        super::super::trace::text_sha256(&all)[..16].to_string()
    }
}

/// The corpus in input order: every record as it was read, and what it asks.
pub struct Corpus {
    pub rows: Vec<Map<String, Value>>,
    pub items: Vec<Item>,
    /// What was detected rather than given, one line each for the log.
    pub notes: Vec<String>,
}

/// The template that picks the solution out of a record like `first`.
fn detect_solution(first: &Map<String, Value>) -> Option<String> {
    let plain = SOLUTION_FIELDS
        .iter()
        .find(|f| first.get(**f).is_some_and(Value::is_string));
    if let Some(f) = plain {
        return Some(format!("{{{f}}}"));
    }
    ["messages", "conversations"].iter().find_map(|f| {
        let user = chat_path(f, first.get(*f)?)?;
        Some(
            user.replace("[role=user]", "[role=assistant]")
                .replace("[from=human]", "[from=gpt]"),
        )
    })
}

/// Field templates resolved on the first record.
struct Spec {
    text: TextSpec,
    solution: String,
    answer: Option<String>,
}

fn resolve(
    choice: &FieldChoice,
    first: &Map<String, Value>,
    loc: &str,
) -> Result<(Spec, Vec<String>)> {
    let (text, mut notes) = TextChoice {
        id_field: choice.id.clone(),
        text_field: choice.problem.clone(),
        doc_template: None,
    }
    .resolve(first, loc)?;
    let solution = match &choice.solution {
        Some(f) => format!("{{{f}}}"),
        None => {
            let t = detect_solution(first).with_context(|| {
                format!(
                    "{loc}: no solution field found: looked for {} and the last assistant turn \
                     of messages/conversations; choose one with --solution-field NAME",
                    SOLUTION_FIELDS.join(", ")
                )
            })?;
            if t != "{solution}" {
                notes.push(format!(
                    "solution: {t} (detected; --solution-field to choose)"
                ));
            }
            t
        }
    };
    let answer = match &choice.answer {
        Some(f) => Some(format!("{{{f}}}")),
        None => ANSWER_FIELDS
            .iter()
            .find(|f| first.contains_key(**f))
            .map(|f| format!("{{{f}}}")),
    };
    if answer.is_none() {
        notes.push("answer: the last \\boxed{} of each solution (no answer field)".into());
    }
    Ok((
        Spec {
            text,
            solution,
            answer,
        },
        notes,
    ))
}

/// Read every record; a malformed record, a duplicate id or a record without problem text stops
/// the run with its location (a record without a solution becomes a failure of its own).
pub fn read(path: &Path, choice: &FieldChoice) -> Result<Corpus> {
    let mut corpus = Corpus {
        rows: Vec::new(),
        items: Vec::new(),
        notes: Vec::new(),
    };
    let mut spec: Option<Spec> = None;
    let mut seen: HashMap<String, String> = HashMap::new();
    for raw in crate::corpus::stream_records(&[path.to_path_buf()]) {
        let raw = raw?;
        let loc = raw.location();
        let fields = raw.fields.map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        if spec.is_none() {
            let (s, notes) = resolve(choice, &fields, &loc)?;
            corpus.notes = notes;
            spec = Some(s);
        }
        let s = spec.as_ref().expect("resolved above");
        let (id, problem, _) = s
            .text
            .apply_at(&fields, &raw.file, raw.line)
            .map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        if let Some(first) = seen.insert(id.clone(), loc.clone()) {
            bail!("{loc}: duplicate id {id:?} (first at {first}); distill keys its progress by id");
        }
        let solution = Template::parse(&s.solution).render(&fields).text;
        let answer = match &s.answer {
            Some(t) => Template::parse(t).render(&fields).text,
            None => crate::solve::answer::boxed_contents(&solution)
                .pop()
                .unwrap_or_default(),
        };
        corpus.items.push(Item {
            id,
            problem,
            solution,
            answer,
        });
        corpus.rows.push(fields);
    }
    if corpus.items.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(corpus)
}

/// The output format an `--out` path asks for.
pub fn out_format(out: &Path) -> Result<InputFormat> {
    match input_format(out) {
        Ok(f @ (InputFormat::Jsonl | InputFormat::Parquet)) => Ok(f),
        _ => bail!(
            "--out {}: expected a .jsonl or .parquet file name",
            out.display()
        ),
    }
}

/// Write the corpus to `out` with `insights[i]` as row i's `insight` (null where none),
/// replacing any earlier `insight`, atomically.
pub fn write(input: &Path, corpus: &Corpus, insights: &[Option<String>], out: &Path) -> Result<()> {
    match (input_format(input)?, out_format(out)?) {
        (InputFormat::Parquet, InputFormat::Parquet) => write_parquet_like(input, insights, out),
        (_, InputFormat::Parquet) => write_parquet_rows(&corpus.rows, insights, out),
        _ => crate::fsio::write_atomically(out, |w| {
            for (row, insight) in corpus.rows.iter().zip(insights) {
                let mut row = row.clone();
                row.insert(
                    INSIGHT.into(),
                    insight.clone().map_or(Value::Null, Value::String),
                );
                serde_json::to_writer(&mut *w, &row)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        }),
    }
}

/// A Parquet input's own batches, its `insight` column replaced: every type kept as it was.
fn write_parquet_like(input: &Path, insights: &[Option<String>], out: &Path) -> Result<()> {
    let file =
        std::fs::File::open(input).with_context(|| format!("{}: cannot open", input.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut batches = Vec::new();
    let mut row = 0;
    for batch in reader {
        let batch = batch?;
        let n = batch.num_rows();
        let column: StringArray = insights[row..row + n]
            .iter()
            .map(|i| i.as_deref())
            .collect();
        row += n;
        let schema = batch.schema();
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (f, c) in schema.fields().iter().zip(batch.columns()) {
            if f.name() != INSIGHT {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
        fields.push(Field::new(INSIGHT, DataType::Utf8, true));
        columns.push(Arc::new(column));
        batches.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    write_batches(out, batches)
}

fn write_batches(out: &Path, batches: Vec<RecordBatch>) -> Result<()> {
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        bail!("nothing to write to {}", out.display());
    };
    crate::fsio::create_atomically(out, |file| {
        let mut w = ArrowWriter::try_new(file, schema, None)?;
        for b in &batches {
            w.write(b)?;
        }
        Ok((w.into_inner()?, ()))
    })
}

/// The Arrow type of a column from its values: int64, float64 or boolean when every non-null
/// value is one, else utf8 (objects and arrays as JSON text), as `embed extract` types them.
fn column_type<'a>(values: impl Iterator<Item = &'a Value>) -> DataType {
    let mut ty: Option<DataType> = None;
    for v in values {
        let this = match v {
            Value::Null => continue,
            Value::Number(n) if n.is_i64() => DataType::Int64,
            Value::Number(_) => DataType::Float64,
            Value::Bool(_) => DataType::Boolean,
            _ => return DataType::Utf8,
        };
        ty = Some(match (ty, this) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(DataType::Int64 | DataType::Float64), DataType::Int64 | DataType::Float64) => {
                DataType::Float64
            }
            _ => return DataType::Utf8,
        });
    }
    ty.unwrap_or(DataType::Utf8)
}

/// JSON records (from a JSON-lines or CSV input) as one Parquet file.
fn write_parquet_rows(
    rows: &[Map<String, Value>],
    insights: &[Option<String>],
    out: &Path,
) -> Result<()> {
    let mut names: Vec<&String> = Vec::new();
    for r in rows {
        for k in r.keys().filter(|k| k.as_str() != INSIGHT) {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for name in names {
        let cells = || rows.iter().map(|r| r.get(name).unwrap_or(&Value::Null));
        let ty = column_type(cells());
        columns.push(match ty {
            DataType::Int64 => {
                let mut b = Int64Builder::new();
                cells().for_each(|v| b.append_option(v.as_i64()));
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::new();
                cells().for_each(|v| b.append_option(v.as_f64()));
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::new();
                cells().for_each(|v| b.append_option(v.as_bool()));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                cells().for_each(|v| match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    other => b.append_value(other.to_string()),
                });
                Arc::new(b.finish())
            }
        });
        fields.push(Field::new(name, ty, true));
    }
    let insight: StringArray = insights.iter().map(|i| i.as_deref()).collect();
    fields.push(Field::new(INSIGHT, DataType::Utf8, true));
    columns.push(Arc::new(insight));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    debug_assert_eq!(batch.num_rows(), rows.len());
    write_batches(out, vec![batch])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_typed_from_their_values() {
        let t = |vs: Vec<Value>| column_type(vs.iter());
        assert_eq!(t(vec![json!(1), Value::Null, json!(2)]), DataType::Int64);
        assert_eq!(t(vec![json!(1), json!(2.5)]), DataType::Float64);
        assert_eq!(t(vec![json!(true)]), DataType::Boolean);
        assert_eq!(t(vec![json!(1), json!("a")]), DataType::Utf8);
        assert_eq!(t(vec![json!({"a": 1})]), DataType::Utf8);
        assert_eq!(t(vec![Value::Null]), DataType::Utf8);
    }

    #[test]
    fn the_solution_is_detected_in_fields_and_chats() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            detect_solution(&m(json!({"generated_solution": "s"}))).unwrap(),
            "{generated_solution}"
        );
        let chat = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]});
        assert_eq!(
            detect_solution(&m(chat)).unwrap(),
            "{messages[role=assistant][-1].content}"
        );
        assert!(detect_solution(&m(json!({"problem": "q"}))).is_none());
    }
}
