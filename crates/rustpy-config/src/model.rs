//! Helpers over [`ModelConfig`] shared by the backend and the CLI.

use crate::proto::ModelConfig;

/// The model file Triton's Python backend loads when `default_model_filename` is unset.
pub const DEFAULT_MODEL_FILENAME: &str = "model.py";

/// The official Python backend's per-model environment archive parameter.
pub const EXECUTION_ENV_PARAMETER: &str = "EXECUTION_ENV_PATH";

/// Whether the model uses the decoupled transaction policy (any number of
/// responses per request).
pub fn is_decoupled(cfg: &ModelConfig) -> bool {
    cfg.model_transaction_policy
        .as_ref()
        .is_some_and(|policy| policy.decoupled)
}

/// `parameters { key: "<key>" value { string_value: "..." } }`, if set.
pub fn parameter<'a>(cfg: &'a ModelConfig, key: &str) -> Option<&'a str> {
    cfg.parameters.get(key).map(|p| p.string_value.as_str())
}

/// `parameters` key choosing where a model's Python runs.
pub const ISOLATION_KEY: &str = "rustpy.isolation";
/// `parameters` key: per-execution timeout (milliseconds) of a process-isolated model.
pub const EXECUTE_TIMEOUT_KEY: &str = "rustpy.execute_timeout_ms";
/// `parameters` key: a virtualenv the model's workers use (docs/isolation.md).
pub const PYTHON_ENV_KEY: &str = "rustpy.python_env";
/// `parameters` key: data-segment limit (MiB) of each of the model's workers.
pub const MEMORY_LIMIT_KEY: &str = "rustpy.memory_limit_mb";
/// `parameters` key: the largest (MiB) each instance's input shared memory
/// may grow to; a batch whose inputs need more fails (docs/isolation.md).
pub const INPUT_SHM_LIMIT_KEY: &str = "rustpy.input_shm_limit_mb";
/// `parameters` key: the size (MiB) of each shared-memory region of each of
/// the model's workers (outputs, BLS tensors both ways, and inputs unless
/// `rustpy.input_shm_limit_mb` says otherwise): the most shared memory a
/// worker can make the server hold (docs/reliability.md).
pub const SHM_LIMIT_KEY: &str = "rustpy.shm_limit_mb";
/// `rustpy.shm_limit_mb` when unset.
pub const DEFAULT_SHM_LIMIT_MB: u64 = 1024;
/// `parameters` key: how many server calls (BLS requests, model loads and
/// unloads) each of the model's workers may have in flight at once.
pub const PENDING_CALLS_KEY: &str = "rustpy.pending_calls_limit";
/// `rustpy.pending_calls_limit` when unset.
pub const DEFAULT_PENDING_CALLS: u64 = 256;
/// What `$$TRITON_MODEL_DIRECTORY` in an environment path stands for (as upstream).
pub const MODEL_DIRECTORY_VAR: &str = "$$TRITON_MODEL_DIRECTORY";

/// Where a model's Python code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In the server process (the default).
    #[default]
    InProcess,
    /// Each instance in its own worker process.
    Process,
}

/// The Python environment a process-isolated model's workers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonEnv {
    /// `rustpy.python_env`: a virtualenv directory (the path as written).
    Venv(String),
    /// `EXECUTION_ENV_PATH`: a conda-pack `.tar.gz` (the path as written).
    Archive(String),
}

impl PythonEnv {
    /// The parameter that names it.
    pub fn key(&self) -> &'static str {
        match self {
            PythonEnv::Venv(_) => PYTHON_ENV_KEY,
            PythonEnv::Archive(_) => EXECUTION_ENV_PARAMETER,
        }
    }

    /// The path as written in the config.
    pub fn raw(&self) -> &str {
        match self {
            PythonEnv::Venv(p) | PythonEnv::Archive(p) => p,
        }
    }

    /// The path with `$$TRITON_MODEL_DIRECTORY` replaced by `model_dir`
    /// (as upstream does); a relative path is relative to `model_dir`.
    pub fn resolve(&self, model_dir: &std::path::Path) -> std::path::PathBuf {
        let raw = self.raw().trim();
        let replaced = raw.replace(MODEL_DIRECTORY_VAR, &model_dir.to_string_lossy());
        model_dir.join(replaced)
    }
}

