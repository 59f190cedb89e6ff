//! The typed handles the core updates: a model instance's execution
//! metrics ([`InstanceMetrics`], fed one [`ExecStats`] per batch), a
//! process-isolated instance's worker ([`WorkerMetrics`]), and checkpoint
//! fetches ([`Metrics::checkpoint_fetched`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::families::*;
use super::{Metrics, Series};

/// Why a batch's requests did not all share one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitReason {
    /// A variable dimension differs (and the input is not ragged).
    Shape,
    /// The set of inputs (or an input's data type) differs.
    Inputs,
    /// Request parameters differ (`split_by_parameters = True`).
    Parameters,
}

impl SplitReason {
    pub const ALL: [SplitReason; 3] = [
        SplitReason::Shape,
        SplitReason::Inputs,
        SplitReason::Parameters,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SplitReason::Shape => "shape",
            SplitReason::Inputs => "inputs",
            SplitReason::Parameters => "parameters",
        }
    }
}

/// The phases of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Requests' inputs gathered into the arrays user code receives.
    Gather,
    /// User code (predict / execute).
    Python,
    /// What user code returned checked and cut back per request.
    Scatter,
    /// Responses handed to the server.
    Send,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Gather, Phase::Python, Phase::Scatter, Phase::Send];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Gather => "gather",
            Phase::Python => "python",
            Phase::Scatter => "scatter",
            Phase::Send => "send",
        }
    }
}

/// Why a request parameter was refused (request_parameters.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not declared, and the model does not allow unknown ones.
    Unknown,
    /// Declared required and absent.
    Missing,
    /// Of the wrong type, out of range or not one of the choices.
    Invalid,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Unknown, Refusal::Missing, Refusal::Invalid];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }
}

/// What one call of user code took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Rows (batch dimension) the call received.
    pub rows: u64,
    /// Nanoseconds per phase, in [`Phase::ALL`] order.
    pub phase_ns: [u64; 4],
    /// Nanoseconds waited for the GIL before the call (None: not measured).
    pub gil_wait_ns: Option<u64>,
}

impl CallStats {
    /// A call of `rows` rows, nothing timed yet (GIL wait measured: 0).
    pub fn new(rows: usize) -> CallStats {
        CallStats {
            rows: rows as u64,
            phase_ns: [0; 4],
            gil_wait_ns: Some(0),
        }
    }

    /// Adds the time since `since` to `phase`.
    pub fn time(&mut self, phase: Phase, since: Instant) {
        self.add(phase, since.elapsed());
    }

    /// Adds `took` to `phase`.
    pub fn add(&mut self, phase: Phase, took: Duration) {
        self.phase_ns[phase as usize] += nanos(took);
    }

    /// Adds `waited` to the GIL wait.
    pub fn waited_for_gil(&mut self, waited: Duration) {
        *self.gil_wait_ns.get_or_insert(0) += nanos(waited);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What an execution did, as counted by the executor that ran it. Plain
/// data (a worker process sends it back with its batch's Done).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStats {
    pub calls: Vec<CallStats>,
    /// Extra calls per [`SplitReason::ALL`].
    pub splits: [u32; 3],
    /// Refused requests per [`Refusal::ALL`].
    pub refusals: [u32; 3],
}

impl ExecStats {
    pub fn split(&mut self, reason: SplitReason) {
        self.splits[reason as usize] += 1;
    }

    pub fn refused(&mut self, reason: Refusal) {
        self.refusals[reason as usize] += 1;
    }
}

/// Labels that name a model instance's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLabels {
    pub model: String,
    pub version: String,
    pub instance: String,
}

impl InstanceLabels {
    pub fn new(model: &str, version: u64, instance: &str) -> InstanceLabels {
        InstanceLabels {
            model: model.to_string(),
            version: version.to_string(),
            instance: instance.to_string(),
        }
    }

    fn values(&self) -> [&str; 3] {
        [&self.model, &self.version, &self.instance]
    }

    fn with<'a>(&'a self, extra: &'a str) -> [&'a str; 4] {
        [&self.model, &self.version, &self.instance, extra]
    }
}

/// One model instance's execution metrics.
#[derive(Default)]
pub struct InstanceMetrics {
    executions: Series,
    calls: Series,
    rows: Series,
    splits: [Series; 3],
    phases: [Series; 4],
    gil_wait: Series,
    refusals: [Series; 3],
}

impl InstanceMetrics {
    /// Creates the instance's series (all at zero, so rates exist from the
    /// start).
    pub fn new(metrics: &Metrics, labels: &InstanceLabels) -> InstanceMetrics {
        let base = labels.values();
        InstanceMetrics {
            executions: metrics.series(&EXECUTIONS, &base),
            calls: metrics.series(&CALLS, &base),
            rows: metrics.series(&CALL_ROWS, &base),
            splits: SplitReason::ALL
                .map(|r| metrics.series(&BATCH_SPLITS, &labels.with(r.label()))),
            phases: Phase::ALL.map(|p| metrics.series(&PHASE_SECONDS, &labels.with(p.label()))),
            gil_wait: metrics.series(&GIL_WAIT, &base),
            refusals: Refusal::ALL
                .map(|r| metrics.series(&PARAMETER_REFUSALS, &labels.with(r.label()))),
        }
    }

