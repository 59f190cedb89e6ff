//! The subset of Triton's in-process server C API (tritonserver.h, API 1.x as
//! shipped with tritonserver 2.51) that the in-process driver uses, loaded at
//! run time with `dlopen` so that this crate builds without the library.
//!
//! This is the only module of rustpy-bench with `unsafe`. Signatures and enum
//! values are facts from `include/triton/core/tritonserver.h`
//! (github.com/triton-inference-server/core); only the functions called here
//! are declared.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

#[repr(C)]
pub struct TError {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TServer {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TOptions {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TMessage {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TAllocator {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TRequest {
    _p: [u8; 0],
}
#[repr(C)]
pub struct TResponse {
    _p: [u8; 0],
}

/// TRITONSERVER_MemoryType: CPU.
pub const MEMORY_CPU: u32 = 0;
/// TRITONSERVER_MODEL_CONTROL_EXPLICIT.
const MODEL_CONTROL_EXPLICIT: u32 = 2;
/// TRITONSERVER_RESPONSE_COMPLETE_FINAL.
pub const RESPONSE_COMPLETE_FINAL: u32 = 1;

/// TRITONSERVER_DataType for a KServe datatype name.
pub fn datatype_code(name: &str) -> u32 {
    match name {
        "BOOL" => 1,
        "UINT8" => 2,
        "UINT16" => 3,
        "UINT32" => 4,
        "UINT64" => 5,
        "INT8" => 6,
        "INT16" => 7,
        "INT32" => 8,
        "INT64" => 9,
        "FP16" => 10,
        "FP32" => 11,
        "FP64" => 12,
        "BYTES" => 13,
        "BF16" => 14,
        _ => 0,
    }
}

pub type AllocFn = unsafe extern "C" fn(
    *mut TAllocator,
    *const c_char,
    usize,
    u32,
    i64,
    *mut c_void,
    *mut *mut c_void,
    *mut *mut c_void,
    *mut u32,
    *mut i64,
) -> *mut TError;
pub type ReleaseFn =
    unsafe extern "C" fn(*mut TAllocator, *mut c_void, *mut c_void, usize, u32, i64) -> *mut TError;
pub type RequestReleaseFn = unsafe extern "C" fn(*mut TRequest, u32, *mut c_void);
pub type ResponseCompleteFn = unsafe extern "C" fn(*mut TResponse, u32, *mut c_void);

macro_rules! api {
    ($($field:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// Function pointers resolved from libtritonserver.
        #[allow(non_snake_case)]
        pub struct Api {
            _lib: Library,
            $(pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }
        impl Api {
            /// Opens the library RTLD_LOCAL, as perf_analyzer's C API mode
            /// does: its symbols are not global, so a backend resolves the
            /// server API only through its own needed libtritonserver.so
            /// (which the in-process driver thereby tests). Resolves every
            /// function, failing with the first missing name.
            #[allow(non_snake_case)]
            pub fn load(path: &Path) -> Result<Api, String> {
                // SAFETY: loading libtritonserver runs its initialisers, which
                // only set up the library's own globals; the process has no
                // other copy of it.
                let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
                    .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
                $(
                    // SAFETY: the symbol is a function with exactly this
                    // signature in tritonserver.h; the pointer stays valid
                    // while `_lib` (stored alongside) is loaded.
                    let $field = unsafe {
                        *lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($field), "\0").as_bytes())
                            .map_err(|e| format!("{}: {e}", stringify!($field)))?
                    };
                )*
                Ok(Api { _lib: lib, $($field,)* })
            }
        }
    };
}

api! {
    TRITONSERVER_ErrorMessage: fn(*mut TError) -> *const c_char;
    TRITONSERVER_ErrorCodeString: fn(*mut TError) -> *const c_char;
    TRITONSERVER_ErrorDelete: fn(*mut TError);
    TRITONSERVER_MessageSerializeToJson: fn(*mut TMessage, *mut *const c_char, *mut usize) -> *mut TError;
    TRITONSERVER_MessageDelete: fn(*mut TMessage) -> *mut TError;
    TRITONSERVER_ServerOptionsNew: fn(*mut *mut TOptions) -> *mut TError;
    TRITONSERVER_ServerOptionsDelete: fn(*mut TOptions) -> *mut TError;
    TRITONSERVER_ServerOptionsSetModelRepositoryPath: fn(*mut TOptions, *const c_char) -> *mut TError;
    TRITONSERVER_ServerOptionsSetModelControlMode: fn(*mut TOptions, u32) -> *mut TError;
    TRITONSERVER_ServerOptionsSetStartupModel: fn(*mut TOptions, *const c_char) -> *mut TError;
    TRITONSERVER_ServerOptionsSetStrictModelConfig: fn(*mut TOptions, bool) -> *mut TError;
    TRITONSERVER_ServerOptionsSetBackendDirectory: fn(*mut TOptions, *const c_char) -> *mut TError;
    TRITONSERVER_ServerOptionsSetBackendConfig: fn(*mut TOptions, *const c_char, *const c_char, *const c_char) -> *mut TError;
    TRITONSERVER_ServerOptionsSetLogFile: fn(*mut TOptions, *const c_char) -> *mut TError;
    TRITONSERVER_ServerOptionsSetLogVerbose: fn(*mut TOptions, i32) -> *mut TError;
    TRITONSERVER_ServerOptionsSetMetrics: fn(*mut TOptions, bool) -> *mut TError;
    TRITONSERVER_ServerOptionsSetExitTimeout: fn(*mut TOptions, u32) -> *mut TError;
    TRITONSERVER_ServerOptionsSetExitOnError: fn(*mut TOptions, bool) -> *mut TError;
    TRITONSERVER_ServerNew: fn(*mut *mut TServer, *mut TOptions) -> *mut TError;
    TRITONSERVER_ServerDelete: fn(*mut TServer) -> *mut TError;
    TRITONSERVER_ServerStop: fn(*mut TServer) -> *mut TError;
    TRITONSERVER_ServerModelIsReady: fn(*mut TServer, *const c_char, i64, *mut bool) -> *mut TError;
    TRITONSERVER_ServerModelStatistics: fn(*mut TServer, *const c_char, i64, *mut *mut TMessage) -> *mut TError;
    TRITONSERVER_ServerInferAsync: fn(*mut TServer, *mut TRequest, *mut c_void) -> *mut TError;
    TRITONSERVER_ResponseAllocatorNew: fn(*mut *mut TAllocator, AllocFn, ReleaseFn, *mut c_void) -> *mut TError;
    TRITONSERVER_ResponseAllocatorDelete: fn(*mut TAllocator) -> *mut TError;
    TRITONSERVER_InferenceRequestNew: fn(*mut *mut TRequest, *mut TServer, *const c_char, i64) -> *mut TError;
    TRITONSERVER_InferenceRequestDelete: fn(*mut TRequest) -> *mut TError;
    TRITONSERVER_InferenceRequestAddInput: fn(*mut TRequest, *const c_char, u32, *const i64, u64) -> *mut TError;
    TRITONSERVER_InferenceRequestAppendInputData: fn(*mut TRequest, *const c_char, *const c_void, usize, u32, i64) -> *mut TError;
    TRITONSERVER_InferenceRequestAddRequestedOutput: fn(*mut TRequest, *const c_char) -> *mut TError;
    TRITONSERVER_InferenceRequestSetReleaseCallback: fn(*mut TRequest, RequestReleaseFn, *mut c_void) -> *mut TError;
    TRITONSERVER_InferenceRequestSetResponseCallback: fn(*mut TRequest, *mut TAllocator, *mut c_void, ResponseCompleteFn, *mut c_void) -> *mut TError;
    TRITONSERVER_InferenceResponseDelete: fn(*mut TResponse) -> *mut TError;
    TRITONSERVER_InferenceResponseError: fn(*mut TResponse) -> *mut TError;
    TRITONSERVER_InferenceResponseOutputCount: fn(*mut TResponse, *mut u32) -> *mut TError;
    TRITONSERVER_InferenceResponseOutput: fn(*mut TResponse, u32, *mut *const c_char, *mut u32, *mut *const i64, *mut u64, *mut *const c_void, *mut usize, *mut u32, *mut i64, *mut *mut c_void) -> *mut TError;
}

// SAFETY: the struct holds function pointers and the library handle; the
// functions themselves are thread-safe per tritonserver.h (the server API is
// called from any thread).
unsafe impl Send for Api {}
// SAFETY: as above; nothing in `Api` is mutated after `load`.
unsafe impl Sync for Api {}

impl Api {
    /// Turns a returned error into `Err("CODE: message")`, deleting it.
    pub fn check(&self, err: *mut TError, what: &str) -> Result<(), String> {
        if err.is_null() {
            return Ok(());
        }
        Err(format!("{what}: {}", self.take_error(err)))
    }

