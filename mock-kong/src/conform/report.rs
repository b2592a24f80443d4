//! Results and their renderings: the human report, JSON (schema in [`super`]), JUnit XML,
//! markdown, the server × group matrix, and expected-failure files.
//!
//! # Expected-failure files
//!
//! One check id per line; `#` starts a comment (a reason may follow the id). After a run, a
//! listed check that failed is `xfail`; a listed check that passed or was skipped, an unlisted
//! failure, or a listed id that is not a check all make the run fail, so a list cannot go stale
//! (as in the protobuf conformance suite). `--fix-expectations` rewrites the file from the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::catalogue::{self, Check};
use super::{Level, Outcome, Status, Tier, TierSel};
use crate::xml::{Case, XmlWriter};
use crate::Protocol;

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub id: &'static str,
    pub group: &'static str,
    pub level: Level,
    pub tier: Tier,
    pub status: Status,
    pub spec: &'static str,
    pub requirement: &'static str,
    pub expected: &'static str,
    /// Pass: a note; fail/xfail: what happened; skip: why.
    pub detail: String,
    /// What breaks in Kong when the rule is broken ([`Check::protects`]).
    pub protects: &'static str,
    /// Info-level notes: legal but unusual choices of the server (never failures).
    pub notes: Vec<String>,
    /// Blocked: the failed check it was blocked by (the first failure up the chain).
    pub blocked_by: Option<&'static str>,
    pub duration: Duration,
}

impl CheckResult {
    pub fn new(check: &Check, outcome: Outcome, duration: Duration) -> CheckResult {
        let (status, detail) = match outcome {
            Outcome::Pass(d) => (Status::Pass, d),
            Outcome::Fail(d) => (Status::Fail, d),
            Outcome::Skip(d) => (Status::Skip, d),
        };
        CheckResult {
            id: check.id,
            group: check.group(),
            level: check.level,
            tier: check.tier,
            status,
            spec: check.spec,
            requirement: check.requirement,
            expected: check.expected,
            detail,
            protects: check.protects,
            notes: Vec::new(),
            blocked_by: None,
            duration,
        }
    }

    /// The result of a check that was not run because `root` (a check it builds on, or the
    /// one that blocked that) failed with `why`.
    pub fn blocked(check: &Check, root: &'static str, why: &str) -> CheckResult {
        let short: String = why.chars().take(160).collect();
        let more = if short.len() < why.len() { "…" } else { "" };
        let mut r = CheckResult::new(
            check,
            Outcome::Skip(format!("blocked by {root}, which failed: {short}{more}")),
            Duration::ZERO,
        );
        r.status = Status::Blocked;
        r.blocked_by = Some(root);
        r
    }

    /// The same result with these info-level notes.
    pub fn with_notes(mut self, notes: Vec<String>) -> CheckResult {
        self.notes = notes;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "group": self.group,
            "level": self.level,
            "tier": self.tier,
            "status": self.status,
            "spec": self.spec,
            "requirement": self.requirement,
            "expected": self.expected,
            "protects": self.protects,
            "detail": self.detail,
            "blocked_by": self.blocked_by,
            "notes": self.notes,
            "duration_ms": self.duration.as_millis() as u64,
        })
    }
}

/// An expected-failures file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Listed ids with their comment (may be empty).
    pub ids: BTreeMap<String, String>,
}

impl Expectations {
    pub fn parse(text: &str) -> Expectations {
        let mut ids = BTreeMap::new();
        for line in text.lines() {
            let (id, comment) = match line.split_once('#') {
                Some((id, c)) => (id.trim(), c.trim()),
                None => (line.trim(), ""),
            };
            if !id.is_empty() {
                ids.insert(id.to_owned(), comment.to_owned());
            }
        }
        Expectations { ids }
    }

    /// Reads a file; a missing file is an empty list.
    pub fn load(path: &Path) -> std::io::Result<Expectations> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Expectations::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Expectations::default()),
            Err(e) => Err(e),
        }
    }

    /// The file text listing the failures of `report`.
    pub fn render(report: &Report) -> String {
        let mut out = format!(
            "# Expected conformance failures of {} (mock-kong conform --expect-failures).\n\
             # One check id per line; text after '#' is a comment. Regenerate with\n\
             # --fix-expectations after a deliberate change; a listed check that passes fails the run.\n",
            report.server
        );
        for r in &report.results {
            if matches!(r.status, Status::Fail | Status::Xfail) {
                let reason: String = r.detail.chars().take(160).collect();
                let _ = writeln!(out, "{}  # {}", r.id, reason.replace('\n', " "));
            }
        }
        out
    }
}

