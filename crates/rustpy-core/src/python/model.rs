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
use super::native::NativeSender;
use super::numpy_io::{
    array_from_chunks, bytes_array, extract_output, set_readonly, ExtractedOutput,
};
use super::{correlation_to_py, params_dict};
use crate::batch::{self, BatchOutput};
use crate::dtype::DataType;
use crate::engine::{ExecReport, OutputSlice, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::request::{InferRequest, InputTensor};
use crate::spec::ModelSpec;

/// Which Python API the model file implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `class Model` with `predict(inputs, requests)` (rustpy's batched API).
    Batched,
    /// `class TritonPythonModel` with `execute(requests)` (the official API).
    PbUtils,
    /// No Python at all: output i is a copy of input i. Selected with the
    /// config parameter `rustpy.native: "echo"`; the benchmarks' ceiling.
    NativeEcho,
}

/// The config parameter that selects a native (Python-free) model.
pub const NATIVE_PARAMETER: &str = "rustpy.native";

/// A model's Python module, imported once per model version.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub model_dir: PathBuf,
    pub model_file: PathBuf,
    pub api: Api,
    /// Where the model's `rustpy.checkpoint` was fetched to (`ctx.checkpoint_dir`).
    pub checkpoint_dir: Option<PathBuf>,
    config_json: String,
    parameters: Vec<(String, String)>,
    /// `request_parameters.json`: checked on every request of the batched API.
    request_params: Option<rustpy_config::params::Declaration>,
    unique_name: String,
    class: Option<Py<PyAny>>,
    module: Option<Py<PyAny>>,
    private_modules: Option<Py<PyAny>>,
}

