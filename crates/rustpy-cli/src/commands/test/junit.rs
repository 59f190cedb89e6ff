//! JUnit XML for `rustpy test --junit FILE`.

use std::fmt::Write as _;

use super::{CaseResult, Outcome};

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` per model, one `<testcase>` per case.
pub(super) fn junit_xml(results: &[CaseResult]) -> String {
    let mut models: Vec<&str> = results.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let failures = results.iter().filter(|r| r.outcome.is_failure()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"rustpy test\" tests=\"{}\" failures=\"{failures}\">",
        results.len()
    );
    for model in models {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.model == model).collect();
        let f = cases.iter().filter(|r| r.outcome.is_failure()).count();
        let s = cases
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .count();
        let time: f64 = cases.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"{s}\" time=\"{time:.3}\">",
            xml_escape(model),
            cases.len()
        );
        for r in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
                xml_escape(model),
                xml_escape(&r.case),
                xml_escape(&r.file.display().to_string()),
                r.elapsed.as_secs_f64()
            );
            match &r.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed(lines) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(lines.first().map(String::as_str).unwrap_or("failed")),
                        xml_escape(&lines.join("\n"))
                    );
                }
                Outcome::Skipped(why) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(why)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn junit_is_escaped_and_counts() {
        let r = |case: &str, outcome| CaseResult {
            model: "m<1>".into(),
            case: case.into(),
            file: "m/tests/a.json".into(),
            requests: 1,
            elapsed: Duration::from_millis(5),
            outcome,
        };
        let xml = junit_xml(&[
            r("ok", Outcome::Passed),
            r(
                "bad",
                Outcome::Failed(vec!["request 0: got \"x\" & <y>".into()]),
            ),
            r("skip", Outcome::Skipped("why".into())),
        ]);
        assert!(
            xml.contains("<testsuites name=\"rustpy test\" tests=\"3\" failures=\"1\">"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "name=\"m&lt;1&gt;\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"request 0: got &quot;x&quot; &amp; &lt;y&gt;\">"),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"why\"/>"), "{xml}");
    }
}
