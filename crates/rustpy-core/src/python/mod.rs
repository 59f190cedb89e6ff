//! The Rust↔Python boundary: one interpreter per process, model loading,
//! the two Python strategies and numpy conversion. Nothing here knows the
//! Triton C API.
//!
//! - `interp`: starting the interpreter, `_rustpy_native`, runtime.py,
//!   pb_utils.py; `error`: Python exceptions as core errors.
//! - `model`: a loaded model (its module) and its instances.
//! - `strategy`: how an instance runs a batch; `batched` / `pb_utils`: the
//!   strategies of the two Python APIs.
//! - `native`: the `_rustpy_native` module (response senders, logging, BLS,
//!   metrics, the shared constants).
//! - `convert` / `numpy_io`: core values to Python objects and back.

mod batched;
mod convert;
mod error;
mod interp;
mod model;
mod native;
mod numpy_io;
mod pb_utils;
mod runtime;
mod strategy;

pub use convert::{tensor_from_py, tensor_to_py};
pub use error::py_error;
pub use interp::{add_site_packages, flush_stdio, initialize};
pub use model::{Api, InstanceInfo, LoadedModel, ModelInstance};
/// Writes through the log hook (the server's log in the backend).
pub use native::log as emit_log;
pub use native::{set_log_hook, set_output_arena, LogHook};
pub use numpy_io::ref_count;
