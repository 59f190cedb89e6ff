//! Worker lifecycle on the backend side: what a worker needs to start
//! ([`WorkerConfig`]), spawning it from one long-lived thread, the
//! handshake, reaping, killing, stopping, and the restart backoff.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::bls::BlsRegion;
use super::response::{handle_response, watch_cancellations, Open, OpenRequest};
use super::rpc::{serve_call, BlsRegions, MetricTable};
use super::sys::{self, growing_memfd, memfd, Shm};
use super::transport::{write_to, Writer};
use super::wire::{error_from_wire, read_frame, AutoComplete, FromWorker, Init, ToWorker};
use crate::constants::LogLevel;
use crate::error::{Error, ErrorCode, Result};
use crate::python::{emit_log, InstanceInfo};
use rustpy_config::model::MEMORY_LIMIT_KEY;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Initial size of each shared-memory region; grown on demand.
const INITIAL_SHM: usize = 1 << 20;
/// How long an unloading worker may take to run `finalize` and exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a worker whose control channel broke may take to exit before it
/// is killed (a dying process exits within this).
const REAP_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between two start attempts of a worker that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    /// `rustpy.input_shm_limit_mb`: the largest the input region may grow to, MiB.
    pub input_shm_limit_mb: Option<u64>,
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
}

/// A MemoryError from a memory-limited worker says which limit it hit
/// (`note` is empty without a limit).
pub(super) fn annotate_memory_error(msg: &mut FromWorker, note: &str) {
    if let FromWorker::Error { message, .. } = msg {
        if !note.is_empty() && message.contains("MemoryError") {
            message.push_str(note);
        }
    }
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

/// "exited on SIGSEGV" / "exited with status 3".
pub(super) fn describe_exit(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("exited on {}{core}", sys::signal_name(sig))
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
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
            label(cfg)
        ))),
    }
}

/// One running worker process.
pub(super) struct Worker {
    pub(super) child: Child,
    pub(super) pid: u32,
    socket: Writer,
    /// Frames from the worker (Log frames are handled by the reader thread).
    pub(super) frames: Receiver<FromWorker>,
    pub(super) input: Shm,
    /// Requests whose final response has not gone out, by wire id; the
    /// reader thread answers them (the output region is its alone).
    pub(super) open: Open,
    /// The batch executing now (0: none); used when the worker dies.
    pub(super) running: Arc<AtomicU64>,
    /// Batches whose input range Python still views: (batch, start, end).
    /// No later batch is written there until the worker releases them.
    pub(super) pinned: Vec<(u64, usize, usize)>,
    /// The number of the last batch sent.
    pub(super) batch: u64,
    /// "model 'M' instance 'I'", for errors raised while placing a batch.
    pub(super) label: String,
    /// The largest the input region may grow to (`rustpy.input_shm_limit_mb`).
    pub(super) input_limit: Option<usize>,
}

/// Pinned ranges start on page boundaries (a batch placed after one).
const PAGE: usize = 4096;

