//! A worker's life on the backend side: what it needs to start
//! ([`WorkerConfig`]), spawning it from one long-lived thread, the first
//! exchange, reaping, killing and stopping it, and restarting it with
//! backoff ([`Supervised`]).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::guard::WorkerGuard;
use super::reader::Reader;
use super::ready::{CurrentLink, ReadyLink};
use super::response::OpenRequests;
use super::sys;
use super::transport::{write_to, Channel, InputRegion, RegionSizes, Regions, Writer};
use super::wire::{error_from_wire, AutoComplete, FromWorker, Init, ToWorker};
use crate::constants::LogLevel;
use crate::error::{Error, Result};
use crate::metrics::WorkerMetrics;
use crate::python::{emit_log, InstanceInfo};
use rustpy_config::model::{
    DEFAULT_PENDING_CALLS, DEFAULT_SHM_LIMIT_MB, INPUT_SHM_LIMIT_KEY, MEMORY_LIMIT_KEY,
    SHM_LIMIT_KEY,
};

/// How long an unloading worker may take to run `finalize` and exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a worker whose control channel broke may take to exit before it
/// is killed (a dying process exits within this).
const REAP_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between two start attempts of a worker that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a busy worker's memory gauges are updated.
const MEMORY_SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// A process's resident memory (VmRSS in /proc/PID/status), if readable.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a process-isolated instance needs to (re)start its worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The `rustpy-worker` executable.
    pub executable: PathBuf,
    pub model_name: String,
    pub version: u64,
    pub model_dir: String,
    pub config_json: String,
    pub instance: InstanceInfo,
    pub execute_timeout: Option<Duration>,
    /// The backend's `--backend-config=rustpy,site-packages=DIR`, if any.
    pub site_packages: Option<PathBuf>,
    /// The model's own environment's site-packages (ahead of everything).
    pub env_site_packages: Option<PathBuf>,
    /// `rustpy.memory_limit_mb`: RLIMIT_DATA of the worker, MiB.
    pub memory_limit_mb: Option<u64>,
    /// `rustpy.input_shm_limit_mb`: the size of the input region, MiB
    /// (default: `shm_limit_mb`).
    pub input_shm_limit_mb: Option<u64>,
    /// `rustpy.shm_limit_mb`: the size of each other shared region, MiB
    /// (default [`DEFAULT_SHM_LIMIT_MB`]).
    pub shm_limit_mb: Option<u64>,
    /// `rustpy.pending_calls_limit`: server calls in flight per worker
    /// (default [`DEFAULT_PENDING_CALLS`]).
    pub pending_calls_limit: Option<u64>,
    /// An unpacked `EXECUTION_ENV_PATH` archive: its `lib/` and `bin/` go
    /// first on the worker's `LD_LIBRARY_PATH` and `PATH`.
    pub env_archive_root: Option<PathBuf>,
    /// Keeps that archive's cache entry from being pruned while loaded.
    pub env_lease: Option<Arc<rustpy_fetch::env::EnvLease>>,
}

impl WorkerConfig {
    /// The worker's arguments for its environment and memory limit.
    fn env_args(&self, command: &mut Command) {
        if let Some(dir) = &self.site_packages {
            command.arg("--site-packages").arg(dir);
        }
        if let Some(dir) = &self.env_site_packages {
            command.arg("--env-site-packages").arg(dir);
        }
        if let Some(mb) = self.memory_limit_mb {
            command.arg("--memory-limit-mb").arg(mb.to_string());
        }
        if let Some(root) = &self.env_archive_root {
            command.envs(super::env::worker_command_env(root));
        }
    }

    /// "rustpy.memory_limit_mb = N MiB", or "" without a limit.
    pub(super) fn memory_note(&self) -> String {
        match self.memory_limit_mb {
            Some(mb) => format!("{MEMORY_LIMIT_KEY} = {mb} MiB"),
            None => String::new(),
        }
    }

    /// Upstream's words for an instance whose process died (operators and
    /// upstream's QA grep them): "Stub process '<instance>' is not healthy."
    pub(super) fn unhealthy(&self) -> String {
        format!("Stub process '{}' is not healthy.", self.instance.name)
    }

    /// "model 'M' instance 'I'", for messages.
    pub(super) fn label(&self) -> String {
        format!(
            "model '{}' instance '{}'",
            self.model_name, self.instance.name
        )
    }

