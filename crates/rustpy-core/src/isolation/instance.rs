//! [`WorkerInstance`]: a model instance whose Python runs in a worker
//! process. Per batch it lays the inputs out in the input region, sends
//! Execute and waits for the worker's Done while the reader thread delivers
//! the responses; on a crash or timeout it fails the batch and has the
//! worker restarted.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lifecycle::{log, Supervised, Worker, WorkerConfig};
use super::ready::{current, CurrentLink};
use super::wire::{Done, Execute, FromWorker, InputLayout, ToWorker};
use crate::constants::LogLevel;
use crate::engine::{ExecReport, Outcome, Responder};
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::WorkerMetrics;
use crate::request::InferRequest;

/// "1.5 MiB"
fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Why a running batch lost its worker.
enum Lost {
    Died,
    TimedOut(Duration),
}

/// A model instance whose Python runs in a `rustpy-worker` process.
pub struct WorkerInstance {
    cfg: WorkerConfig,
    state: Mutex<Supervised>,
    /// The current worker's readiness link (replaced when it restarts),
    /// read without `state`'s lock, which a running batch holds.
    link: CurrentLink,
}

impl WorkerInstance {
    /// Starts the worker; an error here (initialize raised, the worker
    /// crashed) fails the instance's load with that cause. Its restarts,
    /// state and memory go to `metrics`.
    pub fn new(cfg: WorkerConfig, metrics: WorkerMetrics) -> Result<WorkerInstance> {
        let worker = Worker::start(&cfg)?;
        log(
            LogLevel::Info,
            &format!(
                "rustpy: {} runs in worker process {}",
                cfg.label(),
                worker.pid
            ),
        );
        let state = Supervised::new(worker, metrics);
        Ok(WorkerInstance {
            cfg,
            link: state.link.clone(),
            state: Mutex::new(state),
        })
    }

    pub fn model_name(&self) -> &str {
        &self.cfg.model_name
    }

    /// Whether the instance's worker process is alive (a dead one is
    /// replaced by the next batch). Never waits for a running batch.
    pub fn health(&self) -> Box<dyn Fn() -> bool + Send + Sync> {
        let link = self.link.clone();
        Box::new(move || current(&link).is_alive())
    }

    /// The call of the model's `is_ready()` in the worker, if the model
    /// defines one. It runs there on a thread of its own, also while a
    /// batch runs.
    pub fn ready_call(&self) -> Option<crate::readiness::ReadyCall> {
        let link = self.link.clone();
        let instance = self.cfg.instance.name.clone();
        current(&link)
            .has_is_ready()
            .then(|| -> crate::readiness::ReadyCall {
                std::sync::Arc::new(move || {
                    let now = current(&link);
                    if !now.has_is_ready() {
                        return Ok(true);
                    }
                    now.ask(&instance)
                })
            })
    }

    /// The worker's pid, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.lock().worker.as_ref().map(|w| w.pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Supervised> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the worker (runs the user's `finalize` there).
    pub fn finalize(&self) {
        if let Some(mut w) = self.lock().worker.take() {
            w.shutdown();
        }
    }

