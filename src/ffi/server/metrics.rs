//! Metrics on Triton's registry, shown on the server's `/metrics` endpoint:
//! custom metrics on behalf of model code (`pb_utils.MetricFamily`: metric
//! families and their labelled metrics, counter, gauge or histogram), and
//! rustpy's own families ([`TritonRecorder`], the core's `Recorder`).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr;
use std::sync::{Arc, Mutex};

use rustpy_core::metrics::{Family, Recorder, SeriesSink};
use rustpy_core::server::{Metric, MetricFamily, MetricKind};

use super::Result;
use crate::ffi::{check, cstring, raw};

/// A new metric family `name` of `kind`.
pub(super) fn family(
    name: &str,
    description: &str,
    kind: MetricKind,
) -> Result<Arc<dyn MetricFamily>> {
    Ok(Arc::new(TritonMetricFamily(new_family(
        name,
        description,
        kind,
    )?)))
}

fn new_family(name: &str, description: &str, kind: MetricKind) -> Result<Arc<FamilyHandle>> {
    let (cname, cdesc) = (cstring(name), cstring(description));
    let mut family = ptr::null_mut();
    // SAFETY: strings outlive the call, which copies them.
    check(unsafe {
        raw::TRITONSERVER_MetricFamilyNew(
            &mut family,
            kind as raw::TRITONSERVER_MetricKind,
            cname.as_ptr(),
            cdesc.as_ptr(),
        )
    })?;
    Ok(Arc::new(FamilyHandle(family)))
}

/// rustpy's own metric families on Triton's registry: each family is
/// created the first time one of its series is, and deleted after the last
/// series of it (each holds the family) and this recorder are gone.
#[derive(Default)]
pub(crate) struct TritonRecorder {
    families: Mutex<HashMap<&'static str, Arc<FamilyHandle>>>,
}

impl Recorder for TritonRecorder {
    fn series(&self, family: &'static Family, labels: &[&str]) -> Result<Arc<dyn SeriesSink>> {
        let handle = {
            let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
            match families.get(family.name) {
                Some(h) => h.clone(),
                None => {
                    let h = new_family(family.name, family.help, family.kind)?;
                    families.insert(family.name, h.clone());
                    h
                }
            }
        };
        let labels: Vec<(String, String)> = family
            .labels
            .iter()
            .zip(labels)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let family_handle = TritonMetricFamily(handle);
        let labels = LabelParameters::new(&labels);
        let metric = match family.kind {
            MetricKind::Histogram => family_handle.new_histogram(&labels, family.buckets),
            _ => family_handle.new_metric(&labels),
        }?;
        Ok(Arc::new(TritonMetric {
            metric,
            _family: family_handle.0,
        }))
    }
}

/// Errors are dropped: a metric that cannot be updated (only an invalidated
/// one, or a kind mismatch, which the families rule out) must not fail the
/// work it counts.
impl SeriesSink for TritonMetric {
    fn add(&self, value: f64) {
        let _ = self.increment(value);
    }
    fn set(&self, value: f64) {
        let _ = Metric::set(self, value);
    }
    fn observe(&self, value: f64) {
        let _ = Metric::observe(self, value);
    }
}

struct FamilyHandle(*mut raw::TRITONSERVER_MetricFamily);
// SAFETY: Triton's metric objects are internally synchronised.
unsafe impl Send for FamilyHandle {}
// SAFETY: as above.
unsafe impl Sync for FamilyHandle {}
impl Drop for FamilyHandle {
    fn drop(&mut self) {
        // SAFETY: every metric of the family holds an Arc to this handle, so
        // the family is deleted after all of them.
        let _ = check(unsafe { raw::TRITONSERVER_MetricFamilyDelete(self.0) });
    }
}

struct TritonMetricFamily(Arc<FamilyHandle>);

impl MetricFamily for TritonMetricFamily {
    fn metric(
        &self,
        labels: &[(String, String)],
        buckets: Option<&[f64]>,
    ) -> Result<Box<dyn Metric>> {
        let labels = LabelParameters::new(labels);
        let metric = match buckets {
            None => self.new_metric(&labels),
            Some(b) => self.new_histogram(&labels, b),
        }?;
        Ok(Box::new(TritonMetric {
            metric,
            _family: self.0.clone(),
        }))
    }
}

