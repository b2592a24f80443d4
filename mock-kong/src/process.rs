//! Plugin-server processes: spawn through the shell as Kong does (docs/protocol.md §3), log with a
//! `[name:pid]` prefix, wait for the socket, respawn at most once a second, stop with SIGTERM then
//! SIGKILL. Children run in their own process group and die with mock-kong.
//!
//! # What Kong does, and what this module copies (docs/protocol.md §3)
//!
//! * The server is started as `exec <start_cmd>` through the shell, so the pid Kong reports is the
//!   server's own pid. Here: `/bin/sh -c "exec <start_cmd>"`, stdin from `/dev/null`, stdout and
//!   stderr piped and read line by line (Kong merges them; we read both pipes concurrently, so
//!   the order between the two streams is the order of arrival).
//! * Every line is logged as `[<name>:<pid>] <line>`, framed by Kong's notices
//!   `[pluginserver] starting pluginserver process for <name>` and
//!   `[pluginserver] started, pid <pid>`.
//! * Exit 127 logs `[pluginserver] external pluginserver "<name>" start command "<cmd>" exited
//!   with "command not found"`; any other exit logs `external pluginserver '<name>' terminated:
//!   exit|signal <status>`. In both cases Kong respawns, no sooner than 1 s after the previous
//!   spawn, forever ([`RESPAWN_INTERVAL`]). With [`SpawnOptions::respawn`] off we only record the
//!   exit.
//! * Kong stops servers with a bare SIGTERM. mock-kong is stricter: [`ServerProcess::stop`] sends
//!   SIGTERM to the whole process group, escalates to SIGKILL after the grace period, reaps, and
//!   removes a leftover socket file.
//!
//! # Never leaving orphans
//!
//! * Each server runs in its own process group (`setpgid(0, 0)`), so a terminal's Ctrl-C does not
//!   reach it directly and [`ServerProcess::signal`] / [`ServerProcess::stop`] reach the server
//!   *and* everything it forked.
//! * Dropping a [`ServerProcess`] (early return, `?`, panic unwinding) SIGKILLs the group
//!   synchronously.
//! * If mock-kong itself dies (even by SIGKILL), the kernel kills the server: the child sets
//!   `PR_SET_PDEATHSIG = SIGKILL` before `exec`, then re-checks `getppid()` to close the race where
//!   the parent died between `fork` and `prctl`.
//!
//! ## The parent-death-signal design decision
//!
//! Linux sends the parent-death signal when the **thread** that forked the child exits, not when
//! the process exits. Tokio's blocking-pool threads exit after 10 s idle, and a runtime worker
//! that called `block_in_place` becomes such a pool thread, so forking from "whatever thread polls
//! the future" could kill healthy servers at random. Therefore every fork happens on one dedicated
//! std thread (`mock-kong-spawner`), created on first use and never ended: it lives exactly as
//! long as the process. Callers hand it a fully configured command plus their runtime
//! [`Handle`]; it enters that runtime (so the child's reaper registers with the caller's runtime)
//! and sends the `tokio::process::Child` back. A panic inside a spawn is caught so the thread
//! cannot die early.
//!
//! Limits of the mechanism (documented, not fixable from here): the parent-death signal is not
//! inherited by the server's own children (a fork clears it) and is cleared when the server execs
//! a set-user-ID binary. If mock-kong is SIGKILLed, the server dies, but grandchildren it forked
//! are reparented and survive. Every path through [`ServerProcess::stop`] and `Drop` kills the
//! whole group, so this only matters for SIGKILL of mock-kong itself.
//!
//! # Graceful shutdown
//!
//! The CLIs race their work against SIGINT/SIGTERM at their edge ([`crate::edge`]); dropping
//! the work stops every server it started.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write as _};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle};

/// Minimum time between two spawns of the same server (Kong's `next_spawn = now + 1`, docs/protocol.md §3).
pub const RESPAWN_INTERVAL: Duration = Duration::from_secs(1);
/// How many log lines [`ServerProcess::log_lines`] keeps.
pub const LOG_RING_LINES: usize = 200;
/// Output lines longer than this many bytes are cut (the rest of the line is discarded).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many spawn and exit records are kept.
pub const HISTORY_LEN: usize = 64;
/// A server that exits this many times within [`CRASH_LOOP_WINDOW`] without ever having served
/// (its socket never accepted a connection) is not respawned again: Kong respawns forever, a
/// test harness must stop and say why ([`ProcessError::CrashLoop`]).
pub const CRASH_LOOP_EXITS: usize = 3;
/// See [`CRASH_LOOP_EXITS`].
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);
/// How long a server may listen on other Unix sockets, and not on the awaited one, before
/// [`ServerProcess::wait_socket`] gives up ([`ProcessError::SocketElsewhere`]).
pub const ELSEWHERE_GRACE: Duration = Duration::from_secs(2);
/// How often `wait_socket` reads `/proc` for the server's listening sockets.
const PROC_POLL: Duration = Duration::from_millis(100);

/// How long `stop` waits for the group to die after SIGKILL before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to let the output readers drain after the child exited, before logging the exit.
const DRAIN_WAIT: Duration = Duration::from_millis(250);
/// Upper bound for one hand-off to the spawner thread (a fork normally takes microseconds).
const SPAWN_WAIT: Duration = Duration::from_secs(10);
/// How many of the last log lines an error message quotes.
const ERROR_TAIL_LINES: usize = 40;
/// Log lines quoted in an error message are cut to this many characters.
const ERROR_LINE_CHARS: usize = 2000;
/// Kong's notice before each spawn (followed by the server's name).
const STARTING_NOTICE: &str = "[pluginserver] starting pluginserver process for ";

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
    #[error("cannot start `{cmd}` through /bin/sh: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("server `{name}` did not create a connectable socket at {socket} within {timeout:?}{detail}")]
    SocketTimeout {
        name: String,
        socket: PathBuf,
        timeout: Duration,
        detail: String,
    },
    #[error("server `{name}` exited before creating its socket ({status}); check its start command and the output below; last output:\n{output}")]
    ExitedEarly {
        name: String,
        status: String,
        output: String,
    },
    /// [`CRASH_LOOP_EXITS`] exits within [`CRASH_LOOP_WINDOW`], none of them after serving.
    #[error("server `{name}` exited {exits} times within {window:?} without ever creating its socket (last: {status}); mock-kong stopped respawning it (Kong would respawn it once a second forever). Check its start command `{cmd}` and its last output:\n{output}")]
    CrashLoop {
        name: String,
        cmd: String,
        exits: usize,
        window: Duration,
        status: String,
        output: String,
    },
    /// The server listens on Unix sockets, none of them the awaited one.
    #[error("server `{name}` listens at {listening} but mock-kong waits for its socket at {socket}. Make the server listen at exactly that path (in --start-cmd, `{{socket}}` and `{{prefix}}` are replaced by it and its directory), or tell mock-kong where the server listens (--socket PATH; in a kong.conf, pluginserver_<name>_socket); docs/your-plugin.md shows both")]
    SocketElsewhere {
        name: String,
        socket: PathBuf,
        listening: String,
    },
}

/// How one server process ended, in Kong's words (`exit <code>` / `signal <number>`, docs/protocol.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited with this status code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Waiting for the process failed; its fate is unknown (it was SIGKILLed to be sure).
    Unknown,
}

