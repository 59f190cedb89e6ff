//! Every `check` rule against a broken fixture in a temporary repository.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rustpy_config::{
    check::check_path,
    diagnostic::{Diagnostic, Report, Severity},
    repo::{is_model_dir, model_dirs, model_files},
};

const GOOD: &str = r#"name: "good"
backend: "rustpy"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] }
"#;

/// Writes `files` (path relative to the root, contents) under a new tempdir.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    dir
}

/// A repository holding one model `m` with `config` and `m/1/model.py`.
fn model(config: &str) -> tempfile::TempDir {
    repo(&[
        ("m/config.pbtxt", config),
        ("m/1/model.py", "class Model: ...\n"),
    ])
}

/// The diagnostics with `code`.
fn with_code<'r>(report: &'r Report, code: &str) -> Vec<&'r Diagnostic> {
    report
        .diagnostics
        .iter()
        .filter(|d| d.code == code)
        .collect()
}

/// Asserts exactly one diagnostic with `code`, in `file`, at `line`, and returns it.
#[track_caller]
fn one<'r>(report: &'r Report, code: &str, file: &Path, line: Option<usize>) -> &'r Diagnostic {
    let found = with_code(report, code);
    assert_eq!(
        found.len(),
        1,
        "expected one {code}, got {:#?}",
        report.diagnostics
    );
    let d = found[0];
    assert_eq!(d.file, file, "{d}");
    assert_eq!(d.line, line, "{d}");
    assert!(!d.hint.is_empty(), "{d} has no hint");
    d
}

fn config_of(root: &Path) -> PathBuf {
    root.join("m/config.pbtxt")
}

/// Checks a one-model repository with `config` and returns its one
/// diagnostic `code`, at `line` of the config.
/// One `parameters { key: ... value { string_value: ... } }` line.
fn param(key: &str, value: &str) -> String {
    format!("parameters {{ key: \"{key}\" value {{ string_value: \"{value}\" }} }}\n")
}

fn only(config: &str, code: &str, line: Option<usize>) -> Diagnostic {
    let dir = model(config);
    let report = check_path(dir.path());
    one(&report, code, &config_of(dir.path()), line).clone()
}

#[test]
fn good_model_is_clean() {
    let dir = model(&GOOD.replace("good", "m"));
    let report = check_path(dir.path());
    assert_eq!(report.diagnostics, vec![]);
    // The model directory itself can be checked too.
    assert!(is_model_dir(&dir.path().join("m")));
    assert!(!is_model_dir(dir.path()));
    assert_eq!(check_path(&dir.path().join("m")).diagnostics, vec![]);
    // ...and so can its config file.
    assert_eq!(
        check_path(&dir.path().join("m/config.pbtxt")).diagnostics,
        vec![]
    );
    assert_eq!(
        model_files(&dir.path().join("m")),
        vec![dir.path().join("m/1/model.py")]
    );
}

#[test]
fn missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let report = check_path(&missing);
    one(&report, "path.not-found", &missing, None);
    assert!(report.has_errors());
}

#[test]
fn empty_repository_warns() {
    let dir = tempfile::tempdir().unwrap();
    let report = check_path(dir.path());
    let d = one(&report, "repo.empty", dir.path(), None);
    assert_eq!(d.severity, Severity::Warning);
}

#[test]
fn hidden_directory_in_repository() {
    let dir = repo(&[
        ("m/config.pbtxt", "name: \"m\" backend: \"rustpy\""),
        ("m/1/model.py", ""),
        (".ipynb_checkpoints/x.txt", ""),
    ]);
    let report = check_path(dir.path());
    one(
        &report,
        "repo.hidden-dir",
        &dir.path().join(".ipynb_checkpoints"),
        None,
    );
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
}

#[test]
fn syntax_error_with_suggestion() {
    let d = only("name: \"m\"\nbackend: \"rustpy\"\ninput [\n  { name: \"IN\" dtype: TYPE_FP32 dims: [ 1 ] }\n]\n", "config.syntax", Some(4));
    assert_eq!(d.column, Some(16));
    assert_eq!(d.severity, Severity::Error);
    assert!(d.hint.contains("data_type"), "{}", d.hint);
}

