//! `_rustpy_native`: the Rust half of rustpy's pb_utils (response senders,
//! logging). Registered in sys.modules when the interpreter starts.

use std::sync::{Arc, Mutex, OnceLock};

use crossbeam::channel::{unbounded, Receiver};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyModule};

use super::convert::{params_dict, tensor_from_py_into, tensor_into_py};
use super::numpy_io::{self, extract_tensor, ExtractedOutput};
use crate::constants::{LogLevel, PYTHON_NAMES, RESPONSE_COMPLETE_FINAL};
use crate::engine::{OutputSlice, Responder};
use crate::error::{Error, ErrorCode};
use crate::rules::dtype::DataType;
use crate::rules::request::{CorrelationId, ParamValue};
use crate::server::{
    server_api, BlsCancel, BlsRequest, BlsResponse, Metric, MetricFamily, MetricKind, OutputArena,
};

/// Arguments: level, source file, source line, message.
pub type LogHook = Box<dyn Fn(LogLevel, &str, u32, &str) + Send + Sync>;
static LOG_HOOK: OnceLock<LogHook> = OnceLock::new();

/// Where `ctx.empty` places arrays (a worker's output region); unset: they
/// are ordinary numpy arrays.
static OUTPUT_ARENA: OnceLock<Arc<dyn OutputArena>> = OnceLock::new();

/// Set once by a worker, before its model loads.
pub fn set_output_arena(arena: Arc<dyn OutputArena>) {
    let _ = OUTPUT_ARENA.set(arena);
}

/// output_empty(shape, dtype code): a writable array of that shape in the
/// output region, for a model to fill and return (`ctx.empty`), or None
/// (no region here, no batch running, too small, or no room left).
#[pyfunction]
fn output_empty(py: Python<'_>, shape: Vec<i64>, code: u32) -> PyResult<Option<Py<PyAny>>> {
    let Some(arena) = OUTPUT_ARENA.get() else {
        return Ok(None);
    };
    let Some(dtype) = DataType::from_code(code) else {
        return Ok(None);
    };
    let Some(len) = numpy_io::expected_byte_size(dtype, &shape) else {
        return Ok(None);
    };
    let Some(placed) = arena.place(len) else {
        return Ok(None);
    };
    let array = numpy_io::array_over_placed(py, dtype, &shape, placed).map_err(core_err)?;
    Ok(Some(array.unbind()))
}

/// Where Python's `pb_utils.Logger` writes: Triton's log in the backend,
/// stderr elsewhere. Set once, before models load.
pub fn set_log_hook(hook: LogHook) {
    let _ = LOG_HOOK.set(hook);
}

pub fn log(level: LogLevel, file: &str, line: u32, msg: &str) {
    match LOG_HOOK.get() {
        Some(hook) => hook(level, file, line, msg),
        None => eprintln!("[rustpy] {file}:{line}: {msg}"),
    }
}

/// log(level, message, file, line): `file`/`line` name the user's call site,
/// as the official backend's log lines do.
#[pyfunction]
#[pyo3(name = "log", signature = (level, message, file = String::from("rustpy"), line = 0))]
fn py_log(py: Python<'_>, level: u32, message: String, file: String, line: u32) {
    py.detach(|| log(LogLevel::from_code(level), &file, line, &message));
}

/// What a sender holds: the request's responder, whose own state says
/// whether the request is still open (it is let go of once it is not), and
/// what the official sender's rules count. Whether the FINAL response went
/// out is the responder's to know, nobody else's.
struct SenderState {
    responder: Option<Box<dyn Responder>>,
    /// Whether anything went out for this request (for statistics).
    failed: bool,
    /// Responses counted by the official rules: sent through the sender, or
    /// returned by `execute` (counted when it returns, sent just after).
    counted: u32,
    /// `execute` returned a response for this request: that response holds
    /// the request's FINAL, so the sender may not send anything else.
    returned: bool,
}

