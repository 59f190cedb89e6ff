//! Thin safe wrappers around the server's handles. Borrowed handles
//! (backend, model, instance) are Copy newtypes valid for the entry point that
//! received them; owned ones (request, response factory, response) free
//! themselves in Drop. A [`Request`] reads its id, flags, parameters (decoded
//! by `super::params`) and input buffers; a [`ResponseFactory`] builds its
//! responses, and a [`BuiltResponse`] is sent from whichever thread holds it.

use std::any::Any;
use std::os::raw::c_void;
use std::ptr;

use rustpy_core::request::{CorrelationId, InputTensor, ParamValue};
use rustpy_core::rules::tensor::{MemoryKind, TensorBuffer};
use rustpy_core::{DataType, Error, OutputSlice};

use super::params::RawParameter;
use super::raw;
use super::{borrow_str, check, cstring, new_error};

type Result<T> = std::result::Result<T, Error>;

/// The backend handle given to TRITONBACKEND_Initialize/Finalize.
#[derive(Clone, Copy)]
pub struct Backend(pub(super) *mut raw::TRITONBACKEND_Backend);

impl Backend {
    pub fn name(&self) -> Result<String> {
        let mut p = ptr::null();
        // SAFETY: the handle is live during the entry point; the name is
        // owned by the server and copied before returning.
        check(unsafe { raw::TRITONBACKEND_BackendName(self.0, &mut p) })?;
        // SAFETY: the server owns the name and keeps it valid while the backend lives; copied here.
        Ok(unsafe { borrow_str(p) }.to_owned())
    }

    /// The backend's configuration as JSON: `{"cmdline": {KEY: VALUE}}` from
    /// `--backend-config=NAME,KEY=VALUE`.
    pub fn config_json(&self) -> Result<String> {
        let mut msg = ptr::null_mut();
        // SAFETY: the handle is live during the entry point. The message is
        // owned by the server (it lives as long as the backend): it is only
        // read here, never deleted.
        check(unsafe { raw::TRITONBACKEND_BackendConfig(self.0, &mut msg) })?;
        let (mut base, mut size) = (ptr::null(), 0usize);
        // SAFETY: msg is live; writes a pointer into it and a length we own.
        check(unsafe { raw::TRITONSERVER_MessageSerializeToJson(msg, &mut base, &mut size) })?;
        // SAFETY: base/size describe the message's serialized bytes, which
        // stay valid while the backend lives; they are copied at once.
        let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, size) };
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl Backend {
    /// The slot where the backend's state (a boxed `T`) lives.
    pub fn state_slot(&self) -> StateSlot<raw::TRITONBACKEND_Backend> {
        StateSlot {
            handle: self.0,
            get: raw::TRITONBACKEND_BackendState,
            set: raw::TRITONBACKEND_BackendSetState,
        }
    }
}

/// The backend API version the server speaks.
pub fn api_version() -> Result<(u32, u32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two integers we own.
    check(unsafe { raw::TRITONBACKEND_ApiVersion(&mut major, &mut minor) })?;
    Ok((major, minor))
}

/// Our own API version, from the header.
pub const OUR_API_VERSION: (u32, u32) = (
    raw::RUSTPY_TRITONBACKEND_API_VERSION_MAJOR,
    raw::RUSTPY_TRITONBACKEND_API_VERSION_MINOR,
);

/// Serialises a server message to JSON and deletes it.
fn message_to_json(msg: *mut raw::TRITONSERVER_Message) -> Result<String> {
    let (mut base, mut size) = (ptr::null(), 0usize);
    // SAFETY: msg is a live message we own; base/size point into it and are
    // copied before the message is deleted.
    let res = check(unsafe { raw::TRITONSERVER_MessageSerializeToJson(msg, &mut base, &mut size) })
        .map(|()| {
            // SAFETY: on success the server points `base` at `size` bytes inside `msg`, which lives until deleted below.
            let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, size) };
            String::from_utf8_lossy(bytes).into_owned()
        });
    // SAFETY: deleted exactly once.
    let _ = check(unsafe { raw::TRITONSERVER_MessageDelete(msg) });
    res
}

