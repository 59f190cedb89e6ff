//! Execution strategies. A model instance holds one [`Executor`]; each
//! takes a batch of requests (an unreadable one as its error) and one
//! responder per request, answers every request, and reports what happened.
//!
//! - [`echo`]: the native echo, no Python (here, outside `python/`).
//! - `python::batched`: rustpy's batched API (`Model.predict`).
//! - `python::pb_utils`: the official API (`TritonPythonModel.execute`).
//!
//! Process isolation runs these same executors in a worker process
//! (`isolation::worker`), behind the backend's own `WorkerInstance`.

pub(crate) mod echo;

use crate::engine::{ExecReport, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::python::{Batched, PbUtils};
use crate::rules::batch;
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

/// How one model instance executes its batches.
pub(crate) enum Executor {
    Batched(Batched),
    PbUtils(PbUtils),
    Echo(echo::Echo),
}

impl Executor {
    /// Executes `requests`, answering each through its responder (same index).
    pub(crate) fn execute<R: Responder + 'static>(
        &self,
        requests: &[Result<InferRequest<'_>>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        assert_eq!(
            requests.len(),
            responders.len(),
            "one responder per request"
        );
        match self {
            Executor::Batched(b) => b.execute(requests, &mut responders),
            Executor::PbUtils(p) => p.execute(requests, responders),
            Executor::Echo(e) => e.execute(requests, &mut responders),
        }
    }
}

/// Whether a request may run: not cancelled and fitting the model's
/// configuration. Otherwise it is answered with the reason here; returns the
/// batch rows it contributes.
pub(crate) fn admit<R: Responder>(
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

pub(crate) fn cancelled(spec: &ModelSpec) -> Error {
    Error::new(
        ErrorCode::Cancelled,
        format!("model '{}': request cancelled", spec.name),
    )
}
