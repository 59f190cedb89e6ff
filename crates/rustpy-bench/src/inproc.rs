//! rustpy-inproc: drives Triton through its in-process C API, no HTTP or
//! gRPC: `TRITONSERVER_ServerNew` on a model repository and backend
//! directory, then `TRITONSERVER_ServerInferAsync` closed-loop with N requests
//! in flight. This measures what each backend costs per request, without the
//! network frontends (the figure upstream uses for its python backend).
//!
//! One process serves many runs: after loading the server it reads one JSON
//! run spec per line on stdin and answers one JSON line per run on stdout
//! (bench/bench.py drives it that way), or runs once with --model.
//!
//! Unsafe: this binary is FFI to libtritonserver (its callbacks and the
//! `tserver` declarations), so it is one of the places allowed `unsafe`.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod tserver;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::ptr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};
use serde_json::{json, Value};

use rustpy_bench::latency_summary;
use rustpy_bench::workload::{Expect, Kind, Request, Workload};
use tserver::{Api, Server, ServerConfig, TAllocator, TError, TRequest, TResponse};

const USAGE: &str = "\
rustpy-inproc: closed-loop load through Triton's in-process C API (no HTTP/gRPC)

USAGE:
    rustpy-inproc --lib LIBTRITONSERVER.so --repo DIR --backend-dir DIR --load M1,M2,..
                  [--log-file F] [--backend-config BACKEND,KEY=VALUE]...
                  [--model M --workload W [-c N] [-d S] [-w S] [--bytes N] [--expect E]]

