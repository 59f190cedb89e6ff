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
use std::sync::Arc;

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
    /// An unpacked archive's root: its `lib/` goes first on the workers'
    /// `LD_LIBRARY_PATH` and its `bin/` on `PATH` (as conda-pack's activate).
    pub archive_root: Option<PathBuf>,
    /// Keeps the unpacked archive from `rustpy cache prune` while the model
    /// is loaded.
    pub lease: Option<Arc<rustpy_fetch::env::EnvLease>>,
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
    let mut lease = None;
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
            lease = Some(unpacked.lease.clone());
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
    let archive_root = lease.is_some().then(|| root.clone());
    Ok(PreparedEnv {
        site_packages,
        description: format!("Python {version} {description}"),
        archive_root,
        lease,
    })
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
    }
    Ok(())
}

/// Where the libpython this process embeds was loaded from (for a worker
/// whose `LD_LIBRARY_PATH` starts with an environment that ships its own
/// libpython: the worker must still load this one).
pub fn embedded_libpython() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libpython"))
        })
        .map(PathBuf::from)
}

/// `first` ahead of the current value of the variable `var` (':'-separated).
fn prepend(first: &Path, var: &str) -> std::ffi::OsString {
    let mut v = std::ffi::OsString::from(first);
    if let Some(old) = std::env::var_os(var).filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

/// The variable through which the backend hands a worker the `LD_PRELOAD`
/// to restore (see [`worker_command_env`] and [`restore_in_worker`]).
const SAVED_PRELOAD: &str = "RUSTPY_WORKER_LD_PRELOAD";

/// Environment variables of a worker of a model with an unpacked archive at
/// `root`, as conda-pack's `bin/activate` would set them: `<root>/lib` first
/// on `LD_LIBRARY_PATH` (native libraries of the environment are found by
/// name), `<root>/bin` first on `PATH`, `CONDA_PREFIX`. The embedded
/// libpython is preloaded so that an environment's own
/// `lib/libpython3.X.so` cannot replace it; the worker restores the
/// server's `LD_PRELOAD` before anything else runs ([`restore_in_worker`]).
pub fn worker_command_env(root: &Path) -> Vec<(String, std::ffi::OsString)> {
    let mut vars = vec![
        (
            "LD_LIBRARY_PATH".to_string(),
            prepend(&root.join("lib"), "LD_LIBRARY_PATH"),
        ),
        ("PATH".to_string(), prepend(&root.join("bin"), "PATH")),
        ("CONDA_PREFIX".to_string(), root.as_os_str().to_owned()),
    ];
    if let Some(lib) = embedded_libpython() {
        let old = std::env::var_os("LD_PRELOAD").unwrap_or_default();
        vars.push((SAVED_PRELOAD.to_string(), old));
        vars.push(("LD_PRELOAD".to_string(), prepend(&lib, "LD_PRELOAD")));
    }
    vars
}

/// Worker side, first thing in `main` (one thread): puts back the server's
/// `LD_PRELOAD`, so processes the model starts do not inherit libpython.
pub fn restore_in_worker() {
    if let Some(old) = std::env::var_os(SAVED_PRELOAD) {
        if old.is_empty() {
            std::env::remove_var("LD_PRELOAD");
        } else {
            std::env::set_var("LD_PRELOAD", old);
        }
        std::env::remove_var(SAVED_PRELOAD);
    }
}