    /// Records nothing.
    pub fn off() -> InstanceMetrics {
        InstanceMetrics::default()
    }

    pub fn is_on(&self) -> bool {
        self.executions.is_on()
    }

    /// Records one execution.
    pub fn record(&self, stats: &ExecStats) {
        if !self.is_on() {
            return;
        }
        self.executions.inc();
        self.calls.add(stats.calls.len() as f64);
        for call in &stats.calls {
            self.rows.observe(call.rows as f64);
            for (series, ns) in self.phases.iter().zip(call.phase_ns) {
                series.observe(seconds(ns));
            }
            if let Some(ns) = call.gil_wait_ns {
                self.gil_wait.observe(seconds(ns));
            }
        }
        for (series, n) in self.splits.iter().zip(stats.splits) {
            if n > 0 {
                series.add(f64::from(n));
            }
        }
        for (series, n) in self.refusals.iter().zip(stats.refusals) {
            if n > 0 {
                series.add(f64::from(n));
            }
        }
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

/// Restart causes whose series exist from the start (others appear when
/// they first happen).
const USUAL_CAUSES: [&str; 5] = ["SIGSEGV", "SIGABRT", "SIGKILL", "exit", "timeout"];

/// A process-isolated instance's worker: restarts, state, memory.
pub struct WorkerMetrics {
    metrics: Metrics,
    labels: InstanceLabels,
    restarts: Mutex<Vec<(String, Series)>>,
    start_failures: Series,
    up: Series,
    rss: Series,
    /// input, output
    shm: [Series; 2],
}

impl WorkerMetrics {
    pub fn new(metrics: &Metrics, labels: &InstanceLabels) -> WorkerMetrics {
        let base = labels.values();
        let restarts = USUAL_CAUSES
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    metrics.series(&WORKER_RESTARTS, &labels.with(c)),
                )
            })
            .collect();
        WorkerMetrics {
            metrics: metrics.clone(),
            labels: labels.clone(),
            restarts: Mutex::new(restarts),
            start_failures: metrics.series(&WORKER_START_FAILURES, &base),
            up: metrics.series(&WORKER_UP, &base),
            rss: metrics.series(&WORKER_RSS, &base),
            shm: ["input", "output"].map(|r| metrics.series(&WORKER_SHM, &labels.with(r))),
        }
    }

    pub fn off() -> WorkerMetrics {
        WorkerMetrics::new(&Metrics::off(), &InstanceLabels::new("", 0, ""))
    }

    /// A worker was lost (and is being restarted) for `cause`: a signal
    /// name, `exit`, `timeout` or `unresponsive`.
    pub fn restarted(&self, cause: &str) {
        if !self.metrics.is_on() {
            return;
        }
        let mut restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, s)) = restarts.iter().find(|(c, _)| c == cause) {
            s.inc();
            return;
        }
        let series = self
            .metrics
            .series(&WORKER_RESTARTS, &self.labels.with(cause));
        series.inc();
        restarts.push((cause.to_string(), series));
    }

    pub fn start_failed(&self) {
        self.start_failures.inc();
    }

    pub fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    /// The worker's resident memory (None: unknown, left as it was) and
    /// its shared regions' sizes.
    pub fn set_memory(&self, rss: Option<u64>, input: usize, output: usize) {
        if let Some(rss) = rss {
            self.rss.set(rss as f64);
        }
        self.shm[0].set(input as f64);
        self.shm[1].set(output as f64);
    }

    pub fn is_on(&self) -> bool {
        self.metrics.is_on()
    }
}

/// How a checkpoint resolution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Downloaded,
    CacheHit,
    Failed,
}

impl FetchResult {
    pub fn label(self) -> &'static str {
        match self {
            FetchResult::Downloaded => "downloaded",
            FetchResult::CacheHit => "cache_hit",
            FetchResult::Failed => "failed",
        }
    }
}

