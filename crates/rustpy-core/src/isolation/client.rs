//! The backend side of a process-isolated instance: starts the worker,
//! moves each batch through shared memory, relays responses to the
//! instance's responders, and restarts a worker that died or hung.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::bls::{wants_shared, BlsRegion};
use super::proto::{
    error_from_wire, error_to_wire, params_from_wire, read_frame, request_id, tensor_from_wire,
    tensor_to_wire, write_frame, FromWorker, ServerOp, ToWorker, WireBlsResponse, WireInstance,
    WireParam, WireRequest, WireTensor, WireValue, REQUEST_BITS,
};
use super::sys::{self, growing_memfd, memfd, Shm};
use crate::constants::LogLevel;
use crate::engine::{ExecReport, Outcome, OutputSlice, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::python::{emit_log, InstanceInfo};
use crate::request::InferRequest;
use crate::server::{
    server_api, BlsCancel, BlsRequest, BlsResponse, Metric, MetricFamily, MetricKind,
};
use crate::DataType;
use rustpy_config::model::{INPUT_SHM_LIMIT_KEY, MEMORY_LIMIT_KEY};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};

/// Initial size of each shared-memory region; grown on demand.
const INITIAL_SHM: usize = 1 << 20;
/// Inputs are placed at multiples of this in the input region.
const ALIGN: usize = 64;
/// How long an unloading worker may take to run `finalize` and exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a worker whose control channel broke may take to exit before it
/// is killed (a dying process exits within this).
const REAP_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between two start attempts of a worker that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a process-isolated instance needs to (re)start its worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The `rustpy-worker` executable.
    pub executable: PathBuf,
    pub model_name: String,
    pub version: u64,
    pub model_dir: String,
    pub config_json: String,
    pub instance: InstanceInfo,
    pub execute_timeout: Option<Duration>,
    /// The backend's `--backend-config=rustpy,site-packages=DIR`, if any.
    pub site_packages: Option<PathBuf>,
    /// The model's own environment's site-packages (ahead of everything).
    pub env_site_packages: Option<PathBuf>,
    /// `rustpy.memory_limit_mb`: RLIMIT_DATA of the worker, MiB.
    pub memory_limit_mb: Option<u64>,
    /// `rustpy.input_shm_limit_mb`: the largest the input region may grow to, MiB.
    pub input_shm_limit_mb: Option<u64>,
    /// An unpacked `EXECUTION_ENV_PATH` archive: its `lib/` and `bin/` go
    /// first on the worker's `LD_LIBRARY_PATH` and `PATH`.
    pub env_archive_root: Option<PathBuf>,
    /// Keeps that archive's cache entry from being pruned while loaded.
    pub env_lease: Option<Arc<rustpy_fetch::env::EnvLease>>,
}

impl WorkerConfig {
    /// The worker's arguments for its environment and memory limit.
    fn env_args(&self, command: &mut Command) {
        if let Some(dir) = &self.site_packages {
            command.arg("--site-packages").arg(dir);
        }
        if let Some(dir) = &self.env_site_packages {
            command.arg("--env-site-packages").arg(dir);
        }
        if let Some(mb) = self.memory_limit_mb {
            command.arg("--memory-limit-mb").arg(mb.to_string());
        }
        if let Some(root) = &self.env_archive_root {
            command.envs(super::env::worker_command_env(root));
        }
    }

    /// "rustpy.memory_limit_mb = N MiB", or "" without a limit.
    fn memory_note(&self) -> String {
        match self.memory_limit_mb {
            Some(mb) => format!("{MEMORY_LIMIT_KEY} = {mb} MiB"),
            None => String::new(),
        }
    }
}

/// A MemoryError from a memory-limited worker says which limit it hit
/// (`note` is empty without a limit).
fn annotate_memory_error(msg: &mut FromWorker, note: &str) {
    if let FromWorker::Error { message, .. } = msg {
        if !note.is_empty() && message.contains("MemoryError") {
            message.push_str(note);
        }
    }
}

