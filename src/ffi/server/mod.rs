//! The core's `ServerApi` on Triton's in-process server API, used when model
//! code calls back into the server: BLS inference ([`bls`]), model control
//! ([`model_control`]) and custom metrics ([`metrics`], which also holds
//! [`TritonRecorder`], rustpy's own metrics on Triton's registry), one file each. This
//! file holds the server handle they share and routes each trait method to
//! its file.

mod bls;
mod metrics;
mod model_control;

pub(crate) use metrics::TritonRecorder;

use std::sync::Arc;

use crossbeam::channel::Sender;
use rustpy_core::server::{
    BlsCancel, BlsRequest, BlsResponse, MetricFamily, MetricKind, ServerApi,
};
use rustpy_core::Error;

use super::handles::Model;
use super::{check, raw};

type Result<T> = std::result::Result<T, Error>;

/// The server the backend runs in, and the allocator for BLS outputs.
pub(crate) struct TritonServerApi {
    server: *mut raw::TRITONSERVER_Server,
    allocator: *mut raw::TRITONSERVER_ResponseAllocator,
}

// SAFETY: the server object is thread-safe and lives as long as the process
// serves; the allocator is immutable after creation and only read by Triton.
unsafe impl Send for TritonServerApi {}
// SAFETY: as above.
unsafe impl Sync for TritonServerApi {}

impl TritonServerApi {
    pub(crate) fn new(model: Model) -> Result<Arc<Self>> {
        let mut server = std::ptr::null_mut();
        // SAFETY: live model handle; the server outlives every model.
        check(unsafe { raw::TRITONBACKEND_ModelServer(model.0, &mut server) })?;
        let allocator = bls::new_allocator()?;
        Ok(Arc::new(TritonServerApi { server, allocator }))
    }
}

impl ServerApi for TritonServerApi {
    fn infer(&self, request: BlsRequest, responses: Sender<BlsResponse>) -> Result<BlsCancel> {
        bls::infer(self, request, responses)
    }

    fn load_model(&self, name: &str, config_json: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        model_control::load(self, name, config_json, files)
    }

    fn unload_model(&self, name: &str, unload_dependents: bool) -> Result<()> {
        model_control::unload(self, name, unload_dependents)
    }

    fn is_model_ready(&self, name: &str, version: i64) -> Result<bool> {
        model_control::is_ready(self, name, version)
    }

    fn is_model_decoupled(&self, name: &str, version: i64) -> Result<bool> {
        model_control::is_decoupled(self, name, version)
    }

    fn metric_family(
        &self,
        name: &str,
        description: &str,
        kind: MetricKind,
    ) -> Result<Arc<dyn MetricFamily>> {
        metrics::family(name, description, kind)
    }
}
