//! Who reads the worker's control socket. The main thread reads it between
//! batches, so an Execute frame wakes the thread that runs it and a batch
//! costs no thread hand-off; while user code runs, the intake thread reads
//! it once somebody waits for a frame (a server call's reply, BLS
//! responses, a Taken) and `is_cancelled()` handles what has arrived
//! without waking anyone.

use std::collections::VecDeque;
use std::io::BufReader;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::serve::io_err;
use rustpy_core::error::{Error, Result};
use rustpy_core::isolation::sys::{readable_now, wait_readable, Event};
use rustpy_core::isolation::wire::{read_frame, ready_to_wire, FromWorker, ToWorker};
use rustpy_core::isolation::{FrameReader, Rpc, WorkerLink, WorkerResponses};
use rustpy_core::readiness::ReadyCall;

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
pub struct Intake {
    reader: Mutex<BufReader<UnixStream>>,
    fd: RawFd,
    lent: Mutex<Lent>,
    turn: Condvar,
    back: Event,
    /// Frames for the main loop the intake thread read (an Execute that came
    /// before the main thread took the socket back).
    forwarded: Mutex<VecDeque<ToWorker>>,
    rpc: Arc<Rpc>,
    /// Where Taken and Cancel frames go.
    responses: Arc<WorkerResponses>,
    /// Where `is_ready()` answers go.
    link: Arc<WorkerLink>,
    /// The model's `is_ready()` (None: it has none), set once the instance
    /// is up; an IsReady before that is answered "ready" (it cannot come:
    /// the backend asks only after Ready).
    ready_call: OnceLock<Option<ReadyCall>>,
}

/// Library code waiting for the backend (a server call, a response waiting
/// for its Taken, `is_cancelled()`) reaches the intake through this.
impl FrameReader for Intake {
    fn need_frames(&self) {
        self.wake_reader();
    }

    fn read_arrived(&self) {
        Intake::read_arrived(self);
    }
}

impl Intake {
    /// Starts the intake thread on `socket`'s reading side; the main thread
    /// reads first.
    pub fn start(
        socket: UnixStream,
        rpc: Arc<Rpc>,
        responses: Arc<WorkerResponses>,
        link: Arc<WorkerLink>,
    ) -> Result<Arc<Intake>> {
        let intake = Arc::new(Intake {
            fd: socket.as_raw_fd(),
            reader: Mutex::new(BufReader::new(socket)),
            lent: Mutex::new(Lent::Main),
            turn: Condvar::new(),
            back: Event::new().map_err(io_err("eventfd"))?,
            forwarded: Mutex::new(VecDeque::new()),
            rpc,
            responses,
            link,
            ready_call: OnceLock::new(),
        });
        let lent = intake.clone();
        std::thread::Builder::new()
            .name("rustpy-worker-rx".into())
            .spawn(move || lent.serve_lent())
            .map_err(io_err("reader thread"))?;
        Ok(intake)
    }

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
            ToWorker::Reply { .. }
            | ToWorker::BlsResponse { .. }
            | ToWorker::BlsInputsRead { .. } => self.rpc.dispatch(msg),
            ToWorker::Taken { token } => self.responses.mark_taken(token),
            ToWorker::Cancel { request } => self.responses.cancel(request),
            ToWorker::IsReady { call } => self.answer_is_ready(call),
            other => return Some(other),
        }
        None
    }

    /// The instance is up: its model's `is_ready()`, if any.
    pub fn set_ready_call(&self, call: Option<ReadyCall>) {
        let _ = self.ready_call.set(call);
    }

    /// Runs the model's `is_ready()` on a thread of its own (the backend
    /// allows one call at a time and times it out; whoever reads the socket
    /// must not wait for user code) and sends its answer.
    fn answer_is_ready(&self, call: u64) {
        let link = self.link.clone();
        let ready_call = self.ready_call.get().cloned().flatten();
        let spawned = std::thread::Builder::new()
            .name("rustpy-is-ready".into())
            .spawn(move || {
                let result = ready_to_wire(ready_call.map_or(Ok(true), |f| f()));
                let _ = link.send(&FromWorker::ReadyAnswer { call, result });
            });
        if let Err(e) = spawned {
            let result = ready_to_wire(Err(Error::internal(format!(
                "rustpy-worker: cannot run is_ready(): {e}"
            ))));
            let _ = self.link.send(&FromWorker::ReadyAnswer { call, result });
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
    pub fn next(&self) -> Option<ToWorker> {
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
                    self.responses.close();
                    return None;
                }
            }
        }
    }

    /// Main thread, before user code runs: nobody reads until a frame is
    /// needed; at once if a server call is waiting already (a user thread's
    /// BLS stream outlives batches).
    pub fn begin(&self, lend: bool) {
        let mut lent = self.lock();
        if *lent == Lent::Main {
            if lend || self.rpc.has_pending() {
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
    pub fn end(&self) {
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
                self.responses.close();
            }
            *self.lock() = if closed { Lent::Closed } else { Lent::Main };
            self.turn.notify_all();
            if closed {
                return;
            }
        }
    }
}