/// Spawns children from one thread that lives as long as the process: the
/// parent-death signal fires when the *thread* that forked exits, and Triton
/// creates and ends threads (model loading) as it pleases.
fn spawn(command: Command) -> std::io::Result<Child> {
    type Job = (Command, Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rustpy-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the rustpy-spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// "exited on SIGSEGV" / "exited with status 3".
fn describe_exit(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("exited on {}{core}", sys::signal_name(sig))
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

/// Runs the model's `auto_complete_config` in a short-lived worker (the
/// model is never imported in the server). `Ok(None)`: nothing to change.
pub fn auto_complete(cfg: &WorkerConfig) -> Result<Option<String>> {
    let msg = ToWorker::AutoComplete {
        config_json: cfg.config_json.clone(),
        model_dir: cfg.model_dir.clone(),
        version: cfg.version,
    };
    let (mut worker, first) = Worker::launch(cfg, &msg, "running auto_complete_config")?;
    worker.shutdown();
    match first {
        FromWorker::AutoCompleted { result } => {
            result.map_err(|(code, message)| error_from_wire(code, message))
        }
        _ => Err(Error::internal(format!(
            "{}: the worker process sent an unexpected message during auto-complete",
            label(cfg)
        ))),
    }
}

/// One running worker process.
struct Worker {
    child: Child,
    pid: u32,
    socket: Writer,
    /// Frames from the worker (Log frames are handled by the reader thread).
    frames: Receiver<FromWorker>,
    input: Shm,
    /// Requests whose final response has not gone out, by wire id; the
    /// reader thread answers them (the output region is its alone).
    open: Open,
    /// The batch executing now (0: none); used when the worker dies.
    running: Arc<AtomicU64>,
    /// Batches whose input range Python still views: (batch, start, end).
    /// No later batch is written there until the worker releases them.
    pinned: Vec<(u64, usize, usize)>,
    /// The number of the last batch sent.
    batch: u64,
    /// "model 'M' instance 'I'", for errors raised while placing a batch.
    label: String,
    /// The largest the input region may grow to (`rustpy.input_shm_limit_mb`).
    input_limit: Option<usize>,
    /// What readiness checks use, outside the instance's lock.
    ready: Arc<ReadyLink>,
}

/// What a readiness check needs of one worker, usable while a batch holds
/// the instance's lock: its socket, whether it is alive, and the answers of
/// the model's `is_ready()` (FromWorker::ReadyAnswer, read by the reader
/// thread).
struct ReadyLink {
    socket: Writer,
    /// False once its control channel closed (the process is gone).
    alive: AtomicBool,
    /// The model defines `is_ready()` (said in its Ready frame).
    has_is_ready: AtomicBool,
    next: AtomicU64,
    answers: Mutex<HashMap<u64, Sender<Result<bool>>>>,
}

impl ReadyLink {
    fn answer(&self, call: u64, result: std::result::Result<bool, (u32, String)>) {
        let waiter = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call);
        if let Some(tx) = waiter {
            let _ = tx.send(result.map_err(|(code, message)| error_from_wire(code, message)));
        }
    }

    /// The process is gone: waiting checks get their answer now.
    fn closed(&self) {
        self.alive.store(false, AtomicOrdering::Release);
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Asks the worker's `is_ready()` and waits for the answer (the caller,
    /// rustpy_core::readiness, bounds the wait for its own caller).
    fn ask(&self, instance: &str) -> Result<bool> {
        let unhealthy = || {
            Error::internal(format!(
                "Stub process '{instance}' is not healthy while waiting for is_ready()"
            ))
        };
        let call = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call, tx);
        if !self.alive.load(AtomicOrdering::Acquire)
            || write_to(&self.socket, &ToWorker::IsReady { call }).is_err()
        {
            self.answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&call);
            return Err(unhealthy());
        }
        rx.recv().unwrap_or_else(|_| Err(unhealthy()))
    }
}

/// A request whose final response has not gone out yet. The worker's
/// reader thread delivers its responses as they come, during its batch and,
/// for a decoupled model, after `execute` returned (the instance has taken
/// other batches meanwhile).
struct OpenRequest {
    responder: Box<dyn Responder>,
    batch: u64,
    /// The worker was told the client cancelled it.
    cancel_sent: bool,
}

type Open = Arc<Mutex<HashMap<usize, OpenRequest>>>;

/// How often open requests are checked for cancellation by the client.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Delivers one response frame to its open request; a final one closes it.
fn deliver(
    open: &Open,
    request: usize,
    outputs: &[OutputSlice<'_>],
    parameters: &[(String, WireParam)],
    is_final: bool,
) {
    let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
    let Some(o) = open.get_mut(&request) else {
        return; // already answered (e.g. failed as cancelled)
    };
    let parameters = params_from_wire(parameters);
    let close = match o
        .responder
        .send_with_parameters(outputs, &parameters, is_final)
    {
        Ok(()) => is_final,
        Err(e) => {
            o.responder.send_error(&e);
            true
        }
    };
    if close {
        open.remove(&request);
    }
}

fn fail_open(open: &Open, request: usize, err: &Error) {
    let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mut o) = open.remove(&request) {
        o.responder.send_error(err);
    }
}

/// The reader thread's handling of a response frame; false for any other.
fn handle_response(
    frame: &FromWorker,
    open: &Open,
    output: &mut Shm,
    input: &mut Shm,
    replies: &Writer,
) -> bool {
    match frame {
        FromWorker::Response {
            request,
            outputs,
            output_len,
            is_final,
            from_input,
            taken,
            parameters,
        } => {
            let mut slices = Vec::with_capacity(outputs.len());
            let mut bad = output
                .ensure(*output_len)
                .err()
                .map(|e| format!("output shared memory: {e}"));
            // Outputs that are views of the batch's inputs are copied from
            // the input region (this mapping of it is the reader thread's
            // own; the execute thread writes the next batch only after this
            // batch's Done, which comes after this frame).
            let input_end = from_input
                .iter()
                .filter_map(|&k| outputs.get(k))
                .map(|o| o.offset.saturating_add(o.len))
                .max()
                .unwrap_or(0);
            if let Err(e) = input.ensure(input_end) {
                bad = Some(format!("input shared memory: {e}"));
            }
            for (k, o) in outputs.iter().enumerate() {
                let region = if from_input.contains(&k) {
                    &*input
                } else {
                    &*output
                };
                match (DataType::from_name(&o.dtype), region.slice(o.offset, o.len)) {
                    (Some(dtype), Ok(data)) => slices.push(OutputSlice {
                        name: &o.name,
                        dtype,
                        shape: o.shape.clone(),
                        data,
                    }),
                    _ => bad = Some("a response lies outside the shared memory".into()),
                }
            }
            match bad {
                Some(why) => fail_open(open, *request, &Error::internal(format!("rustpy: {why}"))),
                None => deliver(open, *request, &slices, parameters, *is_final),
            }
            if let Some(token) = taken {
                let _ = write_to(replies, &ToWorker::Taken { token: *token });
            }
            true
        }
        FromWorker::InlineResponse {
            request,
            outputs,
            is_final,
            parameters,
        } => {
            let mut slices = Vec::with_capacity(outputs.len());
            for o in outputs {
                let Some(dtype) = DataType::from_name(&o.dtype) else {
                    fail_open(
                        open,
                        *request,
                        &Error::internal("rustpy: unknown output type"),
                    );
                    return true;
                };
                slices.push(OutputSlice {
                    name: &o.name,
                    dtype,
                    shape: o.shape.clone(),
                    data: &o.data,
                });
            }
            deliver(open, *request, &slices, parameters, *is_final);
            true
        }
        FromWorker::Error {
            request,
            code,
            message,
            is_final,
        } => {
            let err = error_from_wire(*code, message.clone());
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(o) = open.get_mut(request) {
                if *is_final || !o.responder.send_error_nonfinal(&err) {
                    if *is_final {
                        o.responder.send_error(&err);
                    }
                    open.remove(request);
                }
            }
            true
        }
        FromWorker::Finish { request } => {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut o) = open.remove(request) {
                o.responder.finish();
            }
            true
        }
        _ => false,
    }
}

