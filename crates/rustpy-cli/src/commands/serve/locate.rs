//! Finding tritonserver, the rustpy backend library and the official Python
//! backend on this machine.

use std::{
    env,
    path::{Path, PathBuf},
};

/// Where `ci/install.sh` unpacks tritonserver, relative to the project root.
const DEPS_TRITONSERVER: &str = ".rustpy-deps/pytriton/tritonserver/bin/tritonserver";
/// The same inside the directory `ci/install.sh` was told to use (`$RUSTPY_DEPS`).
const TRITONSERVER_IN_DEPS: &str = "pytriton/tritonserver/bin/tritonserver";
const BACKEND_LIB: &str = "libtriton_rustpy.so";

/// Why a file was not found. `explicit` when the user named the path (flag
/// or environment variable), which makes it a usage error rather than a
/// missing installation.
#[derive(Debug)]
pub struct NotFound {
    pub message: String,
    pub explicit: bool,
}

fn named(message: String) -> NotFound {
    NotFound {
        message,
        explicit: true,
    }
}

/// tritonserver: `--tritonserver`, `$TRITONSERVER`, PATH, `$RUSTPY_DEPS`
/// (where `ci/install.sh` put it when told), then `.rustpy-deps/` searched
/// upward from the current directory and from this executable's directory.
pub fn tritonserver(flag: Option<&Path>) -> Result<PathBuf, NotFound> {
    if let Some(path) = flag {
        return executable(path).then(|| path.to_path_buf()).ok_or_else(|| {
            named(format!(
                "--tritonserver {}: not an executable file",
                path.display()
            ))
        });
    }
    if let Some(path) = env::var_os("TRITONSERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path).then_some(path.clone()).ok_or_else(|| {
            named(format!(
                "TRITONSERVER={}: not an executable file",
                path.display()
            ))
        });
    }
    if let Some(path) = in_path("tritonserver") {
        return Ok(path);
    }
    let deps = env::var_os("RUSTPY_DEPS")
        .filter(|p| !p.is_empty())
        .map(|d| PathBuf::from(d).join(TRITONSERVER_IN_DEPS));
    if let Some(path) = deps.filter(|p| executable(p)) {
        return Ok(path);
    }
    search_roots()
        .iter()
        .flat_map(|root| root.ancestors())
        .map(|dir| dir.join(DEPS_TRITONSERVER))
        .find(|p| executable(p))
        .ok_or_else(|| NotFound {
            message: "tritonserver not found: pass --tritonserver PATH, set TRITONSERVER, put it \
                      on PATH, or run ci/install.sh to get .rustpy-deps/ (or $RUSTPY_DEPS)"
                .to_owned(),
            explicit: false,
        })
}

/// libtriton_rustpy.so: `--backend-lib`, `$RUSTPY_BACKEND_LIB`, next to this
/// executable (cargo puts the cdylib beside the binary), then
/// `target/release/` searched upward from the current directory.
pub fn backend_lib(flag: Option<&Path>) -> Result<Option<PathBuf>, NotFound> {
    if let Some(path) = flag {
        return if path.is_file() {
            Ok(Some(path.to_path_buf()))
        } else {
            Err(named(format!(
                "--backend-lib {}: no such file",
                path.display()
            )))
        };
    }
    if let Some(path) = env::var_os("RUSTPY_BACKEND_LIB").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(named(format!(
                "RUSTPY_BACKEND_LIB={}: no such file",
                path.display()
            )))
        };
    }
    let beside_exe = exe_dir().map(|d| d.join(BACKEND_LIB));
    let in_targets = env::current_dir().ok().into_iter().flat_map(|cwd| {
        cwd.ancestors()
            .map(|d| d.join("target/release").join(BACKEND_LIB))
            .collect::<Vec<_>>()
    });
    Ok(beside_exe
        .into_iter()
        .chain(in_targets)
        .find(|p| p.is_file()))
}

/// The official Python backend shipped with tritonserver: `<bin>/../backends/python`.
pub fn python_backend(tritonserver: &Path) -> Option<PathBuf> {
    let real = tritonserver.canonicalize().ok()?;
    let dir = real.parent()?.parent()?.join("backends").join("python");
    dir.join("libtriton_python.so").is_file().then_some(dir)
}

fn search_roots() -> Vec<PathBuf> {
    env::current_dir()
        .ok()
        .into_iter()
        .chain(exe_dir())
        .collect()
}

fn exe_dir() -> Option<PathBuf> {
    let exe = env::current_exe().ok()?;
    let exe = exe.canonicalize().unwrap_or(exe);
    exe.parent().map(Path::to_path_buf)
}

fn in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

#[cfg(unix)]
fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn executable(path: &Path) -> bool {
    path.is_file()
}
