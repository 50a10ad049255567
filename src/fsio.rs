//! Files on disk, done one way everywhere: content hashes, atomic file writes and atomic folder
//! replacement. A killed process leaves the old file (or folder) or the new one, never half of
//! one; every rename is followed by an fsync of the directory so the rename itself survives a
//! power cut, not only the bytes.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Size and sha256 of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

/// Stream a file through sha256 (1 MiB at a time).
pub fn hash_file(path: &Path) -> Result<FileDigest> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok(FileDigest {
        bytes,
        sha256: format!("{:x}", h.finalize()),
    })
}

/// `path` absolute with links resolved (as stored in manifests, so that any path naming the
/// same file gives the same record); absolute against the current folder when it does not exist.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// The relative path from folder `base` to `target`, both absolute (`../../models/m`).
pub fn relative_path(target: &Path, base: &Path) -> Option<PathBuf> {
    use std::path::Component;
    if !target.is_absolute() || !base.is_absolute() {
        return None;
    }
    let (t, b): (Vec<Component>, Vec<Component>) =
        (target.components().collect(), base.components().collect());
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    Some(if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    })
}

/// The last component of `path` as text (empty when there is none).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Temporary sibling of `path` (same directory, so the rename cannot cross filesystems).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// fsync a directory, so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // Opening a directory read-only and fsyncing it is how POSIX makes a rename durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Create `path` atomically: `fill` gets a fresh temporary file and hands it back once written;
/// it is then fsynced and renamed over `path`. On any error the temporary file is removed and
/// `path` is untouched. For writers that need a `File` (e.g. Parquet's ArrowWriter).
pub fn create_atomically<T>(
    path: &Path,
    fill: impl FnOnce(File) -> Result<(File, T)>,
) -> Result<T> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_path(path);
    let result = (|| -> Result<T> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (file, value) = fill(file)?;
        file.sync_all()?;
        Ok(value)
    })();
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("writing {}", path.display())));
        }
    };
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)?;
    Ok(value)
}

/// Write `path` atomically through a buffered writer.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    create_atomically(path, |file| {
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        Ok((w.into_inner().map_err(|e| e.into_error())?, ()))
    })
}

/// Put the finished folder `new` in place of `dest`. The old `dest` (if any) is first renamed
/// aside, so a crash between the two renames leaves it whole under `.NAME.old-PID`, never
/// neither. Both folders must be siblings.
pub fn replace_dir(new: &Path, dest: &Path) -> Result<()> {
    let parent = parent_dir(dest);
    if dest.exists() {
        let old = aside_path(dest, "old");
        std::fs::rename(dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
        std::fs::rename(new, dest)
            .with_context(|| format!("renaming {} to {}", new.display(), dest.display()))?;
        sync_dir(parent)?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the previous {}", old.display()))?;
    } else {
        std::fs::rename(new, dest)
            .with_context(|| format!("renaming {} to {}", new.display(), dest.display()))?;
        sync_dir(parent)?;
    }
    Ok(())
}

/// A hidden sibling of `dest` for this process: `.NAME.TAG-PID`.
pub fn aside_path(dest: &Path, tag: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(dest).join(format!(".{name}.{tag}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_the_old_file_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.txt");
        write_atomically(&p, |w| Ok(w.write_all(b"old")?)).unwrap();
        let err = write_atomically(&p, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert_eq!(hash_file(&p).unwrap().bytes, 3);
    }

    #[test]
    fn relative_paths_between_folders() {
        let rel = |t: &str, b: &str| relative_path(Path::new(t), Path::new(b)).unwrap();
        assert_eq!(rel("/a/m/x", "/a/idx"), PathBuf::from("../m/x"));
        assert_eq!(rel("/a/idx/m", "/a/idx"), PathBuf::from("m"));
        assert_eq!(rel("/a", "/a"), PathBuf::from("."));
        assert!(relative_path(Path::new("m"), Path::new("/a")).is_none());
    }

    #[test]
    fn replace_dir_swaps_in_the_new_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (new, dest) = (tmp.path().join(".x.new"), tmp.path().join("x"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("f"), "old").unwrap();
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("f"), "new").unwrap();
        replace_dir(&new, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "new");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