impl TritonMetricFamily {
    /// A counter or gauge metric of this family.
    fn new_metric(&self, labels: &LabelParameters) -> Result<*mut raw::TRITONSERVER_Metric> {
        let mut metric = ptr::null_mut();
        // SAFETY: live metric family; the label parameters live until
        // `labels` drops (the call copies them).
        check(unsafe {
            raw::TRITONSERVER_MetricNew(&mut metric, self.0 .0, labels.as_ptr(), labels.len())
        })?;
        Ok(metric)
    }

    /// A histogram metric of this family with these bucket bounds.
    fn new_histogram(
        &self,
        labels: &LabelParameters,
        buckets: &[f64],
    ) -> Result<*mut raw::TRITONSERVER_Metric> {
        let mut args = ptr::null_mut();
        // SAFETY: writes new args, deleted below.
        check(unsafe { raw::TRITONSERVER_MetricArgsNew(&mut args) })?;
        let mut metric = ptr::null_mut();
        // SAFETY: `args` is live (created above); the buckets outlive the call, which copies them.
        let res = check(unsafe {
            raw::TRITONSERVER_MetricArgsSetHistogram(args, buckets.as_ptr(), buckets.len() as u64)
        })
        .and_then(|()| {
            // SAFETY: live family and args; the label parameters live until
            // `labels` drops (the call copies them).
            check(unsafe {
                raw::TRITONSERVER_MetricNewWithArgs(
                    &mut metric,
                    self.0 .0,
                    labels.as_ptr(),
                    labels.len(),
                    args,
                )
            })
        });
        // SAFETY: `args` is ours (created above) and deleted exactly once.
        let _ = check(unsafe { raw::TRITONSERVER_MetricArgsDelete(args) });
        res.map(|()| metric)
    }
}

/// A metric's labels as the string parameters MetricNew reads; the
/// parameters are deleted on drop, before the strings they reference.
struct LabelParameters {
    params: Vec<*mut raw::TRITONSERVER_Parameter>,
    _strings: Vec<(CString, CString)>,
}

impl LabelParameters {
    fn new(labels: &[(String, String)]) -> Self {
        let strings: Vec<(CString, CString)> = labels
            .iter()
            .map(|(k, v)| (cstring(k), cstring(v)))
            .collect();
        // SAFETY: each label parameter references its strings, which live in
        // `_strings` until after the parameters are deleted (Drop).
        let params = strings
            .iter()
            .map(|(k, v)| unsafe {
                raw::TRITONSERVER_ParameterNew(
                    k.as_ptr(),
                    raw::TRITONSERVER_PARAMETER_STRING,
                    v.as_ptr() as *const c_void,
                )
            })
            .collect();
        LabelParameters {
            params,
            _strings: strings,
        }
    }

    fn as_ptr(&self) -> *mut *const raw::TRITONSERVER_Parameter {
        self.params.as_ptr() as *mut *const raw::TRITONSERVER_Parameter
    }

    fn len(&self) -> u64 {
        self.params.len() as u64
    }
}

impl Drop for LabelParameters {
    fn drop(&mut self) {
        for p in self.params.drain(..) {
            // SAFETY: created in `new`, deleted once.
            unsafe { raw::TRITONSERVER_ParameterDelete(p) };
        }
    }
}

struct TritonMetric {
    metric: *mut raw::TRITONSERVER_Metric,
    _family: Arc<FamilyHandle>,
}
// SAFETY: Triton's metric objects are internally synchronised.
unsafe impl Send for TritonMetric {}
// SAFETY: as above.
unsafe impl Sync for TritonMetric {}

impl Metric for TritonMetric {
    fn increment(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricIncrement(self.metric, value) })
    }
    fn set(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricSet(self.metric, value) })
    }
    fn observe(&self, value: f64) -> Result<()> {
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricObserve(self.metric, value) })
    }
    fn value(&self) -> Result<f64> {
        let mut v = 0.0;
        // SAFETY: live metric.
        check(unsafe { raw::TRITONSERVER_MetricValue(self.metric, &mut v) })?;
        Ok(v)
    }
}

impl Drop for TritonMetric {
    fn drop(&mut self) {
        // SAFETY: deleted once, before its family (which we keep alive).
        let _ = check(unsafe { raw::TRITONSERVER_MetricDelete(self.metric) });
    }
}
