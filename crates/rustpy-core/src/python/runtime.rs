//! The Rust side of runtime.py: its entry points, looked up once when the
//! module is created, behind typed methods. Nothing else in the crate names
//! a runtime.py function by string.

use std::ffi::CStr;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule};

use crate::constants::ApiKind;

const RUNTIME_SOURCE: &CStr = pyo3::ffi::c_str!(include_str!("runtime.py"));
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// runtime.py's functions and classes the core calls.
pub(crate) struct Runtime {
    load_module: Py<PyAny>,
    find_model_class: Py<PyAny>,
    unload_module: Py<PyAny>,
    auto_complete: Py<PyAny>,
    create_instance: Py<PyAny>,
    limit_threads: Py<PyAny>,
    finalize_instance: Py<PyAny>,
    has_is_ready: Py<PyAny>,
    call_is_ready: Py<PyAny>,
    close_loop: Py<PyAny>,
    model_context: Py<PyAny>,
    request_info: Py<PyAny>,
    is_iterator: Py<PyAny>,
    is_coroutine: Py<PyAny>,
    run_coroutine: Py<PyAny>,
    make_request: Py<PyAny>,
    process_returned: Py<PyAny>,
    send_returned: Py<PyAny>,
    awaits_sender: Py<PyAny>,
    attach_pb_utils: Py<PyAny>,
    format_exception: Py<PyAny>,
}

/// A model module runtime.py imported: its unique name, the module, and
/// its import context (`_ModelImports`: the model's private modules and
/// their names in `sys.modules`), closed by `unload_module`.
pub(crate) struct ImportedModule<'py> {
    pub unique_name: String,
    pub module: Bound<'py, PyAny>,
    pub private_modules: Bound<'py, PyAny>,
}

/// A user object runtime.py created (its `initialize` ran).
pub(crate) struct CreatedInstance<'py> {
    pub object: Bound<'py, PyAny>,
    /// The bound method called per batch (`predict` or `execute`).
    pub entry: Bound<'py, PyAny>,
    /// Whether `predict` takes the `requests` argument.
    pub pass_requests: bool,
    /// The class's `split_by_parameters`.
    pub split_by_parameters: bool,
}

/// The runtime, created on first use. runtime.py imports `_rustpy_native`,
/// which `interp::initialize` registers first.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let m = PyModule::from_code(py, RUNTIME_SOURCE, c"rustpy_runtime.py", c"_rustpy_runtime")?;
    let get = |name: &str| m.getattr(name).map(Bound::unbind);
    let rt = Runtime {
        load_module: get("load_module")?,
        find_model_class: get("find_model_class")?,
        unload_module: get("unload_module")?,
        auto_complete: get("auto_complete")?,
        create_instance: get("create_instance")?,
        limit_threads: get("limit_threads")?,
        finalize_instance: get("finalize_instance")?,
        has_is_ready: get("has_is_ready")?,
        call_is_ready: get("call_is_ready")?,
        close_loop: get("close_loop")?,
        model_context: get("ModelContext")?,
        request_info: get("RequestInfo")?,
        is_iterator: get("is_iterator")?,
        is_coroutine: get("is_coroutine")?,
        run_coroutine: get("run_coroutine")?,
        make_request: get("make_request")?,
        process_returned: get("process_returned")?,
        send_returned: get("send_returned")?,
        awaits_sender: get("awaits_sender")?,
        attach_pb_utils: get("attach_pb_utils")?,
        format_exception: get("format_exception")?,
    };
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Whether the runtime exists (the interpreter was started by `initialize`).
pub(crate) fn is_created() -> bool {
    RUNTIME.get().is_some()
}

