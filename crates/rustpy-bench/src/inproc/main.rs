//! rustpy-inproc: drives Triton through its in-process C API, no HTTP or
//! gRPC: `TRITONSERVER_ServerNew` on a model repository and backend
//! directory, then `TRITONSERVER_ServerInferAsync` closed-loop with N requests
//! in flight. This measures what each backend costs per request, without the
//! network frontends (the figure upstream uses for its python backend).
//!
//! One process serves many runs: after loading the server it reads one JSON
//! run spec per line on stdin and answers one JSON line per run on stdout
//! (bench/bench.py drives it that way), or runs once with --model.
//!
//! Unsafe: this binary is FFI to libtritonserver (its callbacks and the
//! `tserver` declarations), so it is one of the places allowed `unsafe`.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod driver;
mod slots;
mod tserver;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::ptr;
use std::time::Duration;

use serde_json::{json, Value};

use driver::{Driver, RunSpec};
use rustpy_bench::workload::{Expect, Kind};
use slots::{alloc_fn, release_fn};
use tserver::{Api, Server, ServerConfig, TAllocator};

const USAGE: &str = "\
rustpy-inproc: closed-loop load through Triton's in-process C API (no HTTP/gRPC)

USAGE:
    rustpy-inproc --lib LIBTRITONSERVER.so --repo DIR --backend-dir DIR --load M1,M2,..
                  [--log-file F] [--backend-config BACKEND,KEY=VALUE]...
                  [--model M --workload W [-c N] [-d S] [-w S] [--bytes N] [--expect E]]