    /// The size of each shared region, from the limits.
    fn region_sizes(&self) -> RegionSizes {
        let bytes = |mb: u64| usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let shared = self.shm_limit_mb.unwrap_or(DEFAULT_SHM_LIMIT_MB);
        RegionSizes {
            input: bytes(self.input_shm_limit_mb.unwrap_or(shared)),
            shared: bytes(shared),
        }
    }

    /// "rustpy.input_shm_limit_mb = N MiB" or "rustpy.shm_limit_mb = N
    /// MiB": what sets the size of the input region.
    pub(super) fn input_limit_note(&self) -> String {
        match self.input_shm_limit_mb {
            Some(mb) => format!("{INPUT_SHM_LIMIT_KEY} = {mb} MiB"),
            None => format!(
                "{SHM_LIMIT_KEY} = {} MiB",
                self.shm_limit_mb.unwrap_or(DEFAULT_SHM_LIMIT_MB)
            ),
        }
    }

    fn pending_calls(&self) -> usize {
        usize::try_from(self.pending_calls_limit.unwrap_or(DEFAULT_PENDING_CALLS))
            .unwrap_or(usize::MAX)
    }
}

pub(super) fn log(level: LogLevel, message: &str) {
    emit_log(level, "rustpy", 0, message);
}

/// Spawns children from one thread that lives as long as the process: the
/// parent-death signal fires when the *thread* that forked exits, and Triton
/// creates and ends threads (model loading) as it pleases.
fn spawn(command: Command) -> std::io::Result<Child> {
    type Job = (Command, Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rustpy-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the rustpy-spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// How a worker process ended: what messages say ("exited on SIGSEGV"),
/// and the cause `rustpy_worker_restarts_total` counts it under ("SIGSEGV").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Exit {
    pub(super) text: String,
    pub(super) cause: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The memory a (sparse) memfd holds: its allocated blocks.
fn held_bytes(file: &std::fs::File) -> usize {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map_or(0, |m| m.blocks() as usize * 512)
}

/// "exited on SIGSEGV" (cause: the signal) / "exited with status 3"
/// (cause: exit).
pub(super) fn describe_exit(status: ExitStatus) -> Exit {
    if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        let name = sys::signal_name(sig);
        Exit {
            text: format!("exited on {name}{core}"),
            cause: name,
        }
    } else {
        Exit {
            text: format!("exited with status {}", status.code().unwrap_or(-1)),
            cause: "exit".into(),
        }
    }
}

/// Runs the model's `auto_complete_config` in a short-lived worker (the
/// model is never imported in the server). `Ok(None)`: nothing to change.
pub fn auto_complete(cfg: &WorkerConfig) -> Result<Option<String>> {
    let msg = ToWorker::AutoComplete(AutoComplete {
        config_json: cfg.config_json.clone(),
        model_dir: cfg.model_dir.clone(),
        version: cfg.version,
    });
    let (mut worker, first) = Worker::launch(cfg, &msg, "running auto_complete_config")?;
    worker.shutdown();
    match first {
        FromWorker::AutoCompleted { result } => result.map_err(error_from_wire),
        _ => Err(Error::internal(format!(
            "{}: the worker process sent an unexpected message during auto-complete",
            cfg.label()
        ))),
    }
}

/// One running worker process. Dropped without [`Worker::shutdown`] (an
/// error while starting it), it is killed and reaped: never a zombie.
pub(super) struct Worker {
    pub(super) child: Child,
    pub(super) pid: u32,
    socket: Writer,
    /// Frames for the execute thread (the reader thread handles the rest).
    pub(super) frames: Receiver<FromWorker>,
    pub(super) input: InputRegion,
    /// Requests whose final response has not gone out, shared with the
    /// reader thread, which answers them.
    pub(super) open: Arc<OpenRequests>,
    /// The number of the last batch sent.
    pub(super) batch: u64,
    /// "model 'M' instance 'I'", for errors raised while placing a batch.
    pub(super) label: String,
    /// The input and output regions' memfds again, for the memory they
    /// hold (metrics).
    pub(super) region_files: [std::fs::File; 2],
    /// What sets the input region's size, for errors ("rustpy.shm_limit_mb = N MiB").
    pub(super) input_limit: String,
    /// Trips when the worker breaks the protocol (isolation/guard.rs).
    pub(super) guard: Arc<WorkerGuard>,
    reaped: bool,
    /// "Stub process 'I' is not healthy.", for a worker that dies starting.
    unhealthy: String,
    /// Its liveness and `is_ready()`, for readiness checks.
    pub(super) ready: Arc<ReadyLink>,
}

impl Worker {
    /// Starts a worker and runs the model's initialisation in it.
    pub(super) fn start(cfg: &WorkerConfig) -> Result<Worker> {
        let init = ToWorker::Init(Init {
            config_json: cfg.config_json.clone(),
            model_dir: cfg.model_dir.clone(),
            version: cfg.version,
            instance: (&cfg.instance).into(),
        });
        let (mut worker, first) = Self::launch(cfg, &init, "running initialize")?;
        match first {
            FromWorker::Ready { is_ready } => {
                worker.ready.set_has_is_ready(is_ready);
                Ok(worker)
            }
            FromWorker::InitFailed { code, message } => {
                worker.shutdown();
                Err(error_from_wire((code, message)))
            }
            _ => {
                worker.kill();
                Err(Error::internal(format!(
                    "{}: the worker process sent an unexpected message while starting",
                    cfg.label()
                )))
            }
        }
    }

    /// Starts a worker process, sends it `first` and returns its first
    /// answer (`doing` names that step in errors).
    fn launch(cfg: &WorkerConfig, first: &ToWorker, doing: &str) -> Result<(Worker, FromWorker)> {
        let what = |e: std::io::Error| {
            Error::internal(format!(
                "{}: cannot start the worker process {}: {e}",
                cfg.label(),
                cfg.executable.display()
            ))
        };
        let regions = Regions::create(cfg.region_sizes()).map_err(what)?;
        let (ours, theirs) = UnixStream::pair().map_err(what)?;
        let mut child = spawn(worker_command(cfg, &theirs, &regions)).map_err(what)?;
        drop(theirs);
        let pid = child.id();
        let parts = (|| {
            let guard = WorkerGuard::new(pid, cfg.label(), &ours)?;
            let read_half = ours.try_clone()?;
            Ok((guard.clone(), read_half, Channel::new(ours, guard)?))
        })();
        let (guard, read_half, socket) = match parts {
            Ok(parts) => parts,
            Err(e) => {
                sys::kill(pid);
                sys::kill_group(pid);
                let _ = child.wait();
                return Err(what(e));
            }
        };
        let open = Arc::new(OpenRequests::default());
        let ready = ReadyLink::new(socket.clone());
        let Regions {
            input,
            input_view,
            output,
            region_files,
            bls_in,
            bls_out,
            ..
        } = regions;
        let reader = Reader {
            pid,
            label: cfg.label(),
            memory_note: cfg.memory_note(),
            replies: socket.clone(),
            open: open.clone(),
            ready: ready.clone(),
            output,
            input_view,
            pending_calls: cfg.pending_calls(),
        };
        let frames = match reader.start(read_half, bls_in, bls_out) {
            Ok(frames) => frames,
            Err(e) => {
                sys::kill(pid);
                sys::kill_group(pid);
                guard.reaping();
                let _ = child.wait();
                guard.close();
                return Err(what(e));
            }
        };
        let worker = Worker {
            child,
            pid,
            socket,
            frames,
            input,
            open,
            batch: 0,
            label: cfg.label(),
            region_files,
            input_limit: cfg.input_limit_note(),
            guard,
            reaped: false,
            unhealthy: cfg.unhealthy(),
            ready,
        };
        worker.first_answer(first, doing)
    }

    /// Sends the first frame and waits for the worker's answer; a worker
    /// that dies meanwhile is reaped and its end described.
    fn first_answer(mut self, first: &ToWorker, doing: &str) -> Result<(Worker, FromWorker)> {
        if self.send(first).is_err() {
            let cause = self.reap();
            return Err(Error::internal(format!(
                "{} ({}: the worker process {cause} while starting)",
                self.unhealthy, self.label
            )));
        }
        match self.frames.recv() {
            Ok(frame) => Ok((self, frame)),
            Err(_) => {
                let cause = self.reap();
                Err(Error::internal(format!(
                    "{} ({}: the worker process (pid {}) {cause} while starting ({doing}))",
                    self.unhealthy, self.label, self.pid
                )))
            }
        }
    }

    pub(super) fn send(&mut self, msg: &ToWorker) -> std::io::Result<()> {
        write_to(&self.socket, msg)
    }

    /// Waits for the (dead or dying) process and describes how it ended.
    /// One that is still running after a grace period (the channel broke
    /// but the process did not die) is killed: waiting for it would hang.
    /// What it forked goes with it (its process group).
    pub(super) fn reap(&mut self) -> Exit {
        let deadline = Instant::now() + REAP_GRACE;
        let mut killed = false;
        loop {
            match sys::has_exited(self.pid) {
                Ok(true) => break,
                Ok(false) if Instant::now() >= deadline => {
                    sys::kill(self.pid);
                    killed = true;
                    break;
                }
                Ok(false) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Exit {
                        text: format!("ended (cannot read its status: {e})"),
                        cause: "unknown".into(),
                    }
                }
            }
        }
        let ended = self.finish();
        if let Some(why) = self.guard.broken() {
            return Exit {
                text: format!("broke the control protocol ({why}) and was killed"),
                cause: "protocol".into(),
            };
        }
        match killed {
            true => Exit {
                text: format!(
                    "stopped answering (its control channel broke) and was killed ({ended})"
                ),
                cause: "unresponsive".into(),
            },
            false => ended,
        }
    }

    /// The process has exited (or is about to, killed): kills what it
    /// forked, reaps it, closes the control channel (the reader thread
    /// ends, whoever still holds the other end). Describes its end.
    fn finish(&mut self) -> Exit {
        if self.reaped {
            return Exit {
                text: "ended".into(),
                cause: "exit".into(),
            };
        }
        // While the worker is unreaped its group id cannot be reused.
        sys::kill_group(self.pid);
        self.guard.reaping();
        let status = self.child.wait();
        self.reaped = true;
        self.guard.close();
        match status {
            Ok(status) => describe_exit(status),
            Err(e) => Exit {
                text: format!("ended (cannot read its status: {e})"),
                cause: "unknown".into(),
            },
        }
    }

    pub(super) fn kill(&mut self) -> Exit {
        if !self.reaped {
            sys::kill(self.pid);
        }
        self.reap()
    }

    /// Asks the worker to run `finalize` and exit; kills it after a grace period.
    pub(super) fn shutdown(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.send(&ToWorker::Shutdown);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            match sys::has_exited(self.pid) {
                Ok(true) | Err(_) => break,
                Ok(false) if Instant::now() >= deadline => {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "rustpy: {}: the worker process (pid {}) did not exit within {} s of being asked to (finalize still running?); killed",
                            self.label,
                            self.pid,
                            SHUTDOWN_GRACE.as_secs()
                        ),
                    );
                    sys::kill(self.pid);
                    break;
                }
                Ok(false) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        self.finish();
    }

    /// Whether the worker died on its own while idle (not reaped yet).
    pub(super) fn exited(&self) -> bool {
        !self.reaped && sys::has_exited(self.pid).unwrap_or(true)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.reaped {
            sys::kill(self.pid);
            self.finish();
        }
    }
}

