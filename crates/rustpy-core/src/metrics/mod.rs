//! rustpy's own metrics, Python-free and without the C API: which families
//! exist ([`families`]), the interface a metrics registry implements
//! ([`Recorder`]: Triton's in the backend, [`MemoryRecorder`] in tests, none
//! in `rustpy run`), and the typed handles the core updates
//! ([`InstanceMetrics`], [`WorkerMetrics`], checkpoint fetches).
//!
//! Series are created when a model, instance or worker is set up, never per
//! request: per batch the core only adds to handles it already holds. A
//! [`Metrics`] value is handed down as an argument from whoever hosts the
//! core; [`Metrics::off`] (the `metrics=false` backend setting) makes every
//! handle a no-op.

pub mod families;
mod instance;
mod memory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use families::{Family, FAMILIES};
pub use instance::{
    CallStats, ExecStats, FetchResult, InstanceLabels, InstanceMetrics, Phase, Refusal,
    SplitReason, WorkerMetrics,
};
pub use memory::{MemoryRecorder, Sample};

use crate::error::Result;

/// A metrics registry: creates the series of a family for given label
/// values (in the order of `family.labels`).
pub trait Recorder: Send + Sync {
    /// A new series. Called at set-up time, not per request. The series
    /// stays in the registry as long as the returned handle lives.
    fn series(&self, family: &'static Family, labels: &[&str]) -> Result<Arc<dyn SeriesSink>>;
}

/// One labelled series of a registry.
pub trait SeriesSink: Send + Sync {
    /// Adds to a counter or a gauge.
    fn add(&self, value: f64);
    /// Sets a gauge.
    fn set(&self, value: f64);
    /// Records one observation of a histogram.
    fn observe(&self, value: f64);
}

/// A handle on one series; a no-op when metrics are off or the registry
/// refused the series.
#[derive(Clone, Default)]
pub struct Series(Option<Arc<dyn SeriesSink>>);

impl Series {
    pub fn off() -> Series {
        Series(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn add(&self, value: f64) {
        if let Some(s) = &self.0 {
            s.add(value);
        }
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn set(&self, value: f64) {
        if let Some(s) = &self.0 {
            s.set(value);
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(s) = &self.0 {
            s.observe(value);
        }
    }
}

/// Where rustpy's metrics go, handed to whatever sets up models and
/// instances. Cheap to clone; [`Metrics::off`] records nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Shared>>);

struct Shared {
    recorder: Arc<dyn Recorder>,
    /// Series of events that outlive what they count (a checkpoint fetch
    /// outlives the model load it served, or failed): kept as long as
    /// this `Metrics`.
    kept: Mutex<HashMap<(&'static str, Vec<String>), Series>>,
}

impl Metrics {
    /// Records through `recorder`.
    pub fn new(recorder: Arc<dyn Recorder>) -> Metrics {
        Metrics(Some(Arc::new(Shared {
            recorder,
            kept: Mutex::new(HashMap::new()),
        })))
    }

    /// Records nothing.
    pub fn off() -> Metrics {
        Metrics(None)
    }

    /// Records into memory; the recorder reads the values back.
    pub fn in_memory() -> (Metrics, Arc<MemoryRecorder>) {
        let memory = Arc::new(MemoryRecorder::default());
        (Metrics::new(memory.clone()), memory)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A new series of `family` (off when metrics are off, or when the
    /// registry refuses it: metrics never fail the work they count).
    pub fn series(&self, family: &'static Family, labels: &[&str]) -> Series {
        debug_assert_eq!(family.labels.len(), labels.len(), "{}", family.name);
        match &self.0 {
            Some(shared) => Series(shared.recorder.series(family, labels).ok()),
            None => Series::off(),
        }
    }

    /// The series of `family` with these labels, created once and kept as
    /// long as this `Metrics` lives.
    pub fn kept(&self, family: &'static Family, labels: &[&str]) -> Series {
        let Some(shared) = &self.0 else {
            return Series::off();
        };
        let key = (family.name, labels.iter().map(|l| l.to_string()).collect());
        let mut kept = shared.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.entry(key)
            .or_insert_with(|| self.series(family, labels))
            .clone()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_on() {
            "Metrics(on)"
        } else {
            "Metrics(off)"
        })
    }
}
