//! Everything unsafe about talking to Triton lives in this module tree: the
//! raw bindings, thin owning wrappers around the server's handles, and the
//! exported `extern "C"` entry points. The rest of the crate is safe Rust.
//!
//! - `raw`: the bindgen declarations of include/rustpy_triton.h.
//! - `entry`: the exported `TRITONBACKEND_*` entry points (each catches
//!   panics and calls into `crate::backend`).
//! - [`handles`]: the backend, model, instance, request and response factory
//!   handles as owning or borrowing wrappers (reading requests, sending
//!   responses, model/instance state).
//! - `params`: the one decoder of Triton's inference parameters (requests and
//!   BLS responses).
//! - [`server`]: the core's `ServerApi` on Triton's server API: BLS, model
//!   control, metrics.
//! - [`sys`]: libc helpers (the statistics clock, libpython made global, the
//!   library's own path).
//! - This file: status and string conversions shared by them, and logging.
//!
//! Ownership rules encoded here (from the backend API):
//! - An error returned by a TRITON* call is ours: [`check`] reads and deletes it.
//! - An error we return from an entry point is handed to the server.
//! - A request passed to Execute is ours once Execute returns success:
//!   [`Request`] releases it exactly once, in Drop.
//! - A response is ours until ResponseSend; the error given to ResponseSend
//!   stays ours and is deleted right after.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod entry;
pub(crate) mod handles;
mod params;
mod raw;
pub(crate) mod server;
pub(crate) mod sys;

use std::ffi::{CStr, CString};

use rustpy_core::{Error, ErrorCode};

pub use handles::{Backend, BuiltResponse, Model, ModelInstance, Request, ResponseFactory};

/// Turns a status returned by the server into a Result, deleting the error.
pub(crate) fn check(err: *mut raw::TRITONSERVER_Error) -> Result<(), Error> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is a live error that we own; it is read and
    // then deleted exactly once.
    unsafe {
        let code = raw::TRITONSERVER_ErrorCode(err);
        let msg = raw::TRITONSERVER_ErrorMessage(err);
        let message = if msg.is_null() {
            String::new()
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        raw::TRITONSERVER_ErrorDelete(err);
        Err(Error::new(ErrorCode::from_code(code), message))
    }
}

/// A new server error carrying `e` (owned by whoever receives it).
pub(crate) fn new_error(e: &Error) -> *mut raw::TRITONSERVER_Error {
    // Bounded: an over-long message (a user exception quoting a big input)
    // would not reach a gRPC client at all.
    let msg = cstring(&rustpy_core::error::bounded_message(
        &e.message,
        rustpy_core::error::WIRE_MESSAGE_BUDGET,
    ));
    // SAFETY: ErrorNew copies the message; msg outlives the call.
    unsafe { raw::TRITONSERVER_ErrorNew(e.code as raw::TRITONSERVER_Error_Code, msg.as_ptr()) }
}

/// A C string, with interior NULs (which C cannot carry) replaced.
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs replaced")
}

/// Reads a C string the server owns (empty for null).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that is valid for 'a.
pub(crate) unsafe fn borrow_str<'a>(p: *const std::os::raw::c_char) -> &'a str {
    if p.is_null() {
        ""
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
    Verbose,
}

/// Writes to Triton's log (shown with the server's own messages).
pub fn log(level: LogLevel, msg: &str) {
    log_at(level, "rustpy", 0, msg)
}

/// Writes to Triton's log with a source location (a model's file and line).
pub fn log_at(level: LogLevel, file: &str, line: u32, msg: &str) {
    let lvl = match level {
        LogLevel::Info => raw::TRITONSERVER_LOG_INFO,
        LogLevel::Warn => raw::TRITONSERVER_LOG_WARN,
        LogLevel::Error => raw::TRITONSERVER_LOG_ERROR,
        LogLevel::Verbose => raw::TRITONSERVER_LOG_VERBOSE,
    };
    let file = cstring(file);
    let msg = cstring(msg);
    // SAFETY: both strings outlive the call, which copies them.
    let err = unsafe {
        if !raw::TRITONSERVER_LogIsEnabled(lvl) {
            return;
        }
        raw::TRITONSERVER_LogMessage(lvl, file.as_ptr(), line as i32, msg.as_ptr())
    };
    let _ = check(err);
}
