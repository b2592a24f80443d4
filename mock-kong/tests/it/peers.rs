//! The real plugin servers: Go (go-pdk, ProtoBuf:1), Python (kong-pdk, MsgPack:1) and
//! JavaScript (kong-pdk, MsgPack:1), the official kits, are the ground truth: the host must drive
//! them exactly as Kong does. Rust (the community kit kong_rs, ProtoBuf:1) breaks Kong's
//! ProtoBuf rules; its tests pin down what it does. All installed by `scripts/install-peers.sh`
//! and described in `peers.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mock_kong::host::{EventEnd, PluginEntity, PoolPolicy, Timeouts};
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
/// Then the hello plugin runs end to end (docs/protocol.md §8 item 9: the header the plugin sets).
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
/// other connections than the HandleEvent (docs/protocol.md §4.1, §10.1).
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
/// kong_rs too: an exit needs no end-of-event frame.
#[tokio::test(flavor = "current_thread")]
async fn real_peers_exit_is_terminal() {
    for peer in PEERS.iter().map(|(p, _)| *p).chain(["rust"]) {
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

/// kong_rs 0.2.0 ends every event with its RpcReturn but without the empty frame Kong reads
/// first (docs/protocol.md §5.3): Kong, and mock-kong, take the RpcReturn for the next method name and wait
/// for its arguments. The handler did run (the header is set); the event never completes.
#[tokio::test(flavor = "current_thread")]
async fn rust_peer_ends_events_without_the_empty_frame() {
    if !util::peer_installed("rust") {
        return;
    }
    let mut opts = util::opts();
    opts.timeouts = Timeouts::uniform(Duration::from_secs(1));
    let s = open("rust", "hello", &opts).await;
    assert_eq!(s.protocol(), Protocol::ProtoBuf);
    assert_eq!(s.dump.plugin().name, "hello");
    assert_eq!(s.dump.plugin().phases, ["access"]);
    let mut pdk = SimpleRequest::new("example.com");
    let e = entity("hello", serde_json::json!({"message": "Kong!"}));
    let r = s.run_request(&e, &["access".to_string()], &mut pdk).await;
    assert_eq!(
        pdk.response_header("x-hello"),
        Some("Kong! example.com"),
        "the handler ran"
    );
    assert!(r.events.is_empty(), "{:?}", r.events);
    let [(phase, err)] = &r.errors[..] else {
        panic!("one failed phase expected: {:?}", r.errors)
    };
    assert_eq!(phase, "access");
    // The event driver diagnoses the RpcReturn sent in place of the end frame at once.
    assert!(
        err.contains("the RpcReturn (sequence 3) came without the empty end frame Kong waits for"),
        "{err}"
    );
    s.close().await;
}

/// The names in `dir`, sorted; `None` if it does not exist.
fn listing(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Some(names)
}

/// kong_rs always binds /usr/local/kong/<executable>.socket; plugins/rust/kong-rs-ns gives each
/// server a private /usr/local (a mount namespace with the session's socket directory
/// bind-mounted over it). Two servers of the same plugin at once: two sockets, two servers
/// (each counts its instances from 0), nothing written to the real /usr/local/kong, and after
/// the sessions close no process, namespace or socket directory is left.
#[tokio::test(flavor = "current_thread")]
async fn rust_peer_sockets_are_private_and_nothing_is_left_behind() {
    if !util::peer_installed("rust") {
        return;
    }
    let real = Path::new("/usr/local/kong");
    let before = listing(real);
    let opts = util::opts();
    let (a, b) = tokio::join!(open("rust", "exit", &opts), open("rust", "exit", &opts));
    assert_ne!(a.target.socket, b.target.socket);
    let mut pids = Vec::new();
    for s in [&a, &b] {
        assert!(s.target.socket.starts_with(&s.target.prefix));
        assert!(
            s.target.socket.ends_with("kong/exit.socket"),
            "{:?}",
            s.target.socket
        );
        let pid = s
            .process
            .as_ref()
            .and_then(|p| p.pid())
            .expect("server pid");
        // The server's own view: its /usr/local is the session's socket directory, and its mount
        // namespace is not ours.
        let inside = PathBuf::from(format!("/proc/{pid}/root/usr/local/kong/exit.socket"));
        assert!(inside.exists(), "{} missing", inside.display());
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).expect("ns link");
        assert_ne!(
            ns(&pid.to_string()),
            ns("self"),
            "pid {pid} shares our mount namespace"
        );
        pids.push(pid);

        let mut pdk = SimpleRequest::new("example.com");
        let e = entity("exit", serde_json::json!({"status": 418}));
        let r = s.run_request(&e, &["access".to_string()], &mut pdk).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(matches!(
            r.events[0].end,
            EventEnd::Exit { status: 418, .. }
        ));
        assert_eq!(
            r.events[0].instance_id, 0,
            "both sessions reached one server"
        );
    }
    assert_eq!(
        listing(real),
        before,
        "a kong_rs server wrote to the real /usr/local/kong"
    );
    let prefixes = [a.target.prefix.clone(), b.target.prefix.clone()];
    a.close().await;
    b.close().await;
    for pid in pids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        assert!(
            !exe.is_some_and(|e| e.starts_with(util::root().join(".peers/rust"))),
            "kong_rs server {pid} outlived its session"
        );
    }
    for p in prefixes {
        assert!(!p.exists(), "{} was left behind", p.display());
    }
    assert_eq!(listing(real), before);
}
