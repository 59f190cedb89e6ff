//! Rules on what a model declares through parameters and side files: the
//! isolation settings, the per-model Python environment (rustpy.python_env,
//! EXECUTION_ENV_PATH), the checkpoint source, and `request_parameters.json`.

use std::{fs, io, path::Path};

use super::Rules;
use crate::{
    diagnostic::{Diagnostic, Severity},
    model::{
        isolation_settings, IsolationSettings, PythonEnv, EXECUTE_TIMEOUT_KEY,
        EXECUTION_ENV_PARAMETER, INPUT_SHM_LIMIT_KEY, ISOLATION_KEY, MEMORY_LIMIT_KEY,
        MODEL_DIRECTORY_VAR, PENDING_CALLS_KEY, PYTHON_ENV_KEY, SHM_LIMIT_KEY,
    },
    pyenv,
};

impl Rules<'_, '_> {
    /// The value token of `parameters { key: "<key>" ... }`, else the
    /// `parameters` field itself.
    fn parameter_at(&self, key: &str) -> Option<usize> {
        let root = self.root();
        let quoted = format!("\"{key}\"");
        self.loc
            .elements(&root, "parameters")
            .iter()
            .find_map(|b| {
                self.loc
                    .value_of(b, "key", &quoted)
                    .filter(|&tok| self.loc.field(b, "key") != Some(tok))
            })
            .or_else(|| self.loc.field(&root, "parameters"))
    }

    /// `rustpy.isolation`, `rustpy.execute_timeout_ms`, `rustpy.memory_limit_mb`,
    /// the limits of process mode (`rustpy.input_shm_limit_mb`,
    /// `rustpy.shm_limit_mb`, `rustpy.pending_calls_limit`) and how they
    /// combine with an environment (docs/isolation.md, docs/reliability.md).
    pub(super) fn isolation(&mut self) {
        let Err(message) = isolation_settings(self.cfg) else {
            return;
        };
        // The message starts with the parameter it is about.
        let key = message
            .strip_prefix("parameter '")
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or(ISOLATION_KEY)
            .to_string();
        let at = self.parameter_at(&key);
        self.push(
            Severity::Error,
            at,
            "parameters.isolation",
            message,
            format!(
                "set {ISOLATION_KEY} to \"process\" (a worker process per instance) or \"in_process\" (the default); {EXECUTE_TIMEOUT_KEY}, {MEMORY_LIMIT_KEY}, {INPUT_SHM_LIMIT_KEY}, {SHM_LIMIT_KEY} and {PENDING_CALLS_KEY} are positive integers and need process isolation; a model names at most one environment ({PYTHON_ENV_KEY} or {EXECUTION_ENV_PARAMETER}), which implies process isolation"
            ),
        );
    }

    /// `rustpy.threads`: `"auto"` or a positive integer; a number that
    /// oversubscribes this machine's cores (threads × instances) is worth a
    /// warning, since it is applied as asked (docs/performance.md).
    pub(super) fn threads(&mut self) {
        use crate::threads::{
            available_cores, instance_count, threads_setting, Threads, THREADS_KEY,
        };
        let at = || self.parameter_at(THREADS_KEY);
        match threads_setting(self.cfg) {
            Err(message) => {
                let at = at();
                self.push(
                    Severity::Error,
                    at,
                    "parameters.threads",
                    message,
                    format!("set {THREADS_KEY} to \"auto\" (the default: instances × threads fit the cores) or a positive number of threads per instance for the BLAS and OpenMP pools"),
                );
            }
            Ok(Threads::Fixed(n)) => {
                let (instances, cores) = (instance_count(self.cfg), available_cores());
                if n.saturating_mul(instances) > cores {
                    let at = at();
                    self.push(
                        Severity::Warning,
                        at,
                        "parameters.threads-oversubscribed",
                        format!("{THREADS_KEY} is {n}: {instances} instance(s) × {n} thread(s) exceed the {cores} core(s) of this machine"),
                        format!("threads that outnumber the cores wait on each other; \"auto\" gives each instance cores / instances ({})", (cores / instances).max(1)),
                    );
                }
            }
            Ok(Threads::Auto) => {}
        }
    }

    /// `rustpy.isolate_failures`: `"true"` or `"false"`, and not on a
    /// decoupled model (docs/reliability.md).
    pub(super) fn isolate_failures(&mut self) {
        use crate::failures::{isolate_failures_setting, ISOLATE_FAILURES_KEY};
        if let Err(message) = isolate_failures_setting(self.cfg) {
            let at = self.parameter_at(ISOLATE_FAILURES_KEY);
            self.push(
                Severity::Error,
                at,
                "parameters.isolate-failures",
                message,
                format!("set {ISOLATE_FAILURES_KEY} to \"true\" to re-run a failed batch in halves until the failing request is found (non-decoupled models only), or leave it unset"),
            );
        }
    }

