//! A loaded model (its Python module) and its instances (one Python object
//! each, and the strategy that runs their batches: `batched`, `pb_utils` or
//! the native echo in `crate::exec`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustpy_config::proto;
use rustpy_config::threads::{available_cores, instance_count, threads_setting, Threads};

use super::batched::Batched;
use super::error::py_error;
use super::pb_utils::PbUtils;
use super::runtime::runtime;
use super::strategy::Strategy;
use crate::constants::{ApiKind, LogLevel};
use crate::echo::Echo;
pub use crate::echo::NATIVE_PARAMETER;
use crate::engine::{ExecReport, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

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
    /// `rustpy.threads` and the instance count it is sized by.
    threads: Threads,
    instances: usize,
    unique_name: String,
    class: Option<Py<PyAny>>,
    module: Option<Py<PyAny>>,
    private_modules: Option<Py<PyAny>>,
}

impl LoadedModel {
    /// Imports `<model_dir>/<version>/<default_model_filename or model.py>`,
    /// after fetching its checkpoint (counted in `metrics`).
    pub fn load(
        cfg: &proto::ModelConfig,
        model_dir: &Path,
        version: u64,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self> {
        let spec = ModelSpec::from_config(cfg, version)?;
        let file_name = rustpy_config::model::model_filename(cfg);
        let config_json = rustpy_config::to_json(cfg).to_string();
        let mut parameters: Vec<(String, String)> = cfg
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.string_value.clone()))
            .collect();
        parameters.sort();
        let checkpoint_dir =
            crate::checkpoint::resolve(cfg, &spec.name, version, model_dir, metrics)?;
        let request_params = crate::rules::params::load_declaration(&spec.name, model_dir)?;
        let threads = threads_setting(cfg)
            .map_err(|e| Error::invalid_arg(format!("model '{}': {e}", spec.name)))?;
        let instances = instance_count(cfg);

        if let Some(native) = rustpy_config::parameter(cfg, NATIVE_PARAMETER) {
            if native != "echo" {
                return Err(Error::invalid_arg(format!(
                    "model '{}': parameter {NATIVE_PARAMETER} must be \"echo\", got {native:?}",
                    spec.name
                )));
            }
            crate::echo::check_spec(&spec)?;
            return Ok(LoadedModel {
                spec,
                model_dir: model_dir.to_path_buf(),
                model_file: model_dir.join(version.to_string()),
                api: Api::NativeEcho,
                checkpoint_dir,
                config_json,
                parameters,
                request_params,
                threads,
                instances,
                unique_name: String::new(),
                class: None,
                module: None,
                private_modules: None,
            });
        }

        let model_file = model_dir.join(version.to_string()).join(file_name);
        if !model_file.is_file() {
            // Upstream's words first (operators and its QA grep them).
            return Err(Error::new(
                ErrorCode::NotFound,
                format!(
                    "Failed to preinitialize Python stub: Python model file not found in '{}' \
                     (model '{}': the model file does not exist)",
                    model_file.display(),
                    spec.name,
                ),
            ));
        }
        Python::attach(|py| {
            let what = format!("model '{}': loading {}", spec.name, model_file.display());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let file = model_file.to_string_lossy();
            let imported = rt
                .load_module(py, &spec.name, version, &model_dir.to_string_lossy(), &file)
                .map_err(|e| py_error(py, &e, &what))?;
            let (class, api) = rt
                .find_model_class(py, &imported.module, &file)
                .map_err(|e| py_error(py, &e, &what))?;
            let api = match api {
                ApiKind::Batched => Api::Batched,
                ApiKind::PbUtils => Api::PbUtils,
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
                threads,
                instances,
                unique_name: imported.unique_name,
                class: Some(class.unbind()),
                module: Some(imported.module.unbind()),
                private_modules: Some(imported.private_modules.unbind()),
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
            rt.auto_complete(py, class.bind(py), config_json)
                .map_err(|e| py_error(py, &e, &what))
        })
    }

