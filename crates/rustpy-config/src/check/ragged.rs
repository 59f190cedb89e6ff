//! Rules on ragged batching: `allow_ragged_batch`, `batch_input` /
//! `batch_output`, and rustpy's `rustpy.ragged` and `rustpy.default.<INPUT>`
//! parameters.

use super::Rules;
use crate::{diagnostic::Severity, proto::DataType};

impl Rules<'_, '_> {
    /// Ragged inputs, batch_input / batch_output, and rustpy's `rustpy.ragged`
    /// and `rustpy.default.<INPUT>` parameters (issue 12).
    pub(super) fn ragged(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        let input_blocks = self.loc.elements(&root, "input");
        for (i, input) in cfg.input.iter().enumerate() {
            if input.allow_ragged_batch && cfg.max_batch_size == 0 {
                let at = input_blocks
                    .get(i)
                    .and_then(|b| self.loc.field(b, "allow_ragged_batch"));
                self.push(
                    Severity::Error,
                    at,
                    "ragged.unbatched-model",
                    format!("input '{}' sets allow_ragged_batch but max_batch_size is 0", input.name),
                    "ragged batching needs batching: set max_batch_size > 0 (and dynamic_batching), or remove allow_ragged_batch".into(),
                );
            }
        }
        self.batch_inputs();
        self.batch_outputs();
        self.ragged_parameters();
    }

    /// Each `batch_input`: one target not named like an input, one source
    /// input, a data type Triton allows.
    fn batch_inputs(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        let blocks = self.loc.elements(&root, "batch_input");
        for (i, bi) in cfg.batch_input.iter().enumerate() {
            let block = blocks.get(i);
            let field = |f: &str| {
                block
                    .and_then(|b| self.loc.field(b, f))
                    .or_else(|| block.and_then(|b| b.first_token()))
            };
            let target = bi.target_name.first().map(String::as_str).unwrap_or("");
            if bi.target_name.len() != 1 {
                self.push(
                    Severity::Error,
                    field("target_name"),
                    "batch-input.target",
                    format!(
                        "batch_input #{} has {} target_name values",
                        i + 1,
                        bi.target_name.len()
                    ),
                    "give each batch_input exactly one target_name: the name predict sees it under"
                        .into(),
                );
            } else if cfg.input.iter().any(|inp| inp.name == target) {
                self.push(Severity::Error, field("target_name"), "batch-input.target",
                    format!("batch_input target '{target}' has the name of an input"),
                    "a batch_input is computed by the backend, not sent by clients: give it a name of its own".into());
            }
            match bi.source_input.as_slice() {
                [source] if cfg.input.iter().any(|inp| &inp.name == source) => {}
                [source] => self.push(Severity::Error, field("source_input"), "batch-input.source",
                    format!("batch_input '{target}' names source_input '{source}', which is not an input"),
                    "source_input must name one of the model's inputs (usually the ragged one)".into()),
                other => self.push(Severity::Error, field("source_input"), "batch-input.source",
                    format!("batch_input '{target}' has {} source_input values", other.len()),
                    "give exactly one source_input".into()),
            }
            if !matches!(
                DataType::try_from(bi.data_type),
                Ok(DataType::TypeInt32 | DataType::TypeFp32)
            ) {
                self.push(
                    Severity::Error,
                    field("data_type"),
                    "batch-input.data-type",
                    format!(
                        "batch_input '{target}' has data_type {}",
                        DataType::try_from(bi.data_type)
                            .map_or("?".into(), |d| d.as_str_name().to_string())
                    ),
                    "Triton defines batch inputs as TYPE_INT32 or TYPE_FP32".into(),
                );
            }
        }
    }

    /// Each `batch_output`: its targets are outputs, its one source input is
    /// ragged.
    fn batch_outputs(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        let ragged = |name: &str| {
            cfg.input
                .iter()
                .any(|i| i.name == name && i.allow_ragged_batch)
        };
        let blocks = self.loc.elements(&root, "batch_output");
        for (i, bo) in cfg.batch_output.iter().enumerate() {
            let block = blocks.get(i);
            let field = |f: &str| {
                block
                    .and_then(|b| self.loc.field(b, f))
                    .or_else(|| block.and_then(|b| b.first_token()))
            };
            for target in &bo.target_name {
                if !cfg.output.iter().any(|o| &o.name == target) {
                    self.push(
                        Severity::Error,
                        field("target_name"),
                        "batch-output.target",
                        format!("batch_output target '{target}' is not an output"),
                        "target_name must name one of the model's outputs".into(),
                    );
                }
            }
            match bo.source_input.as_slice() {
                [source] if ragged(source) => {}
                [source] => self.push(Severity::Error, field("source_input"), "batch-output.source",
                    format!("batch_output source_input '{source}' is not an input with allow_ragged_batch: true"),
                    "BATCH_SCATTER_WITH_INPUT_SHAPE scatters by the shape of a ragged input: set allow_ragged_batch: true on it".into()),
                other => self.push(Severity::Error, field("source_input"), "batch-output.source",
                    format!("batch_output has {} source_input values", other.len()),
                    "give exactly one source_input".into()),
            }
        }
    }