/// The `rustpy-worker` command line: the fds it inherits (socket, regions),
/// the model name (for `ps`), its environment and memory limit.
fn worker_command(cfg: &WorkerConfig, socket: &UnixStream, regions: &Regions) -> Command {
    let [input, output, bls_in, bls_out] = regions.child_fds;
    let mut command = Command::new(&cfg.executable);
    command
        .arg("--socket-fd")
        .arg(socket.as_raw_fd().to_string())
        .arg("--input-fd")
        .arg(input.to_string())
        .arg("--output-fd")
        .arg(output.to_string())
        .arg("--bls-in-fd")
        .arg(bls_in.to_string())
        .arg("--bls-out-fd")
        .arg(bls_out.to_string())
        .arg("--model")
        .arg(&cfg.model_name)
        .stdin(Stdio::null());
    cfg.env_args(&mut command);
    sys::prepare_child(
        &mut command,
        vec![socket.as_raw_fd(), input, output, bls_in, bls_out],
    );
    command
}

fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1 << (failures - 2).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// An instance's worker, restarted as it fails: at once after a crash or
/// hang, then with backoff (250 ms, 500 ms, 1 s, … up to 30 s) while new
/// workers fail to start. Each loss, failed start and the worker's state
/// go to its metrics.
pub(super) struct Supervised {
    pub(super) worker: Option<Worker>,
    pub(super) metrics: WorkerMetrics,
    /// Consecutive failures (a crash or hang, then failed starts) since the
    /// last successful start or batch; drives the restart backoff.
    failures: u32,
    last_cause: String,
    next_start: Instant,
    /// When the memory gauges were last updated.
    sampled: Option<Instant>,
    /// The current worker's readiness link, shared with the instance's
    /// readiness checks (which never take the instance's lock).
    pub(super) link: CurrentLink,
}