    /// Executes one batch of admitted requests (crate::admission, in the
    /// host) in the worker; every request gets a final answer. The report
    /// is over `requests`.
    pub fn execute<R: Responder + 'static>(
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
        let worker = match state.ready(&self.cfg) {
            Ok(worker) => worker,
            Err(why) => {
                let err = Error::new(ErrorCode::Unavailable, why);
                for r in &mut responders {
                    r.send_error(&err);
                }
                return report;
            }
        };
        let sent_at = Instant::now();
        match run_batch(
            worker,
            self.cfg.execute_timeout,
            requests,
            responders,
            &mut report,
        ) {
            Ok(compute) => {
                state.succeeded();
                state.sample_memory();
                if let Some((a, b)) = compute {
                    report.compute_start = Some(sent_at + Duration::from_nanos(a));
                    report.compute_end = Some(sent_at + Duration::from_nanos(b));
                }
            }
            Err(lost) => self.worker_lost(&mut state, lost, &mut report),
        }
        report
    }

    /// The running batch lost its worker: reap or kill it, fail the batch's
    /// requests still open with the cause (the reader thread fails those of
    /// earlier batches), and have it restarted.
    fn worker_lost(&self, state: &mut Supervised, lost: Lost, report: &mut ExecReport) {
        let mut worker = state.worker.take().expect("worker present");
        let (message, why, cause) = match lost {
            Lost::Died => {
                let exit = worker.reap();
                let limit = match self.cfg.memory_note() {
                    n if n.is_empty() => n,
                    n => format!(" (its memory limit: {n})"),
                };
                (
                    format!(
                        "{}: the worker process (pid {}) {exit} while executing this request; it is being restarted{limit}",
                        self.cfg.label(),
                        worker.pid,
                    ),
                    format!("worker {exit}"),
                    exit.cause,
                )
            }
            Lost::TimedOut(limit) => {
                worker.kill();
                (
                    format!(
                        "{}: execution exceeded rustpy.execute_timeout_ms ({} ms); the worker process (pid {}) was killed and is being restarted",
                        self.cfg.label(),
                        limit.as_millis(),
                        worker.pid
                    ),
                    format!("execute timed out after {} ms", limit.as_millis()),
                    "timeout".to_string(),
                )
            }
        };
        let err = Error::new(ErrorCode::Unavailable, message.clone());
        let failed = worker.open.fail_batch(worker.batch, &err);
        worker.open.set_running(0);
        for i in failed {
            if let Some(o) = report.outcomes.get_mut(i) {
                *o = Outcome::Failed;
            }
        }
        log(LogLevel::Error, &format!("rustpy: {message}"));
        state.on_failure(&self.cfg, why, &cause);
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
    worker.open.open_batch(batch, responders);
    let layout = InputLayout::of(requests);
    // Inputs are host memory (admission refused device memory), checked
    // here with the batch's other reasons not to send it.
    let readable = requests
        .iter()
        .flat_map(|r| &r.inputs)
        .try_for_each(|t| t.host_chunks().map(drop));
    let base = match readable.and_then(|()| make_room(worker, layout.size)) {
        Ok(base) => base,
        Err(err) => {
            // Nothing was sent: the worker, alive and waiting for its next
            // frame, keeps serving. Only this batch's requests fail.
            worker.open.fail_batch(batch, &err);
            log(LogLevel::Error, &format!("rustpy: {}", err.message));
            return Ok(None);
        }
    };
    let input = &mut worker.input.shm;
    let wire = layout.write(requests, base, |offset, bytes| input.write(offset, bytes));
    worker.open.set_running(batch);
    let msg = ToWorker::Execute(Execute {
        input_len: worker.input.shm.len(),
        requests: wire,
        batch,
    });
    if worker.send(&msg).is_err() {
        return Err(Lost::Died);
    }
    let done = await_done(worker, timeout)?;
    worker.open.set_running(0);
    let pin = (done.pinned && layout.size > 0).then_some((batch, base, base + layout.size));
    worker.input.update_pins(&done.released, pin);
    done.fill(report);
    // Rescheduled requests go back to Triton unanswered (released with
    // RESCHEDULE by the backend, as in-process).
    for i in done.rescheduled_in(requests.len()) {
        if worker.open.detach(batch, i) {
            report.outcomes[i] = Outcome::Rescheduled;
        }
    }
    Ok(done.compute_ns)
}

/// Where a batch of `needed` bytes goes in the input region (around the
/// ranges Python still views); an error when it does not fit in the region
/// (its size is the limit: `rustpy.input_shm_limit_mb`, else
/// `rustpy.shm_limit_mb`).
fn make_room(worker: &mut Worker, needed: usize) -> Result<usize> {
    let base = worker.input.place(needed);
    if base.saturating_add(needed) <= worker.input.shm.len() {
        return Ok(base);
    }
    Err(Error::invalid_arg(format!(
        "{}: this batch's inputs need {} of shared memory{}, more than {} allows; send smaller requests or batches, or raise the limit",
        worker.label,
        mib(needed),
        if base > 0 {
            format!(" after {} still viewed by Python", mib(base))
        } else {
            String::new()
        },
        worker.input_limit
    )))
}

/// Waits for the batch's Done: every response before it was delivered by
/// the reader thread (frames are handled in order); a decoupled request may
/// stay open after it and is answered when the worker sends its responses.
fn await_done(worker: &Worker, timeout: Option<Duration>) -> std::result::Result<Done, Lost> {
    let deadline = timeout.map(|t| (t, Instant::now() + t));
    loop {
        let frame = match deadline {
            Some((limit, at)) => {
                match worker
                    .frames
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(f) => f,
                    Err(RecvTimeoutError::Timeout) => return Err(Lost::TimedOut(limit)),
                    Err(RecvTimeoutError::Disconnected) => return Err(Lost::Died),
                }
            }
            None => worker.frames.recv().map_err(|_| Lost::Died)?,
        };
        if let FromWorker::Done(done) = frame {
            return Ok(done);
        }
    }
}
