//! [`WorkerInstance`]: a model instance whose Python runs in a worker
//! process. It lays each batch out in the input region, sends it, waits for
//! the worker's Done, and on a crash or timeout fails the batch and restarts
//! the worker.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lifecycle::{backoff, describe_exit, label, Worker, WorkerConfig};
use super::response::OpenRequest;
use super::wire::{request_id, request_index, Execute, FromWorker, InputLayout, ToWorker};
use crate::constants::LogLevel;
use crate::engine::{ExecReport, Outcome, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::python::emit_log;
use crate::request::InferRequest;
use rustpy_config::model::INPUT_SHM_LIMIT_KEY;
use std::sync::atomic::Ordering as AtomicOrdering;

/// "1.5 MiB"
fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Why a running batch lost its worker.
enum Lost {
    Died(String),
    TimedOut(Duration),
}

struct State {
    worker: Option<Worker>,
    /// Consecutive failures (a crash or hang, then failed starts) since the
    /// last successful start or batch; drives the restart backoff.
    failures: u32,
    last_cause: String,
    next_start: Instant,
}

/// A model instance whose Python runs in a `rustpy-worker` process.
pub struct WorkerInstance {
    cfg: WorkerConfig,
    state: Mutex<State>,
}

impl WorkerInstance {
    /// Starts the worker; an error here (initialize raised, the worker
    /// crashed) fails the instance's load with that cause.
    pub fn new(cfg: WorkerConfig) -> Result<WorkerInstance> {
        let worker = Worker::start(&cfg)?;
        emit_log(
            LogLevel::Info,
            "rustpy",
            0,
            &format!(
                "rustpy: {} runs in worker process {}",
                label(&cfg),
                worker.pid
            ),
        );
        Ok(WorkerInstance {
            cfg,
            state: Mutex::new(State {
                worker: Some(worker),
                failures: 0,
                last_cause: String::new(),
                next_start: Instant::now(),
            }),
        })
    }

    pub fn model_name(&self) -> &str {
        &self.cfg.model_name
    }

    /// The worker's pid, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.lock().worker.as_ref().map(|w| w.pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the worker (runs the user's `finalize` there).
    pub fn finalize(&self) {
        if let Some(mut w) = self.lock().worker.take() {
            w.shutdown();
        }
    }

    /// Records a lost worker and restarts it now when the backoff allows.
    fn on_failure(&self, state: &mut State, cause: String) {
        state.failures += 1;
        state.last_cause = cause;
        let delay = backoff(state.failures);
        state.next_start = Instant::now() + delay;
        if delay.is_zero() {
            self.try_start(state);
        } else {
            emit_log(
                LogLevel::Warn,
                "rustpy",
                0,
                &format!(
                    "rustpy: {}: {} failures in a row; next worker start in {} ms",
                    label(&self.cfg),
                    state.failures,
                    delay.as_millis()
                ),
            );
        }
    }

    fn try_start(&self, state: &mut State) {
        match Worker::start(&self.cfg) {
            Ok(w) => {
                emit_log(
                    LogLevel::Warn,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: restarted its worker process (pid {}) after: {}",
                        label(&self.cfg),
                        w.pid,
                        state.last_cause
                    ),
                );
                state.worker = Some(w);
                // Backoff is for workers that cannot start; a worker that
                // started and later crashed is restarted at once.
                state.failures = 0;
            }
            Err(e) => {
                state.failures += 1;
                state.last_cause = format!("restart failed: {}", e.message);
                let delay = backoff(state.failures).max(Duration::from_millis(250));
                state.next_start = Instant::now() + delay;
                emit_log(
                    LogLevel::Error,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: cannot restart its worker process ({} failures in a row, next attempt in {} ms): {}",
                        label(&self.cfg),
                        state.failures,
                        delay.as_millis(),
                        e.message
                    ),
                );
            }
        }
    }

    /// Executes one batch in the worker; every request gets a final answer
    /// (an unreadable one, `Err`, its error, here: only the others go to the
    /// worker).
    pub fn execute<R: Responder + 'static>(
        &self,
        requests: &[crate::error::Result<InferRequest<'_>>],
        responders: Vec<R>,
    ) -> ExecReport {
        let n = requests.len();
        let mut readable = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut kept = Vec::with_capacity(n);
        for (i, (req, mut responder)) in requests.iter().zip(responders).enumerate() {
            match req {
                Ok(req) => {
                    readable.push(req);
                    positions.push(i);
                    kept.push(responder);
                }
                Err(e) => responder.send_error(e),
            }
        }
        let inner = self.execute_readable(&readable, kept);
        let mut report = ExecReport {
            calls: inner.calls,
            compute_start: inner.compute_start,
            compute_end: inner.compute_end,
            ..ExecReport::new(n)
        };
        for (k, &i) in positions.iter().enumerate() {
            report.outcomes[i] = inner.outcomes[k];
            report.rows[i] = inner.rows[k];
        }
        report
    }

    fn execute_readable<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        assert_eq!(
            requests.len(),
            responders.len(),
            "one responder per request"
        );
        let mut report = ExecReport::new(requests.len());
        let mut state = self.lock();
        // A worker that died while idle (a user thread called os._exit, an
        // OOM kill) is reaped and replaced before this batch goes to it.
        if let Some(w) = state.worker.as_mut() {
            if let Ok(Some(status)) = w.child.try_wait() {
                let what = format!("{} while idle", describe_exit(status));
                emit_log(
                    LogLevel::Error,
                    "rustpy",
                    0,
                    &format!(
                        "rustpy: {}: the worker process (pid {}) {what}",
                        label(&self.cfg),
                        w.pid
                    ),
                );
                state.worker = None;
                self.on_failure(&mut state, format!("worker {what}"));
            }
        }
        if state.worker.is_none() && Instant::now() >= state.next_start {
            self.try_start(&mut state);
        }
        let Some(worker) = state.worker.as_mut() else {
            let wait = state.next_start.saturating_duration_since(Instant::now());
            let err = Error::new(
                ErrorCode::Unavailable,
                format!(
                    "{}: the worker process is not running ({}); next start attempt in {} ms",
                    label(&self.cfg),
                    state.last_cause,
                    wait.as_millis()
                ),
            );
            for r in &mut responders {
                r.send_error(&err);
            }
            return report;
        };
        let sent_at = Instant::now();
        let outcome = run_batch(
            worker,
            self.cfg.execute_timeout,
            requests,
            responders,
            &mut report,
        );
        match outcome {
            Ok(compute) => {
                state.failures = 0;
                if let Some((a, b)) = compute {
                    report.compute_start = Some(sent_at + Duration::from_nanos(a));
                    report.compute_end = Some(sent_at + Duration::from_nanos(b));
                }
            }
            Err(lost) => {
                let mut worker = state.worker.take().expect("worker present");
                let (message, cause) = match lost {
                    Lost::Died(protocol) => {
                        let cause = worker.reap();
                        let extra = if protocol.is_empty() {
                            String::new()
                        } else {
                            format!(" ({protocol})")
                        };
                        (
                            format!(
                                "{}: the worker process (pid {}) {cause} while executing this request{extra}; it is being restarted{}",
                                label(&self.cfg),
                                worker.pid,
                                match self.cfg.memory_note() {
                                    n if n.is_empty() => n,
                                    n => format!(" (its memory limit: {n})"),
                                }
                            ),
                            format!("worker {cause}"),
                        )
                    }
                    Lost::TimedOut(limit) => {
                        worker.kill();
                        (
                            format!(
                                "{}: execution exceeded rustpy.execute_timeout_ms ({} ms); the worker process (pid {}) was killed and is being restarted",
                                label(&self.cfg),
                                limit.as_millis(),
                                worker.pid
                            ),
                            format!("execute timed out after {} ms", limit.as_millis()),
                        )
                    }
                };
                let err = Error::new(ErrorCode::Unavailable, message.clone());
                // This batch's requests still open fail with the cause (the
                // reader thread fails those of earlier batches).
                let batch = worker.batch;
                let failed: Vec<(usize, OpenRequest)> = {
                    let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
                    let ids: Vec<usize> = open
                        .iter()
                        .filter(|(_, o)| o.batch == batch)
                        .map(|(&id, _)| id)
                        .collect();
                    ids.into_iter()
                        .filter_map(|id| open.remove(&id).map(|o| (id, o)))
                        .collect()
                };
                worker.running.store(0, AtomicOrdering::Release);
                for (id, mut o) in failed {
                    o.responder.send_error(&err);
                    if let Some(o) = report.outcomes.get_mut(request_index(id)) {
                        *o = Outcome::Failed;
                    }
                }
                emit_log(LogLevel::Error, "rustpy", 0, &format!("rustpy: {message}"));
                self.on_failure(&mut state, cause);
            }
        }
        report
    }
}

