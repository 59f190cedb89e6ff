//! The backend's reader thread of one worker. It reads every frame the
//! worker sends and routes it: responses to the response path, server calls
//! to the RPC, log lines to the server's log, `is_ready()` answers to the
//! instance's readiness link, the rest (the first answer,
//! Done) to the execute thread. A second thread tells the worker about
//! cancelled requests.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use super::bls::BlsRegion;
use super::ready::ReadyLink;
use super::response::{watch_cancellations, OpenRequests, ResponseReader};
use super::rpc::CallServer;
use super::sys::Shm;
use super::transport::Writer;
use super::wire::{read_frame, FromWorker};
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
}

impl Reader {
    /// Starts the reader thread on `socket` and the cancellation watch;
    /// returns the frames for the execute thread.
    pub(super) fn start(
        self,
        socket: UnixStream,
        bls_in: BlsRegion,
        bls_out: BlsRegion,
    ) -> std::io::Result<Receiver<FromWorker>> {
        let (tx, frames) = mpsc::channel();
        let pid = self.pid;
        let (weak_open, weak_socket) = (Arc::downgrade(&self.open), Arc::downgrade(&self.replies));
        let memory_note = match self.memory_note.as_str() {
            "" => String::new(),
            note => format!(
                " ({}: the worker process (pid {pid}) ran out of its memory limit, {note})",
                self.label
            ),
        };
        let gone = Error::new(
            ErrorCode::Unavailable,
            format!(
                "{}: the worker process (pid {pid}) ended before this request's final response",
                self.label
            ),
        );
        let ready = self.ready;
        let mut calls = CallServer::new(self.replies.clone(), bls_in, bls_out);
        let mut responses = ResponseReader {
            open: self.open,
            output: self.output,
            input: self.input_view,
            replies: self.replies,
        };
        std::thread::Builder::new()
            .name(format!("rustpy-worker-{pid}"))
            .spawn(move || {
                let mut r = BufReader::new(socket);
                while let Ok(Some(mut msg)) = read_frame::<FromWorker, _>(&mut r) {
                    annotate_memory_error(&mut msg, &memory_note);
                    if responses.handle(&msg) {
                        continue;
                    }
                    match msg {
                        FromWorker::Call { call, op } => calls.serve(call, op),
                        FromWorker::BlsRelease { starts } => calls.release(&starts),
                        FromWorker::Log {
                            level,
                            file,
                            line,
                            message,
                        } => emit_log(LogLevel::from_code(level), &file, line, &message),
                        FromWorker::ReadyAnswer { call, result } => ready.answer(call, result),
                        other => {
                            if tx.send(other).is_err() {
                                break;
                            }
                        }
                    }
                }
                ready.closed();
                responses.worker_gone(&gone);
            })?;
        std::thread::Builder::new()
            .name(format!("rustpy-cancel-{pid}"))
            .spawn(move || watch_cancellations(weak_open, weak_socket))?;
        Ok(frames)
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