/// The isolation settings of a model, from its `parameters`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IsolationSettings {
    pub mode: Isolation,
    /// Kill and restart a worker whose execution takes longer than this.
    pub execute_timeout_ms: Option<u64>,
    /// Limit of each worker's data segment (heap and private mappings), MiB.
    pub memory_limit_mb: Option<u64>,
    /// Largest size of each instance's input shared-memory region, MiB.
    pub input_shm_limit_mb: Option<u64>,
    /// Size of each of a worker's other shared regions (and of the input
    /// region without `input_shm_limit_mb`), MiB.
    pub shm_limit_mb: Option<u64>,
    /// Server calls each worker may have in flight.
    pub pending_calls_limit: Option<u64>,
    /// The model's own Python environment (implies process isolation).
    pub env: Option<PythonEnv>,
}

/// Reads `rustpy.isolation` (`"in_process"` or `"process"`),
/// `rustpy.execute_timeout_ms` and `rustpy.memory_limit_mb` (positive
/// integers, process mode only) and the model's environment
/// (`rustpy.python_env` or `EXECUTION_ENV_PATH`, at most one). An environment
/// implies process isolation (as the official backend runs the model in a
/// process of that environment); with `rustpy.isolation: "in_process"` it is
/// an error. The error names the parameter and the accepted values.
pub fn isolation_settings(cfg: &ModelConfig) -> Result<IsolationSettings, String> {
    isolation_settings_or(cfg, Isolation::InProcess)
}

/// [`isolation_settings`] where a model that names neither a mode nor an
/// environment gets `default` (the backend's `default-isolation`).
pub fn isolation_settings_or(
    cfg: &ModelConfig,
    default: Isolation,
) -> Result<IsolationSettings, String> {
    let explicit = match parameter(cfg, ISOLATION_KEY).map(str::trim) {
        None | Some("") => None,
        Some("in_process") => Some(Isolation::InProcess),
        Some("process") => Some(Isolation::Process),
        Some(other) => {
            return Err(format!(
                "parameter '{ISOLATION_KEY}' is \"{other}\"; expected \"in_process\" or \"process\""
            ))
        }
    };
    let positive = |key: &str, unit: &str| -> Result<Option<u64>, String> {
        match parameter(cfg, key).map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!(
                    "parameter '{key}' is \"{text}\"; expected a positive number of {unit}"
                )),
            },
        }
    };
    let execute_timeout_ms = positive(EXECUTE_TIMEOUT_KEY, "milliseconds")?;
    let memory_limit_mb = positive(MEMORY_LIMIT_KEY, "MiB")?;
    let input_shm_limit_mb = positive(INPUT_SHM_LIMIT_KEY, "MiB")?;
    let shm_limit_mb = positive(SHM_LIMIT_KEY, "MiB")?;
    let pending_calls_limit = positive(PENDING_CALLS_KEY, "calls")?;
    let venv = parameter(cfg, PYTHON_ENV_KEY).filter(|p| !p.trim().is_empty());
    let archive = parameter(cfg, EXECUTION_ENV_PARAMETER).filter(|p| !p.trim().is_empty());
    let env = match (venv, archive) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "parameter '{PYTHON_ENV_KEY}' and parameter '{EXECUTION_ENV_PARAMETER}' both name an environment; a model has one"
            ))
        }
        (Some(v), None) => Some(PythonEnv::Venv(v.to_string())),
        (None, Some(a)) => Some(PythonEnv::Archive(a.to_string())),
        (None, None) => None,
    };
    let mode = match (explicit, &env) {
        (Some(Isolation::InProcess), Some(env)) => {
            return Err(format!(
                "parameter '{}' needs process isolation (a per-model environment cannot apply to the server's one interpreter); drop '{ISOLATION_KEY}: \"in_process\"'",
                env.key()
            ))
        }
        (Some(mode), _) => mode,
        (None, Some(_)) => Isolation::Process,
        (None, None) => default,
    };
    if mode != Isolation::Process {
        if execute_timeout_ms.is_some() {
            return Err(format!(
                "parameter '{EXECUTE_TIMEOUT_KEY}' needs '{ISOLATION_KEY}: \"process\"' (an in-process execution cannot be stopped)"
            ));
        }
        if memory_limit_mb.is_some() {
            return Err(format!(
                "parameter '{MEMORY_LIMIT_KEY}' needs '{ISOLATION_KEY}: \"process\"' (the limit applies to a worker process)"
            ));
        }
        for (key, set) in [
            (INPUT_SHM_LIMIT_KEY, input_shm_limit_mb.is_some()),
            (SHM_LIMIT_KEY, shm_limit_mb.is_some()),
        ] {
            if set {
                return Err(format!(
                    "parameter '{key}' needs '{ISOLATION_KEY}: \"process\"' (in-process models use no shared memory)"
                ));
            }
        }
        if pending_calls_limit.is_some() {
            return Err(format!(
                "parameter '{PENDING_CALLS_KEY}' needs '{ISOLATION_KEY}: \"process\"' (it bounds what a worker process may ask of the server)"
            ));
        }
    }
    Ok(IsolationSettings {
        mode,
        execute_timeout_ms,
        memory_limit_mb,
        input_shm_limit_mb,
        shm_limit_mb,
        pending_calls_limit,
        env,
    })
}