/// A run's report.
#[derive(Debug, Clone)]
pub struct Report {
    pub server: String,
    pub protocol: Option<Protocol>,
    pub plugin: String,
    pub tier: TierSel,
    pub results: Vec<CheckResult>,
    pub duration: Duration,
    /// The expectations file applied, if any.
    pub expectations: Option<String>,
    /// Failed without being listed.
    pub unexpected_failures: Vec<String>,
    /// Listed but passed, skipped, or not a check.
    pub unexpected_passes: Vec<String>,
    /// The run was stopped (SIGINT/SIGTERM) before every selected check ran.
    pub interrupted: bool,
}

/// Counts of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub xfailed: usize,
    pub blocked: usize,
    pub must_failed: usize,
    /// Failures of `should` checks (with `must_failed`: what `--strict` fails on).
    pub should_failed: usize,
    /// Info-level notes (legal but unusual choices), over all checks.
    pub notes: usize,
}

impl Report {
    pub fn new(server: &str, protocol: Option<Protocol>, plugin: &str, tier: TierSel) -> Report {
        Report {
            server: server.to_owned(),
            protocol,
            plugin: plugin.to_owned(),
            tier,
            results: Vec::new(),
            duration: Duration::ZERO,
            expectations: None,
            unexpected_failures: Vec::new(),
            unexpected_passes: Vec::new(),
            interrupted: false,
        }
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.results {
            c.notes += r.notes.len();
            match r.status {
                Status::Pass => c.passed += 1,
                Status::Fail => {
                    c.failed += 1;
                    match r.level {
                        Level::Must => c.must_failed += 1,
                        Level::Should => c.should_failed += 1,
                        Level::Info => {}
                    }
                }
                Status::Skip => c.skipped += 1,
                Status::Xfail => c.xfailed += 1,
                Status::Blocked => c.blocked += 1,
            }
        }
        c
    }

    /// Applies an expected-failures list: listed failures become `xfail`, and every difference
    /// in either direction is recorded. `selected` says which checks the run selected (listed
    /// checks outside the selection are ignored).
    pub fn apply(&mut self, exp: &Expectations, name: &str, selected: &dyn Fn(&Check) -> bool) {
        self.expectations = Some(name.to_owned());
        for r in &mut self.results {
            let listed = exp.ids.contains_key(r.id);
            match (r.status, listed) {
                (Status::Fail, true) => r.status = Status::Xfail,
                (Status::Fail, false) => self.unexpected_failures.push(r.id.to_owned()),
                (Status::Pass, true) => self
                    .unexpected_passes
                    .push(format!("{} (listed as failing, but passed)", r.id)),
                (Status::Skip, true) => self.unexpected_passes.push(format!(
                    "{} (listed as failing, but skipped: {})",
                    r.id, r.detail
                )),
                (Status::Blocked, true) => self.unexpected_passes.push(format!(
                    "{} (listed as failing, but not run: {})",
                    r.id, r.detail
                )),
                _ => {}
            }
        }
        for id in exp.ids.keys() {
            match catalogue::find(id) {
                None => self
                    .unexpected_passes
                    .push(format!("{id} (listed, but there is no such check)")),
                Some(c) if selected(c) && !self.results.iter().any(|r| r.id == c.id) => {}
                _ => {}
            }
        }
    }

    /// Whether the run succeeded: with expectations, no difference from the list; otherwise no
    /// `must` failure (no `must` or `should` failure with `strict`; `info` never fails a run).
    pub fn ok(&self, strict: bool) -> bool {
        let c = self.counts();
        if self.expectations.is_some() {
            self.unexpected_failures.is_empty() && self.unexpected_passes.is_empty()
        } else if strict {
            c.must_failed + c.should_failed == 0
        } else {
            c.must_failed == 0
        }
    }

    /// `N passed, N failed, N skipped` (+ `, N xfail`).
    pub fn summary_line(&self) -> String {
        let c = self.counts();
        let mut s = format!(
            "{} passed, {} failed, {} skipped",
            c.passed, c.failed, c.skipped
        );
        if c.xfailed > 0 {
            let _ = write!(s, ", {} xfail", c.xfailed);
        }
        if c.blocked > 0 {
            let _ = write!(s, ", {} blocked", c.blocked);
        }
        if c.notes > 0 {
            let _ = write!(
                s,
                ", {} note{} (info)",
                c.notes,
                if c.notes == 1 { "" } else { "s" }
            );
        }
        s
    }

