//! Server calls from user code in a worker (BLS, model control, custom
//! metrics), both ends of the exchange: the worker's [`Rpc`] and
//! [`RemoteServer`] send a Call and wait for its Reply (or BLS responses);
//! the backend's `CallServer` makes the call on the server API and answers.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::bls::{self, BackendBls, BlsRegion, WorkerBls};
use super::transport::{write_to, WorkerLink, Writer};
use super::wire::{
    error_from_wire, error_to_wire, metric_op, CallResult, FromWorker, ServerOp, ToWorker,
    WireBlsRequest, WireValue,
};
use crate::error::{Error, ErrorCode, Result};
use crate::server::{
    server_api, BlsCancel, BlsRequest, BlsResponse, Metric, MetricFamily, MetricKind, OutputArena,
    OwnedTensor, ServerApi,
};
use rustpy_config::model::{PENDING_CALLS_KEY, SHM_LIMIT_KEY};

// ---- The backend's end: make the call, send the answer. ----

/// The backend's end of one worker's server calls (its reader thread owns
/// it). Metric calls are answered inline (they are quick); BLS and model
/// control on their own threads, as they wait on other models: at most
/// `rustpy.pending_calls_limit` at once per worker, so a worker cannot make
/// the server start threads (and hold their requests) without bound.
pub(super) struct CallServer {
    replies: Writer,
    metrics: MetricTable,
    bls: Arc<BackendBls>,
    /// Calls on their own threads now, and the most allowed.
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    /// Bytes of BLS inputs the server holds for this worker's calls in
    /// flight (read out of its region or its frames, held until the call's
    /// final response): at most the size of its BLS input region, so that
    /// `pending_calls_limit` calls cannot each hold a region's worth.
    inputs_held: Arc<AtomicUsize>,
    /// "model 'M' instance 'I'", for errors.
    label: String,
    /// The cancel handle of each BLS stream in flight.
    cancels: BlsCancels,
}

/// Metric families and metrics one worker may create: each is an object in
/// the server, held until the worker goes.
const MAX_METRICS: usize = 10_000;

/// A call on its own thread, counted until the thread is done.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes of a BLS call's inputs, counted in `inputs_held` until dropped.
struct HeldInputs(Arc<AtomicUsize>, usize);

