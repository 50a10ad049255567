//! Reading what a map needs, in two passes so that memory follows the sample, not the corpus:
//! first the ids and the colour column of every row (a few bytes each), then the vectors (and,
//! for the projector export, the other columns) of the sampled rows only. Parquet row selection
//! skips the pages of rows that are not drawn; an index's `vectors.f32` is read row by row.

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::ProjectionMask;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::arrow_json::cell_text;
use crate::extract::manifest::ExtractManifest;
use crate::extract::shard::shard_name;

/// Where the vectors come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An `embed extract` output folder (manifest.json + shard-*.parquet).
    Embeddings(PathBuf),
    /// An `embed index build` folder (manifest.json, vectors.f32, records.parquet, graph).
    Index(PathBuf),
}

impl Source {
    pub fn dir(&self) -> &Path {
        match self {
            Source::Embeddings(d) | Source::Index(d) => d,
        }
    }
}

/// An opened source: its extraction manifest, row count and the fields a map can use.
pub struct Dataset {
    pub source: Source,
    pub manifest: ExtractManifest,
    pub rows: usize,
    pub dim: usize,
    /// Every column other than `embedding`, in file order (`id` first).
    pub fields: Vec<String>,
    /// Parquet files holding the records, with their row counts, in row order.
    files: Vec<(PathBuf, usize)>,
}

/// One file's metadata without reading any rows.
fn parquet_meta(path: &Path) -> Result<(Vec<String>, usize)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let names = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let rows = b.metadata().file_metadata().num_rows() as usize;
    Ok((names, rows))
}

impl Dataset {
    pub fn open(source: &Source) -> Result<Self> {
        let (manifest, rows, dim, files) = match source {
            Source::Embeddings(dir) => {
                let m = crate::extract::manifest::read_complete(dir)?;
                let mut files = Vec::new();
                for k in 0..m.shards {
                    let p = dir.join(format!("{}.parquet", shard_name(k, m.shards)));
                    let (_, n) = parquet_meta(&p)?;
                    files.push((p, n));
                }
                let (rows, dim) = (m.rows, m.dim);
                (m, rows, dim, files)
            }
            Source::Index(dir) => {
                let im = crate::index::read_manifest(dir)?;
                let p = dir.join("records.parquet");
                let (_, n) = parquet_meta(&p)?;
                let vec_path = dir.join("vectors.f32");
                let bytes = std::fs::metadata(&vec_path)
                    .with_context(|| format!("{}: missing vectors.f32", dir.display()))?
                    .len();
                if bytes != (im.count * im.dim * 4) as u64 {
                    bail!(
                        "{}: {bytes} bytes, expected {} x {} x 4 (truncated, or from another build)",
                        vec_path.display(),
                        im.count,
                        im.dim
                    );
                }
                (im.embeddings, im.count, im.dim, vec![(p, n)])
            }
        };
        let total: usize = files.iter().map(|f| f.1).sum();
        if total != rows {
            bail!(
                "{}: files hold {total} rows, the manifest says {rows}",
                source.dir().display()
            );
        }
        let (names, _) = parquet_meta(&files[0].0)?;
        let fields = names.into_iter().filter(|n| n != "embedding").collect();
        Ok(Self {
            source: source.clone(),
            manifest,
            rows,
            dim,
            fields,
            files,
        })
    }

    /// A clear error for a field the records do not have, listing those they do.
    pub fn check_field(&self, field: &str, flag: &str) -> Result<()> {
        if !self.fields.iter().any(|f| f == field) {
            bail!(
                "{flag} {field:?}: no such field in {}; fields that exist: {}",
                self.source.dir().display(),
                self.fields.join(", ")
            );
        }
        Ok(())
    }

