//! The gRPC client mode of rustpy-loadgen: KServe v2 `ModelInfer` over
//! tonic (HTTP/2), tensors in `raw_input_contents` / `raw_output_contents`.
//!
//! Only the messages and fields the benchmark uses are declared, with the
//! field numbers of Triton's grpc_service.proto
//! (github.com/triton-inference-server/common, protobuf/grpc_service.proto,
//! package `inference`); prost skips the fields left out (parameters,
//! typed contents) when decoding.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::codec::ProstCodec;
use tonic::transport::{Channel, Endpoint};

use crate::{Clock, Outcome, WorkerResult};
use rustpy_bench::workload::{Request, Workload};

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

fn message(wl: &Workload, model: &str, req: &Request) -> ModelInferRequest {
    let inputs = wl.inputs(req);
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: String::new(),
        raw_input_contents: inputs.iter().map(|i| i.data.to_vec()).collect(),
        inputs: inputs
            .into_iter()
            .map(|i| InferInputTensor {
                name: i.name.into(),
                datatype: i.datatype.into(),
                shape: i.shape,
            })
            .collect(),
        outputs: wl
            .output_names()
            .iter()
            .map(|n| InferRequestedOutputTensor { name: (*n).into() })
            .collect(),
    }
}

/// Checks a response; returns the output tensor bytes.
fn validate(wl: &Workload, req: &Request, resp: &ModelInferResponse) -> Result<usize, String> {
    if resp.outputs.len() != resp.raw_output_contents.len() {
        return Err(format!(
            "{} outputs but {} raw contents",
            resp.outputs.len(),
            resp.raw_output_contents.len()
        ));
    }
    let mut found = 0;
    let mut bytes = 0;
    for (out, data) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        bytes += data.len();
        if wl.check_output(req, &out.name, data)? {
            found += 1;
        }
    }
    if found < req.expected.len() {
        return Err(format!(
            "{} expected output(s) missing",
            req.expected.len() - found
        ));
    }
    Ok(bytes)
}

/// The largest message the load generator sends or accepts.
const MAX_MESSAGE: usize = 256 << 20;

async fn worker(
    id: usize,
    channel: Channel,
    model: &str,
    wl: &Workload,
    clock: &Clock,
) -> WorkerResult {
    // tonic's default 4 MiB receive limit would refuse the large-tensor
    // workload's answers (Triton's own gRPC limit is 2 GiB).
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(MODEL_INFER);
    let mut req = Request::default();
    let mut res = WorkerResult {
        latencies_ns: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let mut seq = 0u64;
    loop {
        wl.build(id, seq, &mut req);
        seq += 1;
        let msg = message(wl, model, &req);
        let t0 = Instant::now();
        if t0 >= clock.end {
            break;
        }
        let outcome: Outcome = match grpc.ready().await {
            Err(e) => Err((false, format!("connection: {e}"))),
            Ok(()) => {
                let codec: ProstCodec<ModelInferRequest, ModelInferResponse> =
                    ProstCodec::default();
                match grpc
                    .unary(tonic::Request::new(msg), path.clone(), codec)
                    .await
                {
                    Err(status) => Err((
                        false,
                        format!("gRPC {:?}: {}", status.code(), status.message()),
                    )),
                    Ok(resp) => validate(wl, &req, resp.get_ref()).map_err(|e| (true, e)),
                }
            }
        };
        let t1 = Instant::now();
        if res.record(outcome, t0, t1, clock, req.tensor_bytes) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    res
}

/// Runs `concurrency` closed-loop workers, each with its own HTTP/2
/// connection and one request in flight, on a tokio runtime with one worker
/// thread per CPU.
pub fn run(
    addr: SocketAddr,
    model: &str,
    wl: &Workload,
    concurrency: usize,
    timeout: Duration,
    clock: &Clock,
) -> Result<Vec<WorkerResult>, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .timeout(timeout)
            .tcp_nodelay(true);
        let mut channels = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            channels.push(
                endpoint
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
            );
        }
        // Spawned tasks need 'static data: leak the (per-process, one run)
        // workload, name and clock.
        let wl: &'static Workload = Box::leak(Box::new(wl.clone()));
        let model: &'static str = Box::leak(model.to_string().into_boxed_str());
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            warm_end: clock.warm_end,
            end: clock.end,
        }));
        let tasks: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(id, ch)| tokio::spawn(worker(id, ch, model, wl, clock)))
            .collect();
        let mut out = Vec::with_capacity(concurrency);
        for t in tasks {
            out.push(t.await.map_err(|e| format!("worker failed: {e}"))?);
        }
        Ok(out)
    })
}