impl ExitReason {
    /// Exit status 127: the shell could not find the command (Kong's "command not found").
    pub fn is_command_not_found(self) -> bool {
        self == ExitReason::Exited(127)
    }

    fn from_status(status: std::process::ExitStatus) -> ExitReason {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Exited(code),
            (None, Some(sig)) => ExitReason::Signaled(sig),
            (None, None) => ExitReason::Unknown,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exit {code}"),
            ExitReason::Signaled(sig) => write!(f, "signal {sig}"),
            ExitReason::Unknown => f.write_str("unknown (waiting for the process failed)"),
        }
    }
}

/// One spawn of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnRecord {
    /// The server's pid; 0 if the fork itself failed (the attempt still counts for the spacing).
    pub pid: u32,
    /// Taken just before the fork; the next spawn is no sooner than `at + RESPAWN_INTERVAL`.
    pub at: Instant,
}

/// One exit of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: u32,
    pub reason: ExitReason,
    /// When the exit was observed (after the output was drained).
    pub at: Instant,
    /// Whether the exit happened after `stop` (or `Drop`) was requested.
    pub during_stop: bool,
}

/// Mutable supervision state, behind one lock so that "register a new child" and "request stop"
/// can never interleave badly (see `spawn_once` and `stop`).
#[derive(Default)]
struct State {
    /// The pid (= process group id) of the running child, until it has been reaped.
    current: Option<u32>,
    stopping: bool,
    /// The socket accepted a connection at least once ([`ServerProcess::wait_socket`]).
    served: bool,
    /// The supervisor stopped respawning a crash-looping server: how many exits, and the last.
    gave_up: Option<(usize, ExitReason)>,
    /// The supervisor task has ended (no child now, none will follow).
    finished: bool,
    spawn_count: u32,
    spawns: VecDeque<SpawnRecord>,
    exits: VecDeque<ExitRecord>,
    log: VecDeque<String>,
    /// Output readers that may still run (e.g. a grandchild holds the pipe); aborted on stop.
    readers: Vec<AbortHandle>,
    /// Sockets the server was found listening at instead of the awaited path
    /// ([`ProcessError::SocketElsewhere`]): removed with it on stop, so a misplaced socket is
    /// not left behind either.
    strays: Vec<PathBuf>,
}

struct Shared {
    name: String,
    start_cmd: String,
    socket: PathBuf,
    respawn: bool,
    sink: LogSink,
    env: Vec<(String, String)>,
    state: Mutex<State>,
    /// Bumped on every spawn, exit and end of supervision; waiters subscribe to it.
    changed: watch::Sender<u64>,
    /// Wakes the supervisor out of its respawn pause when stopping.
    stop_notify: Notify,
}

impl Shared {
    /// Locks the state; a poisoned lock (impossible without a panic) is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Records one log line and, with [`LogSink::Stderr`], prints it.
    ///
    /// A server's colour codes reach the terminal only when colour is wanted there (stderr is a
    /// terminal and `NO_COLOR` is not set); the kept lines never have them.
    fn log(&self, line: String) {
        let plain = strip_ansi(&line);
        if let LogSink::Stderr = self.sink {
            let mut err = io::stderr().lock();
            let shown = if colour_on_stderr() { &line } else { &plain };
            // A closed stderr must not take mock-kong down.
            let _ = writeln!(err, "{shown}");
        }
        let line = plain;
        let mut st = self.lock();
        if st.log.len() >= LOG_RING_LINES {
            st.log.pop_front();
        }
        st.log.push_back(line);
    }

    fn exit_of(&self, pid: u32) -> Option<ExitReason> {
        self.lock()
            .exits
            .iter()
            .rev()
            .find(|e| e.pid == pid)
            .map(|e| e.reason)
    }

    /// The last output lines, for an error message: those of the most recent spawn (earlier
    /// spawns of a crash loop print the same), at most [`ERROR_TAIL_LINES`]. When the lines
    /// went to stderr as they came, the message points there instead of printing them twice.
    fn tail_for_error(&self) -> String {
        if let LogSink::Stderr = self.sink {
            return "(the server's output is above, prefixed with its name and pid)".to_string();
        }
        let st = self.lock();
        let start = st
            .log
            .iter()
            .rposition(|l| l.starts_with(STARTING_NOTICE))
            .unwrap_or(0);
        let run: Vec<&String> = st.log.iter().skip(start).collect();
        let skip = run.len().saturating_sub(ERROR_TAIL_LINES);
        let lines: Vec<String> = run
            .into_iter()
            .skip(skip)
            .map(|l| {
                if l.chars().count() > ERROR_LINE_CHARS {
                    let mut cut: String = l.chars().take(ERROR_LINE_CHARS).collect();
                    cut.push_str(" [...]");
                    cut
                } else {
                    l.clone()
                }
            })
            .collect();
        if lines.is_empty() {
            "(no output)".to_string()
        } else {
            lines.join("\n")
        }
    }

    fn abort_readers(&self) {
        for reader in self.lock().readers.drain(..) {
            reader.abort();
        }
    }
}

/// A supervised server process.
///
/// Dropping it SIGKILLs the server's process group; call [`ServerProcess::stop`] for a graceful
/// stop.
pub struct ServerProcess {
    shared: Arc<Shared>,
    grace: Duration,
    supervisor: Option<JoinHandle<()>>,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.shared.name)
            .field("pid", &self.pid())
            .field("spawn_count", &self.spawn_count())
            .finish()
    }
}

