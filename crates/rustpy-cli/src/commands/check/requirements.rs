//! Requirements of in-process models: every `backend: "rustpy"` model's
//! `requirements.txt` is checked, in the serving interpreter, for pins that
//! conflict between models (they share one interpreter) and for requirements
//! that interpreter (plus any `--site-packages` dirs) does not satisfy.
//! `rustpy env` installs the merged list.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use rustpy_config::diagnostic::{Diagnostic, Severity};

const SCRIPT: &str = include_str!("requirements.py");
/// The file each model lists its Python dependencies in (`rustpy init` writes it).
pub const REQUIREMENTS_FILE: &str = "requirements.txt";

/// A model's requirements file.
#[derive(Debug, Clone)]
pub struct ModelRequirements {
    pub model: String,
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
struct RawDiag {
    severity: String,
    file: PathBuf,
    line: Option<usize>,
    code: String,
    message: String,
    #[serde(default)]
    hint: String,
}

#[derive(Debug, Deserialize)]
struct Output {
    diagnostics: Vec<RawDiag>,
    needed: Vec<String>,
}

/// What the requirements check found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub diagnostics: Vec<Diagnostic>,
    /// The lines the interpreter (with the site-packages dirs) does not satisfy yet.
    pub needed: Vec<String>,
}

fn code(c: &str) -> &'static str {
    match c {
        "requirements.conflict" => "requirements.conflict",
        "requirements.missing" => "requirements.missing",
        "requirements.unsatisfied" => "requirements.unsatisfied",
        "requirements.syntax" => "requirements.syntax",
        "requirements.option" => "requirements.option",
        "requirements.url" => "requirements.url",
        "requirements.unreadable" => "requirements.unreadable",
        _ => "requirements.other",
    }
}

/// The requirements file of `model_dir`, if it has one.
pub fn of_model(model_dir: &Path) -> Option<ModelRequirements> {
    let path = model_dir.join(REQUIREMENTS_FILE);
    path.is_file().then(|| ModelRequirements {
        model: model_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path,
    })
}

/// Runs the check in `python` (the serving interpreter).
pub fn check(
    python: &Path,
    files: &[ModelRequirements],
    site_packages: &[PathBuf],
) -> anyhow::Result<Outcome> {
    if files.is_empty() {
        return Ok(Outcome::default());
    }
    let input = serde_json::json!({
        "site_packages": site_packages,
        "files": files.iter().map(|f| serde_json::json!({"model": f.model, "path": f.path})).collect::<Vec<_>>(),
    });
    // -I: the serving interpreter as the backend sees it (no PYTHONPATH, no
    // user site-packages); -B: no __pycache__.
    let mut child = Command::new(python)
        .args(["-I", "-B", "-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} for the requirements check (set RUSTPY_PYTHON)",
                python.display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.to_string().as_bytes())
            .with_context(|| format!("cannot write to {}", python.display()))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("{} failed", python.display()))?;
    if !output.status.success() {
        bail!(
            "the requirements checker ({}) failed with {}: {}",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let out: Output = serde_json::from_slice(&output.stdout)
        .context("the requirements checker printed invalid JSON")?;
    Ok(Outcome {
        diagnostics: out
            .diagnostics
            .into_iter()
            .map(|d| Diagnostic {
                severity: if d.severity == "error" {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                file: d.file,
                line: d.line,
                column: None,
                code: code(&d.code),
                message: d.message,
                hint: d.hint,
            })
            .collect(),
        needed: out.needed,
    })
}
