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

/// The project's tritonserver, if `ci/install.sh` has been run.
pub fn project_tritonserver() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2)?;
    let ts = root.join(".rustpy-deps/pytriton/tritonserver/bin/tritonserver");
    ts.is_file().then_some(ts)
}
