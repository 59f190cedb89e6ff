//! Running a model without Triton: the same host choice (in-process or a
//! worker process), loading, validation, batching and Python calls as the
//! backend, with responses collected in memory. Used by `rustpy run`,
//! `rustpy test` and the core's own tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use crate::engine::{ExecReport, OutputSlice, ResponseSink, ResponseStream};
use crate::error::{Error, ErrorCode, Result};
use crate::host::{FixedConfig, HostSettings, InstanceHost, ModelHost, ModelSource};
use crate::python::{self, InstanceInfo};
use crate::rules::request::{InferRequest, InputTensor, ParamValue};
use crate::rules::spec::ModelSpec;
use crate::server::OwnedTensor;

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

/// A model loaded from a directory, with one instance, hosted where its
/// configuration says (in this process, or in a worker process).
pub struct LocalModel {
    instance: InstanceHost,
    pub spec: ModelSpec,
    pub model_dir: PathBuf,
}

impl LocalModel {
    /// Loads `<model_dir>/config.pbtxt` and the given (or highest) version,
    /// with `rustpy-worker` looked for next to this executable.
    pub fn load(model_dir: &Path, version: Option<u64>) -> Result<Self> {
        Self::load_with(
            model_dir,
            version,
            &HostSettings::for_executable(Vec::new()),
        )
    }

    /// [`LocalModel::load`] with the host's settings (extra site-packages,
    /// where `rustpy-worker` is).
    pub fn load_with(
        model_dir: &Path,
        version: Option<u64>,
        settings: &HostSettings,
    ) -> Result<Self> {
        let config_path = model_dir.join("config.pbtxt");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::new(
                ErrorCode::NotFound,
                format!("{}: {e}", config_path.display()),
            )
        })?;
        let mut config = rustpy_config::parse_pbtxt(&text)
            .map_err(|e| Error::invalid_arg(format!("{}:{e}", config_path.display())))?;
        if config.name.is_empty() {
            config.name = model_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        let version = match version {
            Some(v) => v,
            None => latest_version(model_dir)?,
        };
        let source = ModelSource {
            name: config.name.clone(),
            version,
            // Absolute, as Triton gives it (`$$TRITON_MODEL_DIRECTORY`).
            dir: std::path::absolute(model_dir).unwrap_or_else(|_| model_dir.to_path_buf()),
            config_json: rustpy_config::to_json(&config).to_string(),
        };
        let host = ModelHost::load(source, settings, &FixedConfig)?;
        let info = InstanceInfo {
            name: format!("{}_0", config.name),
            kind: "CPU".into(),
            device_id: 0,
        };
        let instance = host.instance(&info)?;
        Ok(LocalModel {
            instance,
            spec: host.spec().clone(),
            model_dir: model_dir.to_path_buf(),
        })
    }

    /// Runs `requests` as one batch (one execute call) and returns each
    /// request's responses, waiting up to `timeout` for streamed ones.
    pub fn infer(
        &self,
        requests: &[OwnedRequest],
        timeout: Duration,
    ) -> (Vec<Vec<LocalResponse>>, ExecReport) {
        let borrowed: Vec<Result<InferRequest<'_>>> = requests
            .iter()
            .map(|r| {
                Ok(InferRequest {
                    id: r.id.clone(),
                    inputs: r
                        .inputs
                        .iter()
                        .map(|t| InputTensor::borrowed(&t.name, t.dtype, &t.shape, &t.data))
                        .collect(),
                    requested_outputs: if r.requested_outputs.is_empty() {
                        self.spec.outputs.iter().map(|o| o.name.clone()).collect()
                    } else {
                        r.requested_outputs.clone()
                    },
                    parameters: r.parameters.clone(),
                    ..Default::default()
                })
            })
            .collect();
        let mut receivers = Vec::with_capacity(requests.len());
        let responders: Vec<ResponseStream<Collector>> = (0..requests.len())
            .map(|_| {
                let (tx, rx) = unbounded();
                receivers.push(rx);
                ResponseStream::new(Collector { tx })
            })
            .collect();
        let report = self.instance.execute(&borrowed, responders);
        let responses = receivers
            .into_iter()
            .map(|rx| collect(rx, timeout))
            .collect();
        (responses, report)
    }

    /// Runs the model's `finalize`.
    pub fn finalize(self) -> Result<()> {
        self.instance.finalize()
    }
}

