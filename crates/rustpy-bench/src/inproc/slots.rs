//! The closed loop, driven from Triton's own callbacks: each slot keeps
//! one request in flight and submits its next one from the response
//! callback.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::Mutex;
use std::time::Instant;

use crossbeam::channel::Sender;

use rustpy_bench::workload::{Request, Workload};

use super::driver::Driver;
use super::tserver::{self, Server, TAllocator, TError, TRequest, TResponse};

//
// The loop is driven from Triton's own callbacks: when a slot's final
// response arrives, the response callback checks it and submits the slot's
// next request on the spot, so no driver thread has to be woken (on a
// loaded machine a woken thread waits for a CPU and the slots sit idle).

/// Allocates output buffers in CPU memory with malloc.
pub(crate) unsafe extern "C" fn alloc_fn(
    _allocator: *mut TAllocator,
    _name: *const c_char,
    byte_size: usize,
    _memory_type: u32,
    _memory_type_id: i64,
    _userp: *mut c_void,
    buffer: *mut *mut c_void,
    buffer_userp: *mut *mut c_void,
    actual_memory_type: *mut u32,
    actual_memory_type_id: *mut i64,
) -> *mut TError {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: Triton passes valid out-pointers; a zero-size tensor gets a
        // null buffer (allowed by tritonserver.h), anything else a malloc'd
        // block that release_fn frees.
        unsafe {
            *buffer = if byte_size == 0 {
                ptr::null_mut()
            } else {
                libc::malloc(byte_size)
            };
            *buffer_userp = ptr::null_mut();
            *actual_memory_type = tserver::MEMORY_CPU;
            *actual_memory_type_id = 0;
        }
    });
    if result.is_err() {
        std::process::abort();
    }
    ptr::null_mut()
}

pub(crate) unsafe extern "C" fn release_fn(
    _allocator: *mut TAllocator,
    buffer: *mut c_void,
    _buffer_userp: *mut c_void,
    _byte_size: usize,
    _memory_type: u32,
    _memory_type_id: i64,
) -> *mut TError {
    // SAFETY: `buffer` is null or a block from alloc_fn's malloc, released
    // exactly once by Triton.
    unsafe { libc::free(buffer) };
    ptr::null_mut()
}

/// What every slot's callbacks share during one run (lives until every slot
/// has finished).
pub(crate) struct Shared {
    pub(crate) server: *const Server,
    pub(crate) allocator: usize,
    pub(crate) wl: Workload,
    pub(crate) model: CString,
    pub(crate) warm_end: Instant,
    pub(crate) end: Instant,
    pub(crate) done: Sender<usize>,
}

/// One closed-loop slot; its address is the callbacks' `userp`.
pub(crate) struct SlotCtx {
    pub(crate) shared: *const Shared,
    pub(crate) id: usize,
    pub(crate) state: Mutex<SlotState>,
}

// SAFETY: the raw pointers point to the server and the run's `Shared`, both
// alive and only read while any callback can run; the mutable state is
// behind the mutex.
unsafe impl Send for SlotCtx {}
// SAFETY: as above.
unsafe impl Sync for SlotCtx {}

#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) req: Request,
    pub(crate) raw: usize,
    pub(crate) seq: u64,
    t0: Option<Instant>,
    t1: Option<Instant>,
    /// Ok(output bytes) or Err((is_validation, message)).
    pub(crate) outcome: Option<Result<usize, (bool, String)>>,
    /// The current request was released before its final response.
    pub(crate) current_released: bool,
    pub(crate) in_flight: bool,
    /// Submitted requests Triton has not released yet.
    pub(crate) unreleased: usize,
    /// Input buffers of requests whose response is in but that Triton has
    /// not released yet, by request address.
    pub(crate) retired: HashMap<usize, Request>,
    pub(crate) spare: Vec<Request>,
    /// No further request will be submitted.
    pub(crate) stopped: bool,
    pub(crate) done_sent: bool,
    pub(crate) totals: Totals,
    pub(crate) busy_ns: u128,
}

#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) lat: Vec<u64>,
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) validation_errors: u64,
    pub(crate) warmup_completed: u64,
    pub(crate) warmup_errors: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_bytes: u64,
    pub(crate) first_error: Option<String>,
}

