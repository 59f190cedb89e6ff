//! A loaded model (its Python module) and its instances (one Python object
//! each), and the execution of a batch of requests through user code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use rustpy_config::proto;

use super::interp::{py_error, runtime};
use super::numpy_io::{array_from_chunks, bytes_array, extract_output, ExtractedOutput};
use crate::batch::{self, BatchOutput, OutputData};
use crate::dtype::DataType;
use crate::engine::{ExecReport, OutputSlice, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::request::{CorrelationId, InferRequest, InputTensor, ParamValue};
use crate::spec::ModelSpec;

/// Which Python API the model file implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `class Model` with `predict(inputs, requests)` (rustpy's batched API).
    Batched,
    /// `class TritonPythonModel` with `execute(requests)` (the official API).
    PbUtils,
}

/// A model's Python module, imported once per model version.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub model_dir: PathBuf,
    pub model_file: PathBuf,
    pub api: Api,
    config_json: String,
    parameters: Vec<(String, String)>,
    unique_name: String,
    class: Py<PyAny>,
    module: Option<Py<PyAny>>,
    private_modules: Py<PyAny>,
}

impl LoadedModel {
    /// Imports `<model_dir>/<version>/<default_model_filename or model.py>`.
    pub fn load(cfg: &proto::ModelConfig, model_dir: &Path, version: u64) -> Result<Self> {
        let spec = ModelSpec::from_config(cfg, version)?;
        let file_name = if cfg.default_model_filename.is_empty() {
            "model.py"
        } else {
            cfg.default_model_filename.as_str()
        };
        let model_file = model_dir.join(version.to_string()).join(file_name);
        if !model_file.is_file() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("model '{}': model file {} does not exist", spec.name, model_file.display()),
            ));
        }
        let config_json = rustpy_config::to_json(cfg).to_string();
        let mut parameters: Vec<(String, String)> = cfg
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.string_value.clone()))
            .collect();
        parameters.sort();

        Python::with_gil(|py| {
            let what = format!("model '{}': loading {}", spec.name, model_file.display());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let loaded = rt
                .call_method1(
                    "load_module",
                    (&spec.name, version, model_dir.to_string_lossy(), model_file.to_string_lossy()),
                )
                .map_err(|e| py_error(py, &e, &what))?;
            let (unique_name, module, private): (String, Bound<'_, PyAny>, Bound<'_, PyAny>) =
                loaded.extract().map_err(|e| py_error(py, &e, &what))?;
            let found = rt
                .call_method1("find_model_class", (&module, model_file.to_string_lossy()))
                .map_err(|e| py_error(py, &e, &what))?;
            let (class, api): (Bound<'_, PyAny>, String) =
                found.extract().map_err(|e| py_error(py, &e, &what))?;
            let api = if api == "batched" { Api::Batched } else { Api::PbUtils };
            Ok(LoadedModel {
                spec: spec.clone(),
                model_dir: model_dir.to_path_buf(),
                model_file: model_file.clone(),
                api,
                config_json,
                parameters,
                unique_name,
                class: class.unbind(),
                module: Some(module.unbind()),
                private_modules: private.unbind(),
            })
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The directories a model's code imports its sibling modules from.
    fn search_paths(&self) -> Vec<String> {
        let version_dir = self.model_file.parent().unwrap_or(&self.model_dir);
        vec![version_dir.to_string_lossy().into_owned(), self.model_dir.to_string_lossy().into_owned()]
    }
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // Forget the module and its private sibling modules so an unload frees
        // them and a reload reads the files again.
        Python::with_gil(|py| {
            self.module.take();
            if let Ok(rt) = runtime(py) {
                let _ = rt.call_method1("unload_module", (&self.unique_name, self.private_modules.bind(py)));
            }
        });
    }
}

/// Where an instance runs, as Triton describes it.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub name: String,
    /// "CPU", "GPU" or "MODEL".
    pub kind: String,
    pub device_id: i32,
}

/// One instance of a model: its own Python object.
pub struct ModelInstance {
    model: Arc<LoadedModel>,
    object: Py<PyAny>,
    predict: Py<PyAny>,
    pass_requests: bool,
    split_by_parameters: bool,
}