/// The highest numeric version directory of a model.
pub fn latest_version(model_dir: &Path) -> Result<u64> {
    let (versions, _) = rustpy_config::repo::version_dirs(model_dir);
    versions.last().map(|(v, _)| *v).ok_or_else(|| {
        Error::new(
            ErrorCode::NotFound,
            format!("{} has no version directory", model_dir.display()),
        )
    })
}

enum Event {
    Response(LocalResponse, bool),
    Finished,
}

/// Delivers one request's responses to its channel (the stream around it
/// tracks whether the final one went out).
struct Collector {
    tx: Sender<Event>,
}

impl ResponseSink for Collector {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        let owned = outputs
            .iter()
            .map(|o| {
                Ok(OwnedTensor {
                    name: o.name.to_string(),
                    dtype: o.dtype,
                    shape: o.shape.clone(),
                    data: o.data.host()?.to_vec().into(),
                })
            })
            .collect::<Result<_>>()?;
        let _ = self
            .tx
            .send(Event::Response(LocalResponse::Outputs(owned), is_final));
        Ok(())
    }
    /// `rustpy run` and `rustpy test` compare and print outputs; response
    /// parameters are accepted (a model that sets them runs as under Triton)
    /// but not part of what they show.
    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        _parameters: &crate::engine::ResponseParameters,
        is_final: bool,
    ) -> Result<()> {
        self.send(outputs, is_final)
    }
    fn send_error(&mut self, error: &Error, is_final: bool) {
        let _ = self.tx.send(Event::Response(
            LocalResponse::Error(error.clone()),
            is_final,
        ));
    }
    fn send_final(&mut self) {
        let _ = self.tx.send(Event::Finished);
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
                out.push(LocalResponse::Error(Error::new(
                    ErrorCode::Unavailable,
                    "timed out waiting for a response",
                )));
                break;
            }
        }
    }
    out
}

/// Reads a `.npy` file (with numpy, so every dtype numpy writes is accepted)
/// as tensor `name`. `dtype` picks the Triton type where numpy's is ambiguous
/// (BF16 as uint16, BYTES from str/bytes arrays).
pub fn load_npy(path: &Path, name: &str, dtype: Option<crate::DataType>) -> Result<OwnedTensor> {
    use pyo3::prelude::*;
    python::initialize()?;
    Python::attach(|py| {
        let what = format!("reading {}", path.display());
        let err = |e: PyErr| python::py_error(py, &e, &what);
        let np = py.import("numpy").map_err(err)?;
        let array = np
            .call_method1("load", (path.to_string_lossy(), false))
            .map_err(err)?;
        python::tensor_from_py(py, "rustpy run", name, &array, dtype)
    })
}

/// Writes a tensor as a `.npy` file (BYTES as an object array needs pickle,
/// so it is written as a numpy `bytes_` array instead).
pub fn save_npy(path: &Path, tensor: &OwnedTensor) -> Result<()> {
    use pyo3::prelude::*;
    python::initialize()?;
    Python::attach(|py| {
        let what = format!("writing {}", path.display());
        let err = |e: PyErr| python::py_error(py, &e, &what);
        let np = py.import("numpy").map_err(err)?;
        let mut array = python::tensor_to_py(py, tensor)?;
        if tensor.dtype == crate::DataType::Bytes {
            array = array.call_method1("astype", ("S",)).map_err(err)?;
        }
        np.call_method1("save", (path.to_string_lossy(), array))
            .map_err(err)?;
        Ok(())
    })
}

