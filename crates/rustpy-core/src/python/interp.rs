//! Process-wide interpreter setup: the interpreter, `_rustpy_native`,
//! runtime.py, pb_utils.py, extra site-packages.

use std::ffi::CStr;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::sync::OnceLockExt;
use pyo3::types::PyModule;

use super::error::py_error;
use super::runtime::runtime;
use crate::error::{Error, ErrorCode, Result};

const PB_UTILS_SOURCE: &CStr = pyo3::ffi::c_str!(include_str!("pb_utils.py"));

/// What the first `initialize` made of the glue; every later call returns it.
static GLUE: OnceLock<Result<()>> = OnceLock::new();

/// Starts the interpreter and its glue once per process (later calls are
/// no-ops that return the first call's outcome).
///
/// Python is initialised without its signal handlers so the host keeps
/// SIGINT/SIGTERM, and it is never finalised: C extensions cannot survive a
/// re-initialisation, and user threads may outlive any model.
///
/// The glue must run exactly once: Python executes a module's code into the
/// module already registered under its name, so a second run would redefine
/// `pb_utils.ModelConfig`, `Tensor`, ... under models that are running (Triton
/// loads models on several threads), and their `isinstance` checks would fail.
pub fn initialize() -> Result<()> {
    if let Some(done) = GLUE.get() {
        return done.clone();
    }
    refuse_another_python()?;
    Python::initialize();
    // Waits with the GIL released, so a thread inside the glue (whose Python
    // code may release the GIL) can finish.
    Python::attach(|py| {
        GLUE.get_or_init_py_attached(py, || {
            install_glue(py).map_err(|e| py_error(py, &e, "starting the Python interpreter"))
        })
        .clone()
    })
}

/// sys settings, `_rustpy_native`, runtime.py and pb_utils: run once, under the GIL.
fn install_glue(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    // Some libraries read sys.argv[0]; an embedded interpreter has none.
    let has_argv = sys
        .getattr("argv")
        .map(|a| a.len().unwrap_or(0) > 0)
        .unwrap_or(false);
    if !has_argv {
        sys.setattr("argv", vec!["tritonserver"])?;
    }
    // Never leave __pycache__ in model repositories, and never let a stale
    // .pyc shadow an edited model.py on reload.
    sys.setattr("dont_write_bytecode", true)?;
    // A model's print() must reach the server's stdout/stderr even when
    // they are a file or a pipe (systemd, Kubernetes, log collectors),
    // where Python would block-buffer them and, never finalised, never
    // flush: line-buffer both (flush_stdio() covers partial lines).
    for name in ["stdout", "stderr"] {
        if let Ok(stream) = sys.getattr(name) {
            if !stream.is_none() && stream.hasattr("reconfigure").unwrap_or(false) {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("line_buffering", true)?;
                // A replaced stream may not support it: keep it as it is.
                let _ = stream.call_method("reconfigure", (), Some(&kwargs));
            }
        }
    }
    // runtime.py imports `_rustpy_native`: registered first.
    let modules = sys.getattr("modules")?;
    if !modules.contains("_rustpy_native")? {
        modules.set_item("_rustpy_native", super::native::module(py)?)?;
    }
    runtime(py)?;
    // Models written for the official Python backend import these names.
    let pb_utils = PyModule::from_code(
        py,
        PB_UTILS_SOURCE,
        c"triton_python_backend_utils.py",
        c"triton_python_backend_utils",
    )?;
    modules.set_item("triton_python_backend_utils", &pb_utils)?;
    let source = PB_UTILS_SOURCE.to_str().unwrap_or_default();
    runtime(py)?.attach_pb_utils(py, &pb_utils, source)?;
    Ok(())
}

/// The environment must not hand the embedded interpreter another Python
/// version's files: a PYTHONHOME without this version's standard library makes
/// Python abort the whole process while starting, and another version's
/// packages on PYTHONPATH fail (or crash) at import.
fn refuse_another_python() -> Result<()> {
    let Some(embedded) = rustpy_config::pyenv::embedded_python_version() else {
        return Ok(());
    };
    let var = |name| std::env::var(name).ok();
    let problems = rustpy_config::pyenv::environment_problems(
        var("PYTHONHOME").as_deref(),
        var("PYTHONPATH").as_deref(),
        embedded,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::Unsupported, problems.join("; ")))
    }
}

/// Flushes Python's sys.stdout and sys.stderr (what a model printed without
/// a newline); a no-op before the interpreter starts.
pub fn flush_stdio() {
    if !is_initialized() {
        return;
    }
    Python::attach(|py| {
        if let Ok(sys) = py.import("sys") {
            for name in ["stdout", "stderr"] {
                if let Ok(stream) = sys.getattr(name) {
                    if !stream.is_none() {
                        let _ = stream.call_method0("flush");
                    }
                }
            }
        }
    });
}

/// Whether `initialize` has started the interpreter (and its glue) in this process.
fn is_initialized() -> bool {
    super::runtime::is_created()
}

/// Puts a directory of installed packages (`rustpy env --target DIR`) at the
/// front of `sys.path`, processing its `.pth` files as `site.addsitedir` does,
/// so its versions win over the interpreter's own site-packages.
pub fn add_site_packages(dir: &std::path::Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(crate::error::Error::invalid_arg(format!(
            "site-packages directory {} does not exist (create it with `rustpy env REPO --target DIR`)",
            dir.display()
        )));
    }
    if let Some(embedded) = rustpy_config::pyenv::embedded_python_version() {
        rustpy_config::pyenv::require_site_packages_for(dir, embedded)
            .map_err(crate::error::Error::invalid_arg)?;
    }
    Python::attach(|py| -> PyResult<()> {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?;
        let before: Vec<String> = path.extract()?;
        py.import("site")?
            .call_method1("addsitedir", (dir.to_string_lossy(),))?;
        let after: Vec<String> = path.extract()?;
        let added: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
        let mut reordered: Vec<&String> = added.clone();
        reordered.extend(after.iter().filter(|p| !added.contains(p)));
        sys.setattr("path", reordered)?;
        Ok(())
    })
    .map_err(|e| Python::attach(|py| py_error(py, &e, "adding site-packages")))
}
