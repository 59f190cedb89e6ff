//! The Rust↔Python boundary: one interpreter per process, model loading, and
//! numpy conversion. Nothing here knows the Triton C API.

mod interp;
mod model;
mod native;
mod numpy_io;

pub use interp::{initialize, is_initialized, py_error};
pub use model::{Api, InstanceInfo, LoadedModel, ModelInstance};
pub use native::{set_log_hook, LogHook};
