//! The regression gate end to end: A/A (the same reference server measured twice is never a
//! regression), A/B (the reference server with its `very-slow-pdk` fault, +200 µs of CPU per
//! PDK call, is a regression where there are PDK calls and not at 0 calls), and the `gate` /
//! `baseline save` commands with every output (exit codes, JUnit, markdown, BMF, GitHub
//! annotations).
//!
//! The two sides of each comparison are measured *interleaved* (one trial of A, one of B, ...)
//! and merged with `baseline::merge`, so a slow phase of a shared machine hits both sides alike;
//! that is what keeps these tests deterministic enough on a loaded CI machine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loadgen::gate::baseline;
use loadgen::gate::{self, GateConfig, Metric, PointOutcome, Verdict};
use loadgen::results::Results;
use loadgen::sweep::{self, NoProgress, TargetDef};
use mock_kong::target::TargetSpec;
use mock_kong::Protocol;

use super::{exe, plan};

/// The reference server (MsgPack) with these `--fault`s, labelled `reference` as usual.
fn reference(faults: &[&str]) -> TargetDef {
    TargetDef {
        label: "reference".into(),
        spec: TargetSpec::Reference {
            protocol: Protocol::MsgPack,
            exe: Some(exe()),
            faults: faults.iter().map(|f| f.to_string()).collect(),
        },
        placement: Default::default(),
    }
}

/// `rounds` × (one trial of A, one trial of B) at `calls`, concurrency 1; each side merged.
async fn interleaved(a: &[&str], b: &[&str], calls: &[u32], rounds: usize) -> (Results, Results) {
    let mut p = plan(&[Protocol::MsgPack], calls, &[1]);
    p.trials = 1;
    p.duration = Duration::from_millis(300);
    p.warmup = Duration::from_millis(100);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        p.targets = vec![reference(a)];
        ra.push(sweep::run(&p, &NoProgress).await);
        p.targets = vec![reference(b)];
        rb.push(sweep::run(&p, &NoProgress).await);
    }
    let mut ra = baseline::merge(ra).expect("runs");
    let mut rb = baseline::merge(rb).expect("runs");
    // The counters are process-wide and the tests of this binary run in parallel: here they
    // would count the other tests' requests too (tests/it/ab.rs checks them through the binary).
    for p in ra.points.iter_mut().chain(rb.points.iter_mut()) {
        p.counters = None;
    }
    for r in [&ra, &rb] {
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!(r.points.len(), calls.len());
        assert!(r.points.iter().all(|p| p.trials.len() == rounds));
    }
    (ra, rb)
}

fn config() -> GateConfig {
    let mut cfg = GateConfig::new(25.0).unwrap();
    cfg.metrics = vec![Metric::Throughput, Metric::P50];
    cfg
}

#[tokio::test]
#[ignore = "statistical tier (timings compared): scripts/test.sh runs it serially"]
async fn a_a_the_same_server_twice_is_no_regression() {
    let _machine = super::MACHINE.write().await;
    let (a, b) = interleaved(&[], &[], &[0, 10], 4).await;
    let r = gate::compare(&a, &b, &config()).unwrap();
    let md = loadgen::gate::report::markdown(&r, "A");
    assert_eq!(r.exit_code(), 0, "{md}");
    assert_eq!(r.count(Verdict::Regression), 0, "{md}");
    assert!(!r.ratios, "same machine: absolute figures");
}