/// The model handle given to TRITONBACKEND_ModelInitialize/Finalize.
#[derive(Clone, Copy)]
pub struct Model(pub(super) *mut raw::TRITONBACKEND_Model);

impl Model {
    pub fn name(&self) -> Result<String> {
        let mut p = ptr::null();
        // SAFETY: live handle; the string is copied.
        check(unsafe { raw::TRITONBACKEND_ModelName(self.0, &mut p) })?;
        // SAFETY: the server owns the name and keeps it valid while the model lives; copied here.
        Ok(unsafe { borrow_str(p) }.to_owned())
    }

    pub fn version(&self) -> Result<u64> {
        let mut v = 0;
        // SAFETY: live handle.
        check(unsafe { raw::TRITONBACKEND_ModelVersion(self.0, &mut v) })?;
        Ok(v)
    }

    /// The model's directory (`<repository>/<model>`).
    pub fn directory(&self) -> Result<String> {
        let (mut kind, mut p) = (0, ptr::null());
        // SAFETY: live handle; the string is copied.
        check(unsafe { raw::TRITONBACKEND_ModelRepository(self.0, &mut kind, &mut p) })?;
        if kind != raw::TRITONBACKEND_ARTIFACT_FILESYSTEM {
            return Err(Error::unsupported(
                "rustpy only loads models from a filesystem repository",
            ));
        }
        // SAFETY: the repository path is owned by the model, valid while it lives; copied here.
        Ok(unsafe { borrow_str(p) }.to_owned())
    }

    /// The model configuration as Triton's JSON.
    pub fn config_json(&self) -> Result<String> {
        let mut msg = ptr::null_mut();
        // SAFETY: live handle; we own the returned message.
        check(unsafe { raw::TRITONBACKEND_ModelConfig(self.0, 1, &mut msg) })?;
        message_to_json(msg)
    }

    /// Whether the server wants backends to complete the configuration.
    pub fn auto_complete_enabled(&self) -> Result<bool> {
        let mut b = false;
        // SAFETY: live handle.
        check(unsafe { raw::TRITONBACKEND_ModelAutoCompleteConfig(self.0, &mut b) })?;
        Ok(b)
    }

    /// Replaces the model configuration (only valid during ModelInitialize).
    pub fn set_config_json(&self, json: &str) -> Result<()> {
        let mut msg = ptr::null_mut();
        // SAFETY: the message copies the JSON; we delete it after SetConfig,
        // which does not take ownership.
        check(unsafe {
            raw::TRITONSERVER_MessageNewFromSerializedJson(
                &mut msg,
                json.as_ptr() as *const _,
                json.len(),
            )
        })?;
        // SAFETY: live handle; SetConfig reads `msg` and does not take ownership of it.
        let res = check(unsafe { raw::TRITONBACKEND_ModelSetConfig(self.0, 1, msg) });
        // SAFETY: `msg` is ours (created above) and deleted exactly once.
        let _ = check(unsafe { raw::TRITONSERVER_MessageDelete(msg) });
        res
    }

    /// The backend the model belongs to (it outlives the model).
    pub fn backend(&self) -> Result<Backend> {
        let mut b = ptr::null_mut();
        // SAFETY: live handle; writes the backend's handle, valid while the model lives.
        check(unsafe { raw::TRITONBACKEND_ModelBackend(self.0, &mut b) })?;
        Ok(Backend(b))
    }

    /// The slot where this model's state (a boxed `T`) lives.
    pub fn state_slot(&self) -> StateSlot<raw::TRITONBACKEND_Model> {
        StateSlot {
            handle: self.0,
            get: raw::TRITONBACKEND_ModelState,
            set: raw::TRITONBACKEND_ModelSetState,
        }
    }
}

/// The opaque state pointer Triton keeps for a model or an instance. Only
/// [`StateSlot::put`] ever stores into it: a `Box<Box<dyn Any>>` (a thin
/// pointer to a fat one), so reading it back checks the stored type at run
/// time instead of trusting the caller.
pub struct StateSlot<H> {
    handle: *mut H,
    get: unsafe extern "C" fn(*mut H, *mut *mut c_void) -> *mut raw::TRITONSERVER_Error,
    set: unsafe extern "C" fn(*mut H, *mut c_void) -> *mut raw::TRITONSERVER_Error,
}

