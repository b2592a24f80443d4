//! The Rust reference plugin server (both protocols), mock-kong's built-in default target.
//!
//! It hosts the five plugins of [`plugins`] (`hello`, `bench`, `exit`, `multiphase`, `faults`)
//! and behaves
//! on the wire like the official servers:
//!
//! * `MsgPack:1` ([`mp`]) like the Python and JS PDK servers (docs/protocol.md §4; `plugin-servers.md`,
//!   "Methods the MsgPack servers serve"): events are global to the process and keyed by
//!   `EventId`, so the Steps of one event may arrive on any connection;
//! * `ProtoBuf:1` ([`pb`]) like go-pdk's `pbserver.go` (docs/protocol.md §5): the whole event conversation
//!   runs on the connection of its `cmd_handle_event`, and every error closes the connection
//!   without a reply.
//!
//! Plugins are explicit state machines ([`plugins::Event`]): no task, thread or channel per
//! event, so the server is also the performance floor the harness is measured against.
//!
//! Entry points: [`dump_json`] (`--dump`), [`serve`] (bind a socket path and serve until
//! SIGTERM/SIGINT) and [`serve_listener`] (serve an already bound listener until a future
//! completes; used by tests to run the server in-process).

pub mod faults;
pub mod mp;
pub mod pb;
pub mod plugins;
pub mod tour;
pub mod variations;

pub use faults::{Fault, Faults};
pub use variations::{Variation, Variations};

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::task::JoinSet;

use crate::Protocol;

/// How to run the reference server.
#[derive(Debug, Clone)]
pub struct ReferenceOptions {
    pub protocol: Protocol,
    pub socket: PathBuf,
    /// Plugin listed first in the dump (Kong 3.9 registers only the first).
    pub plugin: String,
    /// Deliberate misbehaviour for conformance tests ([`faults`]) and legal variations
    /// ([`variations`]); empty by default.
    pub faults: Faults,
}

/// The largest single MessagePack object or ProtoBuf frame the server accepts (64 MiB: far above
/// any request Kong sends, low enough that a garbage length cannot make it allocate gigabytes).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Bytes read from a socket at a time.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// The dump the reference server prints for `--dump` (docs/protocol.md §2).
///
/// * MsgPack: a bare JSON array, like the Python and JS servers (no `Protocol`, so Kong assumes
///   `MsgPack:1`).
/// * ProtoBuf: `{"Protocol":"ProtoBuf:1","Plugins":[...]}`, like go-pdk.
///
/// `first_plugin` comes first (Kong 3.9 registers only the first entry), the others follow in
/// their default order. An unknown name is an error that lists the available plugins.
pub fn dump_json(protocol: Protocol, first_plugin: &str) -> Result<String, String> {
    dump_json_with(protocol, first_plugin, &Faults::default())
}

/// [`dump_json`] with the dump faults of [`faults`] applied (`dump-bare-object`,
/// `dump-unknown-protocol`, `dump-bad-entry`, `dump-bad-schema`, `dump-plugin-last`,
/// `dump-extra-phase`; the others are about printing, see `mock-kong reference-server`).
pub fn dump_json_with(
    protocol: Protocol,
    first_plugin: &str,
    faults: &Faults,
) -> Result<String, String> {
    let first = plugins::find(first_plugin).ok_or_else(|| {
        format!(
            "unknown plugin {first_plugin:?}: the reference server hosts {}",
            plugins::names()
        )
    })?;
    let mut entries = Vec::with_capacity(plugins::all().len());
    entries.push(first.info_json(protocol));
    entries.extend(
        plugins::all()
            .iter()
            .filter(|p| p.name() != first.name())
            .map(|p| p.info_json(protocol)),
    );
    if let Some(e) = entries.first_mut() {
        if faults.has(Fault::DumpBadEntry) {
            e["Version"] = "1.2.3.4".into();
            e["Priority"] = serde_json::json!(1.5);
        }
        if faults.has(Fault::DumpExtraPhase) {
            if let Some(p) = e["Phases"].as_array_mut() {
                p.insert(0, "rewrite".into());
            }
        }
        if faults.has(Fault::DumpDropsField) {
            if let Some(fields) = e["Schema"]["fields"][0]["config"]["fields"].as_array_mut() {
                if !fields.is_empty() {
                    fields.remove(0);
                }
            }
        }
        if faults.has(Fault::DumpSchemaName) {
            let renamed = format!("{}-plugin", e["Name"].as_str().unwrap_or("plugin"));
            e["Schema"]["name"] = renamed.into();
        }
        if faults.has(Fault::DumpBadSchema) {
            if let Some(field) = e["Schema"]["fields"][0]["config"]["fields"][0]
                .as_object_mut()
                .and_then(|o| o.values_mut().next())
            {
                let wrong = if field["type"] == "string" {
                    serde_json::json!(5)
                } else {
                    serde_json::json!("five")
                };
                field["default"] = wrong;
            }
        }
    }
    if faults.has(Fault::DumpPluginLast) {
        entries.rotate_left(1);
    }
    if faults.has(Fault::DumpBareObject) {
        return Ok(entries.swap_remove(0).to_string());
    }
    let doc = match protocol {
        _ if faults.has(Fault::DumpUnknownProtocol) => serde_json::json!({
            "Protocol": "MsgPack:2",
            "Plugins": entries,
        }),
        Protocol::MsgPack => serde_json::Value::Array(entries),
        Protocol::ProtoBuf => serde_json::json!({
            "Protocol": Protocol::ProtoBuf.as_str(),
            "Plugins": entries,
        }),
    };
    Ok(doc.to_string())
}

