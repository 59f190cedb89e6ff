//! One benchmark run: the server's requests prepared per slot, the loop
//! started, measured and summarised.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam::channel;
use serde_json::{json, Value};

use rustpy_bench::latency_summary;
use rustpy_bench::workload::{Expect, Kind, Request, Workload};

use super::slots::*;
use super::tserver::{self, Api, Server, TAllocator, TRequest, TResponse};

// --------------------------------------------------------------- running
#[derive(Clone)]
pub(crate) struct RunSpec {
    pub(crate) model: String,
    pub(crate) kind: Kind,
    pub(crate) bytes: usize,
    pub(crate) expect: Expect,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) timeout: Duration,
    pub(crate) label: Option<String>,
}

pub(crate) struct Driver<'a> {
    pub(crate) server: &'a Server,
    /// The response allocator (a pointer; used from Triton's threads).
    pub(crate) allocator: usize,
}

impl Driver<'_> {
    pub(crate) fn api(&self) -> &Api {
        &self.server.api
    }

    pub(crate) fn take_response_of(
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
    pub(crate) fn prepare(
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

    pub(crate) fn take_response(
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

    pub(crate) fn run(&self, spec: &RunSpec) -> Result<Value, String> {
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

    pub(crate) fn report(
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