impl ModelInstance {
    /// Creates the user's object and runs its `initialize(ctx)`.
    pub fn new(model: Arc<LoadedModel>, info: &InstanceInfo) -> Result<Self> {
        if model.api == Api::PbUtils {
            return Err(Error::unsupported(format!(
                "model '{}': {} implements TritonPythonModel (the official Python backend API), which this build does not run yet",
                model.name(),
                model.model_file.display()
            )));
        }
        Python::with_gil(|py| {
            let what = format!("model '{}': initialize raised", model.name());
            let err = |e: PyErr| py_error(py, &e, &what);
            let rt = runtime(py).map_err(err)?;
            let json = py.import_bound("json").map_err(err)?;
            let config = json.call_method1("loads", (&model.config_json,)).map_err(err)?;
            let params = PyDict::new_bound(py);
            for (k, v) in &model.parameters {
                params.set_item(k, v).map_err(err)?;
            }
            let kwargs = PyDict::new_bound(py);
            kwargs.set_item("model_name", model.name()).map_err(err)?;
            kwargs.set_item("model_version", model.spec.version).map_err(err)?;
            kwargs.set_item("instance_name", &info.name).map_err(err)?;
            kwargs.set_item("instance_kind", &info.kind).map_err(err)?;
            kwargs.set_item("device_id", info.device_id).map_err(err)?;
            kwargs.set_item("model_dir", model.model_dir.to_string_lossy()).map_err(err)?;
            kwargs.set_item("config", config).map_err(err)?;
            kwargs.set_item("parameters", params).map_err(err)?;
            let ctx = rt.getattr("ModelContext").and_then(|c| c.call((), Some(&kwargs))).map_err(err)?;
            let created = rt
                .call_method1("create_instance", (model.class.bind(py), ctx, model.search_paths()))
                .map_err(err)?;
            let (object, predict, pass_requests, split_by_parameters, _generator): (
                Bound<'_, PyAny>,
                Bound<'_, PyAny>,
                bool,
                bool,
                bool,
            ) = created.extract().map_err(err)?;
            Ok(ModelInstance {
                model: model.clone(),
                object: object.unbind(),
                predict: predict.unbind(),
                pass_requests,
                split_by_parameters,
            })
        })
    }

    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// Runs the user's `finalize()`, if any.
    pub fn finalize(self) -> Result<()> {
        Python::with_gil(|py| {
            let what = format!("model '{}': finalize raised", self.model.name());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            rt.call_method1("finalize_instance", (self.object.bind(py),))
                .map_err(|e| py_error(py, &e, &what))?;
            Ok(())
        })
    }

    /// Executes `requests`, answering each through its responder (same index).
    /// Every request gets a final response or error; nothing here panics on
    /// bad input or on failing user code.
    pub fn execute<R: Responder>(&self, requests: &[InferRequest<'_>], responders: &mut [R]) -> ExecReport {
        assert_eq!(requests.len(), responders.len(), "one responder per request");
        let spec = &self.model.spec;
        let mut report = ExecReport { ok: vec![false; requests.len()], rows: vec![0; requests.len()], ..Default::default() };
        let mut valid = Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            if responders[i].is_cancelled() {
                responders[i].send_error(&cancelled(spec));
                continue;
            }
            match batch::validate_request(spec, req) {
                Ok(rows) => {
                    report.rows[i] = rows;
                    valid.push((i, req));
                }
                Err(e) => responders[i].send_error(&e),
            }
        }
        if valid.is_empty() {
            return report;
        }
        let groups = batch::plan_groups(spec, &valid, self.split_by_parameters);
        Python::with_gil(|py| {
            for group in &groups {
                self.run_group(py, requests, responders, group, &mut report);
            }
        });
        report
    }