impl ServerProcess {
    /// Spawns the server (and, with `respawn`, a supervisor that respawns it).
    ///
    /// Must run inside a tokio runtime with I/O and time enabled (`#[tokio::main]` does). Fails
    /// with [`ProcessError::Spawn`] only if the first fork fails; a server that starts and then
    /// fails is reported by [`ServerProcess::wait_socket`].
    pub async fn start(opts: SpawnOptions) -> Result<ServerProcess, ProcessError> {
        let spawn_error = |source: io::Error| ProcessError::Spawn {
            cmd: opts.start_cmd.clone(),
            source,
        };
        let runtime = Handle::try_current().map_err(|e| {
            spawn_error(io::Error::other(format!(
                "ServerProcess::start must run inside a tokio runtime: {e}"
            )))
        })?;
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            name: opts.name.clone(),
            start_cmd: opts.start_cmd.clone(),
            socket: opts.socket.clone(),
            respawn: opts.respawn,
            sink: opts.log.clone(),
            env: opts.env.clone(),
            state: Mutex::new(State::default()),
            changed,
            stop_notify: Notify::new(),
        });
        let first = spawn_once(&shared, &runtime).await.map_err(spawn_error)?;
        let supervisor = runtime.spawn(supervise(Arc::clone(&shared), runtime.clone(), first));
        Ok(ServerProcess {
            shared,
            grace: opts.grace,
            supervisor: Some(supervisor),
        })
    }

    /// Waits until the socket accepts a connection (the connection is closed right away).
    ///
    /// Polls every 5 ms, backing off to 25 ms. A socket file that refuses connections (stale,
    /// from an earlier run) does not count. Fails
    /// * with [`ProcessError::ExitedEarly`] as soon as the server exits with respawn off, or exits
    ///   with 127 ("command not found", which a respawn will not fix);
    /// * with [`ProcessError::CrashLoop`] once the supervisor gave up on a crash-looping server;
    /// * with [`ProcessError::SocketElsewhere`] when, for [`ELSEWHERE_GRACE`], the awaited path
    ///   does not exist while the server's processes listen on other Unix sockets (read from
    ///   `/proc`; only when the server shares mock-kong's mount namespace, where paths compare);
    /// * with [`ProcessError::SocketTimeout`] after `timeout`, naming the sockets the server's
    ///   processes listen on, if any.
    pub async fn wait_socket(&self, timeout: Duration) -> Result<(), ProcessError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut changes = self.shared.changed.subscribe();
        let mut delay = Duration::from_millis(5);
        let mut elsewhere_since: Option<Instant> = None;
        let mut next_proc_look = started;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A Unix connect normally answers at once; bound it anyway (a full backlog can block).
            let connect_budget = remaining.clamp(Duration::from_millis(10), Duration::from_secs(1));
            let last_error = match tokio::time::timeout(
                connect_budget,
                UnixStream::connect(&self.shared.socket),
            )
            .await
            {
                Ok(Ok(_stream)) => {
                    self.shared.lock().served = true;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("connect did not complete within {connect_budget:?}"),
            };
            if let Some(err) = self.exited_early() {
                return Err(err);
            }
            let now = Instant::now();
            if now >= next_proc_look {
                next_proc_look = now + PROC_POLL;
                match self.listening_elsewhere() {
                    Some(listening) => {
                        let since = *elsewhere_since.get_or_insert(now);
                        if now - since >= ELSEWHERE_GRACE {
                            self.shared.lock().strays =
                                listening.iter().map(PathBuf::from).collect();
                            return Err(ProcessError::SocketElsewhere {
                                name: self.shared.name.clone(),
                                socket: self.shared.socket.clone(),
                                listening: listening.join(", "),
                            });
                        }
                    }
                    None => elsewhere_since = None,
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProcessError::SocketTimeout {
                    name: self.shared.name.clone(),
                    socket: self.shared.socket.clone(),
                    timeout,
                    detail: self.timeout_detail(&last_error),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(delay.min(remaining)) => {}
                res = changes.changed() => {
                    if res.is_err() {
                        tokio::time::sleep(delay.min(remaining)).await;
                    }
                }
            }
            delay = (delay + Duration::from_millis(5)).min(Duration::from_millis(25));
        }
    }

    /// The paths the running server's processes listen at (none: `None`), when the awaited
    /// path does not exist and the server shares mock-kong's mount namespace.
    fn listening_elsewhere(&self) -> Option<Vec<String>> {
        let pid = self.pid()?;
        if std::fs::symlink_metadata(&self.shared.socket).is_ok()
            || crate::procfs::same_mount_namespace(pid) != Some(true)
        {
            return None;
        }
        let listening = self.listening_paths(pid);
        (!listening.is_empty()).then_some(listening)
    }

    /// The Unix socket paths the process tree of `pid` listens at (relative paths made
    /// absolute against the server's working directory).
    fn listening_paths(&self, pid: u32) -> Vec<String> {
        let cwd = crate::procfs::cwd_of(pid);
        crate::procfs::listening_unix_sockets(&crate::procfs::tree(pid))
            .into_iter()
            .map(|l| match &cwd {
                Some(dir) if !l.path.starts_with('/') && !l.path.starts_with('@') => {
                    dir.join(&l.path).to_string_lossy().into_owned()
                }
                _ => l.path,
            })
            .collect()
    }

    fn exited_early(&self) -> Option<ProcessError> {
        let st = self.shared.lock();
        if let Some((exits, reason)) = st.gave_up {
            drop(st);
            return Some(ProcessError::CrashLoop {
                name: self.shared.name.clone(),
                cmd: self.shared.start_cmd.clone(),
                exits,
                window: CRASH_LOOP_WINDOW,
                status: reason.to_string(),
                output: self.shared.tail_for_error(),
            });
        }
        let last = st.exits.back()?;
        let status = if last.reason.is_command_not_found() {
            format!(
                "{}: command not found: `{}`",
                last.reason, self.shared.start_cmd
            )
        } else if !self.shared.respawn && st.current.is_none() {
            last.reason.to_string()
        } else {
            return None;
        };
        drop(st);
        Some(ProcessError::ExitedEarly {
            name: self.shared.name.clone(),
            status,
            output: self.shared.tail_for_error(),
        })
    }

    fn timeout_detail(&self, last_error: &str) -> String {
        let socket = match std::fs::symlink_metadata(&self.shared.socket) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                "the socket file does not exist".to_string()
            }
            Err(e) => format!("the socket path cannot be inspected ({e})"),
            Ok(meta) if meta.file_type().is_socket() => {
                format!("a socket file exists but does not accept connections (last error: {last_error})")
            }
            Ok(meta) => format!(
                "the path exists but is a {}, not a socket",
                file_kind(&meta.file_type())
            ),
        };
        let running = self.pid();
        let process = {
            let st = self.shared.lock();
            match (st.current, st.exits.back()) {
                (Some(pid), _) => format!(
                    "the server is running as pid {pid} (spawned {} time(s))",
                    st.spawn_count
                ),
                (None, Some(last)) => format!("the server is not running (last: {})", last.reason),
                (None, None) => "the server is not running".to_string(),
            }
        };
        let listening = match running {
            None => String::new(),
            Some(pid) => {
                let paths = self.listening_paths(pid);
                let other_ns = crate::procfs::same_mount_namespace(pid) == Some(false);
                match (paths.is_empty(), other_ns) {
                    (true, _) => "; its processes listen on no Unix socket".to_string(),
                    (false, false) => format!("; its processes listen at {}", paths.join(", ")),
                    (false, true) => format!(
                        "; its processes listen at {} (in their own mount namespace)",
                        paths.join(", ")
                    ),
                }
            }
        };
        format!(
            "; {socket}; {process}{listening}; check that the start command makes the server listen \
             on exactly this path (socket names differ per PDK, docs/protocol.md §10); last output:\n{}",
            self.shared.tail_for_error()
        )
    }

    /// The current child's pid (also its process-group id), if one is running and not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.shared.lock().current
    }

    /// How many times the server was spawned so far.
    pub fn spawn_count(&self) -> u32 {
        self.shared.lock().spawn_count
    }

    /// The most recent output lines, prefixed `[name:pid]`, interleaved with Kong's
    /// `[pluginserver] ...` notices (at most [`LOG_RING_LINES`]).
    pub fn log_lines(&self) -> Vec<String> {
        self.shared.lock().log.iter().cloned().collect()
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The socket path the server is expected to create.
    pub fn socket(&self) -> &Path {
        &self.shared.socket
    }

    /// The most recent spawns, oldest first (at most [`HISTORY_LEN`]).
    pub fn spawn_history(&self) -> Vec<SpawnRecord> {
        self.shared.lock().spawns.iter().cloned().collect()
    }

    /// The most recent exits, oldest first (at most [`HISTORY_LEN`]).
    pub fn exit_history(&self) -> Vec<ExitRecord> {
        self.shared.lock().exits.iter().cloned().collect()
    }

    /// The most recent exit, if any.
    pub fn last_exit(&self) -> Option<ExitRecord> {
        self.shared.lock().exits.back().cloned()
    }

    /// Sends `signal` to the current child's process group (tests use it to kill a server).
    /// Returns whether the signal was delivered (false: no child, or `kill` failed).
    pub fn signal(&self, signal: i32) -> bool {
        match self.pid() {
            Some(pid) => kill_group(pid, signal),
            None => false,
        }
    }

    /// Stops supervision and the server: SIGTERM, then SIGKILL after the grace period. Removes the
    /// socket file if it is still a socket.
    ///
    /// Returns how the server ended (e.g. `exit 0 after SIGTERM in 12ms`, `killed with SIGKILL
    /// after 2s grace`), or `None` if no server process was running. Whatever happens, the whole
    /// process group gets a final SIGKILL, so helpers the server forked cannot survive. Bounded by
    /// the grace period plus a few seconds.
    pub async fn stop(mut self) -> Option<String> {
        let started = Instant::now();
        let pid = {
            let mut st = self.shared.lock();
            st.stopping = true;
            st.current
        };
        self.shared.stop_notify.notify_one();
        let outcome = match pid {
            None => None,
            Some(pid) => {
                kill_group(pid, libc::SIGTERM);
                let description = match wait_exit_of(&self.shared, pid, self.grace).await {
                    Some(reason) => {
                        format!("{reason} after SIGTERM in {}", human(started.elapsed()))
                    }
                    None => {
                        kill_group(pid, libc::SIGKILL);
                        match wait_exit_of(&self.shared, pid, KILL_WAIT).await {
                            Some(ExitReason::Signaled(libc::SIGKILL)) => {
                                format!("killed with SIGKILL after {:?} grace", self.grace)
                            }
                            Some(reason) => format!("{reason} after SIGKILL (sent after {:?} grace)", self.grace),
                            None => format!(
                                "pid {pid} was still not reaped {KILL_WAIT:?} after SIGKILL (sent after {:?} \
                                 grace); it may be stuck in the kernel",
                                self.grace
                            ),
                        }
                    }
                };
                // Helpers that ignored SIGTERM, or outlived the group leader.
                kill_group(pid, libc::SIGKILL);
                self.shared.log(format!(
                    "[pluginserver] successfully stopped pluginserver '{}', pid {pid}",
                    self.shared.name
                ));
                Some(description)
            }
        };
        if let Some(mut supervisor) = self.supervisor.take() {
            // It ends right after recording the exit; if the child could not be reaped, give up.
            if tokio::time::timeout(Duration::from_secs(1), &mut supervisor)
                .await
                .is_err()
            {
                supervisor.abort();
            }
        }
        self.shared.abort_readers();
        remove_socket_if_socket(&self.shared.socket);
        let strays = std::mem::take(&mut self.shared.lock().strays);
        for stray in strays {
            remove_socket_if_socket(&stray);
        }
        outcome
    }
}

