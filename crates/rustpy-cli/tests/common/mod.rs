//! Helpers for running the built `rustpy` binary like a user would.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub const TASKS: &[&str] = &[
    "image-classification",
    "text-embedding",
    "text-generation",
    "object-detection",
    "passthrough",
];

/// A `rustpy` command with a predictable environment.
pub fn rustpy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustpy"));
    cmd.env_remove("RUSTPY_PYTHON")
        .env_remove("TRITONSERVER")
        .env_remove("RUSTPY_BACKEND_LIB");
    cmd
}

/// Runs `rustpy ARGS` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    rustpy()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run rustpy")
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("rustpy exited by a signal")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
pub fn assert_code(out: &Output, want: i32) {
    assert_eq!(
        code(out),
        want,
        "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// `rustpy init NAME --task TASK --dir REPO [extra...]`, expected to succeed.
pub fn init(dir: &Path, repo: &str, name: &str, task: &str, extra: &[&str]) {
    let mut args = vec!["init", name, "--task", task, "--dir", repo];
    args.extend_from_slice(extra);
    assert_code(&run_in(dir, &args), 0);
}

pub fn write(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, contents).unwrap();
}

/// Entry names of a zip, in archive order.
pub fn zip_names(path: &Path) -> Vec<String> {
    let zip = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| zip.name_for_index(i).unwrap().to_owned())
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file under `root`, relative and `/`-separated, sorted.
pub fn list_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    out.sort();
    out
}

/// Whether the tests that run the real tritonserver must run:
/// `RUSTPY_REQUIRE_SERVER=1` (ci/test.sh sets it) turns a missing server or
/// backend library into a failure. Without it (a plain `cargo test` on a
/// machine without `ci/install.sh`'s deps) such a test prints why and returns.
pub fn server_required() -> bool {
    std::env::var("RUSTPY_REQUIRE_SERVER").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The first of `candidates` that is a file; else a skip (`None`, with the
/// places looked at printed) or, under `RUSTPY_REQUIRE_SERVER`, a panic.
#[track_caller]
fn find_or_skip(what: &str, candidates: Vec<PathBuf>) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    let why = format!("no {what} (looked at: {})", looked.join(", "));
    if server_required() {
        panic!("{why}; RUSTPY_REQUIRE_SERVER is set, so this test may not skip (run ci/install.sh and cargo build --release --workspace)");
    }
    eprintln!("skipping: {why}");
    None
}

/// The tritonserver of `ci/install.sh`: `$TRITONSERVER`, else
/// `$RUSTPY_DEPS/pytriton/tritonserver/bin/tritonserver` (the deps dir
/// ci/test.sh uses), else the repository's `.rustpy-deps/`.
#[track_caller]
pub fn tritonserver_or_skip() -> Option<PathBuf> {
    const IN_DEPS: &str = "pytriton/tritonserver/bin/tritonserver";
    let mut candidates = Vec::new();
    if let Some(ts) = std::env::var_os("TRITONSERVER").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(ts));
    } else {
        if let Some(deps) = std::env::var_os("RUSTPY_DEPS").filter(|v| !v.is_empty()) {
            candidates.push(Path::new(&deps).join(IN_DEPS));
        }
        candidates.push(repo_root().join(".rustpy-deps").join(IN_DEPS));
    }
    find_or_skip("tritonserver", candidates)
}

/// `libtriton_rustpy.so`: `$RUSTPY_BACKEND_LIB`, else beside the `rustpy`
/// binary under test (the target dir and profile cargo is using, whatever
/// `CARGO_TARGET_DIR` says), else `$CARGO_TARGET_DIR/release`, else the
/// repository's `target/release`.
#[track_caller]
pub fn backend_lib_or_skip() -> Option<PathBuf> {
    const LIB: &str = "libtriton_rustpy.so";
    let mut candidates = Vec::new();
    if let Some(lib) = std::env::var_os("RUSTPY_BACKEND_LIB").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(lib));
    } else {
        if let Some(dir) = Path::new(env!("CARGO_BIN_EXE_rustpy")).parent() {
            candidates.push(dir.join(LIB));
        }
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            candidates.push(Path::new(&dir).join("release").join(LIB));
        }
        candidates.push(repo_root().join("target/release").join(LIB));
    }
    candidates.dedup();
    find_or_skip("rustpy backend library", candidates)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/rustpy-cli is two levels below the repository")
        .to_path_buf()
}
