//! The parts of a model's configuration the execution core needs, checked
//! once at load time.

use rustpy_config::proto;

use crate::error::{Error, Result};
use crate::rules::dtype::DataType;

#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    /// Dims without the batch dimension; -1 is variable.
    pub dims: Vec<i64>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub version: u64,
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub decoupled: bool,
    /// Ragged inputs, batch_input/batch_output and optional-input defaults.
    pub ragged: crate::rules::ragged::RaggedSpec,
}

impl ModelSpec {
    pub fn from_config(cfg: &proto::ModelConfig, version: u64) -> Result<Self> {
        let tensor = |kind: &str, name: &str, dt: i32, dims: &[i64], optional: bool| {
            let dtype = proto::DataType::try_from(dt)
                .ok()
                .and_then(|d| DataType::from_name(d.as_str_name()))
                .ok_or_else(|| {
                    Error::invalid_arg(format!(
                        "model '{}': {kind} '{name}' has no valid data_type",
                        cfg.name
                    ))
                })?;
            Ok(TensorSpec {
                name: name.to_string(),
                dtype,
                dims: dims.to_vec(),
                optional,
            })
        };
        let inputs = cfg
            .input
            .iter()
            .map(|i| tensor("input", &i.name, i.data_type, &i.dims, i.optional))
            .collect::<Result<Vec<_>>>()?;
        let outputs = cfg
            .output
            .iter()
            .map(|o| tensor("output", &o.name, o.data_type, &o.dims, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelSpec {
            name: cfg.name.clone(),
            version,
            max_batch_size: usize::try_from(cfg.max_batch_size).unwrap_or(0),
            inputs,
            outputs,
            decoupled: rustpy_config::is_decoupled(cfg),
            ragged: crate::rules::ragged::RaggedSpec::from_config(cfg)?,
        })
    }

    pub fn batching(&self) -> bool {
        self.max_batch_size > 0
    }
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }
}

/// Whether `shape` fits `dims` (-1 in `dims` matches any size).
pub fn dims_match(dims: &[i64], shape: &[i64]) -> bool {
    dims.len() == shape.len() && dims.iter().zip(shape).all(|(&d, &s)| d == -1 || d == s)
}

pub fn fmt_shape(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}