/// Tells the worker about requests the client cancelled, while any are open.
fn watch_cancellations(
    open: std::sync::Weak<Mutex<HashMap<usize, OpenRequest>>>,
    socket: std::sync::Weak<Mutex<UnixStream>>,
) {
    loop {
        std::thread::sleep(CANCEL_POLL);
        let Some(open) = open.upgrade() else { return };
        let cancelled: Vec<usize> = {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            open.iter_mut()
                .filter(|(_, o)| !o.cancel_sent && o.responder.is_cancelled())
                .map(|(&id, o)| {
                    o.cancel_sent = true;
                    id
                })
                .collect()
        };
        drop(open);
        if cancelled.is_empty() {
            continue;
        }
        let Some(socket) = socket.upgrade() else {
            return;
        };
        for request in cancelled {
            if write_to(&socket, &ToWorker::Cancel { request }).is_err() {
                return;
            }
        }
    }
}

/// Pinned ranges start on page boundaries (a batch placed after one).
const PAGE: usize = 4096;

impl Worker {
    /// Where a batch of `needed` bytes goes: the lowest offset that overlaps
    /// no pinned range (0 when nothing is pinned).
    fn place(&self, needed: usize) -> usize {
        let mut ranges: Vec<(usize, usize)> = self.pinned.iter().map(|&(_, a, b)| (a, b)).collect();
        ranges.sort_unstable();
        let mut at = 0usize;
        for (start, end) in ranges {
            if at + needed <= start {
                break;
            }
            at = at.max(end.next_multiple_of(PAGE));
        }
        at
    }

    /// Starts a worker and runs the model's initialisation in it.
    fn start(cfg: &WorkerConfig) -> Result<Worker> {
        let init = ToWorker::Init {
            config_json: cfg.config_json.clone(),
            model_dir: cfg.model_dir.clone(),
            version: cfg.version,
            instance: WireInstance {
                name: cfg.instance.name.clone(),
                kind: cfg.instance.kind.clone(),
                device_id: cfg.instance.device_id,
            },
        };
        let (mut worker, first) = Self::launch(cfg, &init, "running initialize")?;
        match first {
            FromWorker::Ready { is_ready } => {
                worker
                    .ready
                    .has_is_ready
                    .store(is_ready, AtomicOrdering::Release);
                Ok(worker)
            }
            FromWorker::InitFailed { code, message } => {
                worker.shutdown();
                Err(error_from_wire(code, message))
            }
            _ => {
                worker.kill();
                Err(Error::internal(format!(
                    "{}: the worker process sent an unexpected message while starting",
                    label(cfg)
                )))
            }
        }
    }

