//! The worker side: what `rustpy-worker` runs. It embeds the same interpreter
//! and the same executors as the in-process backend ([`LoadedModel`],
//! [`ModelInstance`]); only the requests come from shared memory and the
//! responses go back over the control channel.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::bls::{wants_shared, BlsRegion};
use super::proto::{
    error_from_wire, error_to_wire, params_to_wire, read_frame, request_id, tensor_from_wire,
    tensor_to_wire, write_frame, FromWorker, ServerOp, ToWorker, WireBlsRequest, WireBlsResponse,
    WireOwnedTensor, WireTensor, WireValue,
};
use super::sys::{
    inherited_fd, inherited_stream, readable_now, wait_readable, Event, Mapping, Shm,
};
use crate::engine::{
    Outcome, OutputSlice, Responder, ResponseParameters, ResponseSink, ResponseStream,
};
use crate::error::ErrorCode;
use crate::error::{Error, Result};
use crate::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use crate::request::{InferRequest, InputTensor};
use crate::server::{
    set_server_api, BlsCancel, BlsRequest, BlsResponse, Metric, MetricFamily, MetricKind, ServerApi,
};
use crate::DataType;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use pyo3::prelude::*;

/// The fds the backend passes (see `client.rs`).
pub struct WorkerFds {
    pub socket: i32,
    pub input: i32,
    pub output: i32,
    /// The BLS input and output regions (isolation/bls.rs); without them
    /// BLS tensors travel inline.
    pub bls: Option<(i32, i32)>,
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
    /// The batch running now (its responses may use the output region),
    /// none between its Done and the next Execute.
    running: Option<u64>,
    /// Address and length of the running batch's input mapping: an output
    /// lying inside it is a view of the inputs and is sent by its offset
    /// there, not copied (FromWorker::Response's `from_input`).
    input_view: Option<(usize, usize)>,
    /// Outputs in the input region at least this large are not copied.
    alias_min: usize,
    /// Whether a response with such outputs waits until the backend has
    /// copied them (pb_utils inputs are writable; batched ones are not).
    alias_wait: bool,
    /// The last `taken` token sent.
    token: u64,
    taken: Arc<Taken>,
    /// While a batch of a non-decoupled model runs: the thread running it,
    /// whose responses leave with the batch's Done (one write, one wake-up
    /// of the backend) or with the next frame that is flushed.
    hold_for: Option<std::thread::ThreadId>,
}

/// The backend's acknowledgements (ToWorker::Taken) of responses whose
/// outputs it copied out of the input region.
#[derive(Default)]
struct Taken {
    /// Tokens acknowledged and not yet claimed; true once the backend is gone.
    state: Mutex<(HashSet<u64>, bool)>,
    cv: std::sync::Condvar,
}

impl Taken {
    fn mark(&self, token: u64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .insert(token);
        self.cv.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cv.notify_all();
    }

