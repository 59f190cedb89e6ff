//! A golden case file, parsed: its requests (inputs, parameters, requested
//! outputs) and what each is expected to produce.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use rustpy_core::local::{self, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ModelSpec, ParamValue};
use serde_json::{Map, Value};

use super::judge::{judge_request, Actual};
use super::Outcome;

const DEFAULT_TOLERANCE: f64 = 1e-5;

/// What a request is expected to produce.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// One response with these outputs (others may be present too).
    Outputs(Map<String, Value>),
    /// A decoupled model's responses, in order.
    Responses(Vec<Map<String, Value>>),
    /// An error whose message contains this text.
    Error(String),
    /// Only that it succeeds.
    Success,
}

#[derive(Debug, Clone)]
pub(super) struct CaseRequest {
    pub(super) inputs: Vec<OwnedTensor>,
    pub(super) parameters: Map<String, Value>,
    pub(super) requested_outputs: Vec<String>,
    pub(super) expect: Expect,
    pub(super) atol: f64,
    pub(super) rtol: f64,
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) requests: Vec<CaseRequest>,
}

pub(super) fn load_case(file: &Path, spec: &ModelSpec) -> anyhow::Result<Case> {
    let text = std::fs::read_to_string(file)?;
    let doc: Value = serde_json::from_str(&text)?;
    parse_case(&doc, spec)
}

pub(super) fn parse_case(doc: &Value, spec: &ModelSpec) -> anyhow::Result<Case> {
    let obj = doc.as_object().context("a case is a JSON object")?;
    let atol = obj
        .get("atol")
        .and_then(Value::as_f64)
        .unwrap_or(DEFAULT_TOLERANCE);
    let rtol = obj
        .get("rtol")
        .and_then(Value::as_f64)
        .unwrap_or(DEFAULT_TOLERANCE);
    let items: Vec<&Value> = match obj.get("requests") {
        Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
        Some(_) => anyhow::bail!("\"requests\" must be a non-empty list"),
        None => vec![doc],
    };
    let requests = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            parse_request(item, spec, atol, rtol).with_context(|| format!("request {i}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Case { requests })
}

pub(super) fn parse_request(
    item: &Value,
    spec: &ModelSpec,
    atol: f64,
    rtol: f64,
) -> anyhow::Result<CaseRequest> {
    let obj = item.as_object().context("a request is a JSON object")?;
    let mut inputs = Vec::new();
    if let Some(map) = obj.get("inputs") {
        let map = map
            .as_object()
            .context("\"inputs\" must be an object of name -> data")?;
        for (name, value) in map {
            inputs.push(input_tensor(spec, name, value)?);
        }
    }
    let parameters = match obj.get("parameters") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => anyhow::bail!("\"parameters\" must be an object"),
    };
    let requested_outputs = match obj.get("requested_outputs") {
        None => Vec::new(),
        Some(v) => {
            serde_json::from_value(v.clone()).context("\"requested_outputs\": a list of names")?
        }
    };
    let expect = match (obj.get("outputs"), obj.get("responses"), obj.get("error")) {
        (Some(Value::Object(m)), None, None) => Expect::Outputs(m.clone()),
        (None, Some(Value::Array(list)), None) => Expect::Responses(
            list.iter()
                .map(|r| {
                    r.as_object()
                        .cloned()
                        .context("each response is an object of outputs")
                })
                .collect::<anyhow::Result<_>>()?,
        ),
        (None, None, Some(Value::String(s))) => Expect::Error(s.clone()),
        (None, None, None) => Expect::Success,
        _ => anyhow::bail!(
            "give one of \"outputs\" (object), \"responses\" (list) or \"error\" (text)"
        ),
    };
    Ok(CaseRequest {
        inputs,
        parameters,
        requested_outputs,
        expect,
        atol: obj.get("atol").and_then(Value::as_f64).unwrap_or(atol),
        rtol: obj.get("rtol").and_then(Value::as_f64).unwrap_or(rtol),
    })
}

/// An input from a case: a nested list, or `{"data" | "fill", "shape", "datatype"}`.
pub(super) fn input_tensor(
    spec: &ModelSpec,
    name: &str,
    value: &Value,
) -> anyhow::Result<OwnedTensor> {
    let config_dtype = spec.input(name).map(|t| t.dtype);
    let (data, shape, dtype) = match value {
        Value::Object(o) => {
            let dtype = match o.get("datatype").and_then(Value::as_str) {
                Some(d) => Some(
                    DataType::from_name(d)
                        .with_context(|| format!("input '{name}': unknown datatype {d}"))?,
                ),
                None => config_dtype,
            };
            let shape: Option<Vec<i64>> = match o.get("shape") {
                Some(s) => Some(
                    serde_json::from_value(s.clone())
                        .with_context(|| format!("input '{name}': bad shape"))?,
                ),
                None => None,
            };
            let data = match (o.get("data"), o.get("fill")) {
                (Some(d), None) => d.clone(),
                (None, Some(fill)) => {
                    let shape = shape
                        .as_ref()
                        .with_context(|| format!("input '{name}': \"fill\" needs a \"shape\""))?;
                    let n = shape
                        .iter()
                        .map(|&d| usize::try_from(d).unwrap_or(0))
                        .product();
                    if fill == "ramp" {
                        // 0, 1, ..., 255, 0, 1, ...: an input with some structure.
                        Value::Array((0..n).map(|i| Value::from(i % 256)).collect())
                    } else {
                        Value::Array(vec![fill.clone(); n])
                    }
                }
                _ => anyhow::bail!("input '{name}': give \"data\" or \"fill\""),
            };
            (data, shape, dtype)
        }
        other => (other.clone(), None, config_dtype),
    };
    let dtype = dtype.with_context(|| {
        format!("input '{name}' is not in the model's config; give its \"datatype\"")
    })?;
    let t = local::tensor_from_json(name, &data, dtype, shape.as_deref())
        .map_err(|e| anyhow!(e.message))?;
    Ok(with_batch_dim(spec, t))
}

/// Adds the batch dimension to a tensor written without it.
pub(super) fn with_batch_dim(spec: &ModelSpec, mut t: OwnedTensor) -> OwnedTensor {
    if let Some(ts) = spec.input(&t.name) {
        if spec.batching() && t.shape.len() == ts.dims.len() {
            t.shape.insert(0, 1);
        }
    }
    t
}

pub(super) fn param_value(v: &Value) -> Option<ParamValue> {
    Some(match v {
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ParamValue::Int(i),
            None => ParamValue::Double(n.as_f64()?),
        },
        Value::String(s) => ParamValue::String(s.clone()),
        _ => return None,
    })
}

