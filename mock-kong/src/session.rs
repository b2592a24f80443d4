//! A session with one plugin server: query and validate the dump, start the process, wait for
//! the socket, and hold the protocol client and Kong's instance cache. Every subcommand and the
//! load generator start from here.

use std::sync::Arc;
use std::time::Duration;

use crate::dump::{self, Dump, DumpError};
use crate::host::{
    Client, EventEnd, EventReport, HostError, HostOptions, PluginEntity, PluginRunner, PoolPolicy,
    Timeouts,
};
use crate::pdk::{Pdk, Phase};
use crate::process::{LogSink, ProcessError, ServerProcess, SpawnOptions};
use crate::target::ResolvedTarget;
use crate::Protocol;

// Kong's order of the phases of one request (docs/protocol.md §6) lives with the phases.
pub use crate::pdk::phase::kong_order;

/// Knobs of a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub timeouts: Timeouts,
    /// How long the query command may run.
    pub dump_timeout: Duration,
    /// How long the server may take to create its socket.
    pub socket_timeout: Duration,
    /// SIGTERM → SIGKILL grace period.
    pub grace: Duration,
    pub log: LogSink,
    pub trace: bool,
    pub pool_policy: PoolPolicy,
    /// Respawn the server when it exits (Kong does).
    pub respawn: bool,
    pub max_retries: u32,
    /// The overall deadline of one exchange with the server ([`HostOptions::call_deadline`];
    /// `None`: six read timeouts).
    pub call_deadline: Option<Duration>,
    /// The largest message accepted from the server ([`HostOptions::max_frame`]).
    pub max_frame: usize,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            timeouts: Timeouts::default(),
            dump_timeout: Duration::from_secs(30),
            socket_timeout: Duration::from_secs(8),
            grace: Duration::from_secs(2),
            log: LogSink::Stderr,
            trace: false,
            pool_policy: PoolPolicy::Lifo,
            respawn: true,
            max_retries: 3,
            call_deadline: None,
            max_frame: crate::host::DEFAULT_MAX_FRAME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the dump says {got} but {target} is expected to speak {expected}")]
    ProtocolMismatch {
        target: String,
        expected: Protocol,
        got: Protocol,
    },
    #[error("{0}")]
    Host(#[from] HostError),
}

impl SessionError {
    /// Whether the error is the server's fault (exit code 1) rather than setup (exit code 2).
    pub fn is_server_fault(&self) -> bool {
        !matches!(
            self,
            SessionError::Dump(DumpError::Spawn { .. })
                | SessionError::Process(ProcessError::Spawn { .. })
        )
    }
}

/// An open session.
pub struct Session {
    pub target: ResolvedTarget,
    pub dump: Dump,
    pub dump_stderr: String,
    pub process: Option<ServerProcess>,
    pub runner: PluginRunner,
}

/// The outcome of playing one request through the phases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestReport {
    pub events: Vec<EventReport>,
    /// Phases not run because an earlier phase ended the request.
    pub skipped: Vec<String>,
    /// Host-side failures (the event could not complete), per phase.
    pub errors: Vec<(String, String)>,
}

impl RequestReport {
    /// The exit, if a plugin called `kong.response.exit`.
    pub fn exit(&self) -> Option<&EventEnd> {
        self.events
            .iter()
            .map(|e| &e.end)
            .find(|e| matches!(e, EventEnd::Exit { .. }))
    }
}

impl Session {
    /// Queries, validates, starts and connects.
    pub async fn open(
        target: ResolvedTarget,
        opts: &SessionOptions,
    ) -> Result<Session, SessionError> {
        let out = dump::query(&target.query_cmd, opts.dump_timeout).await?;
        if let Some(expected) = target.expected_protocol {
            if expected != out.dump.protocol {
                return Err(SessionError::ProtocolMismatch {
                    target: target.label.clone(),
                    expected,
                    got: out.dump.protocol,
                });
            }
        }
        let process = match &target.start_cmd {
            Some(cmd) => {
                let p = ServerProcess::start(SpawnOptions {
                    name: target.name.clone(),
                    start_cmd: cmd.clone(),
                    socket: target.socket.clone(),
                    respawn: opts.respawn,
                    grace: opts.grace,
                    log: opts.log.clone(),
                    env: Vec::new(),
                })
                .await?;
                if let Err(e) = p.wait_socket(opts.socket_timeout).await {
                    // Stopped as at a normal end, so its sockets (also one at a wrong path) are
                    // removed, not only killed when dropped.
                    let _ = p.stop().await;
                    return Err(e.into());
                }
                Some(p)
            }
            None => None,
        };
        let mut host = HostOptions::new(target.socket.clone(), out.dump.protocol);
        host.timeouts = opts.timeouts;
        host.trace = opts.trace;
        host.pool_policy = opts.pool_policy;
        host.max_retries = opts.max_retries;
        host.call_deadline = opts.call_deadline;
        host.max_frame = opts.max_frame;
        let runner = PluginRunner::new(Arc::new(Client::new(host)));
        Ok(Session {
            target,
            dump: out.dump,
            dump_stderr: out.stderr,
            process,
            runner,
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.dump.protocol
    }

    pub fn client(&self) -> &Arc<Client> {
        self.runner.client()
    }

    /// Plays one request: each phase in Kong's order; after a terminal `exit` only `log` runs.
    pub async fn run_request(
        &self,
        entity: &PluginEntity,
        phases: &[String],
        pdk: &mut dyn Pdk,
    ) -> RequestReport {
        let mut report = RequestReport {
            events: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        let mut ended = false;
        for phase in phases {
            if ended && Phase::parse(phase) != Some(Phase::Log) {
                report.skipped.push(phase.clone());
                continue;
            }
            match self.runner.run_event(entity, phase, pdk).await {
                Ok(ev) => {
                    if !matches!(ev.end, EventEnd::Done) {
                        ended = true;
                    }
                    report.events.push(ev);
                }
                Err(e) => {
                    ended = true;
                    report.errors.push((phase.clone(), e.to_string()));
                }
            }
        }
        report
    }

    /// Stops the server (if mock-kong started it).
    pub async fn close(self) -> Option<String> {
        self.runner.client().clear_pool();
        match self.process {
            Some(p) => p.stop().await,
            None => None,
        }
    }
}