pub(crate) fn guard<F: FnOnce()>(f: F) {
    // A panic must not unwind into Triton; this is a benchmark tool.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

pub(crate) unsafe extern "C" fn request_release(
    request: *mut TRequest,
    _flags: u32,
    userp: *mut c_void,
) {
    guard(|| {
        // SAFETY: `userp` is the slot's SlotCtx, alive until the slot is done
        // (which needs this release first).
        let ctx = unsafe { &*(userp as *const SlotCtx) };
        // SAFETY: `shared` outlives every slot of the run.
        let shared = unsafe { &*ctx.shared };
        // SAFETY: the server outlives every run.
        let api = unsafe { &(*shared.server).api };
        let raw = request as usize;
        {
            let mut st = ctx.state.lock().expect("slot lock");
            st.unreleased -= 1;
            if let Some(req) = st.retired.remove(&raw) {
                st.spare.push(req);
            } else if st.raw == raw {
                st.current_released = true;
            }
            // SAFETY: Triton released the request: it is ours again, deleted
            // exactly once (its buffers are kept apart until now).
            let _ = api.check(
                unsafe { (api.TRITONSERVER_InferenceRequestDelete)(request) },
                "RequestDelete",
            );
            check_done(ctx, shared, &mut st);
        }
    });
}

pub(crate) unsafe extern "C" fn response_complete(
    response: *mut TResponse,
    flags: u32,
    userp: *mut c_void,
) {
    let at = Instant::now();
    guard(|| {
        // SAFETY: as in request_release.
        let ctx = unsafe { &*(userp as *const SlotCtx) };
        // SAFETY: `shared` outlives every slot of the run.
        let shared = unsafe { &*ctx.shared };
        let relaunch = {
            let mut st = ctx.state.lock().expect("slot lock");
            if !response.is_null() {
                let r = Driver::take_response_of(shared, &st, response);
                if st.outcome.is_none() {
                    st.outcome = Some(r);
                    st.t1 = Some(at);
                } else {
                    st.outcome = Some(Err((true, "more than one response".into())));
                }
            }
            if flags & tserver::RESPONSE_COMPLETE_FINAL == 0 {
                return;
            }
            if st.t1.is_none() {
                st.t1 = Some(at);
            }
            finish_request(shared, &mut st);
            let relaunch = at < shared.end;
            if !relaunch {
                st.stopped = true;
                check_done(ctx, shared, &mut st);
            }
            relaunch
        };
        if relaunch {
            launch(ctx);
        }
    });
}

/// Records the slot's completed request and frees its buffers for the next.
pub(crate) fn finish_request(shared: &Shared, st: &mut SlotState) {
    st.in_flight = false;
    let (t0, t1) = (st.t0.expect("submitted"), st.t1.expect("final seen"));
    let measured = t1 >= shared.warm_end && t1 < shared.end;
    let outcome = st
        .outcome
        .take()
        .unwrap_or_else(|| Err((false, "no response".into())));
    let tensor_bytes = st.req.tensor_bytes as u64;
    let t = &mut st.totals;
    match outcome {
        Ok(out_bytes) => {
            if measured {
                t.completed += 1;
                t.lat.push((t1 - t0).as_nanos() as u64);
                t.in_bytes += tensor_bytes;
                t.out_bytes += out_bytes as u64;
            } else if t1 < shared.warm_end {
                t.warmup_completed += 1;
            }
        }
        Err((validation, msg)) => {
            if measured {
                if validation {
                    t.validation_errors += 1;
                } else {
                    t.errors += 1;
                }
            } else if t1 < shared.warm_end {
                t.warmup_errors += 1;
            }
            t.first_error.get_or_insert(msg);
        }
    }
    if measured {
        st.busy_ns += (t1 - t0).as_nanos();
    }
    let fresh = st.spare.pop().unwrap_or_default();
    let old = std::mem::replace(&mut st.req, fresh);
    if st.current_released {
        st.spare.push(old);
    } else {
        st.retired.insert(st.raw, old);
    }
}

pub(crate) fn check_done(ctx: &SlotCtx, shared: &Shared, st: &mut SlotState) {
    if st.stopped && !st.in_flight && st.unreleased == 0 && !st.done_sent {
        st.done_sent = true;
        let _ = shared.done.send(ctx.id);
    }
}

/// Builds and submits the slot's next request; on failure the slot stops.
pub(crate) fn launch(ctx: &SlotCtx) {
    // SAFETY: `shared` outlives every slot of the run.
    let shared = unsafe { &*ctx.shared };
    // SAFETY: the server outlives every run.
    let server = unsafe { &*shared.server };
    let driver = Driver {
        server,
        allocator: shared.allocator,
    };
    let api = &server.api;
    let raw = {
        let mut st = ctx.state.lock().expect("slot lock");
        let seq = st.seq;
        st.seq += 1;
        let st = &mut *st;
        match driver.prepare(&shared.wl, &shared.model, ctx, seq, &mut st.req) {
            Ok(raw) => {
                st.raw = raw as usize;
                st.current_released = false;
                st.in_flight = true;
                st.unreleased += 1;
                st.outcome = None;
                st.t1 = None;
                st.t0 = Some(Instant::now());
                raw
            }
            Err(e) => {
                st.totals.errors += 1;
                st.totals.first_error.get_or_insert(e);
                st.stopped = true;
                check_done(ctx, shared, st);
                return;
            }
        }
    };
    // SAFETY: the request is complete; on success Triton owns it until the
    // release callback, on error it stays ours. The slot lock is not held, so
    // callbacks of this request may run on other threads at once.
    let err = unsafe { (api.TRITONSERVER_ServerInferAsync)(server.raw(), raw, ptr::null_mut()) };
    if let Err(e) = api.check(err, "ServerInferAsync") {
        let mut st = ctx.state.lock().expect("slot lock");
        // SAFETY: not submitted, so still ours; deleted once.
        let _ = api.check(
            unsafe { (api.TRITONSERVER_InferenceRequestDelete)(raw) },
            "RequestDelete",
        );
        st.in_flight = false;
        st.unreleased -= 1;
        st.totals.errors += 1;
        st.totals.first_error.get_or_insert(e);
        st.stopped = true;
        check_done(ctx, shared, &mut st);
    }
}
