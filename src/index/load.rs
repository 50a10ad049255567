//! Opening an index: the manifest (recovering from a rebuild killed between its renames), the
//! per-file checks, the memory-mapped vectors and the graph.
//!
//! Verify rule: sizes are checked on every load. The sha256 of every file is checked with
//! `--verify` ([`Index::load_verified`]), and otherwise once: a successful full check leaves a
//! `.verified` stamp (the manifest's hash plus each file's size, mtime, ctime, inode and device);
//! later loads skip hashing while every file still matches its stamp entry. Any write to a file
//! (even one that puts its mtime back) changes its ctime, and a copy changes its inode, so both
//! lead to a full check. Entries written in the same clock tick as the stamp are not trusted
//! (git's "racy clean" rule).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::{Index, IndexManifest, FILES, FORMAT};
use crate::fsio::hash_file;

/// The stamp a successful full check leaves in the index folder.
pub const STAMP: &str = ".verified";

/// How the contents of an index's files were checked when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    /// sha256 of every file, now.
    Hashed,
    /// Sizes now; contents hashed by an earlier load, unchanged since (the `.verified` stamp).
    Stamp,
}

/// Read and check `dir/manifest.json`. When `dir` is missing because a rebuild was killed
/// between its two renames, the previous index is first put back (and a note says so).
pub fn read_manifest(dir: &Path) -> Result<IndexManifest> {
    if !dir.exists() {
        if let Some(from) = super::recover::recover(dir)? {
            eprintln!(
                "note: {} was missing (a rebuild was interrupted between its two renames); \
                 restored the previous index from {}",
                dir.display(),
                from.display()
            );
        }
    }
    read_manifest_at(dir)
}

/// [`read_manifest`] without the recovery.
pub fn read_manifest_at(dir: &Path) -> Result<IndexManifest> {
    let path = dir.join("manifest.json");
    if !dir.is_dir() {
        bail!("index {} does not exist", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: missing manifest.json; not an exemplar index",
            dir.display()
        )
    })?;
    let m: IndexManifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: damaged or not an exemplar index manifest",
            path.display()
        )
    })?;
    if m.format != FORMAT {
        bail!(
            "{}: format {:?}, this build reads {FORMAT:?}: rebuild it with `embed index build`",
            path.display(),
            m.format
        );
    }
    let mut m = m;
    resolve_model_path(dir, &mut m);
    Ok(m)
}

/// When the model folder the manifest names is not there, look where it is now: at its path
/// relative to the index (both moved together) or, for an older index that stored the path as
/// given (relative to where it was built), under each folder above the index. Found: the
/// manifest in memory names it; not found: left as it is, for the loader's error.
fn resolve_model_path(dir: &Path, m: &mut IndexManifest) {
    let stored = std::path::PathBuf::from(&m.embeddings.model_path);
    if m.external.is_some() || stored.as_os_str().is_empty() || stored.exists() {
        return;
    }
    let dir = crate::fsio::canonical(dir);
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(rel) = &m.model_from_index {
        candidates.push(dir.join(rel));
    }
    if stored.is_relative() {
        candidates.extend(dir.ancestors().map(|a| a.join(&stored)));
    }
    if let Some(found) = candidates.iter().find(|c| c.join("config.json").is_file()) {
        m.embeddings.model_path = crate::fsio::canonical(found).display().to_string();
    }
}

/// What the stamp remembers of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    bytes: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    manifest_sha256: String,
    files: BTreeMap<String, FileStamp>,
}

#[cfg(unix)]
fn file_stamp(path: &Path) -> Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).with_context(|| format!("{}: missing", path.display()))?;
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    Ok(FileStamp {
        bytes: m.len(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        device: m.dev(),
    })
}

#[cfg(not(unix))]
fn file_stamp(path: &Path) -> Result<FileStamp> {
    bail!("{}: no stamp on this platform", path.display())
}

fn current_stamp(dir: &Path, m: &IndexManifest) -> Result<Stamp> {
    let mut files = BTreeMap::new();
    for name in m.files.keys() {
        files.insert(name.clone(), file_stamp(&dir.join(name))?);
    }
    Ok(Stamp {
        manifest_sha256: hash_file(&dir.join("manifest.json"))?.sha256,
        files,
    })
}

/// Whether the stamp in `dir` vouches for the files as they are now.
fn stamp_holds(dir: &Path, m: &IndexManifest) -> bool {
    let path = dir.join(STAMP);
    let (Ok(text), Ok(own)) = (std::fs::read_to_string(&path), file_stamp(&path)) else {
        return false;
    };
    let Ok(saved) = serde_json::from_str::<Stamp>(&text) else {
        return false;
    };
    let Ok(now) = current_stamp(dir, m) else {
        return false;
    };
    // Racy clean: a change within the stamp's own clock tick could leave the times unchanged.
    let settled = now
        .files
        .values()
        .all(|f| f.mtime_ns < own.mtime_ns && f.ctime_ns < own.mtime_ns);
    saved == now && settled
}