    /// Starts a worker process, sends it `first` and returns its first answer.
    fn launch(cfg: &WorkerConfig, first: &ToWorker, doing: &str) -> Result<(Worker, FromWorker)> {
        let what = |e: std::io::Error| {
            Error::internal(format!(
                "{}: cannot start the worker process {}: {e}",
                label(cfg),
                cfg.executable.display()
            ))
        };
        let input_fd = growing_memfd("rustpy-input", INITIAL_SHM).map_err(what)?;
        // The reader thread's own mapping of the input region, for outputs
        // that are views of the inputs.
        let mut input_view = Shm::map(input_fd.try_clone().map_err(what)?).map_err(what)?;
        let input = Shm::map(input_fd).map_err(what)?;
        let output = growing_memfd("rustpy-output", INITIAL_SHM)
            .and_then(Shm::map)
            .map_err(what)?;
        // BLS tensors (isolation/bls.rs): empty until a large BLS call.
        let bls_in = memfd("rustpy-bls-in", 0).map_err(what)?;
        let bls_out = memfd("rustpy-bls-out", 0).map_err(what)?;
        let bls_fds = [bls_in.as_raw_fd(), bls_out.as_raw_fd()];
        let bls = Arc::new(BlsRegions {
            input: Mutex::new(BlsRegion::new(bls_in).map_err(what)?),
            output: Mutex::new(BlsRegion::new(bls_out).map_err(what)?),
        });
        let (ours, theirs) = UnixStream::pair().map_err(what)?;
        let mut command = Command::new(&cfg.executable);
        command
            .arg("--socket-fd")
            .arg(theirs.as_raw_fd().to_string())
            .arg("--input-fd")
            .arg(input.raw_fd().to_string())
            .arg("--output-fd")
            .arg(output.raw_fd().to_string())
            .arg("--bls-in-fd")
            .arg(bls_fds[0].to_string())
            .arg("--bls-out-fd")
            .arg(bls_fds[1].to_string())
            .arg("--model")
            .arg(&cfg.model_name)
            .stdin(Stdio::null());
        cfg.env_args(&mut command);
        sys::prepare_child(
            &mut command,
            vec![
                theirs.as_raw_fd(),
                input.raw_fd(),
                output.raw_fd(),
                bls_fds[0],
                bls_fds[1],
            ],
        );
        let child = spawn(command).map_err(what)?;
        drop(theirs);
        let pid = child.id();

        let (tx, frames) = mpsc::channel();
        let read_half = ours.try_clone().map_err(what)?;
        let socket: Writer = Arc::new(Mutex::new(ours));
        let replies = socket.clone();
        let ready = Arc::new(ReadyLink {
            socket: socket.clone(),
            alive: AtomicBool::new(true),
            has_is_ready: AtomicBool::new(false),
            next: AtomicU64::new(1),
            answers: Mutex::new(HashMap::new()),
        });
        let reader_ready = ready.clone();
        let open: Open = Arc::new(Mutex::new(HashMap::new()));
        let running = Arc::new(AtomicU64::new(0));
        let (reader_open, reader_running) = (open.clone(), running.clone());
        let who = label(cfg);
        let memory_note = match cfg.memory_note() {
            note if note.is_empty() => note,
            note => format!(
                " ({who}: the worker process (pid {pid}) ran out of its memory limit, {note})"
            ),
        };
        let mut output = output;
        std::thread::Builder::new()
            .name(format!("rustpy-worker-{pid}"))
            .spawn(move || {
                let mut r = BufReader::new(read_half);
                let mut metrics = MetricTable::default();
                let cancels = BlsCancels::default();
                while let Ok(Some(mut msg)) = read_frame::<FromWorker, _>(&mut r) {
                    annotate_memory_error(&mut msg, &memory_note);
                    if handle_response(&msg, &reader_open, &mut output, &mut input_view, &replies)
                    {
                        continue;
                    }
                    match msg {
                        FromWorker::Call { call, op } => {
                            serve_call(call, op, &replies, &mut metrics, &bls, &cancels)
                        }
                        FromWorker::BlsRelease { starts } => {
                            let mut out = bls.output.lock().unwrap_or_else(|p| p.into_inner());
                            for start in starts {
                                out.free(start);
                            }
                        }
                        FromWorker::Log {
                            level,
                            file,
                            line,
                            message,
                        } => emit_log(LogLevel::from_code(level), &file, line, &message),
                        FromWorker::ReadyAnswer { call, result } => {
                            reader_ready.answer(call, result)
                        }
                        other => {
                            if tx.send(other).is_err() {
                                break;
                            }
                        }
                    }
                }
                reader_ready.closed();
                // The worker is gone. Requests of earlier batches still open
                // (decoupled, answered by user threads) fail here; the
                // running batch's fail in execute, with the exit status.
                let running = reader_running.load(AtomicOrdering::Acquire);
                let orphans: Vec<OpenRequest> = {
                    let mut open = reader_open.lock().unwrap_or_else(|p| p.into_inner());
                    let ids: Vec<usize> = open
                        .iter()
                        .filter(|(_, o)| o.batch != running)
                        .map(|(&id, _)| id)
                        .collect();
                    ids.into_iter().filter_map(|id| open.remove(&id)).collect()
                };
                let err = Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{who}: the worker process (pid {pid}) ended before this request's final response"
                    ),
                );
                for mut o in orphans {
                    o.responder.send_error(&err);
                }
            })
            .map_err(what)?;
        let (weak_open, weak_socket) = (Arc::downgrade(&open), Arc::downgrade(&socket));
        std::thread::Builder::new()
            .name(format!("rustpy-cancel-{pid}"))
            .spawn(move || watch_cancellations(weak_open, weak_socket))
            .map_err(what)?;

        let mut worker = Worker {
            child,
            pid,
            socket,
            frames,
            input,
            open,
            running,
            pinned: Vec::new(),
            batch: 0,
            label: label(cfg),
            input_limit: cfg
                .input_shm_limit_mb
                .map(|mb| usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)),
            ready,
        };
        if worker.send(first).is_err() {
            let cause = worker.reap();
            return Err(Error::internal(format!(
                "{} ({}: the worker process {cause} while starting)",
                unhealthy(cfg),
                label(cfg)
            )));
        }
        match worker.frames.recv() {
            Ok(frame) => Ok((worker, frame)),
            Err(_) => {
                let cause = worker.reap();
                Err(Error::internal(format!(
                    "{} ({}: the worker process (pid {pid}) {cause} while starting ({doing}))",
                    unhealthy(cfg),
                    label(cfg)
                )))
            }
        }
    }

    fn send(&mut self, msg: &ToWorker) -> std::io::Result<()> {
        write_to(&self.socket, msg)
    }

    /// Waits for the (dead or dying) process and describes how it ended.
    /// One that is still running after a grace period (the channel broke
    /// but the process did not die) is killed: waiting for it would hang.
    fn reap(&mut self) -> String {
        let deadline = Instant::now() + REAP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe_exit(status),
                Ok(None) if Instant::now() >= deadline => {
                    sys::kill(self.pid);
                    return match self.child.wait() {
                        Ok(status) => format!(
                            "stopped answering (its control channel broke) and was killed ({})",
                            describe_exit(status)
                        ),
                        Err(e) => format!("ended (cannot read its status: {e})"),
                    };
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return format!("ended (cannot read its status: {e})"),
            }
        }
    }

    fn kill(&mut self) -> String {
        sys::kill(self.pid);
        self.reap()
    }

    /// Asks the worker to run `finalize` and exit; kills it after a grace period.
    fn shutdown(&mut self) {
        let _ = self.send(&ToWorker::Shutdown);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// The backend's sending half of a worker's control socket (the execute
/// thread and the threads answering server calls share it).
type Writer = Arc<Mutex<UnixStream>>;

fn write_to(w: &Writer, msg: &ToWorker) -> std::io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    write_frame(&mut *s, msg)?;
    s.flush()
}

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

/// The backend's side of a worker's BLS regions (isolation/bls.rs): it reads
/// request inputs from `input` and writes response outputs into `output`.
struct BlsRegions {
    input: Mutex<BlsRegion>,
    output: Mutex<BlsRegion>,
}

