//! `rustpy check`: configuration diagnostics from rustpy-config plus the
//! static Python checks, printed compiler-style, with exit codes.

mod common;

use std::fs;

use common::*;

/// A repository with one scaffolded passthrough model whose model.py is `code`.
fn repo_with_model_py(code: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    fs::write(tmp.path().join("repo/m/1/model.py"), code).unwrap();
    tmp
}

#[test]
fn syntax_error_is_reported_with_line_and_column() {
    let tmp = repo_with_model_py(
        "import numpy as np\n\nclass Model:\n    def predict(self, inputs, requests)\n        return inputs\n",
    );
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains("repo/m/1/model.py:4:40: error[python.syntax]: SyntaxError: expected ':'"),
        "{text}"
    );
    assert!(text.contains("  = hint: "), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("FAILED: 1 model checked, 1 error"),
        "{text}"
    );
}

#[test]
fn indentation_errors_count_as_syntax_errors() {
    let tmp = repo_with_model_py("class Model:\ndef predict(self, inputs):\n    pass\n");
    let out = run_in(tmp.path(), &["check", "repo/m"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("repo/m/1/model.py:2:1: error[python.syntax]: IndentationError"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn missing_model_class_is_an_error() {
    let tmp =
        repo_with_model_py("class Modle:\n    def predict(self, inputs):\n        return inputs\n");
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("repo/m/1/model.py: error[python.missing-model-class]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn model_without_predict_and_bad_signature() {
    let tmp = repo_with_model_py("class Model:\n    def initialize(self, ctx):\n        pass\n");
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("repo/m/1/model.py:1:1: error[python.missing-predict]"),
        "{}",
        stdout(&out)
    );

    let tmp = repo_with_model_py("class Model:\n    def predict(self):\n        return {}\n");
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("2:5: error[python.predict-signature]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn official_python_backend_api_is_accepted() {
    let tmp = repo_with_model_py(
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n",
    );
    assert_code(&run_in(tmp.path(), &["check", "repo"]), 0);
    let tmp = repo_with_model_py(
        "class TritonPythonModel:\n    def initialize(self, args):\n        pass\n",
    );
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("error[python.missing-execute]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn model_class_from_elsewhere_is_not_flagged() {
    let tmp = repo_with_model_py("from mylib.models import Model\n");
    assert_code(&run_in(tmp.path(), &["check", "repo"]), 0);
}

#[test]
fn decoupled_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "gen", "text-generation", &["-q"]);
    let py = tmp.path().join("repo/gen/1/model.py");
    let code = fs::read_to_string(&py).unwrap();
    fs::write(&py, code.replace("yield {", "return {")).unwrap();
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 0); // a warning only
    assert!(
        stdout(&out).contains("warning[python.decoupled-not-generator]"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("ok: 1 model checked, 1 warning"),
        "{}",
        stdout(&out)
    );

    let tmp =
        repo_with_model_py("class Model:\n    def predict(self, inputs):\n        yield inputs\n");
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("error[python.generator-not-decoupled]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn config_errors_come_from_rustpy_config() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    fs::write(
        tmp.path().join("repo/m/config.pbtxt"),
        "name: \"m\"\nbackend: \"rustpy\"\nmax_batch_size: [\n",
    )
    .unwrap();
    let out = run_in(tmp.path(), &["check", "repo"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("repo/m/config.pbtxt:"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_report() {
    let tmp = repo_with_model_py("class Model:\n    def predict(self, inputs:\n");
    let out = run_in(tmp.path(), &["check", "repo", "--json"]);
    assert_code(&out, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["models"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "python.syntax");
    assert_eq!(d["file"], "repo/m/1/model.py");
    assert_eq!(d["line"], 2);
}

#[test]
fn a_config_path_stands_for_its_model() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "text-embedding", &["-q"]);
    let out = run_in(tmp.path(), &["check", "repo/m/config.pbtxt"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("ok: 1 model checked"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn missing_path_is_a_usage_error_and_missing_python_a_runtime_error() {
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&run_in(tmp.path(), &["check", "nope"]), 2);

    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    let out = rustpy()
        .current_dir(tmp.path())
        .env("RUSTPY_PYTHON", "/nonexistent/python3")
        .args(["check", "repo"])
        .output()
        .unwrap();
    assert_code(&out, 4);
    assert!(stderr(&out).contains("RUSTPY_PYTHON"), "{}", stderr(&out));
}

#[test]
fn check_leaves_no_bytecode_behind() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    assert_code(&run_in(tmp.path(), &["check", "repo"]), 0);
    assert!(!tmp.path().join("repo/m/1/__pycache__").exists());
}
