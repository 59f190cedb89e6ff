//! Server calls, worker → backend: `FromWorker::Call` carries a
//! [`ServerOp`] (BLS, model control, metrics); the backend answers with
//! `ToWorker::Reply` and, for a BLS request, one `ToWorker::BlsResponse` per
//! response. A BLS request's inputs (a response's outputs) ride inline or,
//! when large, in a BLS region ([`WireShared`]); `FromWorker::BlsRelease`
//! frees the backend's ranges the worker has read, and
//! `ToWorker::BlsInputsRead` the worker's input ranges once the server
//! released an accepted request (it reads them in place until then).

use serde::{Deserialize, Serialize};

use super::values::{
    error_from_wire, error_to_wire, params_from_wire, params_to_wire, WireCorrelation,
    WireErrorValue, WireOwnedTensor, WireParam, WireShared,
};
use super::WireError;
use crate::error::Error;
use crate::server::{BlsRequest, BlsResponse, OutputArena, OwnedTensor};

/// What user code in a worker asks of the server (rustpy_core::server::ServerApi).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerOp {
    /// Replies once the request is queued (or refused, with the server's
    /// error); its responses then arrive as BlsResponse frames for `stream`.
    Infer {
        stream: u64,
        request: WireBlsRequest,
    },
    /// `ResponseIterator.cancel()` (python_backend r25.04): cancel the BLS
    /// request of `stream`; a no-op once it completed.
    CancelInfer {
        stream: u64,
    },
    LoadModel {
        name: String,
        config_json: String,
        files: Vec<(String, Vec<u8>)>,
    },
    UnloadModel {
        name: String,
        unload_dependents: bool,
    },
    IsModelReady {
        name: String,
        version: i64,
    },
    IsModelDecoupled {
        name: String,
        version: i64,
    },
    /// Returns the new family's id.
    MetricFamily {
        name: String,
        description: String,
        kind: u32,
    },
    /// Returns the new metric's id.
    Metric {
        family: u64,
        labels: Vec<(String, String)>,
        buckets: Option<Vec<f64>>,
    },
    /// One of [`metric_op`]'s operations.
    MetricOp {
        metric: u64,
        op: u8,
        value: f64,
    },
}

/// `ServerOp::MetricOp`'s `op`.
pub mod metric_op {
    pub const INCREMENT: u8 = 0;
    pub const SET: u8 = 1;
    pub const OBSERVE: u8 = 2;
    /// Returns the metric's value (any other code does too).
    pub const VALUE: u8 = 3;
}

/// A call's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireValue {
    Unit,
    Bool(bool),
    Id(u64),
    F64(f64),
}

pub type CallResult = Result<WireValue, WireErrorValue>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireBlsRequest {
    pub model_name: String,
    pub model_version: i64,
    pub request_id: String,
    pub correlation_id: WireCorrelation,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<WireOwnedTensor>,
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, WireParam)>,
    /// Large inputs: in the worker's BLS input region instead of `inputs`.
    #[serde(default)]
    pub shared: Option<WireShared>,
}

impl WireBlsRequest {
    /// Worker: `request` with its inputs inline, or (`shared`) already
    /// written into the BLS input region.
    pub fn new(request: BlsRequest, shared: Option<WireShared>) -> WireBlsRequest {
        WireBlsRequest {
            inputs: match shared {
                Some(_) => Vec::new(),
                None => request.inputs.iter().map(WireOwnedTensor::from).collect(),
            },
            shared,
            model_name: request.model_name,
            model_version: request.model_version,
            request_id: request.request_id,
            correlation_id: (&request.correlation_id).into(),
            flags: request.flags,
            timeout_us: request.timeout_us,
            requested_outputs: request.requested_outputs,
            parameters: params_to_wire(&request.parameters),
        }
    }

    /// Backend: the inline inputs (for a request without `shared`), each
    /// checked against its shape ([`super::check_tensor`]).
    pub fn take_inline_inputs(&mut self) -> Result<Vec<OwnedTensor>, WireError> {
        std::mem::take(&mut self.inputs)
            .into_iter()
            .map(|t| {
                let t = t.into_tensor()?;
                super::check_tensor(&t.name, t.dtype, &t.shape, &t.data)?;
                Ok(t)
            })
            .collect()
    }

