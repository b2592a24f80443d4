//! loadgen integration tests: real measurement runs against the reference server (started from
//! this package's `loadgen` binary, hidden `reference-server` subcommand), open-loop
//! saturation, chaos (a server killed in the middle of a sweep), the results schema, the
//! files a sweep writes, the regression gate (`gate`: A/A, A/B, the gate commands), and a
//! plugin of the tests' own measured with only its start and query commands (`newcomer`).
//!
//! Tiers: the ordinary tests are deterministic (counters, files, exit codes, schema). Tests
//! that compare measured timings are the **statistical tier**: `#[ignore]`d so `cargo test`
//! leaves them out, and run alone, one at a time, by `scripts/test.sh`
//! (`cargo test -p loadgen --test it -- --ignored --test-threads=1`), so no other test shares
//! the machine while they measure.

mod ab;
// Shared with mock-kong's tests.
#[path = "../../../mock-kong/tests/it/child_guard.rs"]
mod child_guard;
mod gate;
mod newcomer;
mod schema;
// Shared with mock-kong's tests, which use all of it.
#[allow(dead_code)]
#[path = "../../../mock-kong/tests/it/stamp_plugin.rs"]
mod stamp_plugin;

use std::path::PathBuf;
use std::time::Duration;

use loadgen::driver::{Mode, Via};
use loadgen::results::Results;
use loadgen::sweep::{self, ChaosPlan, NoProgress, SweepPlan, TargetDef};
use mock_kong::process::LogSink;
use mock_kong::session::SessionOptions;
use mock_kong::Protocol;

/// The machine, as the tests of this binary share it: a test whose verdict depends on timing
/// takes it for writing (it measures alone), every other test that runs servers for reading
/// (they run in parallel with each other, never during a timing test). Other test binaries run
/// before or after this one (cargo runs them one at a time).
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

fn plan(protocols: &[Protocol], calls: &[u32], concurrency: &[usize]) -> SweepPlan {
    SweepPlan {
        targets: protocols
            .iter()
            .map(|&p| TargetDef::reference(p, Some(exe())))
            .collect(),
        calls: calls.to_vec(),
        concurrency: concurrency.to_vec(),
        modes: vec![Mode::Closed],
        kong_workers: 1,
        multicore: None,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        trials: 2,
        method: "kong.request.get_header".into(),
        plugin: "bench".into(),
        custom: None,
        session: SessionOptions {
            log: LogSink::Quiet,
            ..SessionOptions::default()
        },
        floor: false,
        chaos: None,
        keep_hgrm: false,
        command: "test".into(),
        runtime_threads: 1,
        via: Via::Ipc,
        interleave: false,
    }
}

/// Progress that records the points it is told of, in order.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl sweep::Progress for Recorder {
    fn point(&self, label: &str) {
        self.0.lock().unwrap().push(label.to_owned());
    }
    fn trial_done(&self) {}
    fn note(&self, _line: &str) {}
}

/// `--interleave`: a curve's points are prepared together and measured round by round (every
/// other round in reverse); without it each point's trials run back to back. Either way the
/// results hold the same points in the same order, each with every trial.
#[tokio::test]
async fn interleave_measures_a_curve_round_by_round() {
    let _machine = MACHINE.read().await;
    let calls = |labels: &[String]| -> Vec<String> {
        labels
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
            .collect()
    };
    let mut p = plan(&[Protocol::MsgPack], &[0, 2, 4], &[1]);
    p.trials = 3;
    p.duration = Duration::from_millis(150);
    p.warmup = Duration::from_millis(50);

    let back_to_back = Recorder::default();
    let r = sweep::run(&p, &back_to_back).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let seen = calls(&back_to_back.0.lock().unwrap());
    assert_eq!(seen, ["calls=0", "calls=2", "calls=4"]);

    p.interleave = true;
    let rounds = Recorder::default();
    let r = sweep::run(&p, &rounds).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let seen = calls(&rounds.0.lock().unwrap());
    let expected = [
        // prepared together
        "calls=0", "calls=2", "calls=4", //
        // round 1, round 2 (reversed), round 3
        "calls=0", "calls=2", "calls=4", //
        "calls=4", "calls=2", "calls=0", //
        "calls=0", "calls=2", "calls=4",
    ];
    assert_eq!(seen, expected);
    let got: Vec<(u32, usize)> = r.points.iter().map(|p| (p.calls, p.trials.len())).collect();
    assert_eq!(got, [(0, 3), (2, 3), (4, 3)]);
    for pt in &r.points {
        assert_eq!(pt.errors, 0, "{pt:?}");
        assert_eq!(pt.verified_calls, pt.calls as usize, "{pt:?}");
    }
}