    /// The report as JSON (schema `mock-kong/conform/1`, documented in [`super`]).
    pub fn to_json(&self, strict: bool) -> serde_json::Value {
        let c = self.counts();
        json!({
            "schema": "mock-kong/conform/1",
            "server": self.server,
            "protocol": self.protocol.map(|p| p.as_str()),
            "plugin": self.plugin,
            "tier": self.tier.as_str(),
            "expectations": self.expectations,
            "interrupted": self.interrupted,
            "checks": self.results.iter().map(CheckResult::to_json).collect::<Vec<_>>(),
            "summary": {
                "passed": c.passed,
                "failed": c.failed,
                "skipped": c.skipped,
                "xfailed": c.xfailed,
                "blocked": c.blocked,
                "total": self.results.len(),
                "must_failed": c.must_failed,
                "should_failed": c.should_failed,
                "notes": c.notes,
                "duration_ms": self.duration.as_millis() as u64,
                "unexpected_failures": self.unexpected_failures,
                "unexpected_passes": self.unexpected_passes,
                "ok": self.ok(strict),
            },
        })
    }

    /// The header line of the human report.
    pub fn header(&self) -> String {
        let proto = self
            .protocol
            .map(|p| p.as_str())
            .unwrap_or("protocol unknown");
        let server = if self.server.contains(proto) {
            self.server.clone()
        } else {
            format!("{} ({proto})", self.server)
        };
        format!(
            "mock-kong conform: {server}, plugin {}, {} tier{}",
            self.plugin,
            self.tier.as_str(),
            if self.interrupted {
                " (interrupted: only the checks finished before the signal)"
            } else {
                ""
            }
        )
    }

