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

/// Whether a peer is installed (and, for `rust`, can run here); panics when peers are required
/// (CI) but missing.
pub fn peer_installed(name: &str) -> bool {
    let root = root();
    let marker = match name {
        "go" => root.join(".peers/go/bin/hello"),
        "python" | "python-dir" | "python-gevent" => root.join(".peers/python/venv/bin/python"),
        "js" => root.join("plugins/js/node_modules/.bin/kong-js-pluginserver"),
        "rust" => root.join(".peers/rust/bin/hello"),
        other => panic!("unknown peer {other}"),
    };
    let missing = if !marker.exists() {
        Some(format!(
            "not installed ({} missing). Run scripts/install-peers.sh (scripts/test.sh does)",
            marker.display()
        ))
    } else if name == "rust" {
        rust_namespace_problem()
    } else {
        None
    };
    let Some(why) = missing else {
        return true;
    };
    if std::env::var_os("MOCK_KONG_REQUIRE_PEERS").is_some() {
        panic!("peer `{name}` is required (MOCK_KONG_REQUIRE_PEERS is set) but {why}");
    }
    eprintln!("\n*** SKIPPING peer `{name}`: {why}. ***\n");
    false
}

/// Why the kong_rs servers cannot run on this machine, if they cannot: each needs a private
/// mount namespace (`plugins/rust/kong-rs-ns --probe` says whether one can be made).
fn rust_namespace_problem() -> Option<String> {
    let out = std::process::Command::new(root().join("plugins/rust/kong-rs-ns"))
        .arg("--probe")
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "cannot run here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run plugins/rust/kong-rs-ns --probe: {e}")),
    }
}
