//! `hf://org/name@revision/subpath` through the `hf-hub` crate (its tokio
//! API; `HF_ENDPOINT` points it at another hub, `HF_TOKEN` authenticates).

use std::fs;
use std::path::Path;

use hf_hub::api::tokio::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use rustpy_config::checkpoint::{Checkpoint, Source};

use crate::{runtime, safe_join, Options};

/// The hub the client talks to (`HF_ENDPOINT`, else huggingface.co).
pub(crate) fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
}

fn token() -> Option<String> {
    ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn explain(e: ApiError) -> String {
    let s = e.to_string();
    if s.contains("401") || s.contains("403") {
        let hint = if token().is_some() {
            "HF_TOKEN was refused"
        } else {
            "the repository needs credentials: set HF_TOKEN"
        };
        format!("{s} ({hint})")
    } else {
        s
    }
}

pub(crate) fn fetch(
    ck: &Checkpoint,
    stage: &Path,
    work: &Path,
    opts: &Options,
) -> Result<(), String> {
    let Source::HuggingFace {
        repo,
        revision,
        subpath,
    } = &ck.source
    else {
        unreachable!()
    };
    let mut builder = ApiBuilder::from_env()
        .with_endpoint(endpoint())
        .with_cache_dir(work.join("hf"))
        .with_progress(false);
    if let Some(t) = token() {
        builder = builder.with_token(Some(t));
    }
    let api = builder
        .build()
        .map_err(|e| format!("Hugging Face client: {e}"))?;
    let repo_api = api.repo(Repo::with_revision(
        repo.clone(),
        RepoType::Model,
        revision.clone(),
    ));
    runtime()?.block_on(async {
        let info = repo_api.info().await.map_err(explain)?;
        let prefix = if subpath.is_empty() {
            String::new()
        } else {
            format!("{subpath}/")
        };
        let mut n = 0;
        for sib in &info.siblings {
            let Some(rel) = sib.rfilename.strip_prefix(&prefix) else {
                continue;
            };
            if !ck.includes(rel) {
                continue;
            }
            let dest = safe_join(stage, rel)?;
            opts.begin(rel, None);
            let got = repo_api
                .download(&sib.rfilename)
                .await
                .map_err(|e| format!("{}: {}", sib.rfilename, explain(e)))?;
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(|e| e.to_string())?;
            }
            // The hub cache holds a symlink to a blob; keep a plain copy.
            let bytes = fs::copy(&got, &dest).map_err(|e| e.to_string())?;
            opts.advance(bytes);
            opts.end();
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "no files in {repo}@{revision}{}{}",
                if subpath.is_empty() {
                    String::new()
                } else {
                    format!(" under {subpath}/")
                },
                if ck.include.is_empty() {
                    ""
                } else {
                    " matching the include patterns"
                }
            ));
        }
        Ok(())
    })
}
