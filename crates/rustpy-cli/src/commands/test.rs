//! `rustpy test PATH`: runs the golden cases kept with each model
//! (`<model>/tests/*.json`) through the backend's own core (no Triton), or
//! with `--server URL` against a live tritonserver over HTTP, and reports
//! what differed.
//!
//! A case file:
//!
//! ```json
//! {
//!   "description": "two requests in one batch",
//!   "atol": 1e-5, "rtol": 1e-5,
//!   "requests": [
//!     {"inputs": {"INPUT0": [[1, 2, 3]]}, "parameters": {"scale": 2.0},
//!      "outputs": {"OUTPUT0": [[2, 4, 6]]}},
//!     {"inputs": {"INPUT0": {"shape": [1, 3], "fill": 0}},
//!      "parameters": {"scale": -1}, "error": "below the minimum"}
//!   ]
//! }
//! ```
//!
//! A case without `requests` is one request (its `inputs`, `parameters`,
//! `outputs`/`responses`/`error` at the top level). An input is a nested
//! list (its dtype from the config; the batch dimension is added when it is
//! left out) or `{"data" | "fill", "shape", "datatype"}` (`fill`: a value
//! repeated, or `"ramp"` for 0, 1, ..., 255, 0, ...). An expected output
//! is a nested list (its shape is checked) or `{"data", "shape", "datatype"}`;
//! numbers match within `atol + rtol * |expected|`, strings and bools
//! exactly. `responses` lists the expected responses of a decoupled model.
//! All requests of a case go to the model as one batch (locally), or
//! concurrently (against a server, whose batcher may combine them): KServe v2
//! JSON `infer`, or `generate_stream` for decoupled models.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rustpy_core::local::{self, LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ModelSpec, ParamValue};
use serde_json::{json, Map, Value};

use crate::{cli::TestArgs, Error, Global, Result, Status};

/// Where a model's golden cases live.
pub use rustpy_config::repo::TESTS_DIR;

const DEFAULT_TOLERANCE: f64 = 1e-5;
const MAX_DIFFS: usize = 5;

