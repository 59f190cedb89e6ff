//! rustpy's execution core: the model configuration it needs, data types,
//! batching rules and plans (`batch`), one executor per model instance
//! (`exec`: the batched API and the official pb_utils API in `python`, the
//! native echo), the Python bridge (`python`), the response-stream contract
//! (`engine`), and process isolation (`isolation`). It knows nothing of
//! Triton's C API, so the backend and the `rustpy` CLI share it and tests
//! reach it without a server. File by file: docs/architecture.md.
//!
//! `unsafe` is denied crate-wide and allowed only in `python::numpy_io`
//! (numpy's C API) and `isolation::sys` (memfd, mmap, process spawning),
//! where every unsafe block carries a `// SAFETY:` comment.

#![deny(unsafe_code)]

pub mod batch;
pub mod bytes;
pub mod checkpoint;
pub mod constants;
mod dtype;
mod engine;
pub mod error;
pub(crate) mod exec;
pub mod isolation;
pub mod local;
pub mod params;
pub mod python;
mod ragged;
pub mod readiness;
pub mod request;
pub mod server;
mod spec;

pub use dtype::DataType;
pub use engine::{
    ExecReport, Outcome, OutputSlice, Responder, ResponseParameters, ResponseSink, ResponseStream,
};
pub use error::{Error, ErrorCode, Result};
pub use request::{CorrelationId, InferRequest, InputTensor, ParamValue};
pub use spec::{ModelSpec, TensorSpec};
