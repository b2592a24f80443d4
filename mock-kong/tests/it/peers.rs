//! The real, official plugin servers: Go (go-pdk, ProtoBuf:1), Python (kong-pdk, MsgPack:1) and
//! JavaScript (kong-pdk, MsgPack:1), installed by `scripts/install-peers.sh` and described in
//! `peers.toml`. These are the ground truth: the host must drive them exactly as Kong does.

use mock_kong::host::{EventEnd, PluginEntity, PoolPolicy};
use mock_kong::pdk::SimpleRequest;
use mock_kong::session::Session;
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

use crate::util;

const PEERS: [(&str, Protocol); 3] = [
    ("go", Protocol::ProtoBuf),
    ("python", Protocol::MsgPack),
    ("js", Protocol::MsgPack),
];

async fn open(peer: &str, plugin: &str, opts: &mock_kong::session::SessionOptions) -> Session {
    let spec = TargetSpec::Peer {
        name: peer.into(),
        registry: util::root().join("peers.toml"),
    };
    let target = target::resolve(&spec, &Placement::default(), plugin).expect("resolve peer");
    match Session::open(target, opts).await {
        Ok(s) => s,
        Err(e) => panic!("peer {peer} ({plugin}): {e}"),
    }
}

fn entity(name: &str, config: serde_json::Value) -> PluginEntity {
    let serde_json::Value::Object(map) = config else {
        panic!()
    };
    PluginEntity::new(name, map)
}

/// Spec §2 and §8 item 8: each real server's dump is accepted, with the protocol Kong picks.
/// Then the hello plugin runs end to end (spec §8 item 9: the header the plugin sets).
#[tokio::test(flavor = "current_thread")]
async fn real_peers_dump_and_run_hello() {
    for (peer, protocol) in PEERS {
        if !util::peer_installed(peer) {
            continue;
        }
        let s = open(peer, "hello", &util::opts()).await;
        assert_eq!(s.protocol(), protocol, "{peer}");
        assert_eq!(
            s.dump.plugin().name,
            "hello",
            "{peer}: Kong 3.9 registers the first plugin"
        );
        assert!(
            s.dump.plugin().phases.iter().any(|p| p == "access"),
            "{peer}"
        );
        let mut pdk = SimpleRequest::new("example.com");
        let e = entity("hello", serde_json::json!({"message": "Kong!"}));
        let r = s.run_request(&e, &["access".to_string()], &mut pdk).await;
        assert!(r.errors.is_empty(), "{peer}: {:?}", r.errors);
        assert_eq!(r.events[0].end, EventEnd::Done, "{peer}");
        let methods: Vec<_> = r.events[0]
            .calls
            .iter()
            .map(|c| c.method.as_str())
            .collect();
        assert_eq!(
            methods,
            ["kong.request.get_header", "kong.response.set_header"],
            "{peer}"
        );
        assert_eq!(
            pdk.response_header("x-hello"),
            Some("Kong! example.com"),
            "{peer}"
        );
        s.close().await;
    }
}

/// The bench plugin makes exactly N calls on every peer, and MsgPack peers accept Steps on
/// other connections than the HandleEvent (spec §4.1, §10.1).
#[tokio::test(flavor = "current_thread")]
async fn real_peers_bench_with_steps_on_rotating_connections() {
    for (peer, protocol) in PEERS {
        if !util::peer_installed(peer) {
            continue;
        }
        let mut opts = util::opts();
        opts.pool_policy = PoolPolicy::Rotate;
        let s = open(peer, "bench", &opts).await;
        for n in [0usize, 1, 7] {
            let mut pdk = SimpleRequest::new("example.com");
            // A new config is a new __seq__ (a plugins-iterator rebuild in Kong).
            let e = entity("bench", serde_json::json!({"calls": n}));
            let r = s.run_request(&e, &["access".to_string()], &mut pdk).await;
            assert!(r.errors.is_empty(), "{peer} n={n}: {:?}", r.errors);
            assert_eq!(r.events[0].calls.len(), n, "{peer} n={n}");
            if protocol == Protocol::MsgPack && n >= 2 {
                assert!(
                    r.events[0].connections.len() >= 2,
                    "{peer}: steps stayed on one connection"
                );
            }
        }
        s.close().await;
    }
}

/// `kong.response.exit` on every peer: terminal, never answered, and the server keeps serving.
#[tokio::test(flavor = "current_thread")]
async fn real_peers_exit_is_terminal() {
    for (peer, _) in PEERS {
        if !util::peer_installed(peer) {
            continue;
        }
        let s = open(peer, "exit", &util::opts()).await;
        for round in 0..2 {
            let mut pdk = SimpleRequest::new("example.com");
            let e = entity("exit", serde_json::json!({}));
            let r = s.run_request(&e, &["access".to_string()], &mut pdk).await;
            assert!(r.errors.is_empty(), "{peer} round {round}: {:?}", r.errors);
            match &r.events[0].end {
                EventEnd::Exit { status, body, .. } => {
                    assert_eq!(*status, 403, "{peer}");
                    assert_eq!(body.as_deref(), Some(&b"blocked"[..]), "{peer}");
                }
                other => panic!("{peer}: expected exit, got {other:?}"),
            }
        }
        s.close().await;
    }
}
