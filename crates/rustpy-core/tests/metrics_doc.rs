//! docs/metrics.md's table of families says what `metrics::FAMILIES`
//! defines: every family once, with its type and labels, and nothing else.

use rustpy_core::constants::MetricKind;
use rustpy_core::metrics::FAMILIES;

/// (name, type, labels) of every table row naming a `rustpy_` metric.
fn documented(text: &str) -> Vec<(String, String, Vec<String>)> {
    text.lines()
        .filter(|l| l.starts_with("| `rustpy_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let labels = cells[2].split(',').map(|s| s.trim().to_string()).collect();
            (
                cells[0].trim_matches('`').to_string(),
                cells[1].to_string(),
                labels,
            )
        })
        .collect()
}

fn kind(k: MetricKind) -> &'static str {
    match k {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

#[test]
fn the_documented_table_is_the_list_of_families() {
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let table = documented(&std::fs::read_to_string(doc).unwrap());
    let defined: Vec<(String, String, Vec<String>)> = FAMILIES
        .iter()
        .map(|f| {
            (
                f.name.to_string(),
                kind(f.kind).to_string(),
                f.labels.iter().map(|l| l.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(table, defined, "docs/metrics.md vs metrics::FAMILIES");
}

#[test]
fn a_row_that_differs_is_seen() {
    let row = "| `rustpy_calls_total` | gauge | model, version | x |";
    let parsed = documented(row);
    assert_eq!(
        parsed,
        vec![(
            "rustpy_calls_total".to_string(),
            "gauge".to_string(),
            vec!["model".to_string(), "version".to_string()]
        )]
    );
    let calls = FAMILIES
        .iter()
        .find(|f| f.name == "rustpy_calls_total")
        .unwrap();
    assert_ne!(kind(calls.kind), parsed[0].1);
}
