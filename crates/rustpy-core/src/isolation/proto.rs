//! The control channel between the backend and a worker: length-prefixed
//! JSON frames over a unix socketpair. Tensor bytes never travel here; they
//! sit in the shared memory and frames carry their offsets.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};
use crate::request::{CorrelationId, ParamValue};

/// Frames larger than this are a protocol error (tensors travel in shm).
const MAX_FRAME: usize = 256 << 20;

/// A request's id on the wire: its batch number above these bits, its index
/// in the batch below, so a response that comes after its batch's Done
/// still finds its request.
pub const REQUEST_BITS: u32 = 24;

pub fn request_id(batch: u64, index: usize) -> usize {
    ((batch as usize) << REQUEST_BITS) | index
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireInstance {
    pub name: String,
    pub kind: String,
    pub device_id: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireParam {
    S(String),
    I(i64),
    B(bool),
    D(f64),
}

impl From<&ParamValue> for WireParam {
    fn from(v: &ParamValue) -> Self {
        match v {
            ParamValue::String(s) => WireParam::S(s.clone()),
            ParamValue::Int(i) => WireParam::I(*i),
            ParamValue::Bool(b) => WireParam::B(*b),
            ParamValue::Double(d) => WireParam::D(*d),
        }
    }
}

impl From<WireParam> for ParamValue {
    fn from(v: WireParam) -> Self {
        match v {
            WireParam::S(s) => ParamValue::String(s),
            WireParam::I(i) => ParamValue::Int(i),
            WireParam::B(b) => ParamValue::Bool(b),
            WireParam::D(d) => ParamValue::Double(d),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireCorrelation {
    None,
    Int(u64),
    String(String),
}

impl From<&CorrelationId> for WireCorrelation {
    fn from(c: &CorrelationId) -> Self {
        match c {
            CorrelationId::None => WireCorrelation::None,
            CorrelationId::Int(i) => WireCorrelation::Int(*i),
            CorrelationId::String(s) => WireCorrelation::String(s.clone()),
        }
    }
}

impl From<WireCorrelation> for CorrelationId {
    fn from(c: WireCorrelation) -> Self {
        match c {
            WireCorrelation::None => CorrelationId::None,
            WireCorrelation::Int(i) => CorrelationId::Int(i),
            WireCorrelation::String(s) => CorrelationId::String(s),
        }
    }
}

/// A tensor's place in a shared-memory region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTensor {
    pub name: String,
    /// KServe name ("FP32").
    pub dtype: String,
    pub shape: Vec<i64>,
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRequest {
    pub id: String,
    pub correlation_id: WireCorrelation,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<WireTensor>,
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, WireParam)>,
}

/// Backend → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Load the model and create the instance (runs the user's `initialize`).
    Init {
        config_json: String,
        model_dir: String,
        version: u64,
        instance: WireInstance,
    },
    /// Instead of Init: run the model's `auto_complete_config`, answer, exit.
    AutoComplete {
        config_json: String,
        model_dir: String,
        version: u64,
    },
    /// One batch: every request's inputs are in the input region, which is
    /// at least `input_len` bytes long now.
    Execute {
        input_len: usize,
        requests: Vec<WireRequest>,
        /// This batch's number; [`FromWorker::Done`] pins and releases
        /// batches by it.
        #[serde(default)]
        batch: u64,
    },
    /// Run `finalize` and exit.
    Shutdown,
    /// The backend has copied the outputs of the [`FromWorker::Response`]
    /// whose `taken` is `token` out of the input region.
    Taken { token: u64 },
    /// The client cancelled request `request` (a request id as in
    /// [`FromWorker::Response`]): `is_cancelled()` is true from now on.
    Cancel { request: usize },
    /// Call the model's `is_ready()`; answered by [`FromWorker::ReadyAnswer`]
    /// with the same `call`.
    IsReady { call: u64 },
    /// The answer to a [`FromWorker::Call`] (not `Infer`).
    Reply {
        call: u64,
        result: std::result::Result<WireValue, (u32, String)>,
    },
    /// One response of a BLS request ([`ServerOp::Infer`]'s `stream`); the last is final.
    BlsResponse {
        call: u64,
        response: WireBlsResponse,
    },
}

/// A tensor with its bytes inline (BLS; batch tensors use shared memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOwnedTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

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

/// BLS tensors in a BLS region (isolation/bls.rs): one range from `start`
/// (the reader reads the file at the tensors' offsets, so it needs no
/// length of the region).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireShared {
    pub start: usize,
    pub tensors: Vec<WireTensor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireBlsResponse {
    pub outputs: Vec<WireOwnedTensor>,
    pub error: Option<(u32, String)>,
    pub parameters: Vec<(String, WireParam)>,
    pub is_final: bool,
    /// Large outputs: in the BLS output region instead of `outputs`.
    #[serde(default)]
    pub shared: Option<WireShared>,
}

/// What user code in a worker asks of the server (rustpy_core::server::ServerApi).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerOp {
    /// Replies once the request is queued (or refused, with the server's
    /// error); its responses then arrive as BlsResponse frames for `stream`.
    Infer {
        stream: u64,
        request: WireBlsRequest,
    },
    /// `ResponseIterator.cancel()`: cancel the BLS request of `stream`
    /// (a no-op once it completed).
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
    /// 0 increment, 1 set, 2 observe, 3 value (returned).
    MetricOp {
        metric: u64,
        op: u8,
        value: f64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireValue {
    Unit,
    Bool(bool),
    Id(u64),
    F64(f64),
}

pub fn tensor_to_wire(t: &crate::server::OwnedTensor) -> WireOwnedTensor {
    WireOwnedTensor {
        name: t.name.clone(),
        dtype: t.dtype.name().to_string(),
        shape: t.shape.clone(),
        data: t.data.clone(),
    }
}

pub fn tensor_from_wire(t: WireOwnedTensor) -> crate::error::Result<crate::server::OwnedTensor> {
    let dtype = crate::DataType::from_name(&t.dtype)
        .ok_or_else(|| Error::internal(format!("unknown data type '{}'", t.dtype)))?;
    Ok(crate::server::OwnedTensor {
        name: t.name,
        dtype,
        shape: t.shape,
        data: t.data,
    })
}

/// Worker → backend.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The instance is up; `is_ready`: the model defines `is_ready()`.
    Ready {
        #[serde(default)]
        is_ready: bool,
    },
    /// The answer of the model's `is_ready()` to [`ToWorker::IsReady`].
    ReadyAnswer {
        call: u64,
        result: std::result::Result<bool, (u32, String)>,
    },
    InitFailed {
        code: u32,
        message: String,
    },
    /// The answer to AutoComplete: the completed config JSON, if changed.
    AutoCompleted {
        result: std::result::Result<Option<String>, (u32, String)>,
    },
    /// One response of request `request` (`batch << REQUEST_BITS | index in
    /// the batch`); outputs are in the output region, which is at least
    /// `output_len` bytes long now. Only while the request's batch runs.
    Response {
        request: usize,
        outputs: Vec<WireTensor>,
        output_len: usize,
        is_final: bool,
        /// Outputs (indices into `outputs`) that are views of this batch's
        /// inputs: their offset is in the input region, nothing was copied.
        /// The backend copies them from there before it reads this batch's
        /// Done, so the range stays untouched until then.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        from_input: Vec<usize>,
        /// Set: the sender waits for [`ToWorker::Taken`] with this token
        /// before user code may change those bytes (pb_utils inputs are
        /// writable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taken: Option<u64>,
        /// The response's parameters (`InferenceResponse(parameters=...)`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<(String, WireParam)>,
    },
    /// A response sent after its batch's Done (a decoupled request a user
    /// thread answers later): the outputs travel inline, since the output
    /// region belongs to the batch running now.
    InlineResponse {
        request: usize,
        outputs: Vec<WireOwnedTensor>,
        is_final: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<(String, WireParam)>,
    },
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
    /// `execute` returned (user threads may still answer decoupled requests).
    Done {
        ok: Vec<bool>,
        rows: Vec<usize>,
        calls: usize,
        /// Nanoseconds since the worker received the batch.
        compute_ns: Option<(u64, u64)>,
        /// Python still holds views of this batch's inputs: the backend must
        /// not write into its range until the worker releases it.
        #[serde(default)]
        pinned: bool,
        /// Earlier pinned batches whose views Python has freed since.
        #[serde(default)]
        released: Vec<u64>,
        /// Requests (indices in the batch) the model asked to reschedule
        /// (`set_release_flags(RESCHEDULE)`): unanswered, released with
        /// Triton's RESCHEDULE flag.
        #[serde(default)]
        rescheduled: Vec<usize>,
    },
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
    /// region: their ranges (by `WireShared::start`) are free again.
    BlsRelease {
        starts: Vec<usize>,
    },
}

pub fn params_to_wire(parameters: &[(String, ParamValue)]) -> Vec<(String, WireParam)> {
    parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.into()))
        .collect()
}

pub fn params_from_wire(parameters: &[(String, WireParam)]) -> Vec<(String, ParamValue)> {
    parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect()
}

pub fn error_to_wire(e: &Error) -> (u32, String) {
    (e.code as u32, e.message.clone())
}

pub fn error_from_wire(code: u32, message: String) -> Error {
    Error::new(ErrorCode::from_code(code), message)
}

pub fn write_frame<T: Serialize, W: Write>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToWorker::Shutdown).unwrap();
        write_frame(
            &mut buf,
            &ToWorker::Execute {
                input_len: 64,
                requests: vec![],
                batch: 1,
            },
        )
        .unwrap();
        let mut r = io::Cursor::new(buf);
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(ToWorker::Shutdown)
        ));
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(ToWorker::Execute { input_len: 64, .. })
        ));
        assert!(read_frame::<ToWorker, _>(&mut r).unwrap().is_none());
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut r = io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(read_frame::<ToWorker, _>(&mut r).is_err());
    }
}
