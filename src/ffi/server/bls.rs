//! BLS: inference requests that model code sends to other models through the
//! server (`pb_utils.InferenceRequest.exec`). [`infer`] builds a server
//! request from the core's [`BlsRequest`] one step at a time and submits it;
//! Triton then calls back with each response, which is copied into a
//! [`BlsResponse`] (error, outputs, parameters) and sent to the waiting model
//! code over a channel. Output buffers come from our allocator as `Vec`s
//! the response hands over (no copy: the bytes the called model wrote
//! become the caller's numpy array), or, for a process-isolated caller,
//! as ranges of its BLS output region (the request's `outputs_to`), where
//! the worker reads them; a request's input data stays alive until Triton
//! releases it.

use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Mutex};

use crossbeam::channel::Sender;
use rustpy_core::request::{CorrelationId, ParamValue};
use rustpy_core::rules::tensor::MemoryKind;
use rustpy_core::server::{
    BlsCancel, BlsRequest, BlsResponse, OutputArena, OwnedTensor, PlacedBytes, TensorData,
};
use rustpy_core::{DataType, Error};

use super::{Result, TritonServerApi};
use crate::ffi::params::RawParameter;
use crate::ffi::{borrow_str, check, cstring, raw};

/// Sends `request` to the server; its responses go to `responses`, the last
/// one with `is_final` set. Returns what cancels it.
pub(super) fn infer(
    api: &TritonServerApi,
    request: BlsRequest,
    responses: Sender<BlsResponse>,
) -> Result<BlsCancel> {
    let pending = PendingRequest::new(api, &request.model_name, request.model_version)?;
    pending.set_properties(&request)?;
    pending.set_parameters(&request.parameters)?;
    pending.add_inputs(&request.inputs)?;
    pending.add_requested_outputs(&request.requested_outputs)?;
    let responses = ResponseContext {
        tx: responses,
        outputs_to: request.outputs_to,
    };
    pending.submit(api, request.inputs, responses)
}

/// What the response callback and the allocator of one request share (the
/// allocator's and the response callback's `userp`): where its responses
/// go, and where their outputs may be written.
struct ResponseContext {
    tx: Sender<BlsResponse>,
    outputs_to: Option<Arc<dyn OutputArena>>,
}

/// The response allocator of BLS outputs (lives as long as the process).
pub(super) fn new_allocator() -> Result<*mut raw::TRITONSERVER_ResponseAllocator> {
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
    Ok(allocator)
}

/// An output buffer of a BLS response, as the allocator's `buffer_userp`:
/// the memory Triton writes, until [`ServerResponse::output`] takes it
/// (then `release_cpu` frees only this empty slot).
type OutputBuffer = Option<TensorData>;

/// Output buffers of BLS responses: a range of the request's output arena
/// when it has one (a process-isolated caller's region; its old contents
/// are that caller's own earlier answers), else zeroed CPU memory, a buffer
/// kept for reuse (`rustpy_core::buffers`) or else from the global
/// allocator (calloc: large buffers are fresh pages, not written here),
/// owned by an [`OutputBuffer`] slot.
unsafe extern "C" fn alloc_cpu(
    _allocator: *mut raw::TRITONSERVER_ResponseAllocator,
    _tensor_name: *const c_char,
    byte_size: usize,
    _memory_type: raw::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
    userp: *mut c_void,
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
        *buffer = ptr::null_mut();
    }
    if byte_size == 0 {
        return ptr::null_mut();
    }
    // SAFETY: userp is the request's ResponseContext (set with the
    // allocator in `submit`), alive until its final response, after every
    // allocation for it.
    let context = unsafe { (userp as *const ResponseContext).as_ref() };
    let placed = context
        .and_then(|c| c.outputs_to.as_ref())
        .and_then(|arena| arena.place(byte_size));
    let data = match placed {
        Some(p) => Some(TensorData::Placed(p)),
        None => rustpy_core::buffers::take_zeroed(byte_size)
            .or_else(|| zeroed_vec(byte_size))
            .map(TensorData::Owned),
    };
    let Some(data) = data else {
        let msg = c"rustpy: out of memory for a BLS output";
        // SAFETY: a static message, copied by Triton.
        return unsafe {
            raw::TRITONSERVER_ErrorNew(raw::TRITONSERVER_ERROR_INTERNAL, msg.as_ptr())
        };
    };
    let bytes = writable(&data);
    let slot: Box<OutputBuffer> = Box::new(Some(data));
    // SAFETY: as above; the slot is a leaked box that release_cpu reclaims
    // once, and the bytes stay where they are when the Vec moves.
    unsafe {
        *buffer = bytes as *mut c_void;
        *buffer_userp = Box::into_raw(slot) as *mut c_void;
    }
    ptr::null_mut()
}

