//! rustpy-loadgen: a closed-loop load generator for Triton's KServe v2 HTTP
//! endpoint with the binary tensor data extension.
//!
//! N workers (threads), each with its own keep-alive connection, send one
//! request at a time for a warm-up and then for a fixed duration. Requests
//! that complete inside the measured window count towards throughput and
//! latency; every response is checked. One JSON line goes to stdout.

#![forbid(unsafe_code)]

mod grpc;
mod http;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::json;

use rustpy_bench::latency_summary;
use rustpy_bench::workload::{Expect, Kind, Request, Workload};

const USAGE: &str = "\
rustpy-loadgen: KServe v2 HTTP (binary tensors) load generator for rustpy's benchmark

USAGE:
    rustpy-loadgen --model NAME --workload add_sub|identity|upper|mlp|embed|ragged [OPTIONS]

OPTIONS:
    --url HOST:PORT       Triton's HTTP (or gRPC) endpoint, loopback only [default: 127.0.0.1:8000]
    --protocol P          http: HTTP/1.1, one keep-alive connection per worker thread;
                          grpc: KServe v2 gRPC (tonic), one HTTP/2 connection per worker
                          [default: http]
    --model NAME          model to call (POST /v2/models/NAME/infer)
    --workload KIND       add_sub: FP32[4] INPUT0, INPUT1 -> OUTPUT0 = a+b, OUTPUT1 = a-b
                          identity: UINT8[--bytes] INPUT0 -> OUTPUT0
                          upper: BYTES[1] TEXT -> UPPER (ASCII upper-case)
                          mlp: FP32[512] INPUT -> FP32[128] OUTPUT (two dense layers)
                          embed: BYTES[1] TEXT -> FP32[64] EMBEDDING (tokenize, mean, L2)
                          ragged: INT32[n] TOKENS, n uniform in 8..128 (seeded) -> FP32[16]
                          EMB (mean of embedding rows)
    --bytes SIZE          identity payload per request, e.g. 1048576, 1MiB, 16MiB [default: 1MiB]
    --expect MODE         compute: the workload's function; echo: output i = input i
                          (native echo ceiling); none: status only [default: compute]
    --full-check          compare large outputs in full (default: sampled windows)
    -c, --concurrency N   concurrent workers, one connection each [default: 1]
    -d, --duration SECS   measured duration [default: 10]
    -w, --warmup SECS     warm-up before measuring [default: 2]
    --timeout SECS        per-request socket timeout [default: 60]
    --label TEXT          copied into the JSON line
    -h, --help

OUTPUT: one JSON line: throughput_rps, in/out tensor bytes per second, latency_us
(min, mean, p50, p90, p99, max), completed, errors, validation_errors, first_error.
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

struct Args {
    protocol: Protocol,
    addr: SocketAddr,
    url: String,
    model: String,
    kind: Kind,
    bytes: usize,
    expect: Expect,
    full_check: bool,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    label: Option<String>,
}

fn parse_size(s: &str) -> Option<usize> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("kib", 1usize << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    num.trim().parse::<usize>().ok().map(|n| n * mult)
}

fn parse_secs(s: &str) -> Option<Duration> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
}

/// `url`'s HOST:PORT and its loopback address (the benchmark only runs on
/// loopback).
fn loopback(url: &str) -> Result<(String, std::net::SocketAddr), String> {
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| {
            format!("{hostport:?} is not a loopback address (the benchmark only runs on loopback)")
        })?;
    Ok((hostport, addr))
}

/// A positive number of seconds, or why not.
fn positive_secs(v: &str, what: &str) -> Result<Duration, String> {
    parse_secs(v)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("bad {what} {v:?}"))
}

