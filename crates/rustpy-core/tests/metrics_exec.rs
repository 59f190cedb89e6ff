//! What an execution counts in rustpy's metrics, through the same host the
//! backend uses (`InstanceHost::execute`), recorded into memory: calls,
//! rows per call, splits by reason, phases, GIL wait and refused
//! parameters. Under Triton the batcher never mixes shapes or input sets in
//! one batch (tests/e2e/test_metrics.py counts what it can: parameter
//! splits and refusals); here a batch of anything can be formed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustpy_core::host::HostSettings;
use rustpy_core::local::{LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::metrics::{MemoryRecorder, Metrics};
use rustpy_core::server::OwnedTensor;
use rustpy_core::{DataType, ParamValue};

const CONFIG: &str = r#"
max_batch_size: 16
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "Z" data_type: TYPE_FP32 dims: [ -1 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#;

const MODEL_PY: &str = r#"
class Model:
    split_by_parameters = True
    def predict(self, inputs, requests):
        return {"Y": inputs["X"] * requests[0].parameters["scale"]}
"#;

const PARAMS: &str = r#"{"allow_unknown": false, "parameters": [
    {"name": "scale", "type": "int", "default": 1, "min": 1, "max": 10}]}"#;

const PB_UTILS_PY: &str = r#"
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return out
"#;

fn write_model(root: &Path, name: &str, model_py: &str, params: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(dir.join("1")).unwrap();
    fs::write(
        dir.join("config.pbtxt"),
        format!("name: \"{name}\"\nbackend: \"rustpy\"\n{CONFIG}"),
    )
    .unwrap();
    fs::write(dir.join("1/model.py"), model_py).unwrap();
    if let Some(p) = params {
        fs::write(dir.join("request_parameters.json"), p).unwrap();
    }
    dir
}

fn load(dir: &Path) -> (LocalModel, Arc<MemoryRecorder>) {
    let (metrics, memory) = Metrics::in_memory();
    let settings = HostSettings {
        metrics,
        ..HostSettings::for_executable(Vec::new())
    };
    (LocalModel::load_with(dir, None, &settings).unwrap(), memory)
}

fn tensor(name: &str, shape: &[i64]) -> OwnedTensor {
    let n: i64 = shape.iter().product();
    OwnedTensor {
        name: name.into(),
        dtype: DataType::Fp32,
        shape: shape.to_vec(),
        data: (0..n).flat_map(|v| (v as f32).to_le_bytes()).collect(),
    }
}

