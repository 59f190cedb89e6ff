//! The core's `ServerApi` on Triton's in-process server API: BLS inference,
//! model control and custom metrics.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use crossbeam::channel::Sender;
use rustpy_core::request::{CorrelationId, ParamValue};
use rustpy_core::server::{
    BlsRequest, BlsResponse, Metric, MetricFamily, MetricKind, OwnedTensor, ServerApi,
};
use rustpy_core::{DataType, Error};

use super::handles::Model;
use super::{borrow_str, check, cstring, raw};

type Result<T> = std::result::Result<T, Error>;

pub struct TritonServerApi {
    server: *mut raw::TRITONSERVER_Server,
    allocator: *mut raw::TRITONSERVER_ResponseAllocator,
}

// SAFETY: the server object is thread-safe and lives as long as the process
// serves; the allocator is immutable after creation and only read by Triton.
unsafe impl Send for TritonServerApi {}
// SAFETY: as above.
unsafe impl Sync for TritonServerApi {}

impl TritonServerApi {
    pub fn new(model: Model) -> Result<Arc<Self>> {
        let mut server = ptr::null_mut();
        // SAFETY: live model handle; the server outlives every model.
        check(unsafe { raw::TRITONBACKEND_ModelServer(model.0, &mut server) })?;
        let mut allocator = ptr::null_mut();
        // SAFETY: the callbacks are plain functions valid for the process's
        // life (the library is never unloaded: -z nodelete).
        check(unsafe {
            raw::TRITONSERVER_ResponseAllocatorNew(
                &mut allocator,
                Some(alloc_cpu),
                Some(release_cpu),
                None,
            )
        })?;
        Ok(Arc::new(TritonServerApi { server, allocator }))
    }
}

/// Output buffers of BLS responses: plain CPU memory.
unsafe extern "C" fn alloc_cpu(
    _allocator: *mut raw::TRITONSERVER_ResponseAllocator,
    _tensor_name: *const c_char,
    byte_size: usize,
    _memory_type: raw::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
    _userp: *mut c_void,
    buffer: *mut *mut c_void,
    buffer_userp: *mut *mut c_void,
    actual_memory_type: *mut raw::TRITONSERVER_MemoryType,
    actual_memory_type_id: *mut i64,
) -> *mut raw::TRITONSERVER_Error {
    // SAFETY: Triton passes valid out-pointers.
    unsafe {
        *actual_memory_type = raw::TRITONSERVER_MEMORY_CPU;
        *actual_memory_type_id = 0;
        *buffer_userp = ptr::null_mut();
        *buffer = if byte_size == 0 {
            ptr::null_mut()
        } else {
            libc::malloc(byte_size)
        };
        if byte_size > 0 && (*buffer).is_null() {
            let msg = c"rustpy: out of memory for a BLS output";
            return raw::TRITONSERVER_ErrorNew(raw::TRITONSERVER_ERROR_INTERNAL, msg.as_ptr());
        }
    }
    ptr::null_mut()
}

unsafe extern "C" fn release_cpu(
    _allocator: *mut raw::TRITONSERVER_ResponseAllocator,
    buffer: *mut c_void,
    _buffer_userp: *mut c_void,
    _byte_size: usize,
    _memory_type: raw::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
) -> *mut raw::TRITONSERVER_Error {
    // SAFETY: `buffer` came from alloc_cpu's malloc (or is null).
    unsafe { libc::free(buffer) };
    ptr::null_mut()
}

/// Keeps a BLS request's input data and strings alive until Triton releases it.
struct RequestContext {
    _inputs: Vec<OwnedTensor>,
}

unsafe extern "C" fn request_released(
    request: *mut raw::TRITONSERVER_InferenceRequest,
    flags: u32,
    userp: *mut c_void,
) {
    if flags & raw::RUSTPY_REQUEST_RELEASE_ALL == 0 {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Triton is done with the request; we delete it once and take
        // back the context box we leaked for it.
        unsafe {
            let _ = check(raw::TRITONSERVER_InferenceRequestDelete(request));
            drop(Box::from_raw(userp as *mut RequestContext));
        }
    }));
}

unsafe extern "C" fn response_complete(
    response: *mut raw::TRITONSERVER_InferenceResponse,
    flags: u32,
    userp: *mut c_void,
) {
    let is_final = flags & raw::RUSTPY_RESPONSE_COMPLETE_FINAL != 0;
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: userp is the Sender box leaked in `infer`; it is freed only
        // after the final response, the last call Triton makes with it.
        let tx = unsafe { &*(userp as *const Sender<BlsResponse>) };
        let mut out = if response.is_null() {
            BlsResponse::default()
        } else {
            // SAFETY: `response` is non-null, handed to this callback and owned by us from now on.
            unsafe { read_response(response) }
        };
        out.is_final = is_final;
        let _ = tx.send(out);
    }));
    if is_final {
        // SAFETY: see above; this is the last use.
        drop(unsafe { Box::from_raw(userp as *mut Sender<BlsResponse>) });
    }
}