/// A BLS response for the worker: large outputs go into the BLS output
/// region (the worker releases their range once it copied them out).
fn bls_response_to_wire(r: BlsResponse, bls: &BlsRegions) -> WireBlsResponse {
    let mut error = r.error.as_ref().map(error_to_wire);
    let (mut outputs, mut shared) = (Vec::new(), None);
    if wants_shared(r.outputs.iter().map(|t| t.data.as_slice())) {
        let tensors: Vec<_> = r.outputs.iter().collect();
        let mut out = bls.output.lock().unwrap_or_else(|p| p.into_inner());
        match out.put(&tensors) {
            Ok(s) => shared = Some(s),
            Err(e) => {
                error = error.or(Some(error_to_wire(&Error::internal(format!(
                    "rustpy: cannot place the BLS response's outputs in shared memory: {e}"
                )))))
            }
        }
    } else {
        outputs = r.outputs.iter().map(tensor_to_wire).collect();
    }
    WireBlsResponse {
        outputs,
        error,
        parameters: r
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.into()))
            .collect(),
        is_final: r.is_final,
        shared,
    }
}

/// The cancel handles of a worker's BLS requests in flight, by stream.
type BlsCancels = Arc<Mutex<HashMap<u64, BlsCancel>>>;

/// Makes a worker's server call on the server API (Triton's, in the
/// backend). Metric calls are answered inline (they are quick); BLS and model
/// control on their own threads, as they wait on other models.
fn serve_call(
    call: u64,
    op: ServerOp,
    w: &Writer,
    metrics: &mut MetricTable,
    bls: &Arc<BlsRegions>,
    cancels: &BlsCancels,
) {
    let api = match server_api() {
        Ok(api) => api,
        Err(e) => return reply(w, call, Err(e)),
    };
    match op {
        ServerOp::CancelInfer { stream } => {
            let cancelled = match cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&stream)
            {
                Some(cancel) => cancel(),
                None => Ok(()), // completed: nothing to cancel
            };
            reply(w, call, cancelled.map(|()| WireValue::Unit))
        }
        ServerOp::Infer {
            stream,
            request: req,
        } => {
            let w = w.clone();
            let bls = bls.clone();
            let cancels = cancels.clone();
            std::thread::spawn(move || {
                let fail = |e: Error| {
                    let _ = write_to(
                        &w,
                        &ToWorker::BlsResponse {
                            call: stream,
                            response: bls_response_to_wire(
                                BlsResponse {
                                    error: Some(e),
                                    is_final: true,
                                    ..Default::default()
                                },
                                &bls,
                            ),
                        },
                    );
                };
                // Large inputs are in the worker's BLS input region: copied
                // out here, before the Reply (which frees their range).
                let inputs = match &req.shared {
                    Some(shared) => bls
                        .input
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .read(shared),
                    None => req
                        .inputs
                        .into_iter()
                        .map(tensor_from_wire)
                        .collect::<Result<Vec<_>>>(),
                };
                let inputs = match inputs {
                    Ok(i) => i,
                    Err(e) => return reply(&w, call, Err(e)),
                };
                let request = BlsRequest {
                    model_name: req.model_name,
                    model_version: req.model_version,
                    request_id: req.request_id,
                    correlation_id: req.correlation_id.into(),
                    flags: req.flags,
                    timeout_us: req.timeout_us,
                    inputs,
                    requested_outputs: req.requested_outputs,
                    parameters: req
                        .parameters
                        .into_iter()
                        .map(|(k, v)| (k, v.into()))
                        .collect(),
                };
                let (tx, rx) = crossbeam::channel::unbounded();
                match api.infer(request, tx) {
                    Ok(cancel) => {
                        // Before the Reply: the worker may cancel once it has it.
                        cancels
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(stream, cancel);
                    }
                    Err(e) => return reply(&w, call, Err(e)),
                };
                let forget = || {
                    cancels
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&stream);
                };
                reply(&w, call, Ok(WireValue::Unit));
                for response in rx {
                    let is_final = response.is_final;
                    let frame = ToWorker::BlsResponse {
                        call: stream,
                        response: bls_response_to_wire(response, &bls),
                    };
                    if write_to(&w, &frame).is_err() || is_final {
                        forget();
                        return;
                    }
                }
                forget();
                fail(Error::internal(
                    "the BLS request ended without a final response",
                ));
            });
        }
        ServerOp::LoadModel {
            name,
            config_json,
            files,
        } => {
            let w = w.clone();
            std::thread::spawn(move || {
                let r = api.load_model(&name, &config_json, &files);
                reply(&w, call, r.map(|()| WireValue::Unit));
            });
        }
        ServerOp::UnloadModel {
            name,
            unload_dependents,
        } => {
            let w = w.clone();
            std::thread::spawn(move || {
                let r = api.unload_model(&name, unload_dependents);
                reply(&w, call, r.map(|()| WireValue::Unit));
            });
        }
        ServerOp::IsModelReady { name, version } => reply(
            w,
            call,
            api.is_model_ready(&name, version).map(WireValue::Bool),
        ),
        ServerOp::IsModelDecoupled { name, version } => reply(
            w,
            call,
            api.is_model_decoupled(&name, version).map(WireValue::Bool),
        ),
        ServerOp::MetricFamily {
            name,
            description,
            kind,
        } => {
            let kind = MetricKind::from_code(kind).unwrap_or(MetricKind::Histogram);
            let r = api.metric_family(&name, &description, kind).map(|f| {
                metrics.next += 1;
                metrics.families.insert(metrics.next, f);
                WireValue::Id(metrics.next)
            });
            reply(w, call, r)
        }
        ServerOp::Metric {
            family,
            labels,
            buckets,
        } => {
            let r = match metrics.families.get(&family) {
                Some(f) => f.metric(&labels, buckets.as_deref()).map(|m| {
                    metrics.next += 1;
                    metrics.metrics.insert(metrics.next, m);
                    WireValue::Id(metrics.next)
                }),
                None => Err(Error::internal("unknown metric family")),
            };
            reply(w, call, r)
        }
        ServerOp::MetricOp { metric, op, value } => {
            let r = match metrics.metrics.get(&metric) {
                Some(m) => match op {
                    0 => m.increment(value).map(|()| WireValue::Unit),
                    1 => m.set(value).map(|()| WireValue::Unit),
                    2 => m.observe(value).map(|()| WireValue::Unit),
                    _ => m.value().map(WireValue::F64),
                },
                None => Err(Error::internal("unknown metric")),
            };
            reply(w, call, r)
        }
    }
}

