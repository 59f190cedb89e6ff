//! A process-isolated model's own Python environment: `rustpy.python_env`
//! (a virtualenv directory) or `EXECUTION_ENV_PATH` (a conda-pack archive,
//! unpacked once into rustpy's cache). The server prepares it once per model
//! load ([`prepare`]); each worker puts its site-packages first on
//! `sys.path` before importing the model ([`apply_in_worker`]).
//!
//! A worker embeds the server's libpython (and its standard library), so
//! only an environment of the same Python major.minor can work: checked
//! here, and by `rustpy check` (rule `parameters.python-env`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustpy_config::model::PythonEnv;
use rustpy_config::pyenv;

use crate::error::{Error, ErrorCode, Result};

/// An environment ready for a model's workers.
#[derive(Debug, Clone)]
pub struct PreparedEnv {
    /// Its site-packages directory (what the workers put first on sys.path).
    pub site_packages: PathBuf,
    /// For the log: where it is and whether the cache had it.
    pub description: String,
}

/// Resolves, (for an archive) unpacks into the cache, and checks the Python
/// version of `env`; the error names the model, the parameter and the reason.
pub fn prepare(model_name: &str, model_dir: &Path, env: &PythonEnv) -> Result<PreparedEnv> {
    let key = env.key();
    let raw = env.raw();
    let fail = |code: ErrorCode, why: String| {
        Error::new(
            code,
            format!("model '{model_name}': {key} ('{raw}'): {why}"),
        )
    };
    let path = env.resolve(model_dir);
    let (root, description) = match env {
        PythonEnv::Venv(_) => {
            if !path.is_dir() {
                return Err(fail(
                    ErrorCode::InvalidArg,
                    format!(
                        "{} is not a directory (a virtualenv is expected)",
                        path.display()
                    ),
                ));
            }
            let description = format!("virtualenv {}", path.display());
            (path, description)
        }
        PythonEnv::Archive(_) => {
            if !path.is_file() {
                return Err(fail(
                    ErrorCode::InvalidArg,
                    format!(
                        "{} is not a file (a conda-pack .tar.gz is expected)",
                        path.display()
                    ),
                ));
            }
            let opts = rustpy_fetch::Options::from_env();
            let unpacked = rustpy_fetch::env::unpack_env(&path, &opts)
                .map_err(|e| fail(ErrorCode::Unavailable, e.0))?;
            let description = format!(
                "{} {} {}",
                path.display(),
                if unpacked.cache_hit {
                    "already unpacked in"
                } else {
                    "unpacked into"
                },
                unpacked.dir.display()
            );
            (unpacked.dir, description)
        }
    };
    let version = pyenv::dir_version(&root).map_err(|e| fail(ErrorCode::InvalidArg, e))?;
    if let Some(embedded) = pyenv::embedded_python_version() {
        pyenv::require_same(version, embedded).map_err(|e| fail(ErrorCode::InvalidArg, e))?;
    }
    let site_packages = pyenv::site_packages(&root, version);
    if !site_packages.is_dir() {
        return Err(fail(
            ErrorCode::InvalidArg,
            format!("{} does not exist", site_packages.display()),
        ));
    }
    Ok(PreparedEnv {
        site_packages,
        description: format!("Python {version} {description}"),
    })
}

static APPLIED: AtomicBool = AtomicBool::new(false);

/// Whether this process (a worker) runs in a model's own environment; then
/// the model's environment parameters are honoured, not refused.
pub fn applied() -> bool {
    APPLIED.load(Ordering::Relaxed)
}

/// Worker side, before the model is imported: starts the interpreter and
/// puts the backend's site-packages, then the model's environment, first on
/// `sys.path` (so the environment's packages win over everything else).
pub fn apply_in_worker(site_packages: Option<&Path>, env: Option<&Path>) -> Result<()> {
    if site_packages.is_none() && env.is_none() {
        return Ok(());
    }
    crate::python::initialize()?;
    if let Some(dir) = site_packages {
        crate::python::add_site_packages(dir)?;
    }
    if let Some(dir) = env {
        crate::python::add_site_packages(dir)?;
        APPLIED.store(true, Ordering::Relaxed);
    }
    Ok(())
}
