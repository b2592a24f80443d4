//! What the regression gate writes for people and CI systems: the markdown summary (terminal
//! and pull-request comment), JUnit XML, Bencher Metric Format JSON, and GitHub Actions
//! workflow commands (`::error file=...::`).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::gate::counters::{CounterVerdict, CountersOutcome};
use crate::gate::paired::{AbReport, PairedComparison};
use crate::gate::{Basis, GateReport, Metric, MetricComparison, PointOutcome, Sample, Verdict};
use crate::results::Results;
use crate::stats::Spread;

/// A number with 4 significant digits, without exponent for everyday magnitudes.
fn sig(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else if a == 0.0 {
        "0".into()
    } else {
        let digits = (3 - a.log10().floor() as i32).clamp(4, 12) as usize;
        format!("{v:.digits$}")
    }
}

fn pct(v: f64) -> String {
    format!("{:+.1} %", v * 100.0)
}

/// What the compared values of `metric` are under `basis`.
pub fn quantity(metric: Metric, basis: Basis) -> String {
    match (basis, metric.higher_is_better()) {
        (Basis::Absolute, _) => format!("{} ({})", metric.name(), metric.unit()),
        (Basis::Floor, true) => format!("{} × floor RTT", metric.name()),
        (Basis::Floor, false) => format!("{} ÷ floor RTT", metric.name()),
        (Basis::Reference, _) => format!("{} ÷ reference", metric.name()),
    }
}

fn sample_cell(s: &Sample, metric: Metric, basis: Basis) -> String {
    let mut c = format!("{} [{}–{}]", sig(s.median), sig(s.min), sig(s.max));
    if basis != Basis::Absolute {
        let _ = write!(c, " ({} {})", sig(s.absolute_median), metric.unit());
    }
    if s.trials < 2 {
        c.push_str(" (1 trial)");
    }
    c
}

fn verdict_cell(v: Verdict) -> String {
    match v {
        Verdict::Regression => "**regression** ❌".into(),
        Verdict::Improvement => "improvement ✅".into(),
        Verdict::WithinNoise => "within noise".into(),
        Verdict::WithinThreshold => "within threshold".into(),
    }
}

fn metric_row(key: &str, basis: Basis, m: &MetricComparison) -> String {
    format!(
        "| {key} | {} | {} | {} | {} | [{}, {}] | {} |",
        quantity(m.metric, basis),
        sample_cell(&m.baseline, m.metric, basis),
        sample_cell(&m.current, m.metric, basis),
        pct(m.change),
        pct(m.interval.0),
        pct(m.interval.1),
        verdict_cell(m.verdict)
    )
}

const TABLE_HEAD: &str = "| point | compared | baseline median [min–max] | current median [min–max] | change | interval | verdict |\n|---|---|---|---|---|---|---|";