impl Drop for HeldInputs {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// The cancel handles of a worker's BLS requests in flight, by stream
/// (kept until the request's final response).
type BlsCancels = Arc<Mutex<HashMap<u64, BlsCancel>>>;

/// Metric families and metrics a worker created, by the ids it knows them by.
#[derive(Default)]
struct MetricTable {
    next: u64,
    families: HashMap<u64, Arc<dyn MetricFamily>>,
    metrics: HashMap<u64, Box<dyn Metric>>,
}

fn reply(w: &Writer, call: u64, result: Result<WireValue>) {
    let result = result.map_err(|e| error_to_wire(&e));
    let _ = write_to(w, &ToWorker::Reply { call, result });
}

impl CallServer {
    pub(super) fn new(
        replies: Writer,
        bls_in: BlsRegion,
        bls_out: BlsRegion,
        limit: usize,
        label: String,
    ) -> CallServer {
        CallServer {
            replies,
            metrics: MetricTable::default(),
            bls: Arc::new(BackendBls::new(bls_in, bls_out)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit,
            inputs_held: Arc::new(AtomicUsize::new(0)),
            label,
            cancels: BlsCancels::default(),
        }
    }

    /// A slot for a call on its own thread, or the error that refuses it.
    fn slot(&self) -> Result<InFlight> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(InFlight(self.in_flight.clone())),
            Err(_) => Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "{}: {} server calls (BLS requests, model loads and unloads) of this worker are in flight already, the most {PENDING_CALLS_KEY} allows; wait for some to finish, or raise the limit",
                    self.label, self.limit
                ),
            )),
        }
    }

    /// Counts `bytes` of a BLS call's inputs as held, or the error that
    /// refuses the call: the inputs of the calls in flight would hold more
    /// than the BLS input region.
    fn hold_inputs(&self, bytes: usize) -> Result<HeldInputs> {
        let most = self.bls.input_size();
        let taken = self
            .inputs_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= most)
            });
        match taken {
            Ok(_) => Ok(HeldInputs(self.inputs_held.clone(), bytes)),
            Err(held) => {
                let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
                Err(Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{}: this BLS call's inputs ({:.1} MiB) and those of the worker's calls in flight ({:.1} MiB) would hold more than the {} MiB of {SHM_LIMIT_KEY} in the server; wait for some to finish, or raise the limit",
                        self.label,
                        mib(bytes),
                        mib(held),
                        most >> 20
                    ),
                ))
            }
        }
    }

    /// Starts `work` on its own thread, holding a slot until it is done.
    fn spawn(&self, call: u64, work: impl FnOnce() + Send + 'static) {
        let slot = match self.slot() {
            Ok(slot) => slot,
            Err(e) => return reply(&self.replies, call, Err(e)),
        };
        let started = std::thread::Builder::new()
            .name("rustpy-call".into())
            .spawn(move || {
                let _slot = slot;
                work();
            });
        if let Err(e) = started {
            reply(
                &self.replies,
                call,
                Err(Error::internal(format!(
                    "rustpy: cannot start a thread for this call: {e}"
                ))),
            );
        }
    }

    /// Makes a worker's server call on the server API (Triton's, in the
    /// backend) and answers it.
    pub(super) fn serve(&mut self, call: u64, op: ServerOp) {
        let api = match server_api() {
            Ok(api) => api,
            Err(e) => return reply(&self.replies, call, Err(e)),
        };
        let unit = |r: Result<()>| r.map(|()| WireValue::Unit);
        let result = match op {
            ServerOp::Infer { stream, request } => {
                // Claims outside the region break the protocol (run_bls);
                // within it, the inputs of all calls in flight are bounded.
                let held = match &request.shared {
                    Some(shared) if shared.check(self.bls.input_size(), "BLS region").is_err() => {
                        None
                    }
                    _ => match self.hold_inputs(request.input_bytes()) {
                        Ok(held) => Some(held),
                        Err(e) => return reply(&self.replies, call, Err(e)),
                    },
                };
                let (w, bls) = (self.replies.clone(), self.bls.clone());
                let cancels = self.cancels.clone();
                return self.spawn(call, move || {
                    let _held = held;
                    run_bls(api.as_ref(), &w, &bls, &cancels, call, stream, request)
                });
            }
            ServerOp::CancelInfer { stream } => {
                let cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
                match cancels.get(&stream) {
                    Some(cancel) => unit(cancel()),
                    None => Ok(WireValue::Unit), // completed: nothing to cancel
                }
            }
            ServerOp::LoadModel {
                name,
                config_json,
                files,
            } => {
                let w = self.replies.clone();
                return self.spawn(call, move || {
                    reply(&w, call, unit(api.load_model(&name, &config_json, &files)))
                });
            }
            ServerOp::UnloadModel {
                name,
                unload_dependents,
            } => {
                let w = self.replies.clone();
                return self.spawn(call, move || {
                    reply(&w, call, unit(api.unload_model(&name, unload_dependents)))
                });
            }
            ServerOp::IsModelReady { name, version } => {
                api.is_model_ready(&name, version).map(WireValue::Bool)
            }
            ServerOp::IsModelDecoupled { name, version } => {
                api.is_model_decoupled(&name, version).map(WireValue::Bool)
            }
            metric => self.metrics.serve(api.as_ref(), metric),
        };
        reply(&self.replies, call, result)
    }

    /// The worker copied these BLS responses' outputs out: their ranges
    /// are free again.
    pub(super) fn release(&self, starts: &[usize]) {
        self.bls.release(starts);
    }
}