impl LoadedModel {
    /// Imports `<model_dir>/<version>/<default_model_filename or model.py>`.
    pub fn load(cfg: &proto::ModelConfig, model_dir: &Path, version: u64) -> Result<Self> {
        let spec = ModelSpec::from_config(cfg, version)?;
        let file_name = rustpy_config::model::model_filename(cfg);
        let config_json = rustpy_config::to_json(cfg).to_string();
        let mut parameters: Vec<(String, String)> = cfg
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.string_value.clone()))
            .collect();
        parameters.sort();
        crate::checkpoint::refuse_execution_env(cfg, &spec.name)?;
        let checkpoint_dir = crate::checkpoint::resolve(cfg, &spec.name, model_dir)?;
        let request_params = crate::params::load_declaration(&spec.name, model_dir)?;

        if let Some(native) = rustpy_config::parameter(cfg, NATIVE_PARAMETER) {
            if native != "echo" {
                return Err(Error::invalid_arg(format!(
                    "model '{}': parameter {NATIVE_PARAMETER} must be \"echo\", got {native:?}",
                    spec.name
                )));
            }
            check_echo_spec(&spec)?;
            return Ok(LoadedModel {
                spec,
                model_dir: model_dir.to_path_buf(),
                model_file: model_dir.join(version.to_string()),
                api: Api::NativeEcho,
                checkpoint_dir,
                config_json,
                parameters,
                request_params,
                unique_name: String::new(),
                class: None,
                module: None,
                private_modules: None,
            });
        }

        let model_file = model_dir.join(version.to_string()).join(file_name);
        if !model_file.is_file() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!(
                    "model '{}': model file {} does not exist",
                    spec.name,
                    model_file.display()
                ),
            ));
        }
        Python::with_gil(|py| {
            let what = format!("model '{}': loading {}", spec.name, model_file.display());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let loaded = rt
                .call_method1(
                    "load_module",
                    (
                        &spec.name,
                        version,
                        model_dir.to_string_lossy(),
                        model_file.to_string_lossy(),
                    ),
                )
                .map_err(|e| py_error(py, &e, &what))?;
            let (unique_name, module, private): (String, Bound<'_, PyAny>, Bound<'_, PyAny>) =
                loaded.extract().map_err(|e| py_error(py, &e, &what))?;
            let found = rt
                .call_method1("find_model_class", (&module, model_file.to_string_lossy()))
                .map_err(|e| py_error(py, &e, &what))?;
            let (class, api): (Bound<'_, PyAny>, String) =
                found.extract().map_err(|e| py_error(py, &e, &what))?;
            let api = if api == "batched" {
                Api::Batched
            } else {
                Api::PbUtils
            };
            Ok(LoadedModel {
                spec: spec.clone(),
                model_dir: model_dir.to_path_buf(),
                model_file: model_file.clone(),
                api,
                checkpoint_dir: checkpoint_dir.clone(),
                config_json,
                parameters,
                request_params,
                unique_name,
                class: Some(class.unbind()),
                module: Some(module.unbind()),
                private_modules: Some(private.unbind()),
            })
        })
    }

    /// Runs the model's `auto_complete_config` (official API only) on Triton's
    /// current config JSON; returns the completed JSON if the model has one.
    pub fn auto_complete(&self, config_json: &str) -> Result<Option<String>> {
        let Some(class) = self.class.as_ref().filter(|_| self.api == Api::PbUtils) else {
            return Ok(None);
        };
        Python::with_gil(|py| {
            let what = format!("model '{}': auto_complete_config raised", self.name());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let out = rt
                .call_method1("auto_complete", (class.bind(py), config_json))
                .map_err(|e| py_error(py, &e, &what))?;
            out.extract::<Option<String>>()
                .map_err(|e| py_error(py, &e, &what))
        })
    }

    /// Adopts a changed configuration (after auto-complete).
    pub fn reconfigure(&mut self, cfg: &proto::ModelConfig) -> Result<()> {
        self.spec = ModelSpec::from_config(cfg, self.spec.version)?;
        self.config_json = rustpy_config::to_json(cfg).to_string();
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The directories a model's code imports its sibling modules from.
    fn search_paths(&self) -> Vec<String> {
        let version_dir = self.model_file.parent().unwrap_or(&self.model_dir);
        vec![
            version_dir.to_string_lossy().into_owned(),
            self.model_dir.to_string_lossy().into_owned(),
        ]
    }
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // Forget the module and its private sibling modules so an unload frees
        // them and a reload reads the files again.
        let Some(private) = self.private_modules.take() else {
            return;
        };
        Python::with_gil(|py| {
            self.module.take();
            self.class.take();
            if let Ok(rt) = runtime(py) {
                let _ = rt.call_method1("unload_module", (&self.unique_name, private.bind(py)));
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
    /// Identifies the instance (its asyncio loop, logs).
    key: String,
    /// Triton's name for the instance (`<model>_<group>_<n>`): upstream's
    /// execute messages name it, not the model.
    name: String,
    /// The user's object and the method called per batch; None for native models.
    object: Option<Py<PyAny>>,
    entry: Option<Py<PyAny>>,
    pass_requests: bool,
    split_by_parameters: bool,
}

impl ModelInstance {
    /// Creates the user's object and runs its `initialize`.
    pub fn new(model: Arc<LoadedModel>, info: &InstanceInfo) -> Result<Self> {
        // Unique per instance lifetime: a reload's new instance (same model,
        // version and instance name) must never share the old one's loop.
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!(
            "{}/{}/{}#{serial}",
            model.name(),
            model.spec.version,
            info.name
        );
        let Some(class) = model.class.as_ref() else {
            return Ok(ModelInstance {
                model: model.clone(),
                key,
                name: info.name.clone(),
                object: None,
                entry: None,
                pass_requests: false,
                split_by_parameters: false,
            });
        };
        Python::with_gil(|py| {
            let what = format!("model '{}': initialize raised", model.name());
            let err = |e: PyErr| py_error(py, &e, &what);
            let rt = runtime(py).map_err(err)?;
            let (ctx, entry) = match model.api {
                Api::PbUtils => (
                    Self::pb_utils_args(py, &model, info).map_err(err)?,
                    "execute",
                ),
                _ => (
                    Self::batched_context(py, &model, info).map_err(err)?,
                    "predict",
                ),
            };
            let created = rt
                .call_method1(
                    "create_instance",
                    (class.bind(py), ctx, model.search_paths(), entry),
                )
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
                key,
                name: info.name.clone(),
                object: Some(object.unbind()),
                entry: Some(predict.unbind()),
                pass_requests,
                split_by_parameters,
            })
        })
    }

    /// `initialize(ctx)`'s argument for the batched API.
    fn batched_context<'py>(
        py: Python<'py>,
        model: &LoadedModel,
        info: &InstanceInfo,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rt = runtime(py)?;
        let config = py
            .import_bound("json")?
            .call_method1("loads", (&model.config_json,))?;
        let params = PyDict::new_bound(py);
        for (k, v) in &model.parameters {
            params.set_item(k, v)?;
        }
        let kwargs = PyDict::new_bound(py);
        kwargs.set_item("model_name", model.name())?;
        kwargs.set_item("model_version", model.spec.version)?;
        kwargs.set_item("instance_name", &info.name)?;
        kwargs.set_item("instance_kind", &info.kind)?;
        kwargs.set_item("device_id", info.device_id)?;
        kwargs.set_item("model_dir", model.model_dir.to_string_lossy())?;
        kwargs.set_item("config", config)?;
        kwargs.set_item("parameters", params)?;
        kwargs.set_item("checkpoint_dir", checkpoint_str(model))?;
        rt.getattr("ModelContext")?.call((), Some(&kwargs))
    }

    /// `initialize(args)`'s argument for the official API: a dict of strings
    /// with the same keys and meanings as upstream.
    fn pb_utils_args<'py>(
        py: Python<'py>,
        model: &LoadedModel,
        info: &InstanceInfo,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = PyDict::new_bound(py);
        args.set_item("model_config", &model.config_json)?;
        args.set_item("model_instance_kind", &info.kind)?;
        args.set_item("model_instance_name", &info.name)?;
        args.set_item("model_instance_device_id", info.device_id.to_string())?;
        args.set_item("model_repository", model.model_dir.to_string_lossy())?;
        args.set_item("model_version", model.spec.version.to_string())?;
        args.set_item("model_name", model.name())?;
        if let Some(dir) = checkpoint_str(model) {
            args.set_item("checkpoint_dir", dir)?;
        }
        Ok(args.into_any())
    }

    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// Runs the user's `finalize()`, if any.
    pub fn finalize(self) -> Result<()> {
        let Some(object) = self.object.as_ref() else {
            return Ok(());
        };
        Python::with_gil(|py| {
            let what = format!("model '{}': finalize raised", self.model.name());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let _ = rt.call_method1("close_loop", (&self.key,));
            rt.call_method1("finalize_instance", (object.bind(py),))
                .map_err(|e| py_error(py, &e, &what))?;
            Ok(())
        })
    }

    /// Executes `requests`, answering each through its responder (same index).
    /// Every request gets a final response or error; nothing here panics on
    /// bad input or on failing user code.
    pub fn execute<R: Responder + 'static>(
        &self,
        requests: &[InferRequest<'_>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        assert_eq!(
            requests.len(),
            responders.len(),
            "one responder per request"
        );
        match self.model.api {
            Api::Batched => self.execute_batched(requests, &mut responders),
            Api::PbUtils => self.execute_pb_utils(requests, responders),
            Api::NativeEcho => execute_echo(&self.model.spec, requests, &mut responders),
        }
    }

    fn execute_batched<R: Responder>(
        &self,
        requests: &[InferRequest<'_>],
        responders: &mut [R],
    ) -> ExecReport {
        let spec = &self.model.spec;
        let mut report = ExecReport::new(requests.len());
        // Typed request parameters (a failing request is answered here; a
        // cancelled one is left to `admit`).
        let mut refused = vec![false; requests.len()];
        let typed: Vec<InferRequest<'_>>;
        let requests = match &self.model.request_params {
            None => requests,
            Some(decl) => {
                typed = requests
                    .iter()
                    .enumerate()
                    .map(|(i, req)| {
                        let mut req = req.clone();
                        match crate::params::apply(&spec.name, decl, &req.parameters) {
                            Ok(params) => req.parameters = params,
                            Err(e) if !responders[i].is_cancelled() => {
                                responders[i].send_error(&e);
                                refused[i] = true;
                            }
                            Err(_) => {}
                        }
                        req
                    })
                    .collect();
                &typed[..]
            }
        };
        let mut valid = Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            if refused[i] {
                continue;
            }
            if let Some(rows) = admit(spec, req, &mut responders[i]) {
                report.rows[i] = rows;
                valid.push((i, req));
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
        let Some(entry) = self.entry.as_ref() else {
            return;
        };
        let result = entry.bind(py).call1(args);
        report.compute_end = Some(Instant::now());
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                return fail_all(
                    responders,
                    &py_error(py, &e, &format!("model '{model}': predict raised")),
                )
            }
        };

        // The common case, a dict, needs no Python call to rule out a stream.
        let streaming = !result.is_instance_of::<PyDict>()
            && runtime(py)
                .and_then(|rt| rt.call_method1("is_iterator", (&result,)))
                .and_then(|b| b.extract::<bool>())
                .unwrap_or(false);
        if !streaming {
            let outputs = match self.extract_outputs(py, &result, requests, group, batch_rows) {
                Ok(o) => o,
                Err(e) => return fail_all(responders, &e),
            };
            let sent = py.allow_threads(|| {
                scatter(
                    &outputs,
                    requests,
                    responders,
                    group,
                    &rows,
                    spec.batching(),
                    true,
                )
            });
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
            let sent = py.allow_threads(|| {
                scatter(
                    &outputs,
                    requests,
                    responders,
                    group,
                    &rows,
                    spec.batching(),
                    false,
                )
            });
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

    /// The official API: one `execute(requests)` call with every valid
    /// request, each carrying its own inputs and a response sender that owns
    /// the request's responder (senders may outlive the call when decoupled).
    fn execute_pb_utils<R: Responder + 'static>(
        &self,
        requests: &[InferRequest<'_>],
        responders: Vec<R>,
    ) -> ExecReport {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let instance = self.name.as_str();
        let mut report = ExecReport::new(requests.len());
        let mut valid: Vec<(usize, R)> = Vec::with_capacity(requests.len());
        for (i, (req, mut responder)) in requests.iter().zip(responders).enumerate() {
            if let Some(rows) = admit(spec, req, &mut responder) {
                report.rows[i] = rows;
                valid.push((i, responder));
            }
        }
        if valid.is_empty() {
            return report;
        }
        let Some(entry) = self.entry.as_ref() else {
            return report;
        };
        Python::with_gil(|py| {
            let fail = |e: PyErr| {
                py_error(
                    py,
                    &e,
                    &format!("Failed to process the request(s) for model '{instance}', message"),
                )
            };
            let mut senders: Vec<(usize, Py<NativeSender>)> = Vec::with_capacity(valid.len());
            let mut setup_error = None;
            for (i, responder) in valid {
                let req = &requests[i];
                let sender = NativeSender::new(
                    Box::new(responder),
                    model,
                    req.requested_outputs.clone(),
                    spec.decoupled,
                );
                match Py::new(py, sender) {
                    Ok(s) => senders.push((i, s)),
                    Err(e) => setup_error = Some(fail(e)),
                }
            }
            let fail_all = |senders: &[(usize, Py<NativeSender>)], err: &Error| {
                for (_, s) in senders {
                    s.get().send_error_final(err);
                }
            };
            if let Some(e) = setup_error {
                return fail_all(&senders, &e);
            }
            let py_requests = match self.pb_utils_requests(py, requests, &senders) {
                Ok(list) => list,
                Err(e) => return fail_all(&senders, &e),
            };
            report.calls = 1;
            report.compute_start = Some(Instant::now());
            let outcome = (|| -> PyResult<()> {
                let rt = runtime(py)?;
                let pbu = py.import_bound("triton_python_backend_utils")?;
                let mut returned = entry.bind(py).call1((&py_requests,))?;
                if rt
                    .call_method1("is_coroutine", (&returned,))?
                    .extract::<bool>()?
                {
                    // A decoupled model's coroutine runs on in the background,
                    // as upstream does; otherwise wait for its responses.
                    returned = rt.call_method1(
                        "run_coroutine",
                        (&self.key, returned, !spec.decoupled, &py_requests, model),
                    )?;
                    if spec.decoupled {
                        return Ok(());
                    }
                }
                let responses = pbu.call_method1(
                    "_process_returned",
                    (instance, spec.decoupled, &py_requests, returned),
                )?;
                if !responses.is_none() {
                    pbu.call_method1("_send_returned", (&py_requests, responses))?;
                }
                Ok(())
            })();
            report.compute_end = Some(Instant::now());
            if let Err(e) = outcome {
                fail_all(&senders, &fail(e));
            }
            for (k, (i, sender)) in senders.iter().enumerate() {
                let s = sender.get();
                let rescheduled = py_requests
                    .get_item(k)
                    .and_then(|r| r.getattr("_release_flags"))
                    .and_then(|f| f.extract::<u32>())
                    .is_ok_and(|f| f == 2);
                if rescheduled {
                    s.detach();
                    report.reschedule.resize(requests.len(), false);
                    report.reschedule[*i] = true;
                    report.ok[*i] = true;
                    continue;
                }
                if !spec.decoupled && !awaits_sender(py, &py_requests, k) {
                    // Every request of a non-decoupled model is answered by now,
                    // unless the model holds its open response sender.
                    if let Some(mut r) = s.take_unfinished() {
                        py.allow_threads(|| {
                            r.send_error(&Error::internal(format!(
                                "Failed to process the request(s) for model '{instance}', message: execute did not \
                                 return or send a response for this request (execute must return a list with one \
                                 InferenceResponse per request)"
                            )))
                        });
                        continue;
                    }
                }
                report.ok[*i] = !s.failed();
            }
        });
        report
    }

    /// pb_utils.InferenceRequest objects for the requests behind `senders`.
    fn pb_utils_requests<'py>(
        &self,
        py: Python<'py>,
        requests: &[InferRequest<'_>],
        senders: &[(usize, Py<NativeSender>)],
    ) -> Result<Bound<'py, PyList>> {
        let model = self.model.name();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing requests"));
        let pbu = py
            .import_bound("triton_python_backend_utils")
            .map_err(err)?;
        let make = pbu.getattr("_make_request").map_err(err)?;
        let list = PyList::empty_bound(py);
        for (i, sender) in senders {
            let req = &requests[*i];
            let inputs = PyList::empty_bound(py);
            for input in &req.inputs {
                let array = if input.dtype == DataType::Bytes {
                    let elems = batch::gather_bytes(&[input]).map_err(|e| {
                        e.context(format!("model '{model}': input '{}'", input.name))
                    })?;
                    bytes_array(py, &input.shape, &elems).map_err(err)?
                } else {
                    array_from_chunks(py, input.dtype, &input.shape, &input.chunks).map_err(err)?
                };
                inputs
                    .append((&input.name, array, input.dtype as u32))
                    .map_err(err)?;
            }
            let params = if req.parameters.is_empty() {
                pyo3::types::PyString::new_bound(py, "{}").into_any()
            } else {
                params_dict(py, &req.parameters)
                    .and_then(|d| py.import_bound("json")?.call_method1("dumps", (d,)))
                    .map_err(err)?
            };
            let corr = correlation_to_py(py, &req.correlation_id);
            let timeout = req.timeout_us;
            let obj = make
                .call1((
                    sender.clone_ref(py),
                    &req.id,
                    corr,
                    req.flags,
                    timeout,
                    params,
                    req.requested_outputs.clone(),
                    inputs,
                ))
                .map_err(err)?;
            list.append(obj).map_err(err)?;
        }
        Ok(list)
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
            let tensors: Vec<&InputTensor<'_>> = group
                .iter()
                .filter_map(|&i| requests[i].input(&input.name))
                .collect();
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
                // Always a copy (one, straight into the batch array), never a
                // view: the server's buffers do not outlive the request.
                let chunks: Vec<&[u8]> = tensors
                    .iter()
                    .flat_map(|t| t.chunks.iter().copied())
                    .collect();
                array_from_chunks(py, input.dtype, &shape, &chunks).map_err(err)?
            };
            set_readonly(&array);
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
            let params = params_dict(py, &req.parameters).map_err(err)?;
            let corr = correlation_to_py(py, &req.correlation_id);
            let info = info_cls
                .call1((
                    &req.id,
                    corr,
                    req.flags,
                    params,
                    n,
                    req.requested_outputs.clone(),
                ))
                .map_err(err)?;
            infos.append(info).map_err(err)?;
        }
        Ok(PyTuple::new_bound(
            py,
            [inputs.into_any(), infos.into_any()],
        ))
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
                Error::invalid_arg(format!(
                    "model '{model}': predict returned a dict with a non-string key {key}"
                ))
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

