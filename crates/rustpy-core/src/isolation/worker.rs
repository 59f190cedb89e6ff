//! The worker side: what `rustpy-worker` runs. It embeds the same interpreter
//! and the same executors as the in-process backend ([`LoadedModel`],
//! [`ModelInstance`]); only the requests come from shared memory and the
//! responses go back over the control channel.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::response::{
    send, send_done, worker_responder, Cancelled, Channel, Shared, Taken, WorkerResponder,
    ALIAS_WAIT_MIN,
};
use super::rpc::{RemoteServer, Rpc, WorkerBls};
use super::sys::{
    inherited_fd, inherited_stream, readable_now, wait_readable, Event, Mapping, Shm,
};
use super::wire::{
    error_to_wire, read_frame, AutoComplete, Done, Execute, FromWorker, Init, ToWorker,
};
use crate::engine::Responder;
use crate::error::{Error, Result};
use crate::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use crate::request::InferRequest;
use crate::server::set_server_api;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Somebody waits for a frame from the backend: while a batch runs, the
/// intake thread starts reading.
pub(super) fn need_frames() {
    if let Some(intake) = INTAKE.get() {
        intake.wake_reader();
    }
}

/// A cancellation check while a batch runs: handles the frames that have
/// arrived (a Cancel among them) without waking another thread.
pub(super) fn read_arrived() {
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
            other => return Some(other),
        }
        None
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

pub(super) fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
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
        Some(ToWorker::Init(Init {
            config_json,
            model_dir,
            version,
            instance,
        })) => (config_json, model_dir, version, instance),
        Some(ToWorker::AutoComplete(AutoComplete {
            config_json,
            model_dir,
            version,
        })) => {
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
        let info = InstanceInfo::from(instance);
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
            send(&channel, &FromWorker::Ready);
            i
        }
        Err(e) => {
            let (code, message) = error_to_wire(&e);
            send(&channel, &FromWorker::InitFailed { code, message });
            return Ok(());
        }
    };

    // Until the backend says Shutdown or closes the channel (unload, or it died).
    while let Some(msg) = intake.next() {
        match msg {
            ToWorker::Execute(Execute {
                input_len,
                requests,
                batch,
            }) => {
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
                        let released = std::mem::take(
                            &mut *released.lock().unwrap_or_else(|p| p.into_inner()),
                        );
                        send_done(
                            &channel,
                            FromWorker::Done(Done::failed(requests.len(), released)),
                        );
                        continue;
                    }
                };
                let input = &region.get().map;
                channel.lock().unwrap_or_else(|p| p.into_inner()).input_view =
                    Some((input.as_ptr() as usize, input.len()));
                let region_bytes = input.whole();
                let core: Vec<Result<InferRequest>> = requests
                    .into_iter()
                    .map(|r| {
                        r.to_request(region_bytes)
                            .map_err(|e| Error::internal(format!("rustpy-worker: {e}")))
                    })
                    .collect();
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
                intake.begin(false);
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
                let released =
                    std::mem::take(&mut *released.lock().unwrap_or_else(|p| p.into_inner()));
                send_done(
                    &channel,
                    FromWorker::Done(Done::after(report, start, pinned, released)),
                );
                intake.end();
            }
            ToWorker::Shutdown => break,
            ToWorker::Init(_) | ToWorker::AutoComplete(_) => {
                return Err(Error::internal("rustpy-worker: Init received twice"));
            }
            ToWorker::Reply { .. }
            | ToWorker::BlsResponse { .. }
            | ToWorker::Cancel { .. }
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