type AnyState = Box<dyn Any + Send + Sync>;

impl<H> StateSlot<H> {
    /// Stores `state`; take it back with [`StateSlot::take`].
    pub fn put<T: Any + Send + Sync>(&self, state: T) -> Result<()> {
        let boxed: Box<AnyState> = Box::new(Box::new(state));
        let p = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: live handle (the entry point that gave it to us runs).
        if let Err(e) = check(unsafe { (self.set)(self.handle, p) }) {
            // SAFETY: the server did not store `p`; it is still ours, from
            // Box::into_raw above, and reclaimed once.
            drop(unsafe { Box::from_raw(p as *mut AnyState) });
            return Err(e);
        }
        Ok(())
    }

    fn raw_state(&self) -> Result<*mut AnyState> {
        let mut p = ptr::null_mut();
        // SAFETY: live handle; writes the stored pointer into `p`.
        check(unsafe { (self.get)(self.handle, &mut p) })?;
        Ok(p as *mut AnyState)
    }

    /// Borrows the stored state, which must be a `T`. The borrow lasts while
    /// the handle is live: Triton never finalizes a model or an instance
    /// (where the state is taken) while another of its entry points runs.
    pub fn get<'a, T: Any>(&self) -> Result<&'a T> {
        let p = self.raw_state()?;
        // SAFETY: the slot is null or holds a pointer from `put` (only put
        // stores into it) that `take` has not reclaimed (take nulls the
        // slot); the server's call order keeps it alive for 'a (see above).
        let state =
            unsafe { p.as_ref() }.ok_or_else(|| Error::internal("rustpy: state is not set"))?;
        state
            .downcast_ref::<T>()
            .ok_or_else(|| Error::internal("rustpy: state has an unexpected type"))
    }

    /// Takes back the stored state (None if unset); it must be a `T`.
    pub fn take<T: Any>(&self) -> Result<Option<Box<T>>> {
        let p = self.raw_state()?;
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: live handle; clearing the slot makes this the one owner.
        check(unsafe { (self.set)(self.handle, ptr::null_mut()) })?;
        // SAFETY: a non-null slot holds a pointer from Box::into_raw in `put`,
        // reclaimed exactly once (the slot was cleared just above).
        let state: Box<AnyState> = unsafe { Box::from_raw(p) };
        (*state)
            .downcast::<T>()
            .map(Some)
            .map_err(|_| Error::internal("rustpy: state has an unexpected type"))
    }
}

/// The instance handle given to the ModelInstance* entry points.
#[derive(Clone, Copy)]
pub struct ModelInstance(pub(super) *mut raw::TRITONBACKEND_ModelInstance);

impl ModelInstance {
    pub fn name(&self) -> Result<String> {
        let mut p = ptr::null();
        // SAFETY: live handle; copied.
        check(unsafe { raw::TRITONBACKEND_ModelInstanceName(self.0, &mut p) })?;
        // SAFETY: the instance name is owned by the instance, valid while it lives; copied here.
        Ok(unsafe { borrow_str(p) }.to_owned())
    }