    /// The text of an error we own, which is deleted.
    pub fn take_error(&self, err: *mut TError) -> String {
        let text = self.error_text(err);
        // SAFETY: `err` is an error object returned to us (we own it) and is
        // deleted exactly once, here.
        unsafe { (self.TRITONSERVER_ErrorDelete)(err) };
        text
    }

    /// The text of an error we do not own (e.g. a response's error).
    pub fn error_text(&self, err: *mut TError) -> String {
        // SAFETY: `err` is a live error object; both functions return
        // NUL-terminated strings owned by it, copied before it can go away.
        unsafe {
            let code = CStr::from_ptr((self.TRITONSERVER_ErrorCodeString)(err));
            let msg = CStr::from_ptr((self.TRITONSERVER_ErrorMessage)(err));
            format!("{}: {}", code.to_string_lossy(), msg.to_string_lossy())
        }
    }
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Server settings.
pub struct ServerConfig<'a> {
    pub repository: &'a Path,
    pub backend_dir: &'a Path,
    pub models: &'a [String],
    pub log_file: Option<&'a Path>,
    /// (backend, setting, value), e.g. the python backend's shm-region-prefix-name.
    pub backend_config: Vec<(String, String, String)>,
}

/// A running in-process server; stopped and deleted on drop.
pub struct Server {
    pub api: Api,
    raw: *mut TServer,
}

// SAFETY: the server object may be used from any thread (tritonserver.h: the
// server API is thread-safe); `raw` is only deleted in Drop.
unsafe impl Send for Server {}
// SAFETY: as above.
unsafe impl Sync for Server {}

impl Server {
    pub fn start(api: Api, cfg: &ServerConfig) -> Result<Server, String> {
        let mut opts: *mut TOptions = ptr::null_mut();
        api.check(
            // SAFETY: writes a new options object to `opts`, which we delete below.
            unsafe { (api.TRITONSERVER_ServerOptionsNew)(&mut opts) },
            "ServerOptionsNew",
        )?;
        let result = (|| -> Result<*mut TServer, String> {
            let repo = cstr(&cfg.repository.to_string_lossy())?;
            let bdir = cstr(&cfg.backend_dir.to_string_lossy())?;
            // SAFETY: (every call in this block) `opts` is the live options
            // object created above; the strings are NUL-terminated and copied
            // by the callee.
            unsafe {
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetModelRepositoryPath)(opts, repo.as_ptr()),
                    "repository",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetBackendDirectory)(opts, bdir.as_ptr()),
                    "backend directory",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetModelControlMode)(
                        opts,
                        MODEL_CONTROL_EXPLICIT,
                    ),
                    "model control",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetStrictModelConfig)(opts, true),
                    "strict config",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetMetrics)(opts, false),
                    "metrics",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetLogVerbose)(opts, 0),
                    "log verbose",
                )?;
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetExitTimeout)(opts, 10),
                    "exit timeout",
                )?;
                // A model that fails to load is reported (not ready), not fatal.
                api.check(
                    (api.TRITONSERVER_ServerOptionsSetExitOnError)(opts, false),
                    "exit on error",
                )?;
                for m in cfg.models {
                    let m = cstr(m)?;
                    api.check(
                        (api.TRITONSERVER_ServerOptionsSetStartupModel)(opts, m.as_ptr()),
                        "startup model",
                    )?;
                }
                for (b, k, v) in &cfg.backend_config {
                    let (b, k, v) = (cstr(b)?, cstr(k)?, cstr(v)?);
                    api.check(
                        (api.TRITONSERVER_ServerOptionsSetBackendConfig)(
                            opts,
                            b.as_ptr(),
                            k.as_ptr(),
                            v.as_ptr(),
                        ),
                        "backend config",
                    )?;
                }
                if let Some(f) = cfg.log_file {
                    let f = cstr(&f.to_string_lossy())?;
                    api.check(
                        (api.TRITONSERVER_ServerOptionsSetLogFile)(opts, f.as_ptr()),
                        "log file",
                    )?;
                }
                let mut raw: *mut TServer = ptr::null_mut();
                api.check((api.TRITONSERVER_ServerNew)(&mut raw, opts), "ServerNew")?;
                Ok(raw)
            }
        })();
        // SAFETY: `opts` was created above and is deleted exactly once; the
        // server copies what it needs in ServerNew.
        let _ = api.check(
            unsafe { (api.TRITONSERVER_ServerOptionsDelete)(opts) },
            "options delete",
        );
        let raw = result?;
        Ok(Server { api, raw })
    }

    pub fn raw(&self) -> *mut TServer {
        self.raw
    }

    pub fn model_ready(&self, model: &str) -> Result<bool, String> {
        let name = cstr(model)?;
        let mut ready = false;
        // SAFETY: live server, NUL-terminated name, `ready` is ours.
        let err = unsafe {
            (self.api.TRITONSERVER_ServerModelIsReady)(self.raw, name.as_ptr(), -1, &mut ready)
        };
        self.api.check(err, "ModelIsReady")?;
        Ok(ready)
    }

    /// The model's statistics as JSON (the same document as HTTP's
    /// /v2/models/<m>/stats).
    pub fn model_stats(&self, model: &str) -> Result<serde_json::Value, String> {
        let name = cstr(model)?;
        let mut msg: *mut TMessage = ptr::null_mut();
        // SAFETY: live server, NUL-terminated name; `msg` receives a message we own.
        let err = unsafe {
            (self.api.TRITONSERVER_ServerModelStatistics)(self.raw, name.as_ptr(), -1, &mut msg)
        };
        self.api.check(err, "ModelStatistics")?;
        let mut base: *const c_char = ptr::null();
        let mut size = 0usize;
        // SAFETY: `msg` is live; base/size point into it and are copied
        // before the message is deleted (exactly once) below.
        let text = unsafe {
            let err = (self.api.TRITONSERVER_MessageSerializeToJson)(msg, &mut base, &mut size);
            let text = if err.is_null() {
                Ok(std::slice::from_raw_parts(base as *const u8, size).to_vec())
            } else {
                Err(self.api.take_error(err))
            };
            let _ = self
                .api
                .check((self.api.TRITONSERVER_MessageDelete)(msg), "MessageDelete");
            text
        }?;
        serde_json::from_slice(&text).map_err(|e| format!("statistics are not JSON: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: `raw` is the live server created in `start`; stopped and
        // deleted exactly once here.
        unsafe {
            let _ = self
                .api
                .check((self.api.TRITONSERVER_ServerStop)(self.raw), "ServerStop");
            let _ = self.api.check(
                (self.api.TRITONSERVER_ServerDelete)(self.raw),
                "ServerDelete",
            );
        }
    }
}