#[tokio::test]
async fn closed_loop_against_the_reference_server_in_both_protocols() {
    let _machine = MACHINE.write().await;
    let p = plan(&[Protocol::MsgPack, Protocol::ProtoBuf], &[0, 3], &[1, 2]);
    let r = sweep::run(&p, &NoProgress).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.points.len(), 8);
    for pt in &r.points {
        let what = format!(
            "{} {} c{} calls {}",
            pt.peer, pt.protocol, pt.concurrency, pt.calls
        );
        assert_eq!(pt.errors, 0, "{what}: {:?}", pt.error_kinds);
        assert_eq!(pt.verified_calls, pt.calls as usize, "{what}");
        assert!(
            pt.rps > 100.0,
            "{what}: {} req/s is not sane for the reference server",
            pt.rps
        );
        let l = pt.latency_us;
        assert!(
            l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max,
            "{what}: {l:?}"
        );
        // Closed loop at concurrency c: latency ≈ c / rps (Little's law), within a loose factor.
        let little = pt.concurrency as f64 * 1e6 / pt.rps;
        assert!(
            l.mean > little / 3.0 && l.mean < little * 3.0,
            "{what}: mean {} vs {little}",
            l.mean
        );
        assert_eq!(pt.trials.len(), 2);
        assert!(
            pt.server.cpu_cores.is_some() && pt.server.rss_kib_max.unwrap_or(0) > 0,
            "{what}: {:?}",
            pt.server
        );
        assert!(pt.loadgen.cpu_ns_per_round_trip > 0.0, "{what}");
    }
    let protos: Vec<_> = r.points.iter().map(|p| p.protocol.as_str()).collect();
    assert!(protos.contains(&"MsgPack:1") && protos.contains(&"ProtoBuf:1"));
    // Two call counts per series: one fit each.
    assert_eq!(r.fits.len(), 4, "{:?}", r.fits);
    assert_eq!(r.references.reference_rps.len(), 4);
    let json = serde_json::to_value(&r).unwrap();
    schema::validate_results(&json).unwrap_or_else(|e| panic!("schema: {e}"));
}

#[tokio::test]
#[ignore = "statistical tier (timings compared): scripts/test.sh runs it serially"]
async fn open_loop_flags_saturation_far_above_capacity_and_not_below() {
    let _machine = MACHINE.write().await;
    let mut p = plan(&[Protocol::MsgPack], &[2], &[2]);
    p.trials = 1;
    p.modes = vec![Mode::Open { rate: 2_000_000.0 }];
    let r = sweep::run(&p, &NoProgress).await;
    let pt = &r.points[0];
    assert_eq!(pt.saturated, Some(true), "{pt:?}");
    assert!(pt.unsent > 0 && pt.rps < 1_000_000.0, "{pt:?}");
    let service = pt.service_us.expect("open loop keeps the service time");
    assert!(
        pt.latency_us.p99 > service.p99,
        "corrected latency includes the queueing: {pt:?}"
    );

    p.modes = vec![Mode::Open { rate: 100.0 }];
    p.duration = Duration::from_millis(600);
    let r = sweep::run(&p, &NoProgress).await;
    let pt = &r.points[0];
    assert_eq!(pt.saturated, Some(false), "{pt:?}");
    assert_eq!(pt.unsent, 0);
    assert!((pt.rps - 100.0).abs() < 10.0, "{}", pt.rps);
    assert_eq!(pt.errors, 0);
}

/// `--via http`: closed and open loop through `mock-kong proxy` (keep-alive connections, the
/// echo upstream), every point recording `via: http` and the PDK calls the proxy counted; the
/// HTTP floor measured in the same run; the document valid against the schema.
#[tokio::test]
async fn via_http_closed_and_open_loop_through_the_proxy() {
    let _machine = MACHINE.read().await;
    let mut p = plan(&[Protocol::MsgPack], &[0, 3], &[2]);
    p.via = Via::Http;
    p.trials = 1;
    p.modes = vec![Mode::Closed, Mode::Open { rate: 200.0 }];
    p.floor = true;
    let r = sweep::run(&p, &NoProgress).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.points.len(), 4);
    for pt in &r.points {
        let what = format!("{} {} calls {}", pt.peer, pt.mode, pt.calls);
        assert_eq!(pt.via, "http", "{what}");
        assert!(pt.series_key().ends_with(" http"), "{what}");
        assert_eq!(pt.errors, 0, "{what}: {:?}", pt.error_kinds);
        assert_eq!(pt.verified_calls, pt.calls as usize, "{what}");
        assert!(pt.rps > 0.0, "{what}");
        // The PDK calls each answer carried, counted over the window.
        let counters = pt.counters.as_ref().expect("counters");
        assert_eq!(counters.pdk_calls_per_request, pt.calls as f64, "{what}");
        let l = pt.latency_us;
        assert!(l.p50 > 0.0 && l.p50 <= l.p99, "{what}: {l:?}");
        if pt.mode == "open" {
            assert!(
                pt.service_us.is_some(),
                "{what}: open loop keeps the service time"
            );
        }
    }
    let floor = r.http_floor.as_ref().expect("the HTTP floor is measured");
    assert!(floor.hello_rps > 0.0 && floor.proxy_rps > 0.0, "{floor:?}");
    assert!(
        floor.hello_latency_us.p50 > 0.0 && floor.proxy_latency_us.p50 > 0.0,
        "{floor:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["points"][0]["via"], "http");
    schema::validate_results(&json).unwrap_or_else(|e| panic!("schema: {e}"));
}

