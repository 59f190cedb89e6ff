//! `rustpy serve REPO`: run a real tritonserver on a model repository with
//! the rustpy backend next to the official Python backend.
//!
//! Assembles a backend directory (symlinks, so the Python backend's
//! `$ORIGIN`-relative libraries still resolve), picks free loopback ports,
//! starts tritonserver in a clean environment, waits until it is ready,
//! prints the endpoints and each model's state, and stops it cleanly
//! (SIGTERM, then SIGKILL after --stop-timeout) on Ctrl-C. When the server
//! exits by itself, its exit code is ours.

pub(crate) mod http;
mod locate;

use std::{
    env,
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};

use crate::{cli::ServeArgs, commands::check, Error, Global, Result, Status};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const POLL: Duration = Duration::from_millis(200);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
struct Endpoints {
    http: String,
    grpc: String,
    metrics: String,
}

/// One row of `POST /v2/repository/index`.
#[derive(Debug, Serialize, Deserialize)]
struct ModelState {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn run(global: &Global, args: ServeArgs) -> Result {
    if !args.repo.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory",
            args.repo.display()
        )));
    }
    let repo = args
        .repo
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.repo.display()))?;
    let tritonserver = locate::tritonserver(args.tritonserver.as_deref()).map_err(not_found)?;

    // Not fatal: tritonserver is the judge, but say early what will fail.
    match check::check_path(&repo) {
        Ok(report) if report.errors() > 0 => global.status(format!(
            "warning: `rustpy check {}` reports {} error(s); those models will fail to load",
            args.repo.display(),
            report.errors()
        )),
        Ok(_) => {}
        Err(e) => global.status(format!("warning: could not check the repository: {e:#}")),
    }

    // Kept alive until the server has exited: it owns the backend symlinks.
    let mut _assembled = None;
    let backend_dir = match &args.backend_dir {
        Some(dir) if dir.is_dir() => dir.clone(),
        Some(dir) => {
            return Err(Error::usage(format!(
                "--backend-dir {}: not a directory",
                dir.display()
            )))
        }
        None => {
            let lib = locate::backend_lib(args.backend_lib.as_deref()).map_err(not_found)?;
            let dir = assemble_backend_dir(global, &tritonserver, lib.as_deref())?;
            let path = dir.path().to_path_buf();
            _assembled = Some(dir);
            path
        }
    };

    let ports = pick_ports([args.http_port, args.grpc_port, args.metrics_port])?;
    let [http_port, grpc_port, metrics_port] = ports;

    // Count Ctrl-C presses (and SIGTERM/SIGHUP): the first stops the server
    // gracefully, a second one kills it.
    let interrupts = Arc::new(AtomicUsize::new(0));
    {
        let interrupts = Arc::clone(&interrupts);
        ctrlc::set_handler(move || {
            interrupts.fetch_add(1, Ordering::SeqCst);
        })
        .context("cannot install the Ctrl-C handler")?;
    }

    let mut cmd = Command::new(&tritonserver);
    cmd.arg(format!("--model-repository={}", repo.display()))
        .arg(format!("--backend-directory={}", backend_dir.display()))
        .arg(format!("--http-address={LOOPBACK}"))
        .arg(format!("--http-port={http_port}"))
        .arg(format!("--grpc-address={LOOPBACK}"))
        .arg(format!("--grpc-port={grpc_port}"))
        .arg(format!("--metrics-address={LOOPBACK}"))
        .arg(format!("--metrics-port={metrics_port}"))
        .arg(format!("--log-verbose={}", args.log_verbose))
        .args(&args.extra)
        .stdin(Stdio::null())
        // Server logs go to stderr so stdout carries only our report.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    clean_environment(&mut cmd);
    isolate(&mut cmd);

    global.status(format!(
        "starting {} on {}",
        tritonserver.display(),
        args.repo.display()
    ));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", tritonserver.display()))?;

    let http_addr = SocketAddr::from((LOOPBACK, http_port));
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout);
    let stop_timeout = Duration::from_secs(args.stop_timeout);
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for tritonserver")? {
            global.status(format!(
                "tritonserver exited before becoming ready ({status})"
            ));
            return Ok(Status::Code(exit_code(status)));
        }
        if interrupts.load(Ordering::SeqCst) > 0 {
            let status = stop(global, &mut child, stop_timeout, &interrupts)?;
            return Ok(Status::Code(exit_code(status)));
        }
        if is_ready(http_addr) {
            break;
        }
        if Instant::now() >= deadline {
            stop(global, &mut child, stop_timeout, &interrupts)?;
            return Err(anyhow!(
                "tritonserver did not become ready within {}s (see its log above)",
                args.ready_timeout
            )
            .into());
        }
        thread::sleep(POLL);
    }

    let endpoints = Endpoints {
        http: format!("http://{LOOPBACK}:{http_port}"),
        grpc: format!("{LOOPBACK}:{grpc_port}"),
        metrics: format!("http://{LOOPBACK}:{metrics_port}/metrics"),
    };
    let models = model_states(http_addr).unwrap_or_else(|e| {
        global.status(format!("warning: cannot list models: {e:#}"));
        Vec::new()
    });
    report(&endpoints, &models, child.id(), args.json)?;
    global.status("Press Ctrl-C to stop.");

    loop {
        if let Some(status) = child.try_wait().context("cannot wait for tritonserver")? {
            global.status(format!("tritonserver exited ({status})"));
            return Ok(Status::Code(exit_code(status)));
        }
        if interrupts.load(Ordering::SeqCst) > 0 {
            let status = stop(global, &mut child, stop_timeout, &interrupts)?;
            return Ok(Status::Code(exit_code(status)));
        }
        thread::sleep(POLL);
    }
}

