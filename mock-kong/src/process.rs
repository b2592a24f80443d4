//! Plugin-server processes: spawn through the shell as Kong does (spec §3), log with a
//! `[name:pid]` prefix, wait for the socket, respawn at most once a second, stop with SIGTERM then
//! SIGKILL. Children run in their own process group and die with mock-kong.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a server's output lines go.
#[derive(Clone, Debug, Default)]
pub enum LogSink {
    /// `[name:pid] line` on mock-kong's stderr.
    #[default]
    Stderr,
    /// Kept in memory only (see [`ServerProcess::log_lines`]).
    Quiet,
}

/// How to run one server.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    pub name: String,
    /// Run as `/bin/sh -c "exec <start_cmd>"`.
    pub start_cmd: String,
    /// The socket the server is expected to create.
    pub socket: PathBuf,
    /// Respawn when the process exits (Kong does, at most once a second).
    pub respawn: bool,
    /// SIGTERM → SIGKILL grace period on stop.
    pub grace: Duration,
    pub log: LogSink,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("server `{name}` did not create a connectable socket at {socket} within {timeout:?}{detail}")]
    SocketTimeout { name: String, socket: PathBuf, timeout: Duration, detail: String },
    #[error("server `{name}` exited before creating its socket ({status}); last output:\n{output}")]
    ExitedEarly { name: String, status: String, output: String },
}

/// A supervised server process.
pub struct ServerProcess {
    _inner: Arc<()>,
}

impl ServerProcess {
    /// Spawns the server (and, with `respawn`, a supervisor that respawns it).
    pub async fn start(opts: SpawnOptions) -> Result<ServerProcess, ProcessError> {
        let _ = opts;
        todo!()
    }

    /// Waits until the socket accepts a connection.
    pub async fn wait_socket(&self, timeout: Duration) -> Result<(), ProcessError> {
        let _ = timeout;
        todo!()
    }

    /// The current child's pid, if one is running.
    pub fn pid(&self) -> Option<u32> {
        todo!()
    }

    /// How many times the server was spawned so far.
    pub fn spawn_count(&self) -> u32 {
        todo!()
    }

    /// The most recent output lines, prefixed `[name:pid]`.
    pub fn log_lines(&self) -> Vec<String> {
        todo!()
    }

    /// Sends `signal` to the current child's process group (tests use it to kill a server).
    pub fn signal(&self, signal: i32) -> bool {
        let _ = signal;
        todo!()
    }

    /// Stops supervision and the server: SIGTERM, then SIGKILL after the grace period. Removes the
    /// socket file if it is still a socket.
    pub async fn stop(self) -> Option<String> {
        todo!()
    }
}
