//! `rustpy run` as a user runs it: real model directories, the built binary.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

fn run_json(args: &[&str]) -> (i32, Value) {
    let out = rustpy()
        .args(args)
        .arg("--json")
        .arg("-q")
        .output()
        .unwrap();
    let text = stdout(&out);
    let start = text
        .find("{\n")
        .unwrap_or_else(|| panic!("no JSON in output:\n{text}\n{}", stderr(&out)));
    (code(&out), serde_json::from_str(&text[start..]).unwrap())
}

#[test]
fn runs_a_batched_model_with_json_inputs_in_one_python_call() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.json");
    write(
        &input,
        r#"{"INPUT0": [1, 2, 3, 4], "INPUT1": [0.5, 0.5, 0.5, 0.5]}"#,
    );
    let model = project_root().join("model_repository/add_sub");
    let (code, doc) = run_json(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--batch",
        "4",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["requests"], 4);
    assert_eq!(doc["python_calls"], 1, "four requests must form one batch");
    assert_eq!(doc["batch_rows"], 4);
    for responses in doc["responses"].as_array().unwrap() {
        let outputs = responses[0]["outputs"].as_array().unwrap();
        let out0 = outputs.iter().find(|o| o["name"] == "OUTPUT0").unwrap();
        assert_eq!(out0["shape"], serde_json::json!([1, 4]));
        assert_eq!(out0["data"], serde_json::json!([[1.5, 2.5, 3.5, 4.5]]));
    }
}

#[test]
fn kserve_bodies_requested_outputs_and_npy_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.json");
    write(
        &input,
        r#"{"inputs": [{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES", "data": ["héllo", "x"]}]}"#,
    );
    let model = project_root().join("model_repository/string_upper");
    let outdir = tmp.path().join("out");
    let (code, doc) = run_json(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        "UPPER",
        "--output-dir",
        outdir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{doc}");
    let outputs = doc["responses"][0][0]["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "only the requested output: {doc}");
    assert_eq!(outputs[0]["data"], serde_json::json!([["HÉLLO"], ["X"]]));
    assert!(outdir.join("UPPER.npy").is_file());
}

#[test]
fn generated_inputs_scaffolded_models_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    init(
        tmp.path(),
        "repo",
        "clf",
        "image-classification",
        &["--image-shape", "8,8"],
    );
    let (code, doc) = run_json(&["run", tmp.path().join("repo/clf").to_str().unwrap()]);
    assert_eq!(code, 0, "{doc}");
    let probs = &doc["responses"][0][0]["outputs"];
    assert!(
        probs
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["datatype"] == "FP32"),
        "{doc}"
    );

    // A model whose predict raises: the request fails, exit code 1.
    let model = tmp.path().join("repo/boom");
    write(&model.join("config.pbtxt"), "name: \"boom\"\nbackend: \"rustpy\"\nmax_batch_size: 2\ninput [ { name: \"X\" data_type: TYPE_INT32 dims: [ 1 ] } ]\noutput [ { name: \"Y\" data_type: TYPE_INT32 dims: [ 1 ] } ]\n");
    write(
        &model.join("1/model.py"),
        "class Model:\n    def predict(self, inputs):\n        raise KeyError('kaboom')\n",
    );
    let (code, doc) = run_json(&["run", model.to_str().unwrap()]);
    assert_eq!(code, 1);
    let err = doc["responses"][0][0]["error"].as_str().unwrap();
    assert!(
        err.contains("model 'boom'") && err.contains("KeyError") && err.contains("kaboom"),
        "{err}"
    );

    // Not a model directory: usage error.
    let out = rustpy()
        .args(["run", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 2);
}

#[test]
fn runs_a_ragged_model_with_batch_inputs_and_batch_output() {
    // tests/e2e/repos/ragged/tokens: every batch_input kind, cross-checked by
    // predict itself; DOUBLED scattered back by the shape of TOKENS.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.json");
    write(&input, r#"{"TOKENS": [[1, 2, 3]]}"#);
    let model = project_root().join("tests/e2e/repos/ragged/tokens");
    let (code, doc) = run_json(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--batch",
        "3",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["python_calls"], 1, "{doc}");
    for responses in doc["responses"].as_array().unwrap() {
        let outputs = responses[0]["outputs"].as_array().unwrap();
        let d = outputs.iter().find(|o| o["name"] == "DOUBLED").unwrap();
        assert_eq!(d["shape"], serde_json::json!([1, 3]), "{doc}");
        assert_eq!(d["data"], serde_json::json!([[2, 4, 6]]), "{doc}");
        let n = outputs.iter().find(|o| o["name"] == "NREQ").unwrap();
        assert_eq!(n["data"], serde_json::json!([[3]]), "{doc}");
    }
}
