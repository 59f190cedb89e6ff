//! The worker side: what `rustpy-worker` runs. It embeds the same interpreter
//! and the same executors as the in-process backend ([`LoadedModel`],
//! [`ModelInstance`]); only the requests come from shared memory and the
//! responses go back over the control channel.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::proto::{
    error_from_wire, error_to_wire, read_frame, write_frame, FromWorker, ToWorker, WireTensor,
};
use super::sys::{inherited_fd, inherited_stream, Shm};
use crate::engine::{OutputSlice, Responder};
use crate::error::{Error, Result};
use crate::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use crate::request::{InferRequest, InputTensor};
use crate::server::{set_server_api, BlsRequest, BlsResponse, MetricFamily, MetricKind, ServerApi};
use crate::DataType;

/// The fds the backend passes (see `client.rs`).
pub struct WorkerFds {
    pub socket: i32,
    pub input: i32,
    pub output: i32,
}

/// Output tensors are placed at multiples of this in the output region.
const ALIGN: usize = 64;

/// The sending half: the control socket and the output region, shared by the
/// main thread and any user thread that answers a decoupled request.
struct Channel {
    socket: BufWriter<UnixStream>,
    output: Shm,
    /// Bytes of the output region used by the current batch.
    used: usize,
}

impl Channel {
    fn send(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        write_frame(&mut self.socket, msg)?;
        self.socket.flush()
    }
}

type Shared = Arc<Mutex<Channel>>;

fn send(channel: &Shared, msg: &FromWorker) {
    let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
    if ch.send(msg).is_err() {
        // The backend is gone: nobody is left to answer.
        std::process::exit(0);
    }
}

/// Answers request `index` of the current batch through the backend.
struct WorkerResponder {
    index: usize,
    channel: Shared,
    done: bool,
}

impl Responder for WorkerResponder {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        if self.done {
            return Err(Error::internal("response sent after the final one"));
        }
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let mut offset = ch.used;
        let mut wire = Vec::with_capacity(outputs.len());
        for o in outputs {
            offset = offset.next_multiple_of(ALIGN);
            wire.push(WireTensor {
                name: o.name.to_string(),
                dtype: o.dtype.name().to_string(),
                shape: o.shape.clone(),
                offset,
                len: o.data.len(),
            });
            offset += o.data.len();
        }
        ch.output
            .grow(offset)
            .map_err(|e| Error::internal(format!("cannot grow the output shared memory: {e}")))?;
        for (o, w) in outputs.iter().zip(&wire) {
            ch.output.write(w.offset, o.data);
        }
        ch.used = offset;
        let msg = FromWorker::Response {
            request: self.index,
            outputs: wire,
            output_len: ch.output.len(),
            is_final,
        };
        if ch.send(&msg).is_err() {
            std::process::exit(0);
        }
        self.done = is_final;
        Ok(())
    }

    fn send_error(&mut self, error: &Error) {
        if self.done {
            return;
        }
        self.done = true;
        let (code, message) = error_to_wire(error);
        send(
            &self.channel,
            &FromWorker::Error {
                request: self.index,
                code,
                message,
                is_final: true,
            },
        );
    }

    fn send_error_nonfinal(&mut self, error: &Error) -> bool {
        if self.done {
            return false;
        }
        let (code, message) = error_to_wire(error);
        send(
            &self.channel,
            &FromWorker::Error {
                request: self.index,
                code,
                message,
                is_final: false,
            },
        );
        true
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        send(
            &self.channel,
            &FromWorker::Finish {
                request: self.index,
            },
        );
    }

    fn detach(&mut self) {
        // Rescheduling is not supported across the process boundary: the
        // backend answers the request when it is not final.
        self.done = true;
    }
}

impl Drop for WorkerResponder {
    fn drop(&mut self) {
        if !self.done {
            self.send_error(&Error::internal(
                "rustpy: the request ended without a response (internal error)",
            ));
        }
    }
}

/// What user code in a worker may not ask of the server yet (BLS, model
/// control, metrics): each call fails with a message saying so.
struct NoServerYet;

fn not_yet<T>() -> Result<T> {
    Err(Error::unsupported(
        "BLS, model control and custom metrics are not available yet in a process-isolated model \
         (rustpy.isolation: \"process\"); see docs/isolation.md",
    ))
}

impl ServerApi for NoServerYet {
    fn infer(&self, _: BlsRequest, _: crossbeam::channel::Sender<BlsResponse>) -> Result<()> {
        not_yet()
    }
    fn load_model(&self, _: &str, _: &str, _: &[(String, Vec<u8>)]) -> Result<()> {
        not_yet()
    }
    fn unload_model(&self, _: &str, _: bool) -> Result<()> {
        not_yet()
    }
    fn is_model_ready(&self, _: &str, _: i64) -> Result<bool> {
        not_yet()
    }
    fn is_model_decoupled(&self, _: &str, _: i64) -> Result<bool> {
        not_yet()
    }
    fn metric_family(&self, _: &str, _: &str, _: MetricKind) -> Result<Arc<dyn MetricFamily>> {
        not_yet()
    }
}

/// Runs the worker until the backend says Shutdown or goes away. Returns the
/// process exit code.
pub fn run(fds: WorkerFds) -> i32 {
    match serve(fds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rustpy-worker: {}", e.message);
            3
        }
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("rustpy-worker: {what}: {e}"))
}

