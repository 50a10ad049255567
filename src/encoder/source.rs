//! Finding a model's files: a local folder, or a hub id looked up in the standard Hugging Face
//! cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), downloaded only when the
//! `hub` feature is built in.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The files of one checkpoint, located and checked to exist.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    pub fn optional(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }
}

/// Resolve `--model` (a folder or `org/name`) to a folder holding the checkpoint.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    if let Some(dir) = find_model_dir(spec) {
        return Ok(dir);
    }
    if looks_like_hub_id(spec) {
        let cache = hf_cache_dir();
        #[cfg(feature = "hub")]
        {
            return super::hub::download(spec, &cache);
        }
        #[cfg(not(feature = "hub"))]
        bail!(
            "model {spec:?} is not a local folder and is not in the Hugging Face cache ({}).\n\
             Point --model at a local folder holding config.json, tokenizer.json and *.safetensors \
             (for the default model run scripts/fetch-models.sh), copy the model into that cache, \
             or rebuild with `--features hub` to download it.",
            cache.display()
        );
    }
    bail!("model folder {spec:?} does not exist")
}

/// A local folder, or a hub id already in the Hugging Face cache; never downloads.
fn find_model_dir(spec: &str) -> Option<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return Some(as_path.to_path_buf());
    }
    if looks_like_hub_id(spec) {
        return find_in_cache(&hf_cache_dir(), spec);
    }
    None
}

/// Like [`resolve_model_dir`] but without downloading: for reading config.json alone.
pub fn locate_model_dir(spec: &str) -> Result<PathBuf> {
    find_model_dir(spec).with_context(|| {
        format!(
            "model {spec:?} is not a local folder and is not in the Hugging Face cache ({})",
            hf_cache_dir().display()
        )
    })
}

fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

pub fn hf_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Ok(home) = std::env::var("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

/// `models--org--name/snapshots/<rev>`: the revision `refs/main` names, else the newest snapshot.
fn find_in_cache(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p)
}

/// Locate config, tokenizer and weights inside a model folder, with an error naming what is missing.
pub fn locate_files(dir: &Path) -> Result<ModelFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        bail!("{}: missing config.json", dir.display());
    }
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        bail!(
            "{}: missing tokenizer.json (only fast tokenizers are supported)",
            dir.display()
        );
    }
    let weights = locate_weights(dir)?;
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config,
        tokenizer,
        weights,
    })
}

fn locate_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("reading {}", index.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: no \"weight_map\" object", index.display()))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        files.sort();
        files.dedup();
        let mut paths = Vec::new();
        for f in files {
            let p = dir.join(&f);
            if !p.is_file() {
                bail!(
                    "{}: names shard {f:?}, which is missing from {}",
                    index.display(),
                    dir.display()
                );
            }
            paths.push(p);
        }
        return Ok(paths);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        let hint = if dir.join("pytorch_model.bin").exists() {
            " (pytorch_model.bin is not supported: convert it to safetensors)"
        } else {
            ""
        };
        bail!(
            "{}: no model.safetensors, model.safetensors.index.json or *.safetensors{hint}",
            dir.display()
        );
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_apart_from_paths() {
        assert!(looks_like_hub_id("nvidia/llama-embed-nemotron-8b"));
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("../x"));
    }

    #[test]
    fn cache_lookup_follows_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--name");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(find_in_cache(tmp.path(), "org/name"), Some(snap));
        assert_eq!(find_in_cache(tmp.path(), "org/other"), None);
    }
}