    /// The human report: results by group, a failure recap with requirement / expected /
    /// actual, and the summary line last.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.header());
        let mut group = "";
        for r in &self.results {
            if r.group != group {
                group = r.group;
                let _ = writeln!(out, "\n{group}");
            }
            let _ = writeln!(out, "{}", progress_line(r));
        }
        let failed: Vec<&CheckResult> = self
            .results
            .iter()
            .filter(|r| matches!(r.status, Status::Fail | Status::Xfail))
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "\nFailures:");
            for r in failed {
                let _ = writeln!(
                    out,
                    "\n  {} [{}{}, {}]",
                    r.id,
                    r.level.as_str(),
                    if r.status == Status::Xfail {
                        ", expected"
                    } else {
                        ""
                    },
                    catalogue::cite(r.spec)
                );
                let _ = writeln!(out, "    requirement: {}", r.requirement);
                let _ = writeln!(out, "    expected:    {}", r.expected);
                let _ = writeln!(out, "    actual:      {}", r.detail);
                let _ = writeln!(out, "    in Kong:     {}", r.protects);
            }
        }
        if !self.unexpected_failures.is_empty() || !self.unexpected_passes.is_empty() {
            let _ = writeln!(
                out,
                "\nDifferences from {}:",
                self.expectations.as_deref().unwrap_or("the expectations")
            );
            for id in &self.unexpected_failures {
                let _ = writeln!(out, "  {id} failed but is not listed");
            }
            for id in &self.unexpected_passes {
                let _ = writeln!(out, "  {id}");
            }
        }
        let _ = writeln!(out, "\nin {:.1} s", self.duration.as_secs_f64());
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    /// JUnit XML: one testsuite per group, one testcase per check.
    pub fn junit(&self) -> String {
        let c = self.counts();
        let mut w = XmlWriter::new();
        w.open(
            "testsuites",
            &[
                ("name", &format!("mock-kong conform: {}", self.server)),
                ("tests", &self.results.len().to_string()),
                ("failures", &c.failed.to_string()),
                ("skipped", &(c.skipped + c.xfailed + c.blocked).to_string()),
                ("time", &format!("{:.3}", self.duration.as_secs_f64())),
            ],
        );
        let mut groups: Vec<&str> = Vec::new();
        for r in &self.results {
            if !groups.contains(&r.group) {
                groups.push(r.group);
            }
        }
        for g in groups {
            let rs: Vec<&CheckResult> = self.results.iter().filter(|r| r.group == g).collect();
            let fails = rs.iter().filter(|r| r.status == Status::Fail).count();
            let skips = rs
                .iter()
                .filter(|r| matches!(r.status, Status::Skip | Status::Xfail | Status::Blocked))
                .count();
            let time: f64 = rs.iter().map(|r| r.duration.as_secs_f64()).sum();
            w.open(
                "testsuite",
                &[
                    ("name", g),
                    ("tests", &rs.len().to_string()),
                    ("failures", &fails.to_string()),
                    ("skipped", &skips.to_string()),
                    ("time", &format!("{time:.3}")),
                ],
            );
            for r in rs {
                let time = format!("{:.3}", r.duration.as_secs_f64());
                let attrs = [("classname", g), ("name", r.id), ("time", time.as_str())];
                let (message, text);
                let case = match r.status {
                    Status::Pass => Case::Passed,
                    Status::Fail => {
                        message = format!("[{}] {}", r.level.as_str(), r.detail);
                        text = format!(
                            "requirement: {}\nexpected: {}\nactual: {}\nin Kong: {}",
                            r.requirement, r.expected, r.detail, r.protects
                        );
                        Case::Failed {
                            message: &message,
                            kind: None,
                            text: &text,
                        }
                    }
                    Status::Skip | Status::Blocked => Case::Skipped(&r.detail),
                    Status::Xfail => {
                        message = format!("expected failure: {}", r.detail);
                        Case::Skipped(&message)
                    }
                };
                let notes = r.notes.join("\n");
                w.testcase_with_output(&attrs, case, &notes);
            }
            w.close();
        }
        w.finish()
    }

    /// A markdown page for `reports/conformance/<server>.md`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Conformance: {}\n", self.server);
        let _ = writeln!(
            out,
            "Protocol {}, plugin `{}`, {} tier, {:.1} s. {}.\n",
            self.protocol.map(|p| p.as_str()).unwrap_or("unknown"),
            self.plugin,
            self.tier.as_str(),
            self.duration.as_secs_f64(),
            self.summary_line()
        );
        let _ = writeln!(out, "| check | level | status | detail |");
        let _ = writeln!(out, "|---|---|---|---|");
        for r in &self.results {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                r.id,
                r.level.as_str(),
                match r.status {
                    Status::Pass => "pass",
                    Status::Fail => "**FAIL**",
                    Status::Skip => "skip",
                    Status::Xfail => "**FAIL** (expected)",
                    Status::Blocked => "blocked",
                },
                md_cell(&r.detail)
            );
        }
        let notes: Vec<(&str, &String)> = self
            .results
            .iter()
            .flat_map(|r| r.notes.iter().map(move |n| (r.id, n)))
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(
                out,
                "\nNotes (info: legal but unusual choices Kong accepts; never failures):\n"
            );
            for (id, n) in notes {
                let _ = writeln!(out, "* `{id}`: {}", md_cell(n));
            }
        }
        out
    }
}

/// One line per result, as printed while the run goes on.
pub fn progress_line(r: &CheckResult) -> String {
    let mut line = status_line(r);
    for n in &r.notes {
        let _ = write!(line, "\n      note [info]: {n}");
    }
    line
}

fn status_line(r: &CheckResult) -> String {
    let tag = match r.status {
        Status::Pass => "PASS ",
        Status::Fail => "FAIL ",
        Status::Skip => "SKIP ",
        Status::Xfail => "XFAIL",
        Status::Blocked => "BLOCK",
    };
    let mut line = format!(
        "  {tag} {} [{}] ({:.2} s)",
        r.id,
        r.level.as_str(),
        r.duration.as_secs_f64()
    );
    match (r.status, r.blocked_by) {
        (Status::Skip, _) => {
            let _ = write!(line, ": {}", r.detail);
        }
        (Status::Blocked, Some(root)) => {
            let _ = write!(line, ": blocked by {root}");
        }
        _ => {}
    }
    line
}

/// Escapes text for XML attributes and content.
fn md_cell(s: &str) -> String {
    let short: String = s.chars().take(300).collect();
    let ell = if short.len() < s.len() { "…" } else { "" };
    format!("{}{ell}", short.replace('|', "\\|").replace('\n', " "))
}

