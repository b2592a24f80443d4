//! `mock-kong run` and the scenario API: the shipped scenarios (docs/protocol.md §8 items 9, 11, 12 and one
//! per PDK module) against the reference server in both protocols and against each installed
//! peer; a failing scenario's diff; the JSON and JUnit reports.

use std::process::Command;

use mock_kong::scenario::{Outcome, RunOptions, Scenario};
use mock_kong::Protocol;

use crate::util;

struct Run {
    code: i32,
    stdout: String,
    json: serde_json::Value,
    junit: String,
}

/// Runs `mock-kong run` from the repository root with JSON and JUnit reports.
fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let json_path = dir.path().join("report.json");
    let junit_path = dir.path().join("report.xml");
    let out = Command::new(util::exe())
        .current_dir(util::root())
        .arg("run")
        .args(args)
        .args(["--quiet-server", "--json"])
        .arg(&json_path)
        .arg("--junit")
        .arg(&junit_path)
        .output()
        .expect("run mock-kong");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON report; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let junit = std::fs::read_to_string(&junit_path).expect("JUnit report written");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        json,
        junit,
    }
}

/// The JSON report's counts agree with its scenarios and with the human summary's last line;
/// the JUnit XML has one testcase per scenario, the same failure and skip counts, and balanced
/// elements.
fn check_reports(r: &Run) -> (u64, u64, u64) {
    let scenarios = r.json["scenarios"].as_array().expect("scenarios array");
    let count = |o: &str| scenarios.iter().filter(|s| s["outcome"] == o).count() as u64;
    let passed = r.json["passed"].as_u64().expect("passed");
    let failed = r.json["failed"].as_u64().expect("failed");
    let skipped = r.json["skipped"].as_u64().expect("skipped");
    assert_eq!(passed, count("passed"));
    assert_eq!(failed, count("failed") + count("error"));
    assert_eq!(skipped, count("skipped"));
    for s in scenarios {
        for key in [
            "name",
            "plugin",
            "server",
            "protocol",
            "kong_version",
            "outcome",
            "mismatches",
        ] {
            assert!(s.get(key).is_some(), "scenario result without {key}: {s}");
        }
    }
    let last = r.stdout.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("{passed} passed, {failed} failed"),
        "{}",
        r.stdout
    );

    let x = &r.junit;
    assert!(
        x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
        "{x}"
    );
    assert!(x.trim_end().ends_with("</testsuites>"), "{x}");
    assert_eq!(
        x.matches("<testcase ").count() as u64,
        passed + failed + skipped,
        "{x}"
    );
    assert_eq!(
        x.matches("<testsuite ").count(),
        x.matches("</testsuite>").count()
    );
    assert_eq!(x.matches("<skipped ").count() as u64, skipped);
    assert_eq!(
        (x.matches("<failure ").count() + x.matches("<error ").count()) as u64,
        failed
    );
    assert!(
        x.contains(&format!("failures=\"{failed}\" skipped=\"{skipped}\"")),
        "{x}"
    );
    // Attribute values never carry raw markup characters.
    for line in x.lines().filter(|l| l.contains("<testcase ")) {
        let inner = line.trim().trim_start_matches("<testcase ");
        assert!(!inner.contains('<'), "unescaped markup in {line}");
    }
    (passed, failed, skipped)
}

/// Spec §8 items 9, 11, 12 and the per-module scenarios pass on the reference server, in both
/// protocols.
#[test]
fn shipped_scenarios_pass_on_the_reference_server() {
    for (flag, protocol) in [("msgpack", "MsgPack:1"), ("protobuf", "ProtoBuf:1")] {
        let r = run(&["--protocol", flag, "scenarios/"]);
        assert_eq!(r.code, 0, "{}", r.stdout);
        let (passed, failed, _) = check_reports(&r);
        assert_eq!(failed, 0, "{}", r.stdout);
        assert!(
            passed >= 20,
            "{protocol}: only {passed} passed:\n{}",
            r.stdout
        );
        for s in r.json["scenarios"].as_array().unwrap() {
            if s["outcome"] == "passed" {
                assert_eq!(s["protocol"], protocol);
            }
        }
        for must in [
            "hello: header built from config and the Host header",
            "multiphase: response phase reads the upstream Server header",
            "multiphase: log phase reads ctx.shared, headers and serialize",
        ] {
            assert!(
                r.stdout.contains(&format!("PASS  {must} ")),
                "{must}:\n{}",
                r.stdout
            );
        }
    }
}