/// Over HTTP only a 200 completes a bench request: a plugin answering 403 (the reference
/// `exit`) measured as the bench plugin fails its sample request, while the same plugin
/// measured as a plugin of the user's own (`--plugin exit`, a custom load) completes with its
/// exit, as through IPC.
#[tokio::test]
async fn via_http_a_non_200_answer_is_no_bench_success_but_an_own_plugin_exit_is() {
    let _machine = MACHINE.read().await;
    let mut p = plan(&[Protocol::MsgPack], &[0], &[1]);
    p.via = Via::Http;
    p.trials = 1;
    p.plugin = "exit".into();
    let r = sweep::run(&p, &NoProgress).await;
    assert!(r.points.is_empty(), "{:?}", r.points);
    assert!(
        r.failures.iter().any(|f| f.error.contains("http_403")),
        "{:?}",
        r.failures
    );

    p.custom = Some(loadgen::driver::CustomLoad::default());
    let r = sweep::run(&p, &NoProgress).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let pt = &r.points[0];
    assert_eq!((pt.via.as_str(), pt.errors), ("http", 0), "{pt:?}");
    assert!(pt.rps > 0.0, "{pt:?}");
}

/// A server killed in the middle of a point is respawned Kong-style (≥ 1 s after the previous
/// spawn); the failed requests are counted on that point, the point and the sweep complete,
/// and the next point is clean.
#[tokio::test]
async fn chaos_a_server_killed_mid_sweep_is_restarted_and_errors_are_counted() {
    let _machine = MACHINE.read().await;
    for protocol in [Protocol::MsgPack, Protocol::ProtoBuf] {
        let mut p = plan(&[protocol], &[0, 2, 5], &[2]);
        p.trials = 1;
        p.duration = Duration::from_millis(2500);
        p.chaos = Some(ChaosPlan {
            point: 1,
            after: Duration::from_millis(200),
        });
        let r = sweep::run(&p, &NoProgress).await;
        assert!(r.failures.is_empty(), "{protocol}: {:?}", r.failures);
        assert_eq!(r.points.len(), 3, "{protocol}: the sweep completes");
        let hit = &r.points[1];
        assert!(
            hit.errors > 0,
            "{protocol}: errors counted on the killed point: {hit:?}"
        );
        assert!(!hit.error_kinds.is_empty());
        assert!(hit.server.respawns >= 1, "{protocol}: {:?}", hit.server);
        assert!(
            hit.rps > 0.0,
            "{protocol}: requests succeed again after the respawn"
        );
        assert_eq!(r.points[0].errors, 0, "{protocol}");
        assert_eq!(r.points[2].errors, 0, "{protocol}: the next point is clean");
        assert_eq!(r.points[2].verified_calls, 5);
    }
}

#[test]
fn the_schema_rejects_what_it_should() {
    let mut p = plan(&[Protocol::MsgPack], &[1], &[1]);
    p.targets.clear();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r: Results = rt.block_on(sweep::run(&p, &NoProgress));
    let good = serde_json::to_value(&r).unwrap();
    schema::validate_results(&good).unwrap();
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("machine");
    assert!(schema::validate_results(&bad)
        .unwrap_err()
        .contains("machine"));
    let mut bad = good.clone();
    bad["schema_version"] = 99.into();
    assert!(schema::validate_results(&bad).is_err());
    let mut bad = good;
    bad["settings"]["trials"] = "three".into();
    assert!(schema::validate_results(&bad)
        .unwrap_err()
        .contains("trials"));
}

