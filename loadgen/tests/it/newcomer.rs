//! Issue 13: `loadgen run` on a plugin of one's own (`stamp`, written by the tests in Python and
//! JavaScript, tests/it/stamp_plugin.rs of mock-kong) with nothing but its start and query
//! commands; and an interrupted sweep that keeps what it measured.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::child_guard::ChildGuard;
use crate::stamp_plugin;
use crate::{exe, MACHINE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Whether a kit is installed (scripts/install-peers.sh); panics when the peers are required
/// (`MOCK_KONG_REQUIRE_PEERS`, as scripts/test.sh sets).
fn kit_installed(kit: &str) -> bool {
    let program = stamp_plugin::kit_program(&root(), kit);
    if program.exists() {
        return true;
    }
    assert!(
        std::env::var_os("MOCK_KONG_REQUIRE_PEERS").is_none(),
        "the {kit} kit is required but {} is missing; run scripts/install-peers.sh",
        program.display()
    );
    eprintln!("\n*** SKIPPING the {kit} kit: not installed (scripts/install-peers.sh) ***\n");
    false
}

/// The plugin its dump serves is measured (no --plugin), through both its phases with the
/// request given, its 5 PDK calls per request counted from its transcript, no errors.
#[test]
fn a_plugin_of_your_own_is_measured_with_only_its_commands() {
    let _machine = MACHINE.blocking_read();
    for kit in ["python", "js"] {
        if !kit_installed(kit) {
            continue;
        }
        let p = stamp_plugin::write(&root(), kit);
        let out = Command::new(exe())
            .args([
                "run",
                "--start-cmd",
                &p.start_cmd,
                "--query-cmd",
                &p.query_cmd,
            ])
            .args(["--http-method", "POST", "--path", "/orders"])
            .args([
                "--duration",
                "300ms",
                "--warmup",
                "100ms",
                "--trials",
                "1",
                "--json",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{kit}: {err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{kit}: stdout is JSON ({e}); stderr: {err}"));
        assert_eq!(v["settings"]["plugin"], "stamp", "{kit}");
        let [point] = v["points"].as_array().unwrap().as_slice() else {
            panic!("{kit}: one point: {v}")
        };
        assert_eq!(point["peer"], "stamp", "{kit}");
        assert_eq!(
            point["calls"], 5,
            "{kit}: PDK calls per request from the transcript"
        );
        assert_eq!(point["errors"], 0, "{kit}: {point}");
        assert!(point["rps"].as_f64().unwrap() > 0.0, "{kit}: {point}");
        assert!(
            v["failures"].as_array().map_or(true, |f| f.is_empty()),
            "{kit}: {v}"
        );
    }
}

/// SIGTERM in the middle of a sweep: exit 143, and --out holds every point finished before
/// the signal, marked interrupted. Regression (issue 13, item 11): `error: interrupted (Ok(2))`,
/// exit 130, and an empty --out.
#[test]
fn an_interrupted_sweep_writes_what_it_measured() {
    let _machine = MACHINE.blocking_read();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let mut child = ChildGuard::new(
        Command::new(exe())
            .args(["sweep", "--reference", "--calls", "0,1,2,3,5,8,10,15,20,30"])
            .args([
                "--concurrency",
                "1",
                "--duration",
                "300ms",
                "--warmup",
                "0s",
            ])
            .args(["--trials", "1", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Without a terminal each finished point is a line on stderr: wait for the first one.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("req/s"))
        .expect("a first point");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "after {first:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("interrupted by SIGTERM")),
        "{rest:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    crate::schema::validate_results(&json).unwrap();
    assert_eq!(json["interrupted"], true);
    let points = json["points"].as_array().unwrap().len();
    assert!((1..10).contains(&points), "{points} points");
    assert!(out.join("summary.md").exists() && out.join("results.csv").exists());
}