/// Binds `opts.socket` and serves until SIGTERM or SIGINT, then removes the socket file.
///
/// A stale socket file at the path is removed first; any other kind of file there is left
/// alone and reported as an error. A missing parent directory is created.
pub async fn serve(opts: ReferenceOptions) -> io::Result<()> {
    if plugins::find(&opts.plugin).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unknown plugin {:?}: the reference server hosts {}",
                opts.plugin,
                plugins::names()
            ),
        ));
    }
    faults::install(&opts.faults);
    let mut signals = crate::edge::ShutdownSignal::install()?;
    let ignore_term = opts.faults.has(Fault::IgnoreSigterm);
    let shutdown = async move { while signals.recv().await == libc::SIGTERM && ignore_term {} };
    if opts.faults.has(Fault::NoSocket) {
        shutdown.await;
        return Ok(());
    }
    if opts.faults.has(Fault::RefuseStaleSocket) && std::fs::symlink_metadata(&opts.socket).is_ok()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "fault refuse-stale-socket: {} already exists",
                opts.socket.display()
            ),
        ));
    }
    // The parent is read before the socket exists: once it accepts, the parent may die at any
    // moment, and read after that it would already be the reaper.
    // SAFETY: getppid(2) cannot fail and touches no memory.
    let parent = unsafe { libc::getppid() };
    let listener = bind(&opts.socket)?;
    let orphaned = async {
        if opts.faults.has(Fault::OutliveParent) {
            std::future::pending::<()>().await;
        }
        parent_gone(parent).await;
        eprintln!("reference server: the parent process is gone; exiting");
    };
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = orphaned => {}
        }
    };
    let result = serve_listener_with(listener, opts.protocol, opts.faults.clone(), stop).await;
    remove_socket(&opts.socket);
    result
}

/// Resolves once `parent`, the process that started the server, is gone (the server was
/// re-parented): Kong's process died without stopping it. Polls `getppid`, four times a
/// second; never resolves when the server was started by init itself.
async fn parent_gone(parent: libc::pid_t) {
    if parent <= 1 {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            return;
        }
    }
}

/// Prepares `path` and binds a listener there (see [`serve`] for the rules).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot remove the stale socket {}: {e}", path.display()),
            )
        })?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (choose another \
                     socket path or remove the file)",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot inspect socket path {}: {e}", path.display()),
            ))
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the socket directory {}: {e}",
                    parent.display()
                ),
            )
        })?;
    }
    UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the socket {}: {e}", path.display()),
        )
    })
}

/// Removes the socket file if it still is one (never another kind of file).
fn remove_socket(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves `listener` in `protocol` until `shutdown` completes, with no faults enabled.
pub async fn serve_listener(
    listener: UnixListener,
    protocol: Protocol,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_listener_with(listener, protocol, Faults::default(), shutdown).await
}

/// [`serve_listener`] with fault switches. One task per connection; on shutdown the listener
/// stops accepting and every connection task is aborted.
pub async fn serve_listener_with(
    listener: UnixListener,
    protocol: Protocol,
    faults: Faults,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limit = if faults.has(Fault::ConnLimit) {
        64
    } else {
        usize::MAX
    };
    let faults = Arc::new(faults);
    let server = match protocol {
        Protocol::MsgPack => Server::Mp(Arc::new(mp::MpServer::new(faults))),
        Protocol::ProtoBuf => Server::Pb(Arc::new(pb::PbServer::new(faults))),
    };
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept(), if conns.len() < limit => match accepted {
                Ok((stream, _)) => match &server {
                    Server::Mp(s) => {
                        conns.spawn(mp::serve_connection(s.clone(), stream));
                    }
                    Server::Pb(s) => {
                        conns.spawn(pb::serve_connection(s.clone(), stream));
                    }
                },
                Err(e) if is_transient_accept_error(&e) => {
                    // Out of descriptors or a connection reset before accept: keep serving
                    // the connections we have, and retry shortly.
                    eprintln!("reference server: accept failed: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            },
        }
    }
    conns.shutdown().await;
    Ok(())
}

/// The shared state of the protocol being served.
enum Server {
    Mp(Arc<mp::MpServer>),
    Pb(Arc<pb::PbServer>),
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    ) || e.kind() == io::ErrorKind::ConnectionAborted
}

/// A hasher for the servers' id-keyed maps: ids are small sequential integers, so a multiply
/// spreads them well and is much cheaper than SipHash (nothing here is attacker-keyed in a way
/// that matters: a host that wants to slow its own server down can simply send more).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
}