fn parse_args() -> Result<Args, String> {
    let mut url = "127.0.0.1:8000".to_string();
    let mut protocol = Protocol::Http;
    let mut model = None;
    let mut kind = None;
    let mut bytes = 1 << 20;
    let mut expect = Expect::Compute;
    let mut full_check = false;
    let mut concurrency = 1;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(2);
    let mut timeout = Duration::from_secs(60);
    let mut label = None;

    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs {what}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--url" => url = value("HOST:PORT")?,
            "--protocol" => {
                protocol = match value("http|grpc")?.as_str() {
                    "http" => Protocol::Http,
                    "grpc" => Protocol::Grpc,
                    other => return Err(format!("unknown protocol {other:?}")),
                }
            }
            "--model" => model = Some(value("a model name")?),
            "--workload" => {
                let v = value("a workload")?;
                kind = Some(Kind::parse(&v).ok_or_else(|| format!("unknown workload {v:?}"))?);
            }
            "--bytes" => {
                let v = value("a size")?;
                bytes = parse_size(&v)
                    .filter(|&b| b > 0)
                    .ok_or_else(|| format!("bad size {v:?}"))?;
            }
            "--expect" => {
                let v = value("compute|echo|none")?;
                expect = Expect::parse(&v).ok_or_else(|| format!("unknown --expect {v:?}"))?;
            }
            "--full-check" => full_check = true,
            "-c" | "--concurrency" => {
                let v = value("a number")?;
                concurrency = v
                    .parse()
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or_else(|| format!("bad concurrency {v:?}"))?;
            }
            "-d" | "--duration" => duration = positive_secs(&value("seconds")?, "duration")?,
            "-w" | "--warmup" => {
                let v = value("seconds")?;
                warmup = parse_secs(&v).ok_or_else(|| format!("bad warm-up {v:?}"))?;
            }
            "--timeout" => timeout = positive_secs(&value("seconds")?, "timeout")?,
            "--label" => label = Some(value("text")?),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let model = model.ok_or("--model is required")?;
    let kind = kind.ok_or("--workload is required")?;
    let (hostport, addr) = loopback(&url)?;
    Ok(Args {
        protocol,
        addr,
        url: hostport,
        model,
        kind,
        bytes,
        expect,
        full_check,
        concurrency,
        duration,
        warmup,
        timeout,
        label,
    })
}

#[derive(Default)]
struct WorkerResult {
    latencies_ns: Vec<u64>,
    completed: u64,
    errors: u64,
    validation_errors: u64,
    warmup_completed: u64,
    warmup_errors: u64,
    in_bytes: u64,
    out_bytes: u64,
    first_error: Option<String>,
}

impl WorkerResult {
    /// The workers' results added up, and all their latencies.
    fn sum(results: Vec<WorkerResult>) -> (WorkerResult, Vec<u64>) {
        let mut lat = Vec::with_capacity(results.iter().map(|r| r.latencies_ns.len()).sum());
        let mut total = WorkerResult::default();
        for r in results {
            lat.extend_from_slice(&r.latencies_ns);
            total.completed += r.completed;
            total.errors += r.errors;
            total.validation_errors += r.validation_errors;
            total.warmup_completed += r.warmup_completed;
            total.warmup_errors += r.warmup_errors;
            total.in_bytes += r.in_bytes;
            total.out_bytes += r.out_bytes;
            if total.first_error.is_none() {
                total.first_error = r.first_error;
            }
        }
        (total, lat)
    }
}

struct Clock {
    warm_end: Instant,
    end: Instant,
}

/// What one request ended with: the output bytes, or (is it a validation
/// error, message).
type Outcome = Result<usize, (bool, String)>;

impl WorkerResult {
    /// Counts one request sent at t0 and answered at t1 (measured, warm-up,
    /// or after the window). Returns true for a transport/server error, after
    /// which the caller backs off instead of spinning on a dead server.
    fn record(
        &mut self,
        outcome: Outcome,
        t0: Instant,
        t1: Instant,
        clock: &Clock,
        tensor_bytes: usize,
    ) -> bool {
        let measured = t1 >= clock.warm_end && t1 < clock.end;
        match outcome {
            Ok(out_bytes) => {
                if measured {
                    self.completed += 1;
                    self.latencies_ns.push((t1 - t0).as_nanos() as u64);
                    self.in_bytes += tensor_bytes as u64;
                    self.out_bytes += out_bytes as u64;
                } else if t1 < clock.warm_end {
                    self.warmup_completed += 1;
                }
                false
            }
            Err((validation, msg)) => {
                if measured {
                    if validation {
                        self.validation_errors += 1;
                    } else {
                        self.errors += 1;
                    }
                } else if t1 < clock.warm_end {
                    self.warmup_errors += 1;
                }
                self.first_error.get_or_insert(msg);
                !validation
            }
        }
    }
}

