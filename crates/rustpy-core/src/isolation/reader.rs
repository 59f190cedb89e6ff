//! The backend's reader thread of one worker. It reads every frame the
//! worker sends, checks that the worker may send it now, and routes it:
//! responses to the response path, server calls to the RPC, log lines to
//! the server's log, `is_ready()` answers to the instance's readiness link,
//! the rest (the first answer, Done) to the execute thread. A frame that
//! cannot be decoded, or that no worker following the protocol sends (a
//! second Done, a response for a request it was never given or has
//! answered), trips the worker's guard: logged with the reason, the worker
//! killed and later restarted (isolation/guard.rs). A second thread tells
//! the worker about cancelled requests.

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::bls::BlsRegion;
use super::ready::ReadyLink;
use super::response::{watch_cancellations, OpenRequests, ResponseReader};
use super::rpc::CallServer;
use super::sys::Shm;
use super::transport::Writer;
use super::wire::{FrameStream, FromWorker};
use crate::constants::LogLevel;
use crate::error::{Error, ErrorCode};
use crate::python::emit_log;

/// The reader thread's parts, before it starts.
pub(super) struct Reader {
    pub(super) pid: u32,
    /// "model 'M' instance 'I'".
    pub(super) label: String,
    /// "rustpy.memory_limit_mb = N MiB", or "".
    pub(super) memory_note: String,
    pub(super) replies: Writer,
    /// The open requests, shared with the execute thread.
    pub(super) open: Arc<OpenRequests>,
    /// Where `is_ready()` answers go.
    pub(super) ready: Arc<ReadyLink>,
    pub(super) output: Shm,
    pub(super) input_view: Shm,
    /// `rustpy.pending_calls_limit`.
    pub(super) pending_calls: usize,
}

/// Where the worker is in its life, as far as the frames for the execute
/// thread go: one first answer (Ready, InitFailed or AutoCompleted), then
/// one Done per batch sent.
pub(super) struct Protocol {
    answered: bool,
}

impl Protocol {
    pub(super) fn new() -> Protocol {
        Protocol { answered: false }
    }

    /// Checks a frame for the execute thread; `Err`: what the worker did
    /// wrong.
    pub(super) fn check(&mut self, msg: &FromWorker, open: &OpenRequests) -> Result<(), String> {
        let breach = match msg {
            FromWorker::Ready { .. }
            | FromWorker::InitFailed { .. }
            | FromWorker::AutoCompleted { .. } => std::mem::replace(&mut self.answered, true)
                .then_some("it sent a second first answer (Ready, InitFailed or AutoCompleted)"),
            FromWorker::Done(_) => (!self.answered || !open.end_running())
                .then_some("it sent a Done while no batch was running"),
            _ => None,
        };
        breach.map_or(Ok(()), |why| Err(why.into()))
    }
}

/// Frames the execute thread waits for: at most one at a time follows the
/// protocol (the first answer, then one Done per batch), so the queue is
/// short and a worker cannot make it grow.
pub(super) const EXECUTE_FRAMES: usize = 2;

