//! Helpers over [`ModelConfig`] shared by the backend and the CLI.

use crate::proto::{DataType, ModelConfig};

/// The model file Triton's Python backend loads when `default_model_filename` is unset.
pub const DEFAULT_MODEL_FILENAME: &str = "model.py";

/// KServe/Triton wire name of a data type: `BOOL`, `UINT8`, ..., `FP32`, `BYTES`, `BF16`.
/// `TYPE_INVALID` is `"INVALID"`.
pub fn dtype_name(dtype: DataType) -> &'static str {
    match dtype {
        DataType::TypeInvalid => "INVALID",
        DataType::TypeBool => "BOOL",
        DataType::TypeUint8 => "UINT8",
        DataType::TypeUint16 => "UINT16",
        DataType::TypeUint32 => "UINT32",
        DataType::TypeUint64 => "UINT64",
        DataType::TypeInt8 => "INT8",
        DataType::TypeInt16 => "INT16",
        DataType::TypeInt32 => "INT32",
        DataType::TypeInt64 => "INT64",
        DataType::TypeFp16 => "FP16",
        DataType::TypeFp32 => "FP32",
        DataType::TypeFp64 => "FP64",
        // The config calls it STRING; on the wire and in the APIs it is BYTES.
        DataType::TypeString => "BYTES",
        DataType::TypeBf16 => "BF16",
    }
}

impl DataType {
    /// Parses a config name (`"TYPE_FP32"`, `"TYPE_STRING"`) or a wire name
    /// (`"FP32"`, `"BYTES"`). Invalid and unknown names give `None`.
    pub fn from_triton_name(name: &str) -> Option<DataType> {
        let dtype = match name {
            "BYTES" | "STRING" => DataType::TypeString,
            _ if name.starts_with("TYPE_") => DataType::from_str_name(name)?,
            _ => DataType::from_str_name(&format!("TYPE_{name}"))?,
        };
        (dtype != DataType::TypeInvalid).then_some(dtype)
    }

    /// Size of one element in bytes; `None` for variable-size `BYTES` and `INVALID`.
    pub fn byte_size(self) -> Option<usize> {
        match self {
            DataType::TypeInvalid | DataType::TypeString => None,
            DataType::TypeBool | DataType::TypeUint8 | DataType::TypeInt8 => Some(1),
            DataType::TypeUint16
            | DataType::TypeInt16
            | DataType::TypeFp16
            | DataType::TypeBf16 => Some(2),
            DataType::TypeUint32 | DataType::TypeInt32 | DataType::TypeFp32 => Some(4),
            DataType::TypeUint64 | DataType::TypeInt64 | DataType::TypeFp64 => Some(8),
        }
    }
}

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

/// Where a model's Python code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In the server process (the default).
    #[default]
    InProcess,
    /// Each instance in its own worker process.
    Process,
}

/// The isolation settings of a model, from its `parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsolationSettings {
    pub mode: Isolation,
    /// Kill and restart a worker whose execution takes longer than this.
    pub execute_timeout_ms: Option<u64>,
}

/// Reads `rustpy.isolation` (`"in_process"` or `"process"`) and
/// `rustpy.execute_timeout_ms` (a positive integer, process mode only).
/// The error names the parameter and the accepted values.
pub fn isolation_settings(cfg: &ModelConfig) -> Result<IsolationSettings, String> {
    let mode = match parameter(cfg, ISOLATION_KEY).map(str::trim) {
        None | Some("") | Some("in_process") => Isolation::InProcess,
        Some("process") => Isolation::Process,
        Some(other) => {
            return Err(format!(
                "parameter '{ISOLATION_KEY}' is \"{other}\"; expected \"in_process\" or \"process\""
            ))
        }
    };
    let execute_timeout_ms = match parameter(cfg, EXECUTE_TIMEOUT_KEY).map(str::trim) {
        None | Some("") => None,
        Some(text) => match text.parse::<u64>() {
            Ok(ms) if ms > 0 => Some(ms),
            _ => {
                return Err(format!(
                    "parameter '{EXECUTE_TIMEOUT_KEY}' is \"{text}\"; expected a positive number of milliseconds"
                ))
            }
        },
    };
    if execute_timeout_ms.is_some() && mode != Isolation::Process {
        return Err(format!(
            "parameter '{EXECUTE_TIMEOUT_KEY}' needs '{ISOLATION_KEY}: \"process\"' (an in-process execution cannot be stopped)"
        ));
    }
    Ok(IsolationSettings {
        mode,
        execute_timeout_ms,
    })
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
    fn dtype_names_round_trip() {
        for v in 1..=14 {
            let dtype = DataType::try_from(v).unwrap();
            let wire = dtype_name(dtype);
            assert_eq!(DataType::from_triton_name(wire), Some(dtype), "{wire}");
            assert_eq!(DataType::from_triton_name(dtype.as_str_name()), Some(dtype));
        }
        assert_eq!(dtype_name(DataType::TypeFp32), "FP32");
        assert_eq!(dtype_name(DataType::TypeString), "BYTES");
        assert_eq!(
            DataType::from_triton_name("TYPE_STRING"),
            Some(DataType::TypeString)
        );
        assert_eq!(DataType::from_triton_name("TYPE_INVALID"), None);
        assert_eq!(DataType::from_triton_name("INVALID"), None);
        assert_eq!(DataType::from_triton_name("FLOAT32"), None);
        assert_eq!(DataType::from_triton_name("fp32"), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(DataType::TypeBool.byte_size(), Some(1));
        assert_eq!(DataType::TypeBf16.byte_size(), Some(2));
        assert_eq!(DataType::TypeFp64.byte_size(), Some(8));
        assert_eq!(DataType::TypeString.byte_size(), None);
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
