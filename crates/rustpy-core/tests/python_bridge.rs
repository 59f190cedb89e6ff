//! The Python bridge without a server: models written to temp dirs, loaded
//! and executed through the same core the backend uses.

use std::fs;
use std::path::Path;
use std::time::Duration;

use rustpy_core::local::{LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ParamValue};

fn write_model(root: &Path, name: &str, config: &str, model_py: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(
        dir.join("config.pbtxt"),
        format!("name: \"{name}\"\nbackend: \"rustpy\"\n{config}"),
    )
    .unwrap();
    fs::write(dir.join("1/model.py"), model_py).unwrap();
    dir
}

fn f32_tensor(name: &str, shape: &[i64], values: &[f32]) -> OwnedTensor {
    OwnedTensor {
        name: name.into(),
        dtype: DataType::Fp32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn as_f32(t: &OwnedTensor) -> Vec<f32> {
    t.data
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn outputs(r: &[LocalResponse]) -> &Vec<OwnedTensor> {
    match r.last() {
        Some(LocalResponse::Outputs(o)) => o,
        other => panic!("expected outputs, got {other:?}"),
    }
}

fn error(r: &[LocalResponse]) -> String {
    match r.last() {
        Some(LocalResponse::Error(e)) => e.message.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

const ADD_CONFIG: &str = r#"
max_batch_size: 16
input [ { name: "A" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "B" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "CALLS" data_type: TYPE_INT64 dims: [ 1 ] } ]
"#;

const ADD_PY: &str = r#"
import numpy as np
class Model:
    def initialize(self, ctx):
        self.calls = 0
        assert ctx.model_name == "add" and ctx.model_version == 1, ctx
        assert ctx.config["max_batch_size"] == 16
    def predict(self, inputs, requests):
        self.calls += 1
        a, b = inputs["A"], inputs["B"]
        assert a.shape[0] == sum(r.batch_size for r in requests)
        if np.any(a < 0):
            raise ValueError("boom: negative input")
        calls = np.full((a.shape[0], 1), self.calls, dtype=np.int64)
        return {"SUM": a + b, "CALLS": calls}
"#;

#[test]
fn batch_is_gathered_into_one_call_and_scattered_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "add", ADD_CONFIG, ADD_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let reqs: Vec<OwnedRequest> = (0..3)
        .map(|i| {
            let rows = i + 1;
            let vals: Vec<f32> = (0..rows * 2).map(|v| (v + 10 * i) as f32).collect();
            OwnedRequest {
                id: format!("r{i}"),
                inputs: vec![
                    f32_tensor("A", &[rows as i64, 2], &vals),
                    f32_tensor("B", &[rows as i64, 2], &vals),
                ],
                ..Default::default()
            }
        })
        .collect();
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(
        report.calls, 1,
        "three compatible requests make one predict call"
    );
    assert_eq!(report.total_rows(), 6);
    for (i, r) in responses.iter().enumerate() {
        let out = outputs(r);
        let sum = out.iter().find(|t| t.name == "SUM").unwrap();
        assert_eq!(sum.shape, vec![i as i64 + 1, 2]);
        let expected: Vec<f32> = (0..(i + 1) * 2)
            .map(|v| 2.0 * (v + 10 * i) as f32)
            .collect();
        assert_eq!(as_f32(sum), expected);
    }
}

#[test]
fn different_item_shapes_split_into_separate_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "add", ADD_CONFIG, ADD_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let r2 = OwnedRequest {
        inputs: vec![
            f32_tensor("A", &[1, 2], &[1., 2.]),
            f32_tensor("B", &[1, 2], &[1., 1.]),
        ],
        ..Default::default()
    };
    let r3 = OwnedRequest {
        inputs: vec![
            f32_tensor("A", &[1, 3], &[1., 2., 3.]),
            f32_tensor("B", &[1, 3], &[0., 0., 0.]),
        ],
        ..Default::default()
    };
    let (responses, report) = model.infer(&[r2.clone(), r3, r2], Duration::from_secs(60));
    assert_eq!(report.calls, 2);
    assert_eq!(as_f32(&outputs(&responses[1])[0]), vec![1., 2., 3.]);
    assert_eq!(as_f32(&outputs(&responses[2])[0]), vec![2., 3.]);
}

#[test]
fn one_bad_request_fails_alone_and_exceptions_name_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "add", ADD_CONFIG, ADD_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let good = OwnedRequest {
        inputs: vec![
            f32_tensor("A", &[1, 2], &[1., 2.]),
            f32_tensor("B", &[1, 2], &[1., 1.]),
        ],
        ..Default::default()
    };
    let mut wrong_dtype = good.clone();
    wrong_dtype.inputs[1].dtype = DataType::Int32;
    let mut missing = good.clone();
    missing.inputs.pop();
    let (responses, _) = model.infer(
        &[good.clone(), wrong_dtype, missing, good.clone()],
        Duration::from_secs(60),
    );
    assert_eq!(as_f32(&outputs(&responses[0])[0]), vec![2., 3.]);
    let e = error(&responses[1]);
    assert!(
        e.contains("model 'add'") && e.contains("input 'B'") && e.contains("INT32"),
        "{e}"
    );
    assert!(error(&responses[2]).contains("missing required input 'B'"));
    assert_eq!(as_f32(&outputs(&responses[3])[0]), vec![2., 3.]);

    let mut negative = good.clone();
    negative.inputs[0] = f32_tensor("A", &[1, 2], &[-1., 2.]);
    let (responses, _) = model.infer(&[negative], Duration::from_secs(60));
    let e = error(&responses[0]);
    assert!(
        e.contains("model 'add'") && e.contains("ValueError: boom: negative input"),
        "{e}"
    );
    assert!(
        e.contains("model.py") && e.contains("in predict"),
        "traceback tail expected: {e}"
    );
}

#[test]
fn wrong_outputs_are_reported_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let py = r#"
import numpy as np
class Model:
    def predict(self, inputs, requests):
        mode = requests[0].parameters.get("mode")
        a = inputs["A"]
        if mode == "dtype":
            return {"SUM": a.astype(np.float64), "CALLS": np.zeros((a.shape[0], 1), np.int64)}
        if mode == "name":
            return {"NOPE": a}
        if mode == "rows":
            return {"SUM": a[:0], "CALLS": np.zeros((a.shape[0], 1), np.int64)}
        if mode == "type":
            return [a]
        return {"SUM": a, "CALLS": np.zeros((a.shape[0], 1), np.int64)}
"#;
    let dir = write_model(tmp.path(), "bad", ADD_CONFIG, py);
    let model = LocalModel::load(&dir, None).unwrap();
    let base = OwnedRequest {
        inputs: vec![
            f32_tensor("A", &[1, 2], &[1., 2.]),
            f32_tensor("B", &[1, 2], &[1., 1.]),
        ],
        ..Default::default()
    };
    let with = |mode: &str| {
        let mut r = base.clone();
        r.parameters = vec![("mode".into(), ParamValue::String(mode.into()))];
        r
    };
    let cases = [
        (
            "dtype",
            "output 'SUM' is a numpy float64 array but the model config declares FP32",
        ),
        ("name", "unknown output 'NOPE'"),
        (
            "rows",
            "output 'SUM' has leading dim 0 but the batch has 1 rows",
        ),
        ("type", "predict must return a dict"),
    ];
    for (mode, expected) in cases {
        let (responses, _) = model.infer(&[with(mode)], Duration::from_secs(60));
        let e = error(&responses[0]);
        assert!(e.contains(expected), "{mode}: {e}");
    }
    let (responses, _) = model.infer(&[with("ok")], Duration::from_secs(60));
    assert_eq!(as_f32(&outputs(&responses[0])[0]), vec![1., 2.]);
}

#[test]
fn bytes_round_trip_and_generators_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "UPPER" data_type: TYPE_STRING dims: [ -1 ] } ]
"#;
    let py = r#"
