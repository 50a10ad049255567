//! Vectors another tool wrote: Parquet files (an id column and a list of float32 or float16 per
//! row, fixed-size or variable) for `index build --embeddings`, and Parquet or `.npy` (float32,
//! 2-D) query vectors for `index query --vectors`.

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Column names of external vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fields {
    pub id: String,
    pub embedding: String,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            id: "id".into(),
            embedding: "embedding".into(),
        }
    }
}

/// What the index manifest records about vectors that no model of ours made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalVectors {
    pub files: Vec<crate::extract::plan::InputFile>,
    pub fields: Fields,
    /// Arrow type of the embedding values as found ("float32" or "float16").
    pub value_type: String,
    /// Vectors that were not unit length and were normalised (the metric is cosine).
    pub normalized: usize,
    pub note: String,
}

/// The Parquet files of `path`: the file itself, or a folder's `*.parquet` files by name.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && !crate::fsio::file_name(p).starts_with('.')
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .parquet files", path.display());
    }
    Ok(files)
}

/// Whether `path` is an `embed extract` output folder (rather than external vectors).
pub fn is_extraction(path: &Path) -> bool {
    path.is_dir() && path.join("manifest.json").is_file()
}

/// Read one batch's embedding column as flat row-major f32 values. `dim` is fixed by the first
/// row seen and every later row must match it. Returns the values and the value type's name.
pub fn column_vectors(
    batch: &RecordBatch,
    fields: &Fields,
    dim: &mut Option<usize>,
    path: &Path,
) -> Result<(Vec<f32>, &'static str)> {
    let col = batch.column_by_name(&fields.embedding).with_context(|| {
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        format!(
            "{}: no column {:?} (--embedding-field); columns: {names:?}",
            path.display(),
            fields.embedding
        )
    })?;
    let rows: Vec<Option<ArrayRef>> = match col.data_type() {
        DataType::FixedSizeList(..) => list_rows(col.as_fixed_size_list()),
        DataType::List(_) => list_rows(col.as_list::<i32>()),
        DataType::LargeList(_) => list_rows(col.as_list::<i64>()),
        other => bail!(
            "{}: column {:?} is {other}, expected a list of float32 or float16",
            path.display(),
            fields.embedding
        ),
    };
    let mut out = Vec::new();
    let mut kind = "float32";
    for (i, row) in rows.into_iter().enumerate() {
        let Some(values) = row else {
            bail!("{}: row {i} has no embedding (null)", path.display());
        };
        let want = *dim.get_or_insert(values.len());
        if values.len() != want || want == 0 {
            bail!(
                "{}: row {i} has {} values, earlier rows {want}",
                path.display(),
                values.len()
            );
        }
        if values.null_count() > 0 {
            bail!(
                "{}: row {i} has null values in its embedding",
                path.display()
            );
        }
        match values.data_type() {
            DataType::Float32 => {
                out.extend_from_slice(values.as_primitive::<Float32Type>().values());
            }
            DataType::Float16 => {
                kind = "float16";
                let v = values.as_primitive::<Float16Type>().values();
                out.extend(v.iter().map(|x| x.to_f32()));
            }
            other => bail!(
                "{}: embedding values are {other}, expected float32 or float16",
                path.display()
            ),
        }
    }
    Ok((out, kind))
}

fn list_rows<L: ListLike>(list: &L) -> Vec<Option<ArrayRef>> {
    (0..list.len_())
        .map(|i| (!list.is_null_(i)).then(|| list.value_(i)))
        .collect()
}

/// The three list kinds arrow has, seen alike.
trait ListLike {
    fn len_(&self) -> usize;
    fn is_null_(&self, i: usize) -> bool;
    fn value_(&self, i: usize) -> ArrayRef;
}

impl ListLike for arrow::array::FixedSizeListArray {
    fn len_(&self) -> usize {
        self.len()
    }
    fn is_null_(&self, i: usize) -> bool {
        self.is_null(i)
    }
    fn value_(&self, i: usize) -> ArrayRef {
        self.value(i)
    }
}

impl<O: arrow::array::OffsetSizeTrait> ListLike for arrow::array::GenericListArray<O> {
    fn len_(&self) -> usize {
        self.len()
    }
    fn is_null_(&self, i: usize) -> bool {
        self.is_null(i)
    }
    fn value_(&self, i: usize) -> ArrayRef {
        self.value(i)
    }
}

