//! Reports of a scenario run: the human summary (ending with `N passed, N failed`), JSON and
//! JUnit XML (one `<testsuite>` per server, one `<testcase>` per scenario).

use std::fmt::Write as _;

use super::runner::{summary_json, Outcome, ScenarioResult};

/// Counts: passed, failed (including scenarios that could not run), skipped.
pub fn counts(results: &[ScenarioResult]) -> (usize, usize, usize) {
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let failed = results.iter().filter(|r| r.failed()).count();
    let skipped = results
        .iter()
        .filter(|r| r.outcome == Outcome::Skipped)
        .count();
    (passed, failed, skipped)
}

/// One line per scenario, the explanation of each failure, and the summary, whose last line is
/// exactly `N passed, N failed`.
pub fn human(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    for r in results {
        let tag = match r.outcome {
            Outcome::Passed => "PASS ",
            Outcome::Failed => "FAIL ",
            Outcome::Skipped => "SKIP ",
            Outcome::Error => "ERROR",
        };
        let _ = writeln!(
            out,
            "{tag} {} [{}; {}; Kong {}]{}",
            r.name,
            r.plugin,
            r.server,
            r.kong_version,
            match r.outcome {
                Outcome::Skipped => format!(": {}", r.reason.as_deref().unwrap_or("")),
                _ => format!(" {} ms", r.duration_ms),
            }
        );
        if r.failed() {
            if let Some(f) = &r.file {
                let _ = writeln!(out, "  file: {f}");
            }
            out.push_str(&r.explain());
        }
    }
    let (passed, failed, skipped) = counts(results);
    if skipped > 0 {
        let _ = writeln!(out, "{skipped} skipped");
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    out
}

/// The JSON report.
pub fn json(results: &[ScenarioResult]) -> serde_json::Value {
    summary_json(results)
}

/// XML text escaping (also for attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: `<testsuites>` with one `<testsuite>` per server label.
pub fn junit(results: &[ScenarioResult]) -> String {
    let mut servers: Vec<&str> = Vec::new();
    for r in results {
        if !servers.contains(&r.server.as_str()) {
            servers.push(&r.server);
        }
    }
    let (passed, failed, skipped) = counts(results);
    let total_time: f64 = results.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"mock-kong run\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\" time=\"{total_time:.3}\">",
        passed + failed + skipped
    );
    for server in servers {
        let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.server == server).collect();
        let fails = rs.iter().filter(|r| r.outcome == Outcome::Failed).count();
        let errors = rs.iter().filter(|r| r.outcome == Outcome::Error).count();
        let skips = rs.iter().filter(|r| r.outcome == Outcome::Skipped).count();
        let time: f64 = rs.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" errors=\"{errors}\" skipped=\"{skips}\" time=\"{time:.3}\">",
            esc(server),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                esc(&r.name),
                esc(r.file.as_deref().unwrap_or(&r.plugin)),
                r.duration_ms as f64 / 1000.0
            );
            match r.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Skipped => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        esc(r.reason.as_deref().unwrap_or(""))
                    );
                }
                Outcome::Failed | Outcome::Error => {
                    let tag = if r.outcome == Outcome::Failed {
                        "failure"
                    } else {
                        "error"
                    };
                    let message = r
                        .mismatches
                        .first()
                        .map(|m| format!("{}: expected {}, got {}", m.what, m.expected, m.actual))
                        .or_else(|| r.reason.clone())
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        ">\n      <{tag} message=\"{}\">{}</{tag}>\n    </testcase>",
                        esc(&message),
                        esc(&r.explain())
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

    #[test]
    fn escapes_xml() {
        assert_eq!(esc("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;\\u{1}");
    }
}