import numpy as np
class Model:
    def predict(self, inputs):
        for word in inputs["TEXT"]:
            yield {"UPPER": np.array([word.decode().upper()], dtype=object)}
"#;
    let dir = write_model(tmp.path(), "stream", config, py);
    let model = LocalModel::load(&dir, None).unwrap();
    let mut data = Vec::new();
    for w in ["héllo", "", "x"] {
        rustpy_core::bytes::encode_into(&mut data, w.as_bytes()).unwrap();
    }
    let req = OwnedRequest {
        inputs: vec![OwnedTensor {
            name: "TEXT".into(),
            dtype: DataType::Bytes,
            shape: vec![3],
            data: data.into(),
        }],
        ..Default::default()
    };
    let (responses, _) = model.infer(&[req], Duration::from_secs(60));
    let words: Vec<String> = responses[0]
        .iter()
        .map(|r| match r {
            LocalResponse::Outputs(o) => {
                let elems = rustpy_core::bytes::decode(&o[0].data, 1).unwrap();
                String::from_utf8(elems[0].to_vec()).unwrap()
            }
            LocalResponse::Error(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(words, vec!["HÉLLO", "", "X"]);
}

#[test]
fn sibling_modules_are_private_to_each_model_and_reload_rereads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"#;
    let py = "import numpy as np\nimport utils\nclass Model:\n    def predict(self, inputs):\n        return {\"Y\": inputs[\"X\"] + utils.OFFSET}\n";
    let one = write_model(tmp.path(), "one", config, py);
    let two = write_model(tmp.path(), "two", config, py);
    fs::write(one.join("1/utils.py"), "OFFSET = 1.0\n").unwrap();
    fs::write(two.join("1/utils.py"), "OFFSET = 2.0\n").unwrap();
    let req = OwnedRequest {
        inputs: vec![f32_tensor("X", &[1], &[10.])],
        ..Default::default()
    };
    let m1 = LocalModel::load(&one, None).unwrap();
    let m2 = LocalModel::load(&two, None).unwrap();
    assert_eq!(
        as_f32(
            &outputs(
                &m1.infer(std::slice::from_ref(&req), Duration::from_secs(60))
                    .0[0]
            )[0]
        ),
        vec![11.]
    );
    assert_eq!(
        as_f32(
            &outputs(
                &m2.infer(std::slice::from_ref(&req), Duration::from_secs(60))
                    .0[0]
            )[0]
        ),
        vec![12.]
    );

    fs::write(one.join("1/utils.py"), "OFFSET = 100.0\n").unwrap();
    drop(m1);
    let m1 = LocalModel::load(&one, None).unwrap();
    assert_eq!(
        as_f32(&outputs(&m1.infer(&[req], Duration::from_secs(60)).0[0])[0]),
        vec![110.]
    );
}

#[test]
fn load_errors_carry_file_line_and_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "max_batch_size: 0\ninput [ { name: \"X\" data_type: TYPE_FP32 dims: [ 1 ] } ]\noutput [ { name: \"Y\" data_type: TYPE_FP32 dims: [ 1 ] } ]\n";
    let dir = write_model(
        tmp.path(),
        "broken",
        config,
        "import numpy\n\ndef oops(:\n    pass\n",
    );
    let e = LocalModel::load(&dir, None)
        .err()
        .expect("syntax error must fail the load")
        .message;
    assert!(
        e.contains("model.py:3:") && e.contains("SyntaxError"),
        "{e}"
    );

    let dir = write_model(tmp.path(), "noclass", config, "X = 1\n");
    let e = LocalModel::load(&dir, None).err().unwrap().message;
    assert!(e.contains("defines neither `class Model`"), "{e}");

    let dir = write_model(tmp.path(), "initfail", config, "class Model:\n    def initialize(self, ctx):\n        raise RuntimeError('no weights')\n    def predict(self, inputs):\n        return {}\n");
    let e = LocalModel::load(&dir, None).err().unwrap().message;
    assert!(
        e.contains("initialize raised") && e.contains("RuntimeError: no weights"),
        "{e}"
    );
}