    fn run_group<R: Responder>(
        &self,
        py: Python<'_>,
        requests: &[InferRequest<'_>],
        responders: &mut [R],
        group: &[usize],
        report: &mut ExecReport,
    ) {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let rows: Vec<usize> = group.iter().map(|&i| report.rows[i]).collect();
        let total: usize = rows.iter().sum();
        let batch_rows = spec.batching().then_some(total);

        let fail_all = |responders: &mut [R], err: &Error| {
            for &i in group {
                responders[i].send_error(err);
            }
        };

        let args = match self.build_args(py, requests, group, &rows) {
            Ok(args) => args,
            Err(e) => return fail_all(responders, &e),
        };
        report.calls += 1;
        report.compute_start.get_or_insert_with(Instant::now);
        let result = self.predict.bind(py).call1(args);
        report.compute_end = Some(Instant::now());
        let result = match result {
            Ok(r) => r,
            Err(e) => return fail_all(responders, &py_error(py, &e, &format!("model '{model}': predict raised"))),
        };

        let streaming = runtime(py)
            .and_then(|rt| rt.call_method1("is_iterator", (&result,)))
            .and_then(|b| b.extract::<bool>())
            .unwrap_or(false);
        if !streaming {
            let outputs = match self.extract_outputs(py, &result, requests, group, batch_rows) {
                Ok(o) => o,
                Err(e) => return fail_all(responders, &e),
            };
            let sent = py.allow_threads(|| scatter(&outputs, requests, responders, group, &rows, spec.batching(), true));
            for (&i, ok) in group.iter().zip(sent) {
                report.ok[i] = ok;
            }
            return;
        }

        if !spec.decoupled {
            let e = Error::invalid_arg(format!(
                "model '{model}': predict returned a generator but the model is not decoupled; \
                 set `model_transaction_policy {{ decoupled: true }}` in config.pbtxt or return a dict"
            ));
            let _ = result.call_method0("close");
            return fail_all(responders, &e);
        }
        let mut alive: Vec<bool> = vec![true; group.len()];
        loop {
            if group.iter().all(|&i| responders[i].is_cancelled()) {
                let _ = result.call_method0("close");
                return fail_all(responders, &cancelled(spec));
            }
            let item = match result.call_method0("__next__") {
                Ok(item) => item,
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => break,
                Err(e) => {
                    let err = py_error(py, &e, &format!("model '{model}': predict raised"));
                    for (k, &i) in group.iter().enumerate() {
                        if alive[k] {
                            responders[i].send_error(&err);
                        }
                    }
                    return;
                }
            };
            report.compute_end = Some(Instant::now());
            let outputs = match self.extract_outputs(py, &item, requests, group, batch_rows) {
                Ok(o) => o,
                Err(e) => {
                    let _ = result.call_method0("close");
                    return fail_all(responders, &e);
                }
            };
            let sent = py.allow_threads(|| scatter(&outputs, requests, responders, group, &rows, spec.batching(), false));
            for (k, ok) in sent.into_iter().enumerate() {
                alive[k] &= ok;
            }
        }
        py.allow_threads(|| {
            for (k, &i) in group.iter().enumerate() {
                if alive[k] {
                    responders[i].finish();
                    report.ok[i] = true;
                }
            }
        });
    }

    /// The arguments of one predict call: the concatenated inputs and, if
    /// predict takes them, the per-request infos.
    fn build_args<'py>(
        &self,
        py: Python<'py>,
        requests: &[InferRequest<'_>],
        group: &[usize],
        rows: &[usize],
    ) -> Result<Bound<'py, PyTuple>> {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing inputs"));
        let inputs = PyDict::new_bound(py);
        let first = &requests[group[0]];
        for input in &first.inputs {
            // Requests in one group carry the same inputs (see plan_groups).
            let tensors: Vec<&InputTensor<'_>> =
                group.iter().filter_map(|&i| requests[i].input(&input.name)).collect();
            let shape = if spec.batching() {
                let shapes: Vec<&[i64]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
                batch::concat_shape(&shapes)
            } else {
                input.shape.clone()
            };
            let array = if input.dtype == DataType::Bytes {
                let elems = batch::gather_bytes(&tensors)
                    .map_err(|e| e.context(format!("model '{model}': input '{}'", input.name)))?;
                bytes_array(py, &shape, &elems).map_err(err)?
            } else {
                let chunks: Vec<&[u8]> = tensors.iter().flat_map(|t| t.chunks.iter().copied()).collect();
                array_from_chunks(py, input.dtype, &shape, &chunks).map_err(err)?
            };
            inputs.set_item(&input.name, array).map_err(err)?;
        }
        if !self.pass_requests {
            return Ok(PyTuple::new_bound(py, [inputs.into_any()]));
        }
        let rt = runtime(py).map_err(err)?;
        let info_cls = rt.getattr("RequestInfo").map_err(err)?;
        let infos = PyList::empty_bound(py);
        for (&i, &n) in group.iter().zip(rows) {
            let req = &requests[i];
            let params = PyDict::new_bound(py);
            for (k, v) in &req.parameters {
                let v = match v {
                    ParamValue::String(s) => s.into_py(py),
                    ParamValue::Int(x) => x.into_py(py),
                    ParamValue::Bool(b) => b.into_py(py),
                    ParamValue::Double(d) => d.into_py(py),
                };
                params.set_item(k, v).map_err(err)?;
            }
            let corr = match &req.correlation_id {
                CorrelationId::None => 0u64.into_py(py),
                CorrelationId::Int(x) => x.into_py(py),
                CorrelationId::String(s) => s.into_py(py),
            };
            let info = info_cls
                .call1((&req.id, corr, req.flags, params, n, req.requested_outputs.clone()))
                .map_err(err)?;
            infos.append(info).map_err(err)?;
        }
        Ok(PyTuple::new_bound(py, [inputs.into_any(), infos.into_any()]))
    }

