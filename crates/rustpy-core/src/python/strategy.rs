//! Execution strategies: how one model instance runs a batch. A model
//! instance holds one [`Strategy`]; each takes the admitted requests of an
//! execution (crate::admission decided, once, which may run) and one
//! responder per request, answers every request, and reports what happened.
//!
//! - `python::batched`: rustpy's batched API (`Model.predict`).
//! - `python::pb_utils`: the official API (`TritonPythonModel.execute`).
//! - `crate::echo`: the native echo, no Python (outside `python/`).
//!
//! Process isolation runs these same strategies in a worker process, behind
//! the host's `isolation::WorkerInstance` (crate::host).

use super::batched::Batched;
use super::pb_utils::PbUtils;
use crate::echo::Echo;
use crate::engine::{ExecReport, Responder};
use crate::rules::request::InferRequest;

/// How one model instance executes its batches.
pub(crate) enum Strategy {
    Batched(Batched),
    PbUtils(PbUtils),
    Echo(Echo),
}

impl Strategy {
    /// Runs admitted `requests` (crate::admission), answering each through
    /// its responder (same index); the report is over `requests`.
    pub(crate) fn execute<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        responders: Vec<R>,
    ) -> ExecReport {
        assert_eq!(
            requests.len(),
            responders.len(),
            "one responder per request"
        );
        match self {
            Strategy::Batched(b) => b.execute(requests, responders),
            Strategy::PbUtils(p) => p.execute(requests, responders),
            Strategy::Echo(e) => e.execute(requests, responders),
        }
    }
}