    /// Backend: the bytes its inputs take once read (inline, or claimed in
    /// the BLS input region), before anything is read.
    pub fn input_bytes(&self) -> usize {
        let inline = self.inputs.iter().map(|t| t.data.len());
        let shared = self
            .shared
            .iter()
            .flat_map(|s| s.tensors.iter().map(|t| t.len));
        inline.chain(shared).fold(0, usize::saturating_add)
    }

    /// Backend: the request, with `inputs` read inline or from the region,
    /// its large outputs written into `outputs_to` (the worker's BLS output region).
    pub fn into_request(
        self,
        inputs: Vec<OwnedTensor>,
        outputs_to: Option<std::sync::Arc<dyn OutputArena>>,
    ) -> BlsRequest {
        BlsRequest {
            model_name: self.model_name,
            model_version: self.model_version,
            request_id: self.request_id,
            correlation_id: self.correlation_id.into(),
            flags: self.flags,
            timeout_us: self.timeout_us,
            inputs,
            requested_outputs: self.requested_outputs,
            parameters: params_from_wire(self.parameters),
            outputs_to,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireBlsResponse {
    pub outputs: Vec<WireOwnedTensor>,
    pub error: Option<WireErrorValue>,
    pub parameters: Vec<(String, WireParam)>,
    pub is_final: bool,
    /// Large outputs: in the BLS output region instead of `outputs`.
    #[serde(default)]
    pub shared: Option<WireShared>,
}

impl WireBlsResponse {
    /// Backend: `r` with its outputs inline (`placed` is `None`), or in the
    /// BLS output region; if placing them failed, that error is sent
    /// (unless `r` carries one already).
    pub fn new(r: &BlsResponse, placed: Option<Result<WireShared, Error>>) -> WireBlsResponse {
        let mut error = r.error.as_ref().map(error_to_wire);
        let (mut outputs, mut shared) = (Vec::new(), None);
        match placed {
            None => outputs = r.outputs.iter().map(WireOwnedTensor::from).collect(),
            Some(Ok(s)) => shared = Some(s),
            Some(Err(e)) => error = error.or(Some(error_to_wire(&e))),
        }
        WireBlsResponse {
            outputs,
            error,
            parameters: params_to_wire(&r.parameters),
            is_final: r.is_final,
            shared,
        }
    }

    /// Worker: the response with its inline outputs (an output of unknown
    /// type becomes the response's error).
    pub fn into_response(self) -> BlsResponse {
        let mut error = self.error.map(error_from_wire);
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for t in self.outputs {
            match t.into_tensor() {
                Ok(t) => outputs.push(t),
                Err(e) => error = Some(Error::internal(e.to_string())),
            }
        }
        BlsResponse {
            outputs,
            error,
            parameters: params_from_wire(self.parameters),
            is_final: self.is_final,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::WireTensor;
    use super::super::{decode_from_worker, decode_to_worker, encode_frame, FromWorker, ToWorker};
    use super::*;
    use crate::request::{CorrelationId, ParamValue};
    use crate::DataType;

    fn tensor(name: &str, data: Vec<u8>) -> OwnedTensor {
        OwnedTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![data.len() as i64],
            data: data.into(),
        }
    }

    fn call_sent(op: ServerOp) -> ServerOp {
        let frame = encode_frame(&FromWorker::Call { call: 4, op }).unwrap();
        match decode_from_worker(&frame).unwrap() {
            FromWorker::Call { call: 4, op } => op,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bls_request_round_trips_inline_and_shared() {
        let request = BlsRequest {
            model_name: "m".into(),
            model_version: -1,
            request_id: "id".into(),
            correlation_id: CorrelationId::String("s".into()),
            flags: 2,
            timeout_us: 5,
            inputs: vec![tensor("IN", vec![1, 2, 3])],
            requested_outputs: vec!["OUT".into()],
            parameters: vec![("k".into(), ParamValue::Int(1))],
            outputs_to: None,
        };
        let ServerOp::Infer {
            stream: 8,
            request: mut wire,
        } = call_sent(ServerOp::Infer {
            stream: 8,
            request: WireBlsRequest::new(request.clone(), None),
        })
        else {
            panic!("not an Infer");
        };
        assert!(wire.shared.is_none());
        let inputs = wire.take_inline_inputs().unwrap();
        let back = wire.into_request(inputs, None);
        assert_eq!(back.model_name, request.model_name);
        assert_eq!(back.correlation_id, request.correlation_id);
        assert_eq!(back.parameters, request.parameters);
        assert_eq!(back.inputs[0].data, request.inputs[0].data);
        // Shared: no inline bytes, the region's place instead.
        let shared = WireShared {
            start: 64,
            tensors: vec![WireTensor {
                name: "IN".into(),
                dtype: "UINT8".into(),
                shape: vec![3],
                offset: 64,
                len: 3,
            }],
        };
        let wire = WireBlsRequest::new(request, Some(shared.clone()));
        assert!(wire.inputs.is_empty());
        assert_eq!(wire.shared, Some(shared));
    }

    #[test]
    fn a_bls_response_round_trips_and_a_placement_failure_becomes_its_error() {
        let response = BlsResponse {
            outputs: vec![tensor("OUT", vec![7; 5])],
            error: None,
            parameters: vec![("p".into(), ParamValue::Bool(true))],
            is_final: true,
        };
        let frame = encode_frame(&ToWorker::BlsResponse {
            call: 3,
            response: WireBlsResponse::new(&response, None),
        })
        .unwrap();
        let ToWorker::BlsResponse {
            call: 3,
            response: wire,
        } = decode_to_worker(&frame).unwrap()
        else {
            panic!("not a BlsResponse");
        };
        let back = wire.into_response();
        assert!(back.error.is_none() && back.is_final);
        assert_eq!(back.outputs[0].data, vec![7; 5]);
        assert_eq!(back.parameters, response.parameters);

        let failed = WireBlsResponse::new(&response, Some(Err(Error::internal("no room"))));
        assert!(failed.outputs.is_empty());
        assert_eq!(failed.into_response().error.unwrap().message, "no room");
        let mut unknown = WireBlsResponse::new(&response, None);
        unknown.outputs[0].dtype = "NOPE".into();
        assert!(unknown.into_response().error.is_some());
    }

    #[test]
    fn every_server_op_and_reply_round_trips() {
        let ops = [
            ServerOp::CancelInfer { stream: 8 },
            ServerOp::LoadModel {
                name: "m".into(),
                config_json: "{}".into(),
                files: vec![("1/model.py".into(), b"x".to_vec())],
            },
            ServerOp::UnloadModel {
                name: "m".into(),
                unload_dependents: true,
            },
            ServerOp::IsModelReady {
                name: "m".into(),
                version: 2,
            },
            ServerOp::IsModelDecoupled {
                name: "m".into(),
                version: -1,
            },
            ServerOp::MetricFamily {
                name: "f".into(),
                description: "d".into(),
                kind: 1,
            },
            ServerOp::Metric {
                family: 1,
                labels: vec![("a".into(), "b".into())],
                buckets: Some(vec![0.5, 1.0]),
            },
            ServerOp::MetricOp {
                metric: 2,
                op: metric_op::OBSERVE,
                value: 0.25,
            },
        ];
        for op in ops {
            let before = format!("{op:?}");
            assert_eq!(format!("{:?}", call_sent(op)), before);
        }
        for result in [
            Ok(WireValue::Unit),
            Ok(WireValue::Bool(true)),
            Ok(WireValue::Id(3)),
            Ok(WireValue::F64(1.5)),
            Err((4, "gone".to_string())),
        ] {
            let frame = encode_frame(&ToWorker::Reply {
                call: 9,
                result: result.clone(),
            })
            .unwrap();
            match decode_to_worker(&frame).unwrap() {
                ToWorker::Reply { call: 9, result: r } => assert_eq!(r, result),
                other => panic!("{other:?}"),
            }
        }
    }
}