/// The server × group matrix from JSON reports (`reports/conformance/*.json`): per group,
/// `passed/run` plus failures; then every failure with its detail.
pub fn matrix(reports: &[(String, serde_json::Value)]) -> String {
    let groups = [
        "dump",
        "lifecycle",
        "event",
        "process",
        "transport",
        "pdk",
        "resources",
    ];
    let tier = reports
        .first()
        .and_then(|(_, r)| r["tier"].as_str())
        .unwrap_or("fast");
    let mut out = format!(
        "# Conformance matrix ({tier} tier)\n\n\
         `mock-kong conform --tier {tier}` against each server. A cell is passed/run; ✗ marks \
         failures, ~ expected failures (listed in `conformance/expected/<server>.txt`) and ⊘ \
         checks blocked by an earlier failure they build on (not run). Skipped checks do not \
         apply to the server (protocol, or a fixture plugin it does not host). Regenerate with \
         `scripts/conformance-reports.sh`.\n\n",
    );
    let _ = write!(out, "| server | protocol |");
    for g in groups {
        let _ = write!(out, " {g} |");
    }
    let _ = write!(out, " total | time |\n|---|---|");
    for _ in groups {
        out.push_str("---|");
    }
    out.push_str("---|---|\n");
    for (name, r) in reports {
        let checks = r["checks"].as_array().cloned().unwrap_or_default();
        let _ = write!(
            out,
            "| [{name}]({name}.md) | {} |",
            r["protocol"].as_str().unwrap_or("?")
        );
        for g in groups {
            let in_group: Vec<&serde_json::Value> =
                checks.iter().filter(|c| c["group"] == g).collect();
            let run = in_group.iter().filter(|c| c["status"] != "skip").count();
            let passed = in_group.iter().filter(|c| c["status"] == "pass").count();
            let failed = in_group.iter().filter(|c| c["status"] == "fail").count();
            let xfailed = in_group.iter().filter(|c| c["status"] == "xfail").count();
            let blocked = in_group.iter().filter(|c| c["status"] == "blocked").count();
            if in_group.is_empty() {
                out.push_str(" – |");
                continue;
            }
            let mut cell = format!("{passed}/{run}");
            if failed > 0 {
                let _ = write!(cell, " ✗{failed}");
            }
            if xfailed > 0 {
                let _ = write!(cell, " ~{xfailed}");
            }
            if blocked > 0 {
                let _ = write!(cell, " ⊘{blocked}");
            }
            let _ = write!(out, " {cell} |");
        }
        let s = &r["summary"];
        let _ = writeln!(
            out,
            " {}/{} | {:.1} s |",
            s["passed"],
            checks.iter().filter(|c| c["status"] != "skip").count(),
            s["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    out.push_str("\n## Failures found\n\n");
    let mut any = false;
    for (name, r) in reports {
        for c in r["checks"].as_array().into_iter().flatten() {
            if c["status"] == "fail" || c["status"] == "xfail" {
                any = true;
                let _ = writeln!(
                    out,
                    "* **{name}** `{}` ({}): {}",
                    c["id"].as_str().unwrap_or("?"),
                    c["level"].as_str().unwrap_or("?"),
                    md_cell(c["detail"].as_str().unwrap_or(""))
                );
            }
        }
    }
    if !any {
        out.push_str("None.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let cat = catalogue::catalogue();
        let mut r = Report::new("peer x", Some(Protocol::MsgPack), "hello", TierSel::Fast);
        r.results.push(CheckResult::new(
            &cat[0],
            Outcome::Pass("ok".into()),
            Duration::ZERO,
        ));
        r.results.push(CheckResult::new(
            &cat[1],
            Outcome::Fail("printed <junk> & \"more\"".into()),
            Duration::from_millis(5),
        ));
        r.results.push(CheckResult::new(
            &cat[2],
            Outcome::Skip("n/a".into()),
            Duration::ZERO,
        ));
        r
    }

    #[test]
    fn summary_and_exit_logic() {
        let r = sample();
        assert_eq!(r.summary_line(), "1 passed, 1 failed, 1 skipped");
        assert!(!r.ok(false), "a must failure fails the run");
        assert!(r
            .human()
            .trim_end()
            .ends_with("1 passed, 1 failed, 1 skipped"));
        assert!(r.human().contains("requirement:"));
        let j = r.to_json(false);
        assert_eq!(j["checks"][1]["status"], "fail");
        assert_eq!(j["checks"][1]["level"], "must");
        assert_eq!(j["summary"]["must_failed"], 1);
    }

    #[test]
    fn expectations_cannot_go_stale() {
        let mut r = sample();
        let ids = [r.results[1].id, r.results[0].id];
        let exp = Expectations::parse(&format!(
            "# c\n{}  # why\n{}\n\nno/such-check\n",
            ids[0], ids[1]
        ));
        r.apply(&exp, "x.txt", &|_| true);
        assert_eq!(r.results[1].status, Status::Xfail);
        assert!(r.unexpected_failures.is_empty());
        assert_eq!(r.unexpected_passes.len(), 2, "{:?}", r.unexpected_passes);
        assert!(!r.ok(false));
        let mut r = sample();
        r.apply(&Expectations::parse(ids[0]), "x.txt", &|_| true);
        assert!(
            r.ok(false),
            "{:?} {:?}",
            r.unexpected_failures,
            r.unexpected_passes
        );
        assert_eq!(r.summary_line(), "1 passed, 0 failed, 1 skipped, 1 xfail");
        let text = Expectations::render(&r);
        assert_eq!(
            Expectations::parse(&text).ids.keys().collect::<Vec<_>>(),
            [ids[0]]
        );
    }

    /// What a string reads as in the JUnit file: the characters XML cannot hold as `\u{..}`.
    fn visible(s: &str) -> String {
        s.chars()
            .map(|c| {
                if ((c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r'))
                    || matches!(c, '\u{fffe}' | '\u{ffff}')
                {
                    format!("\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    /// Checks that the JUnit file of a report whose server name, failure detail and note are
    /// `s` is well-formed XML and reads back as `s` (issue 14: a server's raw bytes in a detail
    /// made `&#8;`, which XML parsers reject).
    fn junit_reads_back(s: &str) -> Result<(), String> {
        let cat = catalogue::catalogue();
        let mut r = Report::new(s, Some(Protocol::MsgPack), s, TierSel::Fast);
        r.results.push(
            CheckResult::new(&cat[1], Outcome::Fail(s.to_owned()), Duration::ZERO)
                .with_notes(vec![s.to_owned()]),
        );
        r.results.push(CheckResult::blocked(&cat[2], cat[1].id, s));
        let x = r.junit();
        let doc = roxmltree::Document::parse(&x).map_err(|e| format!("{e}: {x}"))?;
        let want = visible(s);
        let node = |tag: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(tag))
                .ok_or(format!("no <{tag}> in {x}"))
        };
        let root = doc.root_element();
        if root.attribute("name") != Some(&format!("mock-kong conform: {want}")) {
            return Err(format!("testsuites name {:?}", root.attribute("name")));
        }
        let failure = node("failure")?;
        if failure.attribute("message") != Some(&format!("[must] {want}")) {
            return Err(format!("message {:?}", failure.attribute("message")));
        }
        let text = failure.text().unwrap_or("");
        if !text.contains(&format!("actual: {want}\nin Kong:")) {
            return Err(format!("failure text {text:?}"));
        }
        if !s.is_empty() && node("system-out")?.text().unwrap_or("") != want {
            return Err("system-out".into());
        }
        let skipped = node("skipped")?.attribute("message").unwrap_or("");
        if !skipped.starts_with(&format!("blocked by {}", cat[1].id)) {
            return Err(format!("skipped {skipped:?}"));
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any bytes a server sends, read as text the way details quote them.
        #[test]
        fn junit_escapes_arbitrary_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let s = String::from_utf8_lossy(&b);
            proptest::prop_assert_eq!(junit_reads_back(&s), Ok(()));
        }

        /// Any characters, the noncharacters and every control character included.
        #[test]
        fn junit_escapes_arbitrary_text(s in "(\\PC|[\\x00-\\x1f\\x7f\u{fffe}\u{ffff}<>&\"'])*") {
            proptest::prop_assert_eq!(junit_reads_back(&s), Ok(()));
        }
    }

    #[test]
    fn junit_of_control_characters_parses() {
        assert_eq!(junit_reads_back("\u{8}a\r\nb\t<\u{0}\u{fffe}"), Ok(()));
    }

    #[test]
    fn junit_is_escaped() {
        let x = sample().junit();
        assert!(x.contains("&lt;junk&gt; &amp; &quot;more&quot;"), "{x}");
        assert!(x.contains("<testsuite name=\"dump\" tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(!x.contains("<junk>"));
    }
}