fn request(inputs: Vec<OwnedTensor>, params: &[(&str, ParamValue)]) -> OwnedRequest {
    OwnedRequest {
        inputs,
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn answered(responses: &[Vec<LocalResponse>]) -> Vec<bool> {
    responses
        .iter()
        .map(|r| matches!(r.last(), Some(LocalResponse::Outputs(_))))
        .collect()
}

#[test]
fn a_mixed_batch_counts_its_calls_rows_splits_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "mixed", MODEL_PY, Some(PARAMS));
    let (model, memory) = load(&dir);
    let batch = vec![
        request(vec![tensor("X", &[1, 2])], &[]),
        // Same item shape and (default) parameters: shares the first call.
        request(vec![tensor("X", &[2, 2])], &[("scale", ParamValue::Int(1))]),
        // A different item shape: a call of its own.
        request(vec![tensor("X", &[1, 3])], &[]),
        // Another input set.
        request(vec![tensor("X", &[1, 2]), tensor("Z", &[1, 2])], &[]),
        // Other parameters.
        request(vec![tensor("X", &[1, 2])], &[("scale", ParamValue::Int(2))]),
        // Refused: unknown, invalid (out of range).
        request(vec![tensor("X", &[1, 2])], &[("nope", ParamValue::Int(1))]),
        request(
            vec![tensor("X", &[1, 2])],
            &[("scale", ParamValue::Int(99))],
        ),
    ];
    let (responses, report) = model.infer(&batch, Duration::from_secs(30));
    assert_eq!(
        answered(&responses),
        [true, true, true, true, true, false, false]
    );
    assert_eq!(report.calls, 4);

    let labels = ["mixed", "1", "mixed_0"];
    let with = |extra: &'static str| [labels[0], labels[1], labels[2], extra];
    assert_eq!(memory.value("rustpy_executions_total", &labels), Some(1.0));
    assert_eq!(memory.value("rustpy_calls_total", &labels), Some(4.0));
    let rows = memory.histogram("rustpy_call_rows", &labels).unwrap();
    assert_eq!((rows.count, rows.sum), (4, 6.0), "{rows:?}");
    for reason in ["shape", "inputs", "parameters"] {
        assert_eq!(
            memory.value("rustpy_batch_splits_total", &with(reason)),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(
        memory.value("rustpy_parameter_refusals_total", &with("unknown")),
        Some(1.0)
    );
    assert_eq!(
        memory.value("rustpy_parameter_refusals_total", &with("invalid")),
        Some(1.0)
    );
    assert_eq!(
        memory.value("rustpy_parameter_refusals_total", &with("missing")),
        Some(0.0)
    );
    // Every phase and the GIL wait: one observation per call.
    for phase in ["gather", "python", "scatter", "send"] {
        let h = memory
            .histogram("rustpy_phase_duration_seconds", &with(phase))
            .unwrap();
        assert_eq!(h.count, 4, "{phase}");
    }
    let python = memory
        .histogram("rustpy_phase_duration_seconds", &with("python"))
        .unwrap();
    assert!(python.sum > 0.0, "{python:?}");
    assert_eq!(memory.value("rustpy_gil_wait_seconds", &labels), Some(4.0));

    // A second, uniform batch: one more call, no more splits.
    let (_, report) = model.infer(
        &[
            request(vec![tensor("X", &[3, 2])], &[]),
            request(vec![tensor("X", &[2, 2])], &[]),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(report.calls, 1);
    assert_eq!(memory.value("rustpy_calls_total", &labels), Some(5.0));
    let rows = memory.histogram("rustpy_call_rows", &labels).unwrap();
    assert_eq!((rows.count, rows.sum), (5, 11.0));
    assert_eq!(
        memory.value("rustpy_batch_splits_total", &with("shape")),
        Some(1.0)
    );
    model.finalize().unwrap();
}

#[test]
fn the_official_api_counts_one_call_with_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "official", PB_UTILS_PY, None);
    let (model, memory) = load(&dir);
    let batch = vec![
        request(vec![tensor("X", &[2, 2])], &[]),
        request(vec![tensor("X", &[1, 3])], &[]),
    ];
    let (responses, _) = model.infer(&batch, Duration::from_secs(30));
    assert_eq!(answered(&responses), [true, true]);
    let labels = ["official", "1", "official_0"];
    assert_eq!(memory.value("rustpy_calls_total", &labels), Some(1.0));
    let rows = memory.histogram("rustpy_call_rows", &labels).unwrap();
    assert_eq!((rows.count, rows.sum), (1, 3.0));
    for phase in ["gather", "python", "scatter", "send"] {
        let h = memory
            .histogram(
                "rustpy_phase_duration_seconds",
                &["official", "1", "official_0", phase],
            )
            .unwrap();
        assert_eq!(h.count, 1, "{phase}");
    }
    model.finalize().unwrap();
}

#[test]
fn with_metrics_off_nothing_is_recorded_and_the_model_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "quiet", MODEL_PY, Some(PARAMS));
    let model = LocalModel::load(&dir, None).unwrap();
    let (responses, report) = model.infer(
        &[request(vec![tensor("X", &[1, 2])], &[])],
        Duration::from_secs(30),
    );
    assert_eq!(answered(&responses), [true]);
    // The strategy still counted (the host records it only when on).
    assert_eq!(report.stats.calls.len(), 1);
    model.finalize().unwrap();
}
