//! Shared test helpers.

use std::path::PathBuf;
use std::time::Duration;

use mock_kong::host::{PoolPolicy, Timeouts};
use mock_kong::process::LogSink;
use mock_kong::session::{Session, SessionOptions};
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

/// The `mock-kong` binary built for this test run.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mock-kong"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// Session options for tests: quiet server output, short timeouts.
pub fn opts() -> SessionOptions {
    SessionOptions {
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        log: LogSink::Quiet,
        socket_timeout: Duration::from_secs(20),
        grace: Duration::from_secs(2),
        pool_policy: PoolPolicy::Lifo,
        ..SessionOptions::default()
    }
}

/// Opens a session on the reference server (started as a child process, as users run it).
pub async fn reference(protocol: Protocol, plugin: &str, opts: &SessionOptions) -> Session {
    let spec = TargetSpec::Reference {
        protocol,
        exe: Some(exe()),
        faults: Vec::new(),
    };
    let target = target::resolve(&spec, &Placement::default(), plugin).expect("resolve reference");
    Session::open(target, opts)
        .await
        .expect("open a session on the reference server")
}

pub const BOTH: [Protocol; 2] = [Protocol::MsgPack, Protocol::ProtoBuf];

/// Whether a peer is installed; panics when peers are required (CI) but missing.
pub fn peer_installed(name: &str) -> bool {
    let root = root();
    let marker = match name {
        "go" => root.join(".peers/go/bin/hello"),
        "python" | "python-dir" | "python-gevent" => root.join(".peers/python/venv/bin/python"),
        "js" => root.join("plugins/js/node_modules/.bin/kong-js-pluginserver"),
        other => panic!("unknown peer {other}"),
    };
    let ok = marker.exists();
    if !ok {
        if std::env::var_os("MOCK_KONG_REQUIRE_PEERS").is_some() {
            panic!(
                "peer `{name}` is required (MOCK_KONG_REQUIRE_PEERS is set) but not installed: {} is missing; run scripts/install-peers.sh",
                marker.display()
            );
        }
        eprintln!(
            "\n*** SKIPPING peer `{name}`: not installed ({} missing). Run scripts/install-peers.sh (scripts/test.sh does). ***\n",
            marker.display()
        );
    }
    ok
}
