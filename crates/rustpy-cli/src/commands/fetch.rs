//! `rustpy fetch REPO`: fetch every model's `rustpy.checkpoint` into the
//! cache the backend reads (`RUSTPY_CACHE`), e.g. while building an image.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::{cli::FetchArgs, progress, Error, Global, Result, Status};
use rustpy_config::checkpoint::Checkpoint;

#[derive(Debug, Serialize)]
struct Outcome {
    model: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_hit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Draws one bar per file on stderr (hidden with --quiet or without a TTY).
struct Bar {
    global: Global,
    bar: Mutex<Option<ProgressBar>>,
}

impl rustpy_fetch::Progress for Bar {
    fn begin(&self, what: &str, total: Option<u64>) {
        let bar = progress::bytes(&self.global, total.unwrap_or(0), what);
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            b.inc(bytes);
        }
    }
    fn end(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

/// The checkpoint a model directory declares (`None`: none, or no readable config).
pub fn model_checkpoint(dir: &Path) -> Option<std::result::Result<Checkpoint, String>> {
    let text = std::fs::read_to_string(dir.join(rustpy_config::repo::CONFIG_FILE)).ok()?;
    let cfg = rustpy_config::parse_pbtxt(&text).ok()?;
    Checkpoint::from_config(&cfg)
}

pub fn run(global: &Global, args: FetchArgs) -> Result {
    if !args.repo.exists() {
        return Err(Error::usage(format!(
            "{} does not exist",
            args.repo.display()
        )));
    }
    let mut opts = rustpy_fetch::Options::from_env();
    opts.offline |= args.offline;
    if let Some(dir) = &args.cache_dir {
        opts.cache_dir = dir.clone();
    }
    opts.progress = Some(Arc::new(Bar {
        global: *global,
        bar: Mutex::new(None),
    }));
    let mut outcomes = Vec::new();
    for dir in rustpy_config::repo::model_dirs(&args.repo) {
        let model = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(ck) = model_checkpoint(&dir) else {
            continue;
        };
        let outcome = match ck {
            Err(e) => Outcome {
                model,
                source: String::new(),
                dir: None,
                digest: None,
                cache_hit: None,
                error: Some(e),
            },
            Ok(ck) => {
                let source = ck.source.redacted();
                global.status(format!("{model}: {source}"));
                match rustpy_fetch::fetch(&ck, &dir, &opts) {
                    Ok(f) => Outcome {
                        model,
                        source,
                        dir: Some(f.dir),
                        digest: Some(f.digest),
                        cache_hit: Some(f.cache_hit),
                        error: None,
                    },
                    Err(e) => Outcome {
                        model,
                        source,
                        dir: None,
                        digest: None,
                        cache_hit: None,
                        error: Some(e.to_string()),
                    },
                }
            }
        };
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().any(|o| o.error.is_some());
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&outcomes).map_err(|e| Error::Runtime(e.into()))?
        );
    } else {
        if outcomes.is_empty() {
            println!("no model declares rustpy.checkpoint");
        }
        for o in &outcomes {
            match (&o.error, &o.dir) {
                (Some(e), _) => eprintln!("error: {}: {e}", o.model),
                (None, Some(dir)) => println!(
                    "{}: {} {}\n  sha256 {}",
                    o.model,
                    if o.cache_hit == Some(true) {
                        "cached"
                    } else {
                        "fetched"
                    },
                    dir.display(),
                    o.digest.as_deref().unwrap_or("")
                ),
                _ => {}
            }
        }
    }
    Ok(if failed {
        Status::Failed
    } else {
        Status::Success
    })
}
