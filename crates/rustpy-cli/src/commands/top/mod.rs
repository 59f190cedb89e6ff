//! `rustpy top`: a live view of a running tritonserver (started by `rustpy
//! serve` or any other way), one row per model version: requests/s and mean
//! latency from Triton's statistics (`/v2/models/stats`), p50/p99 from
//! Triton's latency summaries (`--metrics-config summary_latencies=true`,
//! which `rustpy serve` sets), and from rustpy's own metrics rows per call,
//! calls per execution, workers up and their restarts. Refreshed in place on
//! a terminal; `--json` prints one snapshot (rates over one interval).
//!
//! - `prom`: Prometheus' text format, as far as `top` reads it.
//! - `figures`: what is shown, from two polls.

mod figures;
mod prom;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde::Serialize;

use super::serve::http;
use crate::{cli::TopArgs, Error, Global, Result, Status};
use figures::{figures, IndexEntry, ModelFigures, ModelStats, Poll};
use prom::Samples;

/// How long one HTTP request to the server may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP endpoint given as a URL.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    addr: SocketAddr,
    path: String,
    url: String,
}

/// `http://HOST:PORT[/PATH]` or `HOST:PORT[/PATH]` (no TLS: Triton's
/// endpoints are plain HTTP).
fn endpoint(flag: &str, url: &str, default_path: &str) -> Result<Endpoint> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return Err(Error::usage(format!(
            "{flag} takes http://HOST:PORT, got `{url}`"
        )));
    }
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        default_path
    } else {
        path
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::usage(format!(
                "{flag}: cannot resolve `{hostport}` (expected HOST:PORT)"
            ))
        })?;
    Ok(Endpoint {
        addr,
        path: path.to_string(),
        url: format!("http://{hostport}{path}"),
    })
}

/// Triton's metrics endpoint by default: port 8002 of the HTTP endpoint's host.
fn default_metrics_url(http: &str) -> String {
    let rest = http.strip_prefix("http://").unwrap_or(http);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = match hostport.rfind(':') {
        Some(i) if !hostport.ends_with(']') => &hostport[..i],
        _ => hostport,
    };
    format!("http://{host}:8002/metrics")
}

struct Server {
    http: Endpoint,
    metrics: Endpoint,
}

impl Server {
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let body = (method == "POST").then_some(&b"{}"[..]);
        let r = http::request(self.http.addr, method, path, body, TIMEOUT)
            .with_context(|| format!("{method} {}{path}", self.http.url))?;
        if r.status != 200 {
            return Err(anyhow!(
                "{method} {}{path}: HTTP {}: {}",
                self.http.url,
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        serde_json::from_slice(&r.body)
            .with_context(|| format!("{method} {}{path}: unexpected answer", self.http.url))
    }

    fn scrape(&self) -> std::result::Result<Samples, String> {
        let r = http::request(self.metrics.addr, "GET", &self.metrics.path, None, TIMEOUT)
            .map_err(|e| format!("{}: {e:#}", self.metrics.url))?;
        if r.status != 200 {
            return Err(format!("{}: HTTP {}", self.metrics.url, r.status));
        }
        Samples::parse(&String::from_utf8_lossy(&r.body))
            .map_err(|e| format!("{}: {e}", self.metrics.url))
    }

    /// One poll: the repository index, the statistics and a scrape (which
    /// may fail alone: the statistics still give rates and latency).
    fn poll(&self) -> anyhow::Result<Poll> {
        #[derive(serde::Deserialize)]
        struct Stats {
            #[serde(default)]
            model_stats: Vec<ModelStats>,
        }
        let index: Vec<IndexEntry> = self.get_json("POST", "/v2/repository/index")?;
        let stats: Stats = self.get_json("GET", "/v2/models/stats")?;
        Ok(Poll {
            at: Instant::now(),
            index,
            stats: stats.model_stats,
            metrics: self.scrape(),
        })
    }
}

/// One `--json` snapshot.
#[derive(Debug, Serialize)]
struct Snapshot<'a> {
    url: &'a str,
    metrics_url: &'a str,
    /// Seconds between the two polls the rates come from.
    interval_s: f64,
    /// Whether the server publishes latency quantiles (p50/p99).
    latency_quantiles: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_error: Option<&'a str>,
    models: &'a [ModelFigures],
}

pub fn run(_global: &Global, args: TopArgs) -> Result {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(Error::usage("--interval must be at least 0.1 seconds"));
    }
    let metrics_url = args
        .metrics_url
        .clone()
        .unwrap_or_else(|| default_metrics_url(&args.url));
    let server = Server {
        http: endpoint("--url", &args.url, "")?,
        metrics: endpoint("--metrics-url", &metrics_url, "/metrics")?,
    };
    let interval = Duration::from_secs_f64(args.interval);
    let first = server
        .poll()
        .with_context(|| format!("cannot reach tritonserver at {}", server.http.url))?;
    for name in &args.models {
        if !first.index.iter().any(|e| &e.name == name) {
            return Err(Error::usage(format!(
                "--model {name}: the server has no such model"
            )));
        }
    }
    let keep = |f: &mut Vec<ModelFigures>| {
        if !args.models.is_empty() {
            f.retain(|m| args.models.contains(&m.name));
        }
    };