    /// Checks what predict returned (a dict of output name → array) against
    /// the configuration and the outputs the group's requests asked for.
    fn extract_outputs(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        requests: &[InferRequest<'_>],
        group: &[usize],
        batch_rows: Option<usize>,
    ) -> Result<Vec<ExtractedOutput>> {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let dict = value.downcast::<PyDict>().map_err(|_| {
            let ty = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            Error::invalid_arg(format!(
                "model '{model}': predict must return a dict of output name -> numpy array, got {ty}"
            ))
        })?;
        let mut outputs = Vec::with_capacity(dict.len());
        for (key, val) in dict.iter() {
            let name: String = key.extract().map_err(|_| {
                Error::invalid_arg(format!("model '{model}': predict returned a dict with a non-string key {key}"))
            })?;
            let Some(out_spec) = spec.output(&name) else {
                let known: Vec<&str> = spec.outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(Error::invalid_arg(format!(
                    "model '{model}': predict returned unknown output '{name}' (the model's outputs are: {})",
                    known.join(", ")
                )));
            };
            outputs.push(extract_output(py, model, out_spec, &val, batch_rows)?);
        }
        for &i in group {
            for wanted in &requests[i].requested_outputs {
                if !outputs.iter().any(|o| &o.name == wanted) {
                    return Err(Error::invalid_arg(format!(
                        "model '{model}': predict did not return output '{wanted}', which a request asked for"
                    )));
                }
            }
        }
        Ok(outputs)
    }
}

fn cancelled(spec: &ModelSpec) -> Error {
    Error::new(ErrorCode::Cancelled, format!("model '{}': request cancelled", spec.name))
}

/// Cuts each output into the requests' rows and sends one response per
/// request with only the outputs it asked for. Returns per-request success.
fn scatter<R: Responder>(
    outputs: &[ExtractedOutput],
    requests: &[InferRequest<'_>],
    responders: &mut [R],
    group: &[usize],
    rows: &[usize],
    batching: bool,
    is_final: bool,
) -> Vec<bool> {
    let views: Vec<BatchOutput<'_>> = outputs
        .iter()
        .map(|o| BatchOutput {
            name: o.name.clone(),
            dtype: o.dtype,
            shape: o.shape.clone(),
            data: match o.fixed_bytes() {
                Some(b) => OutputData::Fixed(b),
                None => match &o.data {
                    super::numpy_io::ExtractedData::Bytes { buf, elem_offsets } => OutputData::Bytes { buf, elem_offsets },
                    super::numpy_io::ExtractedData::Fixed { .. } => unreachable!("fixed handled above"),
                },
            },
        })
        .collect();
    let ranges = batch::row_ranges(rows);
    group
        .iter()
        .zip(ranges)
        .map(|(&i, range)| {
            let req = &requests[i];
            let slices: Vec<OutputSlice<'_>> = views
                .iter()
                .filter(|v| req.requested_outputs.is_empty() || req.wants_output(&v.name))
                .map(|v| {
                    let (shape, data) =
                        if batching { v.slice_rows(range.clone()) } else { (v.shape.clone(), v.bytes_all()) };
                    OutputSlice { name: &v.name, dtype: v.dtype, shape, data }
                })
                .collect();
            match responders[i].send(&slices, is_final) {
                Ok(()) => true,
                Err(e) => {
                    responders[i].send_error(&e);
                    false
                }
            }
        })
        .collect()
}
