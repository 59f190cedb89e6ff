//! The exported TRITONBACKEND_* entry points. Each one only wraps its raw
//! handles and calls into `crate::backend`; a panic or error never crosses
//! into the server: both become a TRITONSERVER_Error.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use rustpy_core::Error;

use super::handles::{Backend, Model, ModelInstance, Request};
use super::{new_error, raw};
use crate::backend;

type Status = *mut raw::TRITONSERVER_Error;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning an error or a panic into a server error.
fn guard(what: &str, f: impl FnOnce() -> Result<(), Error>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err(e)) => new_error(&e),
        Err(payload) => new_error(&Error::internal(format!(
            "rustpy: internal error (panic) in {what}: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_Initialize(backend: *mut raw::TRITONBACKEND_Backend) -> Status {
    guard("TRITONBACKEND_Initialize", || {
        backend::initialize(Backend(backend))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_Finalize(backend: *mut raw::TRITONBACKEND_Backend) -> Status {
    guard("TRITONBACKEND_Finalize", || {
        backend::finalize(Backend(backend))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut raw::TRITONBACKEND_Model) -> Status {
    guard("TRITONBACKEND_ModelInitialize", || {
        backend::model_initialize(Model(model))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut raw::TRITONBACKEND_Model) -> Status {
    guard("TRITONBACKEND_ModelFinalize", || {
        backend::model_finalize(Model(model))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut raw::TRITONBACKEND_ModelInstance,
) -> Status {
    guard("TRITONBACKEND_ModelInstanceInitialize", || {
        backend::instance_initialize(ModelInstance(instance))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut raw::TRITONBACKEND_ModelInstance,
) -> Status {
    guard("TRITONBACKEND_ModelInstanceFinalize", || {
        backend::instance_finalize(ModelInstance(instance))
    })
}

/// Optional in the backend API (servers from 2.64 call it; 2.51 does not):
/// whether the instance is ready. Success is ready; an error is "not
/// ready", with the reason the server logs.
#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceReady(
    instance: *mut raw::TRITONBACKEND_ModelInstance,
) -> Status {
    guard("TRITONBACKEND_ModelInstanceReady", || {
        backend::instance_ready(ModelInstance(instance))
    })
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut raw::TRITONBACKEND_ModelInstance,
    requests: *mut *mut raw::TRITONBACKEND_Request,
    request_count: u32,
) -> Status {
    if requests.is_null() && request_count > 0 {
        return new_error(&Error::invalid_arg("rustpy: null request array"));
    }
    // From here on we own every request: each Request releases itself (after
    // answering it, if nothing else did) even if execution panics, so this
    // entry point must report success whatever happens below.
    let owned: Vec<Request> = (0..request_count as usize)
        // SAFETY: the server passes `request_count` valid request pointers and
        // hands them to us when we return success, which we always do.
        .map(|i| unsafe { Request::from_raw(*requests.add(i)) })
        .collect();
    let status = guard("TRITONBACKEND_ModelInstanceExecute", || {
        backend::execute(ModelInstance(instance), owned);
        Ok(())
    });
    if !status.is_null() {
        // A panic: the requests were already answered and released by their
        // drops during unwinding. Log it; returning it would make the server
        // release them a second time.
        let err = super::check(status).unwrap_err();
        super::log(super::LogLevel::Error, &err.message);
    }
    ptr::null_mut()
}