    /// "CPU", "GPU", "MODEL" or "AUTO".
    pub fn kind(&self) -> Result<&'static str> {
        let mut k = 0;
        // SAFETY: live handle.
        check(unsafe { raw::TRITONBACKEND_ModelInstanceKind(self.0, &mut k) })?;
        Ok(match k {
            raw::TRITONSERVER_INSTANCEGROUPKIND_CPU => "CPU",
            raw::TRITONSERVER_INSTANCEGROUPKIND_GPU => "GPU",
            raw::TRITONSERVER_INSTANCEGROUPKIND_MODEL => "MODEL",
            _ => "AUTO",
        })
    }

    pub fn device_id(&self) -> Result<i32> {
        let mut d = 0;
        // SAFETY: live handle.
        check(unsafe { raw::TRITONBACKEND_ModelInstanceDeviceId(self.0, &mut d) })?;
        Ok(d)
    }

    pub fn model(&self) -> Result<Model> {
        let mut m = ptr::null_mut();
        // SAFETY: live handle; the model outlives its instances.
        check(unsafe { raw::TRITONBACKEND_ModelInstanceModel(self.0, &mut m) })?;
        Ok(Model(m))
    }

    /// The slot where this instance's state (a boxed `T`) lives.
    pub fn state_slot(&self) -> StateSlot<raw::TRITONBACKEND_ModelInstance> {
        StateSlot {
            handle: self.0,
            get: raw::TRITONBACKEND_ModelInstanceState,
            set: raw::TRITONBACKEND_ModelInstanceSetState,
        }
    }

    /// Per-request statistics; must be called before the request is released.
    pub fn report_statistics(&self, request: &Request, success: bool, t: [u64; 4]) {
        // SAFETY: both handles are live (the request is not yet released).
        let err = unsafe {
            raw::TRITONBACKEND_ModelInstanceReportStatistics(
                self.0,
                request.raw,
                success,
                t[0],
                t[1],
                t[2],
                t[3],
            )
        };
        let _ = check(err);
    }

    /// Statistics of one execution that covered `batch_size` rows.
    pub fn report_batch_statistics(&self, batch_size: u64, t: [u64; 4]) {
        // SAFETY: live handle.
        let err = unsafe {
            raw::TRITONBACKEND_ModelInstanceReportBatchStatistics(
                self.0, batch_size, t[0], t[1], t[2], t[3],
            )
        };
        let _ = check(err);
    }
}

/// A request handed to Execute. Released (RELEASE_ALL) exactly once, on drop.
pub struct Request {
    raw: *mut raw::TRITONBACKEND_Request,
}

impl Request {
    /// # Safety
    /// `raw` must be a request given to Execute, owned by nobody else from now
    /// on (Execute must return success once any Request was created).
    pub(super) unsafe fn from_raw(raw: *mut raw::TRITONBACKEND_Request) -> Self {
        Request { raw }
    }

    pub fn id(&self) -> String {
        let mut p = ptr::null();
        // SAFETY: live request; copied.
        match check(unsafe { raw::TRITONBACKEND_RequestId(self.raw, &mut p) }) {
            // SAFETY: on success `p` is the request's own id string, valid while the request lives; copied here.
            Ok(()) => unsafe { borrow_str(p) }.to_owned(),
            Err(_) => String::new(),
        }
    }

    pub fn correlation_id(&self) -> CorrelationId {
        let mut id = 0u64;
        // SAFETY: live request. A string id makes the integer call fail.
        if check(unsafe { raw::TRITONBACKEND_RequestCorrelationId(self.raw, &mut id) }).is_ok() {
            return if id == 0 {
                CorrelationId::None
            } else {
                CorrelationId::Int(id)
            };
        }
        let mut p = ptr::null();
        // SAFETY: live request; writes a pointer to the request's own string into `p`.
        match check(unsafe { raw::TRITONBACKEND_RequestCorrelationIdString(self.raw, &mut p) }) {
            // SAFETY: on success `p` is a string owned by the request, valid while it lives; copied here.
            Ok(()) => CorrelationId::String(unsafe { borrow_str(p) }.to_owned()),
            Err(_) => CorrelationId::None,
        }
    }

    pub fn flags(&self) -> u32 {
        let mut f = 0;
        // SAFETY: live request.
        let _ = check(unsafe { raw::TRITONBACKEND_RequestFlags(self.raw, &mut f) });
        f
    }

    pub fn timeout_us(&self) -> u64 {
        let mut t = 0;
        // SAFETY: live request.
        let _ = check(unsafe {
            raw::TRITONBACKEND_InferenceRequestTimeoutMicroseconds(self.raw, &mut t)
        });
        t
    }

    pub fn requested_outputs(&self) -> Result<Vec<String>> {
        let mut n = 0;
        // SAFETY: live request; names are copied.
        check(unsafe { raw::TRITONBACKEND_RequestOutputCount(self.raw, &mut n) })?;
        (0..n)
            .map(|i| {
                let mut p = ptr::null();
                // SAFETY: live request and `i` < the output count read above; writes a pointer we copy next.
                check(unsafe { raw::TRITONBACKEND_RequestOutputName(self.raw, i, &mut p) })?;
                // SAFETY: on success `p` is a name owned by the request, valid while it lives; copied here.
                Ok(unsafe { borrow_str(p) }.to_owned())
            })
            .collect()
    }