impl SenderState {
    /// The responder, if the request may still be answered.
    fn open(&mut self) -> Option<&mut Box<dyn Responder>> {
        self.responder.as_mut().filter(|r| r.is_open())
    }

    /// Lets go of a responder whose request is finished (so its response
    /// factory is freed now, not when Python drops the sender).
    fn release_if_closed(&mut self) {
        if self.responder.as_ref().is_some_and(|r| !r.is_open()) {
            self.responder = None;
        }
    }

    /// Whether the sender may still send: the request is open and no
    /// returned response holds its FINAL.
    fn sendable(&self) -> bool {
        !self.returned && self.responder.as_ref().is_some_and(|r| r.is_open())
    }

    /// The official sender's rules (ResponseSender::UpdateStateAndCounters):
    /// checked and counted atomically with the send, under the state's lock,
    /// so two threads racing a FINAL get one response out and one error.
    fn admit(&mut self, decoupled: bool, is_response: bool, is_final: bool) -> Result<(), String> {
        if !decoupled {
            if is_response && self.counted > 0 {
                return Err("Unable to send response. Non-decoupled model cannot send more than one response.".into());
            }
            if !is_response && is_final && self.counted == 0 {
                return Err("Unable to send response. Non-decoupled model cannot send complete final before \
                            sending a response."
                    .into());
            }
        }
        if !self.sendable() {
            return Err(SENDER_CLOSED.into());
        }
        self.counted += 1;
        Ok(())
    }
}

const SENDER_CLOSED: &str = "Unable to send response. Response sender has been closed.";

/// The native side of `pb_utils.InferenceResponseSender` for one request.
#[pyclass(module = "_rustpy_native", frozen)]
pub struct NativeSender {
    state: Arc<Mutex<SenderState>>,
    model: String,
    requested: Vec<String>,
    /// Whether the model is decoupled (pb_utils applies the official
    /// sender's rules for default models).
    #[pyo3(get)]
    decoupled: bool,
}

impl NativeSender {
    pub(crate) fn new(
        responder: Box<dyn Responder>,
        model: &str,
        requested: Vec<String>,
        decoupled: bool,
    ) -> Self {
        NativeSender {
            state: Arc::new(Mutex::new(SenderState {
                responder: Some(responder),
                failed: false,
                counted: 0,
                returned: false,
            })),
            model: model.to_string(),
            requested,
            decoupled,
        }
    }

    /// Takes the responder back if no final response went out yet.
    pub(crate) fn take_unfinished(&self) -> Option<Box<dyn Responder>> {
        self.state
            .lock()
            .ok()?
            .responder
            .take()
            .filter(|r| r.is_open())
    }

    pub(crate) fn failed(&self) -> bool {
        self.state.lock().map(|s| s.failed).unwrap_or(true)
    }

    /// Drops the responder without answering (the request is rescheduled).
    /// False if a final response already went out: such a request is
    /// finished and must be released, never handed back to Triton.
    pub(crate) fn detach(&self) -> bool {
        if let Ok(mut s) = self.state.lock() {
            if let Some(r) = s.open() {
                r.detach();
                s.responder = None;
                return true;
            }
        }
        false
    }

    pub(crate) fn send_error_final(&self, err: &Error) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(r) = s.open() {
                r.send_error(err);
                s.failed = true;
            }
            s.release_if_closed();
        }
    }
}