#[test]
fn the_binary_writes_every_output_file() {
    let _machine = MACHINE.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let status = std::process::Command::new(exe())
        .args([
            "sweep",
            "--reference",
            "--protocol",
            "msgpack,protobuf",
            "--calls",
            "0,2,4",
            "--concurrency",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--trials",
            "1",
            "--multicore",
            "2",
            "--multicore-calls",
            "4",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    for f in [
        "results.json",
        "results.csv",
        "summary.md",
        "rps.svg",
        "rps.png",
        "latency.svg",
        "latency.png",
        "rps_normalised.svg",
        "rps_normalised.png",
    ] {
        let meta = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 100, "{f} is {} bytes", meta.len());
    }
    let png = std::fs::read(out.join("rps.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.join("rps_normalised.svg")).unwrap();
    assert!(
        svg.contains("Kong docs: Go") && svg.contains("<text"),
        "legend drawn as text"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    schema::validate_results(&json).unwrap();
    assert_eq!(
        json["floor"].as_array().unwrap().len(),
        2,
        "a floor per protocol"
    );
    let multicore = json["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["variant"] == "multicore")
        .count();
    assert_eq!(multicore, 2, "one multicore point per protocol");
    assert!(
        json["references"]["harness_efficiency"]["MsgPack:1"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8);
}

/// A closed stdout ends `loadgen` normally (exit 0, no panic message), even on a path that
/// prints with `println!` (the shared edge of `mock_kong::edge`). Regression: exit 101 and a
/// "failed printing to stdout" panic.
#[test]
fn a_closed_stdout_is_a_normal_exit() {
    let mut child = std::process::Command::new(exe())
        .args(["floor", "--duration", "200ms", "--warmup", "0s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    // Closed long before the measurement ends and the result line is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for loadgen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Whether the rust peer (kong_rs, `scripts/install-peers.sh`) is installed and can run here;
/// panics when the peers are required (`MOCK_KONG_REQUIRE_PEERS`, as `scripts/test.sh` sets).
fn rust_peer_ready(root: &std::path::Path) -> bool {
    let probe = std::process::Command::new(root.join("plugins/rust/kong-rs-ns"))
        .arg("--probe")
        .output();
    let problem = match probe {
        _ if !root.join(".peers/rust/bin/bench").exists() => "not installed".to_owned(),
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os("MOCK_KONG_REQUIRE_PEERS").is_none(),
        "the rust peer is required but {problem}; run scripts/install-peers.sh"
    );
    eprintln!("\n*** SKIPPING the rust peer: {problem} (scripts/install-peers.sh) ***\n");
    false
}

/// A server whose events never complete (kong_rs: no end-of-event frame) still gets every
/// point of a sweep: each reported in `failures` with its error, in results.json and under
/// "Points that could not be measured" in summary.md, beside the points of the other servers;
/// the sweep exits 1.
#[test]
fn a_sweep_reports_every_point_of_the_rust_peer_with_its_error() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if !rust_peer_ready(&root) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let status = std::process::Command::new(exe())
        .current_dir(&root)
        .args([
            "sweep",
            "--peer",
            "rust",
            "--reference",
            "--protocol",
            "protobuf",
        ])
        .args(["--calls", "0,2", "--concurrency", "1", "--timeout", "1"])
        .args(["--duration", "300ms", "--warmup", "100ms", "--trials", "1"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    schema::validate_results(&json).unwrap();
    let points = json["points"].as_array().unwrap();
    assert!(points.len() >= 2, "{points:?}");
    assert!(
        points.iter().all(|p| p["peer"] != "rust"),
        "only the reference server is measured: {points:?}"
    );
    // Every point the reference server got (0 and 2 calls, the multicore variant) is a failure
    // record of the rust peer.
    let failures = json["failures"].as_array().unwrap();
    let key = |v: &serde_json::Value| (v["calls"].as_u64(), v["concurrency"].as_u64());
    let mut measured: Vec<_> = points.iter().map(key).collect();
    let mut failed: Vec<_> = failures.iter().map(key).collect();
    measured.sort_unstable();
    failed.sort_unstable();
    assert_eq!(failed, measured, "{failures:?}");
    for f in failures {
        assert_eq!(f["peer"], "rust");
        let e = f["error"].as_str().unwrap();
        // The event driver diagnoses the RpcReturn sent in place of the end frame at once.
        assert!(
            e.contains("the RpcReturn (sequence 3) came without the empty end frame"),
            "{e}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let section = summary
        .split("## Points that could not be measured")
        .nth(1)
        .expect("the section of failed points");
    assert_eq!(
        section.matches("* rust calls=Some(").count(),
        failures.len(),
        "{section}"
    );
    assert!(out.join("rps.png").exists());
}