/// Copies a response's error, outputs and parameters, then deletes it.
///
/// # Safety
/// `response` must be a live response we own.
unsafe fn read_response(response: *mut raw::TRITONSERVER_InferenceResponse) -> BlsResponse {
    let mut out = BlsResponse::default();
    // SAFETY: the error is owned by the response: read, never deleted.
    let err = unsafe { raw::TRITONSERVER_InferenceResponseError(response) };
    if !err.is_null() {
        // SAFETY: `err` is the response's live error (not null here); its message is copied before the response is deleted.
        let (code, msg) = unsafe {
            (
                raw::TRITONSERVER_ErrorCode(err),
                borrow_str(raw::TRITONSERVER_ErrorMessage(err)),
            )
        };
        out.error = Some(Error::new(rustpy_core::ErrorCode::from_code(code), msg));
    } else {
        let mut n = 0;
        // SAFETY: `response` is live until deleted at the end of this function.
        if check(unsafe { raw::TRITONSERVER_InferenceResponseOutputCount(response, &mut n) })
            .is_ok()
        {
            for i in 0..n {
                let (mut name, mut dtype, mut shape, mut dims) =
                    (ptr::null(), 0, ptr::null(), 0u64);
                let (mut base, mut size, mut mem, mut mem_id, mut userp) =
                    (ptr::null(), 0usize, 0, 0i64, ptr::null_mut());
                // SAFETY: live response; `i` < the output count; writes pointers into memory the response owns.
                let res = check(unsafe {
                    raw::TRITONSERVER_InferenceResponseOutput(
                        response,
                        i,
                        &mut name,
                        &mut dtype,
                        &mut shape,
                        &mut dims,
                        &mut base,
                        &mut size,
                        &mut mem,
                        &mut mem_id,
                        &mut userp,
                    )
                });
                if let Err(e) = res {
                    out.error = Some(e);
                    break;
                }
                let Some(dtype) = DataType::from_code(dtype) else {
                    continue;
                };
                // SAFETY: the response owns `dims` dims and `size` bytes of CPU
                // data (our allocator only hands out CPU memory).
                let shape = if dims == 0 {
                    Vec::new()
                } else {
                    // SAFETY: the response owns `dims` dims at `shape`, valid until it is deleted below; copied here.
                    unsafe { std::slice::from_raw_parts(shape, dims as usize) }.to_vec()
                };
                let data = if size == 0 || base.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: the response owns `size` bytes of CPU data at `base` (our allocator hands out CPU memory only), valid until it is deleted below; copied here.
                    unsafe { std::slice::from_raw_parts(base as *const u8, size) }.to_vec()
                };
                out.outputs.push(OwnedTensor {
                    // SAFETY: the output's name is owned by the response, valid until it is deleted below; copied here.
                    name: unsafe { borrow_str(name) }.to_owned(),
                    dtype,
                    shape,
                    data,
                });
            }
        }
        let mut n = 0;
        // SAFETY: `response` is live until deleted at the end of this function.
        if check(unsafe { raw::TRITONSERVER_InferenceResponseParameterCount(response, &mut n) })
            .is_ok()
        {
            for i in 0..n {
                let (mut name, mut kind, mut value) = (ptr::null(), 0, ptr::null());
                // SAFETY: live response; `i` < the parameter count; writes pointers into memory the response owns.
                if check(unsafe {
                    raw::TRITONSERVER_InferenceResponseParameter(
                        response, i, &mut name, &mut kind, &mut value,
                    )
                })
                .is_err()
                {
                    continue;
                }
                // SAFETY: `value` points to a value of the kind named.
                let v = unsafe {
                    match kind {
                        raw::TRITONSERVER_PARAMETER_STRING => {
                            ParamValue::String(borrow_str(value as *const c_char).to_owned())
                        }
                        raw::TRITONSERVER_PARAMETER_INT => ParamValue::Int(*(value as *const i64)),
                        raw::TRITONSERVER_PARAMETER_BOOL => {
                            ParamValue::Bool(*(value as *const bool))
                        }
                        raw::TRITONSERVER_PARAMETER_DOUBLE => {
                            ParamValue::Double(*(value as *const f64))
                        }
                        _ => continue,
                    }
                };
                out.parameters
                    // SAFETY: the parameter's name is owned by the response, valid until it is deleted below; copied here.
                    .push((unsafe { borrow_str(name) }.to_owned(), v));
            }
        }
    }
    // SAFETY: deleted once; nothing read from it is used after this.
    let _ = check(unsafe { raw::TRITONSERVER_InferenceResponseDelete(response) });
    out
}

