//! rustpy's execution core. It knows nothing of Triton's C API, so the
//! backend and the `rustpy` CLI share it and tests reach it without a
//! server. Its layers, bottom up (file by file: docs/architecture.md):
//!
//! - `rules`: the Python-free part: requests and their tensor memory, data
//!   types, the BYTES codec, the model spec, batching and ragged plans,
//!   typed parameters. Plus `error`, `constants` and `engine` (the
//!   response-stream contract).
//! - `admission`: whether a request may run, decided once per execution.
//! - `python`: the Rust↔Python boundary: the interpreter, model loading, the
//!   execution strategies of the two Python APIs; `echo`: the native one.
//! - `isolation`: process isolation (the worker processes).
//! - `host`: where a model runs (in-process or in workers), for the backend
//!   and the CLI alike; `local`: running a model without Triton.
//! - `metrics`: rustpy's own metric families, the recorder interface the
//!   backend implements on Triton's registry, and what an execution counted.
//!
//! `unsafe` is denied crate-wide and allowed only in `python::numpy_io`
//! (numpy's C API), `rules::shared` (the declaration of the unsafe trait
//! `SharedMemory`) and `isolation::sys` (memfd, mmap, process spawning),
//! where every unsafe block carries a `// SAFETY:` comment.

#![deny(unsafe_code)]

pub(crate) mod admission;
pub mod buffers;
pub mod checkpoint;
pub mod constants;
pub mod echo;
mod engine;
pub mod error;
mod failure_split;
pub mod host;
pub mod isolation;
pub mod local;
pub mod metrics;
pub mod python;
pub mod readiness;
pub mod rules;
pub mod server;

// The rules' modules the CLI and the tests name, at their stable paths.
pub use rules::{batch, bytes, params, request};

pub use engine::{
    ExecReport, Outcome, OutputSlice, Responder, ResponseParameters, ResponseSink, ResponseStream,
};
pub use error::{Error, ErrorCode, Result};
pub use rules::dtype::DataType;
pub use rules::request::{CorrelationId, InferRequest, InputTensor, ParamValue};
pub use rules::spec::{ModelSpec, TensorSpec};