impl MetricTable {
    fn add(&mut self) -> Result<u64> {
        if self.families.len() + self.metrics.len() >= MAX_METRICS {
            return Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "rustpy: a worker may create at most {MAX_METRICS} metric families and metrics"
                ),
            ));
        }
        self.next += 1;
        Ok(self.next)
    }

    /// A metric call (MetricFamily, Metric, MetricOp).
    fn serve(&mut self, api: &dyn ServerApi, op: ServerOp) -> Result<WireValue> {
        match op {
            ServerOp::MetricFamily {
                name,
                description,
                kind,
            } => {
                let kind = MetricKind::from_code(kind).unwrap_or(MetricKind::Histogram);
                let id = self.add()?;
                let family = api.metric_family(&name, &description, kind)?;
                self.families.insert(id, family);
                Ok(WireValue::Id(id))
            }
            ServerOp::Metric {
                family,
                labels,
                buckets,
            } => {
                let id = self.add()?;
                let family = self
                    .families
                    .get(&family)
                    .ok_or_else(|| Error::internal("unknown metric family"))?;
                let metric = family.metric(&labels, buckets.as_deref())?;
                self.metrics.insert(id, metric);
                Ok(WireValue::Id(id))
            }
            ServerOp::MetricOp { metric, op, value } => {
                let m = self
                    .metrics
                    .get(&metric)
                    .ok_or_else(|| Error::internal("unknown metric"))?;
                match op {
                    metric_op::INCREMENT => m.increment(value).map(|()| WireValue::Unit),
                    metric_op::SET => m.set(value).map(|()| WireValue::Unit),
                    metric_op::OBSERVE => m.observe(value).map(|()| WireValue::Unit),
                    _ => m.value().map(WireValue::F64),
                }
            }
            _ => Err(Error::internal("not a metric call")),
        }
    }
}

/// A BLS request's inputs: inline in the frame, or (large) in the worker's
/// BLS input region, read there in place (each holding a clone of `held`)
/// until the server releases the request. Each checked against its shape
/// and the region; `Err`: what is wrong with them, which no worker
/// following the protocol sends (its guard trips).
pub(super) fn bls_inputs(
    bls: &BackendBls,
    req: &mut WireBlsRequest,
    held: &crossbeam::channel::Sender<()>,
) -> std::result::Result<Vec<OwnedTensor>, String> {
    match &req.shared {
        Some(shared) => bls.read_request_inputs(shared, held).map_err(|e| e.message),
        None => req.take_inline_inputs().map_err(|e| e.to_string()),
    }
}

/// Tells the worker, once the server dropped the last input it read in
/// place (`held` disconnects), that its input ranges are free again. For
/// an accepted request only: a refused one's Reply frees them.
struct InputsRead {
    w: Writer,
    starts: Vec<usize>,
    held: crossbeam::channel::Receiver<()>,
}

impl Drop for InputsRead {
    fn drop(&mut self) {
        // Err(Disconnected) once every clone of the sender is gone.
        let _ = self.held.recv();
        let starts = std::mem::take(&mut self.starts);
        let _ = write_to(&self.w, &ToWorker::BlsInputsRead { starts });
    }
}

/// A worker's BLS request, on its own thread: reply once it is queued (or
/// refused), then relay each response as a BlsResponse frame of `stream`.
fn run_bls(
    api: &dyn ServerApi,
    w: &Writer,
    bls: &BackendBls,
    cancels: &BlsCancels,
    call: u64,
    stream: u64,
    mut req: WireBlsRequest,
) {
    let (held, read) = crossbeam::channel::bounded::<()>(0);
    let inputs = bls_inputs(bls, &mut req, &held);
    drop(held); // from here on, only the inputs read in place hold it
    let starts = req.shared.as_ref().map(bls::starts_of);
    let inputs = match inputs {
        Ok(i) => i,
        Err(why) => {
            w.guard().broke(format!(
                "it sent a BLS request whose inputs are wrong ({why})"
            ));
            return reply(w, call, Err(Error::internal(why)));
        }
    };
    let (tx, rx) = crossbeam::channel::unbounded();
    match api.infer(req.into_request(inputs, Some(bls.output_arena())), tx) {
        // Kept before the Reply: the worker may cancel once it has it.
        Ok(cancel) => lock_cancels(cancels).insert(stream, cancel),
        Err(e) => return reply(w, call, Err(e)),
    };
    reply(w, call, Ok(WireValue::Unit));
    // Accepted: the worker's input ranges are freed by this, not the Reply;
    // the thread (and its slot) waits for the server's release.
    let _inputs_read = starts.map(|starts| InputsRead {
        w: w.clone(),
        starts,
        held: read,
    });
    for response in rx {
        let is_final = response.is_final;
        let frame = ToWorker::BlsResponse {
            call: stream,
            response: bls.response_to_wire(response),
        };
        if write_to(w, &frame).is_err() || is_final {
            lock_cancels(cancels).remove(&stream);
            return;
        }
    }
    lock_cancels(cancels).remove(&stream);
    let ended = BlsResponse {
        error: Some(Error::internal(
            "the BLS request ended without a final response",
        )),
        is_final: true,
        ..Default::default()
    };
    let _ = write_to(
        w,
        &ToWorker::BlsResponse {
            call: stream,
            response: bls.response_to_wire(ended),
        },
    );
}