#[test]
fn misspelled_enum_value_suggestion() {
    let d = only(
        "name: \"m\"\nbackend: \"rustpy\"\ninstance_group { kind: KIND_CPUS }\n",
        "config.syntax",
        Some(3),
    );
    assert!(d.hint.contains("KIND_CPU"), "{}", d.hint);
}

#[test]
fn missing_config_is_a_warning() {
    let dir = repo(&[("m/1/model.py", "")]);
    let report = check_path(dir.path());
    let d = one(&report, "config.missing", &config_of(dir.path()), None);
    assert_eq!(d.severity, Severity::Warning);
    assert!(!report.has_errors());
}

#[test]
fn name_mismatch() {
    let d = only(
        "backend: \"rustpy\"\n\nname: \"other\"\n",
        "config.name-mismatch",
        Some(3),
    );
    assert_eq!(d.column, Some(1));
    assert!(d.message.contains("other"));
}

#[test]
fn no_backend() {
    // With model.py Triton would pick the python backend: only a warning.
    let d = only("name: \"m\"\n", "config.no-backend", None);
    assert_eq!(d.severity, Severity::Warning);

    let dir = repo(&[("m/config.pbtxt", "name: \"m\"\n"), ("m/1/model.onnx", "")]);
    let report = check_path(dir.path());
    let d = one(&report, "config.no-backend", &config_of(dir.path()), None);
    assert_eq!(d.severity, Severity::Error);
}

#[test]
fn version_directories() {
    let dir = repo(&[
        ("m/config.pbtxt", "backend: \"rustpy\""),
        ("m/latest/model.py", ""),
        ("m/01/model.py", ""),
        ("m/__pycache__/x.pyc", ""),
    ]);
    let report = check_path(dir.path());
    let ignored = with_code(&report, "version.ignored-dir");
    let files: Vec<_> = ignored.iter().map(|d| d.file.clone()).collect();
    assert_eq!(
        files,
        vec![dir.path().join("m/01"), dir.path().join("m/latest")]
    );
    assert!(ignored.iter().all(|d| d.severity == Severity::Warning));
    one(&report, "version.none", &dir.path().join("m"), None);
}

#[test]
fn model_file_missing_per_version() {
    let dir = repo(&[
        ("m/config.pbtxt", "backend: \"python\""),
        ("m/1/model.py", ""),
        ("m/2/other.py", ""),
    ]);
    let report = check_path(dir.path());
    one(
        &report,
        "model.file-missing",
        &dir.path().join("m/2/model.py"),
        None,
    );
    assert_eq!(
        model_files(&dir.path().join("m")),
        vec![dir.path().join("m/1/model.py")]
    );

    // default_model_filename changes which file is expected.
    let dir = repo(&[
        (
            "m/config.pbtxt",
            "backend: \"rustpy\" default_model_filename: \"serve.py\"",
        ),
        ("m/1/serve.py", ""),
    ]);
    assert_eq!(check_path(dir.path()).diagnostics, vec![]);
    assert_eq!(
        model_files(&dir.path().join("m")),
        vec![dir.path().join("m/1/serve.py")]
    );

    // Other backends are not ours to check.
    let dir = repo(&[
        ("m/config.pbtxt", "backend: \"onnxruntime\""),
        ("m/1/model.onnx", ""),
    ]);
    assert!(with_code(&check_path(dir.path()), "model.file-missing").is_empty());
    assert!(model_files(&dir.path().join("m")).is_empty());
}

#[test]
fn version_policy_names_missing_version() {
    let dir =
        model("backend: \"rustpy\"\nversion_policy: { specific: {\n  versions: [ 1, 3 ] } }\n");
    let report = check_path(dir.path());
    let d = one(
        &report,
        "version.policy-missing",
        &config_of(dir.path()),
        Some(3),
    );
    assert_eq!(d.column, Some(18));
    assert!(d.message.contains('3'));
}