/// The markdown summary: verdict, how it was compared, regressions first, then every point.
/// `baseline_label` names the baseline (a file or a baseline name).
pub fn markdown(r: &GateReport, baseline_label: &str) -> String {
    let mut s = String::new();
    let badge = match r.exit_code() {
        0 => "✅ no regression",
        1 => "❌ performance regression",
        _ => "⚠️ the gate cannot judge",
    };
    let _ = writeln!(s, "## loadgen gate: {badge}\n");
    let _ = writeln!(s, "{}.\n", r.headline());
    let how = if let Some(why) = &r.time_refused {
        let _ = writeln!(s, "> **No time verdict:** {why}.\n");
        "by their machine-independent counters only".to_owned()
    } else if r.config.counters_only {
        "by their machine-independent counters only (--counters-only)".to_owned()
    } else if r.ratios {
        if r.baseline_fingerprint == r.current_fingerprint {
            "as ratios to in-run references (forced)".to_owned()
        } else {
            "as ratios to in-run references, because the machines differ".to_owned()
        }
    } else if r.baseline_fingerprint == r.current_fingerprint {
        "as absolute figures (same machine fingerprint)".to_owned()
    } else {
        "as absolute figures (forced, although the machines differ)".to_owned()
    };
    let times = r.time_refused.is_none() && !r.config.counters_only;
    let rule = if times {
        format!(
            " A change counts only when the whole interval of trial-to-trial changes `[min(cur)/max(base) − 1, max(cur)/min(base) − 1]` lies beyond ±{:.0} %; otherwise it is *within noise*.",
            r.config.max_regression * 100.0
        )
    } else {
        " Each counter is gated with its own small tolerance.".to_owned()
    };
    let _ = writeln!(
        s,
        "Baseline `{baseline_label}` (machine `{}`) against the current run (machine `{}`), compared {how}.{rule}\n",
        r.baseline_fingerprint, r.current_fingerprint,
    );
    for w in &r.warnings {
        let _ = writeln!(s, "> **Warning:** {w}\n");
    }
    let regressions: Vec<String> = r
        .points
        .iter()
        .filter_map(|p| match &p.outcome {
            PointOutcome::Compared { basis, metrics, .. } => Some(
                metrics
                    .iter()
                    .filter(|m| m.verdict == Verdict::Regression)
                    .map(|m| metric_row(&p.key, *basis, m))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    if !regressions.is_empty() {
        let _ = writeln!(s, "### Regressions\n\n{TABLE_HEAD}");
        for row in regressions {
            let _ = writeln!(s, "{row}");
        }
        s.push('\n');
    }
    let counter_rows: Vec<(String, &CountersOutcome)> = r
        .points
        .iter()
        .filter_map(|p| match &p.outcome {
            PointOutcome::Compared {
                counters: Some(c), ..
            } => Some((p.key.clone(), c)),
            _ => None,
        })
        .collect();
    counters_markdown(&mut s, &counter_rows, true);
    let problems: Vec<String> = r
        .points
        .iter()
        .filter_map(|p| match &p.outcome {
            PointOutcome::Missing { reason } => Some(format!("* `{}`: missing: {reason}", p.key)),
            PointOutcome::Incomparable { reason } => {
                Some(format!("* `{}`: cannot compare: {reason}", p.key))
            }
            PointOutcome::Compared { new_errors, .. } if *new_errors > 0 => Some(format!(
                "* `{}`: {new_errors} error(s) in the current run (none in the baseline)",
                p.key
            )),
            _ => None,
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(s, "### Points the gate could not judge, or with errors\n");
        for line in problems {
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
    if !times {
        return s;
    }
    let _ = writeln!(s, "### Every point\n\n{TABLE_HEAD}");
    for p in &r.points {
        match &p.outcome {
            PointOutcome::Compared { basis, metrics, .. } => {
                for m in metrics {
                    let _ = writeln!(s, "{}", metric_row(&p.key, *basis, m));
                }
            }
            PointOutcome::Missing { .. } => {
                let _ = writeln!(s, "| {} | | | not measured | | | missing |", p.key);
            }
            PointOutcome::Incomparable { .. } => {
                let _ = writeln!(s, "| {} | | | | | | cannot compare |", p.key);
            }
            PointOutcome::New => {
                let _ = writeln!(s, "| {} | | not in the baseline | | | | new |", p.key);
            }
        }
    }
    s
}

/// The counters section of a markdown report: the counters that grew (with why it matters),
/// then a table of every gated counter per point.
fn counters_markdown(s: &mut String, rows: &[(String, &CountersOutcome)], list_grown: bool) {
    if rows.is_empty() {
        return;
    }
    let grew: Vec<String> = rows
        .iter()
        .flat_map(|(k, c)| {
            c.regressions()
                .map(move |x| format!("* `{k}`: {}", x.explain()))
        })
        .collect();
    if list_grown && !grew.is_empty() {
        let _ = writeln!(s, "### Counters beyond their tolerance\n");
        for line in &grew {
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "### Counters per request (machine-independent; baseline → current)\n\n| point | PDK calls | round trips | bytes out | bytes in | harness writes | server writes | harness allocs | server RSS KiB/10k | harness reads | server reads |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    use crate::gate::counters::Counter;
    for (key, c) in rows {
        let cell = |counter: Counter| {
            c.compared
                .iter()
                .find(|x| x.counter == counter)
                .map_or("–".to_owned(), |x| {
                    let mark = match x.verdict {
                        CounterVerdict::More => " **❌**",
                        CounterVerdict::Fewer => " ✅",
                        _ => "",
                    };
                    if (x.baseline - x.current).abs() < 0.005 {
                        format!("{}{mark}", sig(x.current))
                    } else {
                        format!("{} → {}{mark}", sig(x.baseline), sig(x.current))
                    }
                })
        };
        let cells: Vec<String> = Counter::ALL.iter().map(|&k| cell(k)).collect();
        let _ = writeln!(s, "| {key} | {} |", cells.join(" | "));
    }
    let skipped: Vec<String> = rows
        .iter()
        .flat_map(|(k, c)| c.skipped.iter().map(move |x| format!("`{k}` {x}")))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(s, "\nNot compared: {}.", skipped.join("; "));
    }
    let _ = writeln!(
        s,
        "\nReads are reported, not gated (a read may come back empty or carry two frames, depending on timing); every other counter is gated with a small tolerance (docs/ci-gates.md).\n"
    );
}

/// A JUnit test case for a point's counters: `(xml, failed)`.
fn counters_case(class: &str, calls: u32, c: &CountersOutcome) -> (String, bool) {
    let text: Vec<String> = c
        .compared
        .iter()
        .map(|x| {
            format!(
                "{} {} → {} ({})",
                x.counter.name(),
                sig(x.baseline),
                sig(x.current),
                x.verdict.name()
            )
        })
        .collect();
    let text = xml_escape(&text.join("; "));
    let failed = c.regressed();
    let body = if failed {
        let why: Vec<String> = c.regressions().map(|x| x.explain()).collect();
        format!(
            "<failure message=\"{}\" type=\"counters\">{text}</failure>",
            xml_escape(&why.join("; "))
        )
    } else {
        format!("<system-out>{text}</system-out>")
    };
    (
        format!(
            "    <testcase classname=\"{class}\" name=\"calls={calls} counters\" time=\"0\">{body}</testcase>"
        ),
        failed,
    )
}

// The project's one XML escaper (control characters as visible `\u{..}`, which XML 1.0 allows).
use mock_kong::xml::escape as xml_escape;

fn describe(key: &str, basis: Basis, m: &MetricComparison) -> String {
    format!(
        "{key} {}: baseline {}, current {}, change {} (interval [{}, {}]): {}",
        quantity(m.metric, basis),
        sample_cell(&m.baseline, m.metric, basis),
        sample_cell(&m.current, m.metric, basis),
        pct(m.change),
        pct(m.interval.0),
        pct(m.interval.1),
        m.verdict.name()
    )
}

/// A JUnit document of one suite named `name` holding `cases` (each a `<testcase>` line).
fn junit_document(
    name: &str,
    cases: &[String],
    failures: usize,
    errors: usize,
    skipped: Option<usize>,
) -> String {
    let skipped = skipped.map_or(String::new(), |k| format!(" skipped=\"{k}\""));
    let counts = format!(
        "name=\"{name}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\"{skipped}",
        cases.len()
    );
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(s, "<testsuites {counts}>\n  <testsuite {counts}>");
    for c in cases {
        let _ = writeln!(s, "{c}");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// JUnit XML: a test case per point and metric (classname: the series); regressions are
/// failures, missing and incomparable points errors, new points skipped.
pub fn junit(r: &GateReport) -> String {
    let mut cases = Vec::new();
    let (mut failures, mut errors, mut skipped) = (0, 0, 0);
    for p in &r.points {
        let class = xml_escape(&p.series);
        match &p.outcome {
            PointOutcome::Compared {
                basis,
                metrics,
                new_errors,
                counters,
            } => {
                if let Some(c) = counters {
                    let (case, failed) = counters_case(&class, p.calls, c);
                    failures += usize::from(failed);
                    cases.push(case);
                }
                for m in metrics {
                    let text = xml_escape(&describe(&p.key, *basis, m));
                    let body = if m.verdict == Verdict::Regression {
                        failures += 1;
                        format!(
                            "<failure message=\"{} {} {}\" type=\"regression\">{text}</failure>",
                            xml_escape(m.metric.name()),
                            xml_escape(&pct(m.change)),
                            m.verdict.name()
                        )
                    } else {
                        format!("<system-out>{text}</system-out>")
                    };
                    cases.push(format!(
                        "    <testcase classname=\"{class}\" name=\"calls={} {}\" time=\"0\">{body}</testcase>",
                        p.calls,
                        m.metric.name()
                    ));
                }
                if *new_errors > 0 {
                    failures += 1;
                    cases.push(format!(
                        "    <testcase classname=\"{class}\" name=\"calls={} errors\" time=\"0\"><failure message=\"{new_errors} error(s)\" type=\"errors\">{new_errors} error(s) in the current run's windows; the baseline had none</failure></testcase>",
                        p.calls
                    ));
                }
            }
            PointOutcome::Missing { reason } | PointOutcome::Incomparable { reason } => {
                let missing = matches!(p.outcome, PointOutcome::Missing { .. });
                let body = if missing && r.config.allow_missing {
                    skipped += 1;
                    format!("<skipped message=\"{}\"/>", xml_escape(reason))
                } else {
                    errors += 1;
                    format!(
                        "<error message=\"{}\" type=\"{}\"/>",
                        xml_escape(reason),
                        if missing { "missing" } else { "incomparable" }
                    )
                };
                cases.push(format!(
                    "    <testcase classname=\"{class}\" name=\"calls={}\" time=\"0\">{body}</testcase>",
                    p.calls
                ));
            }
            PointOutcome::New => {
                skipped += 1;
                cases.push(format!(
                    "    <testcase classname=\"{class}\" name=\"calls={}\" time=\"0\"><skipped message=\"not in the baseline\"/></testcase>",
                    p.calls
                ));
            }
        }
    }
    junit_document("loadgen gate", &cases, failures, errors, Some(skipped))
}

/// Bencher Metric Format of a run: per point (named by its key), `throughput` (requests/s),
/// `latency` (median, ns) and `latency-p99` (ns), each with the trials' minimum and maximum as
/// `lower_value` / `upper_value`.
pub fn bmf(run: &Results) -> Value {
    let mut out = Map::new();
    for p in &run.points {
        let measure = |f: &dyn Fn(&crate::results::TrialRecord) -> f64, factor: f64| {
            let s = Spread::of(&p.trials.iter().map(f).collect::<Vec<_>>());
            json!({
                "value": s.median * factor,
                "lower_value": s.min * factor,
                "upper_value": s.max * factor,
            })
        };
        let mut m = Map::new();
        m.insert("throughput".into(), measure(&|t| t.rps, 1.0));
        m.insert("latency".into(), measure(&|t| t.latency_us.p50, 1000.0));
        m.insert("latency-p99".into(), measure(&|t| t.latency_us.p99, 1000.0));
        out.insert(crate::gate::point_key(p), Value::Object(m));
    }
    Value::Object(out)
}

fn paired_row(key: &str, m: &PairedComparison) -> String {
    format!(
        "| {key} | {} | {} | {} | {} | {} [{}, {}] | {} / {} | {} |",
        m.metric.name(),
        sig(m.baseline_median),
        sig(m.current_median),
        pct(m.change()),
        sig(m.ratio),
        sig(m.interval.0),
        sig(m.interval.1),
        m.units,
        m.pairs,
        verdict_cell(m.verdict)
    )
}

const AB_HEAD: &str = "| point | metric | baseline median | current median | change | ratio B/A [95 % interval] | forks / pairs | verdict |\n|---|---|---|---|---|---|---|---|";

/// The markdown report of `loadgen ab`: verdict, method, regressions with their explanation,
/// every point, the counters.
pub fn ab_markdown(r: &AbReport) -> String {
    let mut s = String::new();
    let badge = match r.exit_code() {
        0 => "✅ no regression",
        1 => "❌ regression",
        _ => "⚠️ the gate cannot judge",
    };
    let _ = writeln!(s, "## loadgen ab: {badge}\n");
    let _ = writeln!(s, "{}.\n", r.headline());
    let _ = writeln!(
        s,
        "Baseline `{}` (A) and current `{}` (B) measured in one run on machine `{}`, trials interleaved (A B, B A, ...), both servers started afresh for every fork. Each fork gives a ratio B/A (the geometric mean of its pairs'); a change counts only when the whole {:.0} % interval of the median ratio lies beyond ±{:.0} % (sign-test interval, no assumption on the noise's shape). Counters are compared with their own small tolerances.\n",
        r.baseline_label,
        r.current_label,
        r.fingerprint,
        crate::gate::paired::CONFIDENCE * 100.0,
        r.config.max_regression * 100.0
    );
    for w in &r.warnings {
        let _ = writeln!(s, "> **Warning:** {w}\n");
    }
    let regressed: Vec<_> = r.points.iter().filter(|p| p.is_regression()).collect();
    if !regressed.is_empty() {
        let _ = writeln!(s, "### Regressions, and why\n");
        for p in &regressed {
            let _ = writeln!(s, "**{}**", p.key);
            for line in p.explanation() {
                let _ = writeln!(s, "* {line}");
            }
            s.push('\n');
        }
    }
    let problems: Vec<String> = r
        .missing
        .iter()
        .map(|m| format!("* not measured: {m}"))
        .chain(r.points.iter().flat_map(|p| {
            p.unjudged
                .iter()
                .map(move |u| format!("* `{}` {}: {}", p.key, u.metric.name(), u.reason))
        }))
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(s, "### Could not judge\n");
        for line in problems {
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### Every point\n\n{AB_HEAD}");
    for p in &r.points {
        for m in &p.metrics {
            let _ = writeln!(s, "{}", paired_row(&p.key, m));
        }
        if p.current_errors > 0 || p.baseline_errors > 0 {
            let _ = writeln!(
                s,
                "| {} | errors | {} | {} | | | | {} |",
                p.key,
                p.baseline_errors,
                p.current_errors,
                if p.new_errors() > 0 {
                    "**new errors** ❌"
                } else {
                    ""
                }
            );
        }
    }
    s.push('\n');
    let rows: Vec<(String, &CountersOutcome)> = r
        .points
        .iter()
        .filter_map(|p| p.counters.as_ref().map(|c| (p.key.clone(), c)))
        .collect();
    // The grown counters are in the explanations above.
    counters_markdown(&mut s, &rows, false);
    s
}

/// JUnit XML of `loadgen ab`: per point a case per metric, one for the counters and one for
/// errors; regressions are failures, unjudged metrics errors.
pub fn ab_junit(r: &AbReport) -> String {
    let mut cases = Vec::new();
    let (mut failures, mut errors) = (0usize, 0usize);
    let class = xml_escape(&format!("{} vs {}", r.current_label, r.baseline_label));
    for p in &r.points {
        let key = xml_escape(&p.key);
        for m in &p.metrics {
            let text = xml_escape(&format!(
                "{} {}: ratio B/A {} [{}, {}] over {} forks ({} pairs), change {}: {}",
                p.key,
                m.metric.name(),
                sig(m.ratio),
                sig(m.interval.0),
                sig(m.interval.1),
                m.units,
                m.pairs,
                pct(m.change()),
                m.verdict.name()
            ));
            let body = if m.verdict == Verdict::Regression {
                failures += 1;
                format!(
                    "<failure message=\"{} {} regression\" type=\"regression\">{text}</failure>",
                    m.metric.name(),
                    xml_escape(&pct(m.change()))
                )
            } else {
                format!("<system-out>{text}</system-out>")
            };
            cases.push(format!(
                "    <testcase classname=\"{class}\" name=\"{key} {}\" time=\"0\">{body}</testcase>",
                m.metric.name()
            ));
        }
        for u in &p.unjudged {
            errors += 1;
            cases.push(format!(
                "    <testcase classname=\"{class}\" name=\"{key} {}\" time=\"0\"><error message=\"{}\" type=\"unjudged\"/></testcase>",
                u.metric.name(),
                xml_escape(&u.reason)
            ));
        }
        if let Some(c) = &p.counters {
            let (case, failed) = counters_case(&class, p.calls, c);
            failures += usize::from(failed);
            cases.push(case.replace(
                &format!("name=\"calls={} counters\"", p.calls),
                &format!("name=\"{key} counters\""),
            ));
        }
        if p.new_errors() > 0 {
            failures += 1;
            cases.push(format!(
                "    <testcase classname=\"{class}\" name=\"{key} errors\" time=\"0\"><failure message=\"{n} error(s)\" type=\"errors\">{n} failed request(s) on the current side; none on the baseline</failure></testcase>",
                n = p.new_errors()
            ));
        }
    }
    for m in &r.missing {
        errors += 1;
        cases.push(format!(
            "    <testcase classname=\"{class}\" name=\"not measured\" time=\"0\"><error message=\"{}\" type=\"missing\"/></testcase>",
            xml_escape(m)
        ));
    }
    junit_document("loadgen ab", &cases, failures, errors, None)
}

/// GitHub Actions workflow commands for `loadgen ab`: an `::error` per regressed point (with its
/// explanation) and per point that could not be judged, a `::notice` per improvement.
pub fn ab_annotations(r: &AbReport) -> Vec<String> {
    let mut out = Vec::new();
    for w in &r.warnings {
        out.push(format!(
            "::warning title={}::{}",
            gh_prop("loadgen ab"),
            gh_data(w)
        ));
    }
    for p in &r.points {
        let title = gh_prop(&format!("loadgen ab: {}", p.key));
        if p.is_regression() {
            out.push(format!(
                "::error title={title}::{}",
                gh_data(&p.explanation().join(" "))
            ));
        }
        for m in p
            .metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Improvement)
        {
            out.push(format!(
                "::notice title={title}::{} improved {} (ratio {} [{}, {}])",
                m.metric.name(),
                pct(m.change()),
                sig(m.ratio),
                sig(m.interval.0),
                sig(m.interval.1)
            ));
        }
        for u in &p.unjudged {
            out.push(format!("::error title={title}::{}", gh_data(&u.reason)));
        }
    }
    for m in &r.missing {
        out.push(format!(
            "::error title={}::not measured: {}",
            gh_prop("loadgen ab"),
            gh_data(m)
        ));
    }
    out
}

/// Escapes the message of a workflow command.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property (`file=`, `title=`) of a workflow command.
fn gh_prop(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: an `::error` per regression, error-counting point,
/// missing or incomparable point, a `::notice` per improvement and a `::warning` per warning,
/// attached to `file` (the baseline).
pub fn github_annotations(r: &GateReport, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    let f = gh_prop(file);
    for w in &r.warnings {
        out.push(format!(
            "::warning file={f},title={}::{}",
            gh_prop("loadgen gate"),
            gh_data(w)
        ));
    }
    for p in &r.points {
        let title = gh_prop(&format!("loadgen gate: {}", p.key));
        match &p.outcome {
            PointOutcome::Compared {
                basis,
                metrics,
                new_errors,
                counters,
            } => {
                for c in counters.iter().flat_map(CountersOutcome::regressions) {
                    out.push(format!(
                        "::error file={f},title={title}::{}",
                        gh_data(&c.explain())
                    ));
                }
                for m in metrics {
                    let kind = match m.verdict {
                        Verdict::Regression => "error",
                        Verdict::Improvement => "notice",
                        _ => continue,
                    };
                    out.push(format!(
                        "::{kind} file={f},title={title}::{}",
                        gh_data(&describe(&p.key, *basis, m))
                    ));
                }
                if *new_errors > 0 {
                    out.push(format!(
                        "::error file={f},title={title}::{new_errors} error(s) in the current run (none in the baseline)"
                    ));
                }
            }
            PointOutcome::Missing { reason } => {
                let kind = if r.config.allow_missing {
                    "warning"
                } else {
                    "error"
                };
                out.push(format!(
                    "::{kind} file={f},title={title}::missing: {}",
                    gh_data(reason)
                ));
            }
            PointOutcome::Incomparable { reason } => {
                out.push(format!(
                    "::error file={f},title={title}::cannot compare: {}",
                    gh_data(reason)
                ));
            }
            PointOutcome::New => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::compare::tests::{point, run, trials};
    use crate::gate::{compare, GateConfig};

    fn report() -> (Results, GateReport) {
        let b = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(20000.0, 0.05)),
                point("reference", 10, trials(8000.0, 0.05)),
                point("reference", 20, trials(4000.0, 0.05)),
            ],
        );
        let c = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(25000.0, 0.02)),
                point("reference", 10, trials(4000.0, 0.05)),
                point("reference", 30, trials(3000.0, 0.05)),
            ],
        );
        let mut cfg = GateConfig::new(10.0).unwrap();
        cfg.allow_missing = true;
        let r = compare(&b, &c, &cfg).unwrap();
        (c, r)
    }

    #[test]
    fn markdown_lists_regressions_first_and_every_point() {
        let (_, r) = report();
        let md = markdown(&r, "reports/baselines/reference.json");
        assert!(
            md.starts_with("## loadgen gate: ❌ performance regression"),
            "{md}"
        );
        let reg = md.find("### Regressions").expect("a regressions section");
        let all = md.find("### Every point").unwrap();
        assert!(reg < all);
        let regressions = &md[reg..all];
        assert!(
            regressions.contains("calls=10") && !regressions.contains("calls=0 "),
            "{regressions}"
        );
        assert!(md.contains("| reference MsgPack:1 c1 closed calls=0 | rps (req/s) | 20000 [19000–21000] | 25000 [24500–25500] | +25.0 % |"), "{md}");
        assert!(md.contains("improvement ✅") && md.contains("missing") && md.contains("| new |"));
        assert!(md.contains("absolute figures (same machine fingerprint)"));
    }

    #[test]
    fn junit_counts_failures_and_escapes() {
        let (_, r) = report();
        let x = junit(&r);
        assert!(
            x.contains("tests=\"8\" failures=\"3\" errors=\"0\" skipped=\"2\""),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"rps -50.0 % regression\""),
            "{x}"
        );
        assert!(x.contains("classname=\"reference MsgPack:1 c1 closed\" name=\"calls=10 p99\""));
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;\\u{1}"
        );
    }

    #[test]
    fn bmf_has_the_bencher_measures_with_bounds() {
        let (c, _) = report();
        let v = bmf(&c);
        let p = &v["reference MsgPack:1 c1 closed calls=10"];
        assert_eq!(p["throughput"]["value"], 4000.0);
        assert_eq!(p["throughput"]["lower_value"], 3800.0);
        assert_eq!(p["throughput"]["upper_value"], 4200.0);
        // p50 = 10⁶ / rps µs = 250 µs = 250 000 ns.
        assert!((p["latency"]["value"].as_f64().unwrap() - 250_000.0).abs() < 1e-6);
        assert!(p["latency-p99"]["upper_value"].as_f64().unwrap() > 0.0);
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn annotations_are_workflow_commands_with_escaped_text() {
        let (_, r) = report();
        let lines = github_annotations(&r, "reports/baselines/a,b.json");
        let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("::error ")).collect();
        assert_eq!(errors.len(), 3, "{lines:#?}");
        assert!(errors[0].starts_with("::error file=reports/baselines/a%2Cb.json,title=loadgen gate%3A reference MsgPack%3A1 c1 closed calls=10::"), "{}", errors[0]);
        assert!(lines.iter().any(|l| l.starts_with("::notice ")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("::warning ") && l.contains("missing")));
        assert!(lines.iter().all(|l| !l.contains('\n')));
        assert_eq!(gh_data("50%\nx"), "50%25%0Ax");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(sig(123456.7), "123457");
        assert_eq!(sig(12.3456), "12.35");
        assert_eq!(sig(0.0123456), "0.01235");
        assert_eq!(sig(0.0), "0");
        assert_eq!(pct(-0.4567), "-45.7 %");
    }
}
