//! Running a model without Triton: the same loading, validation, batching and
//! Python calls as the backend, with responses collected in memory. Used by
//! `rustpy run` and by the core's own tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use crate::engine::{ExecReport, OutputSlice, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use crate::request::{InferRequest, InputTensor, ParamValue};
use crate::server::OwnedTensor;
use crate::spec::ModelSpec;

/// A request with its own data.
#[derive(Debug, Clone, Default)]
pub struct OwnedRequest {
    pub id: String,
    pub inputs: Vec<OwnedTensor>,
    /// Empty: every output.
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, ParamValue)>,
}

/// One response to one request.
#[derive(Debug, Clone)]
pub enum LocalResponse {
    Outputs(Vec<OwnedTensor>),
    Error(Error),
}

/// A model loaded from a directory, with one instance.
pub struct LocalModel {
    instance: ModelInstance,
    pub spec: ModelSpec,
    pub model_dir: PathBuf,
}

impl LocalModel {
    /// Loads `<model_dir>/config.pbtxt` and the given (or highest) version.
    pub fn load(model_dir: &Path, version: Option<u64>) -> Result<Self> {
        let config_path = model_dir.join("config.pbtxt");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::new(ErrorCode::NotFound, format!("{}: {e}", config_path.display())))?;
        let mut config = rustpy_config::parse_pbtxt(&text)
            .map_err(|e| Error::invalid_arg(format!("{}:{e}", config_path.display())))?;
        if config.name.is_empty() {
            config.name = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        }
        let version = match version {
            Some(v) => v,
            None => latest_version(model_dir)?,
        };
        python::initialize()?;
        let model = Arc::new(LoadedModel::load(&config, model_dir, version)?);
        let info = InstanceInfo { name: format!("{}_0", config.name), kind: "CPU".into(), device_id: 0 };
        let instance = ModelInstance::new(model.clone(), &info)?;
        Ok(LocalModel { instance, spec: model.spec.clone(), model_dir: model_dir.to_path_buf() })
    }

    /// Runs `requests` as one batch (one execute call) and returns each
    /// request's responses, waiting up to `timeout` for streamed ones.
    pub fn infer(&self, requests: &[OwnedRequest], timeout: Duration) -> (Vec<Vec<LocalResponse>>, ExecReport) {
        let borrowed: Vec<InferRequest<'_>> = requests
            .iter()
            .map(|r| InferRequest {
                id: r.id.clone(),
                inputs: r
                    .inputs
                    .iter()
                    .map(|t| InputTensor { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone(), chunks: vec![&t.data] })
                    .collect(),
                requested_outputs: if r.requested_outputs.is_empty() {
                    self.spec.outputs.iter().map(|o| o.name.clone()).collect()
                } else {
                    r.requested_outputs.clone()
                },
                parameters: r.parameters.clone(),
                ..Default::default()
            })
            .collect();
        let mut receivers = Vec::with_capacity(requests.len());
        let responders: Vec<Collector> = (0..requests.len())
            .map(|_| {
                let (tx, rx) = unbounded();
                receivers.push(rx);
                Collector { tx, done: false }
            })
            .collect();
        let report = self.instance.execute(&borrowed, responders);
        let responses = receivers.into_iter().map(|rx| collect(rx, timeout)).collect();
        (responses, report)
    }

    /// Runs the model's `finalize`.
    pub fn finalize(self) -> Result<()> {
        self.instance.finalize()
    }
}

/// The highest numeric version directory of a model.
pub fn latest_version(model_dir: &Path) -> Result<u64> {
    std::fs::read_dir(model_dir)
        .map_err(|e| Error::new(ErrorCode::NotFound, format!("{}: {e}", model_dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .max()
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("{} has no version directory", model_dir.display())))
}

enum Event {
    Response(LocalResponse, bool),
    Finished,
}

struct Collector {
    tx: Sender<Event>,
    done: bool,
}

impl Responder for Collector {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        let owned = outputs
            .iter()
            .map(|o| OwnedTensor { name: o.name.to_string(), dtype: o.dtype, shape: o.shape.clone(), data: o.data.to_vec() })
            .collect();
        self.done |= is_final;
        let _ = self.tx.send(Event::Response(LocalResponse::Outputs(owned), is_final));
        Ok(())
    }
    fn send_error(&mut self, error: &Error) {
        self.done = true;
        let _ = self.tx.send(Event::Response(LocalResponse::Error(error.clone()), true));
    }
    fn finish(&mut self) {
        self.done = true;
        let _ = self.tx.send(Event::Finished);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(Event::Response(
                LocalResponse::Error(Error::internal("the request ended without a response")),
                true,
            ));
        }
    }
}

fn collect(rx: Receiver<Event>, timeout: Duration) -> Vec<LocalResponse> {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(timeout) {
            Ok(Event::Response(r, is_final)) => {
                out.push(r);
                if is_final {
                    break;
                }
            }
            Ok(Event::Finished) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                out.push(LocalResponse::Error(Error::new(ErrorCode::Unavailable, "timed out waiting for a response")));
                break;
            }
        }
    }
    out
}