impl Drop for ServerProcess {
    /// Best effort, synchronous: SIGKILL the group and stop supervising. Never blocks.
    fn drop(&mut self) {
        let pid = {
            let mut st = self.shared.lock();
            st.stopping = true;
            st.current
        };
        self.shared.stop_notify.notify_one();
        if let Some(pid) = pid {
            kill_group(pid, libc::SIGKILL);
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
        }
        self.shared.abort_readers();
    }
}

/// A running child as the supervisor holds it.
struct Running {
    child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
}

/// Spawns one child, starts its output readers and registers it. If a stop was requested
/// meanwhile, the new child is SIGKILLed at once (it is still returned, so it gets reaped).
async fn spawn_once(shared: &Arc<Shared>, runtime: &Handle) -> io::Result<Running> {
    shared.log(format!("{STARTING_NOTICE}{}", shared.name));
    let at = Instant::now();
    let mut child =
        spawn_on_spawner_thread(build_command(&shared.start_cmd, &shared.env), runtime).await?;
    let Some(pid) = child.id() else {
        return Err(io::Error::other(
            "the new child has no pid (it was already reaped)",
        ));
    };
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(runtime.spawn(read_lines(out, Arc::clone(shared), pid)));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(runtime.spawn(read_lines(err, Arc::clone(shared), pid)));
    }
    let stopping = {
        let mut st = shared.lock();
        st.readers.retain(|r| !r.is_finished());
        st.readers.extend(readers.iter().map(|r| r.abort_handle()));
        st.current = Some(pid);
        st.spawn_count = st.spawn_count.saturating_add(1);
        if st.spawns.len() >= HISTORY_LEN {
            st.spawns.pop_front();
        }
        st.spawns.push_back(SpawnRecord { pid, at });
        st.stopping
    };
    if stopping {
        kill_group(pid, libc::SIGKILL);
    }
    shared.log(format!("[pluginserver] started, pid {pid}"));
    shared.bump();
    Ok(Running {
        child,
        pid,
        readers,
    })
}

/// Kong's outer loop (docs/protocol.md §3): wait for the child, log its end, respawn no sooner than
/// [`RESPAWN_INTERVAL`] after the previous spawn, until stopped (or at once without `respawn`).
async fn supervise(shared: Arc<Shared>, runtime: Handle, first: Running) {
    let mut running = Some(first);
    loop {
        if let Some(run) = running.take() {
            wait_and_record(&shared, run).await;
        }
        if !shared.respawn || shared.lock().stopping {
            break;
        }
        if let Some((exits, reason)) = crash_loop(&shared) {
            shared.log(format!(
                "[pluginserver] mock-kong: pluginserver '{}' exited {exits} times within {CRASH_LOOP_WINDOW:?} \
                 without serving (last: {reason}); not respawned again",
                shared.name
            ));
            shared.lock().gave_up = Some((exits, reason));
            break;
        }
        let next_spawn = shared
            .lock()
            .spawns
            .back()
            .map(|s| s.at + RESPAWN_INTERVAL)
            .unwrap_or_else(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_spawn)) => {}
            _ = shared.stop_notify.notified() => {}
        }
        if shared.lock().stopping {
            break;
        }
        match spawn_once(&shared, &runtime).await {
            Ok(run) => running = Some(run),
            Err(e) => {
                // Count the attempt for the 1 s spacing, then try again.
                {
                    let mut st = shared.lock();
                    if st.spawns.len() >= HISTORY_LEN {
                        st.spawns.pop_front();
                    }
                    st.spawns.push_back(SpawnRecord {
                        pid: 0,
                        at: Instant::now(),
                    });
                }
                shared.log(format!(
                    "[pluginserver] cannot start pluginserver '{}' (`{}`): {e}",
                    shared.name, shared.start_cmd
                ));
            }
        }
    }
    if shared.respawn {
        shared.log(format!(
            "[pluginserver] exiting: pluginserver '{}' not respawned.",
            shared.name
        ));
    }
    shared.lock().finished = true;
    shared.bump();
}

/// Whether the server crash-loops: [`CRASH_LOOP_EXITS`] exits within [`CRASH_LOOP_WINDOW`] and
/// it never served. Returns the number of exits and the last one.
fn crash_loop(shared: &Shared) -> Option<(usize, ExitReason)> {
    let st = shared.lock();
    if st.served {
        return None;
    }
    let last = st.exits.back()?;
    let recent = st
        .exits
        .iter()
        .rev()
        .take_while(|e| !e.during_stop && last.at.duration_since(e.at) <= CRASH_LOOP_WINDOW)
        .count();
    (recent >= CRASH_LOOP_EXITS).then_some((recent, last.reason))
}