/// Where Triton writes an output buffer's bytes: a Vec's heap memory, or a
/// range of a shared mapping (writable memory shared with the worker, which
/// reads it only once the response reached it).
fn writable(data: &TensorData) -> *mut u8 {
    match data {
        TensorData::Owned(v) => v.as_ptr().cast_mut(),
        TensorData::Placed(p) => placed_start(p),
    }
}

fn placed_start(p: &PlacedBytes) -> *mut u8 {
    p.bytes().as_ptr().cast_mut()
}

/// `len` zero bytes, or None when the allocator has no memory for them
/// (an error for Triton, where `vec![0; len]` would abort the server).
fn zeroed_vec(len: usize) -> Option<Vec<u8>> {
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (callers pass len > 0).
    let data = unsafe { std::alloc::alloc_zeroed(layout) };
    if data.is_null() {
        return None;
    }
    // SAFETY: allocated just above by the global allocator with the layout
    // of `len` u8s, all initialised (zeroed); the Vec owns it from here.
    Some(unsafe { Vec::from_raw_parts(data, len, len) })
}

unsafe extern "C" fn release_cpu(
    _allocator: *mut raw::TRITONSERVER_ResponseAllocator,
    _buffer: *mut c_void,
    buffer_userp: *mut c_void,
    _byte_size: usize,
    _memory_type: raw::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
) -> *mut raw::TRITONSERVER_Error {
    if !buffer_userp.is_null() {
        // SAFETY: the slot alloc_cpu leaked for this buffer, released once;
        // it frees the bytes unless an output took them.
        drop(unsafe { Box::from_raw(buffer_userp as *mut OutputBuffer) });
    }
    ptr::null_mut()
}

/// Keeps a BLS request's input data and strings alive until Triton
/// releases it; then the data's buffers go back for reuse.
struct RequestContext {
    inputs: Vec<OwnedTensor>,
    live: Arc<LiveRequest>,
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        for input in self.inputs.drain(..) {
            input.data.recycle();
        }
    }
}

/// A submitted request, for its cancel handle: the pointer while Triton
/// still holds the request, null from its release on. The release callback
/// clears it under the lock before deleting the request, and a cancel uses
/// it only under the lock, so a cancel never reaches a deleted request
/// (TRITONSERVER_InferenceRequestCancel only flags the request; it never
/// releases it on the calling thread).
struct LiveRequest(Mutex<*mut raw::TRITONSERVER_InferenceRequest>);

// SAFETY: the pointer is only used under the mutex, by cancel (a thread-safe
// server call) and by the release callback that ends its life.
unsafe impl Send for LiveRequest {}
// SAFETY: as above.
unsafe impl Sync for LiveRequest {}

impl LiveRequest {
    fn cancel(&self) -> Result<()> {
        let request = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if request.is_null() {
            return Ok(()); // completed: nothing to cancel, as upstream
        }
        // SAFETY: non-null under the lock: Triton has not released the
        // request yet (request_released nulls it first, under this lock).
        check(unsafe { raw::TRITONSERVER_InferenceRequestCancel(*request) })
    }
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
        // SAFETY: Triton is done with the request; we take back the context
        // box we leaked for it, and delete the request once, after its
        // cancel handle can no longer reach it.
        unsafe {
            let context = Box::from_raw(userp as *mut RequestContext);
            let mut live = context.live.0.lock().unwrap_or_else(|p| p.into_inner());
            *live = ptr::null_mut();
            let _ = check(raw::TRITONSERVER_InferenceRequestDelete(request));
            drop(live);
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
        // SAFETY: userp is the ResponseContext box leaked in `submit`; it is
        // freed only after the final response, the last call Triton makes with it.
        let tx = unsafe { &(*(userp as *const ResponseContext)).tx };
        let mut out = if response.is_null() {
            BlsResponse::default()
        } else {
            // SAFETY: `response` is non-null, handed to this callback and owned by us from now on.
            read_response(unsafe { ServerResponse::from_raw(response) })
        };
        out.is_final = is_final;
        let _ = tx.send(out);
    }));
    if is_final {
        // SAFETY: see above; this is the last use.
        drop(unsafe { Box::from_raw(userp as *mut ResponseContext) });
    }
}

/// A server request being built: ours (and deleted on drop) until
/// [`PendingRequest::submit`] hands it to the server.
struct PendingRequest(*mut raw::TRITONSERVER_InferenceRequest);

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: still ours (never successfully submitted).
            let _ = check(unsafe { raw::TRITONSERVER_InferenceRequestDelete(self.0) });
        }
    }
}