impl Worker {
    /// Where a batch of `needed` bytes goes: the lowest offset that overlaps
    /// no pinned range (0 when nothing is pinned).
    pub(super) fn place(&self, needed: usize) -> usize {
        let mut ranges: Vec<(usize, usize)> = self.pinned.iter().map(|&(_, a, b)| (a, b)).collect();
        ranges.sort_unstable();
        let mut at = 0usize;
        for (start, end) in ranges {
            if at + needed <= start {
                break;
            }
            at = at.max(end.next_multiple_of(PAGE));
        }
        at
    }

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
            FromWorker::Ready => Ok(worker),
            FromWorker::InitFailed { code, message } => {
                worker.shutdown();
                Err(error_from_wire((code, message)))
            }
            _ => {
                worker.kill();
                Err(Error::internal(format!(
                    "{}: the worker process sent an unexpected message while starting",
                    label(cfg)
                )))
            }
        }
    }

    /// Starts a worker process, sends it `first` and returns its first answer.
    fn launch(cfg: &WorkerConfig, first: &ToWorker, doing: &str) -> Result<(Worker, FromWorker)> {
        let what = |e: std::io::Error| {
            Error::internal(format!(
                "{}: cannot start the worker process {}: {e}",
                label(cfg),
                cfg.executable.display()
            ))
        };
        let input_fd = growing_memfd("rustpy-input", INITIAL_SHM).map_err(what)?;
        // The reader thread's own mapping of the input region, for outputs
        // that are views of the inputs.
        let mut input_view = Shm::map(input_fd.try_clone().map_err(what)?).map_err(what)?;
        let input = Shm::map(input_fd).map_err(what)?;
        let output = growing_memfd("rustpy-output", INITIAL_SHM)
            .and_then(Shm::map)
            .map_err(what)?;
        // BLS tensors (isolation/bls.rs): empty until a large BLS call.
        let bls_in = memfd("rustpy-bls-in", 0).map_err(what)?;
        let bls_out = memfd("rustpy-bls-out", 0).map_err(what)?;
        let bls_fds = [bls_in.as_raw_fd(), bls_out.as_raw_fd()];
        let bls = Arc::new(BlsRegions {
            input: Mutex::new(BlsRegion::new(bls_in).map_err(what)?),
            output: Mutex::new(BlsRegion::new(bls_out).map_err(what)?),
        });
        let (ours, theirs) = UnixStream::pair().map_err(what)?;
        let mut command = Command::new(&cfg.executable);
        command
            .arg("--socket-fd")
            .arg(theirs.as_raw_fd().to_string())
            .arg("--input-fd")
            .arg(input.raw_fd().to_string())
            .arg("--output-fd")
            .arg(output.raw_fd().to_string())
            .arg("--bls-in-fd")
            .arg(bls_fds[0].to_string())
            .arg("--bls-out-fd")
            .arg(bls_fds[1].to_string())
            .arg("--model")
            .arg(&cfg.model_name)
            .stdin(Stdio::null());
        cfg.env_args(&mut command);
        sys::prepare_child(
            &mut command,
            vec![
                theirs.as_raw_fd(),
                input.raw_fd(),
                output.raw_fd(),
                bls_fds[0],
                bls_fds[1],
            ],
        );
        let child = spawn(command).map_err(what)?;
        drop(theirs);
        let pid = child.id();

        let (tx, frames) = mpsc::channel();
        let read_half = ours.try_clone().map_err(what)?;
        let socket: Writer = Arc::new(Mutex::new(ours));
        let replies = socket.clone();
        let open: Open = Arc::new(Mutex::new(HashMap::new()));
        let running = Arc::new(AtomicU64::new(0));
        let (reader_open, reader_running) = (open.clone(), running.clone());
        let who = label(cfg);
        let memory_note = match cfg.memory_note() {
            note if note.is_empty() => note,
            note => format!(
                " ({who}: the worker process (pid {pid}) ran out of its memory limit, {note})"
            ),
        };
        let mut output = output;
        std::thread::Builder::new()
            .name(format!("rustpy-worker-{pid}"))
            .spawn(move || {
                let mut r = BufReader::new(read_half);
                let mut metrics = MetricTable::default();
                while let Ok(Some(mut msg)) = read_frame::<FromWorker, _>(&mut r) {
                    annotate_memory_error(&mut msg, &memory_note);
                    if handle_response(&msg, &reader_open, &mut output, &mut input_view, &replies)
                    {
                        continue;
                    }
                    match msg {
                        FromWorker::Call { call, op } => {
                            serve_call(call, op, &replies, &mut metrics, &bls)
                        }
                        FromWorker::BlsRelease { starts } => {
                            let mut out = bls.output.lock().unwrap_or_else(|p| p.into_inner());
                            for start in starts {
                                out.free(start);
                            }
                        }
                        FromWorker::Log {
                            level,
                            file,
                            line,
                            message,
                        } => emit_log(LogLevel::from_code(level), &file, line, &message),
                        other => {
                            if tx.send(other).is_err() {
                                break;
                            }
                        }
                    }
                }
                // The worker is gone. Requests of earlier batches still open
                // (decoupled, answered by user threads) fail here; the
                // running batch's fail in execute, with the exit status.
                let running = reader_running.load(AtomicOrdering::Acquire);
                let orphans: Vec<OpenRequest> = {
                    let mut open = reader_open.lock().unwrap_or_else(|p| p.into_inner());
                    let ids: Vec<usize> = open
                        .iter()
                        .filter(|(_, o)| o.batch != running)
                        .map(|(&id, _)| id)
                        .collect();
                    ids.into_iter().filter_map(|id| open.remove(&id)).collect()
                };
                let err = Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{who}: the worker process (pid {pid}) ended before this request's final response"
                    ),
                );
                for mut o in orphans {
                    o.responder.send_error(&err);
                }
            })
            .map_err(what)?;
        let (weak_open, weak_socket) = (Arc::downgrade(&open), Arc::downgrade(&socket));
        std::thread::Builder::new()
            .name(format!("rustpy-cancel-{pid}"))
            .spawn(move || watch_cancellations(weak_open, weak_socket))
            .map_err(what)?;

        let mut worker = Worker {
            child,
            pid,
            socket,
            frames,
            input,
            open,
            running,
            pinned: Vec::new(),
            batch: 0,
            label: label(cfg),
            input_limit: cfg
                .input_shm_limit_mb
                .map(|mb| usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)),
        };
        if worker.send(first).is_err() {
            let cause = worker.reap();
            return Err(Error::internal(format!(
                "{}: the worker process {cause} while starting",
                label(cfg)
            )));
        }
        match worker.frames.recv() {
            Ok(frame) => Ok((worker, frame)),
            Err(_) => {
                let cause = worker.reap();
                Err(Error::internal(format!(
                    "{}: the worker process (pid {pid}) {cause} while starting ({doing})",
                    label(cfg)
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
    pub(super) fn reap(&mut self) -> String {
        let deadline = Instant::now() + REAP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe_exit(status),
                Ok(None) if Instant::now() >= deadline => {
                    sys::kill(self.pid);
                    return match self.child.wait() {
                        Ok(status) => format!(
                            "stopped answering (its control channel broke) and was killed ({})",
                            describe_exit(status)
                        ),
                        Err(e) => format!("ended (cannot read its status: {e})"),
                    };
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return format!("ended (cannot read its status: {e})"),
            }
        }
    }

    pub(super) fn kill(&mut self) -> String {
        sys::kill(self.pid);
        self.reap()
    }

    /// Asks the worker to run `finalize` and exit; kills it after a grace period.
    pub(super) fn shutdown(&mut self) {
        let _ = self.send(&ToWorker::Shutdown);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

pub(super) fn label(cfg: &WorkerConfig) -> String {
    format!(
        "model '{}' instance '{}'",
        cfg.model_name, cfg.instance.name
    )
}

pub(super) fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1 << (failures - 2).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}