impl Drop for WorkerInstance {
    fn drop(&mut self) {
        self.finalize();
    }
}

/// Gathers `requests` into the input region, runs them in the worker and
/// relays every response until all requests are final and the worker said
/// Done. Returns the compute window (ns after sending) on success.
fn run_batch<R: Responder + 'static>(
    worker: &mut Worker,
    timeout: Option<Duration>,
    requests: &[&InferRequest<'_>],
    responders: Vec<R>,
    report: &mut ExecReport,
) -> std::result::Result<Option<(u64, u64)>, Lost> {
    worker.batch += 1;
    let batch = worker.batch;
    // The reader thread answers from now on, during the batch and after it.
    {
        let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in responders.into_iter().enumerate() {
            open.insert(
                request_id(batch, i),
                OpenRequest {
                    responder: Box::new(r),
                    batch,
                    cancel_sent: false,
                },
            );
        }
    }
    // The batch goes where no pinned range is, growing the region first if
    // needed.
    let layout = InputLayout::of(requests);
    let needed = layout.size;
    let base = worker.place(needed);
    let grown = match worker.input_limit {
        Some(limit) if base + needed > limit => Err(Error::invalid_arg(format!(
            "{}: this batch's inputs need {} of shared memory{}, more than {INPUT_SHM_LIMIT_KEY} = {} MiB allows; send smaller requests or batches, or raise the limit",
            worker.label,
            mib(needed),
            if base > 0 {
                format!(" after {} still viewed by Python", mib(base))
            } else {
                String::new()
            },
            limit >> 20
        ))),
        _ => worker.input.grow(base + needed).map_err(|e| {
            Error::new(
                ErrorCode::Unavailable,
                format!(
                    "{}: cannot grow the input shared memory to {}: {e}",
                    worker.label,
                    mib(base + needed)
                ),
            )
        }),
    };
    if let Err(err) = grown {
        // Nothing was sent: the worker, alive and waiting for its next
        // frame, keeps serving. Only this batch's requests fail.
        let failed: Vec<OpenRequest> = {
            let mut open = worker.open.lock().unwrap_or_else(|p| p.into_inner());
            (0..requests.len())
                .filter_map(|i| open.remove(&request_id(batch, i)))
                .collect()
        };
        for mut o in failed {
            o.responder.send_error(&err);
        }
        emit_log(
            LogLevel::Error,
            "rustpy",
            0,
            &format!("rustpy: {}", err.message),
        );
        return Ok(None);
    }
    let input = &mut worker.input;
    let wire = layout.write(requests, base, |offset, bytes| input.write(offset, bytes));
    worker.running.store(batch, AtomicOrdering::Release);
    let msg = ToWorker::Execute(Execute {
        input_len: worker.input.len(),
        requests: wire,
        batch,
    });
    if worker.send(&msg).is_err() {
        return Err(Lost::Died(String::new()));
    }

    // Wait for Done: every response before it was delivered by the reader
    // thread (frames are handled in order); a decoupled request may stay
    // open after it and is answered when the worker sends its responses.
    let deadline = timeout.map(|t| (t, Instant::now() + t));
    let n = requests.len();
    loop {
        let frame = match deadline {
            Some((limit, at)) => {
                match worker
                    .frames
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => return Err(Lost::TimedOut(limit)),
                    Err(RecvTimeoutError::Disconnected) => return Err(Lost::Died(String::new())),
                }
            }
            None => match worker.frames.recv() {
                Ok(f) => f,
                Err(_) => return Err(Lost::Died(String::new())),
            },
        };
        if let FromWorker::Done(done) = frame {
            worker.running.store(0, AtomicOrdering::Release);
            worker.pinned.retain(|(b, _, _)| !done.released.contains(b));
            if done.pinned && needed > 0 {
                worker.pinned.push((batch, base, base + needed));
            }
            done.fill(report);
            // Rescheduled requests go back to Triton unanswered (released
            // with RESCHEDULE by the backend, as in-process): their
            // responders close without a response.
            for i in done.rescheduled_in(n) {
                let taken = worker
                    .open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&request_id(batch, i));
                if let Some(mut o) = taken {
                    o.responder.detach();
                    report.outcomes[i] = Outcome::Rescheduled;
                }
            }
            return Ok(done.compute_ns);
        }
    }
}