Without --model, reads run specs from stdin, one JSON object per line:
    {\"model\": \"add_sub_rustpy\", \"workload\": \"add_sub\", \"concurrency\": 32,
     \"duration\": 10, \"warmup\": 2, \"expect\": \"compute\", \"bytes\": 1048576, \"label\": \"..\"}
and writes one JSON line per run (throughput_rps, latency_us, completed, errors,
validation_errors, first_error, stats_before/stats_after: the model's statistics
around the run, for the batch sizes). The first line written is
{\"ready\": {model: bool}} once the server has loaded the models.
Workloads: add_sub, identity, upper, mlp, embed, ragged (as rustpy-loadgen).
";

// ------------------------------------------------------------- callbacks

// ----------------------------------------------------------------- setup
struct Args {
    lib: PathBuf,
    repo: PathBuf,
    backend_dir: PathBuf,
    load: Vec<String>,
    log_file: Option<PathBuf>,
    backend_config: Vec<(String, String, String)>,
    one: Option<Value>,
}

fn secs(v: &Value, key: &str, default: f64) -> Result<Duration, String> {
    let s = match v.get(key) {
        None | Some(Value::Null) => default,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| format!("{key} must be a number"))?,
    };
    if !s.is_finite() || s < 0.0 {
        return Err(format!("bad {key} {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_spec(v: &Value) -> Result<RunSpec, String> {
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model is required")?
        .to_string();
    let w = v
        .get("workload")
        .and_then(Value::as_str)
        .ok_or("workload is required")?;
    let kind = Kind::parse(w).ok_or_else(|| format!("unknown workload {w:?}"))?;
    let e = v.get("expect").and_then(Value::as_str).unwrap_or("compute");
    let expect = Expect::parse(e).ok_or_else(|| format!("unknown expect {e:?}"))?;
    let concurrency = v.get("concurrency").and_then(Value::as_u64).unwrap_or(1) as usize;
    if concurrency == 0 || concurrency > 4096 {
        return Err(format!("bad concurrency {concurrency}"));
    }
    let duration = secs(v, "duration", 10.0)?;
    if duration.is_zero() {
        return Err("duration must be > 0".into());
    }
    Ok(RunSpec {
        model,
        kind,
        bytes: v.get("bytes").and_then(Value::as_u64).unwrap_or(1 << 20) as usize,
        expect,
        concurrency,
        duration,
        warmup: secs(v, "warmup", 2.0)?,
        timeout: secs(v, "timeout", 120.0)?,
        label: v.get("label").and_then(Value::as_str).map(str::to_string),
    })
}

fn parse_args() -> Result<Args, String> {
    let mut lib = None;
    let mut repo = None;
    let mut backend_dir = None;
    let mut load = Vec::new();
    let mut log_file = None;
    let mut backend_config = Vec::new();
    let mut one = serde_json::Map::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") && f != "--backend-config" => {
                (f.to_string(), Some(v.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--lib" => lib = Some(PathBuf::from(value()?)),
            "--repo" => repo = Some(PathBuf::from(value()?)),
            "--backend-dir" => backend_dir = Some(PathBuf::from(value()?)),
            "--load" => load.extend(
                value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "--log-file" => log_file = Some(PathBuf::from(value()?)),
            "--backend-config" => {
                let v = value()?;
                let (b, kv) = v
                    .split_once(',')
                    .ok_or("--backend-config BACKEND,KEY=VALUE")?;
                let (k, val) = kv
                    .split_once('=')
                    .ok_or("--backend-config BACKEND,KEY=VALUE")?;
                backend_config.push((b.to_string(), k.to_string(), val.to_string()));
            }
            "--model" | "--workload" | "--expect" | "--label" => {
                one.insert(
                    flag.trim_start_matches('-').to_string(),
                    Value::from(value()?),
                );
            }
            "-c" | "--concurrency" | "--bytes" => {
                let v = value()?;
                let n: u64 = v.parse().map_err(|_| format!("bad {flag} {v:?}"))?;
                let key = if flag == "--bytes" {
                    "bytes"
                } else {
                    "concurrency"
                };
                one.insert(key.into(), Value::from(n));
            }
            "-d" | "--duration" | "-w" | "--warmup" => {
                let v = value()?;
                let n: f64 = v.parse().map_err(|_| format!("bad {flag} {v:?}"))?;
                let key = if flag.contains('d') {
                    "duration"
                } else {
                    "warmup"
                };
                one.insert(key.into(), Value::from(n));
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let one = if one.is_empty() {
        None
    } else {
        Some(Value::Object(one))
    };
    Ok(Args {
        lib: lib.ok_or("--lib is required")?,
        repo: repo.ok_or("--repo is required")?,
        backend_dir: backend_dir.ok_or("--backend-dir is required")?,
        load,
        log_file,
        backend_config,
        one,
    })
}

/// The wheel's libtritonserver finds its bundled dependencies (libcurl's
/// own dependencies included) only through the executable's search path, as
/// the tritonserver binary's RPATH provides: re-run this process once with the
/// library's directory on LD_LIBRARY_PATH (the loader reads it at start-up).
fn reexec_with_library_path(lib: &std::path::Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let dir = lib
        .parent()
        .ok_or_else(|| format!("{} has no directory", lib.display()))?
        .to_string_lossy()
        .into_owned();
    let current = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if current.split(':').any(|d| d == dir) {
        return Ok(());
    }
    let path = if current.is_empty() {
        dir
    } else {
        format!("{dir}:{current}")
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .exec();
    Err(format!("re-exec with LD_LIBRARY_PATH failed: {err}"))
}

fn real_main() -> Result<(), (u8, String)> {
    let args = parse_args().map_err(|e| (2, format!("{e}\n\n{USAGE}")))?;
    if let Some(one) = &args.one {
        parse_spec(one).map_err(|e| (2, e))?;
    }
    let fail = |e: String| (4u8, e);
    reexec_with_library_path(&args.lib).map_err(fail)?;
    let api = Api::load(&args.lib).map_err(fail)?;
    let cfg = ServerConfig {
        repository: &args.repo,
        backend_dir: &args.backend_dir,
        models: &args.load,
        log_file: args.log_file.as_deref(),
        backend_config: args.backend_config.clone(),
    };
    let server = Server::start(api, &cfg).map_err(fail)?;
    let api = &server.api;
    let mut allocator: *mut TAllocator = ptr::null_mut();
    api.check(
        // SAFETY: creates an allocator we own (deleted at the end) with plain
        // function callbacks and no start function.
        unsafe {
            (api.TRITONSERVER_ResponseAllocatorNew)(
                &mut allocator,
                alloc_fn,
                release_fn,
                ptr::null_mut(),
            )
        },
        "ResponseAllocatorNew",
    )
    .map_err(fail)?;
    let driver = Driver {
        server: &server,
        allocator: allocator as usize,
    };
    let mut ready = serde_json::Map::new();
    for m in &args.load {
        ready.insert(
            m.clone(),
            Value::from(server.model_ready(m).unwrap_or(false)),
        );
    }
    let stdout = std::io::stdout();
    let out = |v: &Value| {
        let mut o = stdout.lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    };
    let mut status = Ok(());
    if let Some(one) = &args.one {
        let spec = parse_spec(one).map_err(|e| (2, e))?;
        match driver.run(&spec) {
            Ok(v) => {
                if v["completed"].as_u64() == Some(0) {
                    status = Err((1, format!("no request completed: {}", v["first_error"])));
                }
                out(&v);
            }
            Err(e) => status = Err((1, e)),
        }
    } else {
        out(&json!({ "ready": ready }));
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| fail(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let result = serde_json::from_str::<Value>(&line)
                .map_err(|e| format!("bad run spec: {e}"))
                .and_then(|v| parse_spec(&v))
                .and_then(|spec| driver.run(&spec));
            match result {
                Ok(v) => out(&v),
                Err(e) => out(&json!({ "error": e })),
            }
        }
    }
    // SAFETY: every request of every run has completed; the allocator is
    // deleted once, before the server.
    let _ = api.check(
        unsafe { (api.TRITONSERVER_ResponseAllocatorDelete)(allocator) },
        "AllocatorDelete",
    );
    drop(server);
    status
}

fn main() -> ExitCode {
    match std::panic::catch_unwind(real_main) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err((code, msg))) => {
            eprintln!("rustpy-inproc: {msg}");
            ExitCode::from(code)
        }
        Err(_) => ExitCode::from(4),
    }
}