#[test]
fn dims_rules() {
    let dir = model(
        r#"backend: "rustpy"
input [
  {
    name: "A"
    data_type: TYPE_FP32
    dims: [ 2, 0 ]
  },
  {
    name: "B"
    data_type: TYPE_FP32
  },
  { name: "C" data_type: TYPE_FP32 dims: [ -2 ] }
]
output [ { name: "O" data_type: TYPE_FP32 dims: [ 6 ] reshape: { shape: [ 4 ] } } ]
"#,
    );
    let report = check_path(dir.path());
    let invalid = with_code(&report, "io.dims-invalid");
    let lines: Vec<_> = invalid.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(lines, vec![(Some(6), Some(16)), (Some(12), Some(44))]);
    one(&report, "io.dims-missing", &config_of(dir.path()), Some(9));
    one(
        &report,
        "io.reshape-mismatch",
        &config_of(dir.path()),
        Some(14),
    );
}

#[test]
fn batch_dim_written_into_dims() {
    let d = only(
        "backend: \"rustpy\"\nmax_batch_size: 8\ninput [ { name: \"A\" data_type: TYPE_FP32 dims: [ 8, 3 ] } ]\noutput [ { name: \"B\" data_type: TYPE_FP32 dims: [ 8, 1 ] } ]\n",
    "io.batch-dim", Some(3));
    assert_eq!(d.severity, Severity::Warning);

    // A leading -1 with batching is legitimate (e.g. a sequence length): nothing.
    let dir = model(
        "backend: \"rustpy\"\nmax_batch_size: 8\ninput [ { name: \"A\" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\noutput [ { name: \"B\" data_type: TYPE_FP32 dims: [ 8 ] } ]\n",
    );
    assert_eq!(check_path(dir.path()).diagnostics, vec![]);
}

#[test]
fn invalid_data_type_and_names() {
    let dir = model(
        r#"backend: "rustpy"
input [
  { name: "X" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "X" data_type: TYPE_INVALID dims: [ 1 ] },
  { data_type: TYPE_FP32 dims: [ 1 ] }
]
output { name: "Y" dims: [ 1 ] }
output { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }
"#,
    );
    let report = check_path(dir.path());
    let dups: Vec<_> = with_code(&report, "io.duplicate-name")
        .iter()
        .map(|d| d.line)
        .collect();
    assert_eq!(dups, vec![Some(4), Some(8)]);
    let dtypes: Vec<_> = with_code(&report, "io.data-type")
        .iter()
        .map(|d| d.line)
        .collect();
    assert_eq!(dtypes, vec![Some(4), Some(7)]);
    one(&report, "io.name-missing", &config_of(dir.path()), Some(5));
}

#[test]
fn label_file_missing_and_count() {
    let config = "backend: \"rustpy\"\noutput [\n  { name: \"P\" data_type: TYPE_FP32 dims: [ 3 ]\n    label_filename: \"labels.txt\" }\n]\n";
    let dir = model(config);
    let report = check_path(dir.path());
    let d = one(
        &report,
        "output.label-file",
        &config_of(dir.path()),
        Some(4),
    );
    assert_eq!(d.column, Some(5));

    fs::write(dir.path().join("m/labels.txt"), "cat\ndog\n").unwrap();
    let report = check_path(dir.path());
    let d = one(
        &report,
        "output.label-count",
        &config_of(dir.path()),
        Some(4),
    );
    assert!(
        d.message.contains("2 lines") && d.message.contains("3 elements"),
        "{d}"
    );

    fs::write(dir.path().join("m/labels.txt"), "cat\ndog\nbird\n").unwrap();
    assert_eq!(check_path(dir.path()).diagnostics, vec![]);
}

