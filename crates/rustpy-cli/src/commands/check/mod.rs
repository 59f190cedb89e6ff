//! `rustpy check [PATH]`: configuration checks (crate `rustpy-config`) plus
//! static Python checks of every `backend: "rustpy"` model's model.py.
//!
//! Diagnostics print like a compiler's (`path:line:col: error[code]: ...`),
//! then a summary line; any error makes the exit code 1.

mod python;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{cli::CheckArgs, Error, Global, Result, Status};

pub use python::interpreter as python_interpreter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Model directories that were checked.
    pub models: usize,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }
}

pub fn run(_global: &Global, args: CheckArgs) -> Result {
    if !args.path.exists() {
        return Err(Error::usage(format!("{}: no such file or directory", args.path.display())));
    }
    let report = check_path(&args.path)?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            ok: bool,
            errors: usize,
            warnings: usize,
            #[serde(flatten)]
            report: &'a Report,
        }
        let text = serde_json::to_string_pretty(&Out {
            ok: report.errors() == 0,
            errors: report.errors(),
            warnings: report.warnings(),
            report: &report,
        })
        .context("cannot encode JSON")?;
        println!("{text}");
    } else {
        print_human(&report, io::stdout().lock());
    }
    Ok(if report.errors() > 0 {
        Status::Failed
    } else {
        Status::Success
    })
}

/// Runs every check on `path`: a repository, a model directory or a config.pbtxt.
pub fn check_path(path: &Path) -> anyhow::Result<Report> {
    let (mut report, py_models) = config_checks(path)?;
    report.diagnostics.extend(python::check(&py_models)?);
    report.diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    Ok(report)
}

/// The checks `rustpy zip` runs before packaging: the whole repository, or
/// only the selected models.
pub fn check_for_packaging(repo: &Path, models: &[String]) -> anyhow::Result<Report> {
    if models.is_empty() {
        return check_path(repo);
    }
    let mut total = Report::default();
    for model in models {
        let report = check_path(&repo.join(model))?;
        total.models += report.models;
        total.diagnostics.extend(report.diagnostics);
    }
    Ok(total)
}

/// Prints diagnostics compiler-style, then a summary line.
pub fn print_human(report: &Report, mut out: impl Write) {
    // Output errors (closed pipe) are not worth failing the check over.
    for d in &report.diagnostics {
        let _ = writeln!(out, "{}", format_diagnostic(d));
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
    }
    let models = plural(report.models, "model");
    let _ = match (report.errors(), report.warnings()) {
        (0, 0) => writeln!(out, "ok: {models} checked, no problems"),
        (0, w) => writeln!(out, "ok: {models} checked, {}", plural(w, "warning")),
        (e, w) => writeln!(
            out,
            "FAILED: {models} checked, {}, {}",
            plural(e, "error"),
            plural(w, "warning")
        ),
    };
}

fn format_diagnostic(d: &Diagnostic) -> String {
    let location = match (d.line, d.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", d.file.display()),
        (Some(l), None) => format!("{}:{l}", d.file.display()),
        _ => d.file.display().to_string(),
    };
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!("{location}: {severity}[{}]: {}", d.code, d.message)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

// ---------------------------------------------------------------------------
// SEAM(rustpy-config): until `rustpy_config::check::check_path` exists, model
// discovery and the few config facts the Python checks need are read here
// with a deliberately naive scan. Replace this block with rustpy-config.
// ---------------------------------------------------------------------------

fn config_checks(path: &Path) -> anyhow::Result<(Report, Vec<python::PyModel>)> {
    let model_dirs: Vec<PathBuf> = if path.is_file() {
        path.parent().map(Path::to_path_buf).into_iter().collect()
    } else if path.join("config.pbtxt").is_file() {
        vec![path.to_path_buf()]
    } else {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))? {
            let entry = entry?;
            if entry.path().join("config.pbtxt").is_file() {
                dirs.push(entry.path());
            }
        }
        dirs.sort();
        dirs
    };
    let mut report = Report {
        models: model_dirs.len(),
        ..Report::default()
    };
    let mut py = Vec::new();
    for dir in model_dirs {
        let cfg_path = dir.join("config.pbtxt");
        let cfg = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let compact: String = cfg.split_whitespace().collect();
        if !compact.contains("backend:\"rustpy\"") {
            continue;
        }
        let decoupled = Some(compact.contains("decoupled:true"));
        let mut found = false;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let is_version = entry.file_name().to_str().is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            if is_version && entry.path().join("model.py").is_file() {
                found = true;
                py.push(python::PyModel { file: entry.path().join("model.py"), decoupled });
            }
        }
        if !found {
            report.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: dir.clone(),
                line: None,
                column: None,
                code: "missing-model-file".into(),
                message: "no <version>/model.py".into(),
                hint: None,
            });
        }
    }
    py.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((report, py))
}
