//! The Python that serves must be the one rustpy was built for (PYO3_PYTHON):
//! the interpreter the checks run in (the serving one) and every
//! `--site-packages` directory must be of the Python version this `rustpy`
//! (and the backend built with it) embeds.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rustpy_config::diagnostic::{Diagnostic, Severity};
use rustpy_config::pyenv::{self, PyVersion};

fn error(file: &Path, code: &'static str, message: String, hint: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        line: None,
        column: None,
        code,
        message,
        hint: hint.to_owned(),
    }
}

/// The `major.minor` of the interpreter at `python`.
pub fn interpreter_version(python: &Path) -> Option<PyVersion> {
    let out = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PyVersion::parse(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

/// Mismatches between the embedded Python and the serving interpreter or
/// the site-packages directories.
pub fn check(python: &Path, site_packages: &[PathBuf]) -> Vec<Diagnostic> {
    let Some(embedded) = pyenv::embedded_python_version() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(v) = interpreter_version(python).filter(|v| *v != embedded) {
        out.push(error(
            python,
            "python.version",
            format!(
                "the serving interpreter {} is Python {v}, but rustpy (and the backend built with it) embeds Python {embedded}",
                python.display()
            ),
            "set RUSTPY_PYTHON to the Python the backend embeds, or build rustpy for this one (PYO3_PYTHON=... cargo build)",
        ));
    }
    for dir in site_packages {
        if let Err(message) = pyenv::require_site_packages_for(dir, embedded) {
            out.push(error(
                dir,
                "site-packages.python",
                message,
                "reinstall them for the serving Python: rustpy env REPO --target DIR",
            ));
        }
    }
    out
}