    /// `rustpy.ragged` and `rustpy.default.<INPUT>`.
    fn ragged_parameters(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        let param_blocks = self.loc.elements(&root, "parameters");
        let param_at = |key: &str| {
            param_blocks.iter().find_map(|b| {
                let f = self.loc.field(b, "key")?;
                let v = self.loc.value_of(b, "key", &format!("\"{key}\""))?;
                (v != f).then_some(v)
            })
        };
        let mut keys: Vec<&String> = cfg.parameters.keys().collect();
        keys.sort();
        for key in keys {
            let value = cfg.parameters[key].string_value.as_str();
            if key == "rustpy.ragged" {
                if !matches!(value, "concat" | "pad") {
                    self.push(Severity::Error, param_at(key), "ragged.layout",
                        format!("parameter rustpy.ragged is {value:?}"),
                        "use \"concat\" (Triton's flat concatenation, the default) or \"pad\" (dense [rows, longest], zero-padded)".into());
                } else if !cfg.input.iter().any(|i| i.allow_ragged_batch) {
                    self.push(
                        Severity::Warning,
                        param_at(key),
                        "ragged.layout",
                        "parameter rustpy.ragged is set but no input has allow_ragged_batch: true"
                            .into(),
                        "set allow_ragged_batch: true on the variable-length input(s)".into(),
                    );
                }
                continue;
            }
            let Some(name) = key.strip_prefix("rustpy.default.") else {
                continue;
            };
            let at = param_at(key);
            let Some(input) = cfg.input.iter().find(|i| i.name == name) else {
                self.push(
                    Severity::Error,
                    at,
                    "input.default",
                    format!("parameter {key}: there is no input '{name}'"),
                    "rustpy.default.<INPUT> gives the fill value of an optional input".into(),
                );
                continue;
            };
            let problem = if !input.optional {
                Some(format!("input '{name}' is not optional"))
            } else if input.allow_ragged_batch || input.dims.iter().any(|&d| d < 0) {
                Some(format!(
                    "input '{name}' has variable dims, so its missing rows cannot be filled"
                ))
            } else {
                let dtype = DataType::try_from(input.data_type).unwrap_or(DataType::TypeInvalid);
                (!default_parses(dtype, value))
                    .then(|| format!("{value:?} is not a value of {}", dtype.as_str_name()))
            };
            if let Some(problem) = problem {
                self.push(Severity::Error, at, "input.default",
                    format!("parameter {key}: {problem}"),
                    "defaults are for optional inputs with fixed dims; the value is one element (a number, true/false, or the bytes of a TYPE_STRING)".into());
            }
        }
    }
}

/// Whether `value` is one element of `dtype` (for `rustpy.default.<INPUT>`).
fn default_parses(dtype: DataType, value: &str) -> bool {
    let v = value.trim();
    match dtype {
        DataType::TypeBool => matches!(v, "true" | "false" | "0" | "1"),
        DataType::TypeUint8 => v.parse::<u8>().is_ok(),
        DataType::TypeUint16 => v.parse::<u16>().is_ok(),
        DataType::TypeUint32 => v.parse::<u32>().is_ok(),
        DataType::TypeUint64 => v.parse::<u64>().is_ok(),
        DataType::TypeInt8 => v.parse::<i8>().is_ok(),
        DataType::TypeInt16 => v.parse::<i16>().is_ok(),
        DataType::TypeInt32 => v.parse::<i32>().is_ok(),
        DataType::TypeInt64 => v.parse::<i64>().is_ok(),
        DataType::TypeFp16 | DataType::TypeFp32 | DataType::TypeFp64 => v.parse::<f64>().is_ok(),
        DataType::TypeString => true,
        _ => false,
    }
}
