//! Shared helpers of the criterion benchmarks in `benches/` (`cargo bench -p mock-kong-benches`):
//!
//! * `codec`: MsgPack:1 and ProtoBuf:1 encode/decode of every message kind a PDK round trip
//!   uses (StartInstance, HandleEvent, Step / callback, RpcCall, RpcReturn, PDK args/results,
//!   framing).
//! * `dispatch`: the emulated PDK (`SimpleRequest`) answering callbacks, and the ProtoBuf PDK
//!   table's unwrap/wrap around it.
//! * `roundtrip`: whole events (0 and 10 PDK calls) through the host against the reference
//!   server over a real Unix socket, in both protocols.
//!
//! Sample sizes and times are cut down so the three finish in well under five minutes.

use std::path::PathBuf;
use std::time::Duration;

use mock_kong::Protocol;

/// Criterion settings shared by the benches: 0.5 s warm-up, 2 s measurement, 30 samples.
pub fn criterion_config() -> criterion_settings::Settings {
    criterion_settings::Settings {
        warm_up: Duration::from_millis(500),
        measurement: Duration::from_secs(2),
        samples: 30,
    }
}

/// Plain numbers, so this library does not depend on criterion itself.
pub mod criterion_settings {
    use std::time::Duration;

    /// Warm-up time, measurement time and sample count.
    pub struct Settings {
        pub warm_up: Duration,
        pub measurement: Duration,
        pub samples: usize,
    }
}

/// A reference server serving on its own thread (its own current-thread runtime), stopped on
/// drop.
pub struct BackgroundServer {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Binds a socket in a fresh temp dir and serves `protocol` on it.
    pub fn start(protocol: Protocol) -> std::io::Result<BackgroundServer> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("bench.socket");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match mock_kong::reference::bind(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let _ = mock_kong::reference::serve_listener(listener, protocol, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the server thread ended before binding"))??;
        Ok(BackgroundServer {
            socket,
            _dir: dir,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