Without --model, reads run specs from stdin, one JSON object per line:
    {\"model\": \"add_sub_rustpy\", \"workload\": \"add_sub\", \"concurrency\": 32,
     \"duration\": 10, \"warmup\": 2, \"expect\": \"compute\", \"bytes\": 1048576, \"label\": \"..\"}
and writes one JSON line per run (throughput_rps, latency_us, completed, errors,
validation_errors, first_error, stats_before/stats_after: the model's statistics
around the run, for the batch sizes). The first line written is
{\"ready\": {model: bool}} once the server has loaded the models.
Workloads: add_sub, identity, upper, mlp, embed, ragged (as rustpy-loadgen).
";

// ------------------------------------------------------------- callbacks
//
// The loop is driven from Triton's own callbacks: when a slot's final
// response arrives, the response callback checks it and submits the slot's
// next request on the spot, so no driver thread has to be woken (on a
// loaded machine a woken thread waits for a CPU and the slots sit idle).

/// Allocates output buffers in CPU memory with malloc.
unsafe extern "C" fn alloc_fn(
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

unsafe extern "C" fn release_fn(
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
struct Shared {
    server: *const Server,
    allocator: usize,
    wl: Workload,
    model: CString,
    warm_end: Instant,
    end: Instant,
    done: Sender<usize>,
}

/// One closed-loop slot; its address is the callbacks' `userp`.
struct SlotCtx {
    shared: *const Shared,
    id: usize,
    state: Mutex<SlotState>,
}

// SAFETY: the raw pointers point to the server and the run's `Shared`, both
// alive and only read while any callback can run; the mutable state is
// behind the mutex.
unsafe impl Send for SlotCtx {}
// SAFETY: as above.
unsafe impl Sync for SlotCtx {}

#[derive(Default)]
struct SlotState {
    req: Request,
    raw: usize,
    seq: u64,
    t0: Option<Instant>,
    t1: Option<Instant>,
    /// Ok(output bytes) or Err((is_validation, message)).
    outcome: Option<Result<usize, (bool, String)>>,
    /// The current request was released before its final response.
    current_released: bool,
    in_flight: bool,
    /// Submitted requests Triton has not released yet.
    unreleased: usize,
    /// Input buffers of requests whose response is in but that Triton has
    /// not released yet, by request address.
    retired: HashMap<usize, Request>,
    spare: Vec<Request>,
    /// No further request will be submitted.
    stopped: bool,
    done_sent: bool,
    totals: Totals,
    busy_ns: u128,
}

#[derive(Default)]
struct Totals {
    lat: Vec<u64>,
    completed: u64,
    errors: u64,
    validation_errors: u64,
    warmup_completed: u64,
    warmup_errors: u64,
    in_bytes: u64,
    out_bytes: u64,
    first_error: Option<String>,
}

fn guard<F: FnOnce()>(f: F) {
    // A panic must not unwind into Triton; this is a benchmark tool.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        std::process::abort();
    }
}

unsafe extern "C" fn request_release(request: *mut TRequest, _flags: u32, userp: *mut c_void) {
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

unsafe extern "C" fn response_complete(response: *mut TResponse, flags: u32, userp: *mut c_void) {
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
fn finish_request(shared: &Shared, st: &mut SlotState) {
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

fn check_done(ctx: &SlotCtx, shared: &Shared, st: &mut SlotState) {
    if st.stopped && !st.in_flight && st.unreleased == 0 && !st.done_sent {
        st.done_sent = true;
        let _ = shared.done.send(ctx.id);
    }
}

/// Builds and submits the slot's next request; on failure the slot stops.
fn launch(ctx: &SlotCtx) {
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

// --------------------------------------------------------------- running
#[derive(Clone)]
struct RunSpec {
    model: String,
    kind: Kind,
    bytes: usize,
    expect: Expect,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    label: Option<String>,
}

struct Driver<'a> {
    server: &'a Server,
    /// The response allocator (a pointer; used from Triton's threads).
    allocator: usize,
}

impl Driver<'_> {
    fn api(&self) -> &Api {
        &self.server.api
    }

    fn take_response_of(
        shared: &Shared,
        st: &SlotState,
        response: *mut TResponse,
    ) -> Result<usize, (bool, String)> {
        // SAFETY: the server outlives every run.
        let server = unsafe { &*shared.server };
        Driver {
            server,
            allocator: shared.allocator,
        }
        .take_response(&shared.wl, st, response)
    }

    /// Creates the slot's next request (not submitted yet).
    fn prepare(
        &self,
        wl: &Workload,
        model: &CStr,
        ctx: &SlotCtx,
        seq: u64,
        req: &mut Request,
    ) -> Result<*mut TRequest, String> {
        wl.build(ctx.id, seq, req);
        let api = self.api();
        let mut raw: *mut TRequest = ptr::null_mut();
        api.check(
            // SAFETY: live server; the model name is NUL-terminated.
            unsafe {
                (api.TRITONSERVER_InferenceRequestNew)(
                    &mut raw,
                    self.server.raw(),
                    model.as_ptr(),
                    -1,
                )
            },
            "InferenceRequestNew",
        )?;
        let setup = (|| -> Result<(), String> {
            for input in wl.inputs(req) {
                let name = CString::new(input.name).expect("static name");
                // SAFETY: `raw` is the request created above; name and shape
                // are copied by the callee; the data stays valid and unchanged
                // until the request is released: the slot's `req` is either
                // kept or moved (heap buffers unchanged) to `retired` until then.
                unsafe {
                    api.check(
                        (api.TRITONSERVER_InferenceRequestAddInput)(
                            raw,
                            name.as_ptr(),
                            tserver::datatype_code(input.datatype),
                            input.shape.as_ptr(),
                            input.shape.len() as u64,
                        ),
                        "AddInput",
                    )?;
                    api.check(
                        (api.TRITONSERVER_InferenceRequestAppendInputData)(
                            raw,
                            name.as_ptr(),
                            input.data.as_ptr() as *const c_void,
                            input.data.len(),
                            tserver::MEMORY_CPU,
                            0,
                        ),
                        "AppendInputData",
                    )?;
                }
            }
            for out in wl.output_names() {
                let name = CString::new(*out).expect("static name");
                api.check(
                    // SAFETY: live request; the name is copied.
                    unsafe {
                        (api.TRITONSERVER_InferenceRequestAddRequestedOutput)(raw, name.as_ptr())
                    },
                    "AddRequestedOutput",
                )?;
            }
            let tag = ctx as *const SlotCtx as *mut c_void;
            // SAFETY: live request; the callbacks only use `tag` as the slot's
            // SlotCtx, which outlives the request; the allocator outlives
            // every request of the run.
            unsafe {
                api.check(
                    (api.TRITONSERVER_InferenceRequestSetReleaseCallback)(
                        raw,
                        request_release,
                        tag,
                    ),
                    "SetReleaseCallback",
                )?;
                api.check(
                    (api.TRITONSERVER_InferenceRequestSetResponseCallback)(
                        raw,
                        self.allocator as *mut TAllocator,
                        ptr::null_mut(),
                        response_complete,
                        tag,
                    ),
                    "SetResponseCallback",
                )?;
            }
            Ok(())
        })();
        if let Err(e) = setup {
            // SAFETY: never submitted, so ours; deleted once.
            let _ = api.check(
                unsafe { (api.TRITONSERVER_InferenceRequestDelete)(raw) },
                "RequestDelete",
            );
            return Err(e);
        }
        Ok(raw)
    }

    fn take_response(
        &self,
        wl: &Workload,
        slot: &SlotState,
        response: *mut TResponse,
    ) -> Result<usize, (bool, String)> {
        let api = self.api();
        // SAFETY: `response` is a live response handed to us by the complete
        // callback; the error it returns is owned by the response. Output
        // pointers stay valid until the response is deleted, which happens
        // once, after the checks.
        let result = unsafe {
            let err = (api.TRITONSERVER_InferenceResponseError)(response);
            if !err.is_null() {
                Err((false, api.error_text(err)))
            } else {
                let mut count = 0u32;
                api.check(
                    (api.TRITONSERVER_InferenceResponseOutputCount)(response, &mut count),
                    "OutputCount",
                )
                .map_err(|e| (false, e))
                .and_then(|()| {
                    let mut out_bytes = 0usize;
                    let mut found = 0usize;
                    for i in 0..count {
                        let mut name: *const c_char = ptr::null();
                        let mut dtype = 0u32;
                        let mut shape: *const i64 = ptr::null();
                        let mut dims = 0u64;
                        let mut base: *const c_void = ptr::null();
                        let mut size = 0usize;
                        let mut mtype = 0u32;
                        let mut mtype_id = 0i64;
                        let mut userp: *mut c_void = ptr::null_mut();
                        api.check(
                            (api.TRITONSERVER_InferenceResponseOutput)(
                                response,
                                i,
                                &mut name,
                                &mut dtype,
                                &mut shape,
                                &mut dims,
                                &mut base,
                                &mut size,
                                &mut mtype,
                                &mut mtype_id,
                                &mut userp,
                            ),
                            "ResponseOutput",
                        )
                        .map_err(|e| (false, e))?;
                        let name = CStr::from_ptr(name).to_string_lossy();
                        let data: &[u8] = if size == 0 {
                            &[]
                        } else {
                            std::slice::from_raw_parts(base as *const u8, size)
                        };
                        out_bytes += size;
                        if wl
                            .check_output(&slot.req, &name, data)
                            .map_err(|e| (true, e))?
                        {
                            found += 1;
                        }
                    }
                    if found < slot.req.expected.len() {
                        return Err((
                            true,
                            format!(
                                "{} expected output(s) missing",
                                slot.req.expected.len() - found
                            ),
                        ));
                    }
                    Ok(out_bytes)
                })
            }
        };
        // SAFETY: deleted exactly once, after its last use above.
        let _ = api.check(
            unsafe { (api.TRITONSERVER_InferenceResponseDelete)(response) },
            "ResponseDelete",
        );
        result
    }

    fn run(&self, spec: &RunSpec) -> Result<Value, String> {
        let model = CString::new(spec.model.as_str()).map_err(|_| "model name has a NUL byte")?;
        let stats_before = self.server.model_stats(&spec.model)?;
        let (done_tx, done_rx) = channel::unbounded();
        let start = Instant::now();
        let shared = Box::new(Shared {
            server: self.server as *const Server,
            allocator: self.allocator,
            wl: Workload::new(spec.kind, spec.expect, spec.bytes, false),
            model,
            warm_end: start + spec.warmup,
            end: start + spec.warmup + spec.duration,
            done: done_tx,
        });
        let slots: Vec<Box<SlotCtx>> = (0..spec.concurrency)
            .map(|id| {
                Box::new(SlotCtx {
                    shared: &*shared as *const Shared,
                    id,
                    state: Mutex::new(SlotState::default()),
                })
            })
            .collect();
        for slot in &slots {
            launch(slot);
        }
        let deadline = shared.end + spec.timeout;
        for _ in 0..spec.concurrency {
            let left = deadline.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                // Callbacks may still reference the slots: never free them.
                std::mem::forget(slots);
                std::mem::forget(shared);
                return Err(format!(
                    "requests still in flight {:?} after the end of the run",
                    spec.timeout
                ));
            }
        }
        let mut t = Totals::default();
        let mut busy_ns = 0u128;
        for slot in &slots {
            let mut st = slot.state.lock().expect("slot lock");
            let p = std::mem::take(&mut st.totals);
            busy_ns += st.busy_ns;
            t.lat.extend_from_slice(&p.lat);
            t.completed += p.completed;
            t.errors += p.errors;
            t.validation_errors += p.validation_errors;
            t.warmup_completed += p.warmup_completed;
            t.warmup_errors += p.warmup_errors;
            t.in_bytes += p.in_bytes;
            t.out_bytes += p.out_bytes;
            if t.first_error.is_none() {
                t.first_error = p.first_error;
            }
        }
        let stats_after = self.server.model_stats(&spec.model)?;
        self.report(spec, &shared.wl, t, busy_ns, stats_before, stats_after)
    }

    fn report(
        &self,
        spec: &RunSpec,
        wl: &Workload,
        mut t: Totals,
        busy_ns: u128,
        stats_before: Value,
        stats_after: Value,
    ) -> Result<Value, String> {
        let secs = spec.duration.as_secs_f64();
        let tensor_bytes = {
            let mut r = Request::default();
            wl.build(0, 0, &mut r);
            r.tensor_bytes
        };
        let entry = |v: Value| {
            v.get("model_stats")
                .and_then(|m| m.get(0))
                .cloned()
                .unwrap_or(Value::Null)
        };
        Ok(json!({
            "driver": "inproc",
            "model": spec.model,
            "workload": spec.kind.name(),
            "expect": spec.expect.name(),
            "concurrency": spec.concurrency,
            "warmup_s": spec.warmup.as_secs_f64(),
            "duration_s": secs,
            "tensor_bytes_per_request": tensor_bytes,
            "completed": t.completed,
            "errors": t.errors,
            "validation_errors": t.validation_errors,
            "warmup_completed": t.warmup_completed,
            "warmup_errors": t.warmup_errors,
            "first_error": t.first_error,
            "throughput_rps": t.completed as f64 / secs,
            "in_bytes_per_s": t.in_bytes as f64 / secs,
            "out_bytes_per_s": t.out_bytes as f64 / secs,
            "latency_us": latency_summary(&mut t.lat),
            // Little's law check: the mean number of requests in flight during
            // the measured window (`concurrency` unless the loop stalls).
            "in_flight_avg": ((busy_ns as f64 / 1e9 / secs) * 100.0).round() / 100.0,
            "stats_before": entry(stats_before),
            "stats_after": entry(stats_after),
            "label": spec.label,
        }))
    }
}

// ----------------------------------------------------------------- setup
struct Args {
    lib: PathBuf,
    repo: PathBuf,
    backend_dir: PathBuf,
    load: Vec<String>,
    log_file: Option<PathBuf>,
    backend_config: Vec<(String, String, String)>,
    one: Option<Value>,
}

fn secs(v: &Value, key: &str, default: f64) -> Result<Duration, String> {
    let s = match v.get(key) {
        None | Some(Value::Null) => default,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| format!("{key} must be a number"))?,
    };
    if !s.is_finite() || s < 0.0 {
        return Err(format!("bad {key} {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_spec(v: &Value) -> Result<RunSpec, String> {
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model is required")?
        .to_string();
    let w = v
        .get("workload")
        .and_then(Value::as_str)
        .ok_or("workload is required")?;
    let kind = Kind::parse(w).ok_or_else(|| format!("unknown workload {w:?}"))?;
    let e = v.get("expect").and_then(Value::as_str).unwrap_or("compute");
    let expect = Expect::parse(e).ok_or_else(|| format!("unknown expect {e:?}"))?;
    let concurrency = v.get("concurrency").and_then(Value::as_u64).unwrap_or(1) as usize;
    if concurrency == 0 || concurrency > 4096 {
        return Err(format!("bad concurrency {concurrency}"));
    }
    let duration = secs(v, "duration", 10.0)?;
    if duration.is_zero() {
        return Err("duration must be > 0".into());
    }
    Ok(RunSpec {
        model,
        kind,
        bytes: v.get("bytes").and_then(Value::as_u64).unwrap_or(1 << 20) as usize,
        expect,
        concurrency,
        duration,
        warmup: secs(v, "warmup", 2.0)?,
        timeout: secs(v, "timeout", 120.0)?,
        label: v.get("label").and_then(Value::as_str).map(str::to_string),
    })
}

fn parse_args() -> Result<Args, String> {
    let mut lib = None;
    let mut repo = None;
    let mut backend_dir = None;
    let mut load = Vec::new();
    let mut log_file = None;
    let mut backend_config = Vec::new();
    let mut one = serde_json::Map::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") && f != "--backend-config" => {
                (f.to_string(), Some(v.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--lib" => lib = Some(PathBuf::from(value()?)),
            "--repo" => repo = Some(PathBuf::from(value()?)),
            "--backend-dir" => backend_dir = Some(PathBuf::from(value()?)),
            "--load" => load.extend(
                value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "--log-file" => log_file = Some(PathBuf::from(value()?)),
            "--backend-config" => {
                let v = value()?;
                let (b, kv) = v
                    .split_once(',')
                    .ok_or("--backend-config BACKEND,KEY=VALUE")?;
                let (k, val) = kv
                    .split_once('=')
                    .ok_or("--backend-config BACKEND,KEY=VALUE")?;
                backend_config.push((b.to_string(), k.to_string(), val.to_string()));
            }
            "--model" | "--workload" | "--expect" | "--label" => {
                one.insert(
                    flag.trim_start_matches('-').to_string(),
                    Value::from(value()?),
                );
            }
            "-c" | "--concurrency" | "--bytes" => {
                let v = value()?;
                let n: u64 = v.parse().map_err(|_| format!("bad {flag} {v:?}"))?;
                let key = if flag == "--bytes" {
                    "bytes"
                } else {
                    "concurrency"
                };
                one.insert(key.into(), Value::from(n));
            }
            "-d" | "--duration" | "-w" | "--warmup" => {
                let v = value()?;
                let n: f64 = v.parse().map_err(|_| format!("bad {flag} {v:?}"))?;
                let key = if flag.contains('d') {
                    "duration"
                } else {
                    "warmup"
                };
                one.insert(key.into(), Value::from(n));
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let one = if one.is_empty() {
        None
    } else {
        Some(Value::Object(one))
    };
    Ok(Args {
        lib: lib.ok_or("--lib is required")?,
        repo: repo.ok_or("--repo is required")?,
        backend_dir: backend_dir.ok_or("--backend-dir is required")?,
        load,
        log_file,
        backend_config,
        one,
    })
}

/// The wheel's libtritonserver finds its bundled dependencies (libcurl's
/// own dependencies included) only through the executable's search path, as
/// the tritonserver binary's RPATH provides: re-run this process once with the
/// library's directory on LD_LIBRARY_PATH (the loader reads it at start-up).
fn reexec_with_library_path(lib: &std::path::Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let dir = lib
        .parent()
        .ok_or_else(|| format!("{} has no directory", lib.display()))?
        .to_string_lossy()
        .into_owned();
    let current = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if current.split(':').any(|d| d == dir) {
        return Ok(());
    }
    let path = if current.is_empty() {
        dir
    } else {
        format!("{dir}:{current}")
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .exec();
    Err(format!("re-exec with LD_LIBRARY_PATH failed: {err}"))
}

fn real_main() -> Result<(), (u8, String)> {
    let args = parse_args().map_err(|e| (2, format!("{e}\n\n{USAGE}")))?;
    if let Some(one) = &args.one {
        parse_spec(one).map_err(|e| (2, e))?;
    }
    let fail = |e: String| (4u8, e);
    reexec_with_library_path(&args.lib).map_err(fail)?;
    let api = Api::load(&args.lib).map_err(fail)?;
    let cfg = ServerConfig {
        repository: &args.repo,
        backend_dir: &args.backend_dir,
        models: &args.load,
        log_file: args.log_file.as_deref(),
        backend_config: args.backend_config.clone(),
    };
    let server = Server::start(api, &cfg).map_err(fail)?;
    let api = &server.api;
    let mut allocator: *mut TAllocator = ptr::null_mut();
    api.check(
        // SAFETY: creates an allocator we own (deleted at the end) with plain
        // function callbacks and no start function.
        unsafe {
            (api.TRITONSERVER_ResponseAllocatorNew)(
                &mut allocator,
                alloc_fn,
                release_fn,
                ptr::null_mut(),
            )
        },
        "ResponseAllocatorNew",
    )
    .map_err(fail)?;
    let driver = Driver {
        server: &server,
        allocator: allocator as usize,
    };
    let mut ready = serde_json::Map::new();
    for m in &args.load {
        ready.insert(
            m.clone(),
            Value::from(server.model_ready(m).unwrap_or(false)),
        );
    }
    let stdout = std::io::stdout();
    let out = |v: &Value| {
        let mut o = stdout.lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    };
    let mut status = Ok(());
    if let Some(one) = &args.one {
        let spec = parse_spec(one).map_err(|e| (2, e))?;
        match driver.run(&spec) {
            Ok(v) => {
                if v["completed"].as_u64() == Some(0) {
                    status = Err((1, format!("no request completed: {}", v["first_error"])));
                }
                out(&v);
            }
            Err(e) => status = Err((1, e)),
        }
    } else {
        out(&json!({ "ready": ready }));
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| fail(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let result = serde_json::from_str::<Value>(&line)
                .map_err(|e| format!("bad run spec: {e}"))
                .and_then(|v| parse_spec(&v))
                .and_then(|spec| driver.run(&spec));
            match result {
                Ok(v) => out(&v),
                Err(e) => out(&json!({ "error": e })),
            }
        }
    }
    // SAFETY: every request of every run has completed; the allocator is
    // deleted once, before the server.
    let _ = api.check(
        unsafe { (api.TRITONSERVER_ResponseAllocatorDelete)(allocator) },
        "AllocatorDelete",
    );
    drop(server);
    status
}

fn main() -> ExitCode {
    match std::panic::catch_unwind(real_main) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err((code, msg))) => {
            eprintln!("rustpy-inproc: {msg}");
            ExitCode::from(code)
        }
        Err(_) => ExitCode::from(4),
    }
}
