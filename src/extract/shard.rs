//! The embedding shard format: Parquet with `id` (utf8), `embedding`
//! (fixed_size_list<float32>[dim]) and the record's other fields passed through.
//!
//! A shard is built from part files committed every `--checkpoint-rows` rows (each written to a
//! temporary name, then renamed), and merged into `shard-KKKKK-of-NNNNN.parquet` at the end. A
//! kill loses at most the uncommitted part; the final name only ever holds a whole shard.

use anyhow::{bail, Context, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeListArray, Float32Array, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plan::{Column, ColumnType};

pub fn shard_name(k: usize, n: usize) -> String {
    format!("shard-{k:05}-of-{n:05}")
}

pub fn schema(dim: usize, columns: &[Column]) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ];
    for c in columns {
        let ty = match c.ty {
            ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
        };
        fields.push(Field::new(&c.name, ty, true));
    }
    Arc::new(Schema::new(fields))
}

/// One embedded record on its way to disk.
pub struct Row {
    pub id: String,
    pub fields: Map<String, Value>,
    pub vector: Vec<f32>,
}

pub fn to_batch(
    schema: &SchemaRef,
    columns: &[Column],
    dim: usize,
    rows: &[Row],
) -> Result<RecordBatch> {
    let mut ids = StringBuilder::new();
    let mut values = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        ids.append_value(&r.id);
        if r.vector.len() != dim {
            bail!(
                "record {:?}: vector has {} values, expected {dim}",
                r.id,
                r.vector.len()
            );
        }
        values.extend_from_slice(&r.vector);
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), None)?;
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(embedding)];
    for c in columns {
        let cell = |r: &Row| r.fields.get(&c.name).filter(|v| !v.is_null()).cloned();
        let array: ArrayRef = match c.ty {
            ColumnType::Utf8 | ColumnType::Json => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match cell(r) {
                        Some(Value::String(s)) => b.append_value(s),
                        Some(other) => b.append_value(other.to_string()),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Int64 => {
                let mut b = Int64Builder::new();
                for r in rows {
                    b.append_option(cell(r).and_then(|v| v.as_i64()));
                }
                Arc::new(b.finish())
            }
            ColumnType::Float64 => {
                let mut b = Float64Builder::new();
                for r in rows {
                    b.append_option(cell(r).and_then(|v| v.as_f64()));
                }
                Arc::new(b.finish())
            }
            ColumnType::Boolean => {
                let mut b = BooleanBuilder::new();
                for r in rows {
                    b.append_option(cell(r).and_then(|v| v.as_bool()));
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

fn writer_props() -> WriterProperties {
    // Embeddings barely compress; Snappy keeps the text columns small at almost no CPU cost.
    WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build()
}

/// Write `batches` to `path` atomically (see [`crate::fsio::create_atomically`]).
pub fn write_parquet(path: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    crate::fsio::create_atomically(path, |file| {
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(writer_props()))?;
        for b in batches {
            w.write(b)?;
        }
        Ok((w.into_inner()?, ()))
    })
}

/// Row count of a Parquet file from its footer, without reading the data.
pub fn parquet_rows(path: &Path) -> Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    Ok(b.metadata().file_metadata().num_rows() as usize)
}

/// The committed part files of a shard, in order. Leftover temporary files of a killed run are
/// removed: their rows were never counted as done.
pub fn committed_parts(parts_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    if !parts_dir.is_dir() {
        return Ok(parts);
    }
    for entry in std::fs::read_dir(parts_dir)? {
        let p = entry?.path();
        let name = crate::fsio::file_name(&p);
        if name.ends_with(".tmp") {
            std::fs::remove_file(&p)?;
        } else if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(p);
        }
    }
    parts.sort();
    Ok(parts)
}

/// Concatenate the part files into the final shard file (atomically), streaming batch by batch.
pub fn merge_parts(parts: &[PathBuf], dest: &Path, schema: &SchemaRef) -> Result<usize> {
    crate::fsio::create_atomically(dest, |file| {
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(writer_props()))?;
        let mut rows = 0;
        for p in parts {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .with_context(|| format!("{}: unreadable part", p.display()))?
                .build()?;
            for batch in reader {
                let batch = batch.with_context(|| format!("reading {}", p.display()))?;
                rows += batch.num_rows();
                w.write(&batch)?;
            }
        }
        Ok((w.into_inner()?, rows))
    })
}

/// The `embedding` column of a shard batch as one flat row-major slice, checked against `dim`.
/// Shared by every reader of shards (index build, plot).
pub fn embedding_values<'a>(batch: &'a RecordBatch, dim: usize, path: &Path) -> Result<&'a [f32]> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float32Type;
    let emb = batch
        .column_by_name("embedding")
        .with_context(|| format!("{}: no embedding column", path.display()))?
        .as_fixed_size_list_opt()
        .with_context(|| format!("{}: embedding is not a fixed-size list", path.display()))?;
    if emb.value_length() as usize != dim {
        bail!(
            "{}: vectors have {} values, the manifest says dim {dim}",
            path.display(),
            emb.value_length()
        );
    }
    let values = emb
        .values()
        .as_primitive_opt::<Float32Type>()
        .with_context(|| format!("{}: embedding values are not f32", path.display()))?
        .values();
    let first = emb.offset() * dim;
    Ok(&values[first..first + batch.num_rows() * dim])
}
