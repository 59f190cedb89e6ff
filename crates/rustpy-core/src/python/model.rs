//! A loaded model (its Python module) and its instances (one Python object
//! each), and the execution of a batch of requests through user code.

use std::borrow::Cow;
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
    array_from_chunks, bytes_array, extract_output, extract_tensor, set_readonly, ExtractedOutput,
};
use super::{correlation_to_py, params_dict};
use crate::batch::{self, BatchOutput};
use crate::constants::{ApiKind, ReleaseFlag};
use crate::dtype::DataType;
use crate::engine::{ExecReport, Outcome, OutputSlice, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::ragged::{self, RaggedLayout};
use crate::request::{element_count, InferRequest, InputTensor};
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
        Python::attach(|py| {
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
            let (class, api): (Bound<'_, PyAny>, u32) =
                found.extract().map_err(|e| py_error(py, &e, &what))?;
            let api = match ApiKind::from_code(api) {
                Some(ApiKind::Batched) => Api::Batched,
                Some(ApiKind::PbUtils) => Api::PbUtils,
                None => return Err(Error::internal(format!("{what}: unknown API kind {api}"))),
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
        Python::attach(|py| {
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
        Python::attach(|py| {
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
        Python::attach(|py| {
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
            .import("json")?
            .call_method1("loads", (&model.config_json,))?;
        let params = PyDict::new(py);
        for (k, v) in &model.parameters {
            params.set_item(k, v)?;
        }
        let kwargs = PyDict::new(py);
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
        let args = PyDict::new(py);
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
        Python::attach(|py| {
            let what = format!("model '{}': finalize raised", self.model.name());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let _ = rt.call_method1("close_loop", (&self.key,));
            rt.call_method1("finalize_instance", (object.bind(py),))
                .map_err(|e| py_error(py, &e, &what))?;
            Ok(())
        })
    }

    /// Executes `requests`, answering each through its responder (same index).
    /// Every request gets a final response or error (an unreadable one, `Err`,
    /// its error); nothing here panics on bad input or on failing user code.
    pub fn execute<R: Responder + 'static>(
        &self,
        requests: &[Result<InferRequest<'_>>],
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
        requests: &[Result<InferRequest<'_>>],
        responders: &mut [R],
    ) -> ExecReport {
        let spec = &self.model.spec;
        let mut report = ExecReport::new(requests.len());
        // Per request: the request as predict sees it (typed parameters
        // applied), or None once it has been answered here (unreadable,
        // refused parameters, not fitting the config, cancelled).
        let mut admitted: Vec<Option<Cow<'_, InferRequest<'_>>>> =
            Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            let responder = &mut responders[i];
            let req = match req {
                Ok(req) => self.with_typed_parameters(req, responder),
                Err(e) => {
                    responder.send_error(e);
                    None
                }
            };
            let req = req.filter(|req| match admit(spec, req, responder) {
                Some(rows) => {
                    report.rows[i] = rows;
                    true
                }
                None => false,
            });
            admitted.push(req);
        }
        let valid: Vec<(usize, &InferRequest<'_>)> = admitted
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_deref()?)))
            .collect();
        if valid.is_empty() {
            return report;
        }
        let groups = batch::plan_groups(spec, &valid, self.split_by_parameters);
        Python::attach(|py| {
            for group in &groups {
                let members: Vec<(usize, &InferRequest<'_>)> = group
                    .iter()
                    .filter_map(|&i| Some((i, admitted[i].as_deref()?)))
                    .collect();
                self.run_group(py, &members, responders, &mut report);
            }
        });
        report
    }

    /// `req` with its parameters typed by `request_parameters.json`, if the
    /// model has one; None when they are refused (answered here; a
    /// cancelled request is left to `admit`).
    fn with_typed_parameters<'r, 'a, R: Responder>(
        &self,
        req: &'r InferRequest<'a>,
        responder: &mut R,
    ) -> Option<Cow<'r, InferRequest<'a>>> {
        let Some(decl) = &self.model.request_params else {
            return Some(Cow::Borrowed(req));
        };
        match crate::params::apply(&self.model.spec.name, decl, &req.parameters) {
            Ok(params) => {
                let mut req = req.clone();
                req.parameters = params;
                Some(Cow::Owned(req))
            }
            Err(_) if responder.is_cancelled() => Some(Cow::Borrowed(req)),
            Err(e) => {
                responder.send_error(&e);
                None
            }
        }
    }

    /// One predict call for `members` (index in the execution, request).
    fn run_group<R: Responder>(
        &self,
        py: Python<'_>,
        members: &[(usize, &InferRequest<'_>)],
        responders: &mut [R],
        report: &mut ExecReport,
    ) {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let group: Vec<usize> = members.iter().map(|&(i, _)| i).collect();
        let group = group.as_slice();
        let requests: Vec<&InferRequest<'_>> = members.iter().map(|&(_, r)| r).collect();
        let rows: Vec<usize> = group.iter().map(|&i| report.rows[i]).collect();

        let fail_all = |responders: &mut [R], err: &Error| {
            for &i in group {
                responders[i].send_error(err);
            }
        };

        let (args, infos) = match self.build_args(py, &requests, &rows) {
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
        let out = GroupOut {
            requests: &requests,
            group,
            rows: &rows,
        };

        // The common case, a dict, needs no Python call to rule out a stream.
        let streaming = !result.is_instance_of::<PyDict>()
            && !result.is_instance_of::<PyList>()
            && runtime(py)
                .and_then(|rt| rt.call_method1("is_iterator", (&result,)))
                .and_then(|b| b.extract::<bool>())
                .unwrap_or(false);
        if !streaming {
            let delivery = match self.collect_outputs(py, &result, &out, false) {
                Ok(d) => d,
                Err(e) => return fail_all(responders, &e),
            };
            let sent = py.detach(|| {
                // A request the client cancelled meanwhile gets no outputs.
                let active: Vec<bool> = group
                    .iter()
                    .map(|&i| {
                        if responders[i].is_cancelled() {
                            responders[i].send_error(&cancelled(spec));
                            false
                        } else {
                            true
                        }
                    })
                    .collect();
                deliver(
                    spec,
                    &delivery,
                    &out,
                    responders,
                    &active,
                    &vec![true; group.len()],
                )
            });
            for (&i, sent) in group.iter().zip(sent) {
                if sent == Sent::Final {
                    report.outcomes[i] = Outcome::Answered;
                }
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
        // Per request: still streaming (not finished, failed or cancelled).
        let mut alive: Vec<bool> = vec![true; group.len()];
        loop {
            // Stop sending to requests the client cancelled; tell predict.
            for (k, &i) in group.iter().enumerate() {
                if alive[k] && responders[i].is_cancelled() {
                    alive[k] = false;
                    responders[i].send_error(&cancelled(spec));
                    if let Some(info) = infos.as_ref().and_then(|l| l.get_item(k).ok()) {
                        let _ = info.setattr("cancelled", true);
                    }
                }
            }
            if !alive.iter().any(|&a| a) {
                let _ = result.call_method0("close");
                return;
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
            // Requests predict finished with `requests[k].finish()`: this
            // response is their last.
            let finishing: Vec<bool> = (0..group.len())
                .map(|k| {
                    infos
                        .as_ref()
                        .and_then(|l| l.get_item(k).ok())
                        .and_then(|info| info.getattr("_finished").ok())
                        .and_then(|f| f.extract::<bool>().ok())
                        .unwrap_or(false)
                })
                .collect();
            let delivery = match self.collect_outputs(py, &item, &out, true) {
                Ok(o) => o,
                Err(e) => {
                    let _ = result.call_method0("close");
                    for (k, &i) in group.iter().enumerate() {
                        if alive[k] {
                            responders[i].send_error(&e);
                        }
                    }
                    return;
                }
            };
            let sent = py.detach(|| deliver(spec, &delivery, &out, responders, &alive, &finishing));
            for (k, s) in sent.into_iter().enumerate() {
                match s {
                    Sent::Failed => alive[k] = false,
                    Sent::Final => {
                        alive[k] = false;
                        report.outcomes[group[k]] = Outcome::Answered;
                    }
                    Sent::Open | Sent::Skipped => {}
                }
            }
        }
        py.detach(|| {
            for (k, &i) in group.iter().enumerate() {
                if alive[k] {
                    responders[i].finish();
                    report.outcomes[i] = Outcome::Answered;
                }
            }
        });
    }

    /// The official API: one `execute(requests)` call with every valid
    /// request, each carrying its own inputs and a response sender that owns
    /// the request's responder (senders may outlive the call when decoupled).
    fn execute_pb_utils<R: Responder + 'static>(
        &self,
        requests: &[Result<InferRequest<'_>>],
        responders: Vec<R>,
    ) -> ExecReport {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let instance = self.name.as_str();
        let mut report = ExecReport::new(requests.len());
        let mut valid: Vec<(usize, &InferRequest<'_>, R)> = Vec::with_capacity(requests.len());
        for (i, (req, mut responder)) in requests.iter().zip(responders).enumerate() {
            let req = match req {
                Ok(req) => req,
                Err(e) => {
                    responder.send_error(e);
                    continue;
                }
            };
            if let Some(rows) = admit(spec, req, &mut responder) {
                report.rows[i] = rows;
                valid.push((i, req, responder));
            }
        }
        if valid.is_empty() {
            return report;
        }
        let Some(entry) = self.entry.as_ref() else {
            return report;
        };
        Python::attach(|py| {
            let fail = |e: PyErr| {
                py_error(
                    py,
                    &e,
                    &format!("Failed to process the request(s) for model '{instance}', message"),
                )
            };
            let mut senders: Vec<(usize, &InferRequest<'_>, Py<NativeSender>)> =
                Vec::with_capacity(valid.len());
            let mut setup_error = None;
            for (i, req, responder) in valid {
                let sender = NativeSender::new(
                    Box::new(responder),
                    model,
                    req.requested_outputs.clone(),
                    spec.decoupled,
                );
                match Py::new(py, sender) {
                    Ok(s) => senders.push((i, req, s)),
                    Err(e) => setup_error = Some(fail(e)),
                }
            }
            let fail_all = |senders: &[(usize, &InferRequest<'_>, Py<NativeSender>)],
                            err: &Error| {
                for (_, _, s) in senders {
                    s.get().send_error_final(err);
                }
            };
            if let Some(e) = setup_error {
                return fail_all(&senders, &e);
            }
            let py_requests = match self.pb_utils_requests(py, &senders) {
                Ok(list) => list,
                Err(e) => return fail_all(&senders, &e),
            };
            report.calls = 1;
            report.compute_start = Some(Instant::now());
            let outcome = (|| -> PyResult<()> {
                let rt = runtime(py)?;
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
                let responses = rt.call_method1(
                    "process_returned",
                    (instance, spec.decoupled, &py_requests, returned),
                )?;
                if !responses.is_none() {
                    rt.call_method1("send_returned", (&py_requests, responses))?;
                }
                Ok(())
            })();
            report.compute_end = Some(Instant::now());
            if let Err(e) = outcome {
                fail_all(&senders, &fail(e));
            }
            for (k, (i, _, sender)) in senders.iter().enumerate() {
                let s = sender.get();
                let rescheduled = py_requests
                    .get_item(k)
                    .and_then(|r| r.getattr("_release_flags"))
                    .and_then(|f| f.extract::<u32>())
                    .is_ok_and(|f| f == ReleaseFlag::Reschedule as u32);
                // A request that was answered (e.g. failed because execute
                // returned a response for it although it asked to be
                // rescheduled) is finished: rescheduling it too would let
                // Triton execute and answer it again after its FINAL.
                if rescheduled && s.detach() {
                    report.outcomes[*i] = Outcome::Rescheduled;
                    continue;
                }
                if !spec.decoupled && !awaits_sender(py, &py_requests, k) {
                    // Every request of a non-decoupled model is answered by now,
                    // unless the model holds its open response sender.
                    if let Some(mut r) = s.take_unfinished() {
                        py.detach(|| {
                            r.send_error(&Error::internal(format!(
                                "Failed to process the request(s) for model '{instance}', message: execute did not \
                                 return or send a response for this request (execute must return a list with one \
                                 InferenceResponse per request)"
                            )))
                        });
                        continue;
                    }
                }
                if !s.failed() {
                    report.outcomes[*i] = Outcome::Answered;
                }
            }
        });
        report
    }

    /// pb_utils.InferenceRequest objects for the requests behind `senders`.
    fn pb_utils_requests<'py>(
        &self,
        py: Python<'py>,
        senders: &[(usize, &InferRequest<'_>, Py<NativeSender>)],
    ) -> Result<Bound<'py, PyList>> {
        let model = self.model.name();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing requests"));
        let make = runtime(py)
            .and_then(|rt| rt.getattr("make_request"))
            .map_err(err)?;
        let list = PyList::empty(py);
        for (_, req, sender) in senders {
            let inputs = PyList::empty(py);
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
                pyo3::types::PyString::new(py, "{}").into_any()
            } else {
                params_dict(py, &req.parameters)
                    .and_then(|d| py.import("json")?.call_method1("dumps", (d,)))
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

    /// The arguments of one predict call: the concatenated inputs (ragged
    /// ones flat or padded, missing optional ones filled with their default,
    /// plus the config's batch_input tensors) and, if predict takes them, the
    /// per-request infos (also returned, to read `finish()` back).
    #[allow(clippy::type_complexity)]
    fn build_args<'py>(
        &self,
        py: Python<'py>,
        requests: &[&InferRequest<'_>],
        rows: &[usize],
    ) -> Result<(Bound<'py, PyTuple>, Option<Bound<'py, PyList>>)> {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing inputs"));
        let inputs = PyDict::new(py);
        for ts in &spec.inputs {
            let name = ts.name.as_str();
            let present: Vec<Option<&InputTensor<'_>>> =
                requests.iter().map(|r| r.input(name)).collect();
            let tensors: Vec<&InputTensor<'_>> = present.iter().flatten().copied().collect();
            let default = spec.ragged.default_for(name);
            if tensors.is_empty() && default.is_none() {
                continue;
            }
            let array = if tensors.len() < requests.len() {
                // Requests of one group carry the same inputs (plan_groups)
                // except optional ones with a default: fill their rows.
                let Some(default) = default else { continue };
                fill_missing(py, ts, &present, rows, default, spec.batching()).map_err(err)?
            } else if spec.batching() && spec.ragged.is_ragged(name) {
                ragged_array(py, spec, ts.dtype, &tensors)
                    .map_err(|e| e.context(format!("model '{model}': input '{name}'")))?
            } else {
                let shape = if spec.batching() {
                    let shapes: Vec<&[i64]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
                    batch::concat_shape(&shapes)
                } else {
                    tensors[0].shape.clone()
                };
                if ts.dtype == DataType::Bytes {
                    let elems = batch::gather_bytes(&tensors)
                        .map_err(|e| e.context(format!("model '{model}': input '{name}'")))?;
                    bytes_array(py, &shape, &elems).map_err(err)?
                } else {
                    // Always a copy (one, straight into the batch array), never a
                    // view: the server's buffers do not outlive the request.
                    let chunks: Vec<&[u8]> = tensors
                        .iter()
                        .flat_map(|t| t.chunks.iter().copied())
                        .collect();
                    array_from_chunks(py, ts.dtype, &shape, &chunks).map_err(err)?
                }
            };
            set_readonly(&array);
            inputs.set_item(name, array).map_err(err)?;
        }
        for bi in &spec.ragged.batch_inputs {
            let shapes: Vec<&[i64]> = requests
                .iter()
                .filter_map(|r| r.input(&bi.source))
                .map(|t| t.shape.as_slice())
                .collect();
            let t = ragged::batch_input(bi.kind, &shapes);
            let data = t.to_bytes(bi.dtype);
            let array = array_from_chunks(py, bi.dtype, &t.shape, &[&data]).map_err(err)?;
            set_readonly(&array);
            inputs.set_item(&bi.target, array).map_err(err)?;
        }
        if !self.pass_requests {
            return Ok((PyTuple::new(py, [inputs.into_any()]).map_err(err)?, None));
        }
        let rt = runtime(py).map_err(err)?;
        let info_cls = rt.getattr("RequestInfo").map_err(err)?;
        let infos = PyList::empty(py);
        for (req, &n) in requests.iter().zip(rows) {
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
        Ok((
            PyTuple::new(py, [inputs.into_any(), infos.clone().into_any()]).map_err(err)?,
            Some(infos),
        ))
    }

    /// What predict returned (or yielded): one dict of output name -> array
    /// for the whole batch, or a list of one dict per request (in batch
    /// order; None: nothing for that request this time, when streaming).
    fn collect_outputs(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        out: &GroupOut<'_, '_>,
        streaming: bool,
    ) -> Result<Delivery> {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        if let Ok(list) = value.cast::<PyList>() {
            let n = out.group.len();
            if list.len() != n {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': predict returned a list of {} items for a call of {n} requests \
                     (return one dict per request, in batch order, or one dict for the whole batch)",
                    list.len()
                )));
            }
            let mut per_request = Vec::with_capacity(n);
            for (k, item) in list.iter().enumerate() {
                if item.is_none() {
                    per_request.push(if streaming {
                        Ok(None)
                    } else {
                        Err(Error::invalid_arg(format!(
                            "model '{model}': predict returned None for request {k} (id '{}'); \
                             only a streaming predict may skip a request",
                            out.requests[k].id
                        )))
                    });
                    continue;
                }
                if !item.is_instance_of::<PyDict>() {
                    let ty = item
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    return Err(Error::invalid_arg(format!(
                        "model '{model}': predict must return a dict of output name -> numpy array, \
                         or a list of one such dict per request, not a mix: item {k} of the returned list \
                         is {ty}, not a dict"
                    )));
                }
                let req = out.requests[k];
                let rows = spec.batching().then_some(out.rows[k]);
                per_request.push(
                    self.extract_dict(py, &item, rows, None)
                        .and_then(|outputs| {
                            check_requested(model, &outputs, req, Some(k))?;
                            Ok(Some(outputs))
                        }),
                );
            }
            return Ok(Delivery::PerRequest(per_request));
        }
        let total: usize = out.rows.iter().sum();
        let outputs = self.extract_dict(py, value, spec.batching().then_some(total), Some(out))?;
        for req in out.requests {
            check_requested(model, &outputs, req, None)?;
        }
        Ok(Delivery::Batched(outputs))
    }

    /// Checks one returned dict of output name -> array against the
    /// configuration: names, dtypes and dims, with dim 0 = `batch_rows`;
    /// batch_output targets of a whole-batch dict (`scatter` given) must
    /// instead hold exactly the elements their source input's shapes call for.
    fn extract_dict(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        batch_rows: Option<usize>,
        scatter: Option<&GroupOut<'_, '_>>,
    ) -> Result<Vec<ExtractedOutput>> {
        let spec = &self.model.spec;
        let model = spec.name.as_str();
        let dict = value.cast::<PyDict>().map_err(|_| {
            let ty = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            Error::invalid_arg(format!(
                "model '{model}': predict must return a dict of output name -> numpy array \
                 (or a list of one such dict per request), got {ty}"
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
            match (scatter, spec.ragged.batch_output(&name)) {
                (Some(out), Some(bo)) => {
                    let o = extract_tensor(py, model, &name, &val, Some(out_spec.dtype))?;
                    if o.dtype != out_spec.dtype {
                        return Err(Error::invalid_arg(format!(
                            "model '{model}': output '{name}' is {} but the model config declares {}",
                            o.dtype, out_spec.dtype
                        )));
                    }
                    let shapes = out.scatter_shapes(&out_spec.dims, &bo.source);
                    let want: usize = shapes.iter().map(|s| element_count(s)).sum();
                    let got = element_count(&o.shape);
                    if got != want {
                        return Err(Error::invalid_arg(format!(
                            "model '{model}': output '{name}' (batch_output scattered with the shape of \
                             input '{}') has {got} elements (shape {}) but the requests' shapes of '{}' \
                             call for {want} ({})",
                            bo.source,
                            crate::spec::fmt_shape(&o.shape),
                            bo.source,
                            shapes
                                .iter()
                                .map(|s| crate::spec::fmt_shape(s))
                                .collect::<Vec<_>>()
                                .join(" + ")
                        )));
                    }
                    outputs.push(o);
                }
                _ => outputs.push(extract_output(py, model, out_spec, &val, batch_rows)?),
            }
        }
        Ok(outputs)
    }
}

/// The requests of one predict call, for cutting outputs back: `requests`,
/// their indices in the execution (`group`) and their rows, in call order.
struct GroupOut<'r, 'a> {
    requests: &'r [&'r InferRequest<'a>],
    group: &'r [usize],
    rows: &'r [usize],
}

impl GroupOut<'_, '_> {
    /// Per request: the shape of a BATCH_SCATTER_WITH_INPUT_SHAPE output.
    fn scatter_shapes(&self, dims: &[i64], source: &str) -> Vec<Vec<i64>> {
        let shapes: Vec<&[i64]> = self
            .requests
            .iter()
            .map(|r| r.input(source).map_or(&[][..], |t| t.shape.as_slice()))
            .collect();
        ragged::scatter_shapes(dims, &shapes)
    }
}

/// Per request of a batch_output: its shape and its range of elements.
type ScatterPlan = (Vec<Vec<i64>>, Vec<std::ops::Range<usize>>);

/// Outputs of one predict call (or one yield), ready to send.
enum Delivery {
    /// One dict for the whole batch, cut back by rows (or, for batch_output
    /// targets, by the source input's shapes).
    Batched(Vec<ExtractedOutput>),
    /// One dict per request (None: nothing this time), or that request's error.
    PerRequest(Vec<Result<Option<Vec<ExtractedOutput>>>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Inactive request: nothing sent.
    Skipped,
    /// A non-final response went out; the stream goes on.
    Open,
    /// The request's final response went out.
    Final,
    /// The request was failed.
    Failed,
}

/// Every output a request asked for must be there.
fn check_requested(
    model: &str,
    outputs: &[ExtractedOutput],
    req: &InferRequest<'_>,
    index: Option<usize>,
) -> Result<()> {
    for wanted in &req.requested_outputs {
        if !outputs.iter().any(|o| &o.name == wanted) {
            return Err(Error::invalid_arg(match index {
                None => format!(
                    "model '{model}': predict did not return output '{wanted}', which a request asked for"
                ),
                Some(k) => format!(
                    "model '{model}': predict's dict for request {k} (id '{}') is missing output '{wanted}', \
                     which that request asked for",
                    req.id
                ),
            }));
        }
    }
    Ok(())
}

/// A ragged input of a group as one array: concatenated flat (Triton's
/// convention) or padded to the longest item.
fn ragged_array<'py>(
    py: Python<'py>,
    spec: &ModelSpec,
    dtype: DataType,
    tensors: &[&InputTensor<'_>],
) -> Result<Bound<'py, PyAny>> {
    let err = |e: PyErr| py_error(py, &e, &format!("model '{}': preparing inputs", spec.name));
    let shapes: Vec<&[i64]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
    match spec.ragged.layout {
        RaggedLayout::Concat => {
            let total: usize = shapes.iter().map(|s| element_count(s)).sum();
            let shape = [total as i64];
            if dtype == DataType::Bytes {
                let elems = batch::gather_bytes(tensors)?;
                bytes_array(py, &shape, &elems).map_err(err)
            } else {
                let chunks: Vec<&[u8]> = tensors
                    .iter()
                    .flat_map(|t| t.chunks.iter().copied())
                    .collect();
                array_from_chunks(py, dtype, &shape, &chunks).map_err(err)
            }
        }
        RaggedLayout::Pad => {
            let plan = ragged::PadPlan::new(&shapes);
            if dtype == DataType::Bytes {
                let elems = batch::gather_bytes(tensors)?;
                let mut padded: Vec<Cow<'_, [u8]>> =
                    vec![Cow::Borrowed(&b""[..]); plan.element_count()];
                for &(src, dst, n) in &plan.runs {
                    padded[dst..dst + n].clone_from_slice(&elems[src..src + n]);
                }
                bytes_array(py, &plan.shape, &padded).map_err(err)
            } else {
                let size = dtype.element_size().unwrap_or(1);
                let src: Vec<u8> = tensors
                    .iter()
                    .flat_map(|t| t.chunks.iter().flat_map(|c| c.iter().copied()))
                    .collect();
                let mut padded = vec![0u8; plan.element_count() * size];
                for &(s, d, n) in &plan.runs {
                    padded[d * size..(d + n) * size]
                        .copy_from_slice(&src[s * size..(s + n) * size]);
                }
                array_from_chunks(py, dtype, &plan.shape, &[&padded]).map_err(err)
            }
        }
    }
}

/// An optional input some requests of the group omit: their rows hold the
/// configured default value (the input's dims are fixed).
fn fill_missing<'py>(
    py: Python<'py>,
    ts: &crate::spec::TensorSpec,
    present: &[Option<&InputTensor<'_>>],
    rows: &[usize],
    default: &[u8],
    batching: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let item = element_count(&ts.dims);
    let total: usize = rows.iter().sum();
    // Without batching a call has one request and the input has no batch dim.
    let mut shape = if batching {
        vec![total as i64]
    } else {
        Vec::new()
    };
    shape.extend_from_slice(&ts.dims);
    if ts.dtype == DataType::Bytes {
        let mut elems: Vec<Cow<'_, [u8]>> = Vec::with_capacity(total * item);
        for (p, &n) in present.iter().zip(rows) {
            match p {
                Some(t) => elems.extend(
                    batch::gather_bytes(&[*t])
                        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.message))?,
                ),
                None => elems.extend(std::iter::repeat_n(Cow::Borrowed(default), n * item)),
            }
        }
        return bytes_array(py, &shape, &elems);
    }
    let fills: Vec<Vec<u8>> = present
        .iter()
        .zip(rows)
        .map(|(p, &n)| match p {
            Some(_) => Vec::new(),
            None => default.repeat(n * item),
        })
        .collect();
    let mut chunks: Vec<&[u8]> = Vec::new();
    for (p, fill) in present.iter().zip(&fills) {
        match p {
            Some(t) => chunks.extend(t.chunks.iter().copied()),
            None => chunks.push(fill),
        }
    }
    array_from_chunks(py, ts.dtype, &shape, &chunks)
}

/// Sends what one call (or yield) produced to the group's `active`
/// requests; `last[k]` makes request k's response its final one (or, with
/// nothing to send, ends its stream).
fn deliver<R: Responder>(
    spec: &ModelSpec,
    delivery: &Delivery,
    out: &GroupOut<'_, '_>,
    responders: &mut [R],
    active: &[bool],
    last: &[bool],
) -> Vec<Sent> {
    let send = |responder: &mut R, slices: &[OutputSlice<'_>], is_final: bool| match responder
        .send(slices, is_final)
    {
        Ok(()) if is_final => Sent::Final,
        Ok(()) => Sent::Open,
        Err(e) => {
            responder.send_error(&e);
            Sent::Failed
        }
    };
    let wanted = |req: &InferRequest<'_>, name: &str| {
        req.requested_outputs.is_empty() || req.wants_output(name)
    };
    match delivery {
        Delivery::PerRequest(items) => out
            .group
            .iter()
            .zip(items)
            .enumerate()
            .map(|(k, (&i, item))| {
                if !active[k] {
                    return Sent::Skipped;
                }
                let req = out.requests[k];
                match item {
                    Err(e) => {
                        responders[i].send_error(e);
                        Sent::Failed
                    }
                    Ok(None) if last[k] => {
                        responders[i].finish();
                        Sent::Final
                    }
                    Ok(None) => Sent::Open,
                    Ok(Some(outputs)) => {
                        let slices: Vec<OutputSlice<'_>> = outputs
                            .iter()
                            .filter(|o| wanted(req, &o.name))
                            .map(|o| OutputSlice {
                                name: &o.name,
                                dtype: o.dtype,
                                shape: o.shape.clone(),
                                data: o.wire_bytes(),
                            })
                            .collect();
                        send(&mut responders[i], &slices, last[k])
                    }
                }
            })
            .collect(),
        Delivery::Batched(outputs) => {
            let views: Vec<BatchOutput<'_>> = outputs
                .iter()
                .map(|o| BatchOutput {
                    name: o.name.clone(),
                    dtype: o.dtype,
                    shape: o.shape.clone(),
                    data: o.view_data(),
                })
                .collect();
            let ranges = batch::row_ranges(out.rows);
            // batch_output targets: each request's shape and element range.
            let scattered: Vec<Option<ScatterPlan>> = views
                .iter()
                .map(|v| {
                    let bo = spec.ragged.batch_output(&v.name)?;
                    let dims = &spec.output(&v.name)?.dims;
                    let shapes = out.scatter_shapes(dims, &bo.source);
                    let counts: Vec<usize> = shapes.iter().map(|s| element_count(s)).collect();
                    Some((shapes, batch::row_ranges(&counts)))
                })
                .collect();
            out.group
                .iter()
                .zip(ranges)
                .enumerate()
                .map(|(k, (&i, range))| {
                    if !active[k] {
                        return Sent::Skipped;
                    }
                    let req = out.requests[k];
                    let slices: Vec<OutputSlice<'_>> = views
                        .iter()
                        .zip(&scattered)
                        .filter(|(v, _)| wanted(req, &v.name))
                        .map(|(v, sc)| {
                            let (shape, data) = match sc {
                                Some((shapes, elems)) => {
                                    (shapes[k].clone(), v.slice_elements(elems[k].clone()))
                                }
                                None if spec.batching() => v.slice_rows(range.clone()),
                                None => (v.shape.clone(), v.bytes_all()),
                            };
                            OutputSlice {
                                name: &v.name,
                                dtype: v.dtype,
                                shape,
                                data,
                            }
                        })
                        .collect();
                    send(&mut responders[i], &slices, last[k])
                })
                .collect()
        }
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
    runtime(py)
        .and_then(|rt| rt.call_method1("awaits_sender", (request,)))
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
    requests: &[Result<InferRequest<'_>>],
    responders: &mut [R],
) -> ExecReport {
    let mut report = ExecReport::new(requests.len());
    report.compute_start = Some(Instant::now());
    for (i, req) in requests.iter().enumerate() {
        let req = match req {
            Ok(req) => req,
            Err(e) => {
                responders[i].send_error(e);
                continue;
            }
        };
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
            Ok(()) => report.outcomes[i] = Outcome::Answered,
            Err(e) => responders[i].send_error(&e),
        }
    }
    report.calls = 1;
    report.compute_end = Some(Instant::now());
    report
}
