//! The distill log beside the output (`OUT.distill.jsonl`): a first line with the settings, then
//! one line per request outcome, appended and flushed as each finishes. A re-run reads it back:
//! records with an insight (for the same record content) are done, failed ones are tried again.
//! A kill can tear only the last line, which is then ignored.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::super::client::Sampling;

/// Everything that changes the insights; a log made with other settings is not resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillKey {
    pub model: String,
    pub template_sha256: String,
    pub system_sha256: Option<String>,
    pub words: usize,
    pub sampling: Sampling,
}

/// One request's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// [`super::corpus::Item::content_sha`] of the record asked about.
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insight: Option<String>,
    /// Why no insight came back (after every retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: usize,
    pub seconds: f64,
    /// Times the reply restated the final answer (each replaced by `[answer]`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redacted: usize,
    /// The reply ran far over the asked length and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct Header {
    distill: DistillKey,
}

/// The log's path for an output file.
pub fn path_for(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.distill.jsonl"))
}

/// The latest entry per id of an earlier log made with `key` (empty when there is none). A log
/// made with other settings is refused by the first differing field, unless `force`, which
/// moves it aside (never deletes it).
pub fn read(
    path: &Path,
    key: &DistillKey,
    force: bool,
) -> Result<(HashMap<String, Entry>, Option<PathBuf>)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok((HashMap::new(), None));
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Option<Header> = lines.next().and_then(|l| serde_json::from_str(l).ok());
    let same = header.as_ref().is_some_and(|h| &h.distill == key);
    if !same {
        if force {
            let aside = PathBuf::from(format!(
                "{}.old-{}",
                path.display(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            std::fs::rename(path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
            return Ok((HashMap::new(), Some(aside)));
        }
        let what = header.map_or_else(
            || "an unreadable first line".to_string(),
            |h| differs(&h.distill, key),
        );
        bail!(
            "{} was made with other settings ({what}); re-run with those settings to resume, or \
             with --force to start over (the old log is moved aside)",
            path.display()
        );
    }
    let rest: Vec<&str> = lines.collect();
    let mut entries = HashMap::new();
    for (i, line) in rest.iter().enumerate() {
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => {
                entries.insert(e.id.clone(), e);
            }
            // A kill mid-write tears the last line only.
            Err(_) if i + 1 == rest.len() => {}
            Err(e) => bail!("{}: line {}: {e}", path.display(), i + 2),
        }
    }
    Ok((entries, None))
}

fn differs(old: &DistillKey, new: &DistillKey) -> String {
    let (a, b) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    );
    let field = a
        .as_object()
        .and_then(|a| {
            a.keys()
                .find(|k| Some(&a[k.as_str()]) != b.get(k.as_str()))
                .cloned()
        })
        .unwrap_or_else(|| "settings".into());
    format!("{field} differs")
}

/// The log, open for appending: one line per outcome, written whole and flushed.
pub struct Log {
    file: Mutex<std::fs::File>,
}

impl Log {
    /// Open (and, when new, start with the settings line). A torn last line (a kill mid-write)
    /// is cut off first, so every line after it is whole.
    pub fn open(path: &Path, key: &DistillKey) -> Result<Self> {
        let old = std::fs::read(path).unwrap_or_default();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !old.is_empty() && !old.ends_with(b"\n") {
            let whole = old.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            file.set_len(whole as u64)?;
        }
        if std::fs::metadata(path)?.len() == 0 {
            writeln!(
                file,
                "{}",
                serde_json::to_string(&Header {
                    distill: key.clone()
                })?
            )?;
        }
        file.flush()?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    pub fn append(&self, e: &Entry) -> Result<()> {
        let mut line = serde_json::to_string(e)?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes())?;
        f.flush()?;
        Ok(())
    }
}
