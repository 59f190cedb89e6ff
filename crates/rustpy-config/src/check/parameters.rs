//! Rules on what a model declares through parameters and side files: the
//! isolation settings, the checkpoint source, EXECUTION_ENV_PATH, and
//! `request_parameters.json`.

use std::{fs, io, path::Path};

use super::Rules;
use crate::{
    diagnostic::{Diagnostic, Severity},
    model::{isolation_settings, EXECUTE_TIMEOUT_KEY, EXECUTION_ENV_PARAMETER, ISOLATION_KEY},
};

impl Rules<'_, '_> {
    /// `rustpy.isolation` / `rustpy.execute_timeout_ms` (docs/isolation.md).
    pub(super) fn isolation(&mut self) {
        let Err(message) = isolation_settings(self.cfg) else {
            return;
        };
        let root = self.root();
        let key = if message.starts_with(&format!("parameter '{ISOLATION_KEY}' is")) {
            ISOLATION_KEY
        } else {
            EXECUTE_TIMEOUT_KEY
        };
        let quoted = format!("\"{key}\"");
        let at = self
            .loc
            .elements(&root, "parameters")
            .iter()
            .find_map(|b| {
                self.loc
                    .value_of(b, "key", &quoted)
                    .filter(|&tok| self.loc.field(b, "key") != Some(tok))
            })
            .or_else(|| self.loc.field(&root, "parameters"));
        self.push(
            Severity::Error,
            at,
            "parameters.isolation",
            message,
            format!(
                "set {ISOLATION_KEY} to \"process\" (a worker process per instance) or \"in_process\" (the default); {EXECUTE_TIMEOUT_KEY} is a positive integer and needs process isolation"
            ),
        );
    }

    /// The official backend unpacks EXECUTION_ENV_PATH into a per-model
    /// environment for its stub process; in-process models share one
    /// interpreter, so the parameter cannot be honoured.
    pub(super) fn execution_env(&mut self) {
        if self.cfg.backend != "rustpy" {
            return;
        }
        if let Some(env) = crate::model::parameter(self.cfg, EXECUTION_ENV_PARAMETER) {
            let at = self.loc.field(&self.root(), "parameters");
            self.push(
                Severity::Error,
                at,
                "config.execution-env",
                format!("{EXECUTION_ENV_PARAMETER} (\"{env}\") is not supported: rustpy models share the server's one Python interpreter"),
                "per-model environments need process isolation: serve this model with backend: \"python\" (the official backend's stub process), or drop the parameter and install its requirements for every model with `rustpy env REPO --target DIR` + --backend-config=rustpy,site-packages=DIR".into(),
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