impl Supervised {
    pub(super) fn new(worker: Worker, metrics: WorkerMetrics) -> Supervised {
        metrics.set_up(true);
        Supervised {
            link: Arc::new(Mutex::new(worker.ready.clone())),
            worker: Some(worker),
            metrics,
            failures: 0,
            last_cause: String::new(),
            next_start: Instant::now(),
            sampled: None,
        }
    }

    /// The worker to send a batch to. One that died while idle (a user
    /// thread called os._exit, an OOM kill) is reaped and replaced first;
    /// none is started before the backoff allows, and then the error says
    /// why and when the next attempt is.
    pub(super) fn ready(&mut self, cfg: &WorkerConfig) -> std::result::Result<&mut Worker, String> {
        if let Some(w) = self.worker.as_mut() {
            if w.exited() {
                let exit = w.reap();
                let what = format!("{exit} while idle");
                log(
                    LogLevel::Error,
                    &format!(
                        "rustpy: {}: the worker process (pid {}) {what}",
                        cfg.label(),
                        w.pid
                    ),
                );
                self.worker = None;
                self.on_failure(cfg, format!("worker {what}"), &exit.cause);
            }
        }
        if self.worker.is_none() && Instant::now() >= self.next_start {
            self.try_start(cfg);
        }
        let wait = self.next_start.saturating_duration_since(Instant::now());
        let (cause, wait_ms) = (self.last_cause.clone(), wait.as_millis());
        self.worker.as_mut().ok_or_else(|| {
            format!(
                "{}: the worker process is not running ({cause}); next start attempt in {wait_ms} ms",
                cfg.label()
            )
        })
    }