#[test]
fn pb_utils_models_run_through_the_same_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "B" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "C" data_type: TYPE_FP32 dims: [ 2 ] } ]
"#;
    let py = r#"
import json
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def initialize(self, args):
        assert json.loads(args["model_config"])["name"] == "compat"
        assert args["model_version"] == "1"
    def execute(self, requests):
        responses = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "A").as_numpy()
            if a[0, 0] < 0:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative", pb_utils.TritonError.INVALID_ARG)))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("B", a * 2), pb_utils.Tensor("C", a * 3)]))
        if json.loads(requests[0].parameters()).get("short"):
            return responses[:-1]
        return responses
"#;
    let dir = write_model(tmp.path(), "compat", config, py);
    let model = LocalModel::load(&dir, None).unwrap();
    let ok = OwnedRequest {
        inputs: vec![f32_tensor("A", &[1, 2], &[1., 2.])],
        requested_outputs: vec!["C".into()],
        ..Default::default()
    };
    let neg = OwnedRequest {
        inputs: vec![f32_tensor("A", &[1, 2], &[-1., 2.])],
        ..Default::default()
    };
    let (responses, _) = model.infer(&[ok.clone(), neg], Duration::from_secs(60));
    let out = outputs(&responses[0]);
    assert_eq!(out.len(), 1, "only the requested output is returned");
    assert_eq!((out[0].name.as_str(), as_f32(&out[0])), ("C", vec![3., 6.]));
    assert_eq!(error(&responses[1]), "negative");

    let mut short = ok.clone();
    short.parameters = vec![("short".into(), ParamValue::Bool(true))];
    let (responses, _) = model.infer(&[short, ok], Duration::from_secs(60));
    for r in &responses {
        let e = error(r);
        assert!(
            e.contains("Number of InferenceResponse objects do not match"),
            "{e}"
        );
    }
}