    pub fn parameters(&self) -> Result<Vec<(String, ParamValue)>> {
        let mut n = 0;
        // SAFETY: live request.
        check(unsafe { raw::TRITONBACKEND_RequestParameterCount(self.raw, &mut n) })?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut p = RawParameter::new();
            // SAFETY: live request and `i` < the parameter count; writes
            // pointers to the name and value, which the request owns.
            check(unsafe {
                raw::TRITONBACKEND_RequestParameter(
                    self.raw,
                    i,
                    &mut p.name,
                    &mut p.kind,
                    &mut p.value,
                )
            })?;
            // SAFETY: the call succeeded: `p` points into the live request.
            out.extend(unsafe { p.decode() });
        }
        Ok(out)
    }

    /// The request's input tensors, borrowing the server's buffers (valid until
    /// this request is released, which the borrow enforces).
    pub fn inputs(&self) -> Result<Vec<InputTensor<'_>>> {
        let mut n = 0;
        // SAFETY: live request.
        check(unsafe { raw::TRITONBACKEND_RequestInputCount(self.raw, &mut n) })?;
        let mut inputs = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut input = ptr::null_mut();
            // SAFETY: live request; the input belongs to it.
            check(unsafe { raw::TRITONBACKEND_RequestInputByIndex(self.raw, i, &mut input) })?;
            let (mut name, mut dtype, mut shape, mut dims) = (ptr::null(), 0, ptr::null(), 0u32);
            let (mut byte_size, mut buffers) = (0u64, 0u32);
            // SAFETY: live input; writes pointers to properties the request owns (copied below).
            check(unsafe {
                raw::TRITONBACKEND_InputProperties(
                    input,
                    &mut name,
                    &mut dtype,
                    &mut shape,
                    &mut dims,
                    &mut byte_size,
                    &mut buffers,
                )
            })?;
            // SAFETY: the input's name is owned by the request, valid while it lives; copied here.
            let name = unsafe { borrow_str(name) }.to_owned();
            let shape = if dims == 0 || shape.is_null() {
                Vec::new()
            } else {
                // SAFETY: the server gives `dims` dimensions at `shape`.
                unsafe { std::slice::from_raw_parts(shape, dims as usize) }.to_vec()
            };
            let dtype = DataType::from_code(dtype).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "input '{name}' has an invalid data type (code {dtype})"
                ))
            })?;
            let count = buffers;
            let mut buffers = Vec::with_capacity(count as usize);
            for b in 0..count {
                let (mut base, mut size) = (ptr::null(), 0u64);
                let (mut mem, mut mem_id) = (raw::TRITONSERVER_MEMORY_CPU, 0i64);
                // SAFETY: live input; the buffer is valid until the request is
                // released, which outlives the returned borrow of `self`.
                check(unsafe {
                    raw::TRITONBACKEND_InputBuffer(
                        input,
                        b,
                        &mut base,
                        &mut size,
                        &mut mem,
                        &mut mem_id,
                    )
                })?;
                // Each buffer carries its memory kind; the core refuses
                // device memory (MemoryKind::require_host) before reading.
                let memory = MemoryKind::from_triton(mem, mem_id);
                let buffer = if !memory.is_host() {
                    TensorBuffer::device(mem_id, size as usize)
                } else if size == 0 || base.is_null() {
                    TensorBuffer::borrowed(&[])
                } else {
                    // SAFETY: the server gave `size` readable bytes of host memory at `base`, valid until the request is released, which the returned borrow of `self` outlives.
                    TensorBuffer::borrowed(unsafe {
                        std::slice::from_raw_parts(base as *const u8, size as usize)
                    })
                };
                buffers.push(buffer);
            }
            inputs.push(InputTensor {
                name,
                dtype,
                shape,
                buffers,
            });
        }
        Ok(inputs)
    }
}

impl Request {
    /// Answers the request with a final error response made from the request
    /// itself (for a request whose response factory could not be created).
    pub fn send_error(&self, error: &Error) -> Result<()> {
        let mut response = ptr::null_mut();
        // SAFETY: live request; we own the response until it is sent.
        check(unsafe { raw::TRITONBACKEND_ResponseNew(&mut response, self.raw) })?;
        BuiltResponse::own(response, true, Some(error)).send()
    }

