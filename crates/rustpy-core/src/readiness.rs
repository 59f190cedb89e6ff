//! Instance readiness: a model's own `is_ready()` (python_backend r26.03),
//! asked by the server through `TRITONBACKEND_ModelInstanceReady` (servers
//! from 2.64 call it; 2.51 does not) and by rustpy's readiness probe, which
//! publishes the answer as a gauge on the metrics endpoint on every server.
//!
//! The rules are upstream's: at most one `is_ready()` call is in flight per
//! instance; a check that finds one running waits for its result instead of
//! starting another; a caller waits at most the timeout (then the instance
//! counts as not ready, while the call goes on in the background and its
//! result answers whoever waits for it then). User code never runs under a
//! lock: the call runs on its own thread, the lock guards only the state.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};

/// How long a readiness check waits for `is_ready()` (upstream's
/// kUserModelReadinessTimeoutMs).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One `is_ready()` call: `Ok(ready)`, or why it could not say.
pub type ReadyCall = Arc<dyn Fn() -> Result<bool> + Send + Sync>;

#[derive(Default)]
struct State {
    /// A call runs now.
    in_flight: bool,
    /// Completed calls (a waiter knows its call ended when this moves).
    completed: u64,
    /// The last completed call's answer.
    last: Option<Result<bool>>,
    /// No new calls (the instance is being finalized).
    closed: bool,
    /// Checks waiting for an answer now.
    waiting: usize,
}

struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

/// The readiness state of one instance.
#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
    call: ReadyCall,
    timeout: Duration,
}

impl Readiness {
    /// `call` runs the user's `is_ready()` (on a thread of its own, never
    /// two at once).
    pub fn new(call: ReadyCall, timeout: Duration) -> Self {
        Readiness {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                done: Condvar::new(),
            }),
            call,
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks whether the instance is ready: `Ok(true)`/`Ok(false)` as the
    /// model answered, an error when it raised, answered something else than
    /// a bool, or did not answer within the timeout (UNAVAILABLE).
    pub fn check(&self) -> Result<bool> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.lock();
        if state.closed {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "the instance is being unloaded",
            ));
        }
        let joined = state.in_flight;
        if !joined {
            state.in_flight = true;
            self.spawn_call()?;
        }
        let seen = state.completed;
        state.waiting += 1;
        self.wait_answer(state, seen, deadline, joined)
    }

    fn wait_answer(
        &self,
        mut state: MutexGuard<'_, State>,
        seen: u64,
        deadline: Instant,
        joined: bool,
    ) -> Result<bool> {
        while state.completed == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting -= 1;
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    if joined {
                        "Timed out waiting for in-flight is_ready() response"
                    } else {
                        "Timed out waiting for user-defined is_ready() response"
                    },
                ));
            }
            state = self
                .shared
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.waiting -= 1;
        state
            .last
            .clone()
            .unwrap_or_else(|| Err(Error::internal("readiness check without an answer")))
    }

    /// Checks waiting for an answer now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Starts the call on its own thread; its answer is stored and every
    /// waiter woken, whenever it comes.
    fn spawn_call(&self) -> Result<()> {
        let me = self.clone();
        let started = thread::Builder::new()
            .name("rustpy-is-ready".into())
            .spawn(move || {
                let answer = (me.call)();
                {
                    let mut state = me.lock();
                    state.in_flight = false;
                    state.completed += 1;
                    state.last = Some(answer.clone());
                    me.shared.done.notify_all();
                }
            });
        match started {
            Ok(_) => Ok(()),
            Err(e) => {
                self.lock().in_flight = false;
                Err(Error::internal(format!(
                    "cannot start the readiness check: {e}"
                )))
            }
        }
    }

    /// No new calls from now on (a call in flight finishes on its own).
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.done.notify_all();
    }

    /// Whether a call is running now.
    pub fn in_flight(&self) -> bool {
        self.lock().in_flight
    }
}

