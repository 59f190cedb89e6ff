//! Fetching a model's checkpoint before its `initialize` (the backend and
//! `rustpy run` both come through [`crate::python::model::LoadedModel::load`];
//! the backend fetches a process-isolated model's before its workers start,
//! [`prefetch`]). Each fetch from a remote source counts in the metrics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rustpy_config::checkpoint::Checkpoint;
use rustpy_config::proto::ModelConfig;

use crate::error::{Error, ErrorCode, Result};
use crate::metrics::{FetchResult, Metrics};

/// Where `rustpy zip --with-checkpoints` puts a model's fetched files; when
/// present (and matching a pinned tree hash) it is used instead of fetching.
pub const BUNDLED_DIR: &str = ".rustpy-checkpoint";

/// Fetches (or finds in the cache) the checkpoint `cfg` declares; `None` when
/// it declares none. Blocks until the files are there: other loads of the
/// same checkpoint on this machine wait for one fetch. A fetch from a remote
/// source (not a local path, not files bundled by `rustpy zip`) counts in
/// `metrics` under the model's name and `version`.
pub fn resolve(
    cfg: &ModelConfig,
    model_name: &str,
    version: u64,
    model_dir: &Path,
    metrics: &Metrics,
) -> Result<Option<PathBuf>> {
    let ck = match Checkpoint::from_config(cfg) {
        None => return Ok(None),
        Some(Err(e)) => {
            return Err(Error::invalid_arg(format!("model '{model_name}': {e}")));
        }
        Some(Ok(ck)) => ck,
    };
    let bundled = model_dir.join(BUNDLED_DIR);
    if bundled.is_dir() {
        let pinned_tree = ck.sha256.as_deref().filter(|_| ck.source.kind() != "https");
        if let Some(want) = pinned_tree {
            let got = rustpy_fetch::tree_digest(&bundled).map_err(|e| {
                Error::internal(format!(
                    "model '{model_name}': reading {}: {e}",
                    bundled.display()
                ))
            })?;
            if got != want {
                return Err(Error::invalid_arg(format!(
                    "model '{model_name}': {} does not match {}: pinned {want}, found {got}",
                    bundled.display(),
                    rustpy_config::checkpoint::SHA256_PARAMETER
                )));
            }
        }
        return Ok(Some(bundled));
    }
    let opts = rustpy_fetch::Options::from_env();
    let started = Instant::now();
    let fetched = rustpy_fetch::fetch(&ck, model_dir, &opts);
    let source = ck.source.kind();
    if source != "local" {
        let (result, bytes) = match &fetched {
            Ok(f) if f.cache_hit => (FetchResult::CacheHit, 0),
            Ok(f) => (FetchResult::Downloaded, f.bytes),
            Err(_) => (FetchResult::Failed, 0),
        };
        metrics.checkpoint_fetched(
            model_name,
            version,
            source,
            result,
            bytes,
            started.elapsed(),
        );
    }
    match fetched {
        Ok(f) => Ok(Some(f.dir)),
        Err(e) => Err(Error::new(
            ErrorCode::Unavailable,
            format!("model '{model_name}': {e}"),
        )),
    }
}

/// Fetches a process-isolated model's checkpoint in the server, counted in
/// `metrics`, before its workers start: each worker then finds it in the
/// cache. Bundled files and local paths are left to the workers (nothing
/// to fetch; they verify them).
pub fn prefetch(
    cfg: &ModelConfig,
    model_name: &str,
    version: u64,
    model_dir: &Path,
    metrics: &Metrics,
) -> Result<()> {
    let remote =
        matches!(Checkpoint::from_config(cfg), Some(Ok(ck)) if ck.source.kind() != "local");
    if remote && !model_dir.join(BUNDLED_DIR).is_dir() {
        resolve(cfg, model_name, version, model_dir, metrics)?;
    }
    Ok(())
}