impl Metrics {
    /// Counts one checkpoint resolution of model `model` version `version`
    /// from a `source` kind (hf, git, s3, https): its result, the bytes it
    /// downloaded and the time it took. Kept after the model unloads.
    pub fn checkpoint_fetched(
        &self,
        model: &str,
        version: u64,
        source: &str,
        result: FetchResult,
        bytes: u64,
        took: Duration,
    ) {
        if !self.is_on() {
            return;
        }
        let version = version.to_string();
        let base = [model, &version, source];
        self.kept(
            &CHECKPOINT_FETCHES,
            &[model, &version, source, result.label()],
        )
        .inc();
        self.kept(&CHECKPOINT_BYTES, &base).add(bytes as f64);
        self.kept(&CHECKPOINT_SECONDS, &base)
            .add(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> InstanceLabels {
        InstanceLabels::new("m", 1, "m_0")
    }

    #[test]
    fn an_execution_counts_calls_rows_splits_phases_and_refusals() {
        let (metrics, memory) = Metrics::in_memory();
        let im = InstanceMetrics::new(&metrics, &labels());
        let mut stats = ExecStats::default();
        stats.calls.push(CallStats {
            rows: 3,
            phase_ns: [1_000, 2_000_000, 3_000, 4_000],
            gil_wait_ns: Some(500),
        });
        stats.calls.push(CallStats {
            rows: 2,
            ..Default::default()
        });
        stats.split(SplitReason::Shape);
        stats.refused(Refusal::Invalid);
        stats.refused(Refusal::Invalid);
        im.record(&stats);
        im.record(&ExecStats::default());
        let l = ["m", "1", "m_0"];
        assert_eq!(memory.value("rustpy_executions_total", &l), Some(2.0));
        assert_eq!(memory.value("rustpy_calls_total", &l), Some(2.0));
        let rows = memory.histogram("rustpy_call_rows", &l).unwrap();
        assert_eq!((rows.count, rows.sum), (2, 5.0));
        let at = |k: &str, v: &str| {
            memory.value(
                if k == "split" {
                    "rustpy_batch_splits_total"
                } else {
                    "rustpy_parameter_refusals_total"
                },
                &["m", "1", "m_0", v],
            )
        };
        assert_eq!(at("split", "shape"), Some(1.0));
        assert_eq!(at("split", "inputs"), Some(0.0));
        assert_eq!(at("refusal", "invalid"), Some(2.0));
        assert_eq!(at("refusal", "unknown"), Some(0.0));
        let python = memory
            .histogram(
                "rustpy_phase_duration_seconds",
                &["m", "1", "m_0", "python"],
            )
            .unwrap();
        assert_eq!(python.count, 2);
        assert!((python.sum - 0.002).abs() < 1e-12, "{}", python.sum);
        let gil = memory.histogram("rustpy_gil_wait_seconds", &l).unwrap();
        assert_eq!(gil.count, 1);
    }

    #[test]
    fn off_records_nothing() {
        let im = InstanceMetrics::off();
        assert!(!im.is_on());
        im.record(&ExecStats::default());
        let w = WorkerMetrics::off();
        w.restarted("SIGSEGV");
        assert!(!w.is_on());
    }

    #[test]
    fn restarts_count_by_cause_including_new_ones() {
        let (metrics, memory) = Metrics::in_memory();
        let w = WorkerMetrics::new(&metrics, &labels());
        w.restarted("SIGSEGV");
        w.restarted("SIGBUS");
        w.restarted("SIGBUS");
        let at = |c: &str| memory.value("rustpy_worker_restarts_total", &["m", "1", "m_0", c]);
        assert_eq!(at("SIGSEGV"), Some(1.0));
        assert_eq!(at("SIGBUS"), Some(2.0));
        assert_eq!(at("timeout"), Some(0.0));
        w.set_up(true);
        w.set_memory(Some(4096), 10, 20);
        w.set_memory(None, 11, 20);
        assert_eq!(
            memory.value("rustpy_worker_up", &["m", "1", "m_0"]),
            Some(1.0)
        );
        assert_eq!(
            memory.value("rustpy_worker_resident_memory_bytes", &["m", "1", "m_0"]),
            Some(4096.0)
        );
        assert_eq!(
            memory.value(
                "rustpy_worker_shared_memory_bytes",
                &["m", "1", "m_0", "input"]
            ),
            Some(11.0)
        );
    }

    #[test]
    fn checkpoint_fetches_are_kept_per_model_source_and_result() {
        let (metrics, memory) = Metrics::in_memory();
        metrics.checkpoint_fetched(
            "m",
            1,
            "hf",
            FetchResult::Downloaded,
            100,
            Duration::from_millis(500),
        );
        metrics.checkpoint_fetched("m", 1, "hf", FetchResult::CacheHit, 0, Duration::ZERO);
        metrics.checkpoint_fetched("m", 1, "hf", FetchResult::CacheHit, 0, Duration::ZERO);
        let at = |r: &str| memory.value("rustpy_checkpoint_fetches_total", &["m", "1", "hf", r]);
        assert_eq!(at("downloaded"), Some(1.0));
        assert_eq!(at("cache_hit"), Some(2.0));
        assert_eq!(at("failed"), None);
        assert_eq!(
            memory.value("rustpy_checkpoint_fetch_bytes_total", &["m", "1", "hf"]),
            Some(100.0)
        );
        assert_eq!(
            memory.value("rustpy_checkpoint_fetch_seconds_total", &["m", "1", "hf"]),
            Some(0.5)
        );
    }
}
