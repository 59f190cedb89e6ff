//! Readiness of a process-isolated instance, the backend's end: whether its
//! worker is alive, and the model's `is_ready()` (python_backend r26.03)
//! asked over the wire (`ToWorker::IsReady` / `FromWorker::ReadyAnswer`).
//! Usable while a batch holds the instance's lock: a readiness check never
//! waits for one (the worker answers on a thread of its own, see
//! rustpy-worker's intake).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use super::transport::{write_to, Writer};
use super::wire::{ready_from_wire, ReadyResult, ToWorker};
use crate::error::{Error, Result};

/// What a readiness check needs of one worker process. The reader thread
/// hands it the answers and says when the process is gone.
pub(super) struct ReadyLink {
    socket: Writer,
    /// False once its control channel closed (the process is gone).
    alive: AtomicBool,
    /// The model defines `is_ready()` (said in its Ready frame).
    has_is_ready: AtomicBool,
    next: AtomicU64,
    answers: Mutex<HashMap<u64, Sender<Result<bool>>>>,
}

impl ReadyLink {
    pub(super) fn new(socket: Writer) -> Arc<ReadyLink> {
        Arc::new(ReadyLink {
            socket,
            alive: AtomicBool::new(true),
            has_is_ready: AtomicBool::new(false),
            next: AtomicU64::new(1),
            answers: Mutex::new(HashMap::new()),
        })
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sender<Result<bool>>>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker's Ready frame said whether the model has `is_ready()`.
    pub(super) fn set_has_is_ready(&self, has: bool) {
        self.has_is_ready.store(has, Ordering::Release);
    }

    pub(super) fn has_is_ready(&self) -> bool {
        self.has_is_ready.load(Ordering::Acquire)
    }

    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Reader thread: a ReadyAnswer arrived (one nobody waits for is dropped).
    pub(super) fn answer(&self, call: u64, result: ReadyResult) {
        if let Some(tx) = self.answers().remove(&call) {
            let _ = tx.send(ready_from_wire(result));
        }
    }

    /// Reader thread: the process is gone; waiting checks get their answer now.
    pub(super) fn closed(&self) {
        self.alive.store(false, Ordering::Release);
        self.answers().clear();
    }

    /// Asks the worker's `is_ready()` and waits for the answer (the caller,
    /// rustpy_core::readiness, bounds the wait for its own caller).
    pub(super) fn ask(&self, instance: &str) -> Result<bool> {
        let unhealthy = || {
            Error::internal(format!(
                "Stub process '{instance}' is not healthy while waiting for is_ready()"
            ))
        };
        let call = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.answers().insert(call, tx);
        if !self.is_alive() || write_to(&self.socket, &ToWorker::IsReady { call }).is_err() {
            self.answers().remove(&call);
            return Err(unhealthy());
        }
        rx.recv().unwrap_or_else(|_| Err(unhealthy()))
    }
}

/// The current worker's link of an instance (replaced when the worker is
/// restarted), shared by the instance's supervisor and its readiness checks.
pub(super) type CurrentLink = Arc<Mutex<Arc<ReadyLink>>>;

pub(super) fn current(link: &CurrentLink) -> Arc<ReadyLink> {
    link.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;

    use super::super::wire::{read_frame, ready_to_wire};
    use super::*;

    #[test]
    fn a_question_gets_its_answer_and_a_closed_link_answers_unhealthy() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let guard = super::super::guard::WorkerGuard::detached("test".into(), &ours).unwrap();
        let link = ReadyLink::new(super::super::transport::Channel::new(ours, guard).unwrap());
        let asking = {
            let link = link.clone();
            std::thread::spawn(move || link.ask("m_0"))
        };
        // The worker's side: read the IsReady, answer it.
        let mut r = BufReader::new(theirs);
        let Some(ToWorker::IsReady { call }) = read_frame::<ToWorker, _>(&mut r).unwrap() else {
            panic!("not an IsReady");
        };
        link.answer(call + 100, ready_to_wire(Ok(true))); // nobody asked this
        link.answer(call, ready_to_wire(Ok(false)));
        assert!(!asking.join().unwrap().unwrap());

        // The process goes away while a check waits: it gets its answer.
        let asking = {
            let link = link.clone();
            std::thread::spawn(move || link.ask("m_0"))
        };
        let _ = read_frame::<ToWorker, _>(&mut r).unwrap();
        link.closed();
        let err = asking.join().unwrap().unwrap_err();
        assert!(
            err.message.contains("Stub process 'm_0' is not healthy"),
            "{err:?}"
        );
        assert!(!link.is_alive());
        assert!(link.ask("m_0").is_err(), "a dead worker is not asked");
    }
}
