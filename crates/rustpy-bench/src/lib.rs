//! rustpy's benchmark drivers: `rustpy-loadgen` (KServe v2 over HTTP) and
//! `rustpy-inproc` (Triton's in-process C API). This library holds what they
//! share: the workloads (request building, response checking) and the
//! latency summary.

#![forbid(unsafe_code)]

pub mod workload;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// min/mean/p50/p90/p99/max in µs (one decimal) of latencies in ns.
pub fn latency_summary(lat: &mut [u64]) -> serde_json::Value {
    lat.sort_unstable();
    let us = |ns: f64| (ns / 1e3 * 10.0).round() / 10.0;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64
    };
    serde_json::json!({
        "min": us(lat.first().copied().unwrap_or(0) as f64),
        "mean": us(mean),
        "p50": us(percentile(lat, 50.0)),
        "p90": us(percentile(lat, 90.0)),
        "p99": us(percentile(lat, 99.0)),
        "max": us(lat.last().copied().unwrap_or(0) as f64),
    })
}
