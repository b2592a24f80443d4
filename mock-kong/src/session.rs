//! A session with one plugin server: query and validate the dump, start the process, wait for
//! the socket, and hold the protocol client and Kong's instance cache. Every subcommand and the
//! load generator start from here.

use std::sync::Arc;
use std::time::Duration;

use crate::dump::{self, Dump, DumpError, PluginInfo};
use crate::host::{
    Client, EventEnd, EventReport, HostError, HostOptions, PluginEntity, PluginRunner, PoolPolicy,
    Timeouts,
};
use crate::pdk::{KongRequest, Pdk, Phase, Phases};
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

    /// The entry of the dump Kong `version` registers as plugin `name` (docs/protocol.md §2, §9): 3.9 only
    /// the first entry of a dump, older releases any entry. `Err` says why there is none.
    pub fn registered_plugin(
        &self,
        name: &str,
        version: crate::pdk::KongVersion,
    ) -> Result<&PluginInfo, String> {
        let first = self.dump.plugin();
        if !version.first_dump_entry_only() {
            return self
                .dump
                .plugins
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| format!("the dump does not list plugin `{name}`"));
        }
        if first.name == name {
            return Ok(first);
        }
        let listed = self.dump.plugins.iter().any(|p| p.name == name);
        Err(format!(
            "Kong {version} registers only the first plugin of a dump, `{}`, not `{name}`{}",
            first.name,
            if listed {
                " (listed later in the dump: use a single-plugin server, or --kong-version 3.8 to emulate pre-3.9 multi-plugin dumps)"
            } else {
                " (not in the dump at all)"
            }
        ))
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

/// The phases before the upstream is called: a Lua error there answers 500 (docs/protocol.md §4.7).
const REQUEST_PHASES: Phases = Phases::of(&[Phase::Certificate, Phase::Rewrite, Phase::Access]);

/// What one event did to an emulated request, with Kong's rules for failures applied.
#[derive(Debug)]
pub struct PlayedEvent {
    /// The event's transcript (`None`: the host could not complete it).
    pub event: Option<EventReport>,
    /// `(method, error)`: a PDK call raised.
    pub raised: Option<(String, String)>,
    /// A host-side failure or an unknown method.
    pub error: Option<String>,
}

/// Plays one phase of `req` through `runner` as Kong does (docs/protocol.md §4.7, §5.6, §6): the request
/// moves to the phase ([`KongRequest::enter_phase`]), the event runs, and a failure ends the
/// request the way Kong ends it: a PDK call that raises in `rewrite`/`access` answers 500; a
/// failed ProtoBuf event (or an unknown method) answers 500 from Kong 3.8 on, and is only logged
/// before; a MsgPack host-side error is logged and the request goes on without the plugin's
/// effect. `req.version` and `req.protocol` say which rules apply.
///
/// The scenario runner and `mock-kong proxy` play every event through here.
pub async fn play_event(
    runner: &PluginRunner,
    entity: &PluginEntity,
    phase: &str,
    req: &mut KongRequest,
) -> PlayedEvent {
    let known = Phase::parse(phase);
    let in_log = known == Some(Phase::Log);
    let in_request = REQUEST_PHASES.contains(known);
    let version = req.version;
    req.enter_phase(phase);
    let mut played = PlayedEvent {
        event: None,
        raised: None,
        error: None,
    };
    match runner.run_event_keeping(entity, phase, req).await {
        Ok(ev) => {
            match &ev.end {
                EventEnd::Done | EventEnd::Exit { .. } => {}
                EventEnd::Raised { method, error } => {
                    played.raised = Some((method.clone(), error.clone()));
                    // Kong: a Lua error in rewrite/access answers 500 (docs/protocol.md §4.7).
                    if in_request && !req.exited {
                        req.fail(500);
                    }
                }
                // Only in a failed event's transcript (the Err arm below).
                EventEnd::Failed { .. } => {}
                EventEnd::MethodNotFound { method } => {
                    let e = format!("method \"{method}\" not found");
                    req.kong_log("err", format!("pluginserver error: {e}"));
                    played.error = Some(e);
                    if version.protobuf_errors_answer_500() && !in_log && !req.exited {
                        req.fail(500);
                    }
                }
            }
            played.event = Some(ev);
        }
        Err(failed) => {
            let text = failed.error.to_string();
            req.kong_log("err", format!("pluginserver error: {text}"));
            played.error = Some(text);
            // The transcript keeps the calls made before the failure.
            played.event = Some(failed.partial);
            if req.protocol == Protocol::ProtoBuf
                && version.protobuf_errors_answer_500()
                && !in_log
                && !req.exited
            {
                req.fail(500);
            }
        }
    }
    played
}