/// Scale every row to unit length (cosine on unit vectors); returns how many needed it. A zero
/// or non-finite vector cannot be normalised and is refused by its id.
pub fn normalize_rows(values: &mut [f32], dim: usize, ids: &[String]) -> Result<usize> {
    let mut changed = 0;
    for (i, v) in values.chunks_exact_mut(dim).enumerate() {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            bail!(
                "vector {:?} has norm {norm}: cannot be normalised for cosine search",
                ids.get(i).map(String::as_str).unwrap_or("?")
            );
        }
        if (norm - 1.0).abs() > 1e-4 {
            v.iter_mut().for_each(|x| *x /= norm);
            changed += 1;
        }
    }
    Ok(changed)
}

/// The id column as text (integers and other scalars are cast), refusing nulls.
pub fn id_strings(batch: &RecordBatch, fields: &Fields, path: &Path) -> Result<Vec<String>> {
    let col = batch
        .column_by_name(&fields.id)
        .with_context(|| format!("{}: no column {:?} (--id-field)", path.display(), fields.id))?;
    let text = arrow::compute::cast(col, &DataType::Utf8)
        .with_context(|| format!("{}: id column {:?} as text", path.display(), fields.id))?;
    let text = text.as_string::<i32>();
    (0..text.len())
        .map(|i| {
            if text.is_null(i) {
                bail!("{}: row {i} has a null id", path.display());
            }
            Ok(text.value(i).to_string())
        })
        .collect()
}

/// The records to keep for an external batch: `id` (as text) first, then every other column
/// but the embedding.
pub fn records_batch(batch: &RecordBatch, fields: &Fields, ids: &[String]) -> Result<RecordBatch> {
    let mut cols: Vec<(Field, ArrayRef)> = vec![(
        Field::new("id", DataType::Utf8, false),
        Arc::new(arrow::array::StringArray::from(ids.to_vec())) as ArrayRef,
    )];
    let schema = batch.schema();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if f.name() == &fields.embedding || f.name() == &fields.id {
            continue;
        }
        if f.name() == "id" {
            bail!(
                "a column named \"id\" besides the id field {:?}: rename one of them",
                fields.id
            );
        }
        cols.push((f.as_ref().clone(), c.clone()));
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols.into_iter().unzip();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Query vectors from a Parquet file (the given fields) or a `.npy` float32 2-D array (ids are
/// row numbers). Returns ids, flat values and the dimension.
pub fn read_query_vectors(path: &Path, fields: &Fields) -> Result<(Vec<String>, Vec<f32>, usize)> {
    if path.extension().is_some_and(|e| e == "npy") {
        let (values, n, dim) = read_npy(path)?;
        return Ok(((0..n).map(|i| i.to_string()).collect(), values, dim));
    }
    let mut ids = Vec::new();
    let mut values = Vec::new();
    let mut dim = None;
    for file in parquet_files(path)? {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file)?)
            .with_context(|| format!("{}: not a readable Parquet file", file.display()))?
            .build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {}", file.display()))?;
            ids.extend(id_strings(&batch, fields, &file)?);
            values.extend(column_vectors(&batch, fields, &mut dim, &file)?.0);
        }
    }
    match dim {
        Some(d) => Ok((ids, values, d)),
        None => bail!("{}: no query vectors", path.display()),
    }
}

/// A NumPy `.npy` file holding a C-order little-endian float32 2-D array.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |why: &str| anyhow::anyhow!("{}: {why}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + len)
        .map(String::from_utf8_lossy)
        .ok_or_else(|| bad("truncated header"))?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        return Err(bad(&format!(
            "dtype must be little-endian float32 ('<f4'); header {header:?}"
        )));
    }
    if !compact.contains("'fortran_order':False") {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape = compact
        .split_once("'shape':(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(s, _)| s)
        .ok_or_else(|| bad("no shape in the header"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(&format!("shape ({shape})")))?;
    let [n, dim] = dims[..] else {
        return Err(bad(&format!("shape ({shape}) is not 2-D")));
    };
    let data = &bytes[start + len..];
    if data.len() != n * dim * 4 || dim == 0 {
        return Err(bad(&format!(
            "{} data bytes for shape ({n}, {dim}) float32",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((values, n, dim))
}
