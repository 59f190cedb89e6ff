//! Packages in `--site-packages` directories that will not load next to the
//! serving interpreter's numpy (numpy_abi.py): a numpy copy the server never
//! imports, and packages built against another numpy C-API, found by
//! importing each package that depends on numpy the way the server does.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;
use serde::Deserialize;

use rustpy_config::diagnostic::{Diagnostic, Severity};

const SCRIPT: &str = include_str!("numpy_abi.py");

#[derive(Debug, Deserialize)]
struct Raw {
    file: PathBuf,
    code: String,
    message: String,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    warning: bool,
}

#[derive(Debug, Deserialize)]
struct Output {
    diagnostics: Vec<Raw>,
}

fn code(c: &str) -> &'static str {
    match c {
        "site-packages.numpy-shadowed" => "site-packages.numpy-shadowed",
        "site-packages.numpy-abi" => "site-packages.numpy-abi",
        _ => "site-packages.import",
    }
}

pub fn check(python: &Path, site_packages: &[PathBuf]) -> anyhow::Result<Vec<Diagnostic>> {
    if site_packages.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new(python)
        .args(["-I", "-B", "-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} for the numpy check", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(
            serde_json::json!({ "site_packages": site_packages })
                .to_string()
                .as_bytes(),
        )?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "the numpy check ({}) failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let parsed: Output =
        serde_json::from_slice(&out.stdout).context("the numpy check printed invalid JSON")?;
    Ok(parsed
        .diagnostics
        .into_iter()
        .map(|d| Diagnostic {
            severity: if d.warning {
                Severity::Warning
            } else {
                Severity::Error
            },
            file: d.file,
            line: None,
            column: None,
            code: code(&d.code),
            message: d.message,
            hint: d.hint,
        })
        .collect())
}
