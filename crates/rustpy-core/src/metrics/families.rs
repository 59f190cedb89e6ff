//! Every metric family rustpy publishes, defined once: name, kind, labels,
//! help text, histogram buckets. docs/metrics.md documents the same list in
//! one table (`tests/metrics_doc.rs` checks that they agree).

use crate::constants::MetricKind;

/// One of rustpy's metric families.
#[derive(Debug, PartialEq)]
pub struct Family {
    /// Prometheus name: `rustpy_` prefix, unit and `_total` suffixes.
    pub name: &'static str,
    pub kind: MetricKind,
    /// Label names, in the order label values are given.
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Upper bounds of a histogram's buckets (ascending; `+Inf` is implied).
    pub buckets: &'static [f64],
}

/// Labels of a model instance's series. Not `instance`: Prometheus gives
/// every scraped series that label (the target's address) and would rename
/// ours to `exported_instance`.
const INSTANCE: &[&str] = &["model", "version", "model_instance"];

/// Powers of two up to 4096 rows.
const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// 10 µs to 10 s, about three buckets a decade.
const SECONDS_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind: MetricKind::Counter,
        labels,
        help,
        buckets: &[],
    }
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Family {
    Family {
        name,
        kind: MetricKind::Gauge,
        labels,
        help,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    buckets: &'static [f64],
) -> Family {
    Family {
        name,
        kind: MetricKind::Histogram,
        labels,
        help,
        buckets,
    }
}

// ---- executions (every model instance) ----------------------------------

pub const EXECUTIONS: Family = counter(
    "rustpy_executions_total",
    INSTANCE,
    "Batches Triton handed to the instance (TRITONBACKEND_ModelInstanceExecute calls).",
);
pub const CALLS: Family = counter(
    "rustpy_calls_total",
    INSTANCE,
    "Calls of the model's predict (batched API) or execute (pb_utils API).",
);
pub const CALL_ROWS: Family = histogram(
    "rustpy_call_rows",
    INSTANCE,
    "Rows (batch dimension) one predict/execute call received.",
    ROW_BUCKETS,
);
pub const BATCH_SPLITS: Family = counter(
    "rustpy_batch_splits_total",
    &["model", "version", "model_instance", "reason"],
    "Extra calls made because requests of one batch could not share a call, by reason: shape, inputs or parameters.",
);
pub const PHASE_SECONDS: Family = histogram(
    "rustpy_phase_duration_seconds",
    &["model", "version", "model_instance", "phase"],
    "Time of one call's phases: gather (inputs to arrays), python (user code), scatter (outputs checked and cut per request), send (responses handed to Triton).",
    SECONDS_BUCKETS,
);
pub const GIL_WAIT: Family = histogram(
    "rustpy_gil_wait_seconds",
    INSTANCE,
    "Time a call waited to acquire the GIL before user code ran.",
    SECONDS_BUCKETS,
);
pub const PARAMETER_REFUSALS: Family = counter(
    "rustpy_parameter_refusals_total",
    &["model", "version", "model_instance", "reason"],
    "Requests refused for a request parameter that breaks the model's request_parameters.json, by reason: unknown, missing or invalid.",
);

// ---- worker processes (process-isolated instances) ----------------------

pub const WORKER_RESTARTS: Family = counter(
    "rustpy_worker_restarts_total",
    &["model", "version", "model_instance", "cause"],
    "Worker processes lost and restarted, by cause: the signal that ended it (SIGSEGV, SIGKILL, ...), exit (it exited), timeout (rustpy.execute_timeout_ms), unresponsive (its channel broke and it was killed).",
);
pub const WORKER_START_FAILURES: Family = counter(
    "rustpy_worker_start_failures_total",
    INSTANCE,
    "Attempts to start a replacement worker that failed (retried with backoff).",
);
pub const WORKER_UP: Family = gauge(
    "rustpy_worker_up",
    INSTANCE,
    "1 while the instance's worker process runs, 0 while it is being restarted.",
);
pub const WORKER_RSS: Family = gauge(
    "rustpy_worker_resident_memory_bytes",
    INSTANCE,
    "Resident memory of the instance's worker process (after its last batch, at most once a second).",
);
pub const WORKER_SHM: Family = gauge(
    "rustpy_worker_shared_memory_bytes",
    &["model", "version", "model_instance", "region"],
    "Size of the worker's shared-memory regions, by region: input, output.",
);

// ---- checkpoints (model loads) ------------------------------------------

pub const CHECKPOINT_FETCHES: Family = counter(
    "rustpy_checkpoint_fetches_total",
    &["model", "version", "source", "result"],
    "Checkpoint resolutions at model load, by source kind (hf, git, s3, https) and result: downloaded, cache_hit or failed.",
);
pub const CHECKPOINT_BYTES: Family = counter(
    "rustpy_checkpoint_fetch_bytes_total",
    &["model", "version", "source"],
    "Bytes of checkpoint files downloaded (cache hits add none).",
);
pub const CHECKPOINT_SECONDS: Family = counter(
    "rustpy_checkpoint_fetch_seconds_total",
    &["model", "version", "source"],
    "Time spent resolving checkpoints at model load (downloads and cache look-ups).",
);

/// Every family, in the order docs/metrics.md lists them.
pub const FAMILIES: &[&Family] = &[
    &EXECUTIONS,
    &CALLS,
    &CALL_ROWS,
    &BATCH_SPLITS,
    &PHASE_SECONDS,
    &GIL_WAIT,
    &PARAMETER_REFUSALS,
    &WORKER_RESTARTS,
    &WORKER_START_FAILURES,
    &WORKER_UP,
    &WORKER_RSS,
    &WORKER_SHM,
    &CHECKPOINT_FETCHES,
    &CHECKPOINT_BYTES,
    &CHECKPOINT_SECONDS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("rustpy_"), "{}", f.name);
            assert!(
                f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                f.name
            );
            // Counters end in _total, and only counters do.
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == MetricKind::Counter,
                "{}",
                f.name
            );
            // Times are in seconds, sizes in bytes.
            assert!(
                !f.name.contains("_ms") && !f.name.contains("_us"),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == MetricKind::Histogram,
                !f.buckets.is_empty(),
                "{}",
                f.name
            );
            assert!(f.buckets.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
            // Labels Prometheus owns (histogram buckets, scrape targets).
            for owned in ["le", "quantile", "instance", "job"] {
                assert!(!f.labels.contains(&owned), "{}: {owned}", f.name);
            }
        }
    }
}
