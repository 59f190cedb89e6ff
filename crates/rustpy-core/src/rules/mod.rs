//! The Python-free layer: what rustpy decides about requests and tensors
//! without an interpreter or a worker process. Nothing here may use pyo3,
//! `crate::python` or `crate::isolation` (tests/layers.rs checks it), so
//! every rule is unit-tested with plain data.
//!
//! - [`request`]: a request as the core sees it (its inputs, parameters).
//! - [`dtype`], [`bytes`]: Triton's data types and its BYTES encoding.
//! - [`spec`]: the model configuration as the core needs it.
//! - [`batch`]: request validation, which requests share a call, how inputs
//!   are assembled and outputs cut back; [`ragged`]: the same for ragged
//!   batches, batch_input/batch_output and optional-input defaults.
//! - [`tensor`]: tensor memory: buffers that carry their kind, gather plans;
//!   [`shared`]: memory Python may view in place (a worker's input region).
//! - [`params`]: typed request parameters (`request_parameters.json`).

pub mod batch;
pub mod bytes;
pub mod dtype;
pub mod params;
pub mod ragged;
pub mod request;
pub mod shared;
pub mod spec;
pub mod tensor;