/// Whether a request may run: not cancelled and fitting the model's
/// configuration. Otherwise it is answered with the reason here; returns the
/// batch rows it contributes.
fn admit<R: Responder>(
    spec: &ModelSpec,
    req: &InferRequest<'_>,
    responder: &mut R,
) -> Option<usize> {
    if responder.is_cancelled() {
        responder.send_error(&cancelled(spec));
        return None;
    }
    batch::validate_request(spec, req)
        .map_err(|e| responder.send_error(&e))
        .ok()
}

fn cancelled(spec: &ModelSpec) -> Error {
    Error::new(
        ErrorCode::Cancelled,
        format!("model '{}': request cancelled", spec.name),
    )
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
            data: o.view_data(),
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
                    let (shape, data) = if batching {
                        v.slice_rows(range.clone())
                    } else {
                        (v.shape.clone(), v.bytes_all())
                    };
                    OutputSlice {
                        name: &v.name,
                        dtype: v.dtype,
                        shape,
                        data,
                    }
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

fn checkpoint_str(model: &LoadedModel) -> Option<String> {
    model
        .checkpoint_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
}

/// Whether the `k`th pb_utils request of a default model may be answered
/// after execute returned: its sender was taken and is still open (upstream
/// keeps such a request open; one answered by nobody fails once Python drops
/// the sender).
fn awaits_sender(py: Python<'_>, py_requests: &Bound<'_, PyList>, k: usize) -> bool {
    let Ok(request) = py_requests.get_item(k) else {
        return false;
    };
    py.import_bound("triton_python_backend_utils")
        .and_then(|pbu| pbu.call_method1("_awaits_sender", (request,)))
        .and_then(|b| b.extract::<bool>())
        .unwrap_or(false)
}

/// A native echo needs outputs that mirror its inputs one to one.
fn check_echo_spec(spec: &ModelSpec) -> Result<()> {
    let ok = spec.inputs.len() == spec.outputs.len()
        && spec
            .inputs
            .iter()
            .zip(&spec.outputs)
            .all(|(i, o)| i.dtype == o.dtype && i.dims == o.dims);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_arg(format!(
            "model '{}': {NATIVE_PARAMETER}=echo needs as many outputs as inputs, pairwise of the same data type and dims",
            spec.name
        )))
    }
}