#[tokio::test]
#[ignore = "statistical tier (timings compared): scripts/test.sh runs it serially"]
async fn a_b_a_slower_pdk_is_a_regression_where_calls_are_made_and_not_at_0_calls() {
    let _machine = super::MACHINE.write().await;
    // The two-file gate judges by whole intervals of trial-to-trial change (min/max over 4
    // rounds): on a VM whose trials spread 6× (measured in a CI run: 120–693 req/s at one
    // point), even a 2.7× slowdown stays "within noise" in one attempt. That is the gate being
    // right about such a machine (`loadgen ab` is the tool for it), so the test allows three
    // attempts: the regression must be found in one of them, and the 0-call point must never
    // be called a regression in any.
    let mut reports = Vec::new();
    for _attempt in 0..3 {
        let (a, b) = interleaved(&[], &["very-slow-pdk"], &[0, 10], 4).await;
        let r = gate::compare(&a, &b, &config()).unwrap();
        let md = loadgen::gate::report::markdown(&r, "A");
        let at = |calls: u32| {
            r.points
                .iter()
                .find(|p| p.calls == calls)
                .unwrap_or_else(|| panic!("calls={calls}: {md}"))
        };
        assert!(!at(0).is_regression(), "no PDK call, no slowdown: {md}");
        if r.exit_code() == 1 {
            assert!(at(10).is_regression(), "{md}");
            // 10 calls × 200 µs on top of ~100-300 µs: throughput at least halves. (Which of
            // throughput and median latency clears the whole-interval rule first depends on
            // the machine's load; at least one does, or the point would not be a regression.)
            let PointOutcome::Compared { metrics, .. } = &at(10).outcome else {
                panic!("{md}")
            };
            assert!(metrics[0].change < -0.5, "throughput at least halves: {md}");
            return;
        }
        reports.push(md);
    }
    panic!(
        "very-slow-pdk was not found a regression in 3 attempts:\n{}",
        reports.join("\n")
    );
}

