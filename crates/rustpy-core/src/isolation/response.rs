//! The response path: the worker encodes each response (outputs in the
//! output region, or inline once its batch is over) and the backend's reader
//! thread decodes it and delivers it to the request's responder. Also the
//! backend's cancellation watch, which tells the worker about requests the
//! client gave up on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::sys::{Mapping, Shm};
use super::transport::{write_to, Channel, WorkerLink, Writer};
use super::wire::{
    error_from_wire, error_to_wire, params_to_wire, request_id, request_index, Done, FromWorker,
    InlineResponse, OutputPlacement, Response, ToWorker, WrittenOutputs, REQUEST_BITS,
};
use crate::engine::{OutputSlice, Responder, ResponseParameters, ResponseSink, ResponseStream};
use crate::error::{Error, Result};
use crate::server::{OutputArena, PlacedBytes};
use rustpy_config::model::SHM_LIMIT_KEY;

// ---- The backend's half: decode and deliver. ----

/// How often open requests are checked for cancellation by the client.
const CANCEL_POLL: Duration = Duration::from_millis(20);

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

/// The requests of one worker whose final response has not gone out, by
/// wire id, shared by the execute thread (which opens them) and the
/// reader thread (which answers them).
#[derive(Default)]
pub(super) struct OpenRequests {
    map: Mutex<HashMap<usize, OpenRequest>>,
    /// The batch executing now (0: none). When the worker dies, its
    /// requests fail in the execute thread (with the exit status), those of
    /// earlier batches in the reader thread.
    running: AtomicU64,
}

impl OpenRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, OpenRequest>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Batch `batch`'s requests, answered by the reader thread from now on.
    pub(super) fn open_batch<R: Responder + 'static>(&self, batch: u64, responders: Vec<R>) {
        let mut open = self.lock();
        for (i, r) in responders.into_iter().enumerate() {
            let request = OpenRequest {
                responder: Box::new(r),
                batch,
                cancel_sent: false,
            };
            open.insert(request_id(batch, i), request);
        }
    }

    /// Fails every open request of `batch`; returns their indices in it.
    pub(super) fn fail_batch(&self, batch: u64, err: &Error) -> Vec<usize> {
        self.fail_where(err, |o| o.batch == batch)
    }

    /// Fails every open request of a batch other than the running one.
    fn fail_earlier(&self, err: &Error) -> Vec<usize> {
        let running = self.running.load(Ordering::Acquire);
        self.fail_where(err, |o| o.batch != running)
    }

    fn fail_where(&self, err: &Error, pick: impl Fn(&OpenRequest) -> bool) -> Vec<usize> {
        let failed: Vec<(usize, OpenRequest)> = {
            let mut open = self.lock();
            let ids: Vec<usize> = open
                .iter()
                .filter(|(_, o)| pick(o))
                .map(|(&id, _)| id)
                .collect();
            ids.into_iter()
                .filter_map(|id| open.remove(&id).map(|o| (id, o)))
                .collect()
        };
        // Responders are called outside the lock.
        failed
            .into_iter()
            .map(|(id, mut o)| {
                o.responder.send_error(err);
                request_index(id)
            })
            .collect()
    }

    /// Request `index` of `batch` goes back to Triton unanswered
    /// (rescheduled): its responder closes without a response. Returns
    /// whether it was still open.
    pub(super) fn detach(&self, batch: u64, index: usize) -> bool {
        let taken = self.lock().remove(&request_id(batch, index));
        taken.map(|mut o| o.responder.detach()).is_some()
    }

    pub(super) fn set_running(&self, batch: u64) {
        self.running.store(batch, Ordering::Release);
    }

    /// The running batch's Done arrived: no batch runs any more. False if
    /// none was running (a Done nobody asked for).
    pub(super) fn end_running(&self) -> bool {
        self.running.swap(0, Ordering::AcqRel) != 0
    }

    fn running(&self) -> u64 {
        self.running.load(Ordering::Acquire)
    }

    fn is_open(&self, request: usize) -> bool {
        self.lock().contains_key(&request)
    }

    /// Delivers one response frame to its open request; a final one closes
    /// it. Returns whether the backend closed the request although the
    /// worker did not end it (Triton refused the response).
    fn deliver(
        &self,
        request: usize,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> bool {
        let mut open = self.lock();
        let Some(o) = open.get_mut(&request) else {
            return false;
        };
        let (close, early) = match o
            .responder
            .send_with_parameters(outputs, parameters, is_final)
        {
            Ok(()) => (is_final, false),
            Err(e) => {
                o.responder.send_error(&e);
                (true, !is_final)
            }
        };
        if close {
            open.remove(&request);
        }
        early
    }

    /// An error response; returns whether it closed a request the worker
    /// keeps open (a non-final error the responder cannot send as such).
    fn send_error(&self, request: usize, err: &Error, is_final: bool) -> bool {
        let mut open = self.lock();
        let Some(o) = open.get_mut(&request) else {
            return false;
        };
        if is_final {
            o.responder.send_error(err);
            open.remove(&request);
            return false;
        }
        if !o.responder.send_error_nonfinal(err) {
            open.remove(&request);
            return true;
        }
        false
    }

    fn finish(&self, request: usize) {
        if let Some(mut o) = self.lock().remove(&request) {
            o.responder.finish();
        }
    }

    /// The requests the client cancelled since the last call (each once).
    fn newly_cancelled(&self) -> Vec<usize> {
        self.lock()
            .iter_mut()
            .filter(|(_, o)| !o.cancel_sent && o.responder.is_cancelled())
            .map(|(&id, o)| {
                o.cancel_sent = true;
                id
            })
            .collect()
    }
}