#[test]
fn dynamic_batching_rules() {
    let dir = model("backend: \"rustpy\"\nmax_batch_size: 4\ndynamic_batching {\n  preferred_batch_size: [ 2, 8, 0 ]\n  priority_levels: 2\n  default_priority_level: 3\n}\n");
    let report = check_path(dir.path());
    let sizes: Vec<_> = with_code(&report, "batching.preferred-size")
        .iter()
        .map(|d| (d.line, d.column))
        .collect();
    assert_eq!(sizes, vec![(Some(4), Some(30)), (Some(4), Some(33))]);
    one(
        &report,
        "batching.priority-level",
        &config_of(dir.path()),
        Some(6),
    );

    let dir = model("backend: \"rustpy\"\n\ndynamic_batching { }\n");
    let report = check_path(dir.path());
    one(
        &report,
        "batching.unbatched-model",
        &config_of(dir.path()),
        Some(3),
    );
}

#[test]
fn sequence_batching_oldest_sizes() {
    let dir = model("backend: \"rustpy\"\nmax_batch_size: 2\nsequence_batching { oldest { preferred_batch_size: [ 4 ] } }\n");
    one(
        &check_path(dir.path()),
        "batching.preferred-size",
        &config_of(dir.path()),
        Some(3),
    );
}

#[test]
fn instance_group_rules() {
    let dir = model(
        "backend: \"rustpy\"\ninstance_group [\n  { kind: KIND_GPU count: 1 gpus: [ 0 ] },\n  { kind: KIND_CPU\n    count: -1 },\n  { kind: KIND_CPU gpus: [ 0 ] },\n  { name: \"z\" count: 0 }\n]\n",
    );
    let report = check_path(dir.path());
    let counts: Vec<_> = with_code(&report, "instance-group.count")
        .iter()
        .map(|d| (d.line, d.severity))
        .collect();
    assert_eq!(
        counts,
        vec![(Some(5), Severity::Error), (Some(7), Severity::Warning)]
    );
    one(
        &report,
        "instance-group.gpus",
        &config_of(dir.path()),
        Some(6),
    );
}

#[test]
fn reports_every_problem_across_models() {
    let dir = repo(&[
        ("a/config.pbtxt", "name: \"b\" backend: \"rustpy\""),
        ("a/1/model.py", ""),
        ("b/config.pbtxt", "backend: \"rustpy\" max_batch_size: -1"),
        (
            "c/config.pbtxt",
            "backend: \"rustpy\" input { name: \"I\" }",
        ),
        ("c/1/model.py", ""),
    ]);
    let report = check_path(dir.path());
    let models = ["a", "b", "c"].map(|m| dir.path().join(m));
    assert_eq!(model_dirs(dir.path()), models);
    assert_eq!(model_dirs(&models[0].join("config.pbtxt")), &models[..1]);
    let codes: Vec<_> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        vec![
            "config.name-mismatch",
            "version.none",
            "config.max-batch-size",
            "io.data-type",
            "io.dims-missing",
        ]
    );
    assert_eq!(report.errors().count(), 5);
}

