//! Rules on the model as a whole: its name, backend, model file per
//! version and version policy.

use std::path::PathBuf;

use super::Rules;
use crate::{
    diagnostic::{Diagnostic, Severity},
    model::{model_filename, DEFAULT_MODEL_FILENAME},
    proto::model_version_policy::PolicyChoice,
    repo::{file_name, runs_python_files},
};

impl Rules<'_, '_> {
    pub(super) fn model(&mut self, versions: &[(u64, PathBuf)]) {
        let cfg = self.cfg;
        let dir_name = file_name(self.dir);
        if !cfg.name.is_empty() && cfg.name != dir_name {
            let at = self.loc.field(&self.root(), "name");
            self.push(
                Severity::Error,
                at,
                "config.name-mismatch",
                format!(
                    "name \"{}\" does not match the model directory '{dir_name}'",
                    cfg.name
                ),
                format!("set name: \"{dir_name}\" (or remove it), or rename the directory"),
            );
        }

        if cfg.backend.is_empty() && cfg.platform.is_empty() {
            let has_model_py = versions
                .iter()
                .any(|(_, v)| v.join(DEFAULT_MODEL_FILENAME).is_file());
            let (severity, message) = if has_model_py {
                (
                    Severity::Warning,
                    "no backend set; Triton will pick the python backend because of model.py",
                )
            } else {
                (Severity::Error, "neither backend nor platform is set")
            };
            self.push(
                severity,
                None,
                "config.no-backend",
                message.into(),
                "add backend: \"rustpy\" to run the model with rustpy".into(),
            );
        }

        if cfg.max_batch_size < 0 {
            let at = self.loc.field(&self.root(), "max_batch_size");
            self.push(
                Severity::Error,
                at,
                "config.max-batch-size",
                format!("max_batch_size is {}, it must be >= 0", cfg.max_batch_size),
                "use 0 for a model without a batch dimension, or the largest batch it accepts"
                    .into(),
            );
        }

        if runs_python_files(cfg) {
            let filename = model_filename(cfg);
            for (_, version) in versions {
                let file = version.join(filename);
                if !file.is_file() {
                    self.out.push(Diagnostic {
                        severity: Severity::Error,
                        file,
                        line: None,
                        column: None,
                        code: "model.file-missing",
                        message: format!("version {} has no {filename}", file_name(version)),
                        hint: format!(
                            "create {filename} defining `class Model` (or `class TritonPythonModel`), or set default_model_filename"
                        ),
                    });
                }
            }
        }
    }

    pub(super) fn version_policy(&mut self, versions: &[(u64, PathBuf)]) {
        let Some(PolicyChoice::Specific(specific)) = self
            .cfg
            .version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        else {
            return;
        };
        let block = self
            .loc
            .element(&self.root(), "version_policy", 0)
            .and_then(|b| self.loc.element(&b, "specific", 0));
        for &v in &specific.versions {
            if !versions
                .iter()
                .any(|(have, _)| i64::try_from(*have) == Ok(v))
            {
                let at = block
                    .as_ref()
                    .and_then(|b| self.loc.value_of(b, "versions", &v.to_string()));
                self.push(
                    Severity::Error,
                    at,
                    "version.policy-missing",
                    format!("version_policy asks for version {v}, which has no directory"),
                    format!(
                        "create {}/{v}/ or remove {v} from versions",
                        self.dir.display()
                    ),
                );
            }
        }
    }
}
