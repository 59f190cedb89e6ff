//! What user code may ask of the server it runs in: in-process inference
//! (BLS), model control and custom metrics. The backend implements this on
//! Triton's server API; elsewhere (the CLI) there is no server and these
//! calls fail with a clear error.

use std::sync::{Arc, OnceLock};

use crossbeam::channel::Sender;

use crate::error::{Error, ErrorCode, Result};
use crate::rules::dtype::DataType;
use crate::rules::request::{CorrelationId, ParamValue};
use crate::rules::tensor::TensorBuffer;

/// A tensor with its own storage.
#[derive(Debug, Clone)]
pub struct OwnedTensor {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// The data as a buffer of host memory the tensor owns.
    pub fn buffer(&self) -> TensorBuffer<'_> {
        TensorBuffer::owned(&self.data)
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
