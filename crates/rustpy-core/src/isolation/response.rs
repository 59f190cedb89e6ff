//! The response path: the worker encodes each response (outputs in the
//! output region, or inline once its batch is over) and the backend's reader
//! thread decodes it and delivers it to the request's responder. Also the
//! backend's cancellation watch, which tells the worker about requests the
//! client gave up on.

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::sys::Shm;
use super::transport::{write_to, WorkerLink, Writer};
use super::wire::{
    error_from_wire, error_to_wire, params_to_wire, request_id, request_index, Done, FromWorker,
    InlineResponse, OutputPlacement, Response, ToWorker,
};
use crate::engine::{OutputSlice, Responder, ResponseParameters, ResponseSink, ResponseStream};
use crate::error::{Error, Result};

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

    /// Delivers one response frame to its open request; a final one closes it.
    fn deliver(
        &self,
        request: usize,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) {
        let mut open = self.lock();
        let Some(o) = open.get_mut(&request) else {
            return; // already answered (e.g. failed as cancelled)
        };
        let close = match o
            .responder
            .send_with_parameters(outputs, parameters, is_final)
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

    fn fail(&self, request: usize, err: &Error) {
        if let Some(mut o) = self.lock().remove(&request) {
            o.responder.send_error(err);
        }
    }

    fn send_error(&self, request: usize, err: &Error, is_final: bool) {
        let mut open = self.lock();
        if let Some(o) = open.get_mut(&request) {
            if is_final || !o.responder.send_error_nonfinal(err) {
                if is_final {
                    o.responder.send_error(err);
                }
                open.remove(&request);
            }
        }
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

/// The backend's reading side of the response path: what a response frame
/// needs to be delivered.
pub(super) struct ResponseReader {
    pub(super) open: Arc<OpenRequests>,
    /// The output region (the worker writes, only this thread reads).
    pub(super) output: Shm,
    /// This thread's own mapping of the input region, for outputs that are
    /// views of the inputs.
    pub(super) input: Shm,
    /// Where Taken acknowledgements go.
    pub(super) replies: Writer,
}

impl ResponseReader {
    /// Handles a response frame; false for any other frame.
    pub(super) fn handle(&mut self, frame: &FromWorker) -> bool {
        match frame {
            FromWorker::Response(response) => self.placed(response),
            FromWorker::InlineResponse(inline) => match inline.resolve() {
                Ok(slices) => self.open.deliver(
                    inline.request,
                    &slices,
                    &inline.parameters(),
                    inline.is_final,
                ),
                Err(e) => self
                    .open
                    .fail(inline.request, &Error::internal(format!("rustpy: {e}"))),
            },
            FromWorker::Error {
                request,
                code,
                message,
                is_final,
            } => {
                let err = error_from_wire((*code, message.clone()));
                self.open.send_error(*request, &err, *is_final);
            }
            FromWorker::Finish { request } => self.open.finish(*request),
            _ => return false,
        }
        true
    }

    /// A response whose outputs lie in the shared regions.
    fn placed(&mut self, response: &Response) {
        // Outputs that are views of the batch's inputs are copied from the
        // input region (this mapping of it is the reader thread's own; the
        // execute thread writes the next batch only after this batch's
        // Done, which comes after this frame).
        let mapped = self
            .output
            .ensure(response.output_len)
            .map_err(|e| format!("output shared memory: {e}"))
            .and(
                self.input
                    .ensure(response.input_end())
                    .map_err(|e| format!("input shared memory: {e}")),
            );
        let resolved = mapped.and_then(|()| {
            response
                .resolve(self.output.whole(), self.input.whole())
                .map_err(|e| e.to_string())
        });
        match resolved {
            Ok(slices) => self.open.deliver(
                response.request,
                &slices,
                &response.parameters(),
                response.is_final,
            ),
            Err(why) => self
                .open
                .fail(response.request, &Error::internal(format!("rustpy: {why}"))),
        }
        if let Some(token) = response.taken {
            let _ = write_to(&self.replies, &ToWorker::Taken { token });
        }
    }

    /// The worker is gone. Requests of earlier batches still open
    /// (decoupled, answered by user threads) fail here; the running
    /// batch's fail in execute, with the exit status.
    pub(super) fn worker_gone(&self, err: &Error) {
        self.open.fail_earlier(err);
    }
}

/// Tells the worker about requests the client cancelled, while any are open.
pub(super) fn watch_cancellations(open: Weak<OpenRequests>, socket: Weak<Mutex<UnixStream>>) {
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

impl WorkerResponses {
    pub fn new(link: Arc<WorkerLink>, output: Shm) -> Arc<WorkerResponses> {
        Arc::new(WorkerResponses {
            link,
            window: Mutex::new(OutputWindow {
                output,
                used: 0,
                running: None,
                input_view: None,
                alias_min: 1,
                alias_wait: false,
                token: 0,
            }),
            taken: Taken::default(),
            cancelled: Mutex::new(HashSet::new()),
        })
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
        w.used = 0;
        w.running = Some(batch);
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
        let placed = OutputPlacement::plan(outputs, w.used, w.input_view, w.alias_min);
        w.output
            .grow(placed.end)
            .map_err(|e| Error::internal(format!("cannot grow the output shared memory: {e}")))?;
        for (offset, bytes) in placed.copies(outputs) {
            w.output.write(offset, bytes);
        }
        w.used = placed.end;
        let taken = if w.alias_wait && !placed.from_input.is_empty() {
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
            ));
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

    use super::super::sys::{growing_memfd, Shm};
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
                .map(|o| (o.name.to_string(), o.data.to_vec()))
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

    /// Both halves over a socketpair and one output memfd.
    struct Path {
        worker: Arc<WorkerResponses>,
        backend: ResponseReader,
        frames: BufReader<UnixStream>,
    }

    fn path() -> Path {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let output = growing_memfd("t-out", 4096).unwrap();
        let worker_output = Shm::map(output.try_clone().unwrap()).unwrap();
        let link = WorkerLink::new(ours, || {});
        Path {
            worker: WorkerResponses::new(link, worker_output),
            backend: ResponseReader {
                open: Arc::new(OpenRequests::default()),
                output: Shm::map(output).unwrap(),
                input: Shm::map(growing_memfd("t-in", 0).unwrap()).unwrap(),
                replies: Arc::new(Mutex::new(theirs.try_clone().unwrap())),
            },
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
            (!self.backend.handle(&frame)).then_some(frame)
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
        OutputSlice {
            name: "OUT",
            dtype: DataType::Uint8,
            shape: vec![data.len() as i64],
            data,
        }
    }

    #[test]
    fn responses_reach_their_request_through_the_region_then_inline_after_done() {
        let mut p = path();
        let seen = p.open(1);
        p.worker.begin_batch(1, false);
        let mut responder = p.worker.responder(1, 0);
        // 8 KiB: the output region grows past its 4 KiB on the way.
        let big = vec![5u8; 8192];
        responder.send(&[output(&big)], false).unwrap();
        assert!(p.pump().is_none(), "a Response is the response path's");
        p.worker.send_done(Done::failed(1, vec![])).unwrap();
        assert!(matches!(p.pump(), Some(FromWorker::Done(_))));
        // After Done (a decoupled request a thread answers later): inline.
        responder.send(&[output(b"late")], true).unwrap();
        let frame = read_frame::<FromWorker, _>(&mut p.frames).unwrap().unwrap();
        assert!(matches!(frame, FromWorker::InlineResponse(_)), "{frame:?}");
        assert!(p.backend.handle(&frame));
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
    fn a_response_outside_the_output_region_fails_its_request_only() {
        let mut p = path();
        let (bad, good) = (p.open(1), p.open(2));
        p.backend.handle(&FromWorker::Response(Response {
            request: request_id(1, 0),
            outputs: vec![super::super::wire::WireTensor {
                name: "OUT".into(),
                dtype: "UINT8".into(),
                shape: vec![1],
                offset: 1 << 40,
                len: 1,
            }],
            output_len: 0,
            is_final: true,
            from_input: vec![],
            taken: None,
            parameters: vec![],
        }));
        let error = bad.lock().unwrap().error.clone().unwrap();
        assert!(error.contains("outside the output region"), "{error}");
        // Errors and the end of a stream travel too.
        p.worker
            .responder(2, 0)
            .send_error(&Error::invalid_arg("no"));
        assert!(p.pump().is_none());
        assert_eq!(good.lock().unwrap().error.as_deref(), Some("no"));
    }
}
