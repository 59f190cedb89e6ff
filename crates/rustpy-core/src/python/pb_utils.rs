//! The official API's strategy (`class TritonPythonModel` with
//! `execute(requests)`): one call with every valid request, each as a
//! pb_utils.InferenceRequest carrying its own inputs and a response sender
//! that owns the request's responder (senders may outlive the call when the
//! model is decoupled). The Python side of it is runtime.py's.

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::convert::{correlation_to_py, params_dict};
use super::error::py_error;
use super::native::NativeSender;
use super::numpy_io::{array_from_buffers, bytes_array};
use super::runtime::runtime;
use crate::constants::ReleaseFlag;
use crate::engine::{ExecReport, Outcome, Responder};
use crate::error::{Error, Result};
use crate::rules::batch;
use crate::rules::dtype::DataType;
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;
use crate::rules::tensor::TensorBuffer;

/// One instance's pb_utils strategy.
pub(crate) struct PbUtils {
    pub(crate) spec: ModelSpec,
    /// Triton's name for the instance (`<model>_<group>_<n>`): upstream's
    /// execute messages name it, not the model.
    pub(crate) instance: String,
    /// Identifies the instance's asyncio loop.
    pub(crate) key: String,
    /// The user's bound `execute` method.
    pub(crate) execute: Py<PyAny>,
}

impl PbUtils {
    /// The official API: one `execute(requests)` call with every admitted
    /// request, each carrying its own inputs and a response sender that owns
    /// the request's responder (senders may outlive the call when decoupled).
    /// The report is over `requests`.
    pub(crate) fn execute<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        responders: Vec<R>,
    ) -> ExecReport {
        let mut report = ExecReport::new(requests.len());
        if requests.is_empty() {
            return report;
        }
        Python::attach(|py| {
            let fail_all = |senders: &[Py<NativeSender>], err: &Error| {
                for s in senders {
                    s.get().send_error_final(err);
                }
            };
            let mut senders: Vec<Py<NativeSender>> = Vec::with_capacity(requests.len());
            for (req, responder) in requests.iter().zip(responders) {
                let sender = NativeSender::new(
                    Box::new(responder),
                    &self.spec.name,
                    req.requested_outputs.clone(),
                    self.spec.decoupled,
                );
                // A sender Python could not take answers its request as it drops.
                match Py::new(py, sender) {
                    Ok(s) => senders.push(s),
                    Err(e) => return fail_all(&senders, &self.failure(py, e)),
                }
            }
            let py_requests = match self.pb_utils_requests(py, requests, &senders) {
                Ok(list) => list,
                Err(e) => return fail_all(&senders, &e),
            };
            report.calls = 1;
            report.compute_start = Some(Instant::now());
            let outcome = self.call(py, &py_requests);
            report.compute_end = Some(Instant::now());
            if let Err(e) = outcome {
                fail_all(&senders, &self.failure(py, e));
            }
            for (k, sender) in senders.iter().enumerate() {
                report.outcomes[k] = self.settle(py, &py_requests, k, sender.get());
            }
        });
        report
    }

    /// A Python failure of the execution, worded as upstream's.
    fn failure(&self, py: Python<'_>, e: PyErr) -> Error {
        let instance = &self.instance;
        py_error(
            py,
            &e,
            &format!("Failed to process the request(s) for model '{instance}', message"),
        )
    }

    /// Calls the user's `execute` (awaiting a coroutine unless the model is
    /// decoupled) and sends the responses it returned.
    fn call(&self, py: Python<'_>, py_requests: &Bound<'_, PyList>) -> PyResult<()> {
        let spec = &self.spec;
        let rt = runtime(py)?;
        let mut returned = self.execute.bind(py).call1((py_requests,))?;
        if rt.is_coroutine(py, &returned)? {
            // A decoupled model's coroutine runs on in the background,
            // as upstream does; otherwise wait for its responses.
            returned = rt.run_coroutine(
                py,
                &self.key,
                returned,
                !spec.decoupled,
                py_requests,
                &spec.name,
            )?;
            if spec.decoupled {
                return Ok(());
            }
        }
        let responses =
            rt.process_returned(py, &self.instance, spec.decoupled, py_requests, returned)?;
        if !responses.is_none() {
            rt.send_returned(py, py_requests, responses)?;
        }
        Ok(())
    }

    /// How the `k`th request ended once `execute` returned: rescheduled,
    /// answered (or, decoupled, left to its sender), or failed; a default
    /// model's request nobody answered is failed here.
    fn settle(
        &self,
        py: Python<'_>,
        py_requests: &Bound<'_, PyList>,
        k: usize,
        s: &NativeSender,
    ) -> Outcome {
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
            return Outcome::Rescheduled;
        }
        if !self.spec.decoupled && !awaits_sender(py, py_requests, k) {
            // Every request of a non-decoupled model is answered by now,
            // unless the model holds its open response sender.
            if let Some(mut r) = s.take_unfinished() {
                let instance = &self.instance;
                py.detach(|| {
                    r.send_error(&Error::internal(format!(
                        "Failed to process the request(s) for model '{instance}', message: execute did not \
                         return or send a response for this request (execute must return a list with one \
                         InferenceResponse per request)"
                    )))
                });
                return Outcome::Failed;
            }
        }
        if s.failed() {
            Outcome::Failed
        } else {
            Outcome::Answered
        }
    }

    /// pb_utils.InferenceRequest objects for `requests`, each with its sender.
    fn pb_utils_requests<'py>(
        &self,
        py: Python<'py>,
        requests: &[&InferRequest<'_>],
        senders: &[Py<NativeSender>],
    ) -> Result<Bound<'py, PyList>> {
        let model = self.spec.name.as_str();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing requests"));
        let make = runtime(py).map_err(err)?.make_request(py);
        let list = PyList::empty(py);
        for (req, sender) in requests.iter().zip(senders) {
            let inputs = PyList::empty(py);
            for input in &req.inputs {
                let array = if input.dtype == DataType::Bytes {
                    let elems = batch::gather_bytes(&[input]).map_err(|e| {
                        e.context(format!("model '{model}': input '{}'", input.name))
                    })?;
                    bytes_array(py, &input.shape, &elems).map_err(err)?
                } else {
                    let buffers: Vec<&TensorBuffer<'_>> = input.buffers.iter().collect();
                    array_from_buffers(py, input.dtype, &input.shape, &buffers).map_err(|e| {
                        e.context(format!("model '{model}': input '{}'", input.name))
                    })?
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
        .and_then(|rt| rt.awaits_sender(py, &request))
        .unwrap_or(false)
}
