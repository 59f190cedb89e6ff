//! The response path: the worker encodes each response (outputs in the
//! output region, or inline once its batch is over) and the backend's reader
//! thread decodes it and delivers it to the request's responder. Also the
//! backend's cancellation watch, which tells the worker about requests the
//! client gave up on.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sys::Shm;
use super::transport::{write_to, Writer};
use super::wire::{
    error_from_wire, error_to_wire, request_id, write_frame, FromWorker, InlineResponse,
    OutputPlacement, Response, ToWorker,
};
use super::worker::{need_frames, read_arrived};
use crate::engine::{OutputSlice, Responder, ResponseSink, ResponseStream};
use crate::error::{Error, Result};

// ---- The backend's half: decode and deliver. ----

/// A request whose final response has not gone out yet. The worker's
/// reader thread delivers its responses as they come, during its batch and,
/// for a decoupled model, after `execute` returned (the instance has taken
/// other batches meanwhile).
pub(super) struct OpenRequest {
    pub(super) responder: Box<dyn Responder>,
    pub(super) batch: u64,
    /// The worker was told the client cancelled it.
    pub(super) cancel_sent: bool,
}

pub(super) type Open = Arc<Mutex<HashMap<usize, OpenRequest>>>;

/// How often open requests are checked for cancellation by the client.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Delivers one response frame to its open request; a final one closes it.
fn deliver(open: &Open, request: usize, outputs: &[OutputSlice<'_>], is_final: bool) {
    let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
    let Some(o) = open.get_mut(&request) else {
        return; // already answered (e.g. failed as cancelled)
    };
    let close = match o.responder.send(outputs, is_final) {
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
pub(super) fn handle_response(
    frame: &FromWorker,
    open: &Open,
    output: &mut Shm,
    input: &mut Shm,
    replies: &Writer,
) -> bool {
    match frame {
        FromWorker::Response(response) => {
            // Outputs that are views of the batch's inputs are copied from
            // the input region (this mapping of it is the reader thread's
            // own; the execute thread writes the next batch only after this
            // batch's Done, which comes after this frame).
            let mapped = output
                .ensure(response.output_len)
                .map_err(|e| format!("output shared memory: {e}"))
                .and(
                    input
                        .ensure(response.input_end())
                        .map_err(|e| format!("input shared memory: {e}")),
                );
            let resolved = mapped.and_then(|()| {
                response
                    .resolve(output.whole(), input.whole())
                    .map_err(|e| e.to_string())
            });
            match resolved {
                Ok(slices) => deliver(open, response.request, &slices, response.is_final),
                Err(why) => fail_open(
                    open,
                    response.request,
                    &Error::internal(format!("rustpy: {why}")),
                ),
            }
            if let Some(token) = response.taken {
                let _ = write_to(replies, &ToWorker::Taken { token });
            }
            true
        }
        FromWorker::InlineResponse(inline) => {
            match inline.resolve() {
                Ok(slices) => deliver(open, inline.request, &slices, inline.is_final),
                Err(e) => fail_open(
                    open,
                    inline.request,
                    &Error::internal(format!("rustpy: {e}")),
                ),
            }
            true
        }
        FromWorker::Error {
            request,
            code,
            message,
            is_final,
        } => {
            let err = error_from_wire((*code, message.clone()));
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
pub(super) fn watch_cancellations(
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

// ---- The worker's half: encode and send. ----

/// The sending half: the control socket and the output region, shared by the
/// main thread and any user thread that answers a decoupled request.
pub(super) struct Channel {
    pub(super) socket: BufWriter<UnixStream>,
    pub(super) output: Shm,
    /// Bytes of the output region used by the current batch.
    pub(super) used: usize,
    /// The batch running now (its responses may use the output region),
    /// none between its Done and the next Execute.
    pub(super) running: Option<u64>,
    /// Address and length of the running batch's input mapping: an output
    /// lying inside it is a view of the inputs and is sent by its offset
    /// there, not copied (FromWorker::Response's `from_input`).
    pub(super) input_view: Option<(usize, usize)>,
    /// Outputs in the input region at least this large are not copied.
    pub(super) alias_min: usize,
    /// Whether a response with such outputs waits until the backend has
    /// copied them (pb_utils inputs are writable; batched ones are not).
    pub(super) alias_wait: bool,
    /// The last `taken` token sent.
    pub(super) token: u64,
    pub(super) taken: Arc<Taken>,
    /// While a batch of a non-decoupled model runs: the thread running it,
    /// whose responses leave with the batch's Done (one write, one wake-up
    /// of the backend) or with the next frame that is flushed.
    pub(super) hold_for: Option<std::thread::ThreadId>,
}

/// The backend's acknowledgements (ToWorker::Taken) of responses whose
/// outputs it copied out of the input region.
#[derive(Default)]
pub(super) struct Taken {
    /// Tokens acknowledged and not yet claimed; true once the backend is gone.
    state: Mutex<(HashSet<u64>, bool)>,
    cv: std::sync::Condvar,
}

impl Taken {
    pub(super) fn mark(&self, token: u64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .insert(token);
        self.cv.notify_all();
    }

    pub(super) fn close(&self) {
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
pub(super) const ALIAS_WAIT_MIN: usize = 64 * 1024;

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

pub(super) type Shared = Arc<Mutex<Channel>>;

pub(super) fn send(channel: &Shared, msg: &FromWorker) {
    let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
    if ch.send(msg).is_err() {
        // The backend is gone: nobody is left to answer.
        std::process::exit(0);
    }
}

/// Sends a batch's Done; responses sent after it (from user threads) travel
/// inline, so the output region is free for the next batch.
pub(super) fn send_done(channel: &Shared, done: FromWorker) {
    let mut ch = channel.lock().unwrap_or_else(|p| p.into_inner());
    ch.running = None;
    ch.input_view = None;
    ch.hold_for = None;
    if ch.send(&done).is_err() {
        std::process::exit(0);
    }
}

/// Requests the backend says the client cancelled (ToWorker::Cancel).
pub(super) type Cancelled = Arc<Mutex<HashSet<usize>>>;

/// Answers request `index` of a batch through the backend, during or after
/// that batch's execution. Whether the request is still open is the
/// `ResponseStream`'s business (engine.rs), as in-process.
pub(super) type WorkerResponder = ResponseStream<WorkerSink>;

pub(super) fn worker_responder(
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
pub(super) struct WorkerSink {
    index: usize,
    batch: u64,
    channel: Shared,
    cancelled: Cancelled,
}

impl ResponseSink for WorkerSink {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if ch.running != Some(self.batch) {
            // Its batch is over: the output region belongs to the next one.
            let msg =
                FromWorker::InlineResponse(InlineResponse::new(self.index, outputs, is_final));
            if ch.send(&msg).is_err() {
                std::process::exit(0);
            }
            return Ok(());
        }
        let placed = OutputPlacement::plan(outputs, ch.used, ch.input_view, ch.alias_min);
        ch.output
            .grow(placed.end)
            .map_err(|e| Error::internal(format!("cannot grow the output shared memory: {e}")))?;
        for (offset, bytes) in placed.copies(outputs) {
            ch.output.write(offset, bytes);
        }
        ch.used = placed.end;
        let taken = if ch.alias_wait && !placed.from_input.is_empty() {
            ch.token += 1;
            Some(ch.token)
        } else {
            None
        };
        let msg = FromWorker::Response(Response {
            request: self.index,
            outputs: placed.tensors,
            output_len: ch.output.len(),
            is_final,
            from_input: placed.from_input,
            taken,
        });
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