// In every method below `self.0` is a live request we own (created in `new`,
// not yet submitted); strings passed to Triton outlive each call, which
// copies them.
impl PendingRequest {
    /// A new request for `model` (`version` -1: the server's choice).
    fn new(api: &TritonServerApi, model: &str, version: i64) -> Result<Self> {
        let model = cstring(model);
        let mut pending = PendingRequest(ptr::null_mut());
        // SAFETY: live server; writes a new request (ours until submitted)
        // into `pending`; `model` outlives the call, which copies it.
        check(unsafe {
            raw::TRITONSERVER_InferenceRequestNew(
                &mut pending.0,
                api.server,
                model.as_ptr(),
                version,
            )
        })?;
        Ok(pending)
    }

    /// Id, flags, correlation id and timeout.
    fn set_properties(&self, request: &BlsRequest) -> Result<()> {
        let req = self.0;
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
        Ok(())
    }

    fn set_parameters(&self, parameters: &[(String, ParamValue)]) -> Result<()> {
        let req = self.0;
        for (key, value) in parameters {
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
        Ok(())
    }

    /// Adds each input, pointing Triton at its data in place: the caller
    /// must keep `inputs` (moved, not copied) alive until the release
    /// callback, which [`PendingRequest::submit`] arranges.
    fn add_inputs(&self, inputs: &[OwnedTensor]) -> Result<()> {
        let req = self.0;
        for t in inputs {
            let name = cstring(&t.name);
            let buffer = t.buffer();
            let (memory_type, memory_id) = buffer.kind().to_triton();
            let data = buffer.host()?;
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
            // SAFETY: `req` is live and ours; the data stays valid until the release callback (RequestContext owns it).
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestAppendInputData(
                    req,
                    name.as_ptr(),
                    data.as_ptr() as *const c_void,
                    data.len(),
                    memory_type as raw::TRITONSERVER_MemoryType,
                    memory_id,
                )
            })?;
        }
        Ok(())
    }

    fn add_requested_outputs(&self, outputs: &[String]) -> Result<()> {
        for o in outputs {
            let name = cstring(o);
            // SAFETY: `self.0` is live and ours; the name outlives the call, which copies it.
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestAddRequestedOutput(self.0, name.as_ptr())
            })?;
        }
        Ok(())
    }

    /// Sets the release and response callbacks and hands the request to the
    /// server. `inputs` are the tensors given to [`PendingRequest::add_inputs`]:
    /// their data is kept alive until Triton releases the request.
    fn submit(
        mut self,
        api: &TritonServerApi,
        inputs: Vec<OwnedTensor>,
        responses: ResponseContext,
    ) -> Result<BlsCancel> {
        let req = self.0;
        let live = Arc::new(LiveRequest(Mutex::new(req)));
        let context = Box::into_raw(Box::new(RequestContext {
            inputs,
            live: live.clone(),
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
            // SAFETY: `req` is live and ours; `tx` is a leaked box that
            // response_complete reclaims at the final response, after every
            // allocation (alloc_cpu reads it too).
            check(unsafe {
                raw::TRITONSERVER_InferenceRequestSetResponseCallback(
                    req,
                    api.allocator,
                    tx as *mut c_void,
                    Some(response_complete),
                    tx as *mut c_void,
                )
            })
        })
        .and_then(|()| {
            // SAFETY: `req` is live and ours; on success the server owns it (and calls request_released).
            check(unsafe { raw::TRITONSERVER_ServerInferAsync(api.server, req, ptr::null_mut()) })
        });
        match setup {
            Ok(()) => {
                // Triton owns the request now; it calls request_released.
                self.0 = ptr::null_mut();
                Ok(Box::new(move || live.cancel()))
            }
            Err(e) => {
                // SAFETY: Triton took nothing: reclaim both boxes; dropping
                // `self` deletes the request.
                unsafe {
                    drop(Box::from_raw(context));
                    drop(Box::from_raw(tx));
                }
                Err(e)
            }
        }
    }
}

/// Copies a response's error, or else its outputs and parameters (an output
/// that cannot be read ends the outputs with its error); the response is
/// deleted when `response` drops.
fn read_response(response: ServerResponse) -> BlsResponse {
    if let Some(error) = response.error() {
        return BlsResponse {
            error: Some(error),
            ..BlsResponse::default()
        };
    }
    let (outputs, error) = response.outputs();
    BlsResponse {
        outputs,
        error,
        parameters: response.parameters(),
        is_final: false,
    }
}

/// A response the server handed to `response_complete`: ours, deleted on
/// drop. Everything read from it is copied out.
struct ServerResponse(*mut raw::TRITONSERVER_InferenceResponse);

impl Drop for ServerResponse {
    fn drop(&mut self) {
        // SAFETY: ours, deleted once; nothing read from it outlives it.
        let _ = check(unsafe { raw::TRITONSERVER_InferenceResponseDelete(self.0) });
    }
}

impl ServerResponse {
    /// # Safety
    /// `response` must be a live, non-null response that nobody else deletes.
    unsafe fn from_raw(response: *mut raw::TRITONSERVER_InferenceResponse) -> Self {
        ServerResponse(response)
    }

