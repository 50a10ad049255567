//! `--projector DIR`: the TensorBoard Embedding Projector's two TSV files.

use anyhow::{Context, Result};
use ndarray::ArrayView2;

use super::text;
/// TensorBoard Embedding Projector files: vectors.tsv (one vector per line, tab-separated) and
/// metadata.tsv (a header row of field names, then one row per vector; tabs and newlines in
/// values become spaces, long texts are cut at 300 characters).
pub(super) fn write_projector(
    dir: &std::path::Path,
    fields: &[String],
    ids: &[String],
    rows: &[usize],
    x: ArrayView2<f32>,
    meta: &[Vec<Option<String>>],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsio::write_atomically(&dir.join("vectors.tsv"), |w| {
        for row in x.outer_iter() {
            let line: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(w, "{}", line.join("\t"))?;
        }
        Ok(())
    })?;
    let clean = |s: &str| text::tsv_cell(s, 300);
    crate::fsio::write_atomically(&dir.join("metadata.tsv"), |w| {
        if meta.len() == rows.len() && !fields.is_empty() {
            writeln!(
                w,
                "{}",
                fields
                    .iter()
                    .map(|f| clean(f))
                    .collect::<Vec<_>>()
                    .join("\t")
            )?;
            for m in meta {
                let cells: Vec<String> = m
                    .iter()
                    .map(|c| c.as_deref().map(clean).unwrap_or_default())
                    .collect();
                writeln!(w, "{}", cells.join("\t"))?;
            }
        } else {
            // One column: the projector wants no header then.
            for &r in rows {
                writeln!(w, "{}", clean(&ids[r]))?;
            }
        }
        Ok(())
    })?;
    Ok(())
}