/// An inference request being built; deleted on drop unless handed to Triton.
struct PendingRequest(*mut raw::TRITONSERVER_InferenceRequest);

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: still ours (never successfully submitted).
            let _ = check(unsafe { raw::TRITONSERVER_InferenceRequestDelete(self.0) });
        }
    }
}

impl ServerApi for TritonServerApi {
    fn infer(&self, request: BlsRequest, responses: Sender<BlsResponse>) -> Result<()> {
        let model = cstring(&request.model_name);
        let mut pending = PendingRequest(ptr::null_mut());
        // SAFETY (all calls below): `pending.0` is a live request we own until
        // ServerInferAsync succeeds; strings outlive each call (copied by Triton).
        // SAFETY: writes a new request (ours until ServerInferAsync succeeds) into `pending`; `model` outlives the call, which copies it.
        check(unsafe {
            raw::TRITONSERVER_InferenceRequestNew(
                &mut pending.0,
                self.server,
                model.as_ptr(),
                request.model_version,
            )
        })?;
        let req = pending.0;
        let id = cstring(&request.request_id);
        // SAFETY: `req` is live and ours; the id outlives the call, which copies it.
        check(unsafe { raw::TRITONSERVER_InferenceRequestSetId(req, id.as_ptr()) })?;
        // SAFETY: `req` is live and ours.
        check(unsafe { raw::TRITONSERVER_InferenceRequestSetFlags(req, request.flags) })?;
        match &request.correlation_id {
            CorrelationId::None => {}
            CorrelationId::Int(n) => {
                // SAFETY: `req` is live and ours.
                check(unsafe { raw::TRITONSERVER_InferenceRequestSetCorrelationId(req, *n) })?
            }
            CorrelationId::String(s) => {
                let s = cstring(s);
                // SAFETY: `req` is live and ours; `s` outlives the call, which copies it.
                check(unsafe {
                    raw::TRITONSERVER_InferenceRequestSetCorrelationIdString(req, s.as_ptr())
                })?
            }
        }
        if request.timeout_us > 0 {
            // SAFETY: `req` is live and ours.
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestSetTimeoutMicroseconds(req, request.timeout_us)
            })?;
        }
        for (key, value) in &request.parameters {
            let k = cstring(key);
            // SAFETY: `req` is live and ours; key and value outlive the call, which copies them.
            check(unsafe {
                match value {
                    ParamValue::String(s) => {
                        let v = cstring(s);
                        raw::TRITONSERVER_InferenceRequestSetStringParameter(
                            req,
                            k.as_ptr(),
                            v.as_ptr(),
                        )
                    }
                    ParamValue::Int(i) => {
                        raw::TRITONSERVER_InferenceRequestSetIntParameter(req, k.as_ptr(), *i)
                    }
                    ParamValue::Bool(b) => {
                        raw::TRITONSERVER_InferenceRequestSetBoolParameter(req, k.as_ptr(), *b)
                    }
                    ParamValue::Double(d) => {
                        raw::TRITONSERVER_InferenceRequestSetDoubleParameter(req, k.as_ptr(), *d)
                    }
                }
            })?;
        }
        for t in &request.inputs {
            let name = cstring(&t.name);
            // SAFETY: `req` is live and ours; name and shape outlive the call, which copies them.
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestAddInput(
                    req,
                    name.as_ptr(),
                    t.dtype as raw::TRITONSERVER_DataType,
                    t.shape.as_ptr(),
                    t.shape.len() as u64,
                )
            })?;
            // Triton reads the data in place: RequestContext keeps it alive
            // until the release callback.
            // SAFETY: `req` is live and ours; the data stays valid until the release callback (RequestContext owns it).
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestAppendInputData(
                    req,
                    name.as_ptr(),
                    t.data.as_ptr() as *const c_void,
                    t.data.len(),
                    raw::TRITONSERVER_MEMORY_CPU,
                    0,
                )
            })?;
        }
        for o in &request.requested_outputs {
            let name = cstring(o);
            // SAFETY: `req` is live and ours; the name outlives the call, which copies it.
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestAddRequestedOutput(req, name.as_ptr())
            })?;
        }
        let context = Box::into_raw(Box::new(RequestContext {
            _inputs: request.inputs,
        }));
        let tx = Box::into_raw(Box::new(responses));
        // SAFETY: `req` is live and ours; `context` is a leaked box that request_released reclaims once.
        let setup = check(unsafe {
            raw::TRITONSERVER_InferenceRequestSetReleaseCallback(
                req,
                Some(request_released),
                context as *mut c_void,
            )
        })
        .and_then(|()| {
            // SAFETY: `req` is live and ours; `tx` is a leaked box that response_complete reclaims at the final response.
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestSetResponseCallback(
                    req,
                    self.allocator,
                    ptr::null_mut(),
                    Some(response_complete),
                    tx as *mut c_void,
                )
            })
        })
        .and_then(|()| {
            // SAFETY: `req` is live and ours; on success the server owns it (and calls request_released).
            check(unsafe { raw::TRITONSERVER_ServerInferAsync(self.server, req, ptr::null_mut()) })
        });
        match setup {
            Ok(()) => {
                // Triton owns the request now; it calls request_released.
                pending.0 = ptr::null_mut();
                Ok(())
            }
            Err(e) => {
                // SAFETY: Triton took nothing: reclaim both boxes; `pending`
                // deletes the request.
                unsafe {
                    drop(Box::from_raw(context));
                    drop(Box::from_raw(tx));
                }
                Err(e)
            }
        }
    }

    fn load_model(&self, name: &str, config_json: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        let cname = cstring(name);
        let config_key = c"config";
        let config_value = cstring(config_json);
        let mut params: Vec<*mut raw::TRITONSERVER_Parameter> = Vec::new();
        let mut keys = Vec::new();
        // SAFETY: a BYTES parameter references its buffer rather than copying
        // it, so keys and contents are kept alive until the load returns.
        unsafe {
            if !config_json.is_empty() {
                params.push(raw::TRITONSERVER_ParameterNew(
                    config_key.as_ptr(),
                    raw::TRITONSERVER_PARAMETER_STRING,
                    config_value.as_ptr() as *const c_void,
                ));
            }
            for (path, content) in files {
                let key: CString = cstring(path);
                params.push(raw::TRITONSERVER_ParameterBytesNew(
                    key.as_ptr(),
                    content.as_ptr() as *const c_void,
                    content.len() as u64,
                ));
                keys.push(key);
            }
        }
        let const_params: Vec<*const raw::TRITONSERVER_Parameter> =
            params.iter().map(|p| *p as *const _).collect();
        // SAFETY: live server; the parameter array outlives the call.
        let res = check(unsafe {
            raw::TRITONSERVER_ServerLoadModelWithParameters(
                self.server,
                cname.as_ptr(),
                const_params.as_ptr() as *mut _,
                const_params.len() as u64,
            )
        });
        for p in params {
            // SAFETY: each parameter deleted once.
            unsafe { raw::TRITONSERVER_ParameterDelete(p) };
        }
        drop(keys);
        res
    }

    fn unload_model(&self, name: &str, unload_dependents: bool) -> Result<()> {
        let cname = cstring(name);
        // SAFETY: live server; the name outlives the call.
        check(unsafe {
            if unload_dependents {
                raw::TRITONSERVER_ServerUnloadModelAndDependents(self.server, cname.as_ptr())
            } else {
                raw::TRITONSERVER_ServerUnloadModel(self.server, cname.as_ptr())
            }
        })
    }

    fn is_model_ready(&self, name: &str, version: i64) -> Result<bool> {
        let cname = cstring(name);
        let mut ready = false;
        // SAFETY: live server.
        check(unsafe {
            raw::TRITONSERVER_ServerModelIsReady(self.server, cname.as_ptr(), version, &mut ready)
        })?;
        Ok(ready)
    }

    fn is_model_decoupled(&self, name: &str, version: i64) -> Result<bool> {
        let cname = cstring(name);
        let mut flags = 0u32;
        // SAFETY: live server; the name outlives the call; voidp may be null.
        check(unsafe {
            raw::TRITONSERVER_ServerModelTransactionProperties(
                self.server,
                cname.as_ptr(),
                version,
                &mut flags,
                ptr::null_mut(),
            )
        })?;
        Ok(flags & raw::RUSTPY_TXN_DECOUPLED != 0)
    }

    fn metric_family(
        &self,
        name: &str,
        description: &str,
        kind: MetricKind,
    ) -> Result<Arc<dyn MetricFamily>> {
        let (cname, cdesc) = (cstring(name), cstring(description));
        let mut family = ptr::null_mut();
        // SAFETY: strings outlive the call, which copies them.
        check(unsafe {
            raw::TRITONSERVER_MetricFamilyNew(
                &mut family,
                kind as raw::TRITONSERVER_MetricKind,
                cname.as_ptr(),
                cdesc.as_ptr(),
            )
        })?;
        Ok(Arc::new(TritonMetricFamily(Arc::new(FamilyHandle(family)))))
    }
}

