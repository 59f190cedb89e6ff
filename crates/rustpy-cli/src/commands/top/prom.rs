//! Prometheus' text exposition format, read just far enough for `top`:
//! every sample line as name, labels and value (comments and timestamps
//! ignored).

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All the samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// Parses a scrape; a line that is not a sample is an error naming it.
    pub fn parse(text: &str) -> Result<Samples, String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).ok_or_else(|| format!("not a Prometheus sample: `{l}`")))
            .collect::<Result<Vec<_>, _>>()
            .map(Samples)
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the matching samples, None when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.0.iter().any(|s| s.name.starts_with(prefix))
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_escapes_and_special_values() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    x_total{model=\"a\\\"b\",version=\"1\"} 3\n\
                    up 1 1700000000\n\
                    q{quantile=\"0.5\",model=\"m\"} NaN\n\
                    h_bucket{le=\"+Inf\"} 7\n";
        let s = Samples::parse(text).unwrap();
        assert_eq!(s.sum("x_total", &[("model", "a\"b")]), Some(3.0));
        assert_eq!(s.sum("up", &[]), Some(1.0));
        assert!(s.sum("q", &[("quantile", "0.5")]).unwrap().is_nan());
        assert_eq!(s.sum("h_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(s.sum("x_total", &[("model", "other")]), None);
        assert!(Samples::parse("{oops} 1").is_err());
    }

    #[test]
    fn reads_what_the_core_renders() {
        let (metrics, memory) = rustpy_core::metrics::Metrics::in_memory();
        let labels = rustpy_core::metrics::InstanceLabels::new("m", 1, "m_0");
        let im = rustpy_core::metrics::InstanceMetrics::new(&metrics, &labels);
        let mut stats = rustpy_core::metrics::ExecStats::default();
        stats.calls.push(rustpy_core::metrics::CallStats {
            rows: 5,
            ..Default::default()
        });
        im.record(&stats);
        let s = Samples::parse(&memory.render()).unwrap();
        assert_eq!(s.sum("rustpy_call_rows_sum", &[("model", "m")]), Some(5.0));
        assert_eq!(
            s.sum("rustpy_calls_total", &[("model_instance", "m_0")]),
            Some(1.0)
        );
    }
}
