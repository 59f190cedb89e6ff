//! `rustpy test`: golden cases kept with each model, run locally (the
//! backend's core, no Triton) and against a live tritonserver started by
//! `rustpy serve`.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::*;

fn http_post(addr: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // One write: Triton's HTTP server can misroute a head split over segments.
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

/// A model whose output is its input times the request parameter `k`, plus
/// an INT32 `N` of the rows' count; predict raises on a negative input.
const CONFIG: &str = r#"name: "scale"
backend: "rustpy"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
dynamic_batching { }
"#;

const PARAMS: &str = r#"{"allow_unknown": false, "parameters": [
  {"name": "k", "type": "float", "default": 1.0, "min": 0, "max": 10}
]}"#;

const MODEL: &str = r#"import numpy as np
class Model:
    def predict(self, inputs, requests):
        x = inputs["X"]
        if (x < 0).any():
            raise ValueError("negative input")
        k = np.repeat([r.parameters["k"] for r in requests], [r.batch_size for r in requests])
        n = np.full((x.shape[0], 1), x.shape[0], dtype=np.int32)
        return {"Y": (x * k[:, None]).astype(np.float32), "N": n}
"#;

fn scale_model(root: &Path) -> std::path::PathBuf {
    let dir = root.join("repo/scale");
    write(&dir.join("config.pbtxt"), CONFIG);
    write(&dir.join("request_parameters.json"), PARAMS);
    write(&dir.join("1/model.py"), MODEL);
    dir
}

fn case(dir: &Path, name: &str, json: &str) {
    write(&dir.join("tests").join(format!("{name}.json")), json);
}