/// Waits for the child to exit, lets its output drain briefly, then records and logs the exit.
async fn wait_and_record(shared: &Arc<Shared>, mut run: Running) {
    let reason = match run.child.wait().await {
        Ok(status) => ExitReason::from_status(status),
        Err(e) => {
            kill_group(run.pid, libc::SIGKILL);
            shared.log(format!(
                "[pluginserver] waiting for pid {} failed: {e}",
                run.pid
            ));
            ExitReason::Unknown
        }
    };
    // The pid is reaped and may be reused: stop addressing its group right away.
    {
        let mut st = shared.lock();
        if st.current == Some(run.pid) {
            st.current = None;
        }
    }
    // Output written just before the exit should precede the exit notice. Readers still running
    // afterwards (a grandchild holds the pipe) keep going and are aborted on stop.
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        for reader in &mut run.readers {
            let _ = reader.await;
        }
    })
    .await;
    if reason.is_command_not_found() {
        shared.log(format!(
            "[pluginserver] external pluginserver \"{}\" start command \"{}\" exited with \"command not found\"",
            shared.name, shared.start_cmd
        ));
    } else {
        shared.log(format!(
            "external pluginserver '{}' terminated: {reason}",
            shared.name
        ));
    }
    {
        let mut st = shared.lock();
        if st.exits.len() >= HISTORY_LEN {
            st.exits.pop_front();
        }
        let during_stop = st.stopping;
        st.exits.push_back(ExitRecord {
            pid: run.pid,
            reason,
            at: Instant::now(),
            during_stop,
        });
    }
    shared.bump();
}

/// Waits (bounded) until the exit of `pid` has been recorded.
async fn wait_exit_of(shared: &Shared, pid: u32, limit: Duration) -> Option<ExitReason> {
    let deadline = Instant::now() + limit;
    let mut changes = shared.changed.subscribe();
    loop {
        if let Some(reason) = shared.exit_of(pid) {
            return Some(reason);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        match tokio::time::timeout(remaining, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tokio::time::sleep(remaining.min(Duration::from_millis(10))).await,
            Err(_) => return shared.exit_of(pid),
        }
    }
}

/// Reads one output stream line by line, logging `[name:pid] line`. Lines longer than
/// [`MAX_LINE_BYTES`] are cut; memory stays bounded whatever the child writes.
async fn read_lines<R: AsyncRead + Unpin>(stream: R, shared: Arc<Shared>, pid: u32) {
    let mut reader = BufReader::with_capacity(8 * 1024, stream);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let emit = |line: &mut Vec<u8>, cut: &mut bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = format!("[{}:{pid}] {}", shared.name, String::from_utf8_lossy(line));
        if *cut {
            text.push_str(&format!(" [line cut at {MAX_LINE_BYTES} bytes]"));
        }
        shared.log(text);
        line.clear();
        *cut = false;
    };
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(e) => {
                shared.log(format!(
                    "[pluginserver] reading output of pid {pid} failed: {e}"
                ));
                break;
            }
        };
        if chunk.is_empty() {
            if !line.is_empty() || cut {
                emit(&mut line, &mut cut);
            }
            break;
        }
        let (part, consumed, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        if part.len() > room {
            cut = true;
        }
        line.extend_from_slice(&part[..part.len().min(room)]);
        reader.consume(consumed);
        if complete {
            emit(&mut line, &mut cut);
        }
    }
}