    /// The error the response carries, if any.
    fn error(&self) -> Option<Error> {
        // SAFETY: live response; the error is owned by it: read, never deleted.
        let err = unsafe { raw::TRITONSERVER_InferenceResponseError(self.0) };
        if err.is_null() {
            return None;
        }
        // SAFETY: `err` is the response's live error (not null here); its message is copied before the response is deleted.
        let (code, msg) = unsafe {
            (
                raw::TRITONSERVER_ErrorCode(err),
                borrow_str(raw::TRITONSERVER_ErrorMessage(err)),
            )
        };
        Some(Error::new(rustpy_core::ErrorCode::from_code(code), msg))
    }

    /// The outputs in order, up to the first that cannot be read (whose
    /// error comes with them). Outputs of an unknown data type are skipped.
    fn outputs(&self) -> (Vec<OwnedTensor>, Option<Error>) {
        let mut n = 0;
        // SAFETY: live response.
        if check(unsafe { raw::TRITONSERVER_InferenceResponseOutputCount(self.0, &mut n) }).is_err()
        {
            return (Vec::new(), None);
        }
        let mut outputs = Vec::with_capacity(n as usize);
        for i in 0..n {
            match self.output(i) {
                Ok(Some(t)) => outputs.push(t),
                Ok(None) => {}
                Err(e) => return (outputs, Some(e)),
            }
        }
        (outputs, None)
    }

    /// Output `i` (< the output count); None for an unknown data type. Its
    /// bytes are taken from our allocator's slot (not copied) when they are
    /// that slot's, else copied.
    fn output(&self, i: u32) -> Result<Option<OwnedTensor>> {
        let (mut name, mut dtype, mut shape, mut dims) = (ptr::null(), 0, ptr::null(), 0u64);
        let (mut base, mut size, mut mem, mut mem_id, mut userp) =
            (ptr::null(), 0usize, 0, 0i64, ptr::null_mut());
        // SAFETY: live response; `i` < the output count; writes pointers into memory the response owns.
        check(unsafe {
            raw::TRITONSERVER_InferenceResponseOutput(
                self.0,
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
        })?;
        let Some(dtype) = DataType::from_code(dtype) else {
            return Ok(None);
        };
        let shape = if dims == 0 {
            Vec::new()
        } else {
            // SAFETY: the response owns `dims` dims at `shape`, valid until it is deleted; copied here.
            unsafe { std::slice::from_raw_parts(shape, dims as usize) }.to_vec()
        };
        // SAFETY: the output's name is owned by the response, valid until it is deleted; copied here.
        let name = unsafe { borrow_str(name) }.to_owned();
        // Our allocator hands out host memory only; whatever the response
        // says it is, device memory is refused, never read.
        MemoryKind::from_triton(mem, mem_id)
            .require_host()
            .map_err(|e| e.context(format!("BLS response output '{name}'")))?;
        let data = if size == 0 || base.is_null() {
            TensorData::default()
        } else {
            // SAFETY: `userp` is the OutputBuffer slot alloc_cpu made for
            // this buffer (our allocator is the request's only one), alive
            // until the response is deleted, and only this response's
            // callback thread touches it.
            let slot = unsafe { (userp as *mut OutputBuffer).as_mut() };
            match slot
                .and_then(|s| s.take_if(|d| writable(d) == base as *mut u8 && d.len() >= size))
            {
                Some(TensorData::Owned(mut v)) => {
                    v.truncate(size);
                    v.into()
                }
                Some(TensorData::Placed(mut p)) => {
                    p.truncate(size);
                    TensorData::Placed(p)
                }
                // SAFETY: the response owns `size` bytes of host memory at `base` (checked just above), valid until it is deleted; copied here.
                None => unsafe { std::slice::from_raw_parts(base as *const u8, size) }
                    .to_vec()
                    .into(),
            }
        };
        Ok(Some(OwnedTensor {
            name,
            dtype,
            shape,
            data,
        }))
    }

    /// The response's parameters (ones that cannot be read are skipped).
    fn parameters(&self) -> Vec<(String, ParamValue)> {
        let mut n = 0;
        // SAFETY: live response.
        if check(unsafe { raw::TRITONSERVER_InferenceResponseParameterCount(self.0, &mut n) })
            .is_err()
        {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut p = RawParameter::new();
            // SAFETY: live response; `i` < the parameter count; writes pointers into memory the response owns.
            let res = check(unsafe {
                raw::TRITONSERVER_InferenceResponseParameter(
                    self.0,
                    i,
                    &mut p.name,
                    &mut p.kind,
                    &mut p.value,
                )
            });
            if res.is_ok() {
                // SAFETY: the call succeeded: `p` points into the live response.
                out.extend(unsafe { p.decode() });
            }
        }
        out
    }
}