#[pymethods]
impl NativeSender {
    /// send(outputs: list[(name, ndarray, triton_dtype)] | None,
    ///      error: (code, message) | None, flags: int,
    ///      parameters: list[(name, bool | int | str)] | None): the user's
    /// send, under the official sender's rules.
    #[pyo3(signature = (outputs, error, flags, parameters=None))]
    fn send(
        &self,
        py: Python<'_>,
        outputs: Option<Vec<(String, Bound<'_, PyAny>, u32)>>,
        error: Option<(u32, String)>,
        flags: u32,
        parameters: Option<Vec<(String, Bound<'_, PyAny>)>>,
    ) -> PyResult<()> {
        let is_final = flags & RESPONSE_COMPLETE_FINAL != 0;
        let is_response = outputs.is_some() || error.is_some();
        let decoupled = self.decoupled;
        let parameters = response_parameters(parameters)?;
        self.send_with(py, outputs, error, parameters, is_final, move |s| {
            s.admit(decoupled, is_response, is_final)
        })
    }

    /// Counts the response `execute` returned for this request (it goes out
    /// through send_returned once every returned item has been checked);
    /// from now on the sender itself may not send.
    fn claim_returned(&self, py: Python<'_>) -> PyResult<()> {
        let decoupled = self.decoupled;
        self.with_state(py, move |s| {
            s.admit(decoupled, true, true)?;
            s.returned = true;
            Ok(())
        })
    }

    /// Sends the response `execute` returned (claimed by claim_returned)
    /// with the FINAL flag: outputs, or an error (code, message).
    #[pyo3(signature = (outputs, error, parameters=None))]
    fn send_returned(
        &self,
        py: Python<'_>,
        outputs: Option<Vec<(String, Bound<'_, PyAny>, u32)>>,
        error: Option<(u32, String)>,
        parameters: Option<Vec<(String, Bound<'_, PyAny>)>>,
    ) -> PyResult<()> {
        let parameters = response_parameters(parameters)?;
        self.send_with(py, outputs, error, parameters, true, |s| match s.open() {
            Some(_) => Ok(()),
            None => Err(SENDER_CLOSED.into()),
        })
    }

    /// Ends the request with an error response unless it is finished.
    fn fail_if_open(&self, py: Python<'_>, code: u32, message: String) {
        let err = Error::new(ErrorCode::from_code(code), message);
        let _ = self.with_state(py, move |s| {
            if let Some(r) = s.open() {
                r.send_error(&err);
                s.failed = true;
            }
            Ok(())
        });
    }

    /// Sends the bare FINAL flag for a request that got a response through
    /// the sender but no FINAL (the official backend leaves such a request
    /// of a default model hanging).
    fn complete(&self, py: Python<'_>) {
        let _ = self.with_state(py, |s| {
            if s.counted > 0 && s.sendable() {
                if let Some(r) = s.open() {
                    r.finish();
                }
            }
            Ok(())
        });
    }

    /// Whether the sender may still send (for a default model's request the
    /// model keeps answering after execute returned).
    fn is_open(&self, py: Python<'_>) -> bool {
        let state = self.state.clone();
        py.detach(move || state.lock().map(|s| s.sendable()).unwrap_or(false))
    }

    fn is_cancelled(&self, py: Python<'_>) -> bool {
        let state = self.state.clone();
        py.detach(move || {
            state
                .lock()
                .ok()
                .and_then(|s| s.responder.as_ref().map(|r| r.is_cancelled()))
                .unwrap_or(false)
        })
    }
}

impl NativeSender {
    /// Runs `f` on the locked state. The lock is taken only without the GIL:
    /// a thread holding it may need the GIL back after its send, so waiting
    /// for the lock with the GIL held could deadlock.
    fn with_state(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut SenderState) -> Result<(), String> + Send,
    ) -> PyResult<()> {
        let state = self.state.clone();
        let result: Result<(), String> = py.detach(move || {
            let mut s = state
                .lock()
                .map_err(|_| "response sender poisoned".to_string())?;
            let result = f(&mut s);
            s.release_if_closed();
            result
        });
        result.map_err(PyRuntimeError::new_err)
    }

    /// Converts the outputs (with the GIL), then checks with `admit` and
    /// sends, both under the state's lock.
    fn send_with(
        &self,
        py: Python<'_>,
        outputs: Option<Vec<(String, Bound<'_, PyAny>, u32)>>,
        error: Option<(u32, String)>,
        parameters: Vec<(String, ParamValue)>,
        is_final: bool,
        admit: impl FnOnce(&mut SenderState) -> Result<(), String> + Send,
    ) -> PyResult<()> {
        // A response object (even one without outputs) is sent as a response;
        // only `None` with FINAL is the bare final flag.
        let has_response = outputs.is_some();
        let mut extracted: Vec<ExtractedOutput> = Vec::new();
        for (name, array, code) in outputs.unwrap_or_default() {
            // Outputs the client did not ask for are dropped, as upstream does.
            if !self.requested.is_empty() && !self.requested.contains(&name) {
                continue;
            }
            let t = extract_tensor(py, &self.model, &name, &array, DataType::from_code(code))
                .map_err(|e| PyRuntimeError::new_err(e.message))?;
            extracted.push(t);
        }
        self.with_state(py, move |s| {
            admit(s)?;
            send_locked(s, error, has_response, is_final, &extracted, &parameters)
        })
    }
}

/// One `send` of a NativeSender, with its state locked.
fn send_locked(
    s: &mut SenderState,
    error: Option<(u32, String)>,
    has_response: bool,
    is_final: bool,
    extracted: &[ExtractedOutput],
    parameters: &[(String, ParamValue)],
) -> Result<(), String> {
    let Some(responder) = s.open() else {
        return Err(SENDER_CLOSED.to_string());
    };
    if let Some((code, message)) = error {
        let err = Error::new(ErrorCode::from_code(code), message);
        // An error response without FINAL leaves a decoupled request open.
        if is_final {
            responder.send_error(&err);
        } else {
            responder.send_error_nonfinal(&err);
        }
        s.failed = true;
        return Ok(());
    }
    if !has_response && is_final {
        responder.finish();
        return Ok(());
    }
    let slices: Vec<OutputSlice<'_>> = extracted.iter().map(ExtractedOutput::slice).collect();
    if let Err(e) = responder.send_with_parameters(&slices, parameters, is_final) {
        responder.send_error(&e);
        s.failed = true;
        return Err(e.message);
    }
    Ok(())
}

impl Drop for NativeSender {
    fn drop(&mut self) {
        // A request whose sender Python dropped without the FINAL flag still
        // gets an answer, saying so.
        if let Ok(mut s) = self.state.lock() {
            if let Some(r) = s.open() {
                r.send_error(&Error::internal(format!(
                    "model '{}': the request's response sender was dropped before it sent the \
                     FINAL flag",
                    self.model
                )));
            }
        }
    }
}

/// Response parameters from pb_utils (already checked there to be bool,
/// int or str, as upstream's InferenceResponse takes them).
fn response_parameters(
    parameters: Option<Vec<(String, Bound<'_, PyAny>)>>,
) -> PyResult<Vec<(String, ParamValue)>> {
    parameters
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| match py_to_param(&value) {
            Some(ParamValue::Double(_)) | None => Err(PyRuntimeError::new_err(format!(
                "response parameter '{key}' must be bool, int (64-bit) or str"
            ))),
            Some(v) => Ok((key, v)),
        })
        .collect()
}

fn core_err(e: Error) -> PyErr {
    PyRuntimeError::new_err(e.message)
}

fn py_to_param(value: &Bound<'_, PyAny>) -> Option<ParamValue> {
    // bool first: Python's bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Some(ParamValue::Bool(b.is_true()));
    }
    if let Ok(i) = value.extract::<i64>() {
        return Some(ParamValue::Int(i));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Some(ParamValue::Double(f.value()));
    }
    value.extract::<String>().ok().map(ParamValue::String)
}

/// Starts an in-process inference on another model (BLS) and returns the
/// stream its responses arrive on.
#[pyfunction]
#[pyo3(signature = (model_name, model_version, request_id, correlation_id, flags, timeout, parameters, inputs, requested_outputs))]
#[allow(clippy::too_many_arguments)]
fn bls_infer(
    py: Python<'_>,
    model_name: String,
    model_version: i64,
    request_id: String,
    correlation_id: Bound<'_, PyAny>,
    flags: u32,
    timeout: u64,
    parameters: Bound<'_, PyDict>,
    inputs: Vec<(String, Bound<'_, PyAny>, u32)>,
    requested_outputs: Vec<String>,
) -> PyResult<BlsStream> {
    let server = server_api().map_err(core_err)?.clone();
    let arena = server.input_arena();
    let tensors = inputs
        .into_iter()
        .map(|(name, array, code)| {
            let dtype = DataType::from_code(code);
            tensor_from_py_into(py, &model_name, &name, &array, dtype, arena.as_deref())
        })
        .collect::<crate::error::Result<Vec<_>>>()
        .map_err(core_err)?;
    let correlation_id = if let Ok(s) = correlation_id.extract::<String>() {
        CorrelationId::String(s)
    } else {
        match correlation_id.extract::<u64>()? {
            0 => CorrelationId::None,
            n => CorrelationId::Int(n),
        }
    };
    let mut params = Vec::new();
    for (k, v) in parameters.iter() {
        let key: String = k.extract()?;
        let value = py_to_param(&v).ok_or_else(|| {
            PyRuntimeError::new_err(format!("parameter '{key}' must be bool, int, float or str"))
        })?;
        params.push((key, value));
    }
    let request = BlsRequest {
        model_name,
        model_version,
        request_id,
        correlation_id,
        flags,
        timeout_us: timeout,
        inputs: tensors,
        requested_outputs,
        parameters: params,
        outputs_to: None,
    };
    let (tx, rx) = unbounded();
    let model = request.model_name.clone();
    let cancel = py.detach(|| server.infer(request, tx)).map_err(core_err)?;
    Ok(BlsStream {
        responses: rx,
        model,
        cancel,
    })
}

/// The responses of one BLS request, in arrival order.
#[pyclass(module = "_rustpy_native")]
struct BlsStream {
    responses: Receiver<BlsResponse>,
    /// The model called, for error messages.
    model: String,
    /// Cancels the request in the server (a no-op once it completed).
    cancel: BlsCancel,
}

#[pymethods]
impl BlsStream {
    /// `ResponseIterator.cancel()`: asks the server to cancel the request;
    /// the responses still arrive (the last typically a CANCELLED error).
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let cancel = &self.cancel;
        py.detach(cancel).map_err(core_err)
    }

    /// The next response as (outputs, error, parameters, is_final), or None
    /// once the final response was taken. Waits without holding the GIL.
    #[allow(clippy::type_complexity)]
    fn next_response(
        &self,
        py: Python<'_>,
    ) -> PyResult<
        Option<(
            Vec<(String, Py<PyAny>, u32)>,
            Option<(u32, String)>,
            Py<PyAny>,
            bool,
        )>,
    > {
        let rx = self.responses.clone();
        let Ok(resp) = py.detach(move || rx.recv()) else {
            return Ok(None);
        };
        let mut outputs = Vec::with_capacity(resp.outputs.len());
        let mut error = resp
            .error
            .as_ref()
            .map(|e| (e.code as u32, e.message.clone()));
        // The arrays take the responses' buffers over: no copy.
        for t in resp.outputs {
            let (name, dtype) = (t.name.clone(), t.dtype as u32);
            match tensor_into_py(py, t) {
                Ok(array) => outputs.push((name, array.unbind(), dtype)),
                // A tensor that does not match its own shape (a peer backend's
                // bug) fails this response, not the process.
                Err(e) => {
                    outputs.clear();
                    error = Some((
                        e.code as u32,
                        format!("BLS response from model '{}': {}", self.model, e.message),
                    ));
                    break;
                }
            }
        }
        let params = params_dict(py, &resp.parameters)?;
        Ok(Some((
            outputs,
            error,
            params.into_any().unbind(),
            resp.is_final,
        )))
    }
}

#[pyfunction]
#[pyo3(signature = (model_name, config, files))]
fn load_model(
    py: Python<'_>,
    model_name: String,
    config: String,
    files: Vec<(String, Vec<u8>)>,
) -> PyResult<()> {
    let server = server_api().map_err(core_err)?.clone();
    py.detach(|| server.load_model(&model_name, &config, &files))
        .map_err(core_err)
}

/// Whether a model uses the decoupled transaction policy (BLS checks it:
/// a decoupled model can only be called with exec(decoupled=True)).
#[pyfunction]
fn is_model_decoupled(py: Python<'_>, model_name: String, model_version: i64) -> PyResult<bool> {
    let server = server_api().map_err(core_err)?.clone();
    py.detach(|| server.is_model_decoupled(&model_name, model_version))
        .map_err(core_err)
}

#[pyfunction]
fn unload_model(py: Python<'_>, model_name: String, unload_dependents: bool) -> PyResult<()> {
    let server = server_api().map_err(core_err)?.clone();
    py.detach(|| server.unload_model(&model_name, unload_dependents))
        .map_err(core_err)
}

#[pyfunction]
fn is_model_ready(py: Python<'_>, model_name: String, model_version: i64) -> PyResult<bool> {
    let server = server_api().map_err(core_err)?.clone();
    py.detach(|| server.is_model_ready(&model_name, model_version))
        .map_err(core_err)
}

/// A metric family registered on Triton's metrics endpoint.
#[pyclass(module = "_rustpy_native", frozen)]
struct NativeMetricFamily {
    family: Arc<dyn MetricFamily>,
}

#[pymethods]
impl NativeMetricFamily {
    #[new]
    fn new(py: Python<'_>, name: String, description: String, kind: u32) -> PyResult<Self> {
        let kind = MetricKind::from_code(kind)
            .ok_or_else(|| PyRuntimeError::new_err(format!("unknown metric kind {kind}")))?;
        let server = server_api().map_err(core_err)?.clone();
        let family = py
            .detach(|| server.metric_family(&name, &description, kind))
            .map_err(core_err)?;
        Ok(NativeMetricFamily { family })
    }

    #[pyo3(signature = (labels, buckets=None))]
    fn metric(
        &self,
        labels: Vec<(String, String)>,
        buckets: Option<Vec<f64>>,
    ) -> PyResult<NativeMetric> {
        let metric = self
            .family
            .metric(&labels, buckets.as_deref())
            .map_err(core_err)?;
        Ok(NativeMetric { metric })
    }
}

#[pyclass(module = "_rustpy_native", frozen)]
struct NativeMetric {
    metric: Box<dyn Metric>,
}

#[pymethods]
impl NativeMetric {
    fn increment(&self, value: f64) -> PyResult<()> {
        self.metric.increment(value).map_err(core_err)
    }
    fn set(&self, value: f64) -> PyResult<()> {
        self.metric.set(value).map_err(core_err)
    }
    fn observe(&self, value: f64) -> PyResult<()> {
        self.metric.observe(value).map_err(core_err)
    }
    fn value(&self) -> PyResult<f64> {
        self.metric.value().map_err(core_err)
    }
}

/// Builds the `_rustpy_native` module.
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, "_rustpy_native")?;
    m.add_function(wrap_pyfunction!(py_log, &m)?)?;
    m.add_function(wrap_pyfunction!(output_empty, &m)?)?;
    m.add_function(wrap_pyfunction!(bls_infer, &m)?)?;
    m.add_function(wrap_pyfunction!(load_model, &m)?)?;
    m.add_function(wrap_pyfunction!(unload_model, &m)?)?;
    m.add_function(wrap_pyfunction!(is_model_ready, &m)?)?;
    m.add_function(wrap_pyfunction!(is_model_decoupled, &m)?)?;
    m.add_class::<NativeSender>()?;
    m.add_class::<BlsStream>()?;
    m.add_class::<NativeMetricFamily>()?;
    m.add_class::<NativeMetric>()?;
    for (name, value) in PYTHON_NAMES {
        m.add(*name, *value)?;
    }
    Ok(m)
}