/// A tensor from a JSON value: a (nested) list or scalar, typed `dtype`,
/// reshaped to `shape` when given (the KServe v2 JSON `data` is flat).
pub fn tensor_from_json(
    name: &str,
    value: &serde_json::Value,
    dtype: crate::DataType,
    shape: Option<&[i64]>,
) -> Result<OwnedTensor> {
    use pyo3::prelude::*;
    python::initialize()?;
    Python::attach(|py| {
        let what = format!("input '{name}'");
        let err = |e: PyErr| python::py_error(py, &e, &what);
        let np = py.import("numpy").map_err(err)?;
        let json = py.import("json").map_err(err)?;
        let parsed = json
            .call_method1("loads", (value.to_string(),))
            .map_err(err)?;
        let mut array = np
            .call_method1("asarray", (parsed, dtype.numpy_name()))
            .map_err(err)?;
        if let Some(shape) = shape {
            array = array
                .call_method1("reshape", (shape.to_vec(),))
                .map_err(err)?;
        }
        python::tensor_from_py(py, "rustpy run", name, &array, Some(dtype))
    })
}

/// A deterministic example tensor of `dtype` and `shape` (small repeating
/// values; BYTES elements read "rustpy").
pub fn example_tensor(name: &str, dtype: crate::DataType, shape: &[i64]) -> Result<OwnedTensor> {
    use pyo3::prelude::*;
    python::initialize()?;
    Python::attach(|py| {
        let what = format!("generating input '{name}'");
        let err = |e: PyErr| python::py_error(py, &e, &what);
        let np = py.import("numpy").map_err(err)?;
        let n = crate::rules::request::element_count(shape);
        let array = if dtype == crate::DataType::Bytes {
            let items: Vec<&[u8]> = vec![b"rustpy"; n];
            np.call_method1("array", (items, "object")).map_err(err)?
        } else {
            let modulus = if dtype == crate::DataType::Bool { 2 } else { 7 };
            np.call_method1("arange", (n,))
                .and_then(|a| a.call_method1("__mod__", (modulus,)))
                .and_then(|a| a.call_method1("astype", (dtype.numpy_name(),)))
                .map_err(err)?
        };
        let array = array
            .call_method1("reshape", (shape.to_vec(),))
            .map_err(err)?;
        python::tensor_from_py(py, "rustpy run", name, &array, Some(dtype))
    })
}

/// A short human-readable rendering of a tensor's values.
pub fn format_tensor(tensor: &OwnedTensor) -> String {
    use pyo3::prelude::*;
    Python::attach(|py| {
        python::tensor_to_py(py, tensor)
            .ok()
            .and_then(|a| {
                let np = py.import("numpy").ok()?;
                np.call_method1("array2string", (a,))
                    .ok()?
                    .extract::<String>()
                    .ok()
            })
            .unwrap_or_else(|| format!("<{} bytes>", tensor.data.len()))
    })
}

/// A tensor's values as JSON (nested lists; BYTES elements as UTF-8 text).
pub fn tensor_to_json(tensor: &OwnedTensor) -> serde_json::Value {
    use pyo3::prelude::*;
    Python::attach(|py| -> Option<serde_json::Value> {
        let array = python::tensor_to_py(py, tensor).ok()?;
        let rt_json = py.import("json").ok()?;
        let decode = py
            .eval(
                c"lambda b: b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)",
                None,
                None,
            )
            .ok()?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("default", decode).ok()?;
        let text: String = rt_json
            .call_method(
                "dumps",
                (array.call_method0("tolist").ok()?,),
                Some(&kwargs),
            )
            .ok()?
            .extract()
            .ok()?;
        serde_json::from_str(&text).ok()
    })
    .unwrap_or(serde_json::Value::Null)
}
