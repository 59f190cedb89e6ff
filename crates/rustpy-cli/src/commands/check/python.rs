//! Static checks of `model.py` files for the rustpy backend.
//!
//! The user's module is never imported (that would run arbitrary code and
//! need its dependencies): a Python interpreter parses each file with `ast`
//! in a subprocess and reports its module-level classes as JSON.

use std::{
    collections::BTreeMap,
    env,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use rustpy_config::diagnostic::{Diagnostic, Severity};

const SCRIPT: &str = include_str!("model_ast.py");
/// Debian's interpreter: the one the backend embeds on the serving machines.
const DEFAULT_PYTHON: &str = "/usr/bin/python3.11";

#[derive(Debug, Deserialize)]
struct FileInfo {
    path: PathBuf,
    #[serde(default)]
    error: Option<ParseError>,
    #[serde(default)]
    classes: BTreeMap<String, ClassInfo>,
    #[serde(default)]
    other_bindings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ParseError {
    message: String,
    line: Option<usize>,
    col: Option<usize>,
    kind: String,
}

#[derive(Debug, Deserialize)]
struct ClassInfo {
    line: usize,
    col: usize,
    bases: u32,
    methods: BTreeMap<String, MethodInfo>,
}

#[derive(Debug, Deserialize)]
struct MethodInfo {
    line: usize,
    col: usize,
    positional: u32,
    varargs: bool,
    generator: bool,
}

/// One model.py to check, with what its config.pbtxt says.
#[derive(Debug, Clone)]
pub struct PyModel {
    pub file: PathBuf,
    /// `model_transaction_policy { decoupled: true }`.
    pub decoupled: bool,
}

/// The interpreter used for the checks: `$RUSTPY_PYTHON`, the one rustpy was
/// built for (PYO3_PYTHON at build time), Debian's
/// python3.11, or `python3` on PATH.
pub fn interpreter() -> PathBuf {
    if let Some(p) = env::var_os("RUSTPY_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // The interpreter rustpy was built for (the backend embeds its libpython).
    if let Some(p) = option_env!("PYO3_PYTHON").filter(|p| Path::new(p).is_file()) {
        return PathBuf::from(p);
    }
    if Path::new(DEFAULT_PYTHON).is_file() {
        return PathBuf::from(DEFAULT_PYTHON);
    }
    PathBuf::from("python3")
}

/// Parses every file in one interpreter run and returns their diagnostics.
pub fn check(models: &[PyModel]) -> anyhow::Result<Vec<Diagnostic>> {
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let paths = models
        .iter()
        .map(|m| {
            m.file
                .to_str()
                .with_context(|| format!("{}: path is not valid UTF-8", m.file.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let infos = run_script(&paths)?;
    if infos.len() != models.len() {
        bail!(
            "the Python checker returned {} results for {} files",
            infos.len(),
            models.len()
        );
    }
    Ok(models
        .iter()
        .zip(infos)
        .flat_map(|(model, info)| diagnose(model, &info))
        .collect())
}

fn run_script(paths: &[&str]) -> anyhow::Result<Vec<FileInfo>> {
    let python = interpreter();
    // -I: isolated (ignores PYTHONPATH/PYTHONHOME and user site-packages),
    // -B: leave no __pycache__ behind in the user's repository.
    let mut child = Command::new(&python)
        .args(["-I", "-B", "-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} for the Python checks (set RUSTPY_PYTHON to a Python 3 interpreter)",
                python.display()
            )
        })?;
    let input = serde_json::to_vec(paths).context("cannot encode file list")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .with_context(|| format!("cannot write to {}", python.display()))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("{} failed", python.display()))?;
    if !output.status.success() {
        bail!(
            "the Python checker ({}) failed with {}: {}",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "unexpected output from the Python checker ({})",
            python.display()
        )
    })
}

fn diagnose(model: &PyModel, info: &FileInfo) -> Vec<Diagnostic> {
    let file = &info.path;
    let mut out = Vec::new();
    let diag = |severity, line, column, code, message: String, hint: &str| Diagnostic {
        severity,
        file: file.clone(),
        line,
        column,
        code,
        message,
        hint: hint.to_owned(),
    };

    if let Some(err) = &info.error {
        let syntax = matches!(
            err.kind.as_str(),
            "SyntaxError" | "IndentationError" | "TabError"
        );
        out.push(if syntax {
            diag(
                Severity::Error,
                err.line,
                err.col,
                "python.syntax",
                format!("{}: {}", err.kind, err.message),
                "the backend cannot import a file with a syntax error",
            )
        } else {
            diag(
                Severity::Error,
                err.line,
                err.col,
                "python.unreadable",
                format!("cannot parse: {}: {}", err.kind, err.message),
                "save the file as UTF-8 Python source",
            )
        });
        return out;
    }

    let is_bound = |name: &str| info.other_bindings.iter().any(|b| b == name);
    if let Some(cls) = info.classes.get("Model") {
        match cls.methods.get("predict") {
            Some(predict) => {
                if predict.positional < 2 && !predict.varargs {
                    out.push(diag(
                        Severity::Error,
                        Some(predict.line),
                        Some(predict.col),
                        "python.predict-signature",
                        "`Model.predict` must take the inputs: `def predict(self, inputs, requests)`"
                            .to_owned(),
                        "the `requests` parameter is optional; `inputs` is not",
                    ));
                }
                match (model.decoupled, predict.generator) {
                    (true, false) => out.push(diag(
                        Severity::Warning,
                        Some(predict.line),
                        Some(predict.col),
                        "python.decoupled-not-generator",
                        "the model is decoupled but `predict` never yields".to_owned(),
                        "a decoupled model streams: `yield` one dict of outputs per response",
                    )),
                    (false, true) => out.push(diag(
                        Severity::Error,
                        Some(predict.line),
                        Some(predict.col),
                        "python.generator-not-decoupled",
                        "`predict` is a generator but the model is not decoupled".to_owned(),
                        "add `model_transaction_policy { decoupled: true }` to config.pbtxt, or `return` the outputs",
                    )),
                    _ => {}
                }
            }
            // A base class may provide predict; that can't be seen statically.
            None if cls.bases > 0 => out.push(diag(
                Severity::Warning,
                Some(cls.line),
                Some(cls.col),
                "python.missing-predict",
                "`class Model` defines no `predict` method (unless a base class provides it)"
                    .to_owned(),
                "define `def predict(self, inputs, requests)` returning a dict of numpy arrays",
            )),
            None => out.push(diag(
                Severity::Error,
                Some(cls.line),
                Some(cls.col),
                "python.missing-predict",
                "`class Model` has no `predict` method".to_owned(),
                "define `def predict(self, inputs, requests)` returning a dict of numpy arrays",
            )),
        }
    } else if let Some(cls) = info.classes.get("TritonPythonModel") {
        if !cls.methods.contains_key("execute") {
            let severity = if cls.bases > 0 {
                Severity::Warning
            } else {
                Severity::Error
            };
            out.push(diag(
                severity,
                Some(cls.line),
                Some(cls.col),
                "python.missing-execute",
                "`class TritonPythonModel` has no `execute` method".to_owned(),
                "define `def execute(self, requests)` returning one response per request",
            ));
        }
    } else if !is_bound("Model") && !is_bound("TritonPythonModel") {
        out.push(diag(
            Severity::Error,
            None,
            None,
            "python.missing-model-class",
            "defines neither `class Model` (rustpy's batched API) nor `class TritonPythonModel`"
                .to_owned(),
            "add `class Model` with `def predict(self, inputs, requests)`; see docs/python-api.md",
        ));
    }
    out
}