fn loadgen(args: &[&str], dir: &Path, github: bool) -> (i32, String) {
    let mut cmd = Command::new(exe());
    cmd.args(args).current_dir(dir);
    if github {
        cmd.env("GITHUB_ACTIONS", "true");
    } else {
        cmd.env_remove("GITHUB_ACTIONS");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A results file with one point whose 3 trials are `rps` ±2 %.
fn results_file(dir: &Path, name: &str, fingerprint: &str, rps: f64) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut p = plan(&[Protocol::MsgPack], &[1], &[1]);
    p.targets.clear();
    let mut r: Results = rt.block_on(sweep::run(&p, &NoProgress));
    let trials: Vec<serde_json::Value> = [0.98, 1.0, 1.02]
        .iter()
        .map(|f| {
            let x = rps * f;
            serde_json::json!({
                "rps": x, "ok": 1000, "errors": 0, "warmup_errors": 0, "window_s": 1.0,
                "latency_us": {"p50": 1e6 / x, "p90": 1.2e6 / x, "p99": 2e6 / x, "p999": 3e6 / x, "max": 4e6 / x, "mean": 1e6 / x},
                "loadgen_cpu_s": 0.5, "loadgen_cpu_ns_per_round_trip": 3000.0,
                "server_cpu_s": 0.5, "server_rss_kib": 4096, "server_respawns": 0
            })
        })
        .collect();
    let json = serde_json::json!({
        "peer": "go", "protocol": "ProtoBuf:1", "calls": 10, "concurrency": 1, "kong_workers": 1,
        "mode": "closed", "variant": "single", "rps": rps,
        "rps_spread": {"median": rps, "min": rps * 0.98, "max": rps * 1.02, "spread_pct": 4.0},
        "latency_us": {"p50": 1e6 / rps, "p90": 1e6 / rps, "p99": 2e6 / rps, "p999": 3e6 / rps, "max": 4e6 / rps, "mean": 1e6 / rps},
        "latency_p99_spread": {"median": 0.0, "min": 0.0, "max": 0.0, "spread_pct": 0.0},
        "errors": 0, "unsent": 0, "warmup_errors": 0, "error_kinds": {}, "verified_calls": 10,
        "time_per_request_us": 1e6 / rps, "server": {"respawns": 0},
        "loadgen": {"cpu_cores": 0.5, "cpu_ns_per_round_trip": 3000.0},
        "trials": trials,
    });
    r.points = vec![serde_json::from_value(json).unwrap()];
    r.machine.fingerprint = fingerprint.into();
    let mut v = serde_json::to_value(&r).unwrap();
    super::schema::validate_results(&v).unwrap();
    v["machine"]["fingerprint"] = fingerprint.into();
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    name.to_owned()
}

#[test]
fn the_gate_command_exit_codes_and_report_files() {
    let _machine = super::MACHINE.blocking_read();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = results_file(d, "base.json", "m1", 10_000.0);
    let same = results_file(d, "same.json", "m1", 10_100.0);
    let slow = results_file(d, "slow.json", "m1", 6_000.0);

    // Save a baseline; it lands under reports/baselines/ by default.
    let (code, out) = loadgen(&["baseline", "save", &base, "--name", "go-pb"], d, false);
    assert_eq!(code, 0, "{out}");
    let saved = d.join("reports/baselines/go-pb.json");
    assert!(saved.is_file(), "{out}");
    let saved = saved.to_string_lossy().into_owned();

    let (code, out) = loadgen(
        &["gate", "--baseline", &saved, "--current", &same],
        d,
        false,
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("✅ no regression") && !out.contains("::error"),
        "{out}"
    );

    let args = [
        "gate",
        "--baseline",
        &saved,
        "--current",
        &slow,
        "--junit",
        "gate.xml",
        "--markdown",
        "gate.md",
        "--bmf",
        "bmf.json",
    ];
    let (code, out) = loadgen(&args, d, true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("::error file=")
                && l.contains("go ProtoBuf%3A1 c1 closed calls=10")),
        "annotations on GitHub Actions: {out}"
    );
    let junit = std::fs::read_to_string(d.join("gate.xml")).unwrap();
    assert!(junit.contains("failures=\"3\""), "{junit}");
    let md = std::fs::read_to_string(d.join("gate.md")).unwrap();
    assert!(
        md.contains("### Regressions") && md.contains("-40.0 %"),
        "{md}"
    );
    let bmf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("bmf.json")).unwrap()).unwrap();
    assert_eq!(
        bmf["go ProtoBuf:1 c1 closed calls=10"]["throughput"]["value"],
        6000.0
    );

    // Interleaved runs merge into one results.json with every trial.
    let (code, out) = loadgen(
        &["baseline", "merge", &base, &same, "--out", "merged.json"],
        d,
        false,
    );
    assert_eq!(code, 0, "{out}");
    let merged: Results =
        serde_json::from_str(&std::fs::read_to_string(d.join("merged.json")).unwrap()).unwrap();
    assert_eq!(merged.points[0].trials.len(), 6);

    // Another machine: no time verdict (2), and the message names `loadgen ab`.
    let other = results_file(d, "other.json", "m2", 10_000.0);
    let (code, out) = loadgen(
        &["gate", "--baseline", &saved, "--current", &other],
        d,
        false,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("No time verdict") && out.contains("loadgen ab"),
        "{out}"
    );
    // Ratios forced, but without a floor in either file they cannot be formed → 2.
    let (code, out) = loadgen(
        &[
            "gate",
            "--baseline",
            &saved,
            "--current",
            &other,
            "--compare",
            "ratio",
        ],
        d,
        false,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot compare"), "{out}");
    // Forced absolute, it compares (and warns).
    let (code, out) = loadgen(
        &[
            "gate",
            "--baseline",
            &saved,
            "--current",
            &other,
            "--compare",
            "absolute",
        ],
        d,
        false,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("forced"), "{out}");

    // Unreadable input and bad options are errors (2).
    let (code, out) = loadgen(
        &["gate", "--baseline", "nope.json", "--current", &same],
        d,
        false,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read"), "{out}");
    let (code, _) = loadgen(
        &[
            "gate",
            "--baseline",
            &saved,
            "--current",
            &same,
            "--metrics",
            "p42",
        ],
        d,
        false,
    );
    assert_eq!(code, 2);
}

/// `loadgen plot --concurrency` draws one concurrency of a sweep of several; a concurrency the
/// file did not measure is a usage error (2) that says so.
#[test]
fn plot_draws_only_the_concurrencies_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let name = results_file(d, "two.json", "m1", 10_000.0);
    let path = d.join(&name);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut c8 = v["points"][0].clone();
    c8["concurrency"] = 8.into();
    v["points"].as_array_mut().unwrap().push(c8);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();

    let (code, out) = loadgen(
        &["plot", &name, "--concurrency", "8", "--out", "c8"],
        d,
        false,
    );
    assert_eq!(code, 0, "{out}");
    let summary = std::fs::read_to_string(d.join("c8/summary.md")).unwrap();
    assert!(summary.contains("go ProtoBuf:1 c8 closed"), "{summary}");
    assert!(!summary.contains("go ProtoBuf:1 c1 closed"), "{summary}");
    let csv = std::fs::read_to_string(d.join("c8/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 1, "{csv}");

    let (code, out) = loadgen(
        &["plot", &name, "--concurrency", "4", "--out", "c4"],
        d,
        false,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no point at concurrency [4]"), "{out}");
}