impl Runtime {
    /// Imports a model file under a unique module name.
    pub fn load_module<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        version: u64,
        model_dir: &str,
        model_file: &str,
    ) -> PyResult<ImportedModule<'py>> {
        let (unique_name, module, private_modules) = self
            .load_module
            .bind(py)
            .call1((model, version, model_dir, model_file))?
            .extract()?;
        Ok(ImportedModule {
            unique_name,
            module,
            private_modules,
        })
    }

    /// The model class of a module and the API it implements.
    pub fn find_model_class<'py>(
        &self,
        py: Python<'py>,
        module: &Bound<'py, PyAny>,
        model_file: &str,
    ) -> PyResult<(Bound<'py, PyAny>, ApiKind)> {
        let (class, api): (Bound<'py, PyAny>, u32) = self
            .find_model_class
            .bind(py)
            .call1((module, model_file))?
            .extract()?;
        let api = ApiKind::from_code(api).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("unknown API kind {api}"))
        })?;
        Ok((class, api))
    }

    /// Forgets a model module and its private sibling modules.
    pub fn unload_module(
        &self,
        py: Python<'_>,
        unique_name: &str,
        private_modules: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.unload_module
            .bind(py)
            .call1((unique_name, private_modules))
            .map(drop)
    }

    /// Runs a class's `auto_complete_config` on a config JSON; the completed
    /// JSON, if the class has one.
    pub fn auto_complete(
        &self,
        py: Python<'_>,
        class: &Bound<'_, PyAny>,
        config_json: &str,
    ) -> PyResult<Option<String>> {
        self.auto_complete
            .bind(py)
            .call1((class, config_json))?
            .extract()
    }

    /// Instantiates the user's class and runs its `initialize(ctx)`; `entry`
    /// names the method called per batch.
    pub fn create_instance<'py>(
        &self,
        py: Python<'py>,
        class: &Bound<'py, PyAny>,
        ctx: Bound<'py, PyAny>,
        entry: &str,
    ) -> PyResult<CreatedInstance<'py>> {
        let (object, entry, pass_requests, split_by_parameters) = self
            .create_instance
            .bind(py)
            .call1((class, ctx, entry))?
            .extract()?;
        Ok(CreatedInstance {
            object,
            entry,
            pass_requests,
            split_by_parameters,
        })
    }

    /// Caps the process's BLAS/OpenMP pools at `limit` threads (threadpoolctl);
    /// `asked`: the config set it (then a missing threadpoolctl is an error).
    /// Returns the pools as threadpoolctl sees them after: (API, threads).
    pub fn limit_threads(
        &self,
        py: Python<'_>,
        model: &str,
        limit: usize,
        asked: bool,
    ) -> PyResult<Vec<(Option<String>, Option<usize>)>> {
        self.limit_threads
            .bind(py)
            .call1((model, limit, asked))?
            .extract()
    }

    pub fn finalize_instance(&self, py: Python<'_>, object: &Bound<'_, PyAny>) -> PyResult<()> {
        self.finalize_instance.bind(py).call1((object,)).map(drop)
    }

    /// Whether the user's object defines `is_ready()`.
    pub fn has_is_ready(&self, py: Python<'_>, object: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.has_is_ready.bind(py).call1((object,))?.extract()
    }

    /// Calls the user's `is_ready()` (a coroutine runs on the instance's
    /// loop `key`); its bool answer.
    pub fn call_is_ready(
        &self,
        py: Python<'_>,
        object: &Bound<'_, PyAny>,
        key: &str,
    ) -> PyResult<bool> {
        self.call_is_ready.bind(py).call1((object, key))?.extract()
    }

    /// Stops an instance's asyncio loop (once its coroutines finished).
    pub fn close_loop(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        self.close_loop.bind(py).call1((key,)).map(drop)
    }

    /// `initialize(ctx)`'s argument for the batched API.
    pub fn model_context<'py>(
        &self,
        py: Python<'py>,
        kwargs: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.model_context.bind(py).call((), Some(kwargs))
    }

    /// The RequestInfo class (one per request of a predict call).
    pub fn request_info<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.request_info.bind(py)
    }

    /// Whether predict returned a stream (a generator, not a dict or list).
    pub fn is_iterator(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.is_iterator.bind(py).call1((value,))?.extract()
    }

    pub fn is_coroutine(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.is_coroutine.bind(py).call1((value,))?.extract()
    }

    /// Runs an `async def execute` on the instance's loop; with `wait`, its
    /// result, else a future (failures are logged and fail open requests).
    pub fn run_coroutine<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        coroutine: Bound<'py, PyAny>,
        wait: bool,
        requests: &Bound<'py, PyList>,
        model: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_coroutine
            .bind(py)
            .call1((key, coroutine, wait, requests, model))
    }

    /// The constructor of a pb_utils.InferenceRequest from the backend.
    pub fn make_request<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.make_request.bind(py)
    }

    /// Checks what `execute` returned; the responses to send (or None).
    pub fn process_returned<'py>(
        &self,
        py: Python<'py>,
        instance: &str,
        decoupled: bool,
        requests: &Bound<'py, PyList>,
        returned: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.process_returned
            .bind(py)
            .call1((instance, decoupled, requests, returned))
    }

    pub fn send_returned<'py>(
        &self,
        py: Python<'py>,
        requests: &Bound<'py, PyList>,
        responses: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        self.send_returned
            .bind(py)
            .call1((requests, responses))
            .map(drop)
    }

    /// Whether a default model's request stays open after execute returned.
    pub fn awaits_sender(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.awaits_sender.bind(py).call1((request,))?.extract()
    }

    /// Binds the pb_utils module (created after the runtime).
    /// `source` is pb_utils.py's text (written for processes a model spawns).
    pub fn attach_pb_utils(
        &self,
        py: Python<'_>,
        pb_utils: &Bound<'_, PyModule>,
        source: &str,
    ) -> PyResult<()> {
        self.attach_pb_utils
            .bind(py)
            .call1((pb_utils, source))
            .map(drop)
    }

    /// `Type: message` plus the last traceback lines.
    pub fn format_exception(&self, py: Python<'_>, err: &PyErr) -> PyResult<String> {
        self.format_exception
            .bind(py)
            .call1((err.value(py), err.traceback(py)))?
            .extract()
    }
}