fn serve(fds: WorkerFds) -> Result<()> {
    let socket = inherited_stream(fds.socket).map_err(io_err("control socket"))?;
    let mut input = Shm::map(inherited_fd(fds.input).map_err(io_err("input memory"))?)
        .map_err(io_err("map"))?;
    let output = Shm::map(inherited_fd(fds.output).map_err(io_err("output memory"))?)
        .map_err(io_err("map"))?;
    let mut reader = BufReader::new(socket.try_clone().map_err(io_err("control socket"))?);
    let channel: Shared = Arc::new(Mutex::new(Channel {
        socket: BufWriter::new(socket),
        output,
        used: 0,
    }));

    set_server_api(Arc::new(NoServerYet));
    // pb_utils.Logger and rustpy's own messages go to the server's log.
    let log_channel = channel.clone();
    python::set_log_hook(Box::new(move |level, file, line, message| {
        send(
            &log_channel,
            &FromWorker::Log {
                level,
                file: file.to_string(),
                line,
                message: message.to_string(),
            },
        )
    }));

    let Some(ToWorker::Init {
        config_json,
        model_dir,
        version,
        instance,
    }) = read_frame(&mut reader).map_err(io_err("control channel"))?
    else {
        return Err(Error::internal("rustpy-worker: expected Init first"));
    };
    let created = python::initialize().and_then(|()| {
        let config = rustpy_config::parse_json(&config_json)
            .map_err(|e| Error::invalid_arg(format!("cannot read the model configuration: {e}")))?;
        let model = LoadedModel::load(&config, Path::new(&model_dir), version)?;
        let info = InstanceInfo {
            name: instance.name,
            kind: instance.kind,
            device_id: instance.device_id,
        };
        ModelInstance::new(Arc::new(model), &info)
    });
    let instance = match created {
        Ok(i) => {
            send(&channel, &FromWorker::Ready);
            i
        }
        Err(e) => {
            let (code, message) = error_to_wire(&e);
            send(&channel, &FromWorker::InitFailed { code, message });
            return Ok(());
        }
    };

    loop {
        let msg = match read_frame::<ToWorker, _>(&mut reader) {
            Ok(Some(m)) => m,
            // The backend closed the channel (unload, or it died).
            Ok(None) | Err(_) => break,
        };
        match msg {
            ToWorker::Execute {
                input_len,
                requests,
            } => {
                let start = Instant::now();
                channel.lock().unwrap_or_else(|p| p.into_inner()).used = 0;
                if let Err(e) = input.ensure(input_len) {
                    let e = Error::internal(format!("rustpy-worker: input memory: {e}"));
                    for i in 0..requests.len() {
                        WorkerResponder {
                            index: i,
                            channel: channel.clone(),
                            done: false,
                        }
                        .send_error(&e);
                    }
                    send(
                        &channel,
                        &FromWorker::Done {
                            ok: vec![false; requests.len()],
                            rows: vec![0; requests.len()],
                            calls: 0,
                            compute_ns: None,
                        },
                    );
                    continue;
                }
                let mut core = Vec::with_capacity(requests.len());
                let mut bad = Vec::new();
                for (i, r) in requests.into_iter().enumerate() {
                    let mut inputs = Vec::with_capacity(r.inputs.len());
                    for t in r.inputs {
                        let (Some(dtype), Ok(data)) =
                            (DataType::from_name(&t.dtype), input.slice(t.offset, t.len))
                        else {
                            bad.push(i);
                            continue;
                        };
                        inputs.push(InputTensor {
                            name: t.name,
                            dtype,
                            shape: t.shape,
                            chunks: vec![data],
                        });
                    }
                    // No `owner`: the region is rewritten by the next batch, so
                    // Python gets arrays it owns, never a view it could keep.
                    core.push(InferRequest {
                        id: r.id,
                        correlation_id: r.correlation_id.into(),
                        flags: r.flags,
                        timeout_us: r.timeout_us,
                        inputs,
                        requested_outputs: r.requested_outputs,
                        parameters: r
                            .parameters
                            .into_iter()
                            .map(|(k, v)| (k, v.into()))
                            .collect(),
                        owner: None,
                    });
                }
                let mut responders: Vec<WorkerResponder> = (0..core.len())
                    .map(|index| WorkerResponder {
                        index,
                        channel: channel.clone(),
                        done: false,
                    })
                    .collect();
                for &i in &bad {
                    responders[i].send_error(&error_from_wire(
                        1,
                        "rustpy-worker: an input lies outside the shared memory".into(),
                    ));
                }
                let report = instance.execute(&core, responders);
                drop(core);
                let ns = |t: Option<Instant>| {
                    t.map(|t| t.saturating_duration_since(start).as_nanos() as u64)
                };
                let compute_ns = ns(report.compute_start).zip(ns(report.compute_end));
                send(
                    &channel,
                    &FromWorker::Done {
                        ok: report.ok,
                        rows: report.rows,
                        calls: report.calls,
                        compute_ns,
                    },
                );
            }
            ToWorker::Shutdown => break,
            ToWorker::Init { .. } => {
                return Err(Error::internal("rustpy-worker: Init received twice"));
            }
        }
    }
    if let Err(e) = instance.finalize() {
        python_log_error(&e.message);
    }
    Ok(())
}

fn python_log_error(message: &str) {
    python::emit_log(2, "rustpy-worker", 0, message);
}
