//! What `top` shows, computed from two polls of a server: per model version,
//! rates over the interval between them (requests/s from Triton's
//! statistics, rows per call and calls per execution from rustpy's
//! metrics), Triton's latency quantiles, and the state of rustpy's workers.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::prom::Samples;

/// One poll of a server.
pub struct Poll {
    pub at: Instant,
    pub index: Vec<IndexEntry>,
    pub stats: Vec<ModelStats>,
    /// The /metrics scrape, or why there is none.
    pub metrics: Result<Samples, String>,
}

/// An entry of `POST /v2/repository/index`.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An entry of `GET /v2/models/stats` (the fields `top` reads).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelStats {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub inference_stats: InferenceStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InferenceStats {
    #[serde(default)]
    pub success: Duration,
    #[serde(default)]
    pub fail: Duration,
    #[serde(default)]
    pub queue: Duration,
}

/// Triton's `{"count", "ns"}` pair.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Duration {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub ns: u64,
}

/// One model version's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelFigures {
    pub name: String,
    pub version: String,
    /// READY, UNAVAILABLE, LOADING, ... ("" when Triton reports none).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests that completed (successfully or not) per second.
    pub requests_per_s: Option<f64>,
    pub failures_per_s: Option<f64>,
    /// Mean request latency over the interval, from Triton's statistics.
    pub mean_ms: Option<f64>,
    /// Mean time in Triton's queue over the interval.
    pub queue_ms: Option<f64>,
    /// Triton's latency quantiles (`nv_inference_request_summary_us`, over
    /// its summary window), when the server publishes them.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Completed requests since the model loaded.
    pub requests_total: u64,
    /// rustpy's own figures; None for a model of another backend (or with
    /// rustpy's metrics off).
    pub rustpy: Option<RustpyFigures>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RustpyFigures {
    /// Rows per predict/execute call over the interval.
    pub rows_per_call: Option<f64>,
    /// Calls per execution (batch) over the interval: above 1 when batches split.
    pub calls_per_execution: Option<f64>,
    pub calls_total: u64,
    pub executions_total: u64,
    /// Rows of every call since the model loaded.
    pub rows_total: u64,
    /// Process-isolated models only.
    pub workers: Option<Workers>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Workers {
    /// Workers running, of `total` instances.
    pub up: u64,
    pub total: u64,
    pub restarts: u64,
    pub restarts_by_cause: BTreeMap<String, u64>,
    pub resident_bytes: u64,
}

/// The figures of every model version the server knows, from the previous
/// poll (if any) to this one.
pub fn figures(prev: Option<&Poll>, cur: &Poll) -> Vec<ModelFigures> {
    let mut keys: Vec<(String, String)> = cur
        .stats
        .iter()
        .map(|s| (s.name.clone(), s.version.clone()))
        .chain(
            cur.index
                .iter()
                .map(|e| (e.name.clone(), e.version.clone().unwrap_or_default())),
        )
        .collect();
    keys.sort();
    keys.dedup();
    // A model listed without a version (not loaded) is dropped when a
    // version of it is listed.
    let versioned: Vec<String> = keys
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    keys.retain(|(n, v)| !v.is_empty() || !versioned.contains(n));
    let seconds = prev.map(|p| cur.at.duration_since(p.at).as_secs_f64());
    keys.into_iter()
        .map(|(name, version)| one(prev, cur, seconds, name, version))
        .collect()
}

fn one(
    prev: Option<&Poll>,
    cur: &Poll,
    seconds: Option<f64>,
    name: String,
    version: String,
) -> ModelFigures {
    let entry = cur
        .index
        .iter()
        .find(|e| e.name == name && e.version.clone().unwrap_or_default() == version)
        .or_else(|| cur.index.iter().find(|e| e.name == name));
    let stats_of = |p: &Poll| {
        p.stats
            .iter()
            .find(|s| s.name == name && s.version == version)
            .map(|s| s.inference_stats.clone())
    };
    let now = stats_of(cur).unwrap_or_default();
    let before = prev.and_then(stats_of);
    let delta = |f: fn(&InferenceStats) -> Duration| {
        before.as_ref().map(|b| {
            let (a, b) = (f(&now), f(b));
            (a.count.saturating_sub(b.count), a.ns.saturating_sub(b.ns))
        })
    };
    let rate = |n: Option<(u64, u64)>| match (n, seconds) {
        (Some((count, _)), Some(s)) if s > 0.0 => Some(count as f64 / s),
        _ => None,
    };
    let mean_ms = |d: Option<(u64, u64)>| match d {
        Some((count, ns)) if count > 0 => Some(ns as f64 / count as f64 / 1e6),
        _ => None,
    };
    let success = delta(|s| s.success);
    let fail = delta(|s| s.fail);
    let completed = match (success, fail) {
        (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
        _ => None,
    };
    let metrics = cur.metrics.as_ref().ok();
    let labels = [("model", name.as_str()), ("version", version.as_str())];
    let quantile = |q: &str| {
        let mut l = labels.to_vec();
        l.push(("quantile", q));
        metrics
            .and_then(|m| m.sum("nv_inference_request_summary_us", &l))
            .filter(|v| v.is_finite())
            .map(|us| us / 1e3)
    };
    ModelFigures {
        state: entry.and_then(|e| e.state.clone()).unwrap_or_default(),
        reason: entry
            .and_then(|e| e.reason.clone())
            .filter(|r| !r.is_empty()),
        requests_per_s: rate(completed),
        failures_per_s: rate(fail),
        mean_ms: mean_ms(success),
        queue_ms: mean_ms(delta(|s| s.queue)),
        p50_ms: quantile("0.5"),
        p99_ms: quantile("0.99"),
        requests_total: now.success.count + now.fail.count,
        rustpy: metrics
            .and_then(|m| rustpy_figures(m, prev.and_then(|p| p.metrics.as_ref().ok()), &labels)),
        name,
        version,
    }
}

fn rustpy_figures(
    now: &Samples,
    before: Option<&Samples>,
    labels: &[(&str, &str)],
) -> Option<RustpyFigures> {
    let executions_total = now.sum("rustpy_executions_total", labels)?;
    let delta = |name: &str| {
        let b = before?.sum(name, labels).unwrap_or(0.0);
        Some(now.sum(name, labels).unwrap_or(0.0) - b)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let workers = now.sum("rustpy_worker_up", labels).map(|up| {
        let mut restarts_by_cause = BTreeMap::new();
        for s in now.matching("rustpy_worker_restarts_total", labels) {
            if let Some(cause) = s.labels.get("cause") {
                if s.value > 0.0 {
                    *restarts_by_cause.entry(cause.clone()).or_insert(0) += s.value as u64;
                }
            }
        }
        Workers {
            up: up as u64,
            total: now.matching("rustpy_worker_up", labels).count() as u64,
            restarts: restarts_by_cause.values().sum(),
            restarts_by_cause,
            resident_bytes: now
                .sum("rustpy_worker_resident_memory_bytes", labels)
                .unwrap_or(0.0) as u64,
        }
    });
    Some(RustpyFigures {
        rows_per_call: ratio(
            delta("rustpy_call_rows_sum"),
            delta("rustpy_call_rows_count"),
        ),
        calls_per_execution: ratio(
            delta("rustpy_calls_total"),
            delta("rustpy_executions_total"),
        ),
        calls_total: now.sum("rustpy_calls_total", labels).unwrap_or(0.0) as u64,
        executions_total: executions_total as u64,
        rows_total: now.sum("rustpy_call_rows_sum", labels).unwrap_or(0.0) as u64,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Span;

    fn poll(at: Instant, success: u64, ms: u64, metrics: &str) -> Poll {
        Poll {
            at,
            index: vec![
                IndexEntry {
                    name: "m".into(),
                    version: Some("1".into()),
                    state: Some("READY".into()),
                    reason: None,
                },
                IndexEntry {
                    name: "off".into(),
                    version: None,
                    state: None,
                    reason: None,
                },
            ],
            stats: vec![ModelStats {
                name: "m".into(),
                version: "1".into(),
                inference_stats: InferenceStats {
                    success: Duration {
                        count: success,
                        ns: ms * 1_000_000,
                    },
                    ..Default::default()
                },
            }],
            metrics: Samples::parse(metrics),
        }
    }

    const L: &str = "{model=\"m\",version=\"1\",model_instance=\"m_0\"}";

    #[test]
    fn rates_and_ratios_over_the_interval() {
        let t0 = Instant::now();
        let m0 = format!(
            "rustpy_executions_total{L} 10\nrustpy_calls_total{L} 10\n\
             rustpy_call_rows_sum{L} 10\nrustpy_call_rows_count{L} 10\n"
        );
        let m1 = format!(
            "rustpy_executions_total{L} 14\nrustpy_calls_total{L} 20\n\
             rustpy_call_rows_sum{L} 50\nrustpy_call_rows_count{L} 20\n\
             nv_inference_request_summary_us{{model=\"m\",version=\"1\",quantile=\"0.5\"}} 1500\n\
             nv_inference_request_summary_us{{model=\"m\",version=\"1\",quantile=\"0.99\"}} NaN\n\
             rustpy_worker_up{L} 1\n\
             rustpy_worker_restarts_total{{model=\"m\",version=\"1\",model_instance=\"m_0\",cause=\"SIGSEGV\"}} 2\n\
             rustpy_worker_restarts_total{{model=\"m\",version=\"1\",model_instance=\"m_0\",cause=\"exit\"}} 0\n"
        );
        let a = poll(t0, 100, 1000, &m0);
        let b = poll(t0 + Span::from_secs(2), 140, 1200, &m1);
        let f = figures(Some(&a), &b);
        assert_eq!(f.len(), 2, "{f:?}");
        let m = &f[0];
        assert_eq!((m.name.as_str(), m.state.as_str()), ("m", "READY"));
        assert_eq!(m.requests_per_s, Some(20.0));
        assert_eq!(m.mean_ms, Some(5.0));
        assert_eq!(m.p50_ms, Some(1.5));
        assert_eq!(m.p99_ms, None);
        assert_eq!(m.requests_total, 140);
        let r = m.rustpy.as_ref().unwrap();
        assert_eq!(r.rows_per_call, Some(4.0));
        assert_eq!(r.calls_per_execution, Some(2.5));
        assert_eq!(
            (r.calls_total, r.rows_total, r.executions_total),
            (20, 50, 14)
        );
        let w = r.workers.as_ref().unwrap();
        assert_eq!((w.up, w.total, w.restarts), (1, 1, 2));
        assert_eq!(w.restarts_by_cause, BTreeMap::from([("SIGSEGV".into(), 2)]));
        // The unloaded model is listed, without figures.
        assert_eq!(f[1].name, "off");
        assert!(f[1].rustpy.is_none() && f[1].requests_per_s.is_none());
        // One poll: totals, no rates.
        let single = figures(None, &b);
        assert_eq!(single[0].requests_per_s, None);
        assert_eq!(single[0].rustpy.as_ref().unwrap().rows_per_call, None);
    }
}