    /// Hands the request back to Triton's scheduler (iterative sequences)
    /// instead of completing it.
    pub fn reschedule(mut self) {
        let raw = std::mem::replace(&mut self.raw, ptr::null_mut());
        // SAFETY: we own the request; this is its one release (Drop skips
        // the null handle left behind).
        let _ = check(unsafe {
            raw::TRITONBACKEND_RequestRelease(raw, raw::RUSTPY_REQUEST_RELEASE_RESCHEDULE)
        });
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: we own the request; this is its one release.
        let _ = check(unsafe {
            raw::TRITONBACKEND_RequestRelease(self.raw, raw::RUSTPY_REQUEST_RELEASE_ALL)
        });
    }
}

/// Creates the responses of one request; may outlive the request.
pub struct ResponseFactory {
    raw: *mut raw::TRITONBACKEND_ResponseFactory,
}

// SAFETY: a response factory may be used from any thread (the backend API
// allows sending from other threads); we never use it from two at once
// (&mut self for every send).
unsafe impl Send for ResponseFactory {}

impl ResponseFactory {
    pub fn new(request: &Request) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: live request; we own the factory.
        check(unsafe { raw::TRITONBACKEND_ResponseFactoryNew(&mut raw, request.raw) })?;
        Ok(ResponseFactory { raw })
    }

    pub fn is_cancelled(&self) -> bool {
        let mut c = false;
        // SAFETY: live factory.
        let _ = check(unsafe { raw::TRITONBACKEND_ResponseFactoryIsCancelled(self.raw, &mut c) });
        c
    }

    /// Builds one response carrying `outputs` and `parameters`
    /// (TRITONBACKEND_ResponseSet*Parameter; the frontends hand them to the
    /// client), its output buffers filled; [`BuiltResponse::send`] sends it.
    pub fn build(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &[(String, ParamValue)],
        final_: bool,
    ) -> Result<BuiltResponse> {
        let response = BuiltResponse::new(self, final_, None)?;
        let raw_response = response.raw;
        let fill = || -> Result<()> {
            for (key, value) in parameters {
                let k = cstring(key);
                // SAFETY: live response (ours until sent); key and value
                // outlive the call, which copies them.
                check(unsafe {
                    match value {
                        ParamValue::String(v) => {
                            let v = cstring(v);
                            raw::TRITONBACKEND_ResponseSetStringParameter(
                                raw_response,
                                k.as_ptr(),
                                v.as_ptr(),
                            )
                        }
                        ParamValue::Int(i) => {
                            raw::TRITONBACKEND_ResponseSetIntParameter(raw_response, k.as_ptr(), *i)
                        }
                        ParamValue::Bool(b) => raw::TRITONBACKEND_ResponseSetBoolParameter(
                            raw_response,
                            k.as_ptr(),
                            *b,
                        ),
                        ParamValue::Double(d) => raw::TRITONBACKEND_ResponseSetDoubleParameter(
                            raw_response,
                            k.as_ptr(),
                            *d,
                        ),
                    }
                })?;
            }
            for out in outputs {
                let name = cstring(out.name);
                let mut output = ptr::null_mut();
                // SAFETY: live response; name and shape outlive the call.
                check(unsafe {
                    raw::TRITONBACKEND_ResponseOutput(
                        raw_response,
                        &mut output,
                        name.as_ptr(),
                        out.dtype as raw::TRITONSERVER_DataType,
                        out.shape.as_ptr(),
                        out.shape.len() as u32,
                    )
                })?;
                // Every output gets a buffer, even an empty one: the server's
                // frontends read the allocation of each output (an output that
                // never had one crashes the HTTP frontend and fails gRPC with
                // "response output count mismatch").
                let (mut buf, mut mem, mut mem_id) =
                    (ptr::null_mut(), raw::TRITONSERVER_MEMORY_CPU, 0i64);
                // SAFETY: live output; asks for a CPU buffer of the data's size.
                check(unsafe {
                    raw::TRITONBACKEND_OutputBuffer(
                        output,
                        &mut buf,
                        out.data.len() as u64,
                        &mut mem,
                        &mut mem_id,
                    )
                })?;
                let data = out.data.host().map_err(|e| output_context(out, e))?;
                if data.is_empty() {
                    continue;
                }
                MemoryKind::from_triton(mem, mem_id)
                    .require_host()
                    .map_err(|e| output_context(out, e))?;
                if buf.is_null() {
                    return Err(Error::internal(format!(
                        "output '{}': the server gave no buffer",
                        out.name
                    )));
                }
                // SAFETY: the server allocated data.len() writable bytes of host memory at `buf`.
                unsafe { ptr::copy_nonoverlapping(data.as_ptr(), buf as *mut u8, data.len()) };
            }
            Ok(())
        };
        // On an error `response` is dropped unsent, which deletes it.
        fill()?;
        Ok(response)
    }

    /// An error response, final or not (decoupled models), ready to send.
    pub fn build_error(&mut self, error: &Error, final_: bool) -> Result<BuiltResponse> {
        BuiltResponse::new(self, final_, Some(error))
    }

    /// Marks the request complete without another response.
    pub fn send_final_flag(&mut self) -> Result<()> {
        // SAFETY: live factory.
        check(unsafe {
            raw::TRITONBACKEND_ResponseFactorySendFlags(
                self.raw,
                raw::RUSTPY_RESPONSE_COMPLETE_FINAL,
            )
        })
    }
}

