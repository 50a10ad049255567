//! `solve --out submission.parquet`: the submission as the AIMO 3 gateway reads it, one row per
//! answered problem with `id` (string) and `answer` (int64), in input order.

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::problems::Problem;

pub(super) fn write(
    path: &Path,
    problems: &[Problem],
    answers: &BTreeMap<String, u64>,
) -> Result<()> {
    let mut rows: Vec<(&str, i64)> = Vec::with_capacity(answers.len());
    for p in problems {
        if let Some(&a) = answers.get(&p.id) {
            let a = i64::try_from(a)
                .with_context(|| format!("{}: answer {a} does not fit an int64", p.id))?;
            rows.push((p.id.as_str(), a));
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("answer", DataType::Int64, false),
    ]));
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
    let batch = RecordBatch::try_new(schema.clone(), vec![ids, values])?;
    // A submission is small: build it in memory, then write the bytes atomically.
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(&mut bytes, schema, None)?;
    w.write(&batch)?;
    w.close()
        .with_context(|| format!("{}: writing Parquet", path.display()))?;
    crate::fsio::write_atomically(path, |out| Ok(out.write_all(&bytes)?))
}