    fn wait(&self, token: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !state.0.remove(&token) && !state.1 {
            state = self.cv.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Outputs of a pb_utils model viewing its inputs are sent in place from
/// this size on (smaller ones are copied: cheaper than the wait).
const ALIAS_WAIT_MIN: usize = 64 * 1024;

impl Channel {
    fn send(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        write_frame(&mut self.socket, msg)?;
        self.socket.flush()
    }

    /// A response frame: held back if the thread running a non-decoupled
    /// batch sends it (its Done follows as soon as execute returns).
    fn send_response(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        write_frame(&mut self.socket, msg)?;
        match self.hold_for {
            Some(id) if id == std::thread::current().id() => Ok(()),
            _ => self.socket.flush(),
        }
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

/// Sends a batch's Done; responses sent after it (from user threads) travel
/// inline, so the output region is free for the next batch.
fn send_done(channel: &Shared, done: FromWorker) {
    let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
    ch.running = None;
    ch.input_view = None;
    ch.hold_for = None;
    if ch.send(&done).is_err() {
        std::process::exit(0);
    }
}

/// Requests the backend says the client cancelled (ToWorker::Cancel).
type Cancelled = Arc<Mutex<HashSet<usize>>>;

/// Answers request `index` of a batch through the backend, during or after
/// that batch's execution. Whether the request is still open is the
/// `ResponseStream`'s business (engine.rs), as in-process.
type WorkerResponder = ResponseStream<WorkerSink>;

fn worker_responder(
    batch: u64,
    index: usize,
    channel: &Shared,
    cancelled: &Cancelled,
) -> WorkerResponder {
    ResponseStream::new(WorkerSink {
        index: request_id(batch, index),
        batch,
        channel: channel.clone(),
        cancelled: cancelled.clone(),
    })
}

/// Delivers one request's responses to the backend: through the output
/// region while its batch runs, inline in the control frame after that.
struct WorkerSink {
    index: usize,
    batch: u64,
    channel: Shared,
    cancelled: Cancelled,
}

impl ResponseSink for WorkerSink {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        self.send_with_parameters(outputs, &[], is_final)
    }

    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<()> {
        let parameters = params_to_wire(parameters);
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if ch.running != Some(self.batch) {
            // Its batch is over: the output region belongs to the next one.
            let msg = FromWorker::InlineResponse {
                request: self.index,
                outputs: outputs
                    .iter()
                    .map(|o| WireOwnedTensor {
                        name: o.name.to_string(),
                        dtype: o.dtype.name().to_string(),
                        shape: o.shape.clone(),
                        data: o.data.to_vec(),
                    })
                    .collect(),
                is_final,
                parameters,
            };
            if ch.send(&msg).is_err() {
                std::process::exit(0);
            }
            return Ok(());
        }
        let mut offset = ch.used;
        let mut wire = Vec::with_capacity(outputs.len());
        let mut from_input = Vec::new();
        let (view_at, view_len) = ch.input_view.unwrap_or((0, 0));
        for (k, o) in outputs.iter().enumerate() {
            // A view of this batch's inputs (identity, a slice, a reshape):
            // the backend copies it from the input region, which stays
            // untouched until it has (it reads this before the Done).
            let at = o.data.as_ptr() as usize;
            if o.data.len() >= ch.alias_min.max(1)
                && at >= view_at
                && at + o.data.len() <= view_at + view_len
            {
                from_input.push(k);
                wire.push(WireTensor {
                    name: o.name.to_string(),
                    dtype: o.dtype.name().to_string(),
                    shape: o.shape.clone(),
                    offset: at - view_at,
                    len: o.data.len(),
                });
                continue;
            }
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
        for (k, (o, w)) in outputs.iter().zip(&wire).enumerate() {
            if !from_input.contains(&k) {
                ch.output.write(w.offset, o.data);
            }
        }
        ch.used = offset;
        let taken = if ch.alias_wait && !from_input.is_empty() {
            ch.token += 1;
            Some(ch.token)
        } else {
            None
        };
        let msg = FromWorker::Response {
            request: self.index,
            outputs: wire,
            output_len: ch.output.len(),
            is_final,
            from_input,
            taken,
            parameters,
        };
        // A response whose sender waits for the backend's Taken goes out at
        // once (held for the Done, it would wait for ever), and somebody
        // must read the socket meanwhile.
        let sent = if taken.is_some() {
            ch.send(&msg)
        } else {
            ch.send_response(&msg)
        };
        if sent.is_err() {
            std::process::exit(0);
        }
        if let Some(token) = taken {
            // As upstream's send: when it returns, the bytes are taken and
            // user code may change its (writable) inputs.
            let acks = ch.taken.clone();
            drop(ch);
            need_frames();
            acks.wait(token);
        }
        Ok(())
    }

    fn send_error(&mut self, error: &Error, is_final: bool) {
        let (code, message) = error_to_wire(error);
        send(
            &self.channel,
            &FromWorker::Error {
                request: self.index,
                code,
                message,
                is_final,
            },
        );
    }

    fn send_final(&mut self) {
        send(
            &self.channel,
            &FromWorker::Finish {
                request: self.index,
            },
        );
    }

    fn is_cancelled(&self) -> bool {
        read_arrived();
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.index)
    }
}

impl Drop for WorkerSink {
    fn drop(&mut self) {
        // After the stream's own drop (which fails a request left open).
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.index);
    }
}

/// A mapping of the input region, owned by Python: the base of every numpy
/// view of a batch's inputs (numpy_io's view region). Python frees it when
/// the last view goes; the mapping goes with it.
#[pyclass(module = "_rustpy_worker", frozen)]
struct SharedInput {
    map: Arc<Mapping>,
    /// 0, or the batch whose views outlived its execution: the backend keeps
    /// that batch's range untouched until this object is freed.
    pinned: AtomicU64,
    released: Released,
}

/// Pinned batches whose views Python has freed, for the next Done frame.
type Released = Arc<Mutex<Vec<u64>>>;

impl Drop for SharedInput {
    fn drop(&mut self) {
        let batch = self.pinned.load(Ordering::Acquire);
        if batch != 0 {
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch);
        }
    }
}

/// The region mapping for a batch whose inputs end at `input_len`: the
/// current one if it covers them (and nothing pinned it), else a new one.
fn input_region(
    current: Option<Py<SharedInput>>,
    fd: &std::os::fd::OwnedFd,
    input_len: usize,
    released: &Released,
) -> Result<Py<SharedInput>> {
    Python::attach(|py| {
        if let Some(c) = current {
            if c.get().map.len() >= input_len {
                return Ok(c);
            }
        }
        let map = Mapping::new(fd)
            .map_err(|e| Error::internal(format!("rustpy-worker: input memory: {e}")))?;
        if map.len() < input_len {
            return Err(Error::internal(format!(
                "rustpy-worker: input memory holds {} bytes, {input_len} announced",
                map.len()
            )));
        }
        Py::new(
            py,
            SharedInput {
                map: Arc::new(map),
                pinned: AtomicU64::new(0),
                released: released.clone(),
            },
        )
        .map_err(|e| Error::internal(format!("rustpy-worker: input memory: {e}")))
    })
}

/// A call waiting for the backend's answer.
enum Pending {
    Reply(mpsc::Sender<std::result::Result<WireValue, (u32, String)>>),
    Stream(crossbeam::channel::Sender<BlsResponse>),
}

/// Server calls from user code, routed through the backend.
struct Rpc {
    channel: Shared,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// BLS tensors through shared memory (isolation/bls.rs).
    bls: Option<WorkerBls>,
}

/// The worker's side of its BLS regions: it writes request inputs into
/// `input` (a range is freed when the call's Reply came: the backend copied
/// them out before answering) and reads response outputs from `output` in
/// the reader thread, then releases their range through `release`.
struct WorkerBls {
    input: Mutex<BlsRegion>,
    output: Mutex<BlsRegion>,
    release: Mutex<mpsc::Sender<usize>>,
}

impl WorkerBls {
    fn open(fds: (i32, i32), channel: &Shared) -> Result<WorkerBls> {
        let region = |fd| {
            inherited_fd(fd)
                .and_then(BlsRegion::new)
                .map_err(io_err("BLS memory"))
        };
        let (input, output) = (region(fds.0)?, region(fds.1)?);
        // Releases go out from their own thread: the reader thread that
        // copies the outputs never waits for the control socket.
        let (tx, rx) = mpsc::channel::<usize>();
        let channel = channel.clone();
        std::thread::Builder::new()
            .name("rustpy-bls-release".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut starts = vec![first];
                    starts.extend(rx.try_iter());
                    send(&channel, &FromWorker::BlsRelease { starts });
                }
            })
            .map_err(io_err("BLS release thread"))?;
        Ok(WorkerBls {
            input: Mutex::new(input),
            output: Mutex::new(output),
            release: Mutex::new(tx),
        })
    }
}