/// Runs `tick` every `interval` on a thread of its own until dropped (the
/// readiness gauge of servers that never ask the backend themselves).
pub struct Probe {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Probe {
    pub fn start(
        name: &str,
        interval: Duration,
        tick: impl Fn() + Send + 'static,
    ) -> Result<Probe> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let theirs = stop.clone();
        thread::Builder::new()
            .name(format!("rustpy-ready-{name}"))
            .spawn(move || {
                let (lock, cv) = &*theirs;
                loop {
                    if *lock.lock().unwrap_or_else(|p| p.into_inner()) {
                        return;
                    }
                    tick();
                    let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, interval, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stopped {
                        return;
                    }
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the readiness probe: {e}")))?;
        Ok(Probe { stop })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A call that counts how many run at once and waits for `release`.
    struct Gate {
        running: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
        release: Mutex<bool>,
        cv: Condvar,
    }

    fn gated(answer: bool) -> (Arc<Gate>, ReadyCall) {
        let gate = Arc::new(Gate {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            release: Mutex::new(false),
            cv: Condvar::new(),
        });
        let g = gate.clone();
        let call: ReadyCall = Arc::new(move || {
            g.calls.fetch_add(1, Ordering::SeqCst);
            let now = g.running.fetch_add(1, Ordering::SeqCst) + 1;
            g.most.fetch_max(now, Ordering::SeqCst);
            let mut open = g.release.lock().unwrap();
            while !*open {
                open = g.cv.wait(open).unwrap();
            }
            g.running.fetch_sub(1, Ordering::SeqCst);
            Ok(answer)
        });
        (gate, call)
    }

    fn open(gate: &Gate) {
        *gate.release.lock().unwrap() = true;
        gate.cv.notify_all();
    }

    #[test]
    fn answers_as_the_model_does() {
        for (answer, want) in [
            (Ok(true), Ok(true)),
            (Ok(false), Ok(false)),
            (Err(Error::internal("raised")), Err("raised".to_string())),
        ] {
            let a = answer.clone();
            let r = Readiness::new(Arc::new(move || a.clone()), Duration::from_secs(30));
            assert_eq!(r.check().map_err(|e| e.message), want);
        }
    }

    #[test]
    fn one_call_in_flight_and_a_timeout_for_each_waiter() {
        let (gate, call) = gated(true);
        let r = Readiness::new(call, Duration::from_millis(50));
        // Four checks time out while the one call hangs: still one call.
        for _ in 0..4 {
            let e = r.check().unwrap_err();
            assert_eq!(e.code, ErrorCode::Unavailable, "{}", e.message);
        }
        let joined = r.check().unwrap_err();
        assert!(joined.message.contains("in-flight"), "{}", joined.message);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
        assert!(r.in_flight());
        // A waiter gets the late answer of the call it joined.
        let r2 = Readiness {
            timeout: Duration::from_secs(60),
            ..r.clone()
        };
        let waiter = thread::spawn(move || r2.check());
        while r.waiting() == 0 {
            thread::yield_now();
        }
        open(&gate);
        assert!(waiter.join().unwrap().unwrap());
        assert_eq!(gate.most.load(Ordering::SeqCst), 1);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
        // The next check is a new call.
        assert!(r2_check(&r));
        assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    }

    fn r2_check(r: &Readiness) -> bool {
        Readiness {
            timeout: Duration::from_secs(60),
            ..r.clone()
        }
        .check()
        .unwrap()
    }

    #[test]
    fn concurrent_checks_share_one_call() {
        let (gate, call) = gated(false);
        let r = Readiness::new(call, Duration::from_secs(60));
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                thread::spawn(move || r.check())
            })
            .collect();
        // Every check waits on the one call before it ends.
        while r.waiting() < 8 {
            thread::yield_now();
        }
        open(&gate);
        for w in waiters {
            assert!(!w.join().unwrap().unwrap());
        }
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_closed_instance_is_not_ready() {
        let r = Readiness::new(Arc::new(|| Ok(true)), Duration::from_secs(30));
        assert!(r.check().unwrap());
        r.close();
        assert_eq!(r.check().unwrap_err().code, ErrorCode::Unavailable);
    }

    #[test]
    fn the_probe_ticks_until_dropped() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let probe = Probe::start("t", Duration::from_millis(1), move || {
            t.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        while ticks.load(Ordering::SeqCst) < 3 {
            thread::yield_now();
        }
        let at_drop = ticks.load(Ordering::SeqCst);
        drop(probe);
        thread::sleep(Duration::from_millis(200));
        // At most the tick that had already begun.
        assert!(ticks.load(Ordering::SeqCst) <= at_drop + 1);
    }
}