/// Requests the backend closed while the worker may still answer them
/// (Triton refused a response): their further frames are dropped, not
/// taken for a protocol breach. Bounded: these are rare, and past this many
/// the oldest are forgotten.
const CLOSED_EARLY_MAX: usize = 4096;

/// The backend's reading side of the response path: what a response frame
/// needs to be delivered, and the check that the worker may send it.
pub(super) struct ResponseReader {
    pub(super) open: Arc<OpenRequests>,
    /// The output region (the worker writes, only this thread reads).
    output: Shm,
    /// This thread's own mapping of the input region, for outputs that are
    /// views of the inputs.
    input: Shm,
    /// Where Taken acknowledgements go.
    replies: Writer,
    /// See [`CLOSED_EARLY_MAX`]: ids, oldest first.
    closed_early: VecDeque<usize>,
}

/// Whether a frame's request may be answered.
#[derive(PartialEq)]
enum Claim {
    Open,
    /// Closed by the backend before the worker ended it: dropped.
    ClosedEarly,
}

impl ResponseReader {
    pub(super) fn new(
        open: Arc<OpenRequests>,
        output: Shm,
        input: Shm,
        replies: Writer,
    ) -> ResponseReader {
        ResponseReader {
            open,
            output,
            input,
            replies,
            closed_early: VecDeque::new(),
        }
    }