/// A path the user named is a usage error; a missing installation is not.
fn not_found(e: locate::NotFound) -> Error {
    if e.explicit {
        Error::Usage(e.message)
    } else {
        Error::Runtime(anyhow!(e.message))
    }
}

fn report(endpoints: &Endpoints, models: &[ModelState], pid: u32, json: bool) -> Result<()> {
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            pid: u32,
            endpoints: &'a Endpoints,
            models: &'a [ModelState],
        }
        // One line, so a script can read it as soon as the server is ready.
        let text = serde_json::to_string(&Out {
            pid,
            endpoints,
            models,
        })
        .context("cannot encode JSON")?;
        println!("{text}");
        return Ok(());
    }
    println!("tritonserver is ready (pid {pid})");
    println!("  HTTP     {}", endpoints.http);
    println!("  GRPC     {}", endpoints.grpc);
    println!("  metrics  {}", endpoints.metrics);
    if models.is_empty() {
        println!("no models in the repository");
    }
    let width = models.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in models {
        let version = m.version.as_deref().unwrap_or("-");
        let state = m.state.as_deref().unwrap_or("UNKNOWN");
        match &m.reason {
            Some(reason) if !reason.is_empty() => {
                println!("  {:width$}  v{version:<3} {state}: {reason}", m.name)
            }
            _ => println!("  {:width$}  v{version:<3} {state}", m.name),
        }
    }
    Ok(())
}

fn is_ready(addr: SocketAddr) -> bool {
    http::request(addr, "GET", "/v2/health/ready", None, HTTP_TIMEOUT)
        .is_ok_and(|r| r.status == 200)
}

fn model_states(addr: SocketAddr) -> anyhow::Result<Vec<ModelState>> {
    let resp = http::request(
        addr,
        "POST",
        "/v2/repository/index",
        Some(b"{}"),
        HTTP_TIMEOUT,
    )?;
    if resp.status != 200 {
        anyhow::bail!("repository index returned HTTP {}", resp.status);
    }
    serde_json::from_slice(&resp.body).context("unexpected repository index response")
}

/// Ports are picked below Linux's ephemeral range (32768-60999 by
/// default), where other programs' `bind(0)` and outgoing connections never
/// land: the port is free when checked but only bound by tritonserver a few
/// seconds later, after its models load, and a port from the ephemeral range
/// can be handed to someone else in between.
const PORT_RANGE: std::ops::Range<u16> = 20000..32768;