/// A `HashMap` keyed by server-assigned ids.
pub(crate) type IdMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the maps stay
/// consistent: every critical section is a single insert, remove or step).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch, as a float (the MsgPack `StartTime`).
pub(crate) fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Running the server in-process for tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    use tokio::net::UnixStream;
    use tokio::sync::oneshot;

    use crate::Protocol;

    /// A server running in-process on a socket in a temp dir.
    pub struct TestServer {
        _dir: tempfile::TempDir,
        pub path: PathBuf,
        stop: Option<oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    }

    impl TestServer {
        pub async fn start(protocol: Protocol) -> TestServer {
            TestServer::start_with(protocol, &[]).await
        }

        /// With these fault switches (the byte-level tests count instance ids from 0 with
        /// `ids-from-zero`, as the bytes they compare hold the id).
        pub async fn start_with(protocol: Protocol, faults: &[&str]) -> TestServer {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("ref.sock");
            let listener = super::bind(&path).expect("bind");
            let (tx, rx) = oneshot::channel::<()>();
            let faults = super::Faults::parse(faults).expect("known faults");
            let task = tokio::spawn(super::serve_listener_with(
                listener,
                protocol,
                faults,
                async {
                    let _ = rx.await;
                },
            ));
            TestServer {
                _dir: dir,
                path,
                stop: Some(tx),
                task: Some(task),
            }
        }

        pub async fn connect(&self) -> UnixStream {
            UnixStream::connect(&self.path).await.expect("connect")
        }

        pub async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = self.task.take() {
                t.await.expect("join").expect("serve");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_msgpack_is_a_bare_array_with_the_named_plugin_first() {
        let s = dump_json(Protocol::MsgPack, "bench").unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let arr = v.as_array().expect("bare array");
        assert_eq!(arr.len(), 7);
        assert_eq!(arr[0]["Name"], "bench");
        let names: Vec<_> = arr.iter().map(|e| e["Name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "bench",
                "hello",
                "exit",
                "multiphase",
                "tour",
                "faults",
                "idle"
            ]
        );
        let keys: Vec<_> = arr[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["Name", "Phases", "Priority", "Version", "Schema"]);
        assert_eq!(arr[0]["Schema"]["name"], "bench");
        let fields = &arr[0]["Schema"]["fields"][0]["config"];
        assert_eq!(fields["type"], "record");
        assert_eq!(fields["fields"][0]["calls"]["type"], "integer");
        assert_eq!(fields["fields"][0]["calls"]["default"], 0);
        assert_eq!(
            fields["fields"][1]["method"]["default"],
            "kong.request.get_header"
        );
        assert!(s.starts_with("[{\"Name\":\"bench\""), "{s}");
    }

    #[test]
    fn dump_protobuf_is_a_go_style_object() {
        let s = dump_json(Protocol::ProtoBuf, "multiphase").unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["Protocol"], "ProtoBuf:1");
        let plugins = v["Plugins"].as_array().unwrap();
        assert_eq!(plugins[0]["Name"], "multiphase");
        assert_eq!(
            plugins[0]["Phases"],
            serde_json::json!(["access", "response", "log"])
        );
        let keys: Vec<_> = plugins[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["Name", "Phases", "Version", "Priority", "Schema"]);
        assert!(
            s.starts_with("{\"Protocol\":\"ProtoBuf:1\",\"Plugins\":["),
            "{s}"
        );
    }

    #[test]
    fn dump_unknown_plugin_lists_the_available_ones() {
        let e = dump_json(Protocol::MsgPack, "nope").unwrap_err();
        assert!(
            e.contains("nope") && e.contains("hello, bench, exit, multiphase, tour, faults, idle"),
            "{e}"
        );
    }

    #[test]
    fn bind_replaces_stale_sockets_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let path = dir.path().join("sub/dir/s.sock");
            let l = bind(&path).expect("bind creates parents");
            drop(l);
            assert!(path.exists(), "a dropped listener leaves its file behind");
            let _l = bind(&path).expect("stale socket replaced");
            let file = dir.path().join("plain");
            std::fs::write(&file, b"keep me").unwrap();
            let e = bind(&file).unwrap_err();
            assert!(e.to_string().contains("not a socket"), "{e}");
            assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        });
    }
}