/// The native echo: validates like any model, then returns input i as output
/// i without touching Python (the ceiling rustpy's overhead is measured against).
fn execute_echo<R: Responder>(
    spec: &ModelSpec,
    requests: &[InferRequest<'_>],
    responders: &mut [R],
) -> ExecReport {
    let mut report = ExecReport::new(requests.len());
    report.compute_start = Some(Instant::now());
    for (i, req) in requests.iter().enumerate() {
        match batch::validate_request(spec, req) {
            Ok(rows) => report.rows[i] = rows,
            Err(e) => {
                responders[i].send_error(&e);
                continue;
            }
        }
        let data: Vec<std::borrow::Cow<'_, [u8]>> =
            req.inputs.iter().map(|t| t.contiguous()).collect();
        let slices: Vec<OutputSlice<'_>> = spec
            .inputs
            .iter()
            .zip(&spec.outputs)
            .filter(|(_, o)| req.requested_outputs.is_empty() || req.wants_output(&o.name))
            .filter_map(|(inp, out)| {
                let k = req.inputs.iter().position(|t| t.name == inp.name)?;
                Some(OutputSlice {
                    name: &out.name,
                    dtype: out.dtype,
                    shape: req.inputs[k].shape.clone(),
                    data: &data[k],
                })
            })
            .collect();
        match responders[i].send(&slices, true) {
            Ok(()) => report.ok[i] = true,
            Err(e) => responders[i].send_error(&e),
        }
    }
    report.calls = 1;
    report.compute_end = Some(Instant::now());
    report
}