impl Case {
    pub(super) fn owned_requests(
        &self,
        decl: Option<&rustpy_config::params::Declaration>,
    ) -> Vec<OwnedRequest> {
        self.requests
            .iter()
            .enumerate()
            .map(|(i, r)| OwnedRequest {
                id: i.to_string(),
                inputs: r.inputs.clone(),
                requested_outputs: r.requested_outputs.clone(),
                parameters: r
                    .parameters
                    .iter()
                    .filter_map(|(k, v)| {
                        // A whole number for a float parameter travels as a
                        // double, as a JSON client's 1.0 would.
                        let mut value = param_value(v)?;
                        if let (ParamValue::Int(n), Some(p)) = (&value, decl.and_then(|d| d.get(k)))
                        {
                            if p.ty == rustpy_config::params::ParamType::Float {
                                value = ParamValue::Double(*n as f64);
                            }
                        }
                        Some((k.clone(), value))
                    })
                    .collect(),
            })
            .collect()
    }

    /// Compares each request's responses with what the case expects.
    pub(super) fn judge(&self, actual: &[Vec<Actual>], decoupled: bool) -> Outcome {
        let mut lines = Vec::new();
        for (i, (req, got)) in self.requests.iter().zip(actual).enumerate() {
            for diff in judge_request(req, got, decoupled) {
                lines.push(format!("request {i}: {diff}"));
            }
        }
        if lines.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed(lines)
        }
    }
}