/// Record that the files of `dir` were just hashed and matched. Best effort (a read-only index
/// is simply hashed again next time).
pub fn write_stamp(dir: &Path, m: &IndexManifest) {
    if let Ok(stamp) = current_stamp(dir, m) {
        save_stamp(dir, &stamp);
    }
}

/// Write `stamp` (taken before the files were hashed) only if no file changed while they were
/// being hashed: a stamp must never vouch for content that was not the content hashed.
fn save_stamp_if_unchanged(dir: &Path, m: &IndexManifest, before: Option<Stamp>) {
    if let (Some(before), Ok(now)) = (before, current_stamp(dir, m)) {
        if before == now {
            save_stamp(dir, &before);
        }
    }
}

fn save_stamp(dir: &Path, stamp: &Stamp) {
    let _ = crate::fsio::write_atomically(&dir.join(STAMP), |w| {
        serde_json::to_writer_pretty(&mut *w, stamp)?;
        Ok(())
    });
}

/// Every file of the manifest exists with its recorded size, and (when `hash`) its sha256.
fn check_files(dir: &Path, manifest: &IndexManifest, hash: bool) -> Result<()> {
    for required in FILES {
        if !manifest.files.contains_key(required) {
            bail!("{}: the manifest lists no {required}", dir.display());
        }
    }
    for (name, want) in &manifest.files {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("{}: missing {name}", dir.display()))?;
        if meta.len() != want.bytes {
            bail!(
                "{}: {} bytes, the manifest says {} (truncated, or from another build)",
                path.display(),
                meta.len(),
                want.bytes
            );
        }
    }
    if !hash {
        return Ok(());
    }
    for (name, want) in &manifest.files {
        let path = dir.join(name);
        if hash_file(&path)?.sha256 != want.sha256 {
            bail!(
                "{}: content does not match the manifest (corrupted, or from another build)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Check the files of a loaded manifest: sizes always; contents by sha256 when `verify`, or when
/// no valid stamp vouches for them. Returns how the contents were checked.
pub fn check(dir: &Path, manifest: &IndexManifest, verify: bool) -> Result<Verification> {
    if manifest.count == 0 || manifest.dim == 0 {
        bail!(
            "{}: empty index (count {}, dim {})",
            dir.display(),
            manifest.count,
            manifest.dim
        );
    }
    let hash = verify || !stamp_holds(dir, manifest);
    let before = hash.then(|| current_stamp(dir, manifest).ok()).flatten();
    check_files(dir, manifest, hash)?;
    let expected = manifest.count as u64 * manifest.dim as u64 * 4;
    let got = manifest.files["vectors.f32"].bytes;
    if got != expected {
        bail!(
            "{}: vectors.f32 holds {got} bytes, expected {} x {} x 4",
            dir.display(),
            manifest.count,
            manifest.dim
        );
    }
    if hash {
        save_stamp_if_unchanged(dir, manifest, before);
        Ok(Verification::Hashed)
    } else {
        Ok(Verification::Stamp)
    }
}

impl Index {
    /// Load an index, checking every file's size against the manifest and its sha256 unless an
    /// earlier load already hashed the files and they have not changed since (the `.verified`
    /// stamp). A truncated, corrupted, mixed-up or incomplete index is an error here, never a
    /// panic in a later search.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::open(dir, false)
    }

    /// Load an index, hashing every file whatever the stamp says (`--verify`).
    pub fn load_verified(dir: &Path) -> Result<Self> {
        Self::open(dir, true)
    }

    fn open(dir: &Path, verify: bool) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        let verification = check(dir, &manifest, verify)?;
        let vectors = super::vectors::Vectors::map(&dir.join("vectors.f32"))?;
        if vectors.len() != manifest.count * manifest.dim {
            bail!(
                "{}: vectors.f32 holds {} values, expected {} x {}",
                dir.display(),
                vectors.len(),
                manifest.count,
                manifest.dim
            );
        }
        let records_rows = crate::extract::shard::parquet_rows(&dir.join("records.parquet"))?;
        if records_rows != manifest.count {
            bail!(
                "{}: records.parquet has {records_rows} rows, index has {}",
                dir.display(),
                manifest.count
            );
        }
        let graph = super::load_graph(dir, manifest.count)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            vectors,
            verification,
            graph,
        })
    }
}
