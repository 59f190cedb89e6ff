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
