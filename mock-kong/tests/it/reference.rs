//! The host loop against the Rust reference server, both protocols, over real Unix sockets.
//! Each test cites the section of docs/protocol.md it exercises.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mock_kong::host::{EventEnd, PluginEntity, PoolPolicy};
use mock_kong::pdk::SimpleRequest;
use mock_kong::Protocol;

use crate::util::{self, BOTH};

fn entity(name: &str, config: serde_json::Value) -> PluginEntity {
    let serde_json::Value::Object(map) = config else {
        panic!("config must be an object")
    };
    PluginEntity::new(name, map)
}

fn phases(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

/// Spec §4.4 / §5.3: HandleEvent → get_header → set_header → done, in both protocols.
#[tokio::test(flavor = "current_thread")]
async fn hello_event_round_trip_in_both_protocols() {
    for protocol in BOTH {
        let s = util::reference(protocol, "hello", &util::opts()).await;
        assert_eq!(s.protocol(), protocol);
        assert_eq!(s.dump.plugin().name, "hello");
        let mut pdk = SimpleRequest::new("example.com");
        let e = entity("hello", serde_json::json!({"message": "Kong!"}));
        let r = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
        assert!(r.errors.is_empty(), "{protocol}: {:?}", r.errors);
        let ev = &r.events[0];
        assert_eq!(ev.end, EventEnd::Done, "{protocol}");
        let methods: Vec<_> = ev.calls.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(
            methods,
            ["kong.request.get_header", "kong.response.set_header"],
            "{protocol}"
        );
        assert_eq!(
            pdk.response_header("x-hello"),
            Some("Kong! example.com"),
            "{protocol}"
        );
        s.close().await;
    }
}

/// The bench plugin makes exactly N PDK calls (the curves count IPC calls per request).
#[tokio::test(flavor = "current_thread")]
async fn bench_makes_exactly_n_calls() {
    for protocol in BOTH {
        let s = util::reference(protocol, "bench", &util::opts()).await;
        for n in [0usize, 1, 30] {
            let mut pdk = SimpleRequest::new("example.com");
            // A new config is a new __seq__ (a plugins-iterator rebuild in Kong).
            let e = entity("bench", serde_json::json!({"calls": n}));
            let r = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
            assert!(r.errors.is_empty(), "{protocol} n={n}: {:?}", r.errors);
            assert_eq!(r.events[0].calls.len(), n, "{protocol} n={n}");
            let expected = (n > 0).then(|| n.to_string());
            assert_eq!(
                pdk.response_header("x-bench-calls").map(str::to_owned),
                expected
            );
        }
        s.close().await;
    }
}

/// Spec §4.4, §5.3, §10.7: `kong.response.exit` is terminal: no answer is sent, and the server
/// keeps serving other events afterwards.
#[tokio::test(flavor = "current_thread")]
async fn exit_is_terminal_and_the_server_keeps_serving() {
    for protocol in BOTH {
        let s = util::reference(protocol, "exit", &util::opts()).await;
        let mut pdk = SimpleRequest::new("example.com");
        let e = entity("exit", serde_json::json!({}));
        let r = s
            .run_request(&e, &phases(&["access", "response"]), &mut pdk)
            .await;
        assert!(r.errors.is_empty(), "{protocol}: {:?}", r.errors);
        match &r.events[0].end {
            EventEnd::Exit {
                status,
                body,
                headers,
            } => {
                assert_eq!(*status, 403);
                assert_eq!(body.as_deref(), Some(&b"blocked"[..]));
                assert!(headers
                    .iter()
                    .any(|(k, v)| k == "x-exit" && v == &["1".to_string()]));
            }
            other => panic!("{protocol}: expected an exit, got {other:?}"),
        }
        assert!(
            r.events[0].calls[0].answer.is_none(),
            "exit must not be answered"
        );
        // Later phases are skipped (except log, docs/protocol.md §6).
        assert_eq!(r.skipped, ["response"]);
        let h = entity("hello", serde_json::json!({}));
        let mut pdk = SimpleRequest::new("after-exit");
        let r = s.run_request(&h, &phases(&["access"]), &mut pdk).await;
        assert!(
            r.errors.is_empty(),
            "{protocol}: server stopped serving after exit: {:?}",
            r.errors
        );
        assert_eq!(pdk.response_header("x-hello"), Some("hello after-exit"));
        s.close().await;
    }
}

/// Spec §4.1, §10.1: MsgPack Steps of one event may arrive on other connections; the server keys
/// events by EventId. The rotating pool forces a new connection for consecutive calls.
#[tokio::test(flavor = "current_thread")]
async fn msgpack_steps_move_between_connections() {
    let mut opts = util::opts();
    opts.pool_policy = PoolPolicy::Rotate;
    let s = util::reference(Protocol::MsgPack, "bench", &opts).await;
    let mut pdk = SimpleRequest::new("example.com");
    let e = entity("bench", serde_json::json!({"calls": 10}));
    let r = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ev = &r.events[0];
    assert_eq!(ev.end, EventEnd::Done);
    assert!(
        ev.connections.len() >= 2,
        "event stayed on {:?}",
        ev.connections
    );
    let conns: std::collections::HashSet<_> = ev.calls.iter().map(|c| c.conn).collect();
    assert!(
        conns.len() >= 2,
        "all callbacks arrived on one connection: {conns:?}"
    );
    assert_eq!(pdk.response_header("x-bench-calls"), Some("10"));
    s.close().await;
}

/// Spec §4.6: a config change (new `__seq__`) gives StartInstance(new) then CloseInstance(old),
/// and the new config takes effect.
#[tokio::test(flavor = "current_thread")]
async fn config_change_starts_a_new_instance_and_closes_the_old() {
    for protocol in BOTH {
        let s = util::reference(protocol, "hello", &util::opts()).await;
        let mut e = entity("hello", serde_json::json!({"message": "one"}));
        let mut pdk = SimpleRequest::new("h");
        let r1 = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
        assert_eq!(pdk.response_header("x-hello"), Some("one h"), "{protocol}");
        e.config.insert("message".into(), "two".into());
        e.rebuild();
        let r2 = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
        assert!(
            r1.errors.is_empty() && r2.errors.is_empty(),
            "{protocol}: {:?} {:?}",
            r1.errors,
            r2.errors
        );
        assert_eq!(pdk.response_header("x-hello"), Some("two h"), "{protocol}");
        assert_ne!(
            r1.events[0].instance_id, r2.events[0].instance_id,
            "{protocol}"
        );
        assert_eq!(
            s.runner.stats.started.load(Ordering::Relaxed),
            2,
            "{protocol}"
        );
        assert_eq!(
            s.runner.stats.closed.load(Ordering::Relaxed),
            1,
            "{protocol}"
        );
        s.close().await;
    }
}

/// Spec §3, §4.6: when the server dies, it is respawned (no sooner than 1 s after the previous
/// spawn); the cached instance is gone, which the host learns from "no plugin instance"
/// (MsgPack) or a closed connection (ProtoBuf), then it resets and retries the event.
#[tokio::test(flavor = "current_thread")]
async fn restart_after_kill_resets_instances_and_retries() {
    for protocol in BOTH {
        let s = util::reference(protocol, "hello", &util::opts()).await;
        let e = entity("hello", serde_json::json!({}));
        let mut pdk = SimpleRequest::new("before");
        let r = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
        assert!(r.errors.is_empty(), "{protocol}: {:?}", r.errors);
        let proc_ = s.process.as_ref().expect("reference server process");
        let first_pid = proc_.pid().expect("pid");
        assert!(proc_.signal(libc::SIGKILL), "could not signal the server");
        // Wait for the respawn.
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_.pid().is_none_or(|p| p == first_pid) || proc_.spawn_count() < 2 {
            assert!(
                Instant::now() < deadline,
                "{protocol}: server was not respawned"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proc_
            .wait_socket(Duration::from_secs(10))
            .await
            .expect("respawned server listens");
        let mut pdk = SimpleRequest::new("after");
        let r = s.run_request(&e, &phases(&["access"]), &mut pdk).await;
        assert!(r.errors.is_empty(), "{protocol}: {:?}", r.errors);
        assert_eq!(
            r.events[0].retries, 1,
            "{protocol}: expected exactly one reset-and-retry"
        );
        assert_eq!(
            pdk.response_header("x-hello"),
            Some("hello after"),
            "{protocol}"
        );
        s.close().await;
    }
}