impl Reader {
    /// Starts the reader thread on `socket` and the cancellation watch;
    /// returns the frames for the execute thread.
    pub(super) fn start(
        self,
        socket: UnixStream,
        bls_in: BlsRegion,
        bls_out: BlsRegion,
    ) -> std::io::Result<Receiver<FromWorker>> {
        let (tx, frames) = mpsc::sync_channel(EXECUTE_FRAMES);
        let pid = self.pid;
        let guard = self.replies.guard().clone();
        let (weak_open, weak_socket) = (Arc::downgrade(&self.open), Arc::downgrade(&self.replies));
        let memory_note = match self.memory_note.as_str() {
            "" => String::new(),
            note => format!(
                " ({}: the worker process (pid {pid}) ran out of its memory limit, {note})",
                self.label
            ),
        };
        let calls = CallServer::new(
            self.replies.clone(),
            bls_in,
            bls_out,
            self.pending_calls,
            self.label.clone(),
        );
        let responses = ResponseReader::new(self.open, self.output, self.input_view, self.replies);
        let gone = format!(
            "{}: the worker process (pid {pid}) ended before this request's final response",
            self.label
        );
        let ready = self.ready;
        let mut routes = Routes::new(responses, calls, ready.clone(), tx, memory_note);
        std::thread::Builder::new()
            .name(format!("rustpy-worker-{pid}"))
            .spawn(move || {
                let mut frames = FrameStream::new(socket);
                loop {
                    let routed = match frames.next_frame::<FromWorker>() {
                        Ok(Some(msg)) => routes.route(msg),
                        Ok(None) => break,
                        Err(e) => Err(format!("it sent {e}")),
                    };
                    match routed {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(why) => {
                            guard.broke(why);
                            break;
                        }
                    }
                }
                ready.closed();
                let gone = match guard.broken() {
                    Some(why) => {
                        format!("{gone}: it broke the control protocol ({why}) and was killed")
                    }
                    None => gone,
                };
                routes
                    .responses
                    .worker_gone(&Error::new(ErrorCode::Unavailable, gone));
            })?;
        std::thread::Builder::new()
            .name(format!("rustpy-cancel-{pid}"))
            .spawn(move || watch_cancellations(weak_open, weak_socket))?;
        Ok(frames)
    }
}

/// Where each frame goes (the reader thread's state).
pub(super) struct Routes {
    pub(super) responses: ResponseReader,
    calls: CallServer,
    /// The instance's readiness link, for `is_ready()` answers.
    ready: Arc<ReadyLink>,
    protocol: Protocol,
    execute: SyncSender<FromWorker>,
    /// Appended to a MemoryError of a memory-limited worker ("" without a
    /// limit).
    memory_note: String,
}

impl Routes {
    pub(super) fn new(
        responses: ResponseReader,
        calls: CallServer,
        ready: Arc<ReadyLink>,
        execute: SyncSender<FromWorker>,
        memory_note: String,
    ) -> Routes {
        Routes {
            responses,
            calls,
            ready,
            protocol: Protocol::new(),
            execute,
            memory_note,
        }
    }

    /// Handles one frame. `Ok(false)`: nobody waits for frames any more
    /// (the worker was dropped); `Err`: what the worker did wrong.
    pub(super) fn route(&mut self, mut msg: FromWorker) -> Result<bool, String> {
        annotate_memory_error(&mut msg, &self.memory_note);
        if self.responses.handle(&msg)? {
            return Ok(true);
        }
        match msg {
            FromWorker::Call { call, op } => self.calls.serve(call, op),
            FromWorker::BlsRelease { starts } => self.calls.release(&starts),
            FromWorker::Log {
                level,
                file,
                line,
                message,
            } => emit_log(LogLevel::from_code(level), &file, line, &message),
            // One nobody asked for is dropped there.
            FromWorker::ReadyAnswer { call, result } => self.ready.answer(call, result),
            other => {
                self.protocol.check(&other, &self.responses.open)?;
                return match self.execute.try_send(other) {
                    Ok(()) => Ok(true),
                    Err(TrySendError::Disconnected(_)) => Ok(false),
                    Err(TrySendError::Full(_)) => {
                        Err("it sent frames for the execute thread nobody waits for".into())
                    }
                };
            }
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::wire::Done;

    #[test]
    fn one_first_answer_then_one_done_per_running_batch() {
        let open = OpenRequests::default();
        let mut p = Protocol::new();
        let done = || FromWorker::Done(Done::failed(0, vec![]));
        open.set_running(1);
        assert!(
            p.check(&done(), &open).is_err(),
            "a Done before the first answer"
        );
        let ready = || FromWorker::Ready { is_ready: false };
        assert!(p.check(&ready(), &open).is_ok());
        assert!(p.check(&ready(), &open).is_err());
        assert!(p.check(&done(), &open).is_ok());
        let again = p.check(&done(), &open).unwrap_err();
        assert!(again.contains("no batch was running"), "{again}");
        open.set_running(2);
        assert!(p.check(&done(), &open).is_ok());
        // Frames for the other threads are not the protocol's business.
        assert!(p.check(&FromWorker::Finish { request: 1 }, &open).is_ok());
    }
}
