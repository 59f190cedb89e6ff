//! `rustpy.isolate_failures`: when a call of user code fails for a batch of
//! several requests, re-run the failed requests in halves to find the
//! one(s) that cause it, and answer the others (docs/reliability.md).

use crate::model::{is_decoupled, parameter};
use crate::proto::ModelConfig;

/// `parameters` key: find the request that fails a shared call (opt-in).
pub const ISOLATE_FAILURES_KEY: &str = "rustpy.isolate_failures";

/// Reads `rustpy.isolate_failures`: unset or `"false"` (off), `"true"`. A
/// decoupled model may not set it: its responses go out while it runs, so
/// a re-run would answer a request twice.
pub fn isolate_failures_setting(cfg: &ModelConfig) -> Result<bool, String> {
    let on = match parameter(cfg, ISOLATE_FAILURES_KEY).map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(text) => {
            return Err(format!(
                "parameter '{ISOLATE_FAILURES_KEY}' is \"{text}\"; expected \"true\" or \"false\""
            ))
        }
    };
    if on && is_decoupled(cfg) {
        return Err(format!(
            "parameter '{ISOLATE_FAILURES_KEY}' cannot be \"true\" for a decoupled model: its responses leave while it runs, and a re-run would send them again"
        ));
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ModelParameter, ModelTransactionPolicy};

    fn config(value: Option<&str>, decoupled: bool) -> ModelConfig {
        let mut cfg = ModelConfig::default();
        if let Some(v) = value {
            cfg.parameters.insert(
                ISOLATE_FAILURES_KEY.into(),
                ModelParameter {
                    string_value: v.into(),
                },
            );
        }
        if decoupled {
            cfg.model_transaction_policy = Some(ModelTransactionPolicy { decoupled: true });
        }
        cfg
    }

    #[test]
    fn off_unless_true_and_refused_for_decoupled_models() {
        assert_eq!(isolate_failures_setting(&config(None, false)), Ok(false));
        assert_eq!(
            isolate_failures_setting(&config(Some("false"), true)),
            Ok(false)
        );
        assert_eq!(
            isolate_failures_setting(&config(Some(" true "), false)),
            Ok(true)
        );
        let bad = isolate_failures_setting(&config(Some("yes"), false)).unwrap_err();
        assert!(
            bad.contains(ISOLATE_FAILURES_KEY) && bad.contains("\"yes\""),
            "{bad}"
        );
        let decoupled = isolate_failures_setting(&config(Some("true"), true)).unwrap_err();
        assert!(decoupled.contains("decoupled"), "{decoupled}");
    }
}
