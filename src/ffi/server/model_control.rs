//! Model control on behalf of model code (`pb_utils.load_model` and friends):
//! load (with an override config and files), unload, readiness and whether a
//! model is decoupled.

use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr;

use super::{Result, TritonServerApi};
use crate::ffi::{check, cstring, raw};

/// Loads (or reloads) `name`, with `config_json` (if not empty) overriding
/// its config and `files` (path, content) overriding its files.
pub(super) fn load(
    api: &TritonServerApi,
    name: &str,
    config_json: &str,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
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
            api.server,
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

pub(super) fn unload(api: &TritonServerApi, name: &str, unload_dependents: bool) -> Result<()> {
    let cname = cstring(name);
    // SAFETY: live server; the name outlives the call.
    check(unsafe {
        if unload_dependents {
            raw::TRITONSERVER_ServerUnloadModelAndDependents(api.server, cname.as_ptr())
        } else {
            raw::TRITONSERVER_ServerUnloadModel(api.server, cname.as_ptr())
        }
    })
}

pub(super) fn is_ready(api: &TritonServerApi, name: &str, version: i64) -> Result<bool> {
    let cname = cstring(name);
    let mut ready = false;
    // SAFETY: live server.
    check(unsafe {
        raw::TRITONSERVER_ServerModelIsReady(api.server, cname.as_ptr(), version, &mut ready)
    })?;
    Ok(ready)
}

pub(super) fn is_decoupled(api: &TritonServerApi, name: &str, version: i64) -> Result<bool> {
    let cname = cstring(name);
    let mut flags = 0u32;
    // SAFETY: live server; the name outlives the call; voidp may be null.
    check(unsafe {
        raw::TRITONSERVER_ServerModelTransactionProperties(
            api.server,
            cname.as_ptr(),
            version,
            &mut flags,
            ptr::null_mut(),
        )
    })?;
    Ok(flags & raw::RUSTPY_TXN_DECOUPLED != 0)
}