/// The command Kong runs (docs/protocol.md §3), plus the group and parent-death settings.
fn build_command(start_cmd: &str, env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("exec {start_cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(env.iter().map(|(k, v)| (k, v)));
    configure_child(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    // Belt and braces: if the supervisor task is dropped, the leader is killed (Drop kills the group).
    cmd.kill_on_drop(true);
    cmd
}

/// Own process group, and SIGKILL when the forking thread dies (see the module docs).
fn configure_child(cmd: &mut std::process::Command) {
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec; it only calls async-signal-safe functions
    // (prctl, getppid) and builds errors without allocating.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(expected_parent: u32) -> io::Result<()> {
    // SAFETY: plain syscalls with constant arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died between fork and prctl: then we were already reparented.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } as u32 != expected_parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_expected_parent: u32) -> io::Result<()> {
    // No parent-death signal outside Linux; Drop and stop still kill the group.
    Ok(())
}

/// A fork request for the spawner thread.
struct SpawnRequest {
    cmd: tokio::process::Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The sender to the long-lived spawner thread (`None` if the thread could not be created).
fn spawner() -> Option<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("mock-kong-spawner".to_string())
                .spawn(move || spawner_main(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// The spawner thread: forks every child, so that the parent-death signal is tied to a thread
/// that lives as long as the process. It never returns while senders exist (the static keeps one).
fn spawner_main(requests: mpsc::Receiver<SpawnRequest>) {
    while let Ok(SpawnRequest {
        mut cmd,
        runtime,
        reply,
    }) = requests.recv()
    {
        let _in_runtime = runtime.enter();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
            .unwrap_or_else(|_| Err(io::Error::other("spawning panicked")));
        if let Err(Ok(mut orphan)) = reply.send(result) {
            // The requester gave up (timeout or cancellation): do not leave the child behind.
            if let Some(pid) = orphan.id() {
                kill_group(pid, libc::SIGKILL);
            }
            let _ = orphan.start_kill();
        }
    }
}

/// Forks `cmd` on the spawner thread, registered with `runtime`. Bounded by [`SPAWN_WAIT`].
async fn spawn_on_spawner_thread(
    cmd: tokio::process::Command,
    runtime: &Handle,
) -> io::Result<Child> {
    let sender = spawner()
        .ok_or_else(|| io::Error::other("the process-spawner thread could not be created"))?;
    let (reply, answer) = oneshot::channel();
    sender
        .send(SpawnRequest {
            cmd,
            runtime: runtime.clone(),
            reply,
        })
        .map_err(|_| io::Error::other("the process-spawner thread is gone"))?;
    match tokio::time::timeout(SPAWN_WAIT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(io::Error::other(
            "the process-spawner thread dropped the request",
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the process-spawner thread did not answer within {SPAWN_WAIT:?}"),
        )),
    }
}

/// `kill(-pgid, sig)`; true if delivered. Refuses pids that would address "all processes".
fn kill_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: plain syscall.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Whether colour may be written to stderr: it is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()) && io::stderr().is_terminal()
}

/// `text` without terminal escape sequences: CSI (`ESC [ ... final`, colours and cursor
/// moves), OSC (`ESC ] ... BEL` or `ESC \\`) and the other escapes (`ESC ( B`, `ESC c`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // Intermediate bytes, then a final byte (`ESC ( B`).
            Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                for c in chars.by_ref() {
                    if ('\u{30}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Removes `path` only if it is a socket (never a regular file, directory or symlink).
fn remove_socket_if_socket(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;

    fn opts(name: &str, cmd: &str, socket: &Path) -> SpawnOptions {
        SpawnOptions {
            name: name.to_string(),
            start_cmd: cmd.to_string(),
            socket: socket.to_path_buf(),
            respawn: false,
            grace: Duration::from_secs(5),
            log: LogSink::Quiet,
            env: Vec::new(),
        }
    }

    /// Polls `cond` every 10 ms until it holds or `limit` passes.
    async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `pid` is gone or a zombie (reparented zombies may never be reaped in a container).
    fn is_dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                matches!(state, Some('Z') | Some('X'))
            }
        }
    }

    fn find_number(lines: &[String], marker: &str) -> Option<u32> {
        lines.iter().find_map(|l| {
            l.split_once(marker)
                .and_then(|(_, rest)| rest.trim().parse().ok())
        })
    }

    /// A python one-liner server that listens on `socket` (and accepts nothing: the backlog
    /// completes connects), then sleeps.
    fn python_server(socket: &Path) -> String {
        format!(
            "python3 -c \"import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('{}'); s.listen(16); \
             print('listening', flush=True); time.sleep(60)\"",
            socket.display()
        )
    }

    #[tokio::test]
    async fn log_lines_carry_the_real_pid_and_kong_notices() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let server = ServerProcess::start(opts(
            "logger",
            "sh -c 'echo hello; echo oops >&2; sleep 30'",
            &sock,
        ))
        .await
        .unwrap();
        let pid = server.pid().expect("running");
        let want_out = format!("[logger:{pid}] hello");
        let want_err = format!("[logger:{pid}] oops");
        assert!(
            eventually(Duration::from_secs(5), || {
                let lines = server.log_lines();
                lines.contains(&want_out) && lines.contains(&want_err)
            })
            .await,
            "log: {:?}",
            server.log_lines()
        );
        let lines = server.log_lines();
        assert_eq!(
            lines[0],
            "[pluginserver] starting pluginserver process for logger"
        );
        assert_eq!(lines[1], format!("[pluginserver] started, pid {pid}"));
        assert_eq!(server.spawn_count(), 1);
        // `exec` makes the shell replace itself: the pid is the server's (here: the inner sh).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "sh");
        let desc = server.stop().await.expect("was running");
        assert!(desc.contains("after SIGTERM"), "{desc}");
    }

    #[tokio::test]
    async fn overlong_lines_are_cut_and_partial_last_line_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let cmd = format!(
            "python3 -c \"import sys; sys.stdout.write('x'*{} + '\\nshort\\nno-newline'); sys.stdout.flush()\"",
            MAX_LINE_BYTES * 3
        );
        let server = ServerProcess::start(opts("long", &cmd, &sock))
            .await
            .unwrap();
        let pid = server.pid().unwrap();
        assert!(eventually(Duration::from_secs(5), || server.last_exit().is_some()).await);
        let lines = server.log_lines();
        let long = lines
            .iter()
            .find(|l| l.starts_with(&format!("[long:{pid}] xxx")))
            .expect("long line logged");
        assert!(
            long.ends_with(&format!(" [line cut at {MAX_LINE_BYTES} bytes]")),
            "tail of long line"
        );
        assert_eq!(long.matches('x').count(), MAX_LINE_BYTES);
        assert!(lines.contains(&format!("[long:{pid}] short")), "{lines:?}");
        assert!(
            lines.contains(&format!("[long:{pid}] no-newline")),
            "{lines:?}"
        );
        assert_eq!(server.last_exit().unwrap().reason, ExitReason::Exited(0));
    }

    #[tokio::test]
    async fn log_ring_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let server = ServerProcess::start(opts(
            "ring",
            "sh -c 'i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done'",
            &sock,
        ))
        .await
        .unwrap();
        assert!(eventually(Duration::from_secs(10), || server.last_exit().is_some()).await);
        let lines = server.log_lines();
        assert_eq!(lines.len(), LOG_RING_LINES);
        assert!(
            lines.iter().any(|l| l.ends_with("] line499")),
            "newest line kept"
        );
        assert!(
            !lines.iter().any(|l| l.ends_with("] line0")),
            "oldest line dropped"
        );
    }

    #[tokio::test]
    async fn wait_socket_succeeds_and_stop_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("py.sock");
        let server = ServerProcess::start(opts("py", &python_server(&sock), &sock))
            .await
            .unwrap();
        server.wait_socket(Duration::from_secs(20)).await.unwrap();
        assert!(sock.exists());
        let desc = server.stop().await.expect("was running");
        // SIGTERM is enough: the description is written only when the exit came within the
        // grace (else it says SIGKILL), so the 5 s grace was not waited out.
        assert!(desc.starts_with("signal 15 after SIGTERM in "), "{desc}");
        assert!(!sock.exists(), "the socket file must be removed on stop");
    }

    #[tokio::test]
    async fn wait_socket_times_out_when_no_socket_appears() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("never.sock");
        let server = ServerProcess::start(opts("lazy", "sleep 30", &sock))
            .await
            .unwrap();
        let t0 = Instant::now();
        let err = server
            .wait_socket(Duration::from_millis(300))
            .await
            .unwrap_err();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        match &err {
            ProcessError::SocketTimeout { detail, .. } => {
                assert!(
                    detail.contains("the socket file does not exist"),
                    "{detail}"
                );
                assert!(detail.contains("is running as pid"), "{detail}");
            }
            other => panic!("expected SocketTimeout, got {other:?}"),
        }
        assert!(err.to_string().contains("within 300ms"), "{err}");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_stale_socket_does_not_count_and_is_removed_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // file stays, nobody listens
        let server = ServerProcess::start(opts("stale", "sleep 30", &sock))
            .await
            .unwrap();
        let err = server
            .wait_socket(Duration::from_millis(200))
            .await
            .unwrap_err();
        match &err {
            ProcessError::SocketTimeout { detail, .. } => {
                assert!(
                    detail.contains("a socket file exists but does not accept connections"),
                    "{detail}"
                )
            }
            other => panic!("expected SocketTimeout, got {other:?}"),
        }
        server.stop().await;
        assert!(!sock.exists(), "a stale socket is removed");
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("not-a-socket");
        std::fs::write(&sock, b"precious").unwrap();
        let server = ServerProcess::start(opts("file", "sleep 30", &sock))
            .await
            .unwrap();
        let err = server
            .wait_socket(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is a regular file, not a socket"),
            "{err}"
        );
        server.stop().await;
        assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn exit_without_respawn_is_reported_early_with_output() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let server = ServerProcess::start(opts("early", "sh -c 'echo boom; exit 3'", &sock))
            .await
            .unwrap();
        // Reported as soon as it exited: after the 20 s wait it would be a SocketTimeout.
        let err = server
            .wait_socket(Duration::from_secs(20))
            .await
            .unwrap_err();
        match &err {
            ProcessError::ExitedEarly {
                name,
                status,
                output,
            } => {
                assert_eq!(name, "early");
                assert_eq!(status, "exit 3");
                assert!(output.contains("] boom"), "{output}");
                assert!(
                    output.contains("external pluginserver 'early' terminated: exit 3"),
                    "{output}"
                );
            }
            other => panic!("expected ExitedEarly, got {other:?}"),
        }
        assert_eq!(server.spawn_count(), 1, "no respawn");
        assert_eq!(server.pid(), None);
        let last = server.last_exit().unwrap();
        assert_eq!(last.reason, ExitReason::Exited(3));
        assert!(!last.during_stop);
        assert_eq!(server.stop().await, None, "nothing was running");
    }

    #[tokio::test]
    async fn respawn_after_kill_waits_a_second_and_gets_a_new_pid() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts("phoenix", "sleep 30", &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        let first = server.pid().unwrap();
        assert!(server.signal(libc::SIGKILL));
        assert!(
            eventually(Duration::from_secs(5), || server.spawn_count() == 2
                && server.pid().is_some())
            .await
        );
        let second = server.pid().unwrap();
        assert_ne!(first, second);
        let spawns = server.spawn_history();
        assert_eq!(spawns.len(), 2);
        assert_eq!((spawns[0].pid, spawns[1].pid), (first, second));
        let gap = spawns[1].at - spawns[0].at;
        assert!(gap >= RESPAWN_INTERVAL, "respawned after {gap:?}");
        let exit = server.last_exit().unwrap();
        assert_eq!(
            (exit.pid, exit.reason),
            (first, ExitReason::Signaled(libc::SIGKILL))
        );
        assert!(server
            .log_lines()
            .contains(&"external pluginserver 'phoenix' terminated: signal 9".to_string()));
        assert!(server.stop().await.unwrap().contains("after SIGTERM"));
    }

    #[tokio::test]
    async fn a_crash_looping_server_is_respawned_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts("looper", "true", &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        assert!(eventually(Duration::from_secs(6), || server.spawn_count() >= 3).await);
        let spawns = server.spawn_history();
        for pair in spawns.windows(2) {
            assert!(pair[1].at - pair[0].at >= RESPAWN_INTERVAL, "{spawns:?}");
        }
        server.stop().await;
    }

    /// Regression (issue 13, item 1): a start command that exits at once was respawned once a
    /// second until mock-kong was killed from outside. After three exits within 10 s without
    /// ever serving, the supervisor stops and the wait says why, with the last output.
    #[tokio::test]
    async fn a_server_that_keeps_exiting_without_serving_is_given_up_after_three_exits() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts("crasher", "sh -c 'echo boom >&2; exit 3'", &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        // A generous timeout: the crash loop, not the timeout, must end the wait.
        let err = server
            .wait_socket(Duration::from_secs(120))
            .await
            .unwrap_err();
        match &err {
            ProcessError::CrashLoop {
                exits,
                status,
                output,
                ..
            } => {
                assert_eq!(*exits, CRASH_LOOP_EXITS);
                assert_eq!(status, "exit 3");
                assert!(output.contains("] boom"), "{output}");
            }
            other => panic!("expected CrashLoop, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("exited 3 times within 10s"), "{text}");
        assert!(text.contains("sh -c 'echo boom >&2; exit 3'"), "{text}");
        assert_eq!(server.spawn_count(), 3, "no fourth spawn");
        assert_eq!(server.pid(), None);
        assert_eq!(server.stop().await, None, "nothing was running");
    }

    /// A server that served once is respawned as Kong does, however often it exits afterwards
    /// (loadgen's chaos test kills a serving server on purpose).
    #[tokio::test]
    async fn a_server_that_served_is_respawned_after_any_number_of_exits() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        // Every respawn fails to bind (the killed server's socket file is still there) and
        // exits at once: a crash loop, but after serving.
        let mut o = opts("phoenix", &python_server(&sock), &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        server.wait_socket(Duration::from_secs(20)).await.unwrap();
        assert!(server.signal(libc::SIGKILL));
        assert!(
            eventually(Duration::from_secs(20), || server.exit_history().len()
                > CRASH_LOOP_EXITS
                && server.spawn_count() as usize > CRASH_LOOP_EXITS + 1)
            .await,
            "{:?}",
            server.exit_history()
        );
        assert!(server.shared.lock().gave_up.is_none());
        server.stop().await;
    }

    /// Regression (issue 13, items 2 and 3): a server listening elsewhere was waited for until
    /// the timeout, and the error did not say where it listened. Now the wait ends with the
    /// paths the server's processes listen at (from /proc).
    #[tokio::test]
    async fn a_server_listening_elsewhere_is_named_with_its_paths() {
        let dir = tempfile::tempdir().unwrap();
        let awaited = dir.path().join("awaited.socket");
        let actual = dir.path().join("actual.sock");
        let server = ServerProcess::start(opts("astray", &python_server(&actual), &awaited))
            .await
            .unwrap();
        let err = server
            .wait_socket(Duration::from_secs(120))
            .await
            .unwrap_err();
        match &err {
            ProcessError::SocketElsewhere {
                socket, listening, ..
            } => {
                assert_eq!(socket, &awaited);
                assert_eq!(listening, &actual.to_string_lossy());
            }
            other => panic!("expected SocketElsewhere, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("listens at {}", actual.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("waits for its socket at {}", awaited.display())),
            "{text}"
        );
        assert!(text.contains("docs/your-plugin.md"), "{text}");
        server.stop().await;
    }

    /// A timeout shorter than the grace still names the sockets the server listens at.
    #[tokio::test]
    async fn a_socket_timeout_names_the_servers_listening_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let awaited = dir.path().join("awaited.socket");
        let actual = dir.path().join("actual.sock");
        let server = ServerProcess::start(opts("slowpoke", &python_server(&actual), &awaited))
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(20), || server
                .log_lines()
                .iter()
                .any(|l| l.ends_with("] listening")))
            .await
        );
        let err = server
            .wait_socket(Duration::from_millis(200))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProcessError::SocketTimeout { .. }), "{text}");
        assert!(
            text.contains(&format!("its processes listen at {}", actual.display())),
            "{text}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn stop_during_the_respawn_pause_is_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts("pause", "true", &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        assert!(eventually(Duration::from_secs(5), || server.last_exit().is_some()).await);
        assert_eq!(server.pid(), None, "between spawns");
        // From here on no child process is running: the clock can stand still. Time only moves
        // if stop() waits on a timer (the respawn pause, or its 1 s wait for the supervisor),
        // which it must not.
        tokio::time::pause();
        let t0 = tokio::time::Instant::now();
        assert_eq!(server.stop().await, None);
        assert_eq!(t0.elapsed(), Duration::ZERO, "stop waited on a timer");
    }

    #[tokio::test]
    async fn exit_127_is_command_not_found_and_respawn_continues() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts("ghost", "no-such-command-mock-kong-test --flag", &sock);
        o.respawn = true;
        let server = ServerProcess::start(o).await.unwrap();
        let err = server
            .wait_socket(Duration::from_secs(20))
            .await
            .unwrap_err();
        match &err {
            ProcessError::ExitedEarly { status, .. } => {
                assert!(
                    status.starts_with("exit 127: command not found"),
                    "{status}"
                )
            }
            other => panic!("expected ExitedEarly, got {other:?}"),
        }
        let notice = "[pluginserver] external pluginserver \"ghost\" start command \
                      \"no-such-command-mock-kong-test --flag\" exited with \"command not found\"";
        assert!(
            server.log_lines().iter().any(|l| l == notice),
            "{:?}",
            server.log_lines()
        );
        // Kong keeps respawning even after 127 (docs/protocol.md §10 item 14).
        assert!(eventually(Duration::from_secs(5), || server.spawn_count() >= 2).await);
        server.stop().await;
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_when_term_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts(
            "stubborn",
            "sh -c \"trap '' TERM; echo ready; sleep 100\"",
            &sock,
        );
        o.grace = Duration::from_millis(300);
        let server = ServerProcess::start(o).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || server
                .log_lines()
                .iter()
                .any(|l| l.ends_with("] ready")))
            .await
        );
        let t0 = Instant::now();
        let desc = server.stop().await.expect("was running");
        assert_eq!(desc, "killed with SIGKILL after 300ms grace");
        // The grace was given (a lower bound cannot fail on a slow machine).
        assert!(t0.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group_even_a_term_ignoring_grandchild() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        // The leader dies of SIGTERM; its child ignores SIGTERM and would outlive it.
        let cmd = "sh -c \"(trap '' TERM; exec sleep 100) & echo grandchild \\$!; wait\"";
        let server = ServerProcess::start(opts("family", cmd, &sock))
            .await
            .unwrap();
        let leader = server.pid().unwrap();
        assert!(
            eventually(Duration::from_secs(5), || find_number(
                &server.log_lines(),
                "grandchild "
            )
            .is_some())
            .await
        );
        let grandchild = find_number(&server.log_lines(), "grandchild ").unwrap();
        assert_ne!(grandchild, leader);
        assert!(!is_dead(grandchild));
        // The leader died of SIGTERM (no grace waited out); the final group SIGKILL takes the
        // grandchild.
        let desc = server.stop().await.expect("was running");
        assert!(desc.contains("after SIGTERM"), "{desc}");
        assert!(
            eventually(Duration::from_secs(3), || is_dead(grandchild)).await,
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn drop_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let server = ServerProcess::start(opts(
            "dropped",
            "sh -c 'sleep 100 & echo grandchild $!; wait'",
            &sock,
        ))
        .await
        .unwrap();
        let leader = server.pid().unwrap();
        assert!(
            eventually(Duration::from_secs(5), || find_number(
                &server.log_lines(),
                "grandchild "
            )
            .is_some())
            .await
        );
        let grandchild = find_number(&server.log_lines(), "grandchild ").unwrap();
        drop(server);
        assert!(
            eventually(Duration::from_secs(3), || is_dead(leader)
                && is_dead(grandchild))
            .await
        );
    }

    #[tokio::test]
    async fn env_is_passed_and_the_exec_pid_is_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let mut o = opts(
            "env",
            "sh -c 'echo value=$MOCK_KONG_TEST_VAR pid=$$'",
            &sock,
        );
        o.env = vec![("MOCK_KONG_TEST_VAR".to_string(), "42".to_string())];
        let server = ServerProcess::start(o).await.unwrap();
        let pid = server.pid().unwrap();
        assert!(eventually(Duration::from_secs(5), || server.last_exit().is_some()).await);
        assert!(
            server
                .log_lines()
                .contains(&format!("[env:{pid}] value=42 pid={pid}")),
            "{:?}",
            server.log_lines()
        );
    }

    /// The mechanism itself: a child configured like ours is SIGKILLed when the *thread* that
    /// forked it exits (this is why forks happen on the dedicated spawner thread).
    #[test]
    #[allow(clippy::zombie_processes)] // reaped below with waitpid, to read how it died
    fn parent_death_signal_fires_when_the_forking_thread_exits() {
        let pid = std::thread::spawn(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("100")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            configure_child(&mut cmd);
            let child = cmd.spawn().unwrap();
            child.id() // the Child is dropped without kill or wait
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child; nothing else waits for this pid.
            let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            if rc == pid as i32 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} still alive after its forking thread exited"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "status {status:#x}"
        );
    }

    /// The design: children forked through the spawner thread survive the exit of the thread (and
    /// runtime) that asked for them.
    #[test]
    fn spawner_thread_children_survive_the_requesting_thread() {
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cmd = build_command("sleep 100", &[]);
                cmd.kill_on_drop(false);
                let child = spawn_on_spawner_thread(cmd, &Handle::current())
                    .await
                    .unwrap();
                let pid = child.id().unwrap();
                drop(child); // no kill_on_drop: the process stays
                pid
            })
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let alive = !is_dead(pid);
        kill_group(pid, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: reaping our own child (its tokio reaper was dropped with the runtime).
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        assert!(alive, "child {pid} died with the thread that requested it");
    }

    const ORPHAN_HELPER_ENV: &str = "MOCK_KONG_PROCESS_ORPHAN_HELPER";

    /// Not a test by itself: the child process of `servers_die_when_mock_kong_is_sigkilled`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "helper process for servers_die_when_mock_kong_is_sigkilled"]
    async fn orphan_helper() {
        if std::env::var_os(ORPHAN_HELPER_ENV).is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(opts("orphan", "sleep 100", &dir.path().join("o.sock")))
            .await
            .unwrap();
        println!("SERVER_PID={}", server.pid().unwrap());
        io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    }

    /// The whole chain: a process using `ServerProcess` is SIGKILLed; its server must die too.
    #[test]
    fn servers_die_when_mock_kong_is_sigkilled() {
        let exe = std::env::current_exe().unwrap();
        let mut helper = std::process::Command::new(exe)
            .args([
                "--exact",
                "process::tests::orphan_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ORPHAN_HELPER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = helper.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // libtest prints `test <name> ... ` first, without a newline.
                if let Some((_, pid)) = line.split_once("SERVER_PID=") {
                    let _ = tx.send(pid.trim().parse::<u32>().ok());
                    return;
                }
            }
            let _ = tx.send(None);
        });
        let server_pid = rx.recv_timeout(Duration::from_secs(20));
        let _ = helper.kill(); // SIGKILL: no destructor, no handler runs in the helper
        let _ = helper.wait();
        let server_pid = server_pid
            .ok()
            .flatten()
            .expect("helper reported its server pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_dead(server_pid) {
            if Instant::now() >= deadline {
                kill_group(server_pid, libc::SIGKILL);
                panic!("server {server_pid} outlived its SIGKILLed parent");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Regression (issue 13, item 12): a server's colour codes were passed through with
    /// NO_COLOR=1 (and into error messages and reports).
    #[test]
    fn colour_codes_are_stripped_from_kept_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[1;31mERROR\u{1b}[0m boom \u{1b}]0;title\u{7}x\u{1b}(B"),
            "ERROR boom x"
        );
        assert_eq!(strip_ansi("plain [1m] text"), "plain [1m] text");
        let sh = Shared {
            name: "c".into(),
            start_cmd: String::new(),
            socket: PathBuf::new(),
            respawn: false,
            sink: LogSink::Quiet,
            env: Vec::new(),
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            stop_notify: Notify::new(),
        };
        sh.log("[c:1] \u{1b}[32mready\u{1b}[0m".into());
        assert_eq!(sh.lock().log.back().unwrap(), "[c:1] ready");
    }

    #[test]
    fn exit_reasons_read_like_kong() {
        assert_eq!(ExitReason::Exited(3).to_string(), "exit 3");
        assert_eq!(ExitReason::Signaled(9).to_string(), "signal 9");
        assert!(ExitReason::Exited(127).is_command_not_found());
        assert!(!ExitReason::Signaled(127).is_command_not_found());
        assert_eq!(human(Duration::from_millis(12)), "12ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
    }
}
