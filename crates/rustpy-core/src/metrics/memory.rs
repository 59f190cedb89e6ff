//! A registry in memory: what tests (and `rustpy run`) record into, read
//! back by name and labels, or rendered in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::{Family, Recorder, SeriesSink};
use crate::constants::MetricKind;
use crate::error::Result;

/// A histogram's state: observations per bucket (not cumulative; the last
/// is `+Inf`), their count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram(Sample),
}

type Key = (&'static str, Vec<(String, String)>);

/// Every series ever created, with its value; series stay after their
/// handles are dropped, so tests can read what was recorded.
#[derive(Default)]
pub struct MemoryRecorder {
    series: Mutex<BTreeMap<Key, Arc<Cell>>>,
    families: Mutex<BTreeMap<&'static str, &'static Family>>,
}

struct Cell(Mutex<Value>);

impl SeriesSink for Cell {
    fn add(&self, value: f64) {
        if let Value::Number(v) = &mut *self.lock() {
            *v += value;
        }
    }
    fn set(&self, value: f64) {
        if let Value::Number(v) = &mut *self.lock() {
            *v = value;
        }
    }
    fn observe(&self, value: f64) {
        if let Value::Histogram(h) = &mut *self.lock() {
            let slot = h
                .buckets
                .iter()
                .position(|(le, _)| value <= *le)
                .unwrap_or(h.buckets.len() - 1);
            h.buckets[slot].1 += 1;
            h.count += 1;
            h.sum += value;
        }
    }
}

impl Cell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Recorder for MemoryRecorder {
    fn series(&self, family: &'static Family, labels: &[&str]) -> Result<Arc<dyn SeriesSink>> {
        let key = (family.name, pairs(family, labels));
        self.families
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(family.name, family);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let cell = series
            .entry(key)
            .or_insert_with(|| {
                let value = match family.kind {
                    MetricKind::Histogram => Value::Histogram(Sample {
                        buckets: family
                            .buckets
                            .iter()
                            .map(|&le| (le, 0))
                            .chain([(f64::INFINITY, 0)])
                            .collect(),
                        count: 0,
                        sum: 0.0,
                    }),
                    _ => Value::Number(0.0),
                };
                Arc::new(Cell(Mutex::new(value)))
            })
            .clone();
        Ok(cell)
    }
}

fn pairs(family: &Family, labels: &[&str]) -> Vec<(String, String)> {
    family
        .labels
        .iter()
        .zip(labels)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MemoryRecorder {
    fn find(&self, name: &str, labels: &[&str]) -> Option<Value> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .iter()
            .find(|((n, l), _)| {
                *n == name && l.iter().map(|(_, v)| v.as_str()).eq(labels.iter().copied())
            })
            .map(|(_, cell)| cell.lock().clone())
    }

    /// A counter's or gauge's value (a histogram's count).
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        match self.find(name, labels)? {
            Value::Number(v) => Some(v),
            Value::Histogram(h) => Some(h.count as f64),
        }
    }

    pub fn histogram(&self, name: &str, labels: &[&str]) -> Option<Sample> {
        match self.find(name, labels)? {
            Value::Histogram(h) => Some(h),
            Value::Number(_) => None,
        }
    }

    /// Everything recorded, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut current = "";
        for ((name, labels), cell) in series.iter() {
            if *name != current {
                current = name;
                let family = families[name];
                let kind = match family.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                };
                let _ = writeln!(out, "# HELP {name} {}", family.help);
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            match &*cell.lock() {
                Value::Number(v) => {
                    let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
                }
                Value::Histogram(h) => {
                    let mut cumulative = 0;
                    for (le, n) in &h.buckets {
                        cumulative += n;
                        let le = if le.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            le.to_string()
                        };
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            label_text(labels, Some(&le))
                        );
                    }
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), h.count);
                }
            }
        }
        out
    }
}

fn label_text(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::families::{CALLS, CALL_ROWS};
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = MemoryRecorder::default();
        m.series(&CALLS, &["a\"b", "1", "i"]).unwrap().add(2.0);
        let rows = m.series(&CALL_ROWS, &["m", "1", "i"]).unwrap();
        rows.observe(1.0);
        rows.observe(3.0);
        rows.observe(10_000.0);
        let text = m.render();
        assert!(
            text.contains(
                "rustpy_calls_total{model=\"a\\\"b\",version=\"1\",model_instance=\"i\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE rustpy_call_rows histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "rustpy_call_rows_bucket{model=\"m\",version=\"1\",model_instance=\"i\",le=\"1\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rustpy_call_rows_bucket{model=\"m\",version=\"1\",model_instance=\"i\",le=\"4\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rustpy_call_rows_bucket{model=\"m\",version=\"1\",model_instance=\"i\",le=\"+Inf\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rustpy_call_rows_count{model=\"m\",version=\"1\",model_instance=\"i\"} 3\n"
            ),
            "{text}"
        );
    }
}