    /// Ids of every row and, when `field` is given, its value as text (None for null), in row
    /// order. Reads only those two columns.
    pub fn read_labels(&self, field: Option<&str>) -> Result<(Vec<String>, Vec<Option<String>>)> {
        let mut ids = Vec::with_capacity(self.rows);
        let mut values = Vec::with_capacity(self.rows);
        for (path, _) in &self.files {
            let file = std::fs::File::open(path)?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)?;
            let schema = b.schema().clone();
            let id_idx = schema
                .index_of("id")
                .with_context(|| format!("{}: no id column", path.display()))?;
            let mut roots = vec![id_idx];
            if let Some(f) = field {
                roots.push(
                    schema
                        .index_of(f)
                        .with_context(|| format!("{}: no column {f:?}", path.display()))?,
                );
            }
            let mask = ProjectionMask::roots(b.parquet_schema(), roots);
            let reader = b.with_projection(mask).with_batch_size(8192).build()?;
            for batch in reader {
                let batch = batch.with_context(|| format!("reading {}", path.display()))?;
                let idc = batch.column_by_name("id").context("no id column")?;
                for i in 0..batch.num_rows() {
                    ids.push(cell_text(idc.as_ref(), i).unwrap_or_default());
                }
                match field {
                    Some(f) => {
                        let col = batch.column_by_name(f).context("colour column")?;
                        for i in 0..batch.num_rows() {
                            values.push(cell_text(col.as_ref(), i));
                        }
                    }
                    None => values.extend(std::iter::repeat_n(None, batch.num_rows())),
                }
            }
        }
        Ok((ids, values))
    }

    /// Vectors (flat, row-major) of `rows` (sorted ascending, no repeats), and the text of the
    /// fields named in `columns` for those rows (in that order; empty: none are read). `loaded`
    /// is an index's vector buffer when the index is already in memory.
    pub fn read_rows(
        &self,
        rows: &[usize],
        columns: &[String],
        loaded: Option<&[f32]>,
    ) -> Result<(Vec<f32>, FieldColumns)> {
        debug_assert!(rows.windows(2).all(|w| w[0] < w[1]));
        for c in columns {
            self.check_field(c, "column")?;
        }
        let mut vectors = Vec::with_capacity(rows.len() * self.dim);
        let mut meta = Vec::new();
        // An index keeps its vectors outside the Parquet records.
        let vectors_in_parquet = match &self.source {
            Source::Index(dir) => {
                self.index_vectors(dir, rows, loaded, &mut vectors)?;
                false
            }
            Source::Embeddings(_) => true,
        };
        if vectors_in_parquet || !columns.is_empty() {
            let want = if vectors_in_parquet {
                Some(&mut vectors)
            } else {
                None
            };
            self.parquet_rows(rows, columns, want, &mut meta)?;
        }
        if vectors.len() != rows.len() * self.dim {
            bail!(
                "{}: read {} vectors, expected {}",
                self.source.dir().display(),
                vectors.len() / self.dim.max(1),
                rows.len()
            );
        }
        Ok((vectors, meta))
    }

    /// `rows` of an index's `vectors.f32`: copied from `loaded`, or read with a seek per gap.
    fn index_vectors(
        &self,
        dir: &Path,
        rows: &[usize],
        loaded: Option<&[f32]>,
        vectors: &mut Vec<f32>,
    ) -> Result<()> {
        let dim = self.dim;
        if let Some(all) = loaded {
            for &r in rows {
                vectors.extend_from_slice(&all[r * dim..(r + 1) * dim]);
            }
            return Ok(());
        }
        let path = dir.join("vectors.f32");
        let mut f = std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        );
        let mut buf = vec![0u8; dim * 4];
        let mut pos = 0u64;
        for &r in rows {
            let at = (r * dim * 4) as u64;
            if at != pos {
                f.seek(SeekFrom::Start(at))?;
            }
            f.read_exact(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            pos = at + buf.len() as u64;
            vectors.extend(
                buf.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(())
    }

    /// One pass over the Parquet files for `rows` (row selection skips the others): their
    /// embeddings into `vectors` when given, and the `columns` into `meta`.
    fn parquet_rows(
        &self,
        rows: &[usize],
        columns: &[String],
        mut vectors: Option<&mut Vec<f32>>,
        meta: &mut FieldColumns,
    ) -> Result<()> {
        let mut offset = 0usize;
        let mut next = 0usize; // position in `rows`
        for (path, n) in &self.files {
            let start = next;
            while next < rows.len() && rows[next] < offset + n {
                next += 1;
            }
            let local: Vec<usize> = rows[start..next].iter().map(|r| r - offset).collect();
            offset += n;
            if local.is_empty() {
                continue;
            }
            let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?;
            let schema = b.schema().clone();
            let mut roots = Vec::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let is_emb = f.name() == "embedding";
                if (is_emb && vectors.is_some()) || columns.contains(f.name()) {
                    roots.push(i);
                }
            }
            let mask = ProjectionMask::roots(b.parquet_schema(), roots);
            let selection =
                RowSelection::from_consecutive_ranges(consecutive_ranges(&local).into_iter(), *n);
            let reader = b
                .with_projection(mask)
                .with_row_selection(selection)
                .with_batch_size(4096)
                .build()?;
            for batch in reader {
                let batch: RecordBatch =
                    batch.with_context(|| format!("reading {}", path.display()))?;
                if let Some(v) = vectors.as_deref_mut() {
                    v.extend_from_slice(crate::extract::shard::embedding_values(
                        &batch, self.dim, path,
                    )?);
                }
                if columns.is_empty() {
                    continue;
                }
                let cols = columns
                    .iter()
                    .map(|c| batch.column_by_name(c).context("column"))
                    .collect::<Result<Vec<_>>>()?;
                for r in 0..batch.num_rows() {
                    meta.push(cols.iter().map(|c| cell_text(c.as_ref(), r)).collect());
                }
            }
        }
        Ok(())
    }
}

/// Sorted row numbers as maximal runs of consecutive rows.
fn consecutive_ranges(rows: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for &r in rows {
        match out.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => out.push(r..r + 1),
        }
    }
    out
}

/// Per requested row, the text of each field (None where missing).
pub type FieldColumns = Vec<Vec<Option<String>>>;
