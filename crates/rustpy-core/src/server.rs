//! What user code may ask of the server it runs in: in-process inference
//! (BLS), model control and custom metrics. The backend implements this on
//! Triton's server API; elsewhere (the CLI) there is no server and these
//! calls fail with a clear error.

use std::sync::{Arc, OnceLock};

use crossbeam::channel::Sender;

use crate::error::{Error, ErrorCode, Result};
use crate::rules::dtype::DataType;
use crate::rules::request::{CorrelationId, ParamValue};
use crate::rules::shared::SharedMemory;
use crate::rules::tensor::TensorBuffer;

/// A tensor with its own storage.
#[derive(Debug, Clone)]
pub struct OwnedTensor {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl OwnedTensor {
    /// The data as a buffer of host memory the tensor owns.
    pub fn buffer(&self) -> TensorBuffer<'_> {
        TensorBuffer::owned(&self.data)
    }
}

/// The bytes of an [`OwnedTensor`]: a buffer of its own, or a range of a
/// shared region that another party reads in place (a process-isolated
/// caller's BLS region: the called model writes its outputs there, and
/// no copy follows).
pub enum TensorData {
    Owned(Vec<u8>),
    Placed(PlacedBytes),
}

impl TensorData {
    /// The bytes as a buffer of their own (a placed range is copied out).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            TensorData::Owned(v) => v,
            TensorData::Placed(p) => crate::buffers::copy_of(p.bytes()),
        }
    }

    /// Done with the bytes: a buffer of their own goes back for reuse
    /// (`crate::buffers`), a placed range is let go.
    pub fn recycle(self) {
        if let TensorData::Owned(v) = self {
            crate::buffers::give(v);
        }
    }

    /// The range of a shared region these bytes are, if they are one.
    pub fn placed(&self) -> Option<&PlacedBytes> {
        match self {
            TensorData::Owned(_) => None,
            TensorData::Placed(p) => Some(p),
        }
    }
}

impl std::ops::Deref for TensorData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TensorData::Owned(v) => v,
            TensorData::Placed(p) => p.bytes(),
        }
    }
}

impl From<Vec<u8>> for TensorData {
    fn from(v: Vec<u8>) -> TensorData {
        TensorData::Owned(v)
    }
}

impl FromIterator<u8> for TensorData {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> TensorData {
        TensorData::Owned(bytes.into_iter().collect())
    }
}

/// Equal when the bytes are.
impl PartialEq for TensorData {
    fn eq(&self, other: &TensorData) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<u8>> for TensorData {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl Default for TensorData {
    fn default() -> TensorData {
        TensorData::Owned(Vec::new())
    }
}

impl Clone for TensorData {
    /// A clone has bytes of its own.
    fn clone(&self) -> TensorData {
        TensorData::Owned(self.to_vec())
    }
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorData::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            TensorData::Placed(p) => write!(f, "Placed({}+{})", p.offset, p.len),
        }
    }
}

/// `len` bytes at `offset` of a shared region, held (not reused by whoever
/// places ranges there) until `hold` is dropped.
pub struct PlacedBytes {
    region: Arc<dyn SharedMemory>,
    offset: usize,
    len: usize,
    hold: Box<dyn std::any::Any + Send + Sync>,
}