#[test]
fn scaffolded_models_pass_check_and_test() {
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        let image = matches!(*task, "image-classification" | "object-detection");
        let extra: &[&str] = if image {
            &["-q", "--image-shape", "16,16"]
        } else {
            &["-q"]
        };
        init(tmp.path(), "repo", &task.replace('-', "_"), task, extra);
        assert!(tmp
            .path()
            .join("repo")
            .join(task.replace('-', "_"))
            .join("tests/basic.json")
            .is_file());
    }
    assert_code(&run_in(tmp.path(), &["check", "repo"]), 0);
    let junit = tmp.path().join("junit.xml");
    let out = run_in(
        tmp.path(),
        &["test", "repo", "--json", "--junit", junit.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["passed"], 5, "{doc}");
    assert_eq!(doc["failed"], 0, "{doc}");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.contains("tests=\"5\" failures=\"0\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 5, "{xml}");

    // `rustpy zip` keeps the cases (and the declarations) unless told not to.
    assert_code(
        &run_in(tmp.path(), &["-q", "zip", "repo", "-o", "with.zip"]),
        0,
    );
    let names = zip_names(&tmp.path().join("with.zip"));
    assert!(
        names.contains(&"passthrough/tests/basic.json".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"passthrough/request_parameters.json".to_string()),
        "{names:?}"
    );
    assert_code(
        &run_in(
            tmp.path(),
            &["-q", "zip", "repo", "-o", "without.zip", "--no-tests"],
        ),
        0,
    );
    let names = zip_names(&tmp.path().join("without.zip"));
    assert!(!names.iter().any(|n| n.contains("/tests/")), "{names:?}");
    assert!(
        names.contains(&"passthrough/request_parameters.json".to_string()),
        "{names:?}"
    );
}

#[test]
fn failing_cases_are_reported_with_a_diff_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scale_model(tmp.path());
    // Four requests in one batch: the two with bad parameters fail alone,
    // the other two run in one predict call (N: its row count).
    case(
        &dir,
        "a_batch",
        r#"{"requests": [
        {"inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [[1, 2, 3]], "N": [[2]]}},
        {"inputs": {"X": [1, 2, 3]}, "parameters": {"k": 2}, "outputs": {"Y": [[2, 4, 6]], "N": [[2]]}},
        {"inputs": {"X": [1, 2, 3]}, "parameters": {"k": 11}, "error": "request parameter 'k' is 11.0, above the maximum 10"},
        {"inputs": {"X": [1, 2, 3]}, "parameters": {"q": 1}, "error": "unknown request parameter 'q'"}
    ]}"#,
    );
    // |diff| 1e-3: inside atol 2e-3, and outside 5e-4.
    case(
        &dir,
        "b_tolerance_in",
        r#"{"atol": 2e-3, "rtol": 0, "inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [[1.001, 2, 3]]}}"#,
    );
    case(
        &dir,
        "c_tolerance_out",
        r#"{"atol": 5e-4, "rtol": 0, "inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [[1.001, 2, 3]]}}"#,
    );
    case(
        &dir,
        "d_value",
        r#"{"inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [[1, 2, 4]]}}"#,
    );
    case(
        &dir,
        "e_shape",
        r#"{"inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [1, 2, 3]}}"#,
    );
    case(
        &dir,
        "f_dtype",
        r#"{"inputs": {"X": [1, 2, 3]}, "outputs": {"N": {"data": [[1]], "datatype": "INT64"}}}"#,
    );
    case(
        &dir,
        "g_missing",
        r#"{"inputs": {"X": [1, 2, 3]}, "outputs": {"Z": [[1]]}}"#,
    );
    case(
        &dir,
        "h_unexpected_error",
        r#"{"inputs": {"X": [-1, 2, 3]}, "outputs": {"Y": [[-1, 2, 3]]}}"#,
    );
    case(
        &dir,
        "i_error_expected",
        r#"{"inputs": {"X": [1, 2, 3]}, "error": "negative"}"#,
    );
    let out = run_in(tmp.path(), &["test", "repo/scale"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let expect = [
        "PASS  scale/a_batch (4 request(s)",
        "PASS  scale/b_tolerance_in",
        "FAIL  scale/c_tolerance_out",
        "request 0: output 'Y'[0,0]: got 1.0, expected 1.001 (|diff| 1.000e-3 > tolerance 5.000e-4)",
        "FAIL  scale/d_value",
        "request 0: output 'Y'[0,2]: got 3.0, expected 4",
        "request 0: output 'Y': shape is [1, 3], expected [3]",
        "request 0: output 'N': datatype is INT32, expected INT64",
        "request 0: missing output 'Z' (got: Y, N)",
        "request 0: unexpected error: model 'scale': predict raised: ValueError: negative input",
        "request 0: expected an error containing \"negative\", but the request succeeded",
        "9 case(s): 2 passed, 7 failed, 0 skipped",
    ];
    for line in expect {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// A running `rustpy serve`; interrupted when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: SIGINT to our own child process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[test]
fn the_same_cases_pass_against_rustpy_serve() {
    let Some(ts) = tritonserver_or_skip() else {
        return;
    };
    let Some(lib) = backend_lib_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        let image = matches!(*task, "image-classification" | "object-detection");
        let extra: &[&str] = if image {
            &["-q", "--image-shape", "16,16"]
        } else {
            &["-q"]
        };
        init(tmp.path(), "repo", &task.replace('-', "_"), task, extra);
    }
    let dir = scale_model(tmp.path());
    case(
        &dir,
        "batch",
        r#"{"requests": [
        {"inputs": {"X": [1, 2, 3]}, "outputs": {"Y": [[1, 2, 3]]}},
        {"inputs": {"X": [1, 2, 3]}, "parameters": {"k": 2}, "outputs": {"Y": [[2, 4, 6]]}},
        {"inputs": {"X": [1, 2, 3]}, "parameters": {"k": "hot"}, "error": "request parameter 'k' must be of type float, got string \"hot\""}
    ]}"#,
    );
    assert_code(&run_in(tmp.path(), &["check", "repo"]), 0);
    assert_code(&run_in(tmp.path(), &["test", "repo"]), 0);

    let mut child = rustpy()
        .current_dir(tmp.path())
        .args([
            "serve",
            "repo",
            "--json",
            "--ready-timeout",
            "120",
            "--tritonserver",
        ])
        .arg(&ts)
        .arg("--backend-lib")
        .arg(&lib)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout_pipe = child.stdout.take().unwrap();
    let serve = Serve(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout_pipe).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(150))
        .unwrap_or_default();
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("no readiness report ({line:?}): {e}"));
    let url = ready["endpoints"]["http"].as_str().unwrap().to_owned();

    let out = run_in(tmp.path(), &["test", "repo", "--server", &url, "--json"]);
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // Decoupled text generation goes through Triton's generate_stream.
    assert_eq!(doc["passed"], 6, "{doc}");
    assert_eq!(doc["skipped"], 0, "{doc}");

    // A streamed case: 2 greedy tokens, then a bad parameter over the wire.
    let gen = tmp.path().join("repo/text_generation");
    case(
        &gen,
        "two",
        r#"{"requests": [
        {"inputs": {"PROMPT": ["a b c"]}, "parameters": {"max_tokens": 2, "temperature": 0},
         "responses": [{"TOKEN": [["a"]]}, {"TOKEN": [[" b"]]}]},
        {"inputs": {"PROMPT": ["a b c"]}, "parameters": {"max_tokens": 999},
         "error": "request parameter 'max_tokens' is 999, above the maximum 256"}
    ]}"#,
    );
    case(
        &gen,
        "wrong",
        r#"{"inputs": {"PROMPT": ["a b c"]}, "parameters": {"max_tokens": 2, "temperature": 0},
         "responses": [{"TOKEN": [["a"]]}]}"#,
    );
    for target in [None, Some(url.as_str())] {
        let mut args = vec!["test", "repo/text_generation"];
        if let Some(url) = target {
            args.extend(["--server", url]);
        }
        let out = run_in(tmp.path(), &args);
        assert_code(&out, 1);
        let text = stdout(&out);
        assert!(
            text.contains("PASS  text_generation/two"),
            "{target:?}: {text}"
        );
        assert!(
            text.contains("FAIL  text_generation/wrong"),
            "{target:?}: {text}"
        );
        assert!(
            text.contains("request 0: expected 1 response(s), got 2"),
            "{target:?}: {text}"
        );
    }

    // The scaffolded classifier's labels through Triton's classification
    // extension: the top 2 of PROBS as "score:index:label".
    let addr = url.trim_start_matches("http://");
    let body =
        r#"{"inputs":[{"name":"IMAGE","shape":[1,16,16,3],"datatype":"UINT8","data":[RAMP]}],
        "outputs":[{"name":"PROBS","parameters":{"classification":2}}]}"#
            .replace(
                "RAMP",
                &(0..768)
                    .map(|i| (i % 256).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
    let reply = http_post(addr, "/v2/models/image_classification/infer", &body);
    assert!(reply.contains(" 200 OK"), "{reply}");
    let json: serde_json::Value =
        serde_json::from_str(&reply[reply.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let top: Vec<&str> = json["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(top.len(), 2, "{json}");
    let labels = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    for entry in top {
        let parts: Vec<&str> = entry.split(':').collect();
        assert_eq!(parts.len(), 3, "{entry}");
        let index: usize = parts[1].parse().unwrap();
        assert_eq!(parts[2], labels[index], "{entry}");
    }

    // A failing case against the server fails the run.
    case(
        &dir,
        "wrong",
        r#"{"inputs": {"X": [1, 2, 3]}, "parameters": {"k": 3}, "outputs": {"Y": [[3, 6, 10]]}}"#,
    );
    let out = run_in(tmp.path(), &["test", "repo/scale", "--server", &url]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("request 0: output 'Y'[0,2]: got 9.0, expected 10"),
        "{}",
        stdout(&out)
    );
    drop(serve);
}

/// `rustpy run --param` reads declared parameters as their type and the core
/// checks them as it checks requests from Triton.
#[test]
fn run_params_use_the_same_validation() {
    let tmp = tempfile::tempdir().unwrap();
    scale_model(tmp.path());
    let input = tmp.path().join("x.json");
    write(&input, r#"{"X": [1, 2, 3]}"#);
    let run = |param: &str| {
        run_in(
            tmp.path(),
            &[
                "-q",
                "run",
                "repo/scale",
                "--input",
                input.to_str().unwrap(),
                "--param",
                param,
                "--json",
            ],
        )
    };
    let out = run("k=2");
    assert_code(&out, 0);
    assert!(stdout(&out).contains("2.0"), "{}", stdout(&out));
    for (param, message) in [
        (
            "k=20",
            "request parameter 'k' is 20.0, above the maximum 10",
        ),
        (
            "k=hot",
            "request parameter 'k' must be of type float, got string \\\"hot\\\"",
        ),
        (
            "q=1",
            "unknown request parameter 'q' (the model accepts: k)",
        ),
    ] {
        let out = run(param);
        assert_code(&out, 1);
        assert!(stdout(&out).contains(message), "{param}: {}", stdout(&out));
    }
}

/// `rustpy check` reports problems of request_parameters.json at their line.
#[test]
fn check_locates_declaration_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scale_model(tmp.path());
    write(
        &dir.join("request_parameters.json"),
        "{\n  \"parameters\": [\n    {\"name\": \"k\", \"type\": \"int\", \"default\": 10, \"max\": 5},\n    {\"name\": \"k\", \"type\": \"float\"},\n    {\"name\": \"m\", \"type\": \"string\", \"min\": 1}\n  ]\n}\n",
    );
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    for line in [
        "repo/scale/request_parameters.json:3: error[params.declaration]: parameter 'k': default is 10, above the maximum 5",
        "repo/scale/request_parameters.json:4: error[params.declaration]: parameter 'k' is declared more than once",
        "repo/scale/request_parameters.json:5: error[params.declaration]: parameter 'm' of type string has min/max",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    write(
        &dir.join("request_parameters.json"),
        "{\"parameters\": [\n {\"name\": \"x\", \"type\": \"number\"}]}",
    );
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("request_parameters.json:2:31: error[params.declaration]: unknown variant `number`, expected one of `bool`, `int`, `float`, `string`\n"),
        "{}",
        stdout(&out)
    );
}