#[test]
fn pb_utils_decoupled_sends_from_execute_and_from_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"#;
    let py = r#"
import threading
import numpy as np
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            n = int(pb_utils.get_input_tensor_by_name(r, "N").as_numpy()[0])
            sender = r.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([100], np.int32))]))
            def rest(sender=sender, n=n):
                for i in range(n):
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            threading.Thread(target=rest).start()
        return None
"#;
    let dir = write_model(tmp.path(), "dec", config, py);
    let model = LocalModel::load(&dir, None).unwrap();
    let req = OwnedRequest {
        inputs: vec![OwnedTensor {
            name: "N".into(),
            dtype: DataType::Int32,
            shape: vec![1],
            data: 3i32.to_le_bytes().to_vec().into(),
        }],
        ..Default::default()
    };
    let (responses, _) = model.infer(&[req], Duration::from_secs(60));
    let values: Vec<i32> = responses[0]
        .iter()
        .map(|r| match r {
            LocalResponse::Outputs(o) => i32::from_le_bytes(o[0].data[..4].try_into().unwrap()),
            LocalResponse::Error(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(values, vec![100, 0, 1, 2]);
}

#[test]
fn bf16_passes_through_as_raw_uint16() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_BF16 dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_BF16 dims: [ 2 ] } ]
"#;
    let py = r#"
import numpy as np
class Model:
    def predict(self, inputs):
        x = inputs["X"]
        assert x.dtype == np.uint16, x.dtype
        return {"Y": x[:, ::-1].copy()}
"#;
    let dir = write_model(tmp.path(), "bf16", config, py);
    let model = LocalModel::load(&dir, None).unwrap();
    // 1.0 and -2.0 in bfloat16: 0x3F80, 0xC000.
    let data: Vec<u8> = [0x3F80u16, 0xC000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let req = OwnedRequest {
        inputs: vec![OwnedTensor {
            name: "X".into(),
            dtype: DataType::Bf16,
            shape: vec![1, 2],
            data: data.into(),
        }],
        ..Default::default()
    };
    let (responses, _) = model.infer(&[req], Duration::from_secs(60));
    let out = &outputs(&responses[0])[0];
    assert_eq!(out.dtype, DataType::Bf16);
    let words: Vec<u16> = out
        .data
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(words, vec![0xC000, 0x3F80]);
}

#[test]
fn large_batches_are_gathered_without_the_gil_and_stay_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "add", ADD_CONFIG, ADD_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    // Two requests of 160 KB each: the gather copy (> 256 KiB) runs GIL-free.
    let n = 40_000usize;
    let reqs: Vec<OwnedRequest> = (0..2)
        .map(|i| {
            let vals: Vec<f32> = (0..n).map(|v| (v + i * n) as f32).collect();
            OwnedRequest {
                inputs: vec![
                    f32_tensor("A", &[1, n as i64], &vals),
                    f32_tensor("B", &[1, n as i64], &vals),
                ],
                ..Default::default()
            }
        })
        .collect();
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(report.calls, 1);
    for (i, r) in responses.iter().enumerate() {
        let sum = as_f32(&outputs(r)[0]);
        assert_eq!(sum.len(), n);
        assert!(sum
            .iter()
            .enumerate()
            .all(|(v, s)| *s == 2.0 * (v + i * n) as f32));
    }
}