fn closed() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the server connection of this worker closed",
    )
}

impl Rpc {
    fn register(&self, p: Pending) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, p);
        need_frames();
        id
    }

    fn call(&self, op: ServerOp) -> Result<WireValue> {
        let (tx, rx) = mpsc::channel();
        let call = self.register(Pending::Reply(tx));
        send(&self.channel, &FromWorker::Call { call, op });
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((code, message))) => Err(error_from_wire(code, message)),
            Err(_) => Err(closed()),
        }
    }

    /// Delivers a Reply / BlsResponse frame to its caller.
    fn dispatch(&self, msg: ToWorker) {
        match msg {
            ToWorker::Reply { call, result } => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Pending::Reply(tx)) = pending.remove(&call) {
                    let _ = tx.send(result);
                }
            }
            ToWorker::BlsResponse { call, response } => {
                let is_final = response.is_final;
                // Large outputs: copied out of the BLS output region, whose
                // range the backend may then reuse.
                let shared = match (&response.shared, &self.bls) {
                    (Some(shared), Some(bls)) => {
                        let read = bls
                            .output
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .read(shared);
                        let _ = bls
                            .release
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .send(shared.start);
                        Some(read)
                    }
                    (Some(_), None) => Some(Err(Error::internal(
                        "rustpy-worker: a BLS response in shared memory, but no BLS memory",
                    ))),
                    _ => None,
                };
                let mut converted = bls_response_from_wire(response);
                match shared {
                    Some(Ok(outputs)) => converted.outputs = outputs,
                    Some(Err(e)) => converted.error = Some(e),
                    None => {}
                }
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Pending::Stream(tx)) = pending.get(&call) {
                    let _ = tx.send(converted);
                }
                if is_final {
                    pending.remove(&call);
                }
            }
            _ => {}
        }
    }

    /// The backend is gone: every waiting caller gets an error.
    fn fail_all(&self) {
        let drained: Vec<Pending> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in drained {
            if let Pending::Stream(tx) = p {
                let _ = tx.send(BlsResponse {
                    error: Some(closed()),
                    is_final: true,
                    ..Default::default()
                });
            }
        }
    }
}

