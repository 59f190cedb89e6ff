//! What the backend does about a worker that breaks the protocol (design
//! hazard 15: the worker runs user code, which can write anything to the
//! control socket it finds in `/proc/self/fd`). Every backend thread that
//! talks to one worker shares its [`WorkerGuard`]: the reader thread trips
//! it on a malformed or impossible frame, a writer when the worker stops
//! reading. Tripping logs why, kills the worker and everything it forked
//! (its process group) at once, and shuts the control socket down, so the
//! reader thread ends even if a forked process still holds the other end.
//! The execute thread then fails the running batch with the reason, and
//! the worker is restarted as after a crash.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::sys;
use crate::constants::LogLevel;
use crate::python::emit_log;

/// One worker's guard (see the module's documentation).
pub(super) struct WorkerGuard {
    /// None: a guard with no process (tests, fuzzing).
    pid: Option<u32>,
    /// "model 'M' instance 'I'".
    label: String,
    state: Mutex<State>,
    /// A handle on the control socket, to shut it down.
    socket: UnixStream,
}

#[derive(Default)]
struct State {
    /// The lifecycle is reaping the process: no signal may go to its pid
    /// any more (it could name another process once reaped).
    reaped: bool,
    /// What the worker did, the first time it broke the protocol.
    broke: Option<String>,
}

impl WorkerGuard {
    pub(super) fn new(pid: u32, label: String, socket: &UnixStream) -> std::io::Result<Arc<Self>> {
        Self::with(Some(pid), label, socket)
    }

    /// A guard of no process: tripping it only closes `socket` (tests,
    /// fuzzing).
    pub(super) fn detached(label: String, socket: &UnixStream) -> std::io::Result<Arc<Self>> {
        Self::with(None, label, socket)
    }

    fn with(pid: Option<u32>, label: String, socket: &UnixStream) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(WorkerGuard {
            pid,
            label,
            state: Mutex::new(State::default()),
            socket: socket.try_clone()?,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker broke the protocol (`why`: what it did): logged, killed
    /// with its process group, the control channel closed. Only the first
    /// call counts.
    pub(super) fn broke(&self, why: String) {
        let mut state = self.lock();
        // Once reaped (killed for another reason, or gone), what is still
        // in the socket is of no interest.
        if state.broke.is_some() || state.reaped {
            return;
        }
        let pid = self.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        emit_log(
            LogLevel::Error,
            "rustpy",
            0,
            &format!(
                "rustpy: {}: the worker process{pid} broke the control protocol: {why}; it is killed and will be restarted",
                self.label
            ),
        );
        state.broke = Some(why);
        if let Some(pid) = self.pid {
            sys::kill(pid);
            sys::kill_group(pid);
        }
        drop(state);
        self.close();
    }

    /// Why the worker was killed, if it broke the protocol.
    pub(super) fn broken(&self) -> Option<String> {
        self.lock().broke.clone()
    }

    /// The lifecycle reaps the process now: from here on nothing signals
    /// its pid.
    pub(super) fn reaping(&self) {
        self.lock().reaped = true;
    }

    /// Shuts the control socket down both ways: the reader thread's read
    /// ends, writes fail, whoever else holds the socket (a process the
    /// worker forked) reaches nobody.
    pub(super) fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}
