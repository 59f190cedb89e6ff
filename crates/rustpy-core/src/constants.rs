//! The numbers both sides of the Rust↔Python boundary agree on, defined once
//! here. Python reads them as attributes of the `_rustpy_native` module
//! ([`PYTHON_NAMES`]); pb_utils.py and runtime.py hold no copies. Values that
//! Triton defines are Triton's.

/// `TRITONSERVER_RESPONSE_COMPLETE_FINAL`: the response is the request's last.
pub const RESPONSE_COMPLETE_FINAL: u32 = 1;

/// `TRITONSERVER_RequestReleaseFlag`: how user code releases a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ReleaseFlag {
    /// Released for good (answered).
    All = 1,
    /// Handed back to the scheduler, to be executed again.
    Reschedule = 2,
}

/// Log levels (`TRITONSERVER_LogLevel`, pb_utils.Logger's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Info = 0,
    Warn = 1,
    Error = 2,
    Verbose = 3,
}

impl LogLevel {
    /// The level a number names (an unknown one logs as INFO, as Triton does).
    pub fn from_code(code: u32) -> Self {
        match code {
            c if c == LogLevel::Warn as u32 => LogLevel::Warn,
            c if c == LogLevel::Error as u32 => LogLevel::Error,
            c if c == LogLevel::Verbose as u32 => LogLevel::Verbose,
            _ => LogLevel::Info,
        }
    }
}

/// Kinds of custom metrics (pb_utils.MetricFamily's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricKind {
    pub fn from_code(code: u32) -> Option<Self> {
        [
            MetricKind::Counter,
            MetricKind::Gauge,
            MetricKind::Histogram,
        ]
        .into_iter()
        .find(|k| *k as u32 == code)
    }
}

/// Which Python API a model file implements (what runtime.py's
/// `find_model_class` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ApiKind {
    /// `class Model` with `predict(inputs, requests)` (rustpy's batched API).
    Batched = 0,
    /// `class TritonPythonModel` with `execute(requests)` (the official API).
    PbUtils = 1,
}

impl ApiKind {
    pub fn from_code(code: u32) -> Option<Self> {
        [ApiKind::Batched, ApiKind::PbUtils]
            .into_iter()
            .find(|k| *k as u32 == code)
    }
}

/// Every constant above under the name Python reads it by.
pub const PYTHON_NAMES: &[(&str, u32)] = &[
    ("RESPONSE_COMPLETE_FINAL", RESPONSE_COMPLETE_FINAL),
    ("REQUEST_RELEASE_ALL", ReleaseFlag::All as u32),
    ("REQUEST_RELEASE_RESCHEDULE", ReleaseFlag::Reschedule as u32),
    ("LOG_INFO", LogLevel::Info as u32),
    ("LOG_WARN", LogLevel::Warn as u32),
    ("LOG_ERROR", LogLevel::Error as u32),
    ("LOG_VERBOSE", LogLevel::Verbose as u32),
    ("METRIC_COUNTER", MetricKind::Counter as u32),
    ("METRIC_GAUGE", MetricKind::Gauge as u32),
    ("METRIC_HISTOGRAM", MetricKind::Histogram as u32),
    ("API_BATCHED", ApiKind::Batched as u32),
    ("API_PB_UTILS", ApiKind::PbUtils as u32),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        for k in [
            MetricKind::Counter,
            MetricKind::Gauge,
            MetricKind::Histogram,
        ] {
            assert_eq!(MetricKind::from_code(k as u32), Some(k));
        }
        assert_eq!(MetricKind::from_code(3), None);
        for l in [
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Verbose,
        ] {
            assert_eq!(LogLevel::from_code(l as u32), l);
        }
        assert_eq!(LogLevel::from_code(99), LogLevel::Info);
        for a in [ApiKind::Batched, ApiKind::PbUtils] {
            assert_eq!(ApiKind::from_code(a as u32), Some(a));
        }
        let mut names: Vec<&str> = PYTHON_NAMES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PYTHON_NAMES.len());
    }
}
