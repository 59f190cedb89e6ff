//! A BLS response whose tensor data does not match its shape (a peer
//! backend's bug) fails that BLS call with a clear error instead of
//! overflowing the array it is copied into (issue 9, item 4).
//!
//! An e2e peer returning wrong sizes cannot be built with the backends the
//! test server has (Triton's own checks and ours keep every backend's outputs
//! consistent), so this test installs a server API whose responses carry the
//! wrong byte counts and runs a real pb_utils model that calls it.

use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Sender;
use rustpy_core::local::{LocalModel, LocalResponse, OwnedRequest};
use rustpy_core::server::{
    nothing_to_cancel, set_server_api, BlsCancel, BlsRequest, BlsResponse, MetricFamily,
    MetricKind, OwnedTensor, ServerApi,
};
use rustpy_core::{DataType, Error, Result};

/// Answers every BLS request with OUT declared as FP32 [4] (16 bytes) but
/// carrying the number of bytes given by the request's first input value.
struct LyingPeer;

impl ServerApi for LyingPeer {
    fn infer(&self, request: BlsRequest, responses: Sender<BlsResponse>) -> Result<BlsCancel> {
        let n = i64::from_le_bytes(request.inputs[0].data[..8].try_into().unwrap()) as usize;
        let out = OwnedTensor {
            name: "OUT".into(),
            dtype: DataType::Fp32,
            shape: vec![4],
            data: vec![0xAB; n].into(),
        };
        let _ = responses.send(BlsResponse {
            outputs: vec![out],
            is_final: true,
            ..Default::default()
        });
        Ok(nothing_to_cancel())
    }
    fn load_model(&self, _: &str, _: &str, _: &[(String, Vec<u8>)]) -> Result<()> {
        Err(Error::internal("unused"))
    }
    fn unload_model(&self, _: &str, _: bool) -> Result<()> {
        Err(Error::internal("unused"))
    }
    fn is_model_ready(&self, _: &str, _: i64) -> Result<bool> {
        Ok(true)
    }
    fn is_model_decoupled(&self, _: &str, _: i64) -> Result<bool> {
        Ok(false)
    }
    fn metric_family(&self, _: &str, _: &str, _: MetricKind) -> Result<Arc<dyn MetricFamily>> {
        Err(Error::internal("unused"))
    }
}

const CONFIG: &str = r#"name: "caller"
backend: "rustpy"
max_batch_size: 0
input [ { name: "N" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "RESULT" data_type: TYPE_STRING dims: [ 1 ] } ]
"#;

const MODEL: &str = r#"
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "N")
            r = pb_utils.InferenceRequest(model_name="peer", inputs=[n],
                                          requested_output_names=["OUT"]).exec()
            if r.has_error():
                text = "error: " + r.error().message()
            else:
                text = "ok: " + str(pb_utils.get_output_tensor_by_name(r, "OUT").as_numpy().nbytes)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("RESULT", np.array([text], dtype=object))]))
        return responses
"#;

fn call(model: &LocalModel, n: i64) -> String {
    let req = OwnedRequest {
        id: "r".into(),
        inputs: vec![OwnedTensor {
            name: "N".into(),
            dtype: DataType::Int64,
            shape: vec![1],
            data: n.to_le_bytes().to_vec().into(),
        }],
        ..Default::default()
    };
    let (responses, _) = model.infer(&[req], Duration::from_secs(60));
    match responses[0].last() {
        Some(LocalResponse::Outputs(o)) => {
            let data = &o[0].data;
            // One BYTES element: a 4-byte length, then the text.
            String::from_utf8_lossy(&data[4..]).into_owned()
        }
        other => panic!("expected outputs, got {other:?}"),
    }
}

#[test]
fn bls_response_bytes_must_match_the_shape() {
    set_server_api(Arc::new(LyingPeer));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("caller");
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::write(dir.join("config.pbtxt"), CONFIG).unwrap();
    std::fs::write(dir.join("1/model.py"), MODEL).unwrap();
    let model = LocalModel::load(&dir, None).unwrap();

    // The honest size goes through.
    assert_eq!(call(&model, 16), "ok: 16");
    // More bytes than the shape holds (would overflow the array), and fewer
    // (would expose uninitialised memory): that call fails, saying why.
    for n in [1 << 20, 15, 0] {
        let got = call(&model, n);
        assert!(
            got.starts_with("error: ")
                && got.contains("model 'peer'")
                && got.contains("'OUT'")
                && got.contains(&format!("{n} bytes"))
                && got.contains("16 bytes"),
            "{n} bytes: {got}"
        );
    }
    // The model keeps working.
    assert_eq!(call(&model, 16), "ok: 16");
}