    /// A batch went through: backoff starts afresh.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Updates the worker's memory gauges, at most once a second (reading
    /// /proc costs more than a small batch).
    pub(super) fn sample_memory(&mut self) {
        let (Some(w), true) = (&self.worker, self.metrics.is_on()) else {
            return;
        };
        if self
            .sampled
            .is_some_and(|at| at.elapsed() < MEMORY_SAMPLE_PERIOD)
        {
            return;
        }
        self.sampled = Some(Instant::now());
        // The regions are sparse, of a fixed size: what they hold is the
        // pages written so far.
        let [input, output] = w.region_files.each_ref().map(held_bytes);
        self.metrics
            .set_memory(resident_bytes(w.pid), input, output);
    }

    /// Records a lost worker (`cause`: its restarts_total label) and
    /// restarts it now when the backoff allows.
    pub(super) fn on_failure(&mut self, cfg: &WorkerConfig, why: String, cause: &str) {
        self.metrics.restarted(cause);
        self.metrics.set_up(false);
        self.failures += 1;
        self.last_cause = why;
        let delay = backoff(self.failures);
        self.next_start = Instant::now() + delay;
        if delay.is_zero() {
            self.try_start(cfg);
        } else {
            log(
                LogLevel::Warn,
                &format!(
                    "rustpy: {}: {} failures in a row; next worker start in {} ms",
                    cfg.label(),
                    self.failures,
                    delay.as_millis()
                ),
            );
        }
    }

    fn try_start(&mut self, cfg: &WorkerConfig) {
        match Worker::start(cfg) {
            Ok(w) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "rustpy: {}: restarted its worker process (pid {}) after: {}",
                        cfg.label(),
                        w.pid,
                        self.last_cause
                    ),
                );
                *self.link.lock().unwrap_or_else(|p| p.into_inner()) = w.ready.clone();
                self.worker = Some(w);
                self.metrics.set_up(true);
                self.sampled = None;
                // Backoff is for workers that cannot start; a worker that
                // started and later crashed is restarted at once.
                self.failures = 0;
            }
            Err(e) => {
                self.metrics.start_failed();
                self.failures += 1;
                self.last_cause = format!("restart failed: {}", e.message);
                let delay = backoff(self.failures).max(Duration::from_millis(250));
                self.next_start = Instant::now() + delay;
                log(
                    LogLevel::Error,
                    &format!(
                        "rustpy: {}: cannot restart its worker process ({} failures in a row, next attempt in {} ms): {}",
                        cfg.label(),
                        self.failures,
                        delay.as_millis(),
                        e.message
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_the_second_failure_and_stop_growing() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(1));
        assert_eq!(backoff(60), MAX_BACKOFF);
    }
}
