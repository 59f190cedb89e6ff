//! `_rustpy_native`: the Rust half of rustpy's pb_utils (response senders,
//! logging). Registered in sys.modules when the interpreter starts.

use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::numpy_io::{extract_tensor, ExtractedOutput};
use crate::batch::OutputData;
use crate::dtype::DataType;
use crate::engine::{OutputSlice, Responder};
use crate::error::{Error, ErrorCode};

/// Log levels as Triton numbers them (INFO 0, WARN 1, ERROR 2, VERBOSE 3).
pub type LogHook = Box<dyn Fn(u32, &str) + Send + Sync>;
static LOG_HOOK: OnceLock<LogHook> = OnceLock::new();

/// Where Python's `pb_utils.Logger` writes: Triton's log in the backend,
/// stderr elsewhere. Set once, before models load.
pub fn set_log_hook(hook: LogHook) {
    let _ = LOG_HOOK.set(hook);
}

pub(crate) fn log(level: u32, msg: &str) {
    match LOG_HOOK.get() {
        Some(hook) => hook(level, msg),
        None => eprintln!("[rustpy] {msg}"),
    }
}

#[pyfunction]
#[pyo3(name = "log")]
fn py_log(py: Python<'_>, level: u32, message: String) {
    py.allow_threads(|| log(level, &message));
}

/// What a sender holds: the request's responder until its final response.
struct SenderState {
    responder: Option<Box<dyn Responder>>,
    /// Whether anything went out for this request (for statistics).
    failed: bool,
}

/// The native side of `pb_utils.InferenceResponseSender` for one request.
#[pyclass(module = "_rustpy_native", frozen)]
pub struct NativeSender {
    state: Arc<Mutex<SenderState>>,
    model: String,
    requested: Vec<String>,
}

impl NativeSender {
    pub(crate) fn new(responder: Box<dyn Responder>, model: &str, requested: Vec<String>) -> Self {
        NativeSender {
            state: Arc::new(Mutex::new(SenderState { responder: Some(responder), failed: false })),
            model: model.to_string(),
            requested,
        }
    }

    /// Takes the responder back if no final response went out yet.
    pub(crate) fn take_unfinished(&self) -> Option<Box<dyn Responder>> {
        self.state.lock().ok()?.responder.take()
    }

    pub(crate) fn failed(&self) -> bool {
        self.state.lock().map(|s| s.failed).unwrap_or(true)
    }

    pub(crate) fn send_error_final(&self, err: &Error) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(mut r) = s.responder.take() {
                r.send_error(err);
                s.failed = true;
            }
        }
    }
}

#[pymethods]
impl NativeSender {
    /// send(outputs: list[(name, ndarray, triton_dtype)] | None,
    ///      error: (code, message) | None, flags: int)
    #[pyo3(signature = (outputs, error, flags))]
    fn send(
        &self,
        py: Python<'_>,
        outputs: Option<Vec<(String, Bound<'_, PyAny>, u32)>>,
        error: Option<(u32, String)>,
        flags: u32,
    ) -> PyResult<()> {
        let is_final = flags & 1 != 0;
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
        let state = self.state.clone();
        // Lock only without the GIL: a thread holding the lock may need the
        // GIL back after its send, so waiting for the lock with the GIL held
        // could deadlock.
        let result: Result<(), String> = py.allow_threads(move || {
            let mut s = state.lock().map_err(|_| "response sender poisoned".to_string())?;
            let Some(responder) = s.responder.as_mut() else {
                return Err("Unable to send response. Response sender has been closed.".to_string());
            };
            if let Some((code, message)) = error {
                responder.send_error(&Error::new(ErrorCode::from_code(code), message));
                s.failed = true;
                s.responder = None;
                return Ok(());
            }
            if extracted.is_empty() && is_final {
                responder.finish();
                s.responder = None;
                return Ok(());
            }
            let slices: Vec<OutputSlice<'_>> = extracted
                .iter()
                .map(|o| OutputSlice {
                    name: &o.name,
                    dtype: o.dtype,
                    shape: o.shape.clone(),
                    data: match o.view_data() {
                        OutputData::Fixed(b) => b,
                        OutputData::Bytes { buf, .. } => buf,
                    },
                })
                .collect();
            let sent = responder.send(&slices, is_final);
            if let Err(e) = sent {
                responder.send_error(&e);
                s.failed = true;
                s.responder = None;
                return Err(e.message);
            }
            if is_final {
                s.responder = None;
            }
            Ok(())
        });
        result.map_err(PyRuntimeError::new_err)
    }

    fn is_cancelled(&self, py: Python<'_>) -> bool {
        let state = self.state.clone();
        py.allow_threads(move || {
            state.lock().ok().and_then(|s| s.responder.as_ref().map(|r| r.is_cancelled())).unwrap_or(false)
        })
    }
}

impl Drop for NativeSender {
    fn drop(&mut self) {
        // A request whose sender Python dropped without the FINAL flag still
        // gets an answer (the responder's own drop sends an error).
        if let Ok(mut s) = self.state.lock() {
            s.responder.take();
        }
    }
}

/// Builds the `_rustpy_native` module.
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new_bound(py, "_rustpy_native")?;
    m.add_function(wrap_pyfunction!(py_log, &m)?)?;
    m.add_class::<NativeSender>()?;
    Ok(m)
}
