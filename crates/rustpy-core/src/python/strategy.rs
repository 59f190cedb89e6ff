//! Execution strategies: how one model instance runs a batch. A model
//! instance holds one [`Strategy`]; each takes a batch of requests (an
//! unreadable one as its error) and one responder per request, answers
//! every request, and reports what happened.
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
use crate::error::Result;
use crate::rules::request::InferRequest;

/// How one model instance executes its batches.
pub(crate) enum Strategy {
    Batched(Batched),
    PbUtils(PbUtils),
    Echo(Echo),
}

impl Strategy {
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
            Strategy::Batched(b) => b.execute(requests, &mut responders),
            Strategy::PbUtils(p) => p.execute(requests, responders),
            Strategy::Echo(e) => e.execute(requests, &mut responders),
        }
    }
}