fn worker(id: usize, args: &Args, wl: &Workload, start: &Barrier, clock: &Clock) -> WorkerResult {
    let mut conn = http::Connection::new(args.addr, args.timeout);
    let path = format!("/v2/models/{}/infer", args.model);
    let mut req = Request::default();
    let mut resp = http::Response::default();
    let mut res = WorkerResult {
        latencies_ns: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let mut seq: u64 = 0;
    start.wait();
    loop {
        wl.build(id, seq, &mut req);
        seq += 1;
        let hl = req.header.len().to_string();
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", hl.as_str()),
        ];
        let shared = req.shared.clone();
        let mut parts: Vec<&[u8]> = vec![&req.header, &req.data];
        if let Some(s) = &shared {
            parts.push(s);
        }
        let t0 = Instant::now();
        if t0 >= clock.end {
            break;
        }
        let sent = conn.post(&path, &headers, &parts, &mut resp);
        let t1 = Instant::now();
        let outcome: Outcome = match sent {
            Err(e) => Err((false, format!("I/O error: {e}"))),
            Ok(()) if resp.status != 200 => Err((
                false,
                format!(
                    "HTTP {}: {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)])
                ),
            )),
            Ok(()) => wl
                .validate(&req, resp.inference_header_len, &resp.body)
                .map_err(|e| (true, e)),
        };
        if res.record(outcome, t0, t1, clock, req.tensor_bytes) {
            // Do not spin on a dead server.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    res
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rustpy-loadgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let wl = Workload::new(args.kind, args.expect, args.bytes, args.full_check);
    // Workers start together; spawning 32 threads takes far less than the warm-up.
    let barrier = Barrier::new(args.concurrency);
    let now = Instant::now();
    let clock = Clock {
        warm_end: now + args.warmup,
        end: now + args.warmup + args.duration,
    };
    let results: Vec<WorkerResult> = if args.protocol == Protocol::Grpc {
        match grpc::run(
            args.addr,
            &args.model,
            &wl,
            args.concurrency,
            args.timeout,
            &clock,
        ) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("rustpy-loadgen: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..args.concurrency)
                .map(|id| {
                    let (args, wl, barrier, clock) = (&args, &wl, &barrier, &clock);
                    s.spawn(move || worker(id, args, wl, barrier, clock))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .collect()
        })
    };

    let (total, mut lat) = WorkerResult::sum(results);
    let secs = args.duration.as_secs_f64();
    let tensor_bytes = {
        let mut r = Request::default();
        wl.build(0, 0, &mut r);
        r.tensor_bytes
    };
    let line = json!({
        "model": args.model,
        "workload": args.kind.name(),
        "expect": args.expect.name(),
        "url": args.url,
        "protocol": if args.protocol == Protocol::Grpc { "grpc" } else { "http" },
        "concurrency": args.concurrency,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": secs,
        "tensor_bytes_per_request": tensor_bytes,
        "completed": total.completed,
        "errors": total.errors,
        "validation_errors": total.validation_errors,
        "warmup_completed": total.warmup_completed,
        "warmup_errors": total.warmup_errors,
        "first_error": total.first_error,
        "throughput_rps": total.completed as f64 / secs,
        "in_bytes_per_s": total.in_bytes as f64 / secs,
        "out_bytes_per_s": total.out_bytes as f64 / secs,
        "latency_us": latency_summary(&mut lat),
        "label": args.label,
    });
    println!("{line}");
    if total.completed == 0 {
        eprintln!(
            "rustpy-loadgen: no request completed: {}",
            total
                .first_error
                .as_deref()
                .unwrap_or("(no error recorded; is the duration too short?)")
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