    if args.json {
        std::thread::sleep(interval);
        let second = server
            .poll()
            .with_context(|| format!("cannot reach tritonserver at {}", server.http.url))?;
        let mut models = figures(Some(&first), &second);
        keep(&mut models);
        let snapshot = Snapshot {
            url: &server.http.url,
            metrics_url: &server.metrics.url,
            interval_s: second.at.duration_since(first.at).as_secs_f64(),
            latency_quantiles: has_quantiles(&second),
            metrics_error: second.metrics.as_ref().err().map(String::as_str),
            models: &models,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot).context("cannot encode JSON")?
        );
        return Ok(Status::Success);
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let tty = std::io::stdout().is_terminal();
    let mut prev = first;
    let mut frames = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if !sleep_unless(&stop, interval) {
            break;
        }
        let frame = match server.poll() {
            Ok(cur) => {
                let mut models = figures(Some(&prev), &cur);
                keep(&mut models);
                let text = render(&server, &cur, &models, args.interval);
                prev = cur;
                text
            }
            Err(e) => format!(
                "{}\n\ncannot reach tritonserver: {e:#}\n",
                header(&server, args.interval)
            ),
        };
        let mut out = std::io::stdout().lock();
        // In place on a terminal (home, clear); one frame after the other
        // when piped.
        let lead = if tty { "\x1b[H\x1b[2J" } else { "" };
        let _ = write!(out, "{lead}{frame}{}", if tty { "" } else { "\n" });
        let _ = out.flush();
        frames += 1;
        if args.count.is_some_and(|n| frames >= n) {
            break;
        }
    }
    Ok(Status::Success)
}

/// Sleeps `d` unless Ctrl-C comes first (then returns false).
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    !stop.load(Ordering::SeqCst)
}

fn has_quantiles(poll: &Poll) -> bool {
    poll.metrics.as_ref().is_ok_and(|m| {
        m.sum("nv_inference_request_summary_us_count", &[])
            .is_some()
    })
}

fn header(server: &Server, interval: f64) -> String {
    format!(
        "rustpy top  {}  metrics {}  every {interval}s  (Ctrl-C to quit)",
        server.http.url, server.metrics.url
    )
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// One frame: a header, a row per model version, notes.
fn render(server: &Server, poll: &Poll, models: &[ModelFigures], interval: f64) -> String {
    let mut rows = vec![[
        "MODEL",
        "VER",
        "STATE",
        "REQ/S",
        "ERR/S",
        "MEAN ms",
        "P50 ms",
        "P99 ms",
        "ROWS/CALL",
        "CALLS/EXEC",
        "WORKERS",
        "RESTARTS",
    ]
    .map(String::from)];
    for m in models {
        let rp = m.rustpy.as_ref();
        let workers = rp.and_then(|r| r.workers.as_ref());
        let restarts = workers.map_or_else(
            || "-".to_string(),
            |w| {
                let causes: Vec<String> = w
                    .restarts_by_cause
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                if causes.is_empty() {
                    "0".to_string()
                } else {
                    format!("{} ({})", w.restarts, causes.join(", "))
                }
            },
        );
        rows.push([
            m.name.clone(),
            m.version.clone(),
            if m.state.is_empty() {
                "-".into()
            } else {
                m.state.clone()
            },
            opt(m.requests_per_s, 1),
            opt(m.failures_per_s, 1),
            opt(m.mean_ms, 2),
            opt(m.p50_ms, 2),
            opt(m.p99_ms, 2),
            opt(rp.and_then(|r| r.rows_per_call), 1),
            opt(rp.and_then(|r| r.calls_per_execution), 2),
            workers.map_or_else(|| "-".into(), |w| format!("{}/{}", w.up, w.total)),
            restarts,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = header(server, interval);
    out.push_str("\n\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if models.is_empty() {
        out.push_str("(no models)\n");
    }
    out.push('\n');
    if !has_quantiles(poll) {
        out.push_str(
            "p50/p99: start tritonserver with --metrics-config summary_latencies=true (rustpy serve does)\n",
        );
    }
    match &poll.metrics {
        Err(e) => out.push_str(&format!("metrics: {e}\n")),
        Ok(m) if !m.has_prefix("rustpy_") => out.push_str(
            "no rustpy metrics on this server (no rustpy model, or --backend-config=rustpy,metrics=false)\n",
        ),
        Ok(_) => {}
    }
    for m in models.iter().filter(|m| m.reason.is_some()) {
        out.push_str(&format!(
            "{} v{}: {}\n",
            m.name,
            m.version,
            m.reason.as_deref().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_host_port_and_an_optional_path() {
        let e = endpoint("--url", "http://127.0.0.1:8000", "").unwrap();
        assert_eq!(e.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(e.url, "http://127.0.0.1:8000");
        let m = endpoint("--metrics-url", "127.0.0.1:9/", "/metrics").unwrap();
        assert_eq!(
            (m.path.as_str(), m.url.as_str()),
            ("/metrics", "http://127.0.0.1:9/metrics")
        );
        let p = endpoint("--metrics-url", "http://127.0.0.1:9/x/y", "/metrics").unwrap();
        assert_eq!(p.path, "/x/y");
        assert!(matches!(
            endpoint("--url", "https://h:1", ""),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            endpoint("--url", "nohost", ""),
            Err(Error::Usage(_))
        ));
        assert_eq!(
            default_metrics_url("http://10.0.0.1:8000"),
            "http://10.0.0.1:8002/metrics"
        );
        assert_eq!(
            default_metrics_url("[::1]:8000"),
            "http://[::1]:8002/metrics"
        );
    }
}