/// Free loopback ports for those not given. Each candidate is checked by
/// binding it; all listeners are held until every port is chosen, so the
/// three differ.
fn pick_ports(wanted: [Option<u16>; 3]) -> anyhow::Result<[u16; 3]> {
    use std::hash::{BuildHasher, Hasher};

    let mut held = Vec::new();
    let mut ports = [0u16; 3];
    // std's RandomState is randomly keyed per process: enough to spread
    // concurrent `rustpy serve`s over the range without a rand dependency.
    let seed = std::collections::hash_map::RandomState::new();
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let mut attempt = 0u64;
    for (slot, want) in ports.iter_mut().zip(wanted) {
        if let Some(port) = want {
            *slot = port;
            continue;
        }
        loop {
            attempt += 1;
            if attempt > 1000 {
                // Crowded range: fall back to whatever the OS hands out.
                let listener =
                    TcpListener::bind((LOOPBACK, 0)).context("cannot find a free port")?;
                *slot = listener.local_addr()?.port();
                held.push(listener);
                break;
            }
            let mut h = seed.build_hasher();
            h.write_u64(attempt);
            let port = PORT_RANGE.start + (h.finish() % span) as u16;
            if wanted.contains(&Some(port)) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind((LOOPBACK, port)) {
                *slot = port;
                held.push(listener);
                break;
            }
        }
    }
    Ok(ports)
}

/// A temp dir holding `rustpy/libtriton_rustpy.so` and `python/`, both
/// symlinks: the official backend directory is linked, not copied, so its
/// `$ORIGIN/../..`-relative libraries and the stub next to it still resolve.
fn assemble_backend_dir(
    global: &Global,
    tritonserver: &Path,
    lib: Option<&Path>,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("rustpy-backends-")
        .tempdir()
        .context("cannot create the backend directory")?;
    match lib {
        Some(lib) => {
            let lib = lib
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", lib.display()))?;
            let rustpy = dir.path().join("rustpy");
            std::fs::create_dir(&rustpy)?;
            symlink(&lib, &rustpy.join("libtriton_rustpy.so"))?;
            global.status(format!("rustpy backend: {}", lib.display()));
        }
        None => global.status(
            "warning: libtriton_rustpy.so not found (build it with `cargo build --release`, or \
             pass --backend-lib); models with backend \"rustpy\" will not load",
        ),
    }
    match locate::python_backend(tritonserver) {
        Some(python) => symlink(&python, &dir.path().join("python"))?,
        None => global.status(format!(
            "warning: no official Python backend next to {} (expected ../backends/python)",
            tritonserver.display()
        )),
    }
    Ok(dir)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))
}

#[cfg(not(unix))]
fn symlink(_target: &Path, link: &Path) -> anyhow::Result<()> {
    anyhow::bail!("{}: `rustpy serve` needs Unix symlinks", link.display())
}

/// Drops what would make the Python backend's stub pick up another Python
/// (pyenv shims, PYTHONHOME/PYTHONPATH): it must run the system interpreter
/// it was linked against.
fn clean_environment(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let name = key.to_string_lossy();
        if name == "PYTHONHOME" || name == "PYTHONPATH" || name.starts_with("PYENV_") {
            cmd.env_remove(&key);
        }
    }
    if let Some(path) = env::var_os("PATH") {
        let kept: Vec<PathBuf> = env::split_paths(&path)
            .filter(|p| !p.to_string_lossy().contains("pyenv"))
            .collect();
        if let Ok(joined) = env::join_paths(kept) {
            cmd.env("PATH", joined);
        }
    } else {
        cmd.env("PATH", OsString::from("/usr/local/bin:/usr/bin:/bin"));
    }
}

/// Own process group, so a terminal's Ctrl-C reaches only us and we decide
/// how the server stops; and on Linux the server gets SIGTERM if we die.
#[cfg(unix)]
fn isolate(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn isolate(_cmd: &mut Command) {}

/// SIGTERM, then SIGKILL after `grace` (or at a second Ctrl-C).
fn stop(
    global: &Global,
    child: &mut Child,
    grace: Duration,
    interrupts: &AtomicUsize,
) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    global.status("stopping tritonserver (Ctrl-C again to kill it)");
    let seen = interrupts.load(Ordering::SeqCst).max(1);
    terminate(child);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline || interrupts.load(Ordering::SeqCst) > seen {
            global.status("killing tritonserver");
            // It may have exited in between; kill() then fails harmlessly.
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut Child) {
    let _ = child.kill();
}

/// The child's exit code, or 128 + signal number as shells report it.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}