fn bls_response_from_wire(r: WireBlsResponse) -> BlsResponse {
    let mut error = r.error.map(|(c, m)| error_from_wire(c, m));
    let mut outputs = Vec::with_capacity(r.outputs.len());
    for t in r.outputs {
        match tensor_from_wire(t) {
            Ok(t) => outputs.push(t),
            Err(e) => error = Some(e),
        }
    }
    BlsResponse {
        outputs,
        error,
        parameters: r
            .parameters
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect(),
        is_final: r.is_final,
    }
}

fn unexpected() -> Error {
    Error::internal("unexpected reply from the backend")
}

/// The server API of a worker: every call goes to the backend, which makes
/// it on Triton's server API (BLS, model control, custom metrics).
struct RemoteServer(Arc<Rpc>);

impl ServerApi for RemoteServer {
    fn infer(
        &self,
        request: BlsRequest,
        responses: crossbeam::channel::Sender<BlsResponse>,
    ) -> Result<BlsCancel> {
        // Large inputs go through the BLS input region, in a range of their
        // own (other threads' calls use other ranges).
        let mut shared = None;
        if let Some(bls) = &self.0.bls {
            if wants_shared(request.inputs.iter().map(|t| t.data.as_slice())) {
                let tensors: Vec<_> = request.inputs.iter().collect();
                let placed = bls
                    .input
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put(&tensors)
                    .map_err(|e| {
                        Error::internal(format!(
                            "rustpy-worker: cannot place the BLS request's inputs in shared memory: {e}"
                        ))
                    })?;
                shared = Some(placed);
            }
        }
        let wire = WireBlsRequest {
            model_name: request.model_name,
            model_version: request.model_version,
            request_id: request.request_id,
            correlation_id: (&request.correlation_id).into(),
            flags: request.flags,
            timeout_us: request.timeout_us,
            inputs: if shared.is_some() {
                Vec::new()
            } else {
                request.inputs.iter().map(tensor_to_wire).collect()
            },
            shared: shared.clone(),
            requested_outputs: request.requested_outputs,
            parameters: request
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
        };
        let stream = self.0.register(Pending::Stream(responses));
        let accepted = self.0.call(ServerOp::Infer {
            stream,
            request: wire,
        });
        // Answered (or the backend is gone): the inputs were copied out.
        if let (Some(shared), Some(bls)) = (&shared, &self.0.bls) {
            bls.input
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .free(shared.start);
        }
        if accepted.is_err() {
            self.0
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&stream);
        }
        let rpc = self.0.clone();
        accepted.map(|_| -> BlsCancel {
            Box::new(move || rpc.call(ServerOp::CancelInfer { stream }).map(|_| ()))
        })
    }
    fn load_model(&self, name: &str, config_json: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
        self.0
            .call(ServerOp::LoadModel {
                name: name.into(),
                config_json: config_json.into(),
                files: files.to_vec(),
            })
            .map(|_| ())
    }
    fn unload_model(&self, name: &str, unload_dependents: bool) -> Result<()> {
        self.0
            .call(ServerOp::UnloadModel {
                name: name.into(),
                unload_dependents,
            })
            .map(|_| ())
    }
    fn is_model_ready(&self, name: &str, version: i64) -> Result<bool> {
        match self.0.call(ServerOp::IsModelReady {
            name: name.into(),
            version,
        })? {
            WireValue::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }
    fn is_model_decoupled(&self, name: &str, version: i64) -> Result<bool> {
        match self.0.call(ServerOp::IsModelDecoupled {
            name: name.into(),
            version,
        })? {
            WireValue::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }
    fn metric_family(
        &self,
        name: &str,
        description: &str,
        kind: MetricKind,
    ) -> Result<Arc<dyn MetricFamily>> {
        match self.0.call(ServerOp::MetricFamily {
            name: name.into(),
            description: description.into(),
            kind: kind as u32,
        })? {
            WireValue::Id(id) => Ok(Arc::new(RemoteFamily(id, self.0.clone()))),
            _ => Err(unexpected()),
        }
    }
}

struct RemoteFamily(u64, Arc<Rpc>);

impl MetricFamily for RemoteFamily {
    fn metric(
        &self,
        labels: &[(String, String)],
        buckets: Option<&[f64]>,
    ) -> Result<Box<dyn Metric>> {
        match self.1.call(ServerOp::Metric {
            family: self.0,
            labels: labels.to_vec(),
            buckets: buckets.map(<[f64]>::to_vec),
        })? {
            WireValue::Id(id) => Ok(Box::new(RemoteMetric(id, self.1.clone()))),
            _ => Err(unexpected()),
        }
    }
}

struct RemoteMetric(u64, Arc<Rpc>);

impl RemoteMetric {
    fn op(&self, op: u8, value: f64) -> Result<WireValue> {
        self.1.call(ServerOp::MetricOp {
            metric: self.0,
            op,
            value,
        })
    }
}

impl Metric for RemoteMetric {
    fn increment(&self, value: f64) -> Result<()> {
        self.op(0, value).map(|_| ())
    }
    fn set(&self, value: f64) -> Result<()> {
        self.op(1, value).map(|_| ())
    }
    fn observe(&self, value: f64) -> Result<()> {
        self.op(2, value).map(|_| ())
    }
    fn value(&self) -> Result<f64> {
        match self.op(3, 0.0)? {
            WireValue::F64(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
}

/// Who reads the control socket now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lent {
    /// The main thread (between batches).
    Main,
    /// Nobody: a batch runs and no server call or cancellation check has
    /// needed a frame yet (frames wait in the socket).
    Busy,
    /// The intake thread (user code waits for a frame).
    Yes,
    /// The socket reached its end (the backend is gone).
    Closed,
}

/// The control socket's reading side. The main thread reads it between
/// batches, so an Execute frame wakes the thread that runs it and a batch
/// costs no thread hand-off. While user code runs, the intake thread reads
/// it once somebody needs a frame: a server call (its reply, BLS responses),
/// `is_cancelled()`; the main thread takes it back after the batch by
/// signalling `back`, and the intake thread gives it back at a frame
/// boundary.
struct Intake {
    reader: Mutex<BufReader<UnixStream>>,
    fd: RawFd,
    lent: Mutex<Lent>,
    turn: Condvar,
    back: Event,
    /// Frames for the main loop the intake thread read (an Execute that came
    /// before the main thread took the socket back).
    forwarded: Mutex<VecDeque<ToWorker>>,
    rpc: Arc<Rpc>,
    cancelled: Cancelled,
    /// Acknowledgements of outputs sent from the input region.
    taken: Arc<Taken>,
}

/// The worker's intake, for the server calls and cancellation checks that
/// need frames read while a batch runs.
static INTAKE: std::sync::OnceLock<Arc<Intake>> = std::sync::OnceLock::new();

/// The model's `is_ready()` (None: it has none), set once the instance is up.
static READY_CALL: std::sync::OnceLock<Option<crate::readiness::ReadyCall>> =
    std::sync::OnceLock::new();

/// Somebody waits for a frame from the backend: while a batch runs, the
/// intake thread starts reading.
fn need_frames() {
    if let Some(intake) = INTAKE.get() {
        intake.wake_reader();
    }
}

/// A cancellation check while a batch runs: handles the frames that have
/// arrived (a Cancel among them) without waking another thread.
fn read_arrived() {
    if let Some(intake) = INTAKE.get() {
        intake.read_arrived();
    }
}

impl Intake {
    /// Any thread, while nobody reads: handles the frames already arrived.
    fn read_arrived(&self) {
        if *self.lock() != Lent::Busy {
            return; // a reader handles them as they come
        }
        let Ok(mut reader) = self.reader.try_lock() else {
            return;
        };
        while !reader.buffer().is_empty() || readable_now(self.fd) {
            match read_frame::<ToWorker, _>(&mut *reader) {
                Ok(Some(msg)) => self.take(msg),
                // The end stays readable: the next reader sees it.
                _ => return,
            }
        }
    }

    /// Handles a frame either thread may read; returns the main loop's ones.
    fn dispatch(&self, msg: ToWorker) -> Option<ToWorker> {
        match msg {
            ToWorker::Reply { .. } | ToWorker::BlsResponse { .. } => self.rpc.dispatch(msg),
            ToWorker::Taken { token } => self.taken.mark(token),
            ToWorker::Cancel { request } => {
                self.cancelled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(request);
            }
            ToWorker::IsReady { call } => self.answer_is_ready(call),
            other => return Some(other),
        }
        None
    }

    /// Runs the model's `is_ready()` on a thread of its own (the backend
    /// allows one call at a time and times it out) and sends its answer.
    fn answer_is_ready(&self, call: u64) {
        let channel = self.rpc.channel.clone();
        let ready_call = READY_CALL.get().cloned().flatten();
        let spawned = std::thread::Builder::new()
            .name("rustpy-is-ready".into())
            .spawn(move || {
                let result = match ready_call {
                    Some(f) => f().map_err(|e| error_to_wire(&e)),
                    None => Ok(true),
                };
                send(&channel, &FromWorker::ReadyAnswer { call, result });
            });
        if let Err(e) = spawned {
            let result = Err(error_to_wire(&Error::internal(format!(
                "rustpy-worker: cannot run is_ready(): {e}"
            ))));
            send(&self.rpc.channel, &FromWorker::ReadyAnswer { call, result });
        }
    }

    /// A frame read while the main loop does not read: handled here, or
    /// queued for the main loop.
    fn take(&self, msg: ToWorker) {
        if let Some(msg) = self.dispatch(msg) {
            self.forwarded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(msg);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lent> {
        self.lent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Main thread: the next frame for the main loop, `None` once the
    /// backend is gone. Only while the socket is the main thread's.
    fn next(&self) -> Option<ToWorker> {
        loop {
            // Frames are forwarded only by a thread holding the reader, so
            // none can arrive in the queue between this check and the read
            // (a cancellation check may have read the next Execute).
            let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(msg) = self
                .forwarded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return Some(msg);
            }
            if *self.lock() == Lent::Closed {
                return None;
            }
            let frame = read_frame::<ToWorker, _>(&mut *reader);
            drop(reader);
            match frame {
                Ok(Some(msg)) => {
                    if let Some(msg) = self.dispatch(msg) {
                        return Some(msg);
                    }
                }
                _ => {
                    *self.lock() = Lent::Closed;
                    self.turn.notify_all();
                    self.rpc.fail_all();
                    self.taken.close();
                    return None;
                }
            }
        }
    }

    /// Main thread, before user code runs: nobody reads until a frame is
    /// needed; at once if a server call is waiting already (a user thread's
    /// BLS stream outlives batches).
    fn begin(&self, lend: bool) {
        let mut lent = self.lock();
        if *lent == Lent::Main {
            let waiting = !self
                .rpc
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if lend || waiting {
                *lent = Lent::Yes;
                self.turn.notify_all();
            } else {
                // Nobody to wake: a wake-up costs more than the batch.
                *lent = Lent::Busy;
            }
        }
    }

    /// Any thread: the intake thread reads if nobody does.
    fn wake_reader(&self) {
        let mut lent = self.lock();
        if *lent == Lent::Busy {
            *lent = Lent::Yes;
            self.turn.notify_all();
        }
    }

    /// Main thread, after user code returned: takes the socket back.
    fn end(&self) {
        let mut lent = self.lock();
        match *lent {
            Lent::Busy => *lent = Lent::Main,
            Lent::Yes => {
                if self.back.signal().is_err() {
                    // Cannot happen with a valid eventfd; without it the
                    // intake thread would keep the socket.
                    *lent = Lent::Closed;
                    return;
                }
                while *lent == Lent::Yes {
                    lent = self.turn.wait(lent).unwrap_or_else(|p| p.into_inner());
                }
            }
            Lent::Main | Lent::Closed => {}
        }
    }

    /// The intake thread: reads while the socket is lent to it.
    fn serve_lent(&self) {
        loop {
            {
                let mut lent = self.lock();
                while matches!(*lent, Lent::Main | Lent::Busy) {
                    lent = self.turn.wait(lent).unwrap_or_else(|p| p.into_inner());
                }
                if *lent == Lent::Closed {
                    return;
                }
            }
            let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            let closed = loop {
                // Whole frames already buffered are handled first.
                if reader.buffer().is_empty() {
                    match wait_readable(self.fd, &self.back) {
                        Ok(true) => {
                            self.back.clear();
                            break false;
                        }
                        Ok(false) => {}
                        Err(_) => break true,
                    }
                }
                match read_frame::<ToWorker, _>(&mut *reader) {
                    Ok(Some(msg)) => self.take(msg),
                    _ => break true,
                }
            };
            drop(reader);
            if closed {
                self.rpc.fail_all();
                self.taken.close();
            }
            *self.lock() = if closed { Lent::Closed } else { Lent::Main };
            self.turn.notify_all();
            if closed {
                return;
            }
        }
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
    super::sys::defer_termination_to_parent();
    let socket = inherited_stream(fds.socket).map_err(io_err("control socket"))?;
    let input_fd = inherited_fd(fds.input).map_err(io_err("input memory"))?;
    let released: Released = Arc::new(Mutex::new(Vec::new()));
    let mut current: Option<Py<SharedInput>> = None;
    let output = Shm::map(inherited_fd(fds.output).map_err(io_err("output memory"))?)
        .map_err(io_err("map"))?;
    let reader = BufReader::new(socket.try_clone().map_err(io_err("control socket"))?);
    let taken = Arc::new(Taken::default());
    let channel: Shared = Arc::new(Mutex::new(Channel {
        socket: BufWriter::new(socket),
        output,
        used: 0,
        running: None,
        input_view: None,
        alias_min: 1,
        alias_wait: false,
        token: 0,
        taken: taken.clone(),
        hold_for: None,
    }));
    let cancelled: Cancelled = Arc::new(Mutex::new(HashSet::new()));
    let cancels = cancelled.clone();

    let bls = match fds.bls {
        Some(fds) => Some(WorkerBls::open(fds, &channel)?),
        None => None,
    };
    let rpc = Arc::new(Rpc {
        channel: channel.clone(),
        next: AtomicU64::new(1),
        pending: Mutex::new(HashMap::new()),
        bls,
    });
    set_server_api(Arc::new(RemoteServer(rpc.clone())));
    // Between batches this thread reads the control socket itself, so an
    // Execute frame wakes the thread that runs it; while `initialize` or a
    // batch runs, the intake thread reads (replies to server calls, BLS
    // responses and cancellations arrive then, and user code waits for them).
    let intake = Arc::new(Intake {
        fd: reader.get_ref().as_raw_fd(),
        reader: Mutex::new(reader),
        lent: Mutex::new(Lent::Main),
        turn: Condvar::new(),
        back: Event::new().map_err(io_err("eventfd"))?,
        forwarded: Mutex::new(VecDeque::new()),
        rpc: rpc.clone(),
        cancelled: cancels,
        taken,
    });
    let _ = INTAKE.set(intake.clone());
    let intake_thread = intake.clone();
    std::thread::Builder::new()
        .name("rustpy-worker-rx".into())
        .spawn(move || intake_thread.serve_lent())
        .map_err(io_err("reader thread"))?;
    // pb_utils.Logger and rustpy's own messages go to the server's log.
    let log_channel = channel.clone();
    python::set_log_hook(Box::new(move |level, file, line, message| {
        send(
            &log_channel,
            &FromWorker::Log {
                level: level as u32,
                file: file.to_string(),
                line,
                message: message.to_string(),
            },
        )
    }));

    let first = intake.next();
    // Server calls from the model's import and `initialize` get their replies.
    intake.begin(true);
    let (config_json, model_dir, version, instance) = match first {
        Some(ToWorker::Init {
            config_json,
            model_dir,
            version,
            instance,
        }) => (config_json, model_dir, version, instance),
        Some(ToWorker::AutoComplete {
            config_json,
            model_dir,
            version,
        }) => {
            let result = python::initialize().and_then(|()| {
                let config = rustpy_config::parse_json(&config_json).map_err(|e| {
                    Error::invalid_arg(format!("cannot read the model configuration: {e}"))
                })?;
                LoadedModel::load(&config, Path::new(&model_dir), version)?
                    .auto_complete(&config_json)
            });
            let result = result.map_err(|e| error_to_wire(&e));
            send(&channel, &FromWorker::AutoCompleted { result });
            return Ok(());
        }
        _ => return Err(Error::internal("rustpy-worker: expected Init first")),
    };
    let mut decoupled = true;
    let created = python::initialize().and_then(|()| {
        let config = rustpy_config::parse_json(&config_json)
            .map_err(|e| Error::invalid_arg(format!("cannot read the model configuration: {e}")))?;
        decoupled = config
            .model_transaction_policy
            .as_ref()
            .is_some_and(|p| p.decoupled);
        let model = LoadedModel::load(&config, Path::new(&model_dir), version)?;
        let info = InstanceInfo {
            name: instance.name,
            kind: instance.kind,
            device_id: instance.device_id,
        };
        ModelInstance::new(Arc::new(model), &info)
    });
    intake.end();
    let instance = match created {
        Ok(i) => {
            let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
            if i.model().api == python::Api::PbUtils {
                ch.alias_min = ALIAS_WAIT_MIN;
                ch.alias_wait = true;
            }
            drop(ch);
            let ready_call = i.ready_call();
            let is_ready = ready_call.is_some();
            let _ = READY_CALL.set(ready_call);
            send(&channel, &FromWorker::Ready { is_ready });
            i
        }
        Err(e) => {
            let (code, message) = error_to_wire(&e);
            send(&channel, &FromWorker::InitFailed { code, message });
            return Ok(());
        }
    };

    let has_is_ready = READY_CALL.get().is_some_and(Option::is_some);
    // Until the backend says Shutdown or closes the channel (unload, or it died).
    while let Some(msg) = intake.next() {
        match msg {
            ToWorker::Execute {
                input_len,
                requests,
                batch,
            } => {
                let start = Instant::now();
                {
                    let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
                    ch.used = 0;
                    ch.running = Some(batch);
                    ch.hold_for = (!decoupled).then(|| std::thread::current().id());
                }
                let region = match input_region(current.take(), &input_fd, input_len, &released) {
                    Ok(r) => r,
                    Err(e) => {
                        for i in 0..requests.len() {
                            worker_responder(batch, i, &channel, &cancelled).send_error(&e);
                        }
                        send_done(
                            &channel,
                            FromWorker::Done {
                                ok: vec![false; requests.len()],
                                rows: vec![0; requests.len()],
                                calls: 0,
                                compute_ns: None,
                                pinned: false,
                                released: std::mem::take(
                                    &mut *released.lock().unwrap_or_else(|p| p.into_inner()),
                                ),
                                rescheduled: Vec::new(),
                            },
                        );
                        continue;
                    }
                };
                let input = &region.get().map;
                channel.lock().unwrap_or_else(|p| p.into_inner()).input_view =
                    Some((input.as_ptr() as usize, input.len()));
                let mut core = Vec::with_capacity(requests.len());
                for r in requests {
                    let mut inputs = Vec::with_capacity(r.inputs.len());
                    let mut readable = true;
                    for t in r.inputs {
                        let (Some(dtype), Ok(data)) =
                            (DataType::from_name(&t.dtype), input.slice(t.offset, t.len))
                        else {
                            readable = false;
                            break;
                        };
                        inputs.push(InputTensor {
                            name: t.name,
                            dtype,
                            shape: t.shape,
                            chunks: vec![data],
                        });
                    }
                    if !readable {
                        core.push(Err(Error::internal(
                            "rustpy-worker: an input lies outside the shared memory",
                        )));
                        continue;
                    }
                    core.push(Ok(InferRequest {
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
                    }));
                }
                let responders: Vec<WorkerResponder> = (0..core.len())
                    .map(|index| worker_responder(batch, index, &channel, &cancelled))
                    .collect();
                // Inputs reach Python as views of this mapping (numpy_io's
                // view region) while execute runs.
                Python::attach(|py| {
                    let memory: Arc<dyn python::ViewMemory> = region.get().map.clone();
                    if python::set_view_region(py, Some((memory, region.clone_ref(py).into_any())))
                        .is_err()
                    {
                        // No views then: inputs are copied.
                        let _ = python::set_view_region(py, None);
                    }
                });
                // A model with is_ready() keeps its socket read while a batch
                // runs, so a readiness check is answered during long batches.
                intake.begin(has_is_ready);
                let report = instance.execute(&core, responders);
                drop(core);
                // A view Python kept (a stored array, a request a thread still
                // answers) pins this batch's range: the next batch goes
                // elsewhere and this mapping lives until Python frees it.
                // Refcounts only change under the GIL, so the check and the
                // mark cannot race with the last view going away.
                let pinned = Python::attach(|py| {
                    let _ = python::set_view_region(py, None);
                    if python::ref_count(region.bind(py).as_any()) > 1 {
                        region.get().pinned.store(batch.max(1), Ordering::Release);
                        drop(region);
                        true
                    } else {
                        current = Some(region);
                        false
                    }
                });
                let ns = |t: Option<Instant>| {
                    t.map(|t| t.saturating_duration_since(start).as_nanos() as u64)
                };
                let compute_ns = ns(report.compute_start).zip(ns(report.compute_end));
                send_done(
                    &channel,
                    FromWorker::Done {
                        ok: report.outcomes.iter().map(|o| o.succeeded()).collect(),
                        rows: report.rows,
                        calls: report.calls,
                        compute_ns,
                        pinned,
                        released: std::mem::take(
                            &mut *released.lock().unwrap_or_else(|p| p.into_inner()),
                        ),
                        rescheduled: report
                            .outcomes
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| **o == Outcome::Rescheduled)
                            .map(|(i, _)| i)
                            .collect(),
                    },
                );
                intake.end();
            }
            ToWorker::Shutdown => break,
            ToWorker::Init { .. } | ToWorker::AutoComplete { .. } => {
                return Err(Error::internal("rustpy-worker: Init received twice"));
            }
            ToWorker::Reply { .. }
            | ToWorker::BlsResponse { .. }
            | ToWorker::Cancel { .. }
            | ToWorker::IsReady { .. }
            | ToWorker::Taken { .. } => {}
        }
    }
    Python::attach(|_| drop(current.take()));
    // `finalize` may make server calls too.
    intake.begin(true);
    if let Err(e) = instance.finalize() {
        python_log_error(&e.message);
    }
    Ok(())
}

fn python_log_error(message: &str) {
    python::emit_log(
        crate::constants::LogLevel::Error,
        "rustpy-worker",
        0,
        message,
    );
}
