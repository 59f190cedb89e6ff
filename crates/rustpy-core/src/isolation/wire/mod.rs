//! The wire between the backend and a worker: every message of the control
//! channel, with its encoding and its decoding side by side and tested
//! together, so the two ends cannot drift. Frames are length-prefixed JSON
//! over a unix socketpair ([`frame`]); tensor bytes travel in shared memory
//! and frames carry their offsets.
//!
//! | exchange | messages | module |
//! |---|---|---|
//! | a worker's life | Init, AutoComplete, Shutdown / Ready, InitFailed, AutoCompleted, Log | [`control`] |
//! | readiness | IsReady / ReadyAnswer | [`control`] |
//! | a batch | Execute, Cancel / Done | [`execute`] |
//! | a request's responses | Taken / Response, InlineResponse, Error, Finish | [`response`] |
//! | server calls | Reply, BlsResponse, BlsInputsRead / Call, BlsRelease | [`call`] |
//!
//! The worker runs user code, so everything it sends is untrusted (design
//! hazard 15). [`decode_from_worker`] and the functions that turn a
//! message's offsets into bytes ([`Response::resolve`],
//! [`WireRequest::to_request`], [`WireShared::check`]) are pure, never
//! panic, and allocate only in proportion to the bytes they were given:
//! the fuzz targets of issue 25 call them.

mod call;
mod control;
mod execute;
mod frame;
mod response;
mod values;

use serde::{Deserialize, Serialize};

pub use call::{metric_op, CallResult, ServerOp, WireBlsRequest, WireBlsResponse, WireValue};
pub use control::{ready_from_wire, ready_to_wire, AutoComplete, Init, ReadyResult, WireInstance};
pub use execute::{
    request_id, request_index, Done, Execute, InputLayout, WireRequest, REQUEST_BITS,
};
pub use frame::{
    decode_body, decode_from_worker, decode_to_worker, encode_frame, read_frame, write_frame,
    FrameStream, WireError, MAX_FRAME,
};
pub use response::{InlineResponse, OutputPlacement, Response, WrittenOutputs, ALIASED_PER_INPUT};
pub use values::{
    check_tensor, data_type, error_from_wire, error_to_wire, params_from_wire, params_to_wire,
    WireCorrelation, WireErrorValue, WireOwnedTensor, WireParam, WireShared, WireTensor,
};

/// Backend → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Init(Init),
    AutoComplete(AutoComplete),
    Execute(Execute),
    /// Run `finalize` and exit.
    Shutdown,
    /// The backend has copied the outputs of the [`Response`] whose `taken`
    /// is `token` out of the input region.
    Taken {
        token: u64,
    },
    /// The client cancelled request `request` (a wire request id):
    /// `is_cancelled()` is true from now on.
    Cancel {
        request: usize,
    },
    /// The answer to a [`FromWorker::Call`] (for `Infer`: the request was
    /// queued or refused).
    Reply {
        call: u64,
        result: CallResult,
    },
    /// One response of a BLS request (`ServerOp::Infer`'s `stream`); the
    /// last is final.
    BlsResponse {
        call: u64,
        response: WireBlsResponse,
    },
    /// Call the model's `is_ready()` (python_backend r26.03); answered by
    /// [`FromWorker::ReadyAnswer`] with the same `call`.
    IsReady {
        call: u64,
    },
    /// The server released a BLS request the backend accepted (an `Ok`
    /// Reply): it read its inputs in the BLS input region in place until
    /// now, and the ranges starting at `starts` are the worker's again.
    BlsInputsRead {
        starts: Vec<usize>,
    },
}

/// Worker → backend.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The instance is up; `is_ready`: the model defines `is_ready()`.
    Ready {
        #[serde(default)]
        is_ready: bool,
    },
    /// What the model's `is_ready()` answered to [`ToWorker::IsReady`].
    ReadyAnswer {
        call: u64,
        result: ReadyResult,
    },
    InitFailed {
        code: u32,
        message: String,
    },
    /// The answer to AutoComplete: the completed config JSON, if changed.
    AutoCompleted {
        result: Result<Option<String>, WireErrorValue>,
    },
    Response(Response),
    InlineResponse(InlineResponse),
    Error {
        request: usize,
        code: u32,
        message: String,
        is_final: bool,
    },
    /// Ends a streamed request without a further response.
    Finish {
        request: usize,
    },
    Done(Done),
    Log {
        level: u32,
        file: String,
        line: u32,
        message: String,
    },
    /// User code asks the server for something (BLS, model control, metrics).
    Call {
        call: u64,
        op: ServerOp,
    },
    /// The worker copied these BLS responses' outputs out of the BLS output
    /// region: the ranges starting at these offsets (a response's
    /// `WireShared::start` and each tensor's offset: an output the called
    /// model wrote in place has a range of its own) are free again.
    BlsRelease {
        starts: Vec<usize>,
    },
}

impl From<WireError> for crate::error::Error {
    fn from(e: WireError) -> Self {
        crate::error::Error::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a worker sends, decoding returns; it never panics.
        #[test]
        fn any_bytes_from_a_worker_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_from_worker(&bytes);
            let _ = decode_from_worker(&frame_of(&bytes));
        }

        /// A well-formed Response with any numbers resolves or fails cleanly.
        #[test]
        fn any_response_resolves_or_fails_cleanly(
            offset in any::<usize>(), len in any::<usize>(), from_input in any::<bool>(),
            output_len in 0usize..256, input_len in 0usize..256,
        ) {
            let body = format!(
                "{{\"Response\":{{\"request\":1,\"outputs\":[{{\"name\":\"O\",\"dtype\":\"UINT8\",\"shape\":[1],\"offset\":{offset},\"len\":{len}}}],\"output_len\":0,\"is_final\":true,\"from_input\":{}}}}}",
                if from_input { "[0]" } else { "[]" }
            );
            let Ok(FromWorker::Response(r)) = decode_from_worker(&frame_of(body.as_bytes())) else {
                panic!("a valid Response did not decode");
            };
            let (output, input) = (vec![0u8; output_len], vec![0u8; input_len]);
            let _ = r.input_end();
            if let Ok(slices) = r.resolve(&output, &input) {
                prop_assert!(offset.checked_add(len).is_some());
                prop_assert_eq!(slices[0].data.len(), len);
            }
        }
    }
}
