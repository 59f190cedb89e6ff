//! Process-level helpers that need libc: the steady clock Triton's statistics
//! use, making libpython's symbols global, and the path this library was
//! loaded from (to find `rustpy-worker` beside it).

use std::ffi::CStr;

/// CLOCK_MONOTONIC in nanoseconds, the clock Triton's statistics expect.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Re-opens the libpython we are linked against with RTLD_GLOBAL.
///
/// Triton dlopens backends RTLD_LOCAL, so libpython (our dependency) is not in
/// the global namespace, and C extension modules such as numpy's, which expect
/// to find Py* symbols there, fail to load with undefined symbols.
pub fn promote_libpython_to_global() -> Result<String, String> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let sym = pyo3::ffi::Py_IsInitialized as *const libc::c_void;
    // SAFETY: dladdr only inspects the address and fills `info`.
    if unsafe { libc::dladdr(sym, &mut info) } == 0 || info.dli_fname.is_null() {
        return Err("cannot locate libpython (dladdr failed)".into());
    }
    // SAFETY: dli_fname points to a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    // SAFETY: path is a valid C string; the handle is intentionally leaked so
    // libpython stays loaded (and global) for the life of the process.
    let handle = unsafe {
        libc::dlopen(
            path.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_GLOBAL | libc::RTLD_NOLOAD,
        )
    };
    if handle.is_null() {
        // SAFETY: as above, without NOLOAD in case the lookup found a copy.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a thread-local message or null.
            let err = unsafe { libc::dlerror() };
            let msg = if err.is_null() {
                String::new()
            } else {
                // SAFETY: dlerror returned a non-null, NUL-terminated thread-local message; copied here.
                unsafe { CStr::from_ptr(err) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!("dlopen({}) failed: {msg}", path.to_string_lossy()));
        }
    }
    Ok(path.to_string_lossy().into_owned())
}

/// The path this library was loaded from (as the loader saw it: the backend
/// directory, even when that entry is a symlink).
pub fn own_library_path() -> Option<std::path::PathBuf> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let sym = own_library_path as *const libc::c_void;
    // SAFETY: dladdr only inspects the address and fills `info`.
    if unsafe { libc::dladdr(sym, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname points to a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    use std::os::unix::ffi::OsStrExt;
    Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
        path.to_bytes(),
    )))
}
