//! Reports of a scenario run: the human summary (ending with `N passed, N failed`), JSON and
//! JUnit XML (one `<testsuite>` per server, one `<testcase>` per scenario).

use std::fmt::Write as _;

use super::runner::{summary_json, Outcome, ScenarioResult};
use crate::xml::{Case, XmlWriter};

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
        out.push_str(&human_line(r, false));
    }
    out.push_str(&summary(results));
    out
}

/// One scenario's line, and its explanation when it failed (with `verbose`, the transcript of a
/// passing scenario too).
pub fn human_line(r: &ScenarioResult, verbose: bool) -> String {
    let mut out = String::new();
    let tag = match r.outcome {
        Outcome::Passed => "PASS ",
        Outcome::Failed => "FAIL ",
        Outcome::Skipped => "SKIP ",
        Outcome::Error => "ERROR",
        Outcome::Invalid => "INVALID",
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
    } else if verbose && r.outcome == Outcome::Passed {
        out.push_str(&r.explain_with(true));
    }
    out
}

/// The closing lines: skipped count, then exactly `N passed, N failed`.
pub fn summary(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
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
    let mut w = XmlWriter::new();
    w.open(
        "testsuites",
        &[
            ("name", "mock-kong run"),
            ("tests", &(passed + failed + skipped).to_string()),
            ("failures", &failed.to_string()),
            ("skipped", &skipped.to_string()),
            ("time", &format!("{total_time:.3}")),
        ],
    );
    for server in servers {
        let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.server == server).collect();
        let count = |o: Outcome| rs.iter().filter(|r| r.outcome == o).count().to_string();
        let time: f64 = rs.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
        w.open(
            "testsuite",
            &[
                ("name", server),
                ("tests", &rs.len().to_string()),
                ("failures", &count(Outcome::Failed)),
                (
                    "errors",
                    &(rs.iter()
                        .filter(|r| matches!(r.outcome, Outcome::Error | Outcome::Invalid))
                        .count()
                        .to_string()),
                ),
                ("skipped", &count(Outcome::Skipped)),
                ("time", &format!("{time:.3}")),
            ],
        );
        for r in rs {
            let time = format!("{:.3}", r.duration_ms as f64 / 1000.0);
            let attrs = [
                ("name", r.name.as_str()),
                ("classname", r.file.as_deref().unwrap_or(&r.plugin)),
                ("time", time.as_str()),
            ];
            let message = r
                .mismatches
                .first()
                .map(|m| format!("{}: expected {}, got {}", m.what, m.expected, m.actual))
                .or_else(|| r.reason.clone())
                .unwrap_or_default();
            let text = r.explain();
            let case = match r.outcome {
                Outcome::Passed => Case::Passed,
                Outcome::Skipped => Case::Skipped(r.reason.as_deref().unwrap_or("")),
                Outcome::Failed => Case::Failed {
                    message: &message,
                    kind: None,
                    text: &text,
                },
                Outcome::Error | Outcome::Invalid => Case::Error {
                    message: &message,
                    kind: None,
                    text: &text,
                },
            };
            w.testcase(&attrs, case);
        }
        w.close();
    }
    w.finish()
}
