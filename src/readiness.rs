//! An instance's readiness as the server sees it: the answer of
//! `TRITONBACKEND_ModelInstanceReady` (called by servers from 2.64 on, for
//! `/v2/models/<m>/ready` and the health endpoints with strict readiness),
//! and the `rustpy_model_instance_ready` gauge on the metrics endpoint,
//! which rustpy keeps current itself (the probe) so readiness is observable
//! on servers that never ask, 2.51 among them.
//!
//! Not ready means: a process-isolated instance's worker is gone ("Stub
//! process '<instance>' is not healthy.", upstream's words), or the model's
//! `is_ready()` answered False, raised, answered something else than a bool,
//! or did not answer within the timeout (core's `rustpy_core::readiness`).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rustpy_core::readiness::{Probe, Readiness, ReadyCall};
use rustpy_core::server::{server_api, Metric, MetricFamily, MetricKind};
use rustpy_core::{Error, ErrorCode};

use crate::ffi::{log, LogLevel};

type Result<T> = std::result::Result<T, Error>;

/// Whether a process-isolated instance's worker is alive.
pub type Health = Box<dyn Fn() -> bool + Send + Sync>;

pub const GAUGE_NAME: &str = "rustpy_model_instance_ready";

pub struct InstanceReadiness {
    instance: String,
    health: Option<Health>,
    user: Option<Readiness>,
    gauge: Option<Box<dyn Metric>>,
    probe: Mutex<Option<Probe>>,
    /// The last answer's (ready, reason), to log changes once.
    last: Mutex<Option<(bool, String)>>,
}

impl InstanceReadiness {
    /// The readiness of instance `instance` of `model` `version`: its
    /// worker's health (process isolation) and its `is_ready()` (if the
    /// model defines one). With either, a gauge is published and, with
    /// `probe_interval`, kept current by a probe thread.
    // The instance's names, its two probes and three backend settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &str,
        version: u64,
        instance: &str,
        health: Option<Health>,
        ready_call: Option<ReadyCall>,
        timeout: Duration,
        probe_interval: Option<Duration>,
        publish: bool,
    ) -> Arc<Self> {
        let watched = health.is_some() || ready_call.is_some();
        // `publish`: rustpy's metrics are on (--backend-config=rustpy,metrics).
        let gauge = if watched && publish {
            match gauge(model, version, instance) {
                Ok(g) => Some(g),
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "rustpy: model '{model}' instance '{instance}': no readiness gauge: {}",
                            e.message
                        ),
                    );
                    None
                }
            }
        } else {
            None
        };
        let me = Arc::new(InstanceReadiness {
            instance: instance.to_string(),
            health,
            user: ready_call.map(|call| Readiness::new(call, timeout)),
            gauge,
            probe: Mutex::new(None),
            last: Mutex::new(None),
        });
        if let (true, Some(interval)) = (watched, probe_interval) {
            let weak: Weak<InstanceReadiness> = Arc::downgrade(&me);
            match Probe::start(instance, interval, move || {
                if let Some(me) = weak.upgrade() {
                    let _ = me.ready();
                }
            }) {
                Ok(p) => *me.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(p),
                Err(e) => log(LogLevel::Warn, &format!("rustpy: {}", e.message)),
            }
        }
        me
    }

    /// Ok when ready; otherwise why not (what the server logs: "Model 'm'
    /// version 1 is not ready: <message>").
    pub fn ready(&self) -> Result<()> {
        let answer = self.ask();
        if let Some(g) = &self.gauge {
            let _ = g.set(if answer.is_ok() { 1.0 } else { 0.0 });
        }
        self.log_change(&answer);
        answer
    }

    /// The server log says when the instance stops being ready (and why)
    /// and when it is ready again; not every check.
    fn log_change(&self, answer: &Result<()>) {
        let now = match answer {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.message.clone()),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match last.as_ref() {
            None => !now.0,
            Some(prev) => prev.0 != now.0 || (!now.0 && prev.1 != now.1),
        };
        if changed {
            if now.0 {
                log(
                    LogLevel::Info,
                    &format!("rustpy: instance '{}' is ready again", self.instance),
                );
            } else {
                log(
                    LogLevel::Warn,
                    &format!(
                        "rustpy: instance '{}' is not ready: {}",
                        self.instance, now.1
                    ),
                );
            }
        }
        *last = Some(now);
    }

    fn ask(&self) -> Result<()> {
        if let Some(alive) = &self.health {
            if !alive() {
                return Err(Error::internal(format!(
                    "Stub process '{}' is not healthy.",
                    self.instance
                )));
            }
        }
        match self.user.as_ref().map(Readiness::check) {
            None | Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "Model '{}' is not ready (user-defined check failed).",
                    self.instance
                ),
            )),
            Some(Err(e)) => Err(e),
        }
    }

    /// Before `finalize`: no new `is_ready()` calls, no more probing.
    pub fn close(&self) {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = &self.user {
            r.close();
        }
        if let Some(g) = &self.gauge {
            let _ = g.set(0.0);
        }
    }
}

/// This instance's sample of the readiness gauge (one family per process).
fn gauge(model: &str, version: u64, instance: &str) -> Result<Box<dyn Metric>> {
    // Created once, under the lock: Triton knows a family by its name.
    static FAMILY: Mutex<Option<Arc<dyn MetricFamily>>> = Mutex::new(None);
    let family = {
        let mut slot = FAMILY.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(f) => f.clone(),
            None => {
                let f = server_api()?.metric_family(
                    GAUGE_NAME,
                    "Whether a model instance is ready: 1 ready, 0 not (its is_ready() answered \
                     False, raised or timed out, or its worker process is gone)",
                    MetricKind::Gauge,
                )?;
                *slot = Some(f.clone());
                f
            }
        }
    };
    let labels = [
        ("model".to_string(), model.to_string()),
        ("version".to_string(), version.to_string()),
        // Not `instance`: Prometheus sets that on every series it scrapes.
        ("model_instance".to_string(), instance.to_string()),
    ];
    family.metric(&labels, None)
}