impl PlacedBytes {
    /// `None` when the range does not lie inside the region.
    pub fn new(
        region: Arc<dyn SharedMemory>,
        offset: usize,
        len: usize,
        hold: Box<dyn std::any::Any + Send + Sync>,
    ) -> Option<PlacedBytes> {
        let inside = offset
            .checked_add(len)
            .is_some_and(|end| end <= region.view_bytes().len());
        inside.then_some(PlacedBytes {
            region,
            offset,
            len,
            hold,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.region.view_bytes()[self.offset..self.offset + self.len]
    }

    /// Copies `bytes` (at most the range's length) to the range's start;
    /// false when the region takes no writes.
    pub fn write(&self, bytes: &[u8]) -> bool {
        let n = bytes.len().min(self.len);
        self.region.write(self.offset, &bytes[..n])
    }

    /// Keeps only the first `len` bytes (the range stays held whole).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Where the bytes lie in their region.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What holds the range (its placer's guard).
    pub fn hold(&self) -> &(dyn std::any::Any + Send + Sync) {
        &*self.hold
    }
}

/// An inference request user code sends to another model.
#[derive(Debug, Clone, Default)]
pub struct BlsRequest {
    pub model_name: String,
    /// -1 for the server's choice.
    pub model_version: i64,
    pub request_id: String,
    pub correlation_id: CorrelationId,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<OwnedTensor>,
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, ParamValue)>,
    /// Where the called model may write large outputs directly (a
    /// process-isolated caller's BLS output region); `None`: buffers of
    /// their own.
    pub outputs_to: Option<Arc<dyn OutputArena>>,
}

/// Memory a BLS response's outputs may be written into directly, so that
/// the caller reads them where the called model wrote them.
pub trait OutputArena: Send + Sync + std::fmt::Debug {
    /// A range of `len` bytes (its previous contents: the caller's own
    /// earlier answers), or `None`: the output gets a buffer of its own
    /// (too small to be worth a range, or the arena is full).
    fn place(&self, len: usize) -> Option<PlacedBytes>;
}

/// One response to a [`BlsRequest`]; the last one has `is_final` set (and
/// may carry nothing else).
#[derive(Debug, Clone, Default)]
pub struct BlsResponse {
    pub outputs: Vec<OwnedTensor>,
    pub error: Option<Error>,
    pub parameters: Vec<(String, ParamValue)>,
    pub is_final: bool,
}

pub use crate::constants::MetricKind;

pub trait Metric: Send + Sync {
    fn increment(&self, value: f64) -> Result<()>;
    fn set(&self, value: f64) -> Result<()>;
    fn observe(&self, value: f64) -> Result<()>;
    fn value(&self) -> Result<f64>;
}

pub trait MetricFamily: Send + Sync {
    fn metric(
        &self,
        labels: &[(String, String)],
        buckets: Option<&[f64]>,
    ) -> Result<Box<dyn Metric>>;
}

/// Cancels one BLS request in flight (`ResponseIterator.cancel()`): the
/// server's request cancellation, after which the callee sees
/// `is_cancelled()` and the request ends (typically with CANCELLED). A no-op
/// once the request has completed.
pub type BlsCancel = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// A [`BlsCancel`] for requests that complete before they are returned
/// (nothing left to cancel).
pub fn nothing_to_cancel() -> BlsCancel {
    Box::new(|| Ok(()))
}

pub trait ServerApi: Send + Sync {
    /// Starts `request`; every response goes to `responses`, the last with
    /// `is_final`. Returns once the request is queued, with the handle that
    /// cancels it.
    fn infer(&self, request: BlsRequest, responses: Sender<BlsResponse>) -> Result<BlsCancel>;
    /// Where a BLS request's large inputs may be written as they are made
    /// (a worker's BLS input region), so that `infer` copies them no more.
    fn input_arena(&self) -> Option<Arc<dyn OutputArena>> {
        None
    }
    /// Loads (or reloads) a model, optionally with a config JSON override and
    /// files (`file:<relative path>` → content) for an override model dir.
    fn load_model(&self, name: &str, config_json: &str, files: &[(String, Vec<u8>)]) -> Result<()>;
    fn unload_model(&self, name: &str, unload_dependents: bool) -> Result<()>;
    fn is_model_ready(&self, name: &str, version: i64) -> Result<bool>;
    /// Whether the model uses the decoupled transaction policy.
    fn is_model_decoupled(&self, name: &str, version: i64) -> Result<bool>;
    fn metric_family(
        &self,
        name: &str,
        description: &str,
        kind: MetricKind,
    ) -> Result<Arc<dyn MetricFamily>>;
}

static SERVER: OnceLock<Arc<dyn ServerApi>> = OnceLock::new();

/// Installs the server API (once per process; later calls are ignored).
pub fn set_server_api(api: Arc<dyn ServerApi>) {
    let _ = SERVER.set(api);
}

/// The server API, or an error saying there is no server (e.g. `rustpy run`).
pub fn server_api() -> Result<&'static Arc<dyn ServerApi>> {
    SERVER.get().ok_or_else(|| {
        Error::new(
            ErrorCode::Unavailable,
            "this call needs a running Triton server (BLS, model control and metrics are not available in `rustpy run`)",
        )
    })
}
