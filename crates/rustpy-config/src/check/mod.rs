//! Model repository validation as a library (what `rustpy check` reports).
//!
//! [`check_path`] collects every problem it can find rather than stopping at
//! the first, each located (file, and line/column when the problem is in a
//! `config.pbtxt`) and with a hint on how to fix it. Python source checks are
//! the CLI's job; [`crate::repo::model_files`] tells it which files to look at.
//!
//! The steps, one file each:
//! - this file: walk the repository ([`crate::repo`] decides what is a model
//!   and a version), read and parse each `config.pbtxt`, run the rules;
//! - `syntax`: fix hints for parse errors (nearest field/enum name);
//! - the rules over a parsed config, by group: `model` (name, backend, model
//!   files, version policy), `io` (inputs, outputs, labels), `ragged`
//!   (ragged batching, batch_input/batch_output, input defaults),
//!   `scheduling` (batching, instance groups) and `parameters` (isolation, threads,
//!   per-model environment, checkpoint, request_parameters.json).
//!
//! Findings are [`Diagnostic`]s ([`crate::diagnostic`]).

mod io;
mod model;
mod parameters;
mod ragged;
mod scheduling;
mod syntax;

use std::{
    fs, io as stdio,
    path::{Path, PathBuf},
};

use crate::{
    diagnostic::{Diagnostic, Report, Severity},
    parse_pbtxt,
    proto::ModelConfig,
    repo::{
        file_name, is_model_dir, model_path_of_config, subdirs, version_dirs, CONFIG_FILE,
        TESTS_DIR,
    },
    scan::{Block, Locator},
};

/// Checks a model repository (a directory of model directories), a single
/// model directory (see [`is_model_dir`]) or a model's `config.pbtxt`.
pub fn check_path(path: &Path) -> Report {
    let mut out = Vec::new();
    let path = model_path_of_config(path).unwrap_or(path);
    if !path.is_dir() {
        out.push(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: None,
            column: None,
            code: "path.not-found",
            message: "not a directory".into(),
            hint: "pass a model repository, a model directory or a config.pbtxt".into(),
        });
    } else if is_model_dir(path) {
        check_model(path, &mut out);
    } else {
        check_repository(path, &mut out);
    }
    Report { diagnostics: out }
}

fn check_repository(repo: &Path, out: &mut Vec<Diagnostic>) {
    let models = subdirs(repo);
    if models.is_empty() {
        out.push(Diagnostic {
            severity: Severity::Warning,
            file: repo.to_path_buf(),
            line: None,
            column: None,
            code: "repo.empty",
            message: "no model directories found".into(),
            hint: "a model repository holds one directory per model, each with a config.pbtxt and a version directory such as 1/".into(),
        });
    }
    for model in models {
        if file_name(&model).starts_with('.') {
            // Triton treats every subdirectory as a model, hidden ones included.
            out.push(Diagnostic {
                severity: Severity::Warning,
                file: model,
                line: None,
                column: None,
                code: "repo.hidden-dir",
                message: "hidden directory in the model repository".into(),
                hint: "Triton will try to load it as a model; move it out of the repository".into(),
            });
            continue;
        }
        check_model(&model, out);
    }
}

/// Checks one model directory, appending to `out`.
fn check_model(dir: &Path, out: &mut Vec<Diagnostic>) {
    let (versions, ignored) = version_dirs(dir);
    let diag = |severity, file: PathBuf, code, message: String, hint: String| Diagnostic {
        severity,
        file,
        line: None,
        column: None,
        code,
        message,
        hint,
    };

    for other in ignored {
        let name = file_name(&other);
        if name == "__pycache__" || name == TESTS_DIR || name.starts_with('.') {
            continue;
        }
        out.push(diag(
            Severity::Warning,
            other,
            "version.ignored-dir",
            format!("'{name}' is not a version number, so Triton ignores this directory"),
            "version directories are named 1, 2, ... (no leading zeros); rename it or move it elsewhere".into(),
        ));
    }
    if versions.is_empty() {
        out.push(diag(
            Severity::Error,
            dir.to_path_buf(),
            "version.none",
            "model has no version directory".into(),
            format!("create {}/1/ holding the model file", dir.display()),
        ));
    }

    let config_path = dir.join(CONFIG_FILE);
    let text = match fs::read_to_string(&config_path) {
        Ok(text) => text,
        Err(err) if err.kind() == stdio::ErrorKind::NotFound => {
            out.push(diag(
                Severity::Warning,
                config_path,
                "config.missing",
                "model has no config.pbtxt".into(),
                "Triton can only auto-complete a missing config for some backends; write one (`rustpy init`) with backend: \"rustpy\", inputs and outputs".into(),
            ));
            return;
        }
        Err(err) => {
            out.push(diag(
                Severity::Error,
                config_path,
                "config.unreadable",
                format!("cannot read config.pbtxt: {err}"),
                "make the file readable UTF-8 text".into(),
            ));
            return;
        }
    };
    let cfg = match parse_pbtxt(&text) {
        Ok(cfg) => cfg,
        Err(err) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: config_path,
                line: Some(err.line),
                column: Some(err.column),
                code: "config.syntax",
                hint: syntax::syntax_hint(&err),
                message: err.message,
            });
            return;
        }
    };

    let loc = Locator::new(&text);
    let mut rules = Rules {
        dir,
        cfg: &cfg,
        loc: &loc,
        file: &config_path,
        out,
    };
    rules.model(&versions);
    rules.io();
    rules.ragged();
    rules.scheduling();
    rules.instance_groups();
    rules.isolation();
    rules.threads();
    rules.isolate_failures();
    rules.version_policy(&versions);
    rules.checkpoint();
    rules.python_env();
    parameters::check_request_parameters(dir, out);
}

/// Rules over a parsed config, locating findings in its text.
struct Rules<'a, 't> {
    dir: &'a Path,
    cfg: &'a ModelConfig,
    loc: &'a Locator<'t>,
    file: &'a Path,
    out: &'a mut Vec<Diagnostic>,
}

impl Rules<'_, '_> {
    fn push(
        &mut self,
        severity: Severity,
        at: Option<usize>,
        code: &'static str,
        message: String,
        hint: String,
    ) {
        let (line, column) = at.map(|tok| self.loc.position(tok)).unzip();
        self.out.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line,
            column,
            code,
            message,
            hint,
        });
    }

    fn root(&self) -> Block {
        self.loc.root()
    }
}
