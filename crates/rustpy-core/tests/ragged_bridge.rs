//! Ragged batches, batch inputs/outputs, per-request outputs and input
//! defaults through the core without a server (what `rustpy run` and the
//! backend share). The e2e side is tests/e2e/test_ragged.py.

use std::fs;
use std::path::Path;
use std::time::Duration;

use rustpy_core::local::{LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::OwnedTensor;
use rustpy_core::DataType;

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

fn tensor(name: &str, dtype: DataType, shape: &[i64], data: Vec<u8>) -> OwnedTensor {
    OwnedTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        data: data.into(),
    }
}

fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn req(inputs: Vec<OwnedTensor>) -> OwnedRequest {
    OwnedRequest {
        inputs,
        ..Default::default()
    }
}

fn out<'r>(r: &'r [LocalResponse], name: &str) -> &'r OwnedTensor {
    match r.last() {
        Some(LocalResponse::Outputs(o)) => o.iter().find(|t| t.name == name).unwrap(),
        other => panic!("expected outputs, got {other:?}"),
    }
}

fn error(r: &[LocalResponse]) -> String {
    match r.last() {
        Some(LocalResponse::Error(e)) => e.message.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

const TOKENS: &str = r#"
max_batch_size: 8
input [ { name: "T" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true },
        { name: "W" data_type: TYPE_STRING dims: [ -1 ] allow_ragged_batch: true } ]
batch_input [
  { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "OFF" data_type: TYPE_INT32 source_input: "T" },
  { kind: BATCH_ITEM_SHAPE_FLATTEN target_name: "LEN" data_type: TYPE_FP32 source_input: "W" } ]
output [ { name: "D" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
batch_output [ { target_name: "D" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "T" } ]
"#;

const TOKENS_PY: &str = r#"
import numpy as np
class Model:
    def predict(self, inputs, requests):
        t, off, w, ln = inputs["T"], inputs["OFF"], inputs["W"], inputs["LEN"]
        assert t.shape == (12,), t.shape
        assert off.tolist() == [0, 3, 7, 12], off
        assert ln.dtype == np.float32 and ln.tolist() == [1.0, 2.0, 1.0], ln
        assert w.tolist() == [b"a", b"b", b"c", b"d"], w
        n = len(requests)
        if requests[0].parameters.get("mode") == "badlen":
            return {"D": t[:-2] * 2, "N": np.full((n, 1), n, np.int32)}
        return {"D": t * 2, "N": np.full((n, 1), n, np.int32)}
"#;

fn token_requests() -> Vec<OwnedRequest> {
    let words: [&[&[u8]]; 3] = [&[b"a"], &[b"b", b"c"], &[b"d"]];
    [3, 4, 5]
        .iter()
        .zip(words)
        .map(|(&n, w)| {
            let t: Vec<i32> = (0..n).map(|v| v + 10 * n).collect();
            let mut wb = Vec::new();
            for e in w {
                wb.extend_from_slice(&(e.len() as u32).to_le_bytes());
                wb.extend_from_slice(e);
            }
            req(vec![
                tensor("T", DataType::Int32, &[1, n as i64], i32s(&t)),
                tensor("W", DataType::Bytes, &[1, w.len() as i64], wb),
            ])
        })
        .collect()
}

#[test]
fn ragged_requests_share_one_call_and_scatter_by_input_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "tok", TOKENS, TOKENS_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let (responses, report) = model.infer(&token_requests(), Duration::from_secs(60));
    assert_eq!(report.calls, 1, "lengths 3, 4 and 5 share one call");
    for (r, n) in responses.iter().zip([3, 4, 5]) {
        let d = out(r, "D");
        assert_eq!(d.shape, vec![1, n]);
        let want: Vec<i32> = (0..n as i32).map(|v| 2 * (v + 10 * n as i32)).collect();
        assert_eq!(d.data, i32s(&want));
        assert_eq!(out(r, "N").data, i32s(&[3]));
    }
}

#[test]
fn inconsistent_ragged_lengths_fail_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "tok", TOKENS, TOKENS_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let mut reqs = token_requests();
    reqs[0].parameters = vec![(
        "mode".into(),
        rustpy_core::ParamValue::String("badlen".into()),
    )];
    let (responses, _) = model.infer(&reqs, Duration::from_secs(60));
    for r in &responses {
        let e = error(r);
        assert!(
            e.contains("output 'D'")
                && e.contains("has 10 elements")
                && e.contains("call for 12 ([1,3] + [1,4] + [1,5])"),
            "{e}"
        );
    }
}

const PAD: &str = r#"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, -1 ] allow_ragged_batch: true } ]
batch_input [ { kind: BATCH_ITEM_SHAPE target_name: "S" data_type: TYPE_INT32 source_input: "X" } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "rustpy.ragged" value { string_value: "pad" } }
"#;

const PAD_PY: &str = r#"
import numpy as np
class Model:
    def predict(self, inputs, requests):
        x, s = inputs["X"], inputs["S"]
        assert x.shape == (3, 3, 2), x.shape
        assert s.tolist() == [[1, 2], [1, 2], [3, 1]], s
        # Rows: every padded item flattened (padding is zero).
        return [{"Y": x[0:2].reshape(2, -1)}, {"Y": x[2:3].reshape(1, -1)}]
"#;

#[test]
fn pad_layout_and_per_request_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(tmp.path(), "pad", PAD, PAD_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let reqs = vec![
        req(vec![tensor(
            "X",
            DataType::Fp32,
            &[2, 1, 2],
            f32s(&[1., 2., 3., 4.]),
        )]),
        req(vec![tensor(
            "X",
            DataType::Fp32,
            &[1, 3, 1],
            f32s(&[5., 6., 7.]),
        )]),
    ];
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(report.calls, 1);
    let y = out(&responses[0], "Y");
    assert_eq!(y.shape, vec![2, 6]);
    assert_eq!(
        y.data,
        f32s(&[1., 2., 0., 0., 0., 0., 3., 4., 0., 0., 0., 0.])
    );
    let y = out(&responses[1], "Y");
    assert_eq!(y.shape, vec![1, 6]);
    assert_eq!(y.data, f32s(&[5., 0., 6., 0., 7., 0.]));
}

const OPT: &str = r#"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] },
        { name: "S" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"#;

const OPT_PY: &str = r#"
class Model:
    def predict(self, inputs):
        s = inputs.get("S")
        return {"Y": inputs["X"] if s is None else inputs["X"] * s}
"#;

#[test]
fn optional_inputs_share_a_call_only_with_a_default() {
    let tmp = tempfile::tempdir().unwrap();
    let reqs = vec![
        req(vec![
            tensor("X", DataType::Fp32, &[1, 2], f32s(&[1., 2.])),
            tensor("S", DataType::Fp32, &[1, 1], f32s(&[3.])),
        ]),
        req(vec![tensor(
            "X",
            DataType::Fp32,
            &[2, 2],
            f32s(&[1., 2., 3., 4.]),
        )]),
    ];
    let with = format!(
        "{OPT}parameters {{ key: \"rustpy.default.S\" value {{ string_value: \"0.5\" }} }}\n"
    );
    let dir = write_model(tmp.path(), "opt_d", &with, OPT_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(report.calls, 1, "the default fills the missing rows");
    assert_eq!(out(&responses[0], "Y").data, f32s(&[3., 6.]));
    assert_eq!(out(&responses[1], "Y").data, f32s(&[0.5, 1., 1.5, 2.]));

    let dir = write_model(tmp.path(), "opt_n", OPT, OPT_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(report.calls, 2, "without a default they are split");
    assert_eq!(out(&responses[0], "Y").data, f32s(&[3., 6.]));
    assert_eq!(out(&responses[1], "Y").data, f32s(&[1., 2., 3., 4.]));
}

#[test]
fn bad_ragged_configs_fail_the_load_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_model(
        tmp.path(),
        "bad",
        &TOKENS.replace("max_batch_size: 8", "max_batch_size: 0"),
        TOKENS_PY,
    );
    let e = LocalModel::load(&dir, None).err().unwrap();
    assert!(
        e.to_string()
            .contains("allow_ragged_batch but max_batch_size is 0"),
        "{e}"
    );
    let dir = write_model(
        tmp.path(),
        "bad2",
        &format!(
            "{OPT}parameters {{ key: \"rustpy.default.S\" value {{ string_value: \"x\" }} }}\n"
        ),
        OPT_PY,
    );
    let e = LocalModel::load(&dir, None).err().unwrap();
    assert!(e.to_string().contains("\"x\" is not a number"), "{e}");
}

#[test]
fn pad_layout_for_bytes_uses_empty_elements() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"
max_batch_size: 8
input [ { name: "W" data_type: TYPE_STRING dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "J" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "rustpy.ragged" value { string_value: "pad" } }
"#;
    let py = r#"
import numpy as np
class Model:
    def predict(self, inputs):
        w = inputs["W"]
        assert w.shape == (2, 3), w.shape
        return {"J": np.array([[b"|".join(row)] for row in w], dtype=object)}
"#;
    let dir = write_model(tmp.path(), "padb", config, py);
    let model = LocalModel::load(&dir, None).unwrap();
    let enc = |elems: &[&[u8]]| {
        let mut out = Vec::new();
        for e in elems {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(e);
        }
        out
    };
    let reqs = vec![
        req(vec![tensor(
            "W",
            DataType::Bytes,
            &[1, 3],
            enc(&[b"a", b"b", b"c"]),
        )]),
        req(vec![tensor("W", DataType::Bytes, &[1, 1], enc(&[b"x"]))]),
    ];
    let (responses, report) = model.infer(&reqs, Duration::from_secs(60));
    assert_eq!(report.calls, 1);
    assert_eq!(out(&responses[0], "J").data, enc(&[b"a|b|c"]));
    assert_eq!(out(&responses[1], "J").data, enc(&[b"x||"]));
}

#[test]
fn default_fills_an_unbatched_model_too() {
    let tmp = tempfile::tempdir().unwrap();
    let config = OPT.replace("max_batch_size: 8", "max_batch_size: 0")
        + "parameters { key: \"rustpy.default.S\" value { string_value: \"-1\" } }\n";
    let dir = write_model(tmp.path(), "opt0", &config, OPT_PY);
    let model = LocalModel::load(&dir, None).unwrap();
    let reqs = vec![req(vec![tensor(
        "X",
        DataType::Fp32,
        &[2],
        f32s(&[1., 2.]),
    )])];
    let (responses, _) = model.infer(&reqs, Duration::from_secs(60));
    let y = out(&responses[0], "Y");
    assert_eq!(
        (y.shape.clone(), y.data.to_vec()),
        (vec![2], f32s(&[-1., -2.]))
    );
}