/// The same files against the official Go, Python and JS servers: the portable scenarios pass, the
/// reference-only ones are skipped.
#[test]
fn shipped_scenarios_pass_on_the_real_peers() {
    for peer in ["go", "python", "js"] {
        if !util::peer_installed(peer) {
            continue;
        }
        let r = run(&["--peer", peer, "scenarios/"]);
        assert_eq!(r.code, 0, "{peer}:\n{}", r.stdout);
        let (passed, failed, skipped) = check_reports(&r);
        assert_eq!(failed, 0, "{peer}:\n{}", r.stdout);
        assert!(passed >= 8 && skipped > 0, "{peer}:\n{}", r.stdout);
        assert!(
            r.stdout
                .contains("PASS  multiphase: log phase reads ctx.shared, headers and serialize "),
            "{peer}:\n{}",
            r.stdout
        );
    }
}

/// The same files against kong_rs: `exit` passes, every scenario whose event must end normally
/// fails as listed in scenarios/expected/rust.txt (the event never ends as Kong expects),
/// `multiphase` is skipped (peers.toml: kong_rs has only the access phase), and so are the
/// reference-only scenarios.
#[test]
fn shipped_scenarios_on_the_rust_peer_fail_as_listed() {
    if !util::peer_installed("rust") {
        return;
    }
    let r = run(&["--peer", "rust", "--timeout", "2", "scenarios/"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    check_reports(&r);
    let list = std::fs::read_to_string(util::root().join("scenarios/expected/rust.txt"))
        .expect("scenarios/expected/rust.txt");
    let mut expected: Vec<&str> = list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    expected.sort_unstable();
    let scenarios = r.json["scenarios"].as_array().unwrap();
    let with = |outcomes: &[&str]| {
        let mut v: Vec<&str> = scenarios
            .iter()
            .filter(|s| outcomes.iter().any(|o| s["outcome"] == *o))
            .map(|s| s["file"].as_str().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(with(&["failed", "error"]), expected, "{}", r.stdout);
    assert_eq!(
        with(&["passed"]),
        ["scenarios/kong-tests/exit.toml"],
        "{}",
        r.stdout
    );
    let kong_tests = |s: &&serde_json::Value| {
        s["file"]
            .as_str()
            .is_some_and(|f| f.starts_with("scenarios/kong-tests/multiphase"))
    };
    let multiphase: Vec<_> = scenarios.iter().filter(kong_tests).collect();
    assert_eq!(multiphase.len(), 2, "{}", r.stdout);
    for s in multiphase {
        assert_eq!(s["outcome"], "skipped", "{s}");
        assert!(
            s["reason"]
                .as_str()
                .unwrap_or("")
                .contains("peer `rust` does not host plugin `multiphase`"),
            "{s}"
        );
    }
    for s in scenarios.iter().filter(|s| s["outcome"] == "failed") {
        let text = s.to_string();
        assert!(
            text.contains("came without the empty end frame Kong waits for"),
            "not the known cause: {text}"
        );
    }
}

const WRONG_HEADER: &str = r#"
name = "hello with a wrong expectation"
plugin = "hello"
config = { message = "Kong!" }
[request]
host = "example.com"
[expect.headers]
x-hello = "Kong! example.org"
"#;

/// A scenario expecting the wrong header value fails with a readable diff and the transcript,
/// through the library API (as a Rust user writes it in `cargo test`).
#[tokio::test(flavor = "current_thread")]
async fn wrong_header_fails_with_a_readable_diff() {
    for protocol in util::BOTH {
        let session = util::reference(protocol, "hello", &util::opts()).await;
        let scenario = Scenario::from_toml_str(WRONG_HEADER).expect("valid scenario");
        let result = scenario.run(&session, &RunOptions::default()).await;
        assert_eq!(result.outcome, Outcome::Failed, "{protocol}");
        let text = result.explain();
        assert!(
            text.contains(
                "  response header x-hello\n    expected: \"Kong! example.org\"\n    actual:   \"Kong! example.com\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("  PDK transcript:\n"), "{text}");
        assert!(
            text.contains("access   kong.request.get_header(\"host\") -> \"example.com\""),
            "{text}"
        );
        assert!(
            text.contains("kong.response.set_header(\"x-hello\", \"Kong! example.com\")"),
            "{text}"
        );

        // The fixed expectation passes on the same session.
        let fixed = Scenario::from_toml_str(&WRONG_HEADER.replace("example.org", "example.com"))
            .expect("valid scenario");
        let ok = fixed.run(&session, &RunOptions::default()).await;
        assert!(ok.passed(), "{protocol}: {}", ok.explain());
        session.close().await;
    }
}

/// The CLI: exit code 1, the summary line, and the failure in both reports.
#[test]
fn failing_scenario_exits_1_and_reports_the_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, WRONG_HEADER).unwrap();
    let r = run(&[file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(check_reports(&r), (0, 1, 0));
    assert!(
        r.stdout.starts_with(
            "FAIL  hello with a wrong expectation [hello; reference (MsgPack:1); Kong 3.9]"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("expected: \"Kong! example.org\""),
        "{}",
        r.stdout
    );
    let m = &r.json["scenarios"][0]["mismatches"][0];
    assert_eq!(m["what"], "response header x-hello");
    assert_eq!(m["expected"], "\"Kong! example.org\"");
    assert_eq!(m["actual"], "\"Kong! example.com\"");
    assert!(r.junit.contains(
        "<failure message=\"response header x-hello: expected &quot;Kong! example.org&quot;, got &quot;Kong! example.com&quot;\">"
    ), "{}", r.junit);
}

/// Setup errors (a bad scenario file) exit 2 and name the problem; regression (issue 13): one
/// bad file stopped the whole run, now it is reported and the others still run.
#[test]
fn bad_scenario_file_is_a_usage_error_and_the_others_still_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "plugin = \"hello\"\n[expect]\nstatuss = 200\n").unwrap();
    std::fs::write(
        dir.path().join("good.toml"),
        "plugin = \"hello\"\n[expect.headers]\nx-hello = \"hello example.com\"\n",
    )
    .unwrap();
    let out = Command::new(util::exe())
        .args(["run", "--quiet-server"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("INVALID bad"), "{said}");
    assert!(said.contains("unknown field `statuss`"), "{said}");
    assert!(said.contains("PASS  good"), "{said}");
    assert!(said.ends_with("1 passed, 1 failed\n"), "{said}");
    // A path that does not exist is a usage error before anything runs.
    let out = Command::new(util::exe())
        .args(["run", "--quiet-server"])
        .arg(dir.path().join("nowhere.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere.toml"), "{err}");
}

/// Kong 3.9 registers only the first plugin of a dump; `--kong-version 3.8` uses any entry
/// (docs/protocol.md §2, §9). The reference server lists the requested plugin first, so a scenario for
/// another plugin on the same session shows the difference.
#[tokio::test(flavor = "current_thread")]
async fn kong_version_switches_multi_plugin_dumps() {
    let session = util::reference(Protocol::MsgPack, "hello", &util::opts()).await;
    let s = Scenario::from_toml_str(
        "plugin = \"exit\"\nconfig = { status = 403 }\n[expect]\nstatus = 403\n",
    )
    .unwrap();
    let r39 = s.run(&session, &RunOptions::default()).await;
    assert_eq!(r39.outcome, Outcome::Error);
    assert!(
        r39.reason
            .as_deref()
            .unwrap_or("")
            .contains("registers only the first plugin"),
        "{:?}",
        r39.reason
    );
    let opts = RunOptions {
        kong_version: "3.8".parse().unwrap(),
        ..RunOptions::default()
    };
    let r38 = s.run(&session, &opts).await;
    assert!(r38.passed(), "{}", r38.explain());
    session.close().await;
}