#[test]
fn lazy_sibling_imports_resolve_per_model_and_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"#;
    // `lazyutils` is imported for the first time inside predict.
    let py = "class Model:\n    def predict(self, inputs):\n        import lazyutils\n        from lazypkg.sub import SCALE\n        return {\"Y\": inputs[\"X\"] * SCALE + lazyutils.OFFSET}\n";
    let one = write_model(tmp.path(), "one", config, py);
    let two = write_model(tmp.path(), "two", config, py);
    for (dir, offset, scale) in [(&one, "1.0", "2.0"), (&two, "5.0", "3.0")] {
        fs::write(dir.join("1/lazyutils.py"), format!("OFFSET = {offset}\n")).unwrap();
        fs::create_dir_all(dir.join("1/lazypkg")).unwrap();
        fs::write(dir.join("1/lazypkg/__init__.py"), "").unwrap();
        fs::write(dir.join("1/lazypkg/sub.py"), format!("SCALE = {scale}\n")).unwrap();
    }
    let req = OwnedRequest {
        inputs: vec![f32_tensor("X", &[1], &[10.])],
        ..Default::default()
    };
    let m1 = LocalModel::load(&one, None).unwrap();
    let m2 = LocalModel::load(&two, None).unwrap();
    for _ in 0..2 {
        assert_eq!(
            as_f32(
                &outputs(
                    &m1.infer(std::slice::from_ref(&req), Duration::from_secs(60))
                        .0[0]
                )[0]
            ),
            vec![21.]
        );
        assert_eq!(
            as_f32(
                &outputs(
                    &m2.infer(std::slice::from_ref(&req), Duration::from_secs(60))
                        .0[0]
                )[0]
            ),
            vec![35.]
        );
    }
    fs::write(one.join("1/lazyutils.py"), "OFFSET = 100.0\n").unwrap();
    drop(m1);
    let m1 = LocalModel::load(&one, None).unwrap();
    assert_eq!(
        as_f32(
            &outputs(
                &m1.infer(std::slice::from_ref(&req), Duration::from_secs(60))
                    .0[0]
            )[0]
        ),
        vec![120.]
    );
}

const CLASS_PROBE_CONFIG: &str = r#"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "SAME" data_type: TYPE_INT64 dims: [ 1 ] } ]
"#;

/// The first model keeps pb_utils' classes; every later load must see the
/// same class objects (a load re-running pb_utils' source would redefine
/// them, and a model loading on another thread would then fail its
/// `isinstance` checks, as auto_complete_config did under Triton).
const CLASS_PROBE_PY: &str = r#"
import builtins
import numpy as np
import triton_python_backend_utils as pb_utils
class Model:
    def initialize(self, ctx):
        if not hasattr(builtins, "_rustpy_class_probe"):
            builtins._rustpy_class_probe = (pb_utils.ModelConfig, pb_utils.Tensor, pb_utils.InferenceRequest)
    def predict(self, inputs):
        import triton_python_backend_utils as now
        kept = builtins._rustpy_class_probe
        same = kept == (now.ModelConfig, now.Tensor, now.InferenceRequest)
        return {"SAME": np.full((inputs["X"].shape[0], 1), int(same), dtype=np.int64)}
"#;

#[test]
fn later_loads_keep_the_pb_utils_classes_of_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let first = write_model(tmp.path(), "probe_a", CLASS_PROBE_CONFIG, CLASS_PROBE_PY);
    let second = write_model(tmp.path(), "probe_b", CLASS_PROBE_CONFIG, CLASS_PROBE_PY);
    let a = LocalModel::load(&first, None).unwrap();
    let b = LocalModel::load(&second, None).unwrap();
    let request = OwnedRequest {
        inputs: vec![f32_tensor("X", &[1, 1], &[1.0])],
        ..Default::default()
    };
    for model in [&a, &b] {
        let (responses, _) = model.infer(std::slice::from_ref(&request), Duration::from_secs(60));
        let same = &outputs(&responses[0])[0];
        assert_eq!(
            same.data,
            1i64.to_le_bytes().to_vec(),
            "pb_utils classes were redefined by a later load"
        );
    }
}
