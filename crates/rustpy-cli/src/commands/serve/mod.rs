//! `rustpy serve REPO`: run a real tritonserver on a model repository with
//! the rustpy backend next to the official Python backend.
//!
//! Assembles a backend directory (symlinks, so the Python backend's
//! `$ORIGIN`-relative libraries still resolve), picks free ports on the bind
//! address (loopback by default), starts tritonserver in a clean environment
//! with its log in a file (or streamed with `--log`), waits until it is
//! ready, prints the endpoints and each model's state (and the cause of each
//! load failure), and stops it cleanly (SIGTERM, then SIGKILL after
//! --stop-timeout) on Ctrl-C or SIGTERM. When the server exits by itself,
//! its exit code is ours.

pub(crate) mod http;
mod locate;

use std::{
    env,
    ffi::OsString,
    fs::File,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
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
use rustpy_config::pyenv;
use serde::{Deserialize, Serialize};

use crate::{
    cli::{ModelControl, ServeArgs},
    commands::check,
    Error, Global, Result, Status,
};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Log lines shown when the server fails and no load error explains why.
const LOG_TAIL: usize = 20;
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
    if !args.load_models.is_empty() && args.model_control_mode != ModelControl::Explicit {
        return Err(Error::usage(
            "--load-model needs --model-control-mode explicit",
        ));
    }
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
        Some(dir) if dir.is_dir() => {
            let lib = dir.join("rustpy").join("libtriton_rustpy.so");
            if lib.is_file() {
                refuse_python_mismatch(&lib, &args.extra)?;
            }
            dir.clone()
        }
        Some(dir) => {
            return Err(Error::usage(format!(
                "--backend-dir {}: not a directory",
                dir.display()
            )))
        }
        None => {
            let lib = locate::backend_lib(args.backend_lib.as_deref()).map_err(not_found)?;
            if let Some(lib) = &lib {
                refuse_python_mismatch(lib, &args.extra)?;
            }
            let dir = assemble_backend_dir(global, &tritonserver, lib.as_deref())?;
            let path = dir.path().to_path_buf();
            _assembled = Some(dir);
            path
        }
    };

    let bind = args.address;
    let ports = pick_ports(bind, [args.http_port, args.grpc_port, args.metrics_port])?;
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
        .arg(format!("--http-address={bind}"))
        .arg(format!("--http-port={http_port}"))
        .arg(format!("--grpc-address={bind}"))
        .arg(format!("--grpc-port={grpc_port}"))
        .arg(format!("--metrics-address={bind}"))
        .arg(format!("--metrics-port={metrics_port}"))
        .arg(format!(
            "--model-control-mode={}",
            args.model_control_mode.as_str()
        ))
        .args(args.load_models.iter().map(|m| format!("--load-model={m}")))
        .arg(format!("--log-verbose={}", args.log_verbose))
        .args(&args.extra)
        .stdin(Stdio::null());
    // The raw log (CUDA/NVML warnings, option tables) goes to a file unless
    // asked for; with --log it goes to stderr so stdout carries only our report.
    let log_path = if args.log {
        cmd.stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        None
    } else {
        let path = args.log_file.clone().unwrap_or_else(|| {
            env::temp_dir().join(format!("rustpy-serve-{}.log", std::process::id()))
        });
        let file = File::create(&path)
            .with_context(|| format!("cannot create the server log {}", path.display()))?;
        cmd.stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        global.status(format!("server log: {}", path.display()));
        Some(path)
    };
    let log = ServerLog(log_path.as_deref());
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

    let http_addr = SocketAddr::from((probe_address(bind), http_port));
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout);
    let stop_timeout = Duration::from_secs(args.stop_timeout);
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for tritonserver")? {
            global.status(format!(
                "tritonserver exited before becoming ready ({status})"
            ));
            log.explain(global);
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
            log.explain(global);
            return Err(anyhow!(
                "tritonserver did not become ready within {}s ({})",
                args.ready_timeout,
                log.location()
            )
            .into());
        }
        thread::sleep(POLL);
    }

    let host = match bind {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let endpoints = Endpoints {
        http: format!("http://{host}:{http_port}"),
        grpc: format!("{host}:{grpc_port}"),
        metrics: format!("http://{host}:{metrics_port}/metrics"),
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
            if !status.success() {
                log.explain(global);
            }
            return Ok(Status::Code(exit_code(status)));
        }
        if interrupts.load(Ordering::SeqCst) > 0 {
            let status = stop(global, &mut child, stop_timeout, &interrupts)?;
            return Ok(Status::Code(exit_code(status)));
        }
        thread::sleep(POLL);
    }
}