/// "1.5 MiB"
fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Upstream's words for an instance whose process died (operators and
/// upstream's QA grep them): "Stub process '<instance>' is not healthy."
fn unhealthy(cfg: &WorkerConfig) -> String {
    format!("Stub process '{}' is not healthy.", cfg.instance.name)
}

fn label(cfg: &WorkerConfig) -> String {
    format!(
        "model '{}' instance '{}'",
        cfg.model_name, cfg.instance.name
    )
}

/// Why a running batch lost its worker.
enum Lost {
    Died(String),
    TimedOut(Duration),
}

struct State {
    worker: Option<Worker>,
    /// Consecutive failures (a crash or hang, then failed starts) since the
    /// last successful start or batch; drives the restart backoff.
    failures: u32,
    last_cause: String,
    next_start: Instant,
}

/// A model instance whose Python runs in a `rustpy-worker` process.
pub struct WorkerInstance {
    cfg: WorkerConfig,
    state: Mutex<State>,
    /// The current worker's [`ReadyLink`] (replaced when it restarts).
    ready: Arc<Mutex<Arc<ReadyLink>>>,
}

fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1 << (failures - 2).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

impl WorkerInstance {
    /// Starts the worker; an error here (initialize raised, the worker
    /// crashed) fails the instance's load with that cause.
    pub fn new(cfg: WorkerConfig) -> Result<WorkerInstance> {
        let worker = Worker::start(&cfg)?;
        emit_log(
            LogLevel::Info,
            "rustpy",
            0,
            &format!(
                "rustpy: {} runs in worker process {}",
                label(&cfg),
                worker.pid
            ),
        );
        let ready = Arc::new(Mutex::new(worker.ready.clone()));
        Ok(WorkerInstance {
            cfg,
            ready,
            state: Mutex::new(State {
                worker: Some(worker),
                failures: 0,
                last_cause: String::new(),
                next_start: Instant::now(),
            }),
        })
    }

    pub fn model_name(&self) -> &str {
        &self.cfg.model_name
    }

    /// Whether the instance's worker process is alive (a dead one is
    /// replaced by the next batch). Never waits for a running batch.
    pub fn health(&self) -> Box<dyn Fn() -> bool + Send + Sync> {
        let ready = self.ready.clone();
        Box::new(move || {
            ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .alive
                .load(AtomicOrdering::Acquire)
        })
    }

    /// The call of the model's `is_ready()` in the worker, if the model
    /// defines one (it runs there on a thread of its own; while a batch
    /// keeps the worker from reading its socket, it waits for that batch).
    pub fn ready_call(&self) -> Option<crate::readiness::ReadyCall> {
        let ready = self.ready.clone();
        let has = ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_is_ready
            .load(AtomicOrdering::Acquire);
        let instance = self.cfg.instance.name.clone();
        has.then(|| -> crate::readiness::ReadyCall {
            Arc::new(move || {
                let link = ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if !link.has_is_ready.load(AtomicOrdering::Acquire) {
                    return Ok(true);
                }
                link.ask(&instance)
            })
        })
    }

    /// The worker's pid, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.lock().worker.as_ref().map(|w| w.pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the worker (runs the user's `finalize` there).
    pub fn finalize(&self) {
        if let Some(mut w) = self.lock().worker.take() {
            w.shutdown();
        }
    }

    /// Records a lost worker and restarts it now when the backoff allows.
    fn on_failure(&self, state: &mut State, cause: String) {
        state.failures += 1;
        state.last_cause = cause;
        let delay = backoff(state.failures);
        state.next_start = Instant::now() + delay;
        if delay.is_zero() {
            self.try_start(state);
        } else {
            emit_log(
                LogLevel::Warn,
                "rustpy",
                0,
                &format!(
                    "rustpy: {}: {} failures in a row; next worker start in {} ms",
                    label(&self.cfg),
                    state.failures,
                    delay.as_millis()
                ),
            );
        }
    }

