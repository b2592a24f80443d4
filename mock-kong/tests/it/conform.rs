//! The conformance suite (`mock-kong conform`).
//!
//! * Proof: every check passes against the correct reference server (in each protocol it
//!   applies to) and fails against the reference server with each fault it names in
//!   `proven_by`. A check without such a proof does not exist (`catalogue` unit tests assert
//!   every check names a fault).
//! * The fast tier against each real peer matches its committed expected-failures file
//!   (`conformance/expected/<peer>.txt`), so CI notices both new failures and fixed ones.
//! * The CLI: `--list`, exit codes, JSON and JUnit output, `--expect-failures`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mock_kong::conform::report::Expectations;
use mock_kong::conform::{
    catalogue, join_all, run, Applies, CheckResult, RunOptions, Server, Status, TierSel,
};
use mock_kong::target::{Placement, TargetSpec};
use mock_kong::Protocol;

use crate::util;

/// The reference server with these `--fault` (or `--variation`) switches.
fn reference(protocol: Protocol, faults: &[&str]) -> Server {
    Server {
        spec: TargetSpec::Reference {
            protocol,
            exe: Some(util::exe()),
            faults: faults.iter().map(|f| f.to_string()).collect(),
        },
        placement: Placement::default(),
    }
}

/// Short timeouts and small slow-tier sizes that still separate pass from fail.
fn proof_opts(only: Vec<String>) -> RunOptions {
    RunOptions {
        tier: TierSel::All,
        only,
        io_timeout: Duration::from_millis(1500),
        idle: Duration::from_secs(3),
        idle_connection: Duration::from_secs(2),
        resource_events: 600,
        grace: Duration::from_secs(1),
        ..RunOptions::default()
    }
}

fn protocols(a: Applies) -> Vec<Protocol> {
    match a {
        Applies::Both => vec![Protocol::MsgPack, Protocol::ProtoBuf],
        Applies::MsgPack => vec![Protocol::MsgPack],
        Applies::ProtoBuf => vec![Protocol::ProtoBuf],
    }
}

async fn results(server: &Server, opts: &RunOptions) -> Vec<CheckResult> {
    run(server, opts, &mut |_| {})
        .await
        .expect("the reference target resolves")
        .results
}

/// Every check passes on the correct reference server, in both protocols (skipped only where
/// the protocol does not apply).
#[tokio::test(flavor = "current_thread")]
async fn every_check_passes_on_the_reference_server() {
    for protocol in util::BOTH {
        let rs = results(&reference(protocol, &[]), &proof_opts(Vec::new())).await;
        assert_eq!(rs.len(), catalogue().len());
        for (r, c) in rs.iter().zip(catalogue()) {
            let applies = protocols(c.applies).contains(&protocol);
            let want = if applies { Status::Pass } else { Status::Skip };
            assert_eq!(r.status, want, "{protocol} {}: {}", r.id, r.detail);
        }
    }
}