struct FamilyHandle(*mut raw::TRITONSERVER_MetricFamily);
// SAFETY: Triton's metric objects are internally synchronised.
unsafe impl Send for FamilyHandle {}
// SAFETY: as above.
unsafe impl Sync for FamilyHandle {}
impl Drop for FamilyHandle {
    fn drop(&mut self) {
        // SAFETY: every metric of the family holds an Arc to this handle, so
        // the family is deleted after all of them.
        let _ = check(unsafe { raw::TRITONSERVER_MetricFamilyDelete(self.0) });
    }
}

struct TritonMetricFamily(Arc<FamilyHandle>);

impl MetricFamily for TritonMetricFamily {
    fn metric(
        &self,
        labels: &[(String, String)],
        buckets: Option<&[f64]>,
    ) -> Result<Box<dyn Metric>> {
        let strings: Vec<(CString, CString)> = labels
            .iter()
            .map(|(k, v)| (cstring(k), cstring(v)))
            .collect();
        // SAFETY: each label parameter references its strings, which outlive
        // the MetricNew call; the parameters are deleted right after.
        let params: Vec<*mut raw::TRITONSERVER_Parameter> = strings
            .iter()
            .map(|(k, v)| unsafe {
                raw::TRITONSERVER_ParameterNew(
                    k.as_ptr(),
                    raw::TRITONSERVER_PARAMETER_STRING,
                    v.as_ptr() as *const c_void,
                )
            })
            .collect();
        let const_params: Vec<*const raw::TRITONSERVER_Parameter> =
            params.iter().map(|p| *p as *const _).collect();
        let mut metric = ptr::null_mut();
        let res = match buckets {
            // SAFETY: live metric family; the parameters live until deleted below (the call copies them).
            None => check(unsafe {
                raw::TRITONSERVER_MetricNew(
                    &mut metric,
                    self.0 .0,
                    const_params.as_ptr() as *mut _,
                    const_params.len() as u64,
                )
            }),
            Some(b) => {
                let mut args = ptr::null_mut();
                // SAFETY: args live until deleted below; buckets are copied.
                check(unsafe { raw::TRITONSERVER_MetricArgsNew(&mut args) }).and_then(|()| {
                    // SAFETY: `args` is live (created above); the buckets outlive the call, which copies them.
                    let r = check(unsafe {
                        raw::TRITONSERVER_MetricArgsSetHistogram(args, b.as_ptr(), b.len() as u64)
                    })
                    .and_then(|()| {
                        // SAFETY: live family and args; the parameters live until deleted below.
                        check(unsafe {
                            raw::TRITONSERVER_MetricNewWithArgs(
                                &mut metric,
                                self.0 .0,
                                const_params.as_ptr() as *mut _,
                                const_params.len() as u64,
                                args,
                            )
                        })
                    });
                    // SAFETY: `args` is ours (created above) and deleted exactly once.
                    let _ = check(unsafe { raw::TRITONSERVER_MetricArgsDelete(args) });
                    r
                })
            }
        };
        for p in params {
            // SAFETY: deleted once.
            unsafe { raw::TRITONSERVER_ParameterDelete(p) };
        }
        res?;
        Ok(Box::new(TritonMetric {
            metric,
            _family: self.0.clone(),
        }))
    }
}

struct TritonMetric {
    metric: *mut raw::TRITONSERVER_Metric,
    _family: Arc<FamilyHandle>,
}
// SAFETY: Triton's metric objects are internally synchronised.
unsafe impl Send for TritonMetric {}
// SAFETY: as above.
unsafe impl Sync for TritonMetric {}

impl Metric for TritonMetric {
    fn increment(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricIncrement(self.metric, value) })
    }
    fn set(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricSet(self.metric, value) })
    }
    fn observe(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricObserve(self.metric, value) })
    }
    fn value(&self) -> Result<f64> {
        let mut v = 0.0;
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricValue(self.metric, &mut v) })?;
        Ok(v)
    }
}

impl Drop for TritonMetric {
    fn drop(&mut self) {
        // SAFETY: deleted once, before its family (which we keep alive).
        let _ = check(unsafe { raw::TRITONSERVER_MetricDelete(self.metric) });
    }
}