/// Characters the official Python backend refuses in model and instance
/// names since r25.08 ("Invalid stub name: contains invalid characters";
/// its stub names reached a shell). rustpy refuses the same names, so a
/// repository loads on both or on neither.
pub const INVALID_NAME_CHARS: &str = ";|&$`<>()[]{}\\\"'*?~#!";

/// The first character of `name` the official backend refuses, if any (an
/// empty name is refused too: `Some('\0')`).
pub fn invalid_name_char(name: &str) -> Option<char> {
    if name.is_empty() {
        return Some('\0');
    }
    name.chars().find(|c| INVALID_NAME_CHARS.contains(*c))
}

/// The file each version directory must hold: `default_model_filename`, or `model.py`.
pub fn model_filename(cfg: &ModelConfig) -> &str {
    if cfg.default_model_filename.is_empty() {
        DEFAULT_MODEL_FILENAME
    } else {
        &cfg.default_model_filename
    }
}

/// Number of elements of a tensor with these dims, or `None` if any dim is
/// variable (negative) or the product overflows. Empty dims are a scalar-like
/// shape `[1]` in Triton, hence 1.
pub fn element_count(dims: &[i64]) -> Option<i64> {
    dims.iter().try_fold(
        1i64,
        |acc, &d| {
            if d < 0 {
                None
            } else {
                acc.checked_mul(d)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ModelParameter, ModelTransactionPolicy};

    fn with_params(params: &[(&str, &str)]) -> ModelConfig {
        let mut cfg = ModelConfig::default();
        for (k, v) in params {
            cfg.parameters.insert(
                k.to_string(),
                ModelParameter {
                    string_value: v.to_string(),
                },
            );
        }
        cfg
    }

    #[test]
    fn a_backend_default_isolation_applies_only_where_the_config_is_silent() {
        let silent = ModelConfig::default();
        assert_eq!(
            isolation_settings_or(&silent, Isolation::Process)
                .unwrap()
                .mode,
            Isolation::Process
        );
        let chosen = with_params(&[(ISOLATION_KEY, "in_process")]);
        assert_eq!(
            isolation_settings_or(&chosen, Isolation::Process)
                .unwrap()
                .mode,
            Isolation::InProcess
        );
        // Process-only settings are fine under a process default.
        let timed = with_params(&[(EXECUTE_TIMEOUT_KEY, "100")]);
        assert!(isolation_settings(&timed).is_err());
        assert!(isolation_settings_or(&timed, Isolation::Process).is_ok());
    }

    #[test]
    fn names_the_official_backend_refuses() {
        for bad in [
            "model;test",
            "model|x",
            "m$x",
            "m`x`",
            "m(x)",
            "m{x}",
            "m\\x",
            "m\"x",
            "m'x",
            "m*x",
            "m~x",
            "m!x",
            "",
        ] {
            assert!(invalid_name_char(bad).is_some(), "{bad:?}");
        }
        for good in [
            "TestModel123",
            "model-with-hyphens",
            "model_with_underscores",
            "a.b_0_0",
        ] {
            assert_eq!(invalid_name_char(good), None, "{good}");
        }
    }

    #[test]
    fn isolation_settings_default_and_process() {
        assert_eq!(
            isolation_settings(&ModelConfig::default()).unwrap(),
            IsolationSettings::default()
        );
        let s = isolation_settings(&with_params(&[
            (ISOLATION_KEY, "process"),
            (EXECUTE_TIMEOUT_KEY, "2500"),
        ]))
        .unwrap();
        assert_eq!(s.mode, Isolation::Process);
        assert_eq!(s.execute_timeout_ms, Some(2500));
    }

    #[test]
    fn isolation_settings_reject_bad_values() {
        let e = isolation_settings(&with_params(&[(ISOLATION_KEY, "thread")])).unwrap_err();
        assert!(
            e.contains("rustpy.isolation") && e.contains("\"process\""),
            "{e}"
        );
        for bad in ["0", "-5", "1.5", "soon"] {
            let e = isolation_settings(&with_params(&[
                (ISOLATION_KEY, "process"),
                (EXECUTE_TIMEOUT_KEY, bad),
            ]))
            .unwrap_err();
            assert!(e.contains("rustpy.execute_timeout_ms"), "{e}");
        }
        let e = isolation_settings(&with_params(&[(EXECUTE_TIMEOUT_KEY, "100")])).unwrap_err();
        assert!(e.contains("needs"), "{e}");
    }

    #[test]
    fn an_environment_implies_process_isolation() {
        let s = isolation_settings(&with_params(&[(PYTHON_ENV_KEY, "venv")])).unwrap();
        assert_eq!(s.mode, Isolation::Process);
        assert_eq!(s.env, Some(PythonEnv::Venv("venv".into())));
        let s = isolation_settings(&with_params(&[
            (EXECUTION_ENV_PARAMETER, "$$TRITON_MODEL_DIRECTORY/e.tar.gz"),
            (MEMORY_LIMIT_KEY, "512"),
        ]))
        .unwrap();
        assert_eq!(s.mode, Isolation::Process);
        assert_eq!(s.memory_limit_mb, Some(512));
        assert_eq!(s.input_shm_limit_mb, None);
        let env = s.env.unwrap();
        assert_eq!(env.key(), EXECUTION_ENV_PARAMETER);
        let dir = std::path::Path::new("/models/m");
        assert_eq!(env.resolve(dir), dir.join("e.tar.gz"));
        assert_eq!(
            PythonEnv::Venv("/abs/venv".into()).resolve(dir),
            std::path::Path::new("/abs/venv")
        );
        assert_eq!(PythonEnv::Venv("v".into()).resolve(dir), dir.join("v"));

        for bad in [
            vec![(ISOLATION_KEY, "in_process"), (PYTHON_ENV_KEY, "v")],
            vec![(PYTHON_ENV_KEY, "v"), (EXECUTION_ENV_PARAMETER, "e.tgz")],
            vec![(MEMORY_LIMIT_KEY, "64")],
            vec![(ISOLATION_KEY, "process"), (MEMORY_LIMIT_KEY, "0")],
            vec![(INPUT_SHM_LIMIT_KEY, "64")],
            vec![(ISOLATION_KEY, "process"), (INPUT_SHM_LIMIT_KEY, "big")],
        ] {
            assert!(isolation_settings(&with_params(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_limits_of_what_a_worker_may_make_the_server_hold() {
        let s = isolation_settings(&with_params(&[
            (ISOLATION_KEY, "process"),
            (SHM_LIMIT_KEY, "64"),
            (PENDING_CALLS_KEY, "8"),
        ]))
        .unwrap();
        assert_eq!((s.shm_limit_mb, s.pending_calls_limit), (Some(64), Some(8)));
        let unset = isolation_settings(&with_params(&[(ISOLATION_KEY, "process")])).unwrap();
        assert_eq!(
            (unset.shm_limit_mb, unset.pending_calls_limit),
            (None, None)
        );
        for (key, value, needle) in [
            (SHM_LIMIT_KEY, "0", "positive number of MiB"),
            (SHM_LIMIT_KEY, "1g", "positive number of MiB"),
            (PENDING_CALLS_KEY, "-1", "positive number of calls"),
            (PENDING_CALLS_KEY, "many", "positive number of calls"),
        ] {
            let e = isolation_settings(&with_params(&[(ISOLATION_KEY, "process"), (key, value)]))
                .unwrap_err();
            assert!(e.contains(key) && e.contains(needle), "{e}");
        }
        for key in [SHM_LIMIT_KEY, PENDING_CALLS_KEY] {
            let e = isolation_settings(&with_params(&[(key, "4")])).unwrap_err();
            assert!(e.contains(key) && e.contains("needs"), "{e}");
        }
    }

    #[test]
    fn config_helpers() {
        let mut cfg = ModelConfig::default();
        assert!(!is_decoupled(&cfg));
        assert_eq!(model_filename(&cfg), "model.py");
        cfg.model_transaction_policy = Some(ModelTransactionPolicy { decoupled: true });
        cfg.default_model_filename = "serve.py".into();
        cfg.parameters.insert(
            "k".into(),
            ModelParameter {
                string_value: "v".into(),
            },
        );
        assert!(is_decoupled(&cfg));
        assert_eq!(model_filename(&cfg), "serve.py");
        assert_eq!(parameter(&cfg, "k"), Some("v"));
        assert_eq!(parameter(&cfg, "K"), None);
    }

    #[test]
    fn element_counts() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, 2]), None);
    }
}