/// The backend serves with the Python its library links. Refuses to start it
/// when that is not the Python this `rustpy` embeds (the one `rustpy check`
/// judged the repository with), or when a site-packages directory handed to
/// it (`--backend-config=rustpy,site-packages=DIR`) holds packages built for
/// another Python version.
fn refuse_python_mismatch(lib: &Path, extra: &[String]) -> Result<()> {
    let Some(served) = pyenv::linked_python_version(lib) else {
        return Ok(());
    };
    if let Some(embedded) = pyenv::embedded_python_version().filter(|e| *e != served) {
        return Err(Error::invalid(anyhow!(
            "{} was built for Python {served}, but this rustpy embeds Python {embedded}: use the rustpy built with that library, or rebuild both for one Python (PYO3_PYTHON)",
            lib.display()
        )));
    }
    for arg in extra {
        if let Some(dir) = arg.strip_prefix("--backend-config=rustpy,site-packages=") {
            pyenv::require_site_packages_for(Path::new(dir), served)
                .map_err(|e| Error::invalid(anyhow!("{e}")))?;
        }
    }
    Ok(())
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
        // Explicit mode lists models it has not loaded without a state.
        let state = m
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("not loaded");
        match &m.reason {
            Some(reason) if !reason.is_empty() => {
                println!("  {:width$}  v{version:<3} {state}: {reason}", m.name)
            }
            _ => println!("  {:width$}  v{version:<3} {state}", m.name),
        }
    }
    Ok(())
}

/// Where to poll the server: the bind address, or loopback for a wildcard.
fn probe_address(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(LOOPBACK),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The server's log file, when it is not streamed.
struct ServerLog<'a>(Option<&'a Path>);

impl ServerLog<'_> {
    fn location(&self) -> String {
        match self.0 {
            Some(path) => format!("server log: {}", path.display()),
            None => "see the server log above".to_owned(),
        }
    }

    /// After a failure: each model's load error and the server's own error,
    /// or the log's tail when neither is there; then where the log is.
    fn explain(&self, global: &Global) {
        let Some(path) = self.0 else { return };
        let lines: Vec<String> = match File::open(path) {
            Ok(f) => BufReader::new(f).lines().map_while(|l| l.ok()).collect(),
            Err(_) => Vec::new(),
        };
        let errors = log_errors(&lines);
        if errors.is_empty() {
            let start = lines.len().saturating_sub(LOG_TAIL);
            for line in &lines[start..] {
                global.status(format!("  | {line}"));
            }
        } else {
            for e in errors {
                global.status(format!("  {e}"));
            }
        }
        global.status(self.location());
    }
}

/// The lines of a tritonserver log that say why it failed: one per model
/// that failed to load (its first line of cause), and `error: ...` lines.
fn log_errors(lines: &[String]) -> Vec<String> {
    const FAILED: &str = "failed to load '";
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        if let Some(at) = line.find(FAILED) {
            let rest = &line[at + FAILED.len()..];
            let Some((model, cause)) = rest.split_once("' version ") else {
                continue;
            };
            let cause = cause.split_once(": ").map_or(cause, |(_, c)| c);
            // Triton quotes the message and escapes its newlines.
            let first = cause.split("\\n").next().unwrap_or(cause);
            let first = first.trim_end_matches('"').trim();
            out.push(format!("model '{model}' failed to load: {first}"));
        } else if line.starts_with("error: ") {
            out.push(line.clone());
        }
    }
    out.dedup();
    out
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

/// Free ports on `bind` for those not given. Each candidate is checked by
/// binding it; all listeners are held until every port is chosen, so the
/// three differ.
fn pick_ports(bind: IpAddr, wanted: [Option<u16>; 3]) -> anyhow::Result<[u16; 3]> {
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
                let listener = TcpListener::bind((bind, 0)).context("cannot find a free port")?;
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
            if let Ok(listener) = TcpListener::bind((bind, port)) {
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
#[allow(unsafe_code)]
#[warn(clippy::undocumented_unsafe_blocks)]
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
#[allow(unsafe_code)]
#[warn(clippy::undocumented_unsafe_blocks)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_name_each_failed_model_and_its_cause() {
        let log: Vec<String> = [
            r#"E1129 15:29:53.908283 10889 server.cc:241] "CudaDriverHelper has not been initialized.""#,
            r#"E1129 15:29:53.970718 10889 model_lifecycle.cc:642] "failed to load 'pyadd' version 1: Internal: RuntimeError: broken on purpose\n\nAt:\n  /tmp/repo/pyadd/1/model.py(1): <module>""#,
            r#"I1129 15:29:53.970763 10889 model_lifecycle.cc:777] "failed to load 'pyadd'""#,
            "error: creating server: Internal - failed to load all models",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            log_errors(&log),
            [
                "model 'pyadd' failed to load: Internal: RuntimeError: broken on purpose",
                "error: creating server: Internal - failed to load all models",
            ]
        );
        assert!(log_errors(&log[..1]).is_empty());
    }

    #[test]
    fn wildcard_binds_are_polled_on_loopback() {
        assert_eq!(
            probe_address("0.0.0.0".parse().unwrap()),
            IpAddr::V4(LOOPBACK)
        );
        assert_eq!(
            probe_address("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let addr: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(probe_address(addr), addr);
    }
}
