//! Admission: whether a request may run at all (not cancelled, fitting the
//! model's configuration), decided before any strategy sees it.

use crate::engine::Responder;
use crate::error::{Error, ErrorCode};
use crate::rules::batch;
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

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

/// The error of a request the client cancelled.
pub(crate) fn cancelled(spec: &ModelSpec) -> Error {
    Error::new(
        ErrorCode::Cancelled,
        format!("model '{}': request cancelled", spec.name),
    )
}
