//! `loadgen ab` and the machine-independent counters end to end, through the binary as users
//! run it: the counter faults of the reference server (`split-writes`, `extra-callback`) are
//! regressions of their counters whatever the timing; `very-slow-pdk` (+200 µs of CPU per PDK
//! call) is a timing regression at 10 calls; bad sides and too few pairs cannot be judged (2).
//! Also: a sweep records counters equal to what the protocol says one request costs.

use std::process::Command;

use loadgen::results::Results;

use super::exe;

fn loadgen(args: &[&str]) -> (i32, String) {
    let out = Command::new(exe())
        .args(args)
        .env_remove("GITHUB_ACTIONS")
        .output()
        .expect("run loadgen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A quick A/B (6 pairs of 150 ms, one fork): enough for the counters, which need no statistics.
fn quick_ab(baseline: &str, current: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "ab",
        baseline,
        current,
        "--calls",
        "0,3",
        "--pairs",
        "6",
        "--forks",
        "1",
        "--duration",
        "150ms",
        "--warmup",
        "30ms",
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// Through the binary: the counters are process-wide, so a sweep in this (parallel) test
/// process would count the other tests' requests too.
#[test]
fn a_sweep_records_the_counters_one_request_costs() {
    let _machine = super::MACHINE.blocking_read();
    let (code, out) = loadgen(&[
        "sweep",
        "--reference",
        "--protocol",
        "msgpack,protobuf",
        "--calls",
        "0,4",
        "--concurrency",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--trials",
        "2",
        "--multicore",
        "0",
        "--no-floor",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    // stdout's JSON document, then stderr's progress lines (one per point: no terminal here).
    let json = &out[out.find('{').expect("JSON")..];
    let r: Results = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()
        .expect("a JSON document")
        .expect("results");
    assert!(
        out.contains("c=1 calls=4: "),
        "a progress line per point: {out}"
    );
    assert_eq!(r.points.len(), 4);
    for pt in &r.points {
        let c = pt
            .counters
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no counters", pt.series_key()));
        let what = format!("{} calls={}: {c:?}", pt.protocol, pt.calls);
        let rt = f64::from(pt.calls + 1);
        assert_eq!(c.pdk_calls_per_request, f64::from(pt.calls), "{what}");
        // One message per round trip (HandleEvent or RpcCall, then one answer per callback),
        // within the window edges' error.
        assert!((c.round_trips_per_request - rt).abs() < 0.05 * rt, "{what}");
        assert!(
            c.bytes_out_per_request > 0.0 && c.bytes_in_per_request > 0.0,
            "{what}"
        );
        assert!(
            c.harness_allocs_per_request.is_some_and(|a| a > 0.0),
            "{what}"
        );
        if c.syscalls_source == "tracepoints" {
            // The reference server writes each frame in one system call, and so does the
            // harness.
            for w in [c.server_writes_per_request, c.harness_writes_per_request] {
                let w = w.expect("writes");
                assert!((w - rt).abs() < 0.05 * rt, "{what}");
            }
        } else {
            assert!(r.syscall_counting.is_some(), "why not exact: {what}");
        }
    }
}

#[test]
fn split_writes_are_a_counter_regression_in_both_protocols() {
    let _machine = super::MACHINE.blocking_read();
    for proto in ["msgpack", "protobuf"] {
        let base = format!("reference:{proto}");
        let (code, out) = quick_ab(&base, &format!("{base}+split-writes"), &[]);
        if out.contains("not counted exactly") {
            eprintln!("skipped: system calls cannot be counted here: {out}");
            return;
        }
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("write system calls of the server per request")
                && out.contains("one write per frame is the norm"),
            "{out}"
        );
        // Same bytes, same round trips: only the writes grew.
        assert!(!out.contains("IPC round trips per request"), "{out}");
    }
}

#[test]
fn an_extra_callback_is_a_counter_regression_at_every_call_count() {
    let _machine = super::MACHINE.blocking_read();
    let (code, out) = quick_ab("reference", "reference+extra-callback", &[]);
    assert_eq!(code, 1, "{out}");
    for calls in ["calls=0", "calls=3"] {
        let at = out
            .lines()
            .skip_while(|l| !(l.starts_with("**") && l.contains(calls)))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(at.contains("PDK callbacks per request"), "{calls}: {out}");
    }
    assert!(out.contains("warning: the bench plugin made 1 PDK call(s) where 0 were configured"));
}

#[test]
fn a_a_counters_agree_and_the_reports_are_written() {
    let _machine = super::MACHINE.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("ab.md");
    let junit = dir.path().join("ab.xml");
    let md_arg = md.to_string_lossy().into_owned();
    let junit_arg = junit.to_string_lossy().into_owned();
    let (code, out) = quick_ab(
        "reference",
        "reference",
        &["--markdown", &md_arg, "--junit", &junit_arg],
    );
    // The counters of the same server agree, always. (The time verdict of an A/A comparison
    // with 6 short pairs is not what this test is about: on a loaded machine a window may even
    // complete nothing, leaving too few pairs to judge.)
    assert!((0..=2).contains(&code), "{out}");
    assert!(
        out.contains("counters beyond tolerance at 0 point(s)"),
        "{out}"
    );
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.starts_with("## loadgen ab: "), "{md}");
    assert!(
        md.contains("### Counters per request") && !md.contains("**❌**"),
        "{md}"
    );
    let x = std::fs::read_to_string(junit).unwrap();
    assert!(
        x.contains("counters\"") && !x.contains("type=\"counters\""),
        "{x}"
    );
}

#[test]
#[ignore = "statistical tier (timings compared): scripts/test.sh runs it serially"]
fn a_much_slower_pdk_is_a_time_regression_at_10_calls() {
    let _machine = super::MACHINE.blocking_write();
    let (code, out) = loadgen(&[
        "ab",
        "reference",
        "reference+very-slow-pdk",
        "--calls",
        "10",
        "--pairs",
        "10",
        "--duration",
        "300ms",
        "--warmup",
        "50ms",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("**regression** ❌"), "{out}");
    assert!(
        out.contains("slower with the same work per request"),
        "the explanation says no counter changed: {out}"
    );
}

#[test]
fn sides_that_cannot_be_judged_exit_2() {
    let _machine = super::MACHINE.blocking_read();
    let (code, out) = loadgen(&["ab", "reference", "reference:grpc"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown protocol \"grpc\""), "{out}");
    let (code, out) = loadgen(&["ab", "reference", "reference", "--pairs", "5"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("needs at least 6 units"), "{out}");
    let (code, out) = loadgen(&["ab", "reference", "reference", "--forks", "4"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--forks 6 or more"), "{out}");
    let (code, out) = loadgen(&["ab", "reference"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no current side"), "{out}");
    let (code, out) = loadgen(&["ab", "reference", "reference+no-such-fault", "--pairs", "6"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("cannot be started") && out.contains("no-such-fault"),
        "{out}"
    );
}

/// A plugin of the user's own, in two builds, through `--baseline-start-cmd` and
/// `--current-start-cmd` as a newcomer would write them: a Python bench plugin written here
/// (not one of plugins/), whose second version makes one PDK call more per request. The
/// counters catch it; `{prefix}` and `{socket}` tell the kit where to listen.
#[test]
fn two_builds_of_your_own_python_server_through_start_commands() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".peers/python/venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("MOCK_KONG_REQUIRE_PEERS").is_none(),
            "the Python kit is required (MOCK_KONG_REQUIRE_PEERS) but {} is missing; run scripts/install-peers.sh",
            python.display()
        );
        eprintln!("*** SKIPPING: the Python kit is not installed (scripts/install-peers.sh)");
        return;
    }
    let _machine = super::MACHINE.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let plugin = |extra: &str| {
        format!(
            r#"
Schema = [{{"calls": {{"type": "integer", "default": 0}}}}]
version = "1.0.0"
priority = 10

class Plugin(object):
    def __init__(self, config):
        self.calls = int(config.get("calls") or 0)

    def access(self, kong):
        {extra}
        for _ in range(max(self.calls - 1, 0)):
            kong.request.get_header("x-bench")
        if self.calls > 0:
            kong.response.set_header("x-bench-calls", str(self.calls))

if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server
    start_dedicated_server("bench", Plugin, version, priority, Schema)
"#
        )
    };
    let v1 = dir.path().join("v1");
    let v2 = dir.path().join("v2");
    for (d, extra) in [(&v1, "pass"), (&v2, "kong.request.get_method()")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("bench.py"), plugin(extra)).unwrap();
    }
    let cmd = |d: &std::path::Path, tail: &str| {
        format!("{} {}/bench.py {tail}", python.display(), d.display())
    };
    let start1 = cmd(&v1, "-p {prefix} --socket-name {socket}");
    let query1 = cmd(&v1, "--dump");
    let start2 = cmd(&v2, "-p {prefix} --socket-name {socket}");
    let query2 = cmd(&v2, "--dump");
    let (code, out) = loadgen(&[
        "ab",
        "--baseline-start-cmd",
        &start1,
        "--baseline-query-cmd",
        &query1,
        "--current-start-cmd",
        &start2,
        "--current-query-cmd",
        &query2,
        "--calls",
        "2",
        "--pairs",
        "6",
        "--forks",
        "1",
        "--duration",
        "200ms",
        "--warmup",
        "50ms",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PDK callbacks per request 2.00 → 3.00"),
        "the extra call is named: {out}"
    );
    assert!(out.contains("current vs baseline"), "{out}");
    assert!(
        out.contains("the bench plugin made 3 PDK call(s) where 2 were configured"),
        "{out}"
    );
}