/// No false alarms (issue 17): the whole suite passes on the reference server with each legal
/// variation switched on (behaviours Kong accepts but the kits never show), in every protocol
/// the variation changes anything in. Info-level notes are allowed, and the variations whose
/// shapes the drivers note must be noted.
#[tokio::test(flavor = "current_thread")]
async fn the_suite_passes_on_every_legal_variation() {
    use mock_kong::reference::Variation;
    let mut runs = Vec::new();
    for v in Variation::ALL {
        for p in util::BOTH {
            if v.applies(p) {
                runs.push((v, p));
            }
        }
    }
    // Nothing here should wait for a timeout, so a generous one costs nothing and keeps a busy
    // machine (the other tests run beside this one) from failing a check.
    let opts = RunOptions {
        io_timeout: Duration::from_secs(5),
        ..proof_opts(Vec::new())
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(3));
    let futs: Vec<_> = runs
        .iter()
        .map(|&(v, p)| {
            let (gate, opts) = (gate.clone(), opts.clone());
            async move {
                let _permit = gate.acquire().await.expect("semaphore");
                let rs = results(&reference(p, &[v.name()]), &opts).await;
                (v, p, rs)
            }
        })
        .collect();
    let mut wrong = Vec::new();
    for (v, p, rs) in join_all(futs).await {
        assert_eq!(rs.len(), catalogue().len());
        for r in &rs {
            if r.status == Status::Fail && r.level != mock_kong::conform::Level::Info {
                wrong.push(format!("{v} ({p}): {} failed: {}", r.id, r.detail));
            }
        }
        let notes: Vec<&String> = rs.iter().flat_map(|r| &r.notes).collect();
        let noted = match v {
            Variation::NoStepEventId => Some("a Step answer has no EventId"),
            Variation::ScalarArgs => Some("Args is not an array"),
            Variation::ExtraNotifications => Some("a notification other than serverPid"),
            Variation::BinStrings => Some("bin where the kits send str"),
            Variation::StartIdOnly | Variation::UnknownFields | Variation::WideNumbers => None,
        };
        if let Some(text) = noted {
            if !notes.iter().any(|n| n.contains(text)) {
                wrong.push(format!("{v} ({p}): no info note {text:?} in {notes:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!(
        "legal variations: {} runs of the whole suite, 0 failures",
        runs.len()
    );
}

/// Every check fails against the reference server with each of its proving faults, in every
/// protocol it applies to.
#[tokio::test(flavor = "current_thread")]
async fn every_check_fails_with_each_of_its_faults() {
    let mut cases = Vec::new();
    for c in catalogue() {
        for f in c.proven_by {
            for p in protocols(c.applies) {
                cases.push((c.id, f.name(), p));
            }
        }
    }
    // A few at a time: most of these runs wait for a timeout.
    let gate = Arc::new(tokio::sync::Semaphore::new(6));
    let futs: Vec<_> = cases
        .iter()
        .map(|&(id, fault, p)| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await.expect("semaphore");
                let mut opts = proof_opts(vec![id.to_owned()]);
                if id.starts_with("resources/") {
                    // A leak is judged as a slope over the design's 20 000 events: a leak of
                    // one small entry per event is allocator noise over fewer.
                    opts.resource_events = 20_000;
                }
                let rs = results(&reference(p, &[fault]), &opts).await;
                let r = rs.into_iter().find(|r| r.id == id).expect("the check ran");
                (id, fault, p, r)
            }
        })
        .collect();
    let mut wrong = Vec::new();
    for (id, fault, p, r) in join_all(futs).await {
        if r.status != Status::Fail {
            wrong.push(format!(
                "{id} with --fault {fault} ({p}): {:?}: {}",
                r.status, r.detail
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "checks not failing with their fault:\n{}",
        wrong.join("\n")
    );
    assert!(cases.len() >= catalogue().len());
}

/// Regression (issue 14): against a server whose every event hangs (ProtoBuf: the RpcReturn
/// without the empty end frame before it, as kong_rs 0.2.0 sends it), 8 checks failed with 8
/// different causes. Now the first failure names the missing end frame and every check that
/// needs an event is reported as blocked by it, in every report format.
#[tokio::test(flavor = "current_thread")]
async fn a_server_whose_every_event_hangs_fails_once_and_blocks_the_rest() {
    for protocol in util::BOTH {
        let opts = RunOptions {
            io_timeout: Duration::from_millis(1500),
            ..RunOptions::default()
        };
        let report = run(&reference(protocol, &["no-end-frame"]), &opts, &mut |_| {})
            .await
            .expect("the reference target resolves");
        let failed: Vec<&CheckResult> = report
            .results
            .iter()
            .filter(|r| r.status == Status::Fail)
            .collect();
        assert_eq!(
            failed.iter().map(|r| r.id).collect::<Vec<_>>(),
            ["lifecycle/first-event"],
            "{protocol}: {}",
            report.human()
        );
        if protocol == Protocol::ProtoBuf {
            assert!(
                failed[0]
                    .detail
                    .contains("without the empty end frame Kong waits for"),
                "{}",
                failed[0].detail
            );
        }
        let blocked: Vec<&CheckResult> = report
            .results
            .iter()
            .filter(|r| r.status == Status::Blocked)
            .collect();
        assert!(blocked.len() >= 25, "{protocol}: {}", report.human());
        assert!(blocked
            .iter()
            .all(|r| r.blocked_by == Some("lifecycle/first-event")));
        let json = report.to_json(false);
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["summary"]["blocked"], blocked.len());
        let junit = report.junit();
        assert_eq!(
            junit.matches("blocked by lifecycle/first-event").count(),
            blocked.len()
        );
        assert!(report.human().contains("BLOCK"));
        assert!(
            report.markdown().contains("| blocked |"),
            "{}",
            report.markdown()
        );
    }
}

/// Regression (issue 14): the slow tier alone did not run the fast checks it builds on, so
/// against a server whose every event hangs each slow check failed again for that one reason.
/// It now runs them first and reports every slow check blocked by `lifecycle/first-event`.
#[tokio::test(flavor = "current_thread")]
async fn the_slow_tier_alone_reports_its_checks_blocked_by_the_fast_failure() {
    let opts = RunOptions {
        tier: TierSel::Slow,
        io_timeout: Duration::from_millis(1500),
        ..RunOptions::default()
    };
    let report = run(
        &reference(Protocol::ProtoBuf, &["no-end-frame"]),
        &opts,
        &mut |_| {},
    )
    .await
    .expect("the reference target resolves");
    let status = |id: &str| report.results.iter().find(|r| r.id == id).map(|r| r.status);
    assert_eq!(
        status("lifecycle/first-event"),
        Some(Status::Fail),
        "{}",
        report.human()
    );
    let slow: Vec<&CheckResult> = report
        .results
        .iter()
        .filter(|r| {
            r.id.starts_with("resources/")
                || r.id.ends_with("-idle")
                || r.id == "lifecycle/idle-instances"
        })
        .collect();
    assert!(slow.len() >= 6, "{}", report.human());
    for r in slow {
        assert_eq!(r.status, Status::Blocked, "{}: {}", r.id, report.human());
        assert_eq!(r.blocked_by, Some("lifecycle/first-event"), "{}", r.id);
    }
}

/// Runs the fast tier against `peer` and checks it against its committed expected-failures
/// file. How long the tier takes is the peer matrix's and the benchmarks' business, not a test's.
async fn check_expected_failures(peer: &str) {
    let server = Server {
        spec: TargetSpec::Peer {
            name: peer.into(),
            registry: util::root().join("peers.toml"),
        },
        placement: Placement::default(),
    };
    let opts = RunOptions::default();
    let mut report = run(&server, &opts, &mut |_| {})
        .await
        .expect("resolve peer");
    let path = util::root().join(format!("conformance/expected/{peer}.txt"));
    let exp = Expectations::load(&path).expect("expectations file");
    report.apply(&exp, &path.to_string_lossy(), &|c| opts.selects(c));
    assert!(
        report.ok(false),
        "{peer}: results differ from {}:\n{}",
        path.display(),
        report.human()
    );
}

/// The fast tier against each official peer gives exactly the failures in its committed file.
#[tokio::test(flavor = "current_thread")]
async fn real_peers_match_their_expected_failures() {
    for peer in ["go", "python", "js"] {
        if !util::peer_installed(peer) {
            continue;
        }
        check_expected_failures(peer).await;
    }
}

/// The same for kong_rs (its own test, so it runs beside the others: nearly every check waits
/// out its 3 s timeout, as an event never ends as Kong expects; see
/// conformance/expected/rust.txt).
#[tokio::test(flavor = "current_thread")]
async fn rust_peer_matches_its_expected_failures() {
    if util::peer_installed("rust") {
        check_expected_failures("rust").await;
    }
}

fn conform(args: &[&str]) -> std::process::Output {
    Command::new(util::exe())
        .arg("conform")
        .args(args)
        .output()
        .expect("run mock-kong conform")
}

#[test]
fn cli_lists_the_catalogue() {
    let out = conform(&["--list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for c in catalogue() {
        assert!(text.contains(c.id), "{} missing from --list", c.id);
    }
    assert!(text.contains(&format!("{} checks", catalogue().len())));
}

/// Exit 0 and a JSON/JUnit report on the correct server; exit 1 on a `must` failure; with an
/// expectations file listing that failure, exit 0; a stale list exits 1.
#[test]
fn cli_exit_codes_reports_and_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("r.xml");
    let out = conform(&[
        "--only",
        "dump/",
        "lifecycle/unknown",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["schema"], "mock-kong/conform/1");
    assert_eq!(v["summary"]["failed"], 0);
    assert_eq!(v["checks"].as_array().unwrap().len(), 11);
    assert_eq!(v["checks"][0]["id"], "dump/exits-in-time");
    assert_eq!(v["checks"][0]["status"], "pass");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"dump\" tests=\"10\" failures=\"0\""),
        "{xml}"
    );

    let bad = [
        "--only",
        "lifecycle/unknown",
        "--reference-fault",
        "wrong-error-text",
    ];
    let out = conform(&bad);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  lifecycle/unknown-instance"), "{text}");
    assert!(
        text.contains("requirement:") && text.contains("actual:"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("0 passed, 1 failed, 0 skipped"),
        "{text}"
    );

    let list = dir.path().join("expected.txt");
    std::fs::write(&list, "lifecycle/unknown-instance  # the fault\n").unwrap();
    let mut args = bad.to_vec();
    args.extend(["--expect-failures", list.to_str().unwrap()]);
    let out = conform(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 xfail"));

    // The same list against the correct server: the listed check passes, so the list is stale.
    let out = conform(&[
        "--only",
        "lifecycle/unknown",
        "--expect-failures",
        list.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("listed as failing, but passed"));

    // --fix-expectations rewrites the list from the run (refused with --only).
    let out = conform(&[
        "--only",
        "dump/",
        "--expect-failures",
        list.to_str().unwrap(),
        "--fix-expectations",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