    /// A per-model environment (`rustpy.python_env`, a virtualenv directory;
    /// `EXECUTION_ENV_PATH`, a conda-pack archive) must exist and be of the
    /// Python version rustpy embeds (when this process embeds one: the CLI does).
    pub(super) fn python_env(&mut self) {
        if self.cfg.backend != "rustpy" {
            // The official backend unpacks EXECUTION_ENV_PATH for its own stub.
            return;
        }
        let Ok(IsolationSettings { env: Some(env), .. }) = isolation_settings(self.cfg) else {
            return;
        };
        let key = env.key();
        let path = env.resolve(self.dir);
        let found = match &env {
            PythonEnv::Venv(_) if !path.is_dir() => Err(format!(
                "{key}: '{}' is not a directory ({})",
                env.raw(),
                path.display()
            )),
            PythonEnv::Archive(_) if !path.is_file() => Err(format!(
                "{key}: '{}' is not a file ({})",
                env.raw(),
                path.display()
            )),
            PythonEnv::Venv(_) => pyenv::dir_version(&path).map_err(|e| format!("{key}: {e}")),
            PythonEnv::Archive(_) => {
                pyenv::archive_version(&path).map_err(|e| format!("{key}: {e}"))
            }
        };
        let problem = found.and_then(|version| match pyenv::embedded_python_version() {
            Some(embedded) => pyenv::require_same(version, embedded)
                .map_err(|e| format!("{key}: '{}': {e}", env.raw())),
            None => Ok(()),
        });
        if let Err(message) = problem {
            let at = self.parameter_at(key);
            self.push(
                Severity::Error,
                at,
                "parameters.python-env",
                message,
                format!(
                    "{PYTHON_ENV_KEY} is a virtualenv directory and {EXECUTION_ENV_PARAMETER} a conda-pack .tar.gz (relative to the model directory, or absolute; {MODEL_DIRECTORY_VAR} stands for the model directory), made with the same Python major.minor as the server (`python3.X -m venv DIR`)"
                ),
            );
        }
    }

    pub(super) fn checkpoint(&mut self) {
        use crate::checkpoint::{Checkpoint, Source, SOURCE_PARAMETER};
        let at = self.loc.field(&self.root(), "parameters");
        match Checkpoint::from_config(self.cfg) {
            None => {}
            Some(Err(message)) => self.push(
                Severity::Error,
                at,
                "checkpoint.invalid",
                message,
                format!(
                    "see \"Checkpoints\" in the README for the {SOURCE_PARAMETER} forms (hf://, git+https://, git+file://, s3://, https:// with a sha256, a path)"
                ),
            ),
            Some(Ok(ck)) => {
                let raw = crate::parameter(self.cfg, SOURCE_PARAMETER).unwrap_or_default();
                if crate::checkpoint::redact_url(raw.trim_start_matches("git+")) != raw.trim_start_matches("git+") {
                    self.push(
                        Severity::Warning,
                        at,
                        "checkpoint.credentials-in-source",
                        format!(
                            "{SOURCE_PARAMETER} carries credentials in its URL ({}): they end up in every copy and archive of this config",
                            ck.source.redacted()
                        ),
                        "remove them from the URL and give them through the environment (HF_TOKEN, AWS_*, git's credential helper)".into(),
                    );
                }
                if let Source::Local { path } = &ck.source {
                    if !self.dir.join(path).exists() {
                        self.push(
                            Severity::Error,
                            at,
                            "checkpoint.local-missing",
                            format!("{SOURCE_PARAMETER}: local path '{path}' does not exist"),
                            "paths are relative to the model directory; use an absolute path or file:///".into(),
                        );
                    }
                }
            }
        }
    }
}

/// Checks `request_parameters.json`, when the model has one.
pub(super) fn check_request_parameters(dir: &Path, out: &mut Vec<Diagnostic>) {
    let file = dir.join(crate::params::REQUEST_PARAMETERS_FILE);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return,
        Err(err) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file,
                line: None,
                column: None,
                code: "params.unreadable",
                message: format!("cannot read the request parameter declaration: {err}"),
                hint: "make the file readable UTF-8 JSON".into(),
            });
            return;
        }
    };
    if let Err(errors) = crate::params::parse_declaration(&text) {
        for e in errors {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                line: e.line,
                column: e.column,
                code: "params.declaration",
                message: e.message,
                hint: e.hint,
            });
        }
    }
}
