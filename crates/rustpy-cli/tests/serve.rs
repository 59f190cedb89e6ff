//! `rustpy serve` against the real tritonserver from `ci/install.sh`, with a
//! model for the official Python backend only (the rustpy backend library
//! may not be built). Without ci/install.sh's tritonserver (or the library,
//! for the tests that need it) a test prints why and returns, unless
//! `RUSTPY_REQUIRE_SERVER` is set (ci/test.sh sets it): then it fails.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::*;

const CONFIG: &str = r#"name: "pyadd"
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

const MODEL: &str = r#"import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses
"#;

fn python_repo(root: &Path, model_py: &str) {
    write(&root.join("repo/pyadd/config.pbtxt"), CONFIG);
    write(&root.join("repo/pyadd/1/model.py"), model_py);
}

fn http_post(addr: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // One write: Triton's HTTP server (evhtp) can misroute a request whose
    // head arrives split over several TCP segments.
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A running `rustpy serve`; stopped (Ctrl-C, then kill) when dropped, so a
/// failing assertion leaves no server behind.
struct Serve {
    child: Child,
    ready: serde_json::Value,
}

impl Serve {
    /// Starts `rustpy serve --json ARGS` in `dir` and waits for its
    /// readiness report (the first stdout line).
    fn start(dir: &Path, args: &[&str]) -> Serve {
        let mut child = rustpy()
            .current_dir(dir)
            // The default server log lands in the temp dir: keep it in ours.
            .env("TMPDIR", dir)
            .args(["serve", "--json", "--ready-timeout", "120"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(150))
            .unwrap_or_default();
        let mut serve = Serve {
            child,
            ready: serde_json::Value::Null,
        };
        match serde_json::from_str(&line) {
            Ok(v) => serve.ready = v,
            Err(e) => panic!("no readiness report from rustpy serve ({line:?}): {e}"),
        }
        serve
    }

    fn http_addr(&self) -> String {
        let http = self.ready["endpoints"]["http"].as_str().unwrap();
        assert!(http.starts_with("http://127.0.0.1:"), "{http}");
        http.trim_start_matches("http://").to_owned()
    }

    /// Ctrl-C, as a terminal would send it; returns rustpy's exit code.
    fn interrupt(&mut self) -> Option<i32> {
        // SAFETY: SIGINT to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap().code()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: SIGINT to our own child process.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            for _ in 0..300 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serves_a_python_backend_model_and_stops_on_ctrl_c() {
    let Some(ts) = tritonserver_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    python_repo(tmp.path(), MODEL);

    let mut serve = Serve::start(
        tmp.path(),
        &["repo", "--tritonserver", ts.to_str().unwrap()],
    );
    let ready = serve.ready.clone();
    assert_eq!(ready["models"][0]["name"], "pyadd", "{ready}");
    assert_eq!(ready["models"][0]["state"], "READY", "{ready}");
    let server_pid = ready["pid"].as_i64().unwrap() as i32;

    let reply = http_post(
        &serve.http_addr(),
        "/v2/models/pyadd/infer",
        r#"{"inputs":[{"name":"X","shape":[1,2],"datatype":"FP32","data":[1.5,2.5]}]}"#,
    );
    assert!(reply.contains(" 200 OK"), "{reply}");
    assert!(reply.contains("[2.5,3.5]"), "{reply}");

    assert_eq!(serve.interrupt(), Some(0));
    assert!(!process_alive(server_pid), "tritonserver is still running");
}

/// Every `rustpy init` scaffold loads and answers under the real rustpy
/// backend (built by `cargo build --release --workspace`).
#[test]
fn scaffolds_load_in_the_rustpy_backend() {
    let Some(ts) = tritonserver_or_skip() else {
        return;
    };
    let Some(lib) = backend_lib_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        let is_image = matches!(*task, "image-classification" | "object-detection");
        let extra: &[&str] = if is_image {
            &["-q", "--image-shape", "16,16"]
        } else {
            &["-q"]
        };
        init(tmp.path(), "repo", &task.replace('-', "_"), task, extra);
    }
    let mut serve = Serve::start(
        tmp.path(),
        &[
            "repo",
            "--tritonserver",
            ts.to_str().unwrap(),
            "--backend-lib",
            lib.to_str().unwrap(),
        ],
    );
    let ready = serve.ready.clone();
    let models = ready["models"].as_array().unwrap();
    assert_eq!(models.len(), TASKS.len(), "{ready}");
    for m in models {
        assert_eq!(m["state"], "READY", "{ready}");
    }
    let reply = http_post(
        &serve.http_addr(),
        "/v2/models/passthrough/infer",
        r#"{"inputs":[{"name":"INPUT0","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
    );
    assert!(reply.contains(" 200 OK"), "{reply}");
    assert!(reply.contains("[1.0,2.0,3.0]"), "{reply}");
    assert_eq!(serve.interrupt(), Some(0));
}

#[test]
fn propagates_the_exit_code_of_a_server_that_fails_to_start() {
    let Some(ts) = tritonserver_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    python_repo(tmp.path(), "raise RuntimeError('broken on purpose')\n");
    let out = rustpy()
        .current_dir(tmp.path())
        .args(["serve", "repo", "--json", "--tritonserver"])
        .arg(&ts)
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    assert_ne!(code(&out), 4, "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("exited before becoming ready"), "{err}");
    // The summary names the model and its cause; the raw log (option
    // tables, CUDA/NVML noise) stays in the file it points to.
    assert!(
        err.contains("model 'pyadd' failed to load: Internal: RuntimeError: broken on purpose"),
        "{err}"
    );
    assert!(
        !err.contains("+----"),
        "raw server log on the terminal:\n{err}"
    );
    let log = err
        .lines()
        .find_map(|l| l.strip_prefix("server log: "))
        .unwrap_or_else(|| panic!("no log path in {err}"));
    let raw = std::fs::read_to_string(log).unwrap();
    assert!(raw.contains("| pyadd | 1       | UNAVAILABLE"), "{raw}");
    let _ = std::fs::remove_file(log);

    // --log streams the raw log instead.
    let out = rustpy()
        .current_dir(tmp.path())
        .args(["serve", "repo", "--log", "--tritonserver"])
        .arg(&ts)
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("| pyadd | 1       | UNAVAILABLE"), "{err}");
    assert!(!err.contains("server log: "), "{err}");
}

/// The options a container needs: bind address, model-control mode with
/// start-up models, a named log file, extra tritonserver arguments; SIGTERM
/// (what Kubernetes sends) stops the server and rustpy exits with its code.
#[test]
fn container_options_reach_tritonserver() {
    let Some(ts) = tritonserver_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    python_repo(tmp.path(), MODEL);
    write(
        &tmp.path().join("repo/other/config.pbtxt"),
        CONFIG.replace("pyadd", "other"),
    );
    write(&tmp.path().join("repo/other/1/model.py"), MODEL);
    let log = tmp.path().join("server.log");
    let mut serve = Serve::start(
        tmp.path(),
        &[
            "repo",
            "--tritonserver",
            ts.to_str().unwrap(),
            "--address",
            "0.0.0.0",
            "--model-control-mode",
            "explicit",
            "--load-model",
            "pyadd",
            "--log-file",
            log.to_str().unwrap(),
            "--",
            "--exit-timeout-secs=7",
        ],
    );
    let ready = serve.ready.clone();
    let http = ready["endpoints"]["http"].as_str().unwrap().to_owned();
    assert!(http.starts_with("http://0.0.0.0:"), "{ready}");
    let models = ready["models"].as_array().unwrap();
    let state = |name: &str| {
        models
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["state"].clone())
    };
    assert_eq!(state("pyadd"), Some("READY".into()), "{ready}");
    assert_ne!(state("other"), Some("READY".into()), "{ready}");
    assert!(state("other").is_some(), "{ready}");

    let port = http.rsplit(':').next().unwrap();
    let reply = http_post(
        &format!("127.0.0.1:{port}"),
        "/v2/models/pyadd/infer",
        r#"{"inputs":[{"name":"X","shape":[1,2],"datatype":"FP32","data":[1.5,2.5]}]}"#,
    );
    assert!(reply.contains("[2.5,3.5]"), "{reply}");

    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(raw.contains("MODE_EXPLICIT"), "{raw}");
    assert!(
        raw.contains("| exit_timeout                     | 7"),
        "{raw}"
    );
    assert!(raw.contains("0.0.0.0:"), "{raw}");

    // SAFETY: SIGTERM to our own child process.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    assert_eq!(serve.child.wait().unwrap().code(), Some(0));
}

#[test]
fn load_model_needs_explicit_mode() {
    let tmp = tempfile::tempdir().unwrap();
    python_repo(tmp.path(), MODEL);
    let out = run_in(
        tmp.path(),
        &[
            "serve",
            "repo",
            "--load-model",
            "pyadd",
            "--tritonserver",
            "/bin/sh",
        ],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--model-control-mode explicit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_server_path_or_repository_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    python_repo(tmp.path(), MODEL);
    let out = rustpy()
        .current_dir(tmp.path())
        .env("TRITONSERVER", "/nonexistent/tritonserver")
        .args(["serve", "repo"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("TRITONSERVER=/nonexistent"),
        "{}",
        stderr(&out)
    );

    assert_code(&run_in(tmp.path(), &["serve", "nope"]), 2);
    let out = run_in(
        tmp.path(),
        &[
            "serve",
            "repo",
            "--tritonserver",
            "/nonexistent/tritonserver",
        ],
    );
    assert_code(&out, 2);
    let out = run_in(
        tmp.path(),
        &[
            "serve",
            "repo",
            "--backend-lib",
            "/nonexistent/lib.so",
            "--tritonserver",
            "/bin/sh",
        ],
    );
    assert_code(&out, 2);
}

/// `$RUSTPY_DEPS` (where `ci/install.sh` was told to install) is searched
/// for tritonserver before `.rustpy-deps/` next to the project: a stand-in
/// there is the one started.
#[cfg(unix)]
#[test]
fn tritonserver_is_found_in_rustpy_deps() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A model that fails to load: were a real tritonserver started instead
    // of the stand-in, it would exit, not serve.
    python_repo(tmp.path(), "raise RuntimeError('broken on purpose')\n");
    let fake = tmp
        .path()
        .join("deps/pytriton/tritonserver/bin/tritonserver");
    let marker = tmp.path().join("started");
    write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" > '{}'\nexit 3\n", marker.display()),
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = rustpy()
        .current_dir(tmp.path())
        .env("RUSTPY_DEPS", tmp.path().join("deps"))
        .env_remove("TRITONSERVER")
        .env("PATH", "/usr/bin:/bin")
        .args(["serve", "repo", "--json"])
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    let args = std::fs::read_to_string(&marker).unwrap_or_else(|e| {
        panic!(
            "the stand-in in RUSTPY_DEPS was not started ({e}): {}",
            stderr(&out)
        )
    });
    assert!(args.contains("--model-repository"), "{args}");
}
