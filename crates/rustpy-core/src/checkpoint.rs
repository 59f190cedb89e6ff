//! Fetching a model's checkpoint before its `initialize` (the backend and
//! `rustpy run` both come through [`crate::python::model::LoadedModel::load`]).

use std::path::{Path, PathBuf};

use rustpy_config::checkpoint::Checkpoint;
use rustpy_config::proto::ModelConfig;

use crate::error::{Error, ErrorCode, Result};

/// Where `rustpy zip --with-checkpoints` puts a model's fetched files; when
/// present (and matching a pinned tree hash) it is used instead of fetching.
pub const BUNDLED_DIR: &str = ".rustpy-checkpoint";

/// Fetches (or finds in the cache) the checkpoint `cfg` declares; `None` when
/// it declares none. Blocks until the files are there: other loads of the
/// same checkpoint on this machine wait for one fetch.
pub fn resolve(cfg: &ModelConfig, model_name: &str, model_dir: &Path) -> Result<Option<PathBuf>> {
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
    match rustpy_fetch::fetch(&ck, model_dir, &opts) {
        Ok(f) => Ok(Some(f.dir)),
        Err(e) => Err(Error::new(
            ErrorCode::Unavailable,
            format!("model '{model_name}': {e}"),
        )),
    }
}