/// `e` about output `out` of a response.
fn output_context(out: &OutputSlice<'_>, e: Error) -> Error {
    e.context(format!("output '{}'", out.name))
}

/// A response made from a factory, filled and not yet sent: ours until
/// [`BuiltResponse::send`] hands it to the server (dropped unsent, it is
/// deleted). It may be sent from another thread than the one that built it.
pub struct BuiltResponse {
    raw: *mut raw::TRITONBACKEND_Response,
    flags: u32,
    /// The error it carries (an error response), created with it and
    /// deleted after the send, which does not take it.
    error: *mut raw::TRITONSERVER_Error,
}

// SAFETY: a response is not tied to the thread that created it (the backend
// API allows sending from any thread); a BuiltResponse is used by one
// thread at a time (its methods take self by value or &mut).
unsafe impl Send for BuiltResponse {}

impl BuiltResponse {
    fn new(factory: &mut ResponseFactory, final_: bool, error: Option<&Error>) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: live factory; we own the response until it is sent.
        check(unsafe { raw::TRITONBACKEND_ResponseNewFromFactory(&mut raw, factory.raw) })?;
        Ok(Self::own(raw, final_, error))
    }

    /// Takes `raw`, a response just created (from a factory or a request)
    /// and not sent, with its flags and the error it is to carry.
    fn own(raw: *mut raw::TRITONBACKEND_Response, final_: bool, error: Option<&Error>) -> Self {
        let flags = if final_ {
            raw::RUSTPY_RESPONSE_COMPLETE_FINAL
        } else {
            0
        };
        let error = error.map_or(ptr::null_mut(), new_error);
        BuiltResponse { raw, flags, error }
    }

    /// Hands the response to the server (whose frontend completes it on
    /// this thread).
    pub fn send(mut self) -> Result<()> {
        let response = std::mem::replace(&mut self.raw, ptr::null_mut());
        // SAFETY: ResponseSend takes the response whatever it returns, but
        // not the error, which stays ours (deleted when `self` drops).
        check(unsafe { raw::TRITONBACKEND_ResponseSend(response, self.flags, self.error) })
    }
}

impl Drop for BuiltResponse {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: never sent, so still ours to delete.
            let _ = check(unsafe { raw::TRITONBACKEND_ResponseDelete(self.raw) });
        }
        if !self.error.is_null() {
            // SAFETY: ours (from new_error); the send did not take it; deleted once.
            unsafe { raw::TRITONSERVER_ErrorDelete(self.error) };
        }
    }
}

impl Drop for ResponseFactory {
    fn drop(&mut self) {
        // SAFETY: we own the factory; deleted once.
        let _ = check(unsafe { raw::TRITONBACKEND_ResponseFactoryDelete(self.raw) });
    }
}