    fn try_start(&self, state: &mut State) {
        match Worker::start(&self.cfg) {
            Ok(w) => {
                emit_log(
                    LogLevel::Warn,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: restarted its worker process (pid {}) after: {}",
                        label(&self.cfg),
                        w.pid,
                        state.last_cause
                    ),
                );
                *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = w.ready.clone();
                state.worker = Some(w);
                // Backoff is for workers that cannot start; a worker that
                // started and later crashed is restarted at once.
                state.failures = 0;
            }
            Err(e) => {
                state.failures += 1;
                state.last_cause = format!("restart failed: {}", e.message);
                let delay = backoff(state.failures).max(Duration::from_millis(250));
                state.next_start = Instant::now() + delay;
                emit_log(
                    LogLevel::Error,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: cannot restart its worker process ({} failures in a row, next attempt in {} ms): {}",
                        label(&self.cfg),
                        state.failures,
                        delay.as_millis(),
                        e.message
                    ),
                );
            }
        }
    }

    /// Executes one batch in the worker; every request gets a final answer
    /// (an unreadable one, `Err`, its error, here: only the others go to the
    /// worker).
    pub fn execute<R: Responder + 'static>(
        &self,
        requests: &[crate::error::Result<InferRequest<'_>>],
        responders: Vec<R>,
    ) -> ExecReport {
        let n = requests.len();
        let mut readable = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut kept = Vec::with_capacity(n);
        for (i, (req, mut responder)) in requests.iter().zip(responders).enumerate() {
            match req {
                Ok(req) => {
                    readable.push(req);
                    positions.push(i);
                    kept.push(responder);
                }
                Err(e) => responder.send_error(e),
            }
        }
        let inner = self.execute_readable(&readable, kept);
        let mut report = ExecReport {
            calls: inner.calls,
            compute_start: inner.compute_start,
            compute_end: inner.compute_end,
            ..ExecReport::new(n)
        };
        for (k, &i) in positions.iter().enumerate() {
            report.outcomes[i] = inner.outcomes[k];
            report.rows[i] = inner.rows[k];
        }
        report
    }

    fn execute_readable<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        assert_eq!(
            requests.len(),
            responders.len(),
            "one responder per request"
        );
        let mut report = ExecReport::new(requests.len());
        let mut state = self.lock();
        // A worker that died while idle (a user thread called os._exit, an
        // OOM kill) is reaped and replaced before this batch goes to it.
        if let Some(w) = state.worker.as_mut() {
            if let Ok(Some(status)) = w.child.try_wait() {
                let what = format!("{} while idle", describe_exit(status));
                emit_log(
                    LogLevel::Error,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: the worker process (pid {}) {what}",
                        label(&self.cfg),
                        w.pid
                    ),
                );
                state.worker = None;
                self.on_failure(&mut state, format!("worker {what}"));
            }
        }
        if state.worker.is_none() && Instant::now() >= state.next_start {
            self.try_start(&mut state);
        }
        let Some(worker) = state.worker.as_mut() else {
            let wait = state.next_start.saturating_duration_since(Instant::now());
            let err = Error::new(
                ErrorCode::Unavailable,
                format!(
                    "{}: the worker process is not running ({}); next start attempt in {} ms",
                    label(&self.cfg),
                    state.last_cause,
                    wait.as_millis()
                ),
            );
            for r in &mut responders {
                r.send_error(&err);
            }
            return report;
        };
        let sent_at = Instant::now();
        let outcome = run_batch(
            worker,
            self.cfg.execute_timeout,
            requests,
            responders,
            &mut report,
        );
        match outcome {
            Ok(compute) => {
                state.failures = 0;
                if let Some((a, b)) = compute {
                    report.compute_start = Some(sent_at + Duration::from_nanos(a));
                    report.compute_end = Some(sent_at + Duration::from_nanos(b));
                }
            }
            Err(lost) => {
                let mut worker = state.worker.take().expect("worker present");
                let (message, cause) = match lost {
                    Lost::Died(protocol) => {
                        let cause = worker.reap();
                        let extra = if protocol.is_empty() {
                            String::new()
                        } else {
                            format!(" ({protocol})")
                        };
                        (
                            format!(
                                "{}: the worker process (pid {}) {cause} while executing this request{extra}; it is being restarted{}",
                                label(&self.cfg),
                                worker.pid,
                                match self.cfg.memory_note() {
                                    n if n.is_empty() => n,
                                    n => format!(" (its memory limit: {n})"),
                                }
                            ),
                            format!("worker {cause}"),
                        )
                    }
                    Lost::TimedOut(limit) => {
                        worker.kill();
                        (
                            format!(
                                "{}: execution exceeded rustpy.execute_timeout_ms ({} ms); the worker process (pid {}) was killed and is being restarted",
                                label(&self.cfg),
                                limit.as_millis(),
                                worker.pid
                            ),
                            format!("execute timed out after {} ms", limit.as_millis()),
                        )
                    }
                };
                let err = Error::new(ErrorCode::Unavailable, message.clone());
                // This batch's requests still open fail with the cause (the
                // reader thread fails those of earlier batches).
                let batch = worker.batch;
                let failed: Vec<(usize, OpenRequest)> = {
                    let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
                    let ids: Vec<usize> = open
                        .iter()
                        .filter(|(_, o)| o.batch == batch)
                        .map(|(&id, _)| id)
                        .collect();
                    ids.into_iter()
                        .filter_map(|id| open.remove(&id).map(|o| (id, o)))
                        .collect()
                };
                worker.running.store(0, AtomicOrdering::Release);
                for (id, mut o) in failed {
                    o.responder.send_error(&err);
                    if let Some(o) = report.outcomes.get_mut(id & ((1 << REQUEST_BITS) - 1)) {
                        *o = Outcome::Failed;
                    }
                }
                emit_log(LogLevel::Error, "rustpy", 0, &format!("rustpy: {message}"));
                self.on_failure(&mut state, cause);
            }
        }
        report
    }
}

impl Drop for WorkerInstance {
    fn drop(&mut self) {
        self.finalize();
    }
}