    /// Adopts a changed configuration (after auto-complete).
    pub fn reconfigure(&mut self, cfg: &proto::ModelConfig) -> Result<()> {
        self.spec = ModelSpec::from_config(cfg, self.spec.version)?;
        self.config_json = rustpy_config::to_json(cfg).to_string();
        self.instances = instance_count(cfg);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl LoadedModel {
    /// `rustpy.threads` applied to this process's BLAS/OpenMP pools, if it
    /// (or its default for several instances) sets a limit; `report` logs
    /// the pools as they are after.
    fn limit_threads(
        &self,
        py: Python<'_>,
        rt: &super::runtime::Runtime,
        report: bool,
    ) -> PyResult<()> {
        let cores = available_cores();
        let Some(limit) = self.threads.limit(self.instances, cores) else {
            return Ok(());
        };
        let asked = matches!(self.threads, Threads::Fixed(_));
        let pools = rt.limit_threads(py, self.name(), limit, asked)?;
        if report && !pools.is_empty() {
            let pools: Vec<String> = pools
                .iter()
                .map(|(api, n)| {
                    format!(
                        "{} {}",
                        api.as_deref().unwrap_or("?"),
                        n.map_or("?".into(), |n| n.to_string())
                    )
                })
                .collect();
            let why = if asked {
                String::new()
            } else {
                format!(" ({} instances on {cores} cores)", self.instances)
            };
            super::native::log(
                LogLevel::Info,
                "rustpy",
                0,
                &format!(
                    "model '{}': rustpy.threads {limit}{why}: thread pools {}",
                    self.name(),
                    pools.join(", ")
                ),
            );
        }
        Ok(())
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
                let _ = rt.unload_module(py, &self.unique_name, private.bind(py));
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

/// One instance of a model: its own Python object (none for the native
/// echo) and the strategy that runs its batches.
pub struct ModelInstance {
    model: Arc<LoadedModel>,
    /// Identifies the instance (its asyncio loop, logs).
    key: String,
    /// The user's object (for `finalize`); None for native models.
    object: Option<Py<PyAny>>,
    strategy: Box<Strategy>,
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
                strategy: Box::new(Strategy::Echo(Echo {
                    spec: model.spec.clone(),
                })),
                model,
                key,
                object: None,
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
            // Before initialize (its own work runs in the pools) and after it
            // (for libraries it loaded).
            model.limit_threads(py, rt, false).map_err(err)?;
            let created = rt
                .create_instance(py, class.bind(py), ctx, entry)
                .map_err(err)?;
            model.limit_threads(py, rt, true).map_err(err)?;
            let strategy = match model.api {
                Api::PbUtils => Strategy::PbUtils(PbUtils {
                    spec: model.spec.clone(),
                    instance: info.name.clone(),
                    key: key.clone(),
                    execute: created.entry.unbind(),
                }),
                _ => Strategy::Batched(Batched {
                    spec: model.spec.clone(),
                    request_params: model.request_params.clone(),
                    predict: created.entry.unbind(),
                    pass_requests: created.pass_requests,
                    split_by_parameters: created.split_by_parameters,
                }),
            };
            Ok(ModelInstance {
                model: model.clone(),
                key,
                object: Some(created.object.unbind()),
                strategy: Box::new(strategy),
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
        rt.model_context(py, &kwargs)
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

    /// The call of the model's `is_ready()` (python_backend r26.03), if it
    /// defines one: usable from any thread, for as long as the caller likes
    /// (it keeps the object alive, not the instance).
    pub fn ready_call(&self) -> Option<crate::readiness::ReadyCall> {
        let object = self.object.as_ref()?;
        let (object, key, name) = Python::attach(|py| {
            let has = runtime(py)
                .and_then(|rt| rt.has_is_ready(py, object.bind(py)))
                .unwrap_or(false);
            has.then(|| {
                (
                    object.clone_ref(py),
                    self.key.clone(),
                    self.model.name().to_string(),
                )
            })
        })?;
        Some(std::sync::Arc::new(move || {
            Python::attach(|py| {
                let what = format!("model '{name}': is_ready() raised");
                let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
                rt.call_is_ready(py, object.bind(py), &key)
                    .map_err(|e| py_error(py, &e, &what))
            })
        }))
    }

    /// Runs the user's `finalize()`, if any.
    pub fn finalize(self) -> Result<()> {
        let Some(object) = self.object.as_ref() else {
            return Ok(());
        };
        Python::attach(|py| {
            let what = format!("model '{}': finalize raised", self.model.name());
            let rt = runtime(py).map_err(|e| py_error(py, &e, &what))?;
            let _ = rt.close_loop(py, &self.key);
            rt.finalize_instance(py, object.bind(py))
                .map_err(|e| py_error(py, &e, &what))?;
            Ok(())
        })
    }

    /// Runs admitted `requests` (crate::admission; the host admits them,
    /// in the server or the CLI, before a worker ever sees them), answering
    /// each through its responder (same index). Every request gets a final
    /// response or error; nothing here panics on failing user code. The
    /// report is over `requests`.
    pub fn run<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        responders: Vec<R>,
    ) -> ExecReport {
        self.strategy.execute(requests, responders)
    }
}

fn checkpoint_str(model: &LoadedModel) -> Option<String> {
    model
        .checkpoint_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
}
