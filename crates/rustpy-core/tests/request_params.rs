//! Typed request parameters (`request_parameters.json`) through the same core
//! the backend uses: checked per request before `predict`, defaults filled,
//! typed values in `RequestInfo.parameters`, grouping on the typed values.

use std::fs;
use std::time::Duration;

use rustpy_core::local::{LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ErrorCode, ParamValue};

const CONFIG: &str = r#"name: "gen"
backend: "rustpy"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "TEMP" data_type: TYPE_FP64 dims: [ 1 ] },
         { name: "DESC" data_type: TYPE_STRING dims: [ 1 ] } ]
"#;

const DECL: &str = r#"{
  "allow_unknown": false,
  "parameters": [
    {"name": "temperature", "type": "float", "default": 0.7, "min": 0, "max": 2},
    {"name": "max_tokens", "type": "int", "default": 16, "min": 1, "max": 512}
  ]
}"#;

const MODEL: &str = r#"
import numpy as np
class Model:
    split_by_parameters = True
    def predict(self, inputs, requests):
        temps, descs = [], []
        for r in requests:
            p = r.parameters
            for _ in range(r.batch_size):
                temps.append([p["temperature"]])
                descs.append([("%s:%s" % (type(p["temperature"]).__name__, p["max_tokens"])).encode()])
        return {"TEMP": np.array(temps, dtype=np.float64), "DESC": np.array(descs, dtype=object)}
"#;

fn request(params: Vec<(&str, ParamValue)>) -> OwnedRequest {
    OwnedRequest {
        inputs: vec![OwnedTensor {
            name: "X".into(),
            dtype: DataType::Fp32,
            shape: vec![1, 1],
            data: 1f32.to_le_bytes().to_vec().into(),
        }],
        parameters: params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Default::default()
    }
}

fn temp_and_desc(r: &[LocalResponse]) -> (f64, String) {
    let Some(LocalResponse::Outputs(out)) = r.last() else {
        panic!("expected outputs, got {r:?}")
    };
    let temp = out.iter().find(|t| t.name == "TEMP").unwrap();
    let desc = out.iter().find(|t| t.name == "DESC").unwrap();
    (
        f64::from_le_bytes(temp.data[..8].try_into().unwrap()),
        String::from_utf8_lossy(&desc.data[4..]).into_owned(),
    )
}

fn error(r: &[LocalResponse]) -> rustpy_core::Error {
    match r.last() {
        Some(LocalResponse::Error(e)) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn parameters_are_checked_typed_and_defaulted_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(dir.join("config.pbtxt"), CONFIG).unwrap();
    fs::write(dir.join("request_parameters.json"), DECL).unwrap();
    fs::write(dir.join("1/model.py"), MODEL).unwrap();
    let model = LocalModel::load(&dir, None).unwrap();

    let reqs = [
        request(vec![("temperature", ParamValue::Int(1))]),
        request(vec![("temperature", ParamValue::Double(5.0))]),
        request(vec![]),
        request(vec![
            ("temperature", ParamValue::Double(1.0)),
            ("max_tokens", ParamValue::Int(16)),
        ]),
        request(vec![("max_tokens", ParamValue::String("many".into()))]),
        request(vec![("top_p", ParamValue::Double(0.5))]),
    ];
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    // int 1 and float 1.0 are the same typed value: one group; defaults another.
    assert_eq!(report.calls, 2, "{responses:?}");
    assert_eq!(temp_and_desc(&responses[0]), (1.0, "float:16".into()));
    assert_eq!(temp_and_desc(&responses[2]), (0.7, "float:16".into()));
    assert_eq!(temp_and_desc(&responses[3]), (1.0, "float:16".into()));
    let e = error(&responses[1]);
    assert_eq!(e.code, ErrorCode::InvalidArg);
    assert_eq!(
        e.message,
        "model 'gen': request parameter 'temperature' is 5.0, above the maximum 2 (declared: float in [0, 2], default 0.7)"
    );
    assert!(
        error(&responses[4])
            .message
            .contains("request parameter 'max_tokens' must be of type int, got string \"many\""),
        "{:?}",
        responses[4]
    );
    assert_eq!(
        error(&responses[5]).message,
        "model 'gen': unknown request parameter 'top_p' (the model accepts: temperature, max_tokens)"
    );
}

#[test]
fn a_bad_declaration_fails_the_load_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(dir.join("config.pbtxt"), CONFIG).unwrap();
    fs::write(dir.join("1/model.py"), MODEL).unwrap();
    fs::write(
        dir.join("request_parameters.json"),
        "{\"parameters\": [\n  {\"name\": \"t\", \"type\": \"float\", \"default\": 3, \"max\": 2}\n]}",
    )
    .unwrap();
    let e = LocalModel::load(&dir, None).err().expect("load must fail");
    assert!(
        e.message.contains(
            "request_parameters.json:2:1: parameter 't': default is 3.0, above the maximum 2"
        ),
        "{}",
        e.message
    );
}

/// `ctx.labels` / `ctx.output_labels` in `initialize` (batched API).
#[test]
fn ctx_labels_come_from_label_filename_or_labels_txt() {
    let model_py = r#"
import numpy as np
class Model:
    def initialize(self, ctx):
        self.text = repr((ctx.labels, ctx.output_labels))
    def predict(self, inputs, requests):
        return {"DESC": np.array([[self.text.encode()]] * inputs["X"].shape[0], dtype=object),
                "TEMP": np.zeros((inputs["X"].shape[0], 1))}
"#;
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let model = LocalModel::load(dir, None).unwrap();
        let (responses, _) = model.infer(&[request(vec![])], Duration::from_secs(60));
        temp_and_desc(&responses[0]).1
    };
    // label_filename on an output.
    let dir = tmp.path().join("a");
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(
        dir.join("config.pbtxt"),
        CONFIG.replace(
            "dims: [ 1 ] },\n         { name: \"DESC\"",
            "dims: [ 1 ] label_filename: \"names.txt\" },\n         { name: \"DESC\"",
        ),
    )
    .unwrap();
    fs::write(dir.join("names.txt"), "cat\ndog\n\n").unwrap();
    fs::write(dir.join("labels.txt"), "ignored\n").unwrap();
    fs::write(dir.join("1/model.py"), model_py).unwrap();
    assert_eq!(run(&dir), "(['cat', 'dog'], {'TEMP': ['cat', 'dog']})");
    // labels.txt only.
    let dir = tmp.path().join("b");
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(dir.join("config.pbtxt"), CONFIG).unwrap();
    fs::write(dir.join("labels.txt"), "red\ngreen\n").unwrap();
    fs::write(dir.join("1/model.py"), model_py).unwrap();
    assert_eq!(run(&dir), "(['red', 'green'], {})");
}
