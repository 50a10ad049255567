//! Optional download of a hub model into the standard Hugging Face cache layout
//! (`models--org--name/snapshots/main/...`, `refs/main`), so a later offline run finds it there.
//! Built only with the `hub` feature; plain HTTPS GETs rather than the hf-hub crate, whose async
//! rewrite pulls in ~115 crates for what is a handful of file downloads here.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

const OPTIONAL_FILES: &[&str] = &[
    "tokenizer_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
];

pub fn download(id: &str, cache: &Path) -> Result<PathBuf> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let token = std::env::var("HF_TOKEN").ok();
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = repo.join("snapshots/main");
    let fetch = |name: &str, required: bool| -> Result<bool> {
        let dest = snapshot.join(name);
        if dest.is_file() {
            return Ok(true);
        }
        let url = format!("{endpoint}/{id}/resolve/main/{name}");
        let mut req = ureq::get(&url);
        if let Some(t) = &token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) if !required => return Ok(false),
            Err(e) => bail!(
                "downloading {url}: {e}. Without network access, point --model at a local folder"
            ),
        };
        std::fs::create_dir_all(dest.parent().unwrap())?;
        let tmp = dest.with_extension("part");
        let mut out =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::io::copy(&mut resp.into_body().into_reader(), &mut out)
            .with_context(|| format!("downloading {url}"))?;
        out.flush()?;
        std::fs::rename(&tmp, &dest)?;
        eprintln!("downloaded {name}");
        Ok(true)
    };
    fetch("config.json", true)?;
    fetch("tokenizer.json", true)?;
    for f in OPTIONAL_FILES {
        fetch(f, false)?;
    }
    if !fetch("model.safetensors", false)? {
        fetch("model.safetensors.index.json", true)?;
        let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            snapshot.join("model.safetensors.index.json"),
        )?)?;
        let mut shards: Vec<String> = index["weight_map"]
            .as_object()
            .context("model.safetensors.index.json has no weight_map")?
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        shards.sort();
        shards.dedup();
        for s in shards {
            fetch(&s, true)?;
        }
    }
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), "main")?;
    Ok(snapshot)
}
