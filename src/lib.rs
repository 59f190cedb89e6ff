//! libtriton_rustpy.so: a Triton backend that runs Python models inside the
//! server process.
//!
//! - [`ffi`]: the only unsafe code: raw bindings, owning wrappers, the
//!   exported entry points and the server API (BLS, model control, metrics)
//!   model code calls back into.
//! - [`backend`]: what each entry point does, in safe Rust, on top of the
//!   shared execution core (`rustpy-core`).
//! - [`settings`]: the backend's `--backend-config` keys.
//! - [`readiness`]: an instance's readiness (its worker, its `is_ready()`)
//!   for `TRITONBACKEND_ModelInstanceReady` and the readiness gauge.
//! - [`send_thread`]: each instance's response thread, which sends the
//!   responses the instance built.
//!
//! `unsafe` is denied crate-wide and allowed only in `ffi` (which documents
//! every unsafe block: `clippy::undocumented_unsafe_blocks`).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod backend;
mod ffi;
mod readiness;
mod send_thread;
mod settings;