pub fn run(global: &Global, args: TestArgs) -> Result {
    let models = if rustpy_config::repo::is_model_dir(&args.path) {
        vec![args.path.clone()]
    } else if args.path.is_dir() {
        rustpy_config::repo::model_dirs(&args.path)
    } else {
        return Err(Error::Usage(format!(
            "{} is not a model directory or repository",
            args.path.display()
        )));
    };
    let server = match &args.server {
        Some(url) => Some(server_addr(url)?),
        None => None,
    };
    let timeout = Duration::from_secs(args.timeout);

    let mut results: Vec<CaseResult> = Vec::new();
    for model_dir in &models {
        let files = case_files(model_dir)?;
        if files.is_empty() {
            global.status(format!(
                "{}: no test cases ({}/*.json)",
                model_dir.display(),
                TESTS_DIR
            ));
            continue;
        }
        results.extend(run_model(model_dir, &files, server, timeout));
    }
    if results.is_empty() {
        return Err(Error::Usage(format!(
            "no test cases found under {} (write <model>/{TESTS_DIR}/*.json)",
            args.path.display()
        )));
    }

    if let Some(path) = &args.junit {
        std::fs::write(path, junit_xml(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = results.iter().filter(|r| r.outcome.is_failure()).count();
    let skipped = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
        .count();
    let passed = results.len() - failed - skipped;
    if args.json {
        let doc = json!({
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "target": args.server.as_deref().unwrap_or("local"),
            "cases": results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Runtime(e.into()))?
        );
    } else {
        for r in &results {
            let (tag, lines): (&str, &[String]) = match &r.outcome {
                Outcome::Passed => ("PASS", &[]),
                Outcome::Failed(lines) => ("FAIL", lines),
                Outcome::Skipped(why) => ("SKIP", std::slice::from_ref(why)),
            };
            println!(
                "{tag}  {}/{} ({} request(s), {:.1} ms)",
                r.model,
                r.case,
                r.requests,
                r.elapsed.as_secs_f64() * 1e3
            );
            for line in lines {
                println!("      {}", line.replace('\n', "\n        "));
            }
        }
        println!(
            "{} case(s): {passed} passed, {failed} failed, {skipped} skipped",
            results.len()
        );
    }
    Ok(if failed > 0 {
        Status::Failed
    } else {
        Status::Success
    })
}

/// `<model>/tests/*.json`, sorted.
fn case_files(model_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = model_dir.join(TESTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn server_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return Err(Error::Usage(format!(
            "--server takes http://HOST:PORT (Triton's HTTP endpoint), got `{url}`"
        )));
    }
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--server: cannot resolve `{hostport}`")))
}

#[derive(Debug)]
enum Outcome {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

impl Outcome {
    fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

#[derive(Debug)]
struct CaseResult {
    model: String,
    case: String,
    file: PathBuf,
    requests: usize,
    elapsed: Duration,
    outcome: Outcome,
}

impl CaseResult {
    fn to_json(&self) -> Value {
        let (status, failures, reason) = match &self.outcome {
            Outcome::Passed => ("passed", Vec::new(), None),
            Outcome::Failed(lines) => ("failed", lines.clone(), None),
            Outcome::Skipped(why) => ("skipped", Vec::new(), Some(why.clone())),
        };
        json!({
            "model": self.model,
            "case": self.case,
            "file": self.file.display().to_string(),
            "requests": self.requests,
            "status": status,
            "failures": failures,
            "skip_reason": reason,
            "time_ms": self.elapsed.as_secs_f64() * 1e3,
        })
    }
}

fn model_name(model_dir: &Path) -> String {
    model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run_model(
    model_dir: &Path,
    files: &[PathBuf],
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Vec<CaseResult> {
    let model = model_name(model_dir);
    let result = |file: &Path, requests, elapsed, outcome| CaseResult {
        model: model.clone(),
        case: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file: file.to_path_buf(),
        requests,
        elapsed,
        outcome,
    };
    // The spec (dtypes, batching) always comes from the local model; loading
    // it also checks the model the way the backend will.
    let local = match LocalModel::load(model_dir, None) {
        Ok(m) => m,
        Err(e) => {
            return files
                .iter()
                .map(|f| {
                    result(
                        f,
                        0,
                        Duration::ZERO,
                        Outcome::Failed(vec![format!("model did not load: {}", e.message)]),
                    )
                })
                .collect()
        }
    };
    let decl = rustpy_core::params::load_declaration(&model, model_dir)
        .ok()
        .flatten();
    let mut out = Vec::new();
    for file in files {
        let case = match load_case(file, &local.spec) {
            Ok(c) => c,
            Err(e) => {
                out.push(result(
                    file,
                    0,
                    Duration::ZERO,
                    Outcome::Failed(vec![format!("invalid case file: {e}")]),
                ));
                continue;
            }
        };
        let started = Instant::now();
        let outcome = match server {
            None => {
                let (responses, _) = local.infer(&case.owned_requests(decl.as_ref()), timeout);
                let actual: Vec<Vec<Actual>> = responses
                    .iter()
                    .map(|rs| rs.iter().map(Actual::from_local).collect())
                    .collect();
                case.judge(&actual, local.spec.decoupled)
            }
            Some(addr) if local.spec.decoupled => match generate_bodies(&case) {
                Ok(bodies) => {
                    let actual = infer_generate_stream(addr, &model, &bodies, timeout);
                    case.judge(&actual, true)
                }
                Err(why) => Outcome::Skipped(why),
            },
            Some(addr) => {
                let actual = infer_http(addr, &model, &case, timeout);
                case.judge(&actual, false)
            }
        };
        out.push(result(
            file,
            case.requests.len(),
            started.elapsed(),
            outcome,
        ));
    }
    let _ = local.finalize();
    out
}

/// What a request is expected to produce.
#[derive(Debug, Clone)]
enum Expect {
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
struct CaseRequest {
    inputs: Vec<OwnedTensor>,
    parameters: Map<String, Value>,
    requested_outputs: Vec<String>,
    expect: Expect,
    atol: f64,
    rtol: f64,
}

#[derive(Debug, Clone)]
struct Case {
    requests: Vec<CaseRequest>,
}

fn load_case(file: &Path, spec: &ModelSpec) -> anyhow::Result<Case> {
    let text = std::fs::read_to_string(file)?;
    let doc: Value = serde_json::from_str(&text)?;
    parse_case(&doc, spec)
}

fn parse_case(doc: &Value, spec: &ModelSpec) -> anyhow::Result<Case> {
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

fn parse_request(
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
fn input_tensor(spec: &ModelSpec, name: &str, value: &Value) -> anyhow::Result<OwnedTensor> {
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
fn with_batch_dim(spec: &ModelSpec, mut t: OwnedTensor) -> OwnedTensor {
    if let Some(ts) = spec.input(&t.name) {
        if spec.batching() && t.shape.len() == ts.dims.len() {
            t.shape.insert(0, 1);
        }
    }
    t
}

fn param_value(v: &Value) -> Option<ParamValue> {
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
    fn owned_requests(
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
    fn judge(&self, actual: &[Vec<Actual>], decoupled: bool) -> Outcome {
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

/// One response as received: outputs, or an error message.
#[derive(Debug, Clone)]
enum Actual {
    Outputs(Vec<ActualTensor>),
    Error(String),
}

#[derive(Debug, Clone)]
struct ActualTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    /// Flat values.
    data: Vec<Value>,
    /// Whether `datatype` and `shape` are known (Triton's generate endpoint
    /// returns values only).
    meta_known: bool,
}

impl Actual {
    fn from_local(r: &LocalResponse) -> Actual {
        match r {
            LocalResponse::Error(e) => Actual::Error(e.message.clone()),
            LocalResponse::Outputs(ts) => Actual::Outputs(
                ts.iter()
                    .map(|t| {
                        let mut data = Vec::new();
                        flatten(&local::tensor_to_json(t), &mut data);
                        ActualTensor {
                            name: t.name.clone(),
                            datatype: t.dtype.name().to_string(),
                            shape: t.shape.clone(),
                            data,
                            meta_known: true,
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// From a KServe v2 JSON response body (or error body).
    fn from_http(status: u16, body: &[u8]) -> Actual {
        let doc: Value = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(_) => {
                return Actual::Error(format!("HTTP {status}: {}", String::from_utf8_lossy(body)))
            }
        };
        if let Some(err) = doc.get("error").and_then(Value::as_str) {
            return Actual::Error(err.to_string());
        }
        if status != 200 {
            return Actual::Error(format!("HTTP {status}: {doc}"));
        }
        let outputs = doc
            .get("outputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Actual::Outputs(
            outputs
                .iter()
                .map(|o| {
                    let mut data = Vec::new();
                    flatten(o.get("data").unwrap_or(&Value::Null), &mut data);
                    ActualTensor {
                        name: o.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        datatype: o
                            .get("datatype")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        shape: o
                            .get("shape")
                            .and_then(|s| serde_json::from_value(s.clone()).ok())
                            .unwrap_or_default(),
                        data,
                        meta_known: true,
                    }
                })
                .collect(),
        )
    }

    /// From Triton's `generate_stream` reply: server-sent events, one
    /// `data: {json}` per response, in a chunked body.
    fn from_generate_stream(status: u16, body: &[u8]) -> Vec<Actual> {
        let body = dechunk(body).unwrap_or_else(|| body.to_vec());
        let text = String::from_utf8_lossy(&body);
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(json) = line.strip_prefix("data:") else {
                continue;
            };
            let doc: Value = match serde_json::from_str(json.trim()) {
                Ok(d) => d,
                Err(_) => {
                    out.push(Actual::Error(format!("HTTP {status}: bad event {line:?}")));
                    continue;
                }
            };
            if let Some(err) = doc.get("error").and_then(Value::as_str) {
                out.push(Actual::Error(err.to_string()));
                continue;
            }
            let tensors = doc
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "model_name" | "model_version" | "id"))
                .map(|(k, v)| {
                    let mut data = Vec::new();
                    flatten(v, &mut data);
                    ActualTensor {
                        name: k.clone(),
                        datatype: String::new(),
                        shape: Vec::new(),
                        data,
                        meta_known: false,
                    }
                })
                .collect();
            out.push(Actual::Outputs(tensors));
        }
        if out.is_empty() && status != 200 {
            out.push(Actual::Error(format!("HTTP {status}: {text}")));
        }
        out
    }
}

/// The payload of an HTTP chunked body; `None` if it is not one.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// The shape of a nested list (its first element's at each level); `None`
/// when ragged.
fn nested_shape(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Array(items) => {
            let inner: Vec<Option<Vec<i64>>> = items.iter().map(nested_shape).collect();
            let first = inner.first().cloned().unwrap_or(Some(Vec::new()))?;
            if inner.iter().any(|s| s.as_ref() != Some(&first)) {
                return None;
            }
            let mut shape = vec![items.len() as i64];
            shape.extend(first);
            Some(shape)
        }
        _ => Some(Vec::new()),
    }
}

fn judge_request(req: &CaseRequest, got: &[Actual], decoupled: bool) -> Vec<String> {
    let error = got.iter().find_map(|a| match a {
        Actual::Error(e) => Some(e.clone()),
        _ => None,
    });
    let responses: Vec<&Vec<ActualTensor>> = got
        .iter()
        .filter_map(|a| match a {
            Actual::Outputs(o) if !(decoupled && o.is_empty()) => Some(o),
            _ => None,
        })
        .collect();
    match (&req.expect, error) {
        (Expect::Error(want), Some(e)) if e.contains(want.as_str()) => Vec::new(),
        (Expect::Error(want), Some(e)) => {
            vec![format!("error {e:?} does not contain {want:?}")]
        }
        (Expect::Error(want), None) => {
            vec![format!(
                "expected an error containing {want:?}, but the request succeeded"
            )]
        }
        (_, Some(e)) => vec![format!("unexpected error: {e}")],
        (Expect::Success, None) => Vec::new(),
        (Expect::Outputs(want), None) => match responses.as_slice() {
            [one] => compare_outputs(want, one, req.atol, req.rtol),
            other => vec![format!("expected 1 response, got {}", other.len())],
        },
        (Expect::Responses(want), None) => {
            let mut diffs = Vec::new();
            if want.len() != responses.len() {
                diffs.push(format!(
                    "expected {} response(s), got {}",
                    want.len(),
                    responses.len()
                ));
            }
            for (k, (w, g)) in want.iter().zip(&responses).enumerate() {
                for d in compare_outputs(w, g, req.atol, req.rtol) {
                    diffs.push(format!("response {k}: {d}"));
                }
            }
            diffs
        }
    }
}

fn compare_outputs(
    want: &Map<String, Value>,
    got: &[ActualTensor],
    atol: f64,
    rtol: f64,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, expected) in want {
        let Some(actual) = got.iter().find(|t| &t.name == name) else {
            let present: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
            diffs.push(format!(
                "missing output '{name}' (got: {})",
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ));
            continue;
        };
        diffs.extend(compare_tensor(name, expected, actual, atol, rtol));
    }
    diffs
}

fn compare_tensor(
    name: &str,
    expected: &Value,
    actual: &ActualTensor,
    atol: f64,
    rtol: f64,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let (data, shape, datatype) = match expected {
        Value::Object(o) => {
            let data = o.get("data").cloned().unwrap_or(Value::Null);
            let shape: Option<Vec<i64>> = o
                .get("shape")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .or_else(|| nested_shape(&data).filter(|s| s.len() > 1));
            (
                data,
                shape,
                o.get("datatype")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        }
        other => (other.clone(), nested_shape(other), None),
    };
    if let Some(dt) = datatype.filter(|_| actual.meta_known) {
        if dt != actual.datatype {
            diffs.push(format!(
                "output '{name}': datatype is {}, expected {dt}",
                actual.datatype
            ));
        }
    }
    let mut want = Vec::new();
    flatten(&data, &mut want);
    if let Some(shape) = shape.as_ref().filter(|_| actual.meta_known) {
        if shape != &actual.shape {
            diffs.push(format!(
                "output '{name}': shape is {:?}, expected {shape:?}",
                actual.shape
            ));
        }
    }
    if want.len() != actual.data.len() {
        diffs.push(format!(
            "output '{name}': {} element(s), expected {}",
            actual.data.len(),
            want.len()
        ));
        return diffs;
    }
    let mut bad = 0;
    for (i, (w, g)) in want.iter().zip(&actual.data).enumerate() {
        if let Some(why) = element_diff(w, g, atol, rtol) {
            bad += 1;
            if bad <= MAX_DIFFS {
                diffs.push(format!(
                    "output '{name}'{}: got {g}, expected {w}{why}",
                    index_of(
                        i,
                        if actual.meta_known {
                            &actual.shape
                        } else {
                            &[]
                        }
                    )
                ));
            }
        }
    }
    if bad > MAX_DIFFS {
        diffs.push(format!(
            "output '{name}': ... {} more differing element(s) ({bad} of {})",
            bad - MAX_DIFFS,
            want.len()
        ));
    }
    diffs
}

/// `None` when equal (numbers within tolerance); otherwise a note on why.
fn element_diff(want: &Value, got: &Value, atol: f64, rtol: f64) -> Option<String> {
    match (want, got) {
        (Value::Number(w), Value::Number(g)) => {
            let (w, g) = (w.as_f64()?, g.as_f64()?);
            let tol = atol + rtol * w.abs();
            let diff = (g - w).abs();
            (diff > tol).then(|| format!(" (|diff| {diff:.3e} > tolerance {tol:.3e})"))
        }
        // Triton writes NaN/inf as strings or null in JSON; compare as text.
        _ if want == got => None,
        _ => Some(String::new()),
    }
}

/// `[i,j,...]` of flat index `i` in `shape`.
fn index_of(mut flat: usize, shape: &[i64]) -> String {
    if shape.is_empty() {
        return format!("[{flat}]");
    }
    let mut idx = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        let d = usize::try_from(d).unwrap_or(1).max(1);
        idx[k] = flat % d;
        flat /= d;
    }
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Sends the case's requests concurrently over HTTP (KServe v2 JSON).
fn infer_http(addr: SocketAddr, model: &str, case: &Case, timeout: Duration) -> Vec<Vec<Actual>> {
    let path = format!("/v2/models/{model}/infer");
    std::thread::scope(|s| {
        let handles: Vec<_> = case
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let path = &path;
                s.spawn(move || {
                    let body = http_body(i, r);
                    match super::serve::http::request(
                        addr,
                        "POST",
                        path,
                        Some(body.as_bytes()),
                        timeout,
                    ) {
                        Ok(resp) => vec![Actual::from_http(resp.status, &resp.body)],
                        Err(e) => vec![Actual::Error(format!("HTTP request failed: {e:#}"))],
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Actual::Error("client thread panicked".into())])
            })
            .collect()
    })
}

/// Bodies for Triton's `generate_stream` endpoint (the only HTTP way to
/// drive a decoupled model): each input as a JSON value, parameters as
/// top-level fields. Inputs with more than one element per row do not fit.
fn generate_bodies(case: &Case) -> std::result::Result<Vec<String>, String> {
    case.requests
        .iter()
        .map(|r| {
            let mut doc = r.parameters.clone();
            for t in &r.inputs {
                let mut data = Vec::new();
                flatten(&local::tensor_to_json(t), &mut data);
                if data.len() != 1 {
                    return Err(format!(
                        "decoupled model over HTTP: input '{}' has {} elements; Triton's generate_stream takes one value per input",
                        t.name,
                        data.len()
                    ));
                }
                doc.insert(t.name.clone(), Value::Array(data));
            }
            if !r.requested_outputs.is_empty() {
                return Err("decoupled model over HTTP: generate_stream cannot select outputs".into());
            }
            Ok(Value::Object(doc).to_string())
        })
        .collect()
}

/// Streams each request of a decoupled case through `generate_stream`,
/// concurrently.
fn infer_generate_stream(
    addr: SocketAddr,
    model: &str,
    bodies: &[String],
    timeout: Duration,
) -> Vec<Vec<Actual>> {
    let path = format!("/v2/models/{model}/generate_stream");
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let path = &path;
                s.spawn(move || {
                    match super::serve::http::request(
                        addr,
                        "POST",
                        path,
                        Some(body.as_bytes()),
                        timeout,
                    ) {
                        Ok(resp) => Actual::from_generate_stream(resp.status, &resp.body),
                        Err(e) => vec![Actual::Error(format!("HTTP request failed: {e:#}"))],
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Actual::Error("client thread panicked".into())])
            })
            .collect()
    })
}

fn http_body(i: usize, r: &CaseRequest) -> String {
    let inputs: Vec<Value> = r
        .inputs
        .iter()
        .map(|t| {
            let mut data = Vec::new();
            flatten(&local::tensor_to_json(t), &mut data);
            json!({"name": t.name, "shape": t.shape, "datatype": t.dtype.name(), "data": data})
        })
        .collect();
    let mut doc = json!({"id": i.to_string(), "inputs": inputs});
    if !r.parameters.is_empty() {
        doc["parameters"] = Value::Object(r.parameters.clone());
    }
    if !r.requested_outputs.is_empty() {
        doc["outputs"] = r
            .requested_outputs
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
    }
    doc.to_string()
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` per model, one `<testcase>` per case.
fn junit_xml(results: &[CaseResult]) -> String {
    let mut models: Vec<&str> = results.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let failures = results.iter().filter(|r| r.outcome.is_failure()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"rustpy test\" tests=\"{}\" failures=\"{failures}\">",
        results.len()
    );
    for model in models {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.model == model).collect();
        let f = cases.iter().filter(|r| r.outcome.is_failure()).count();
        let s = cases
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .count();
        let time: f64 = cases.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"{s}\" time=\"{time:.3}\">",
            xml_escape(model),
            cases.len()
        );
        for r in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
                xml_escape(model),
                xml_escape(&r.case),
                xml_escape(&r.file.display().to_string()),
                r.elapsed.as_secs_f64()
            );
            match &r.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed(lines) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(lines.first().map(String::as_str).unwrap_or("failed")),
                        xml_escape(&lines.join("\n"))
                    );
                }
                Outcome::Skipped(why) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(why)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Runs a freshly scaffolded model on `case` (inputs and parameters only) and
/// fills in the outputs it produced, so `rustpy init` ships a passing golden
/// case. Returns the completed case.
pub fn record_case(model_dir: &Path, mut case: Value) -> anyhow::Result<Value> {
    let model = LocalModel::load(model_dir, None).map_err(|e| anyhow!(e.message))?;
    let decl = rustpy_core::params::load_declaration(&model.spec.name, model_dir)
        .map_err(|e| anyhow!(e.message))?;
    let parsed = parse_case(&case, &model.spec)?;
    let (responses, _) = model.infer(
        &parsed.owned_requests(decl.as_ref()),
        Duration::from_secs(60),
    );
    let streaming = model.spec.decoupled;
    let _ = model.finalize();
    let recorded: Vec<Value> = responses
        .iter()
        .map(|rs| {
            let outs: Vec<Value> = rs
                .iter()
                .filter_map(|r| match r {
                    LocalResponse::Outputs(ts) if !ts.is_empty() => Some(Value::Object(
                        ts.iter()
                            .map(|t| (t.name.clone(), local::tensor_to_json(t)))
                            .collect(),
                    )),
                    LocalResponse::Outputs(_) => None,
                    LocalResponse::Error(e) => Some(json!({"error": e.message})),
                })
                .collect();
            outs
        })
        .map(Value::Array)
        .collect();
    let slots: Vec<&mut Value> = match case.get_mut("requests") {
        Some(Value::Array(list)) => list.iter_mut().collect(),
        _ => vec![&mut case],
    };
    for (slot, got) in slots.into_iter().zip(recorded) {
        let Value::Object(obj) = slot else { continue };
        if obj.contains_key("error") {
            continue;
        }
        let got = got.as_array().cloned().unwrap_or_default();
        if let Some(err) = got.iter().find_map(|g| g.get("error")) {
            anyhow::bail!("the scaffolded model failed: {err}");
        }
        if streaming {
            obj.insert("responses".into(), Value::Array(got));
        } else if let Some(first) = got.into_iter().next() {
            obj.insert("outputs".into(), first);
        }
    }
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[i64], data: Value) -> ActualTensor {
        let mut flat = Vec::new();
        flatten(&data, &mut flat);
        ActualTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            data: flat,
            meta_known: true,
        }
    }

    #[test]
    fn generate_stream_events_are_dechunked_and_parsed() {
        let body = b"3f\r\ndata: {\"TOKEN\":\"once\",\"model_name\":\"gen\",\"model_version\":\"1\"}\n\n\r\n19\r\ndata: {\"error\":\"bad k\"}\n\n\r\n0\r\n\r\n";
        let plain = dechunk(body).expect("a valid chunked body");
        assert!(plain.starts_with(b"data: {") && plain.ends_with(b"\"bad k\"}\n\n"));
        let got = Actual::from_generate_stream(200, body);
        assert_eq!(got.len(), 2, "{got:?}");
        match &got[0] {
            Actual::Outputs(t) => {
                assert_eq!(t.len(), 1);
                assert_eq!(t[0].name, "TOKEN");
                assert_eq!(t[0].data, vec![json!("once")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&got[1], Actual::Error(e) if e == "bad k"),
            "{got:?}"
        );
    }

    fn want(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn values_shapes_dtypes_and_missing_outputs() {
        let got = [tensor("Y", &[1, 3], json!([[1.0, 2.0, 3.0]]))];
        assert!(compare_outputs(&want(json!({"Y": [[1, 2, 3]]})), &got, 1e-5, 0.0).is_empty());
        let d = compare_outputs(&want(json!({"Y": [[1, 2, 3.5]]})), &got, 1e-5, 0.0);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0],
            "output 'Y'[0,2]: got 3.0, expected 3.5 (|diff| 5.000e-1 > tolerance 1.000e-5)"
        );
        let d = compare_outputs(&want(json!({"Y": [1, 2, 3]})), &got, 1e-5, 0.0);
        assert_eq!(d, ["output 'Y': shape is [1, 3], expected [3]"]);
        let d = compare_outputs(
            &want(json!({"Y": {"data": [1, 2, 3], "datatype": "INT32"}})),
            &got,
            1e-5,
            0.0,
        );
        assert_eq!(d, ["output 'Y': datatype is FP32, expected INT32"]);
        let d = compare_outputs(&want(json!({"Z": [1]})), &got, 1e-5, 0.0);
        assert_eq!(d, ["missing output 'Z' (got: Y)"]);
        let d = compare_outputs(&want(json!({"Y": [[1, 2]]})), &got, 1e-5, 0.0);
        assert!(
            d.iter().any(|l| l.contains("3 element(s), expected 2")),
            "{d:?}"
        );
    }

    #[test]
    fn tolerance_edges() {
        // |diff| = 1e-3: inside atol 1e-3, outside 9e-4; rtol scales with |expected|.
        let w = json!(1.0);
        assert_eq!(element_diff(&w, &json!(1.001), 1.0001e-3, 0.0), None);
        assert!(element_diff(&w, &json!(1.001), 9e-4, 0.0).is_some());
        assert_eq!(
            element_diff(&json!(1000.0), &json!(1001.0), 0.0, 1.0001e-3),
            None
        );
        assert!(element_diff(&json!(1000.0), &json!(1001.0), 0.0, 0.9e-3).is_some());
        assert_eq!(element_diff(&json!("cat"), &json!("cat"), 0.0, 0.0), None);
        assert!(element_diff(&json!("cat"), &json!("dog"), 1.0, 1.0).is_some());
        assert!(element_diff(&json!(true), &json!(false), 1.0, 1.0).is_some());
    }

    #[test]
    fn many_differences_are_summarised() {
        let got = [tensor("Y", &[10], json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))];
        let d = compare_outputs(
            &want(json!({"Y": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]})),
            &got,
            0.0,
            0.0,
        );
        assert_eq!(d.len(), MAX_DIFFS + 1);
        assert_eq!(
            d[MAX_DIFFS],
            "output 'Y': ... 5 more differing element(s) (10 of 10)"
        );
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let r = |case: &str, outcome| CaseResult {
            model: "m<1>".into(),
            case: case.into(),
            file: "m/tests/a.json".into(),
            requests: 1,
            elapsed: Duration::from_millis(5),
            outcome,
        };
        let xml = junit_xml(&[
            r("ok", Outcome::Passed),
            r(
                "bad",
                Outcome::Failed(vec!["request 0: got \"x\" & <y>".into()]),
            ),
            r("skip", Outcome::Skipped("why".into())),
        ]);
        assert!(
            xml.contains("<testsuites name=\"rustpy test\" tests=\"3\" failures=\"1\">"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "name=\"m&lt;1&gt;\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"request 0: got &quot;x&quot; &amp; &lt;y&gt;\">"),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"why\"/>"), "{xml}");
    }

    #[test]
    fn nested_shapes() {
        assert_eq!(
            nested_shape(&json!([[1, 2], [3, 4], [5, 6]])),
            Some(vec![3, 2])
        );
        assert_eq!(nested_shape(&json!([[1, 2], [3]])), None);
        assert_eq!(nested_shape(&json!(7)), Some(vec![]));
        assert_eq!(index_of(5, &[2, 3]), "[1,2]");
    }
}