fn lock_cancels(cancels: &BlsCancels) -> std::sync::MutexGuard<'_, HashMap<u64, BlsCancel>> {
    cancels.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- The worker's end: send the call, wait for the answer. ----

/// A call waiting for the backend's answer.
enum Pending {
    Reply(mpsc::Sender<CallResult>),
    Stream(crossbeam::channel::Sender<BlsResponse>),
}

/// Server calls from user code, routed through the backend. The worker's
/// intake hands it the Reply and BlsResponse frames ([`Rpc::dispatch`]).
pub struct Rpc {
    link: Arc<WorkerLink>,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// BLS tensors through shared memory (isolation/bls.rs).
    bls: Option<WorkerBls>,
}

fn closed() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the server connection of this worker closed",
    )
}

impl Rpc {
    /// `bls`: the BLS input and output regions the backend passed (without
    /// them BLS tensors travel inline).
    pub fn new(link: Arc<WorkerLink>, bls: Option<(OwnedFd, OwnedFd)>) -> Result<Arc<Rpc>> {
        let bls = bls.map(|fds| WorkerBls::open(fds, &link)).transpose()?;
        Ok(Arc::new(Rpc {
            link,
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            bls,
        }))
    }

    /// Whether a caller waits for an answer (a user thread's BLS stream
    /// outlives batches).
    pub fn has_pending(&self) -> bool {
        !self.lock_pending().is_empty()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, p: Pending) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_pending().insert(id, p);
        self.link.need_frames();
        id
    }

    fn call(&self, op: ServerOp) -> Result<WireValue> {
        let (tx, rx) = mpsc::channel();
        let call = self.register(Pending::Reply(tx));
        if let Err(e) = self.link.send(&FromWorker::Call { call, op }) {
            self.lock_pending().remove(&call);
            return Err(e);
        }
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(error_from_wire(e)),
            Err(_) => Err(closed()),
        }
    }

    /// Delivers a Reply / BlsResponse frame to its caller, and frees the
    /// input ranges a BlsInputsRead names.
    pub fn dispatch(&self, msg: ToWorker) {
        match msg {
            ToWorker::Reply { call, result } => {
                let mut pending = self.lock_pending();
                if let Some(Pending::Reply(tx)) = pending.remove(&call) {
                    let _ = tx.send(result);
                }
            }
            ToWorker::BlsResponse { call, response } => {
                let is_final = response.is_final;
                // Large outputs: copied out of the BLS output region, whose
                // range the backend may then reuse.
                let shared = match (&response.shared, &self.bls) {
                    (Some(shared), Some(bls)) => Some(bls.read_response_outputs(shared)),
                    (Some(_), None) => Some(Err(Error::internal(
                        "rustpy-worker: a BLS response in shared memory, but no BLS memory",
                    ))),
                    _ => None,
                };
                let mut converted = response.into_response();
                match shared {
                    Some(Ok(outputs)) => converted.outputs = outputs,
                    Some(Err(e)) => converted.error = Some(e),
                    None => {}
                }
                let mut pending = self.lock_pending();
                if let Some(Pending::Stream(tx)) = pending.get(&call) {
                    let _ = tx.send(converted);
                }
                if is_final {
                    pending.remove(&call);
                }
            }
            ToWorker::BlsInputsRead { starts } => {
                if let Some(bls) = &self.bls {
                    bls.inputs_read(&starts);
                }
            }
            _ => {}
        }
    }

    /// The backend is gone: every waiting caller gets an error.
    pub fn fail_all(&self) {
        let drained: Vec<Pending> = self.lock_pending().drain().map(|(_, p)| p).collect();
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

fn unexpected() -> Error {
    Error::internal("unexpected reply from the backend")
}

/// The server API of a worker: every call goes to the backend, which makes
/// it on Triton's server API (BLS, model control, custom metrics).
pub struct RemoteServer(Arc<Rpc>);

impl RemoteServer {
    pub fn new(rpc: Arc<Rpc>) -> RemoteServer {
        RemoteServer(rpc)
    }
}

impl ServerApi for RemoteServer {
    fn infer(
        &self,
        mut request: BlsRequest,
        responses: crossbeam::channel::Sender<BlsResponse>,
    ) -> Result<BlsCancel> {
        // Large inputs go through the BLS input region, in a range of their
        // own (other threads' calls use other ranges).
        let shared = match &self.0.bls {
            Some(bls) => bls.put_request_inputs(&request.inputs)?,
            None => None,
        };
        if let (Some(_), Some(bls)) = (&shared, &self.0.bls) {
            // Their bytes are in the region now, their ranges freed once the
            // call is answered; buffers of their own go back for reuse (the
            // response's outputs are copied out into one).
            bls.request_sent(&request.inputs);
            for input in std::mem::take(&mut request.inputs) {
                input.data.recycle();
            }
        }
        let wire = WireBlsRequest::new(request, shared.clone());
        let stream = self.0.register(Pending::Stream(responses));
        let accepted = self.0.call(ServerOp::Infer {
            stream,
            request: wire,
        });
        // Refused (or the backend is gone): the inputs' ranges are free. An
        // accepted request's are freed by BlsInputsRead, once the server
        // released it (it reads them in place until then).
        if let (Some(shared), Some(bls), Err(_)) = (&shared, &self.0.bls, &accepted) {
            bls.request_refused(shared);
        }
        if accepted.is_err() {
            self.0.lock_pending().remove(&stream);
        }
        let rpc = self.0.clone();
        accepted.map(|_| -> BlsCancel {
            Box::new(move || rpc.call(ServerOp::CancelInfer { stream }).map(|_| ()))
        })
    }
    fn input_arena(&self) -> Option<Arc<dyn OutputArena>> {
        self.0.bls.as_ref().map(WorkerBls::input_arena)
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
        self.op(metric_op::INCREMENT, value).map(|_| ())
    }
    fn set(&self, value: f64) -> Result<()> {
        self.op(metric_op::SET, value).map(|_| ())
    }
    fn observe(&self, value: f64) -> Result<()> {
        self.op(metric_op::OBSERVE, value).map(|_| ())
    }
    fn value(&self) -> Result<f64> {
        match self.op(metric_op::VALUE, 0.0)? {
            WireValue::F64(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::guard::WorkerGuard;
    use crate::isolation::sys::fixed_memfd;
    use crate::isolation::transport::Channel;
    use std::os::unix::net::UnixStream;

    fn call_server(region: usize) -> (CallServer, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let guard = WorkerGuard::detached("test".into(), &ours).unwrap();
        let writer = Channel::new(ours, guard).unwrap();
        let region = |name| BlsRegion::new(fixed_memfd(name, region).unwrap()).unwrap();
        let server = CallServer::new(
            writer,
            region("bls-in"),
            region("bls-out"),
            256,
            "model 'm' instance 'm_0'".into(),
        );
        (server, peer)
    }

    #[test]
    fn bls_inputs_held_for_calls_in_flight_are_bounded_by_the_region() {
        let (server, _peer) = call_server(1 << 20);
        let first = server.hold_inputs(600 << 10).unwrap();
        // Within the count of calls allowed, but the bytes would not fit.
        let e = server.hold_inputs(600 << 10).err().unwrap();
        assert!(matches!(e.code, ErrorCode::Unavailable));
        let msg = e.message;
        assert!(
            msg.contains("model 'm' instance 'm_0'")
                && msg.contains("(0.6 MiB) and those of the worker's calls in flight (0.6 MiB)")
                && msg.contains("the 1 MiB of rustpy.shm_limit_mb"),
            "{msg}"
        );
        assert!(server.hold_inputs(usize::MAX).is_err(), "no overflow");
        // The first call's final response came: its bytes are free again.
        drop(first);
        let again = server.hold_inputs(1 << 20).unwrap();
        assert!(server.hold_inputs(1).is_err());
        drop(again);
        assert_eq!(server.inputs_held.load(Ordering::Acquire), 0);
    }
}