#[test]
fn report_serializes_for_json_output() {
    let dir = model("backend: \"rustpy\"\nname: \"x\"\n");
    let report = check_path(dir.path());
    let json = serde_json::to_value(&report).unwrap();
    let d = &json["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "config.name-mismatch");
    assert_eq!(d["line"], 2);
    assert_eq!(d["column"], 1);
    assert_eq!(d["file"], config_of(dir.path()).to_str().unwrap());
    assert!(d["hint"].as_str().unwrap().contains("name: \"m\""));
    assert_eq!(
        report.diagnostics[0].to_string(),
        format!(
            "{}:2:1: error[config.name-mismatch]: name \"x\" does not match the model directory 'm'",
            config_of(dir.path()).display()
        )
    );
}

// ----------------------------------------------------------- ragged (issue 12)

const RAGGED_GOOD: &str = r#"name: "m"
backend: "rustpy"
max_batch_size: 8
input [ { name: "T" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true },
        { name: "S" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
batch_input [ { kind: BATCH_ACCUMULATED_ELEMENT_COUNT target_name: "IDX" data_type: TYPE_INT32 source_input: "T" } ]
output [ { name: "O" data_type: TYPE_INT32 dims: [ -1 ] } ]
batch_output [ { target_name: "O" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "T" } ]
parameters { key: "rustpy.ragged" value { string_value: "pad" } }
parameters { key: "rustpy.default.S" value { string_value: "1.5" } }
dynamic_batching { }
"#;

#[test]
fn ragged_config_is_clean() {
    let dir = model(RAGGED_GOOD);
    assert_eq!(check_path(dir.path()).diagnostics, vec![]);
}

#[test]
fn ragged_input_without_batching() {
    let cfg = RAGGED_GOOD
        .replace("max_batch_size: 8", "max_batch_size: 0")
        .replace("dynamic_batching { }\n", "");
    let d = only(&cfg, "ragged.unbatched-model", Some(4));
    assert!(d.message.contains("input 'T'"), "{d}");
}

#[test]
fn batch_input_rules() {
    // An unknown kind is a parse error at its line.
    let dir = model(&RAGGED_GOOD.replace("BATCH_ACCUMULATED_ELEMENT_COUNT", "BATCH_LENGTHS"));
    let report = check_path(dir.path());
    one(&report, "config.syntax", &config_of(dir.path()), Some(6));

    let d = only(
        &RAGGED_GOOD.replace(
            "source_input: \"T\" } ]\noutput",
            "source_input: \"X\" } ]\noutput",
        ),
        "batch-input.source",
        Some(6),
    );
    assert!(d.message.contains("'X', which is not an input"), "{d}");

    let dir = model(&RAGGED_GOOD.replace(
        "target_name: \"IDX\" data_type: TYPE_INT32",
        "target_name: \"T\" data_type: TYPE_INT64",
    ));
    let report = check_path(dir.path());
    let d = one(
        &report,
        "batch-input.target",
        &config_of(dir.path()),
        Some(6),
    );
    assert!(d.message.contains("name of an input"), "{d}");
    let d = one(
        &report,
        "batch-input.data-type",
        &config_of(dir.path()),
        Some(6),
    );
    assert!(d.message.contains("TYPE_INT64"), "{d}");
}

#[test]
fn batch_output_source_must_be_ragged() {
    let d = only(
        &RAGGED_GOOD
            .replace(" allow_ragged_batch: true", "")
            .replace(
                "parameters { key: \"rustpy.ragged\" value { string_value: \"pad\" } }\n",
                "",
            ),
        "batch-output.source",
        Some(8),
    );
    assert!(
        d.message
            .contains("'T' is not an input with allow_ragged_batch"),
        "{d}"
    );

    let d = only(
        &RAGGED_GOOD.replace("{ target_name: \"O\"", "{ target_name: \"P\""),
        "batch-output.target",
        Some(8),
    );
    assert!(d.message.contains("'P' is not an output"), "{d}");
}

#[test]
fn ragged_parameters() {
    let d = only(
        &RAGGED_GOOD.replace("\"pad\"", "\"stretch\""),
        "ragged.layout",
        Some(9),
    );
    assert!(d.message.contains("\"stretch\""), "{d}");

    let d = only(
        &RAGGED_GOOD.replace("\"1.5\"", "\"lots\""),
        "input.default",
        Some(10),
    );
    assert!(d.message.contains("not a value of TYPE_FP32"), "{d}");

    let d = only(
        &RAGGED_GOOD.replace(" optional: true", ""),
        "input.default",
        Some(10),
    );
    assert!(d.message.contains("'S' is not optional"), "{d}");

    let d = only(
        &RAGGED_GOOD.replace("rustpy.default.S", "rustpy.default.Q"),
        "input.default",
        Some(10),
    );
    assert!(d.message.contains("no input 'Q'"), "{d}");
}

#[test]
fn isolation_parameters_are_validated() {
    // A valid process-isolated model is clean.
    let ok = model(&format!(
        "{GOOD}parameters {{ key: \"rustpy.isolation\" value {{ string_value: \"process\" }} }}\n\
         parameters {{ key: \"rustpy.execute_timeout_ms\" value {{ string_value: \"5000\" }} }}\n"
    ));
    let report = check_path(ok.path());
    assert!(
        with_code(&report, "parameters.isolation").is_empty(),
        "{:#?}",
        report.diagnostics
    );

    // An unknown mode is an error located on its key.
    let d = only(
        &format!(
            "{GOOD}parameters {{ key: \"offset\" value {{ string_value: \"1\" }} }}\n\
         parameters {{\n  key: \"rustpy.isolation\"\n  value {{ string_value: \"threads\" }}\n}}\n"
        ),
        "parameters.isolation",
        Some(10),
    );
    assert_eq!(d.severity, Severity::Error);
    assert!(d.message.contains("\"threads\""), "{d}");

    // A timeout needs process isolation, and must be a positive integer.
    let d = only(&format!(
        "{GOOD}parameters {{ key: \"rustpy.execute_timeout_ms\" value {{ string_value: \"100\" }} }}\n"
    ), "parameters.isolation", Some(8));
    assert!(d.message.contains("needs"), "{d}");
    let d = only(
        &format!(
        "{GOOD}parameters {{ key: \"rustpy.isolation\" value {{ string_value: \"process\" }} }}\n\
         parameters {{ key: \"rustpy.execute_timeout_ms\" value {{ string_value: \"-1\" }} }}\n"
    ),
        "parameters.isolation",
        Some(9),
    );
    assert!(d.message.contains("positive"), "{d}");
}

#[test]
fn memory_limit_and_environment_parameters_are_validated() {
    // A memory limit must be a positive integer, and needs process isolation.
    for (extra, line, word) in [
        (param("rustpy.memory_limit_mb", "512"), 8, "needs"),
        (param("rustpy.input_shm_limit_mb", "64"), 8, "needs"),
        (param("rustpy.shm_limit_mb", "64"), 8, "needs"),
        (param("rustpy.pending_calls_limit", "16"), 8, "needs"),
        (
            format!(
                "{}{}",
                param("rustpy.isolation", "process"),
                param("rustpy.input_shm_limit_mb", "0")
            ),
            9,
            "positive number of MiB",
        ),
        (
            format!(
                "{}{}{}",
                param("rustpy.isolation", "process"),
                param("rustpy.execute_timeout_ms", "100"),
                param("rustpy.shm_limit_mb", "1GiB")
            ),
            10,
            "positive number of MiB",
        ),
        (
            format!(
                "{}{}",
                param("rustpy.isolation", "process"),
                param("rustpy.pending_calls_limit", "0")
            ),
            9,
            "positive number of calls",
        ),
        (
            format!(
                "{}{}",
                param("rustpy.isolation", "process"),
                param("rustpy.memory_limit_mb", "1.5G")
            ),
            9,
            "positive number of MiB",
        ),
        // One environment per model.
        (
            format!(
                "{}{}",
                param("rustpy.python_env", "/venv"),
                param("EXECUTION_ENV_PATH", "env.tar.gz")
            ),
            8,
            "both name an environment",
        ),
        // An environment cannot apply in-process.
        (
            format!(
                "{}{}",
                param("rustpy.isolation", "in_process"),
                param("rustpy.python_env", "venv")
            ),
            9,
            "needs process isolation",
        ),
    ] {
        let bad = model(&format!("{GOOD}{extra}"));
        let report = check_path(bad.path());
        let d = one(
            &report,
            "parameters.isolation",
            &config_of(bad.path()),
            Some(line),
        );
        assert!(d.message.contains(word), "{d}");
    }

    // A virtualenv (relative to the model directory) implies process isolation:
    // with a memory limit and no rustpy.isolation, a valid model is clean.
    let ok = repo(&[
        (
            "m/config.pbtxt",
            &format!(
                "{GOOD}{}{}",
                param("rustpy.python_env", "venv"),
                param("rustpy.memory_limit_mb", "2048")
            ),
        ),
        ("m/1/model.py", "class Model: ...\n"),
        ("m/venv/pyvenv.cfg", "home = /usr/bin\nversion = 3.11.2\n"),
        ("m/venv/lib/python3.11/site-packages/x.py", ""),
    ]);
    let report = check_path(ok.path());
    assert!(
        report
            .diagnostics
            .iter()
            .all(|d| !d.code.starts_with("parameters.")),
        "{:#?}",
        report.diagnostics
    );

    // A missing environment, or a directory that is no virtualenv, is located
    // on the parameter's value.
    for (extra, word) in [
        (param("rustpy.python_env", "nowhere"), "is not a directory"),
        (
            param("EXECUTION_ENV_PATH", "$$TRITON_MODEL_DIRECTORY/e.tar.gz"),
            "is not a file",
        ),
        (
            param("rustpy.python_env", "$$TRITON_MODEL_DIRECTORY/1"),
            "is it a virtualenv",
        ),
    ] {
        let d = only(&format!("{GOOD}{extra}"), "parameters.python-env", Some(8));
        assert!(d.message.contains(word), "{d}");
        assert!(d.hint.contains("same Python major.minor"), "{d}");
    }

    // An archive without lib/pythonX.Y is not a conda-pack environment.
    let bad = model(&format!(
        "{GOOD}{}",
        param("EXECUTION_ENV_PATH", "e.tar.gz")
    ));
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(bad.path().join("m/e.tar.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "bin/python", &b"x"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    let report = check_path(bad.path());
    let d = one(
        &report,
        "parameters.python-env",
        &config_of(bad.path()),
        Some(8),
    );
    assert!(d.message.contains("no lib/pythonX.Y"), "{d}");

    // The official backend's own EXECUTION_ENV_PATH models are not ours to check.
    let theirs = model(&format!(
        "{}{}",
        GOOD.replace("backend: \"rustpy\"", "backend: \"python\""),
        param("EXECUTION_ENV_PATH", "missing.tar.gz")
    ));
    assert!(with_code(&check_path(theirs.path()), "parameters.python-env").is_empty());
}

#[test]
fn threads_parameter_is_validated() {
    let param = |v: &str| param("rustpy.threads", v);
    // "auto" and a number within the cores are clean.
    for ok in ["auto", "1"] {
        let dir = model(&format!("{GOOD}{}", param(ok)));
        let report = check_path(dir.path());
        assert!(
            report
                .diagnostics
                .iter()
                .all(|d| !d.code.starts_with("parameters.threads")),
            "{ok}: {:#?}",
            report.diagnostics
        );
    }
    // Anything else is an error on its key, naming the accepted values.
    for bad in ["0", "-2", "two", "1.5"] {
        let d = only(
            &format!("{GOOD}{}", param(bad)),
            "parameters.threads",
            Some(8),
        );
        assert_eq!(d.severity, Severity::Error);
        assert!(
            d.message.contains("rustpy.threads") && d.message.contains("\"auto\""),
            "{d}"
        );
    }
    // More threads than this machine's cores, over two instances: a warning.
    let many = rustpy_config::threads::available_cores();
    let d = only(
        &format!(
            "{}{}",
            GOOD.replace("count: 1", "count: 2"),
            param(&many.to_string())
        ),
        "parameters.threads-oversubscribed",
        Some(8),
    );
    assert_eq!(d.severity, Severity::Warning);
    assert!(d.message.contains("2 instance(s)"), "{d}");
}

#[test]
fn isolate_failures_parameter_is_validated() {
    let param = |v: &str| param("rustpy.isolate_failures", v);
    for ok in ["true", "false"] {
        let dir = model(&format!("{GOOD}{}", param(ok)));
        let report = check_path(dir.path());
        assert!(
            report
                .diagnostics
                .iter()
                .all(|d| d.code != "parameters.isolate-failures"),
            "{ok}: {:#?}",
            report.diagnostics
        );
    }
    let d = only(
        &format!("{GOOD}{}", param("yes")),
        "parameters.isolate-failures",
        Some(8),
    );
    assert_eq!(d.severity, Severity::Error);
    assert!(d.message.contains("\"yes\""), "{d}");
    // A decoupled model would answer twice on a re-run: refused.
    let d = only(
        &format!(
            "{GOOD}model_transaction_policy {{ decoupled: true }}\n{}",
            param("true")
        ),
        "parameters.isolate-failures",
        Some(9),
    );
    assert!(d.message.contains("decoupled"), "{d}");
}
