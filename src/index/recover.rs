//! Crash recovery for rebuilds. `crate::fsio::replace_dir` renames the old index aside to
//! `.NAME.old-PID`, then the new one in. A process killed between the two renames leaves no
//! `NAME` at all, only the old index beside it: the next reader puts it back.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a reader waits for a live rebuild to finish its second rename.
const LIVE_WAIT: Duration = Duration::from_secs(5);

/// A hidden sibling `.NAME.TAG-PID` of `dir` and the process id in its name.
#[derive(Debug, Clone)]
pub struct Aside {
    pub path: PathBuf,
    pub tag: String,
    pub pid: u32,
}

fn parent_of(dir: &Path) -> PathBuf {
    dir.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Every `.NAME.TAG-PID` sibling of `dir` (TAG `old` or `building`).
pub fn asides(dir: &Path) -> Vec<Aside> {
    let name = crate::fsio::file_name(dir);
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(parent_of(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix(&prefix)?;
            let (tag, pid) = rest.rsplit_once('-')?;
            if tag != "old" && tag != "building" {
                return None;
            }
            Some(Aside {
                path: e.path(),
                tag: tag.to_string(),
                pid: pid.parse().ok()?,
            })
        })
        .collect()
}

/// Whether process `pid` is running (Linux: /proc; elsewhere assume it is, which only delays).
pub fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// If `dir` is missing because a rebuild died between its two renames, rename the old index
/// (`.NAME.old-PID` of a dead process, with a readable manifest; the newest if several) back to
/// `dir` and return where it came from. A rebuild that is still running gets a few seconds to
/// finish its second rename instead. Returns `None` when there is nothing to recover.
pub fn recover(dir: &Path) -> Result<Option<PathBuf>> {
    let start = Instant::now();
    loop {
        if dir.exists() {
            return Ok(None);
        }
        let olds: Vec<Aside> = asides(dir).into_iter().filter(|a| a.tag == "old").collect();
        if olds.is_empty() {
            return Ok(None);
        }
        let dead: Vec<&Aside> = olds.iter().filter(|a| !alive(a.pid)).collect();
        if dead.len() < olds.len() && start.elapsed() < LIVE_WAIT {
            std::thread::sleep(Duration::from_millis(50)); // a live rebuild is mid-swap
            continue;
        }
        let newest = dead
            .iter()
            .filter_map(|a| {
                super::read_manifest_at(&a.path).ok()?;
                let t = std::fs::metadata(a.path.join("manifest.json"))
                    .and_then(|m| m.modified())
                    .ok()?;
                Some((t, a.path.clone()))
            })
            .max();
        let Some((_, from)) = newest else {
            return Ok(None);
        };
        match std::fs::rename(&from, dir) {
            Ok(()) => {
                crate::fsio::sync_dir(&parent_of(dir))?;
                return Ok(Some(from));
            }
            // Another reader restored it first (or a rebuild landed): use what is there now.
            Err(_) if dir.exists() => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{} is missing and the previous index is at {}: could not move it back \
                         (do it by hand with mv)",
                        dir.display(),
                        from.display()
                    )
                })
            }
        }
    }
}

/// Remove leftovers of dead rebuilds of `dir` (their `.building-PID` folders, and `.old-PID`
/// ones once `dir` itself is a valid index). Best effort: errors are ignored.
pub fn remove_stale(dir: &Path) {
    let dir_ok = super::read_manifest_at(dir).is_ok();
    for a in asides(dir) {
        if alive(a.pid) || (a.tag == "old" && !dir_ok) {
            continue;
        }
        let _ = std::fs::remove_dir_all(&a.path);
    }
}