    /// Handles a response frame: `Ok(false)` for any other frame, `Err`
    /// (what the worker did wrong) for one no worker following the
    /// protocol sends: for a request it was never given or has ended, or
    /// whose outputs lie outside the regions or do not fit their shapes.
    pub(super) fn handle(&mut self, frame: &FromWorker) -> Result<bool, String> {
        match frame {
            FromWorker::Response(response) => {
                let request = response.request;
                if request >> REQUEST_BITS != self.open.running() as usize {
                    return Err(format!(
                        "it sent a response in shared memory for {}, whose batch is not running",
                        describe(request)
                    ));
                }
                if self.claim(request, response.is_final)? == Claim::Open {
                    self.placed(response)?;
                }
            }
            FromWorker::InlineResponse(inline) => {
                if self.claim(inline.request, inline.is_final)? == Claim::Open {
                    let slices = inline
                        .resolve()
                        .map_err(|e| format!("it sent a response that {e}"))?;
                    let parameters = inline.parameters();
                    if self
                        .open
                        .deliver(inline.request, &slices, &parameters, inline.is_final)
                    {
                        self.closed_early(inline.request);
                    }
                }
            }
            FromWorker::Error {
                request,
                code,
                message,
                is_final,
            } => {
                if self.claim(*request, *is_final)? == Claim::Open {
                    let err = error_from_wire((*code, message.clone()));
                    if self.open.send_error(*request, &err, *is_final) {
                        self.closed_early(*request);
                    }
                }
            }
            FromWorker::Finish { request } => {
                if self.claim(*request, true)? == Claim::Open {
                    self.open.finish(*request);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether `request` may get a frame: open, or closed early by the
    /// backend (forgotten once the worker ends it too); any other id is
    /// one the worker was never given, or has ended already.
    fn claim(&mut self, request: usize, is_final: bool) -> Result<Claim, String> {
        if self.open.is_open(request) {
            return Ok(Claim::Open);
        }
        if let Some(at) = self.closed_early.iter().position(|&r| r == request) {
            if is_final {
                self.closed_early.remove(at);
            }
            return Ok(Claim::ClosedEarly);
        }
        Err(format!(
            "it answered {}, which it was never given or had already answered",
            describe(request)
        ))
    }

    fn closed_early(&mut self, request: usize) {
        if self.closed_early.len() == CLOSED_EARLY_MAX {
            self.closed_early.pop_front();
        }
        self.closed_early.push_back(request);
    }

    /// A response whose outputs lie in the shared regions. The regions
    /// never change size (sys::fixed_memfd), so the mappings cover them.
    fn placed(&mut self, response: &Response) -> Result<(), String> {
        // Outputs that are views of the batch's inputs are copied from the
        // input region (this mapping of it is the reader thread's own; the
        // execute thread writes the next batch only after this batch's
        // Done, which comes after this frame).
        if response.output_len > self.output.len() {
            return Err(format!(
                "it sent a response claiming an output region of {} bytes; it has {}",
                response.output_len,
                self.output.len()
            ));
        }
        let slices = response
            .resolve(self.output.whole(), self.input.whole())
            .map_err(|e| format!("it sent a response that {e}"))?;
        if self.open.deliver(
            response.request,
            &slices,
            &response.parameters(),
            response.is_final,
        ) {
            self.closed_early(response.request);
        }
        if let Some(token) = response.taken {
            let _ = write_to(&self.replies, &ToWorker::Taken { token });
        }
        Ok(())
    }

    /// The worker is gone. Requests of earlier batches still open
    /// (decoupled, answered by user threads) fail here; the running
    /// batch's fail in execute, with the exit status.
    pub(super) fn worker_gone(&self, err: &Error) {
        self.open.fail_earlier(err);
    }
}

/// "request 3 of batch 12", for messages.
fn describe(request: usize) -> String {
    format!(
        "request {} of batch {}",
        request_index(request),
        request >> REQUEST_BITS
    )
}

/// Tells the worker about requests the client cancelled, while any are open.
pub(super) fn watch_cancellations(open: Weak<OpenRequests>, socket: Weak<Channel>) {
    loop {
        std::thread::sleep(CANCEL_POLL);
        let Some(open) = open.upgrade() else { return };
        let cancelled = open.newly_cancelled();
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

/// Outputs of a pb_utils model viewing its inputs are sent in place from
/// this size on (smaller ones are copied: cheaper than the wait).
const ALIAS_WAIT_MIN: usize = 64 * 1024;

/// The worker's half of the response path: the output region and the
/// running batch's use of it, the backend's acknowledgements and the
/// requests it says were cancelled. Shared by the main thread and every
/// user thread that answers a request.
pub struct WorkerResponses {
    link: Arc<WorkerLink>,
    /// A second mapping of the output region, for the arrays `ctx.empty`
    /// hands out in it (their base objects hold it).
    arena: Arc<Mapping>,
    /// Locked before the link's socket: a response that uses the output
    /// region and the batch's Done are both sent under it, so none follows
    /// the Done.
    window: Mutex<OutputWindow>,
    taken: Taken,
    /// Requests the backend says the client cancelled (ToWorker::Cancel).
    cancelled: Mutex<HashSet<usize>>,
}

struct OutputWindow {
    output: Shm,
    /// Bytes of the output region used by the current batch.
    used: usize,
    /// The batch running now (its responses may use the output region),
    /// none between its Done and the next Execute.
    running: Option<u64>,
    /// Address and length of the running batch's input mapping: an output
    /// lying inside it is a view of the inputs and is sent by its offset
    /// there, not copied (wire::Response's `from_input`).
    input_view: Option<(usize, usize)>,
    /// Outputs in the input region at least this large are not copied.
    alias_min: usize,
    /// Whether a response with such outputs waits until the backend has
    /// copied them (pb_utils inputs are writable; batched ones are not).
    alias_wait: bool,
    /// The last `taken` token sent.
    token: u64,
    /// Whether the running batch's responses leave with its Done (a
    /// non-decoupled model), after the model returned.
    held: bool,
    /// Ranges `ctx.empty` handed out, by their end: while Python holds an
    /// array over one, later batches start after it.
    pins: Vec<(usize, Weak<OutputPin>)>,
}

/// What an array from `ctx.empty` holds: its range of the output region
/// stays out of later batches' way while it lives.
struct OutputPin;

/// `ctx.empty` arrays smaller than this are ordinary numpy arrays (their
/// copy costs less than a pinned range).
const PLACE_MIN: usize = 64 << 10;
/// Where `ctx.empty` arrays start in the output region.
const PLACE_ALIGN: usize = 64;

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

impl WorkerResponses {
    pub fn new(link: Arc<WorkerLink>, output: Shm) -> std::io::Result<Arc<WorkerResponses>> {
        let arena = Arc::new(Mapping::new(output.fd())?);
        Ok(Arc::new(WorkerResponses {
            link,
            arena,
            window: Mutex::new(OutputWindow {
                output,
                used: 0,
                running: None,
                input_view: None,
                alias_min: 1,
                alias_wait: false,
                token: 0,
                held: false,
                pins: Vec::new(),
            }),
            taken: Taken::default(),
            cancelled: Mutex::new(HashSet::new()),
        }))
    }

    fn window(&self) -> std::sync::MutexGuard<'_, OutputWindow> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pb_utils model's inputs are writable: an output viewing them goes
    /// in place only when large, and its sender waits until the backend
    /// has copied it.
    pub fn inputs_are_writable(&self) {
        let mut w = self.window();
        w.alias_min = ALIAS_WAIT_MIN;
        w.alias_wait = true;
    }

    /// Batch `batch` starts: its responses use the output region from the
    /// start. `hold`: the responses the calling thread sends leave with the
    /// Done (a non-decoupled model).
    pub fn begin_batch(&self, batch: u64, hold: bool) {
        let mut w = self.window();
        // After every range an array Python still holds (ctx.empty).
        w.pins.retain(|(_, pin)| pin.strong_count() > 0);
        w.used = w.pins.iter().map(|&(end, _)| end).max().unwrap_or(0);
        w.running = Some(batch);
        w.held = hold;
        self.link
            .hold_for(hold.then(|| std::thread::current().id()));
    }

    /// The running batch's input mapping (address, length).
    pub fn set_input_view(&self, view: (usize, usize)) {
        self.window().input_view = Some(view);
    }

    /// Sends a batch's Done; responses sent after it (from user threads)
    /// travel inline, so the output region is free for the next batch.
    pub fn send_done(&self, done: Done) -> Result<()> {
        let mut w = self.window();
        w.running = None;
        w.input_view = None;
        self.link.hold_for(None);
        self.link.send(&FromWorker::Done(done))
    }

    /// The responder of request `index` of batch `batch`.
    pub fn responder(self: &Arc<Self>, batch: u64, index: usize) -> WorkerResponder {
        ResponseStream::new(WorkerSink {
            index: request_id(batch, index),
            batch,
            responses: self.clone(),
        })
    }

    /// ToWorker::Taken arrived.
    pub fn mark_taken(&self, token: u64) {
        self.taken.mark(token);
    }

    /// ToWorker::Cancel arrived.
    pub fn cancel(&self, request: usize) {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request);
    }

    /// The backend is gone: nobody waits for an acknowledgement any more.
    pub fn close(&self) {
        self.taken.close();
    }

    /// A response while its batch runs: outputs in the output region (or
    /// in place in the input region). Returns the token to wait for, if
    /// the sender must wait until the backend has copied them.
    fn send_placed(
        &self,
        index: usize,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<Option<u64>> {
        let mut w = self.window();
        let written = WrittenOutputs {
            at: self.arena.as_ptr() as usize,
            used: w.used,
        };
        let placed =
            OutputPlacement::plan(outputs, w.used, w.input_view, w.alias_min, Some(written))?;
        if placed.end > w.output.len() {
            let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
            return Err(Error::invalid_arg(format!(
                "rustpy: this batch's outputs need {:.1} MiB of shared memory, more than the {} MiB of {SHM_LIMIT_KEY} allow; raise the limit or answer in smaller batches",
                mib(placed.end),
                w.output.len() >> 20
            )));
        }
        for (offset, bytes) in placed.copies(outputs) {
            w.output.write(offset, bytes);
        }
        w.used = placed.end;
        // The backend reads in-place outputs when it handles the response:
        // one whose model may still write into them (a view of writable
        // inputs; a ctx.empty array of a streaming model, which may fill it
        // again for its next response) waits until the backend took them.
        let in_use = (w.alias_wait && !placed.from_input.is_empty())
            || (!w.held && !placed.written.is_empty());
        let taken = if in_use {
            w.token += 1;
            Some(w.token)
        } else {
            None
        };
        let msg = FromWorker::Response(Response {
            request: index,
            outputs: placed.tensors,
            output_len: w.output.len(),
            is_final,
            from_input: placed.from_input,
            taken,
            parameters: params_to_wire(parameters),
        });
        // A response whose sender waits for the backend's Taken goes out at
        // once (held for the Done, it would wait for ever).
        match taken {
            Some(_) => self.link.send(&msg)?,
            None => self.link.send_response(&msg)?,
        }
        Ok(taken)
    }
}

/// `ctx.empty` in a worker: a range of the output region for an array the
/// model fills and returns, which then goes out where it is (no copy into
/// the region). Only while a batch runs (its responses use the region);
/// the range stays out of later batches' way while the array lives.
impl OutputArena for WorkerResponses {
    fn place(&self, len: usize) -> Option<PlacedBytes> {
        if len < PLACE_MIN {
            return None;
        }
        let mut w = self.window();
        w.running?;
        let start = w.used.next_multiple_of(PLACE_ALIGN);
        if start.checked_add(len)? > w.output.len() {
            return None;
        }
        w.used = start + len;
        let pin = Arc::new(OutputPin);
        w.pins.push((start + len, Arc::downgrade(&pin)));
        PlacedBytes::new(self.arena.clone(), start, len, Box::new(pin))
    }
}

impl std::fmt::Debug for WorkerResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerResponses({} bytes)", self.arena.len())
    }
}

/// Answers request `index` of a batch through the backend, during or after
/// that batch's execution. Whether the request is still open is the
/// `ResponseStream`'s business (engine.rs), as in-process.
pub type WorkerResponder = ResponseStream<WorkerSink>;

/// Delivers one request's responses to the backend: through the output
/// region while its batch runs, inline in the control frame after that.
pub struct WorkerSink {
    index: usize,
    batch: u64,
    responses: Arc<WorkerResponses>,
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
        let r = &self.responses;
        if r.window().running != Some(self.batch) {
            // Its batch is over (batch numbers are not reused): the output
            // region belongs to the next one.
            let msg = FromWorker::InlineResponse(InlineResponse::new(
                self.index, outputs, parameters, is_final,
            )?);
            return r.link.send(&msg);
        }
        if let Some(token) = r.send_placed(self.index, outputs, parameters, is_final)? {
            // As upstream's send: when it returns, the bytes are taken and
            // user code may change its (writable) inputs. Somebody must read
            // the socket meanwhile.
            r.link.need_frames();
            r.taken.wait(token);
        }
        Ok(())
    }

    fn send_error(&mut self, error: &Error, is_final: bool) {
        let (code, message) = error_to_wire(error);
        let _ = self.responses.link.send(&FromWorker::Error {
            request: self.index,
            code,
            message,
            is_final,
        });
    }

    fn send_final(&mut self) {
        let _ = self.responses.link.send(&FromWorker::Finish {
            request: self.index,
        });
    }

    fn is_cancelled(&self) -> bool {
        self.responses.link.read_arrived();
        self.responses
            .cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.index)
    }
}

impl Drop for WorkerSink {
    fn drop(&mut self) {
        // After the stream's own drop (which fails a request left open).
        self.responses
            .cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.index);
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;

    use super::super::guard::WorkerGuard;
    use super::super::sys::{fixed_memfd, Shm};
    use super::super::wire::read_frame;
    use super::*;
    use crate::DataType;

    /// One response as it reached its request: (name, bytes) per output,
    /// and whether it was final.
    type Delivered = (Vec<(String, Vec<u8>)>, bool);

    /// What reached one request, and the error if it failed.
    #[derive(Default)]
    struct Seen {
        responses: Vec<Delivered>,
        error: Option<String>,
        /// Each response's parameters.
        parameters: Vec<Vec<(String, crate::request::ParamValue)>>,
    }

    struct Recorder(Arc<Mutex<Seen>>, bool);

    impl Responder for Recorder {
        fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
            let outputs = outputs
                .iter()
                .map(|o| (o.name.to_string(), o.data.host().unwrap().to_vec()))
                .collect();
            self.0.lock().unwrap().responses.push((outputs, is_final));
            self.1 = !is_final;
            Ok(())
        }
        fn send_with_parameters(
            &mut self,
            outputs: &[OutputSlice<'_>],
            parameters: &ResponseParameters,
            is_final: bool,
        ) -> Result<()> {
            self.0.lock().unwrap().parameters.push(parameters.to_vec());
            self.send(outputs, is_final)
        }
        fn send_error(&mut self, error: &Error) {
            self.0.lock().unwrap().error = Some(error.message.clone());
            self.1 = false;
        }
        fn finish(&mut self) {
            self.1 = false;
        }
        fn is_open(&self) -> bool {
            self.1
        }
    }

    /// A responder whose sends Triton refuses (the request closes early).
    struct Refusing(Arc<Mutex<Seen>>, bool);

    impl Responder for Refusing {
        fn send(&mut self, _: &[OutputSlice<'_>], _: bool) -> Result<()> {
            Err(Error::invalid_arg("refused"))
        }
        fn send_error(&mut self, error: &Error) {
            self.0.lock().unwrap().error = Some(error.message.clone());
            self.1 = false;
        }
        fn finish(&mut self) {
            self.1 = false;
        }
        fn is_open(&self) -> bool {
            self.1
        }
    }

    /// Both halves over a socketpair and one output memfd.
    struct Path {
        worker: Arc<WorkerResponses>,
        backend: ResponseReader,
        frames: BufReader<UnixStream>,
    }

    fn path() -> Path {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let output = fixed_memfd("t-out", 64 << 10).unwrap();
        let worker_output = Shm::map(output.try_clone().unwrap()).unwrap();
        let link = WorkerLink::new(ours, || {});
        let guard = WorkerGuard::detached("test".into(), &theirs).unwrap();
        Path {
            worker: WorkerResponses::new(link, worker_output).unwrap(),
            backend: ResponseReader::new(
                Arc::new(OpenRequests::default()),
                Shm::map(output).unwrap(),
                Shm::map(fixed_memfd("t-in", 4096).unwrap()).unwrap(),
                Channel::new(theirs.try_clone().unwrap(), guard).unwrap(),
            ),
            frames: BufReader::new(theirs),
        }
    }

    impl Path {
        /// Reads the next frame and lets the backend's half handle it;
        /// returns the frame it did not handle.
        fn pump(&mut self) -> Option<FromWorker> {
            let frame = read_frame::<FromWorker, _>(&mut self.frames)
                .unwrap()
                .unwrap();
            (!self.backend.handle(&frame).unwrap()).then_some(frame)
        }

        fn open(&self, batch: u64) -> Arc<Mutex<Seen>> {
            let seen = Arc::new(Mutex::new(Seen::default()));
            self.backend
                .open
                .open_batch(batch, vec![Recorder(seen.clone(), true)]);
            seen
        }
    }

    fn output(data: &[u8]) -> OutputSlice<'_> {
        OutputSlice::host("OUT", DataType::Uint8, vec![data.len() as i64], data)
    }

    fn finish(request: usize) -> FromWorker {
        FromWorker::Finish { request }
    }

    #[test]
    fn responses_reach_their_request_through_the_region_then_inline_after_done() {
        let mut p = path();
        let seen = p.open(1);
        p.backend.open.set_running(1);
        p.worker.begin_batch(1, false);
        let mut responder = p.worker.responder(1, 0);
        let big = vec![5u8; 8192];
        responder.send(&[output(&big)], false).unwrap();
        assert!(p.pump().is_none(), "a Response is the response path's");
        p.worker.send_done(Done::failed(1, vec![])).unwrap();
        assert!(matches!(p.pump(), Some(FromWorker::Done(_))));
        assert!(p.backend.open.end_running());
        // After Done (a decoupled request a thread answers later): inline.
        responder.send(&[output(b"late")], true).unwrap();
        let frame = read_frame::<FromWorker, _>(&mut p.frames).unwrap().unwrap();
        assert!(matches!(frame, FromWorker::InlineResponse(_)), "{frame:?}");
        assert!(p.backend.handle(&frame).unwrap());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.responses.len(), 2);
        assert_eq!(seen.responses[0], (vec![("OUT".into(), big)], false));
        assert_eq!(
            seen.responses[1],
            (vec![("OUT".into(), b"late".to_vec())], true)
        );
    }

    #[test]
    fn response_parameters_reach_the_request_in_the_region_and_inline() {
        use crate::request::ParamValue;
        let mut p = path();
        let seen = p.open(1);
        p.backend.open.set_running(1);
        p.worker.begin_batch(1, false);
        let mut responder = p.worker.responder(1, 0);
        let first = vec![
            ("s".to_string(), ParamValue::String("a".into())),
            ("i".to_string(), ParamValue::Int(3)),
        ];
        responder
            .send_with_parameters(&[output(b"x")], &first, false)
            .unwrap();
        assert!(p.pump().is_none());
        p.worker.send_done(Done::failed(1, vec![])).unwrap();
        assert!(matches!(p.pump(), Some(FromWorker::Done(_))));
        let last = vec![("b".to_string(), ParamValue::Bool(false))];
        responder
            .send_with_parameters(&[output(b"y")], &last, true)
            .unwrap();
        assert!(
            p.pump().is_none(),
            "an InlineResponse is the response path's"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.parameters, vec![first, last]);
        assert_eq!(seen.responses.len(), 2);
    }

    #[test]
    fn outputs_larger_than_the_output_region_fail_in_the_worker_naming_the_limit() {
        let p = path();
        p.worker.begin_batch(1, false);
        let mut responder = p.worker.responder(1, 0);
        let err = responder
            .send(&[output(&vec![1u8; 65 << 10])], true)
            .unwrap_err();
        assert!(err.message.contains(SHM_LIMIT_KEY), "{}", err.message);
    }

    #[test]
    fn a_response_outside_the_output_region_is_a_breach_that_touches_no_request() {
        let mut p = path();
        let (bad, good) = (p.open(1), p.open(2));
        p.backend.open.set_running(1);
        let outside = |offset, len| {
            FromWorker::Response(Response {
                request: request_id(1, 0),
                outputs: vec![super::super::wire::WireTensor {
                    name: "OUT".into(),
                    dtype: "UINT8".into(),
                    shape: vec![len as i64],
                    offset,
                    len,
                }],
                output_len: 0,
                is_final: true,
                from_input: vec![],
                taken: None,
                parameters: vec![],
            })
        };
        for (offset, len) in [(1 << 40, 1), (0, (64 << 10) + 1), (usize::MAX, 2)] {
            let why = p.backend.handle(&outside(offset, len)).unwrap_err();
            assert!(why.contains("output region"), "{why}");
        }
        assert!(bad.lock().unwrap().responses.is_empty());
        assert!(p.backend.open.is_open(request_id(1, 0)));
        // Errors and the end of a stream travel too.
        p.worker
            .responder(2, 0)
            .send_error(&Error::invalid_arg("no"));
        assert!(p.pump().is_none());
        assert_eq!(good.lock().unwrap().error.as_deref(), Some("no"));
    }

    #[test]
    fn a_frame_for_a_request_never_given_or_already_ended_is_a_breach() {
        let mut p = path();
        let seen = p.open(3);
        // Never given: another index, another batch, a batch not sent yet.
        for id in [request_id(3, 1), request_id(2, 0), request_id(4, 0), 0] {
            let why = p.backend.handle(&finish(id)).unwrap_err();
            assert!(why.contains("never given or had already answered"), "{why}");
        }
        // Given: ended once, then a second time.
        assert!(p.backend.handle(&finish(request_id(3, 0))).unwrap());
        assert!(seen.lock().unwrap().error.is_none());
        let twice = p.backend.handle(&finish(request_id(3, 0))).unwrap_err();
        assert!(twice.contains("request 0 of batch 3"), "{twice}");
        // A response in shared memory only while its batch runs.
        p.open(5);
        let placed = FromWorker::Response(Response {
            request: request_id(5, 0),
            outputs: vec![],
            output_len: 0,
            is_final: true,
            from_input: vec![],
            taken: None,
            parameters: vec![],
        });
        let why = p.backend.handle(&placed).unwrap_err();
        assert!(why.contains("not running"), "{why}");
        p.backend.open.set_running(5);
        assert!(p.backend.handle(&placed).unwrap());
    }

    #[test]
    fn frames_for_a_request_the_backend_closed_early_are_dropped_until_its_end() {
        let mut p = path();
        let seen = Arc::new(Mutex::new(Seen::default()));
        p.backend
            .open
            .open_batch(1, vec![Refusing(seen.clone(), true)]);
        let id = request_id(1, 0);
        let inline = |is_final| {
            FromWorker::InlineResponse(
                InlineResponse::new(id, &[output(b"x")], &[], is_final).unwrap(),
            )
        };
        // Triton refuses the response: the request fails, the worker does
        // not know yet and keeps answering.
        assert!(p.backend.handle(&inline(false)).unwrap());
        assert_eq!(seen.lock().unwrap().error.as_deref(), Some("refused"));
        assert!(p.backend.handle(&inline(false)).unwrap());
        assert!(p.backend.handle(&inline(true)).unwrap());
        // Its end was the last frame it could send.
        assert!(p.backend.handle(&inline(true)).is_err());
    }
}
