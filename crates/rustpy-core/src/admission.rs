//! Admission: which requests of an execution may run at all, decided once,
//! before any strategy (or a worker process) sees them. A request that
//! cannot be read, that the client cancelled, or that does not fit the
//! model's configuration (device memory, unknown or missing inputs, data
//! type, shape, byte size, BYTES encoding, requested outputs) is answered
//! here with the reason; the others go on, with their batch rows.
//!
//! Strategies see only admitted requests and report over them; the
//! [`Admitted`] batch maps that report back to the execution's order.

use crate::engine::{ExecReport, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::rules::batch;
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

/// The admitted requests of one execution, in order, and where each came from.
#[derive(Debug)]
pub struct Admitted<'r, 'a> {
    /// What strategies run.
    pub requests: Vec<&'r InferRequest<'a>>,
    /// Each admitted request's position in the execution.
    positions: Vec<usize>,
    /// Batch rows of every request of the execution (0 for one refused).
    rows: Vec<usize>,
}

impl Admitted<'_, '_> {
    /// The execution's report, from a strategy's report over the admitted
    /// requests (same order): outcomes go back to their positions, refused
    /// requests count as failed, rows are admission's.
    pub fn report(&self, inner: ExecReport) -> ExecReport {
        let mut report = ExecReport {
            calls: inner.calls,
            compute_start: inner.compute_start,
            compute_end: inner.compute_end,
            stats: inner.stats,
            ..ExecReport::new(self.rows.len())
        };
        report.rows.clone_from(&self.rows);
        for (&at, outcome) in self.positions.iter().zip(inner.outcomes) {
            report.outcomes[at] = outcome;
        }
        report
    }
}

/// Admits an execution's `requests` (one responder each, same index):
/// answers every request that may not run, and returns the others with
/// their responders.
pub fn admit<'r, 'a, R: Responder>(
    spec: &ModelSpec,
    requests: &'r [Result<InferRequest<'a>>],
    responders: Vec<R>,
) -> (Admitted<'r, 'a>, Vec<R>) {
    assert_eq!(
        requests.len(),
        responders.len(),
        "one responder per request"
    );
    let mut admitted = Admitted {
        requests: Vec::with_capacity(requests.len()),
        positions: Vec::with_capacity(requests.len()),
        rows: vec![0; requests.len()],
    };
    let mut kept = Vec::with_capacity(requests.len());
    for (at, (req, mut responder)) in requests.iter().zip(responders).enumerate() {
        let req = match req {
            Ok(req) => req,
            Err(e) => {
                responder.send_error(e);
                continue;
            }
        };
        match admit_one(spec, req, &responder) {
            Ok(rows) => {
                admitted.rows[at] = rows;
                admitted.positions.push(at);
                admitted.requests.push(req);
                kept.push(responder);
            }
            Err(e) => responder.send_error(&e),
        }
    }
    (admitted, kept)
}

/// Whether one readable request may run: not cancelled and fitting the
/// model's configuration; the batch rows it contributes, or why not.
fn admit_one<R: Responder>(
    spec: &ModelSpec,
    req: &InferRequest<'_>,
    responder: &R,
) -> Result<usize> {
    if responder.is_cancelled() {
        return Err(cancelled(spec));
    }
    batch::validate_request(spec, req)
}

/// The error of a request the client cancelled.
pub(crate) fn cancelled(spec: &ModelSpec) -> Error {
    Error::new(
        ErrorCode::Cancelled,
        format!("model '{}': request cancelled", spec.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outcome;
    use crate::engine::{OutputSlice, ResponseSink, ResponseStream};
    use crate::rules::dtype::DataType;
    use crate::rules::request::InputTensor;
    use crate::rules::spec::TensorSpec;
    use crate::rules::tensor::TensorBuffer;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink {
        errors: Arc<Mutex<Vec<String>>>,
        cancelled: bool,
    }

    impl ResponseSink for Sink {
        fn send(&mut self, _: &[OutputSlice<'_>], _: bool) -> Result<()> {
            Ok(())
        }
        fn send_error(&mut self, error: &Error, _: bool) {
            self.errors.lock().unwrap().push(error.message.clone());
        }
        fn send_final(&mut self) {}
        fn is_cancelled(&self) -> bool {
            self.cancelled
        }
    }

    fn spec() -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            version: 1,
            max_batch_size: 4,
            inputs: vec![TensorSpec {
                name: "X".into(),
                dtype: DataType::Fp32,
                dims: vec![1],
                optional: false,
            }],
            outputs: vec![],
            decoupled: false,
            ragged: Default::default(),
        }
    }

    fn request(rows: i64, buffer: TensorBuffer<'_>) -> InferRequest<'_> {
        InferRequest {
            inputs: vec![InputTensor {
                name: "X".into(),
                dtype: DataType::Fp32,
                shape: vec![rows, 1],
                buffers: vec![buffer],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn refused_requests_are_answered_once_and_the_report_maps_back() {
        let two = [0u8; 8];
        let requests = vec![
            Err(Error::invalid_arg("unreadable")),
            Ok(request(2, TensorBuffer::borrowed(&two))),
            Ok(request(2, TensorBuffer::device(0, 8))),
            Ok(request(1, TensorBuffer::borrowed(&two[..4]))),
            Ok(request(1, TensorBuffer::borrowed(&two[..4]))),
        ];
        let sinks: Vec<Sink> = (0..5)
            .map(|i| Sink {
                cancelled: i == 4,
                ..Default::default()
            })
            .collect();
        let responders: Vec<_> = sinks.iter().cloned().map(ResponseStream::new).collect();
        let (admitted, kept) = admit(&spec(), &requests, responders);
        assert_eq!(admitted.requests.len(), 2);
        assert_eq!(kept.len(), 2);
        let errors: Vec<Vec<String>> = sinks
            .iter()
            .map(|s| s.errors.lock().unwrap().clone())
            .collect();
        assert_eq!(errors[0], ["unreadable"]);
        assert!(errors[1].is_empty() && errors[3].is_empty());
        assert!(
            errors[2][0].contains("input 'X': the tensor is in GPU memory"),
            "{errors:?}"
        );
        assert_eq!(errors[4], ["model 'm': request cancelled"]);
        // The strategy answers the two it saw (kept's drops would fail them).
        for mut r in kept {
            r.detach();
        }
        let inner = ExecReport {
            outcomes: vec![Outcome::Answered, Outcome::Rescheduled],
            calls: 1,
            ..ExecReport::new(2)
        };
        let report = admitted.report(inner);
        assert_eq!(
            report.outcomes,
            [
                Outcome::Failed,
                Outcome::Answered,
                Outcome::Failed,
                Outcome::Rescheduled,
                Outcome::Failed
            ]
        );
        assert_eq!(report.rows, [0, 2, 0, 1, 0]);
        assert_eq!(report.calls, 1);
    }
}
