//! `rustpy run` and `rustpy test` host a model where the server would: a
//! process-isolated model (and one with its own virtualenv,
//! `rustpy.python_env`) runs in a `rustpy-worker` process, with its
//! environment's packages first on `sys.path`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// `rustpy-worker` next to the `rustpy` under test (built here if the
/// workspace was not built yet, as `cargo test -p rustpy-cli` alone leaves it).
fn ensure_worker() {
    let cli = Path::new(env!("CARGO_BIN_EXE_rustpy"));
    let worker = cli.with_file_name("rustpy-worker");
    if worker.is_file() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "rustpy-worker"]);
    if cli.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build -p rustpy-worker");
    assert!(status.success() && worker.is_file(), "{}", worker.display());
}

/// The Python version `rustpy` embeds (`libpython3.X` it links).
fn embedded_python() -> String {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_rustpy"))
        .output()
        .expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("libpython").expect("rustpy links libpython") + "libpython".len();
    let version: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    version.trim_end_matches('.').to_string()
}

/// A virtualenv (as `python -m venv` lays it out) whose site-packages holds
/// a module found nowhere else.
fn venv_with_module(root: &Path) -> PathBuf {
    let venv = root.join("venv");
    let py = embedded_python();
    write(
        &venv.join("pyvenv.cfg"),
        format!("home = /usr/bin\nversion = {py}.0\n"),
    );
    write(
        &venv.join(format!("lib/python{py}/site-packages/rustpy_venv_only.py")),
        "VALUE = 'from-the-venv'\n",
    );
    venv
}

/// A batched model answering with the value of the venv's module and the
/// pid of the process that runs it; `parameters` go into its config.
fn model(root: &Path, name: &str, parameters: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("repo").join(name);
    let params: String = parameters
        .iter()
        .map(|(k, v)| format!("parameters {{ key: \"{k}\" value {{ string_value: \"{v}\" }} }}\n"))
        .collect();
    write(
        &dir.join("config.pbtxt"),
        format!(
            r#"name: "{name}"
backend: "rustpy"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "SOURCE" data_type: TYPE_STRING dims: [ 1 ] }},
         {{ name: "PID" data_type: TYPE_INT64 dims: [ 1 ] }} ]
{params}"#
        ),
    );
    write(
        &dir.join("1/model.py"),
        r#"import os
import numpy as np

class Model:
    def predict(self, inputs):
        try:
            import rustpy_venv_only
            source = rustpy_venv_only.VALUE
        except ImportError:
            source = "server-python"
        n = inputs["X"].shape[0]
        return {"SOURCE": np.array([[source.encode()]] * n, dtype=object),
                "PID": np.full((n, 1), os.getpid(), dtype=np.int64)}
"#,
    );
    write(
        &dir.join("tests/venv.json"),
        r#"{"inputs": {"X": [[1.0]]}, "outputs": {"SOURCE": [["from-the-venv"]]}}"#,
    );
    dir
}

/// `rustpy run DIR --json`: its exit code, its pid and the answer.
fn run(dir: &Path) -> (i32, u32, Value) {
    let child = rustpy()
        .args(["run", dir.to_str().unwrap(), "--json", "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let doc = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (code(&out), pid, doc)
}

fn output<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let outputs = doc["responses"][0][0]["outputs"].as_array().unwrap();
    &outputs.iter().find(|o| o["name"] == name).unwrap()["data"]
}

#[test]
fn a_model_with_its_own_virtualenv_runs_in_a_worker_with_that_environment() {
    ensure_worker();
    let tmp = tempfile::tempdir().unwrap();
    let venv = venv_with_module(tmp.path());
    let dir = model(
        tmp.path(),
        "venv_model",
        &[("rustpy.python_env", venv.to_str().unwrap())],
    );

    let (rc, cli_pid, doc) = run(&dir);
    assert_eq!(rc, 0, "{doc}");
    assert_eq!(
        output(&doc, "SOURCE"),
        &serde_json::json!([["from-the-venv"]])
    );
    let pid = output(&doc, "PID")[0][0].as_u64().unwrap();
    assert_ne!(
        pid,
        u64::from(cli_pid),
        "the model must run in a worker process"
    );

    // The golden case passes locally, as it would against the server.
    let out = run_in(tmp.path(), &["test", dir.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("PASS  venv_model/venv"),
        "{}",
        stdout(&out)
    );

    // Without the environment the module is not there: the case fails.
    let plain = model(tmp.path(), "plain_model", &[]);
    let out = run_in(tmp.path(), &["test", plain.to_str().unwrap()]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains("server-python"), "{}", stdout(&out));
}

#[test]
fn process_isolation_runs_the_model_outside_the_cli_process() {
    ensure_worker();
    let tmp = tempfile::tempdir().unwrap();
    let isolated = model(tmp.path(), "isolated", &[("rustpy.isolation", "process")]);
    let (rc, cli_pid, doc) = run(&isolated);
    assert_eq!(rc, 0, "{doc}");
    assert_ne!(
        output(&doc, "PID")[0][0].as_u64().unwrap(),
        u64::from(cli_pid)
    );
    assert_eq!(
        output(&doc, "SOURCE"),
        &serde_json::json!([["server-python"]])
    );

    // In-process (the default): the model runs in the CLI itself.
    let inproc = model(tmp.path(), "inproc", &[]);
    let (rc, cli_pid, doc) = run(&inproc);
    assert_eq!(rc, 0, "{doc}");
    assert_eq!(
        output(&doc, "PID")[0][0].as_u64().unwrap(),
        u64::from(cli_pid)
    );
}

#[test]
fn a_missing_worker_executable_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let isolated = model(tmp.path(), "isolated", &[("rustpy.isolation", "process")]);
    let out = rustpy()
        .env("RUSTPY_WORKER", tmp.path().join("no-such-worker"))
        .args(["run", isolated.to_str().unwrap(), "-q"])
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("no-such-worker"), "{}", stderr(&out));
}