/// Gathers `requests` into the input region, runs them in the worker and
/// relays every response until all requests are final and the worker said
/// Done. Returns the compute window (ns after sending) on success.
fn run_batch<R: Responder + 'static>(
    worker: &mut Worker,
    timeout: Option<Duration>,
    requests: &[&InferRequest<'_>],
    responders: Vec<R>,
    report: &mut ExecReport,
) -> std::result::Result<Option<(u64, u64)>, Lost> {
    worker.batch += 1;
    let batch = worker.batch;
    // The reader thread answers from now on, during the batch and after it.
    {
        let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in responders.into_iter().enumerate() {
            open.insert(
                request_id(batch, i),
                OpenRequest {
                    responder: Box::new(r),
                    batch,
                    cancel_sent: false,
                },
            );
        }
    }
    // Lay the batch out in the input region, input by input: every
    // request's tensor of one input back to back, in batch order, so the
    // worker's gather of a batch is a view of one range (no copy). Each
    // input's run starts aligned. The batch goes where no pinned range is,
    // growing the region first if needed.
    let mut names: Vec<&str> = Vec::new();
    for r in requests {
        for t in &r.inputs {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
    }
    let mut needed = 0usize;
    for name in &names {
        needed = needed.next_multiple_of(ALIGN);
        for r in requests {
            needed += r
                .inputs
                .iter()
                .filter(|t| t.name == *name)
                .map(|t| t.byte_size())
                .sum::<usize>();
        }
    }
    let base = worker.place(needed);
    let grown = match worker.input_limit {
        Some(limit) if base + needed > limit => Err(Error::invalid_arg(format!(
            "{}: this batch's inputs need {} of shared memory{}, more than {INPUT_SHM_LIMIT_KEY} = {} MiB allows; send smaller requests or batches, or raise the limit",
            worker.label,
            mib(needed),
            if base > 0 {
                format!(" after {} still viewed by Python", mib(base))
            } else {
                String::new()
            },
            limit >> 20
        ))),
        _ => worker.input.grow(base + needed).map_err(|e| {
            Error::new(
                ErrorCode::Unavailable,
                format!(
                    "{}: cannot grow the input shared memory to {}: {e}",
                    worker.label,
                    mib(base + needed)
                ),
            )
        }),
    };
    if let Err(err) = grown {
        // Nothing was sent: the worker, alive and waiting for its next
        // frame, keeps serving. Only this batch's requests fail.
        let failed: Vec<OpenRequest> = {
            let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
            (0..requests.len())
                .filter_map(|i| open.remove(&request_id(batch, i)))
                .collect()
        };
        for mut o in failed {
            o.responder.send_error(&err);
        }
        emit_log(
            LogLevel::Error,
            "rustpy",
            0,
            &format!("rustpy: {}", err.message),
        );
        return Ok(None);
    }
    let mut placed: Vec<Vec<Option<WireTensor>>> = requests
        .iter()
        .map(|r| vec![None; r.inputs.len()])
        .collect();
    let mut offset = base;
    for name in &names {
        offset = offset.next_multiple_of(ALIGN);
        for (r, slots) in requests.iter().zip(placed.iter_mut()) {
            for (t, slot) in r.inputs.iter().zip(slots.iter_mut()) {
                if t.name != *name || slot.is_some() {
                    continue;
                }
                let start = offset;
                for chunk in &t.chunks {
                    worker.input.write(offset, chunk);
                    offset += chunk.len();
                }
                *slot = Some(WireTensor {
                    name: t.name.clone(),
                    dtype: t.dtype.name().to_string(),
                    shape: t.shape.clone(),
                    offset: start,
                    len: offset - start,
                });
            }
        }
    }
    let mut wire = Vec::with_capacity(requests.len());
    for (r, slots) in requests.iter().zip(placed) {
        let inputs: Vec<WireTensor> = slots.into_iter().flatten().collect();
        wire.push(WireRequest {
            id: r.id.clone(),
            correlation_id: (&r.correlation_id).into(),
            flags: r.flags,
            timeout_us: r.timeout_us,
            inputs,
            requested_outputs: r.requested_outputs.clone(),
            parameters: r
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
        });
    }
    worker.running.store(batch, AtomicOrdering::Release);
    let msg = ToWorker::Execute {
        input_len: worker.input.len(),
        requests: wire,
        batch,
    };
    if worker.send(&msg).is_err() {
        return Err(Lost::Died(String::new()));
    }

    // Wait for Done: every response before it was delivered by the reader
    // thread (frames are handled in order); a decoupled request may stay
    // open after it and is answered when the worker sends its responses.
    let deadline = timeout.map(|t| (t, Instant::now() + t));
    let n = requests.len();
    loop {
        let frame = match deadline {
            Some((limit, at)) => {
                match worker
                    .frames
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => return Err(Lost::TimedOut(limit)),
                    Err(RecvTimeoutError::Disconnected) => return Err(Lost::Died(String::new())),
                }
            }
            None => match worker.frames.recv() {
                Ok(f) => f,
                Err(_) => return Err(Lost::Died(String::new())),
            },
        };
        if let FromWorker::Done {
            ok,
            rows,
            calls,
            compute_ns,
            pinned,
            released,
            rescheduled,
        } = frame
        {
            worker.running.store(0, AtomicOrdering::Release);
            worker.pinned.retain(|(b, _, _)| !released.contains(b));
            if pinned && needed > 0 {
                worker.pinned.push((batch, base, base + needed));
            }
            if ok.len() == n {
                report.outcomes = ok
                    .into_iter()
                    .map(|ok| {
                        if ok {
                            Outcome::Answered
                        } else {
                            Outcome::Failed
                        }
                    })
                    .collect();
            }
            if rows.len() == n {
                report.rows = rows;
            }
            // Rescheduled requests go back to Triton unanswered (released
            // with RESCHEDULE by the backend, as in-process): their
            // responders close without a response.
            for i in rescheduled.into_iter().filter(|&i| i < n) {
                let taken = worker
                    .open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&request_id(batch, i));
                if let Some(mut o) = taken {
                    o.responder.detach();
                    report.outcomes[i] = Outcome::Rescheduled;
                }
            }
            report.calls = calls;
            return Ok(compute_ns);
        }
    }
}
