//! `rustpy check [PATH]`: the configuration checks of crate `rustpy-config`
//! plus static Python checks of every `backend: "rustpy"` model's model.py.
//! Which directories are models, and which files they run, is
//! `rustpy_config::repo`'s decision (the same one the config checks use).
//!
//! Diagnostics print like a compiler's (`path:line:col: error[code]: ...`
//! and `  = hint: ...`), then a summary line; any error makes the exit code 1.

mod numpy_abi;
mod python;
pub mod pyversion;
pub mod requirements;

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rustpy_config::{
    check as config_check,
    diagnostic::{Diagnostic, Severity},
    repo::{model_dirs, model_files, CONFIG_FILE},
};
use serde::Serialize;

use crate::{cli::CheckArgs, Error, Global, Result, Status};

pub use python::interpreter as python_interpreter;

/// Everything `rustpy check` found.
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
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

pub fn run(_global: &Global, args: CheckArgs) -> Result {
    if !args.path.exists() {
        return Err(Error::usage(format!(
            "{}: no such file or directory",
            args.path.display()
        )));
    }
    let report = check_path_with(&args.path, &args.site_packages)?;
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

/// Runs every check on `path`: a repository, a model directory, or a
/// model's config.pbtxt (which stands for its directory).
pub fn check_path(path: &Path) -> anyhow::Result<Report> {
    check_path_with(path, &[])
}

/// [`check_path`], with extra site-packages directories counted as installed
/// (what `--backend-config=rustpy,site-packages=DIR` adds at serving time).
pub fn check_path_with(path: &Path, site_packages: &[PathBuf]) -> anyhow::Result<Report> {
    let path = match path.file_name() {
        Some(name) if name == CONFIG_FILE && path.is_file() => path.parent().unwrap_or(path),
        _ => path,
    };
    let model_dirs = model_dirs(path);
    let mut diagnostics = config_check::check_path(path).diagnostics;

    let py_models: Vec<python::PyModel> = model_dirs.iter().flat_map(|d| rustpy_files(d)).collect();
    diagnostics.extend(python::check(&py_models)?);
    let reqs = rustpy_requirements(&model_dirs);
    let interpreter = python::interpreter();
    diagnostics.extend(pyversion::check(&interpreter, site_packages));
    diagnostics.extend(numpy_abi::check(&interpreter, site_packages)?);
    diagnostics.extend(requirements::check(&interpreter, &reqs, site_packages)?.diagnostics);

    // Sorted by place, so output is stable and reads top to bottom.
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    diagnostics.dedup();
    Ok(Report {
        models: model_dirs.len(),
        diagnostics,
    })
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

/// The requirements.txt of every `backend: "rustpy"` model under `model_dirs`
/// (in-process models share one interpreter; other backends have their own).
pub fn rustpy_requirements(model_dirs: &[PathBuf]) -> Vec<requirements::ModelRequirements> {
    model_dirs
        .iter()
        .filter(|d| {
            fs::read_to_string(d.join(CONFIG_FILE))
                .ok()
                .and_then(|text| rustpy_config::parse_pbtxt(&text).ok())
                .is_some_and(|cfg| cfg.backend == "rustpy")
        })
        .filter_map(|d| requirements::of_model(d))
        .collect()
}

/// The model files of a `backend: "rustpy"` model, with its decoupled flag.
/// Other backends' files (and configs that don't parse, which rustpy-config
/// already reports) are not the Python checks' business.
fn rustpy_files(model_dir: &Path) -> Vec<python::PyModel> {
    let Some(cfg) = fs::read_to_string(model_dir.join(CONFIG_FILE))
        .ok()
        .and_then(|text| rustpy_config::parse_pbtxt(&text).ok())
    else {
        return Vec::new();
    };
    if cfg.backend != "rustpy" {
        return Vec::new();
    }
    let decoupled = rustpy_config::is_decoupled(&cfg);
    model_files(model_dir)
        .into_iter()
        .map(|file| python::PyModel { file, decoupled })
        .collect()
}

/// Prints diagnostics compiler-style, then a summary line.
pub fn print_human(report: &Report, mut out: impl Write) {
    // A closed pipe is not worth failing the check over.
    for d in &report.diagnostics {
        let _ = writeln!(out, "{d}");
        if !d.hint.is_empty() {
            let _ = writeln!(out, "  = hint: {}", d.hint);
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

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
