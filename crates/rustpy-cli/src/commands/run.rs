//! `rustpy run`: loads a model with the backend's own core (same host
//! choice, batching, dtype mapping and errors as inside Triton) and runs one
//! batch of requests.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use rustpy_core::host::HostSettings;
use rustpy_core::local::{self, LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ModelSpec, ParamValue};
use serde_json::{json, Value};

use crate::{cli::RunArgs, Error, Global, Result, Status};

pub fn run(global: &Global, args: RunArgs) -> Result {
    if !args.model_dir.join("config.pbtxt").is_file() {
        return Err(Error::Usage(format!(
            "{} is not a model directory (no config.pbtxt)",
            args.model_dir.display()
        )));
    }
    for dir in &args.site_packages {
        rustpy_core::python::initialize()
            .and_then(|()| rustpy_core::python::add_site_packages(dir))
            .map_err(|e| Error::Usage(e.message))?;
    }
    let started = Instant::now();
    // Hosted as the server would: in this process, or (process isolation,
    // a model's own environment) in a rustpy-worker process.
    let settings = HostSettings::for_executable(args.site_packages.clone());
    let model = LocalModel::load_with(&args.model_dir, args.version, &settings)
        .map_err(|e| Error::Invalid(anyhow!(e.message)))?;
    let load_time = started.elapsed();
    global.status(format!(
        "loaded model '{}' in {:.1} ms",
        model.spec.name,
        ms(load_time)
    ));

    let request = build_request(&model.spec, &args)?;
    let requests: Vec<OwnedRequest> = (0..args.batch)
        .map(|i| OwnedRequest {
            id: format!("{i}"),
            ..request.clone()
        })
        .collect();

    let started = Instant::now();
    let (responses, report) = model.infer(&requests, Duration::from_secs(args.timeout));
    let infer_time = started.elapsed();
    let failed = responses
        .iter()
        .flatten()
        .any(|r| matches!(r, LocalResponse::Error(_)));

    if let Some(dir) = &args.output_dir {
        write_outputs(dir, &responses[0])?;
    }
    if args.json {
        let doc = json!({
            "model": model.spec.name,
            "version": model.spec.version,
            "load_ms": ms(load_time),
            "infer_ms": ms(infer_time),
            "requests": requests.len(),
            "python_calls": report.calls,
            "batch_rows": report.total_rows(),
            "responses": responses.iter().map(|rs| rs.iter().map(response_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Runtime(e.into()))?
        );
    } else {
        print_human(&responses);
        println!(
            "{} request(s) in {} Python call(s), {} batch row(s): load {:.1} ms, execute {:.1} ms",
            requests.len(),
            report.calls,
            report.total_rows(),
            ms(load_time),
            ms(infer_time)
        );
    }
    model
        .finalize()
        .map_err(|e| Error::Invalid(anyhow!(e.message)))?;
    Ok(if failed {
        Status::Failed
    } else {
        Status::Success
    })
}

/// Each request's responses, tensor by tensor.
fn print_human(responses: &[Vec<LocalResponse>]) {
    for (i, rs) in responses.iter().enumerate() {
        if rs.is_empty() {
            println!("request {i}: the stream finished without a response");
        }
        for (k, r) in rs.iter().enumerate() {
            let tag = if rs.len() > 1 {
                format!("request {i} response {k}")
            } else {
                format!("request {i}")
            };
            match r {
                LocalResponse::Outputs(outputs) => {
                    println!("{tag}:");
                    for t in outputs {
                        println!(
                            "  {} {} {:?} = {}",
                            t.name,
                            t.dtype,
                            t.shape,
                            local::format_tensor(t).replace('\n', "\n    ")
                        );
                    }
                }
                LocalResponse::Error(e) => println!("{tag}: error: {}", e.message),
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One request from the JSON file, the .npy files and, for every other
/// required input, example data shaped by the config.
fn build_request(spec: &ModelSpec, args: &RunArgs) -> Result<OwnedRequest> {
    let mut inputs: Vec<OwnedTensor> = Vec::new();
    if let Some(path) = &args.input {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: invalid JSON: {e}", path.display())))?;
        inputs.extend(json_inputs(spec, &doc)?);
    }
    for item in &args.npy {
        let (name, file) = item
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--npy expects NAME=FILE, got `{item}`")))?;
        let dtype = spec.input(name).map(|t| t.dtype);
        let t =
            local::load_npy(Path::new(file), name, dtype).map_err(|e| Error::Usage(e.message))?;
        inputs.push(batched(spec, t));
    }
    for ts in &spec.inputs {
        if ts.optional || inputs.iter().any(|t| t.name == ts.name) {
            continue;
        }
        let mut shape: Vec<i64> = ts.dims.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
        if spec.batching() {
            shape.insert(0, 1);
        }
        inputs.push(
            local::example_tensor(&ts.name, ts.dtype, &shape)
                .map_err(|e| Error::Runtime(anyhow!(e.message)))?,
        );
    }
    // Declared parameters (request_parameters.json) are read as their type;
    // the core then checks them exactly as it checks a request from Triton.
    let decl = rustpy_core::params::load_declaration(&spec.name, &args.model_dir)
        .ok()
        .flatten();
    let parameters = args
        .params
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--param expects KEY=VALUE, got `{p}`")))?;
            use rustpy_config::params::ParamType;
            let declared = decl.as_ref().and_then(|d| d.get(k)).map(|d| d.ty);
            let value = if declared == Some(ParamType::String) {
                ParamValue::String(v.to_string())
            } else if let (Some(ParamType::Float), Ok(f)) = (declared, v.parse::<f64>()) {
                ParamValue::Double(f)
            } else if let Ok(i) = v.parse::<i64>() {
                ParamValue::Int(i)
            } else if let Ok(f) = v.parse::<f64>() {
                ParamValue::Double(f)
            } else if let Ok(b) = v.parse::<bool>() {
                ParamValue::Bool(b)
            } else {
                ParamValue::String(v.to_string())
            };
            Ok((k.to_string(), value))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OwnedRequest {
        id: "0".into(),
        inputs,
        requested_outputs: args.outputs.clone(),
        parameters,
    })
}

/// Adds the batch dimension to a tensor written without it.
fn batched(spec: &ModelSpec, mut t: OwnedTensor) -> OwnedTensor {
    if let Some(ts) = spec.input(&t.name) {
        if spec.batching() && t.shape.len() == ts.dims.len() {
            t.shape.insert(0, 1);
        }
    }
    t
}

fn json_inputs(spec: &ModelSpec, doc: &Value) -> Result<Vec<OwnedTensor>> {
    let mut out = Vec::new();
    if let Some(list) = doc.get("inputs").and_then(Value::as_array) {
        // The KServe v2 request body.
        for item in list {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Usage("an input has no \"name\"".into()))?;
            let dtype = match item.get("datatype").and_then(Value::as_str) {
                Some(d) => DataType::from_name(d)
                    .ok_or_else(|| Error::Usage(format!("input '{name}': unknown datatype {d}")))?,
                None => config_dtype(spec, name)?,
            };
            let shape: Option<Vec<i64>> = item
                .get("shape")
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            let data = item
                .get("data")
                .ok_or_else(|| Error::Usage(format!("input '{name}' has no \"data\"")))?;
            let t = local::tensor_from_json(name, data, dtype, shape.as_deref())
                .map_err(|e| Error::Usage(e.message))?;
            out.push(t);
        }
        return Ok(out);
    }
    let map = doc
        .as_object()
        .ok_or_else(|| Error::Usage("the input JSON must be an object".into()))?;
    for (name, value) in map {
        let dtype = config_dtype(spec, name)?;
        let t = local::tensor_from_json(name, value, dtype, None)
            .map_err(|e| Error::Usage(e.message))?;
        out.push(batched(spec, t));
    }
    Ok(out)
}

fn config_dtype(spec: &ModelSpec, name: &str) -> Result<DataType> {
    spec.input(name).map(|t| t.dtype).ok_or_else(|| {
        let known: Vec<&str> = spec.inputs.iter().map(|t| t.name.as_str()).collect();
        Error::Usage(format!(
            "model '{}' has no input '{name}' (its inputs: {})",
            spec.name,
            known.join(", ")
        ))
    })
}

fn response_json(r: &LocalResponse) -> Value {
    match r {
        LocalResponse::Outputs(outputs) => json!({
            "outputs": outputs.iter().map(|t| json!({
                "name": t.name,
                "datatype": t.dtype.name(),
                "shape": t.shape,
                "data": local::tensor_to_json(t),
            })).collect::<Vec<_>>()
        }),
        LocalResponse::Error(e) => json!({ "error": e.message }),
    }
}

fn write_outputs(dir: &Path, responses: &[LocalResponse]) -> Result {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for r in responses {
        if let LocalResponse::Outputs(outputs) = r {
            for t in outputs {
                let path = dir.join(format!("{}.npy", t.name));
                local::save_npy(&path, t).map_err(|e| Error::Runtime(anyhow!(e.message)))?;
            }
        }
    }
    Ok(Status::Success)
}
