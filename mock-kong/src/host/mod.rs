//! Kong's host loop (docs/protocol.md §4.3 – §4.7, §5.3, §5.6).
//!
//! The host is always the client: it connects, sends one request, reads until the matching answer.
//! This module is protocol machinery only; PDK callbacks are answered by a [`Pdk`] implementation.
//!
//! * [`mp`]: `MsgPack:1`: every RPC call takes a connection from the pool (so one event's Steps
//!   can move between connections), msgid counter from 1, `serverPid` notifications.
//! * [`pb`]: `ProtoBuf:1`: one connection per event, sequence from 2, the frame loop.
//! * [`instances`]: Kong's per-plugin instance cache, the config JSON Kong sends, and the
//!   reset-and-retry on "no plugin instance" / a closed connection (bounded here).
//! * [`conn`]: timed connect/read/write on a Unix socket: every operation has a deadline.
//!
//! **Invariant:** nothing a plugin server sends can make the host panic, wait without bound, or
//! grow without bound. Every read has a timeout and every exchange an overall deadline (a server
//! trickling bytes defeats per-read timeouts alone); every message is limited in size
//! ([`DEFAULT_MAX_FRAME`], checked on the declared length before buffering); and the counts Kong
//! leaves unbounded are capped: notifications per call, PDK callbacks and bytes per event. Each
//! limit is a [`HostOptions`] field and has its own [`HostError`] naming the limit, the call and
//! the event.

pub mod conn;
pub mod instances;
pub mod mp;
pub mod pb;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pdk::{Pdk, PdkOutcome};
use crate::{Protocol, Value};

pub use conn::{io_totals, IoTotals};
pub use instances::{PluginEntity, PluginRunner};
// The limits and the error type are shared with the event drivers (and so with the conformance
// client) in the codec crate.
use mock_kong_codec::event::{Callback, End, Sent};
pub use mock_kong_codec::event::{
    HostError, Limits, Reply, DEFAULT_MAX_CALLBACKS, DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_FRAME,
    DEFAULT_MAX_NOTIFICATIONS,
};

/// Per-operation timeouts. Kong uses nginx's 60 s defaults for each (docs/protocol.md §7); mock-kong defaults
/// to 10 s so a stuck server fails a test run quickly.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

impl Timeouts {
    pub fn uniform(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            read: d,
            write: d,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts::uniform(Duration::from_secs(10))
    }
}

/// How MsgPack calls pick a pooled connection (docs/protocol.md §4.1, §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PoolPolicy {
    /// As ngx_lua: the most recently pooled idle connection first, a new one if none is idle.
    #[default]
    Lifo,
    /// The least recently pooled connection first, after opening up to `pool_size` connections:
    /// consecutive calls of one event land on different connections, which flushes out servers
    /// that bind events to connections.
    Rotate,
}

/// The default of [`HostOptions::call_deadline`]: this many read timeouts (60 s with the default
/// 10 s read timeout, the per-operation value Kong itself uses, docs/protocol.md §7).
pub const CALL_DEADLINE_READS: u32 = 6;

/// Everything the host needs to talk to one plugin server.
///
/// The limits (`max_frame`, `call_deadline`, `max_notifications`, `max_callbacks`,
/// `max_event_bytes`) are mock-kong's, not Kong's: they keep the invariant that nothing a
/// server does makes the host wait or grow without bound. Each is reported by its own
/// [`HostError`] variant naming the limit.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub socket: PathBuf,
    pub protocol: Protocol,
    pub timeouts: Timeouts,
    /// Largest message accepted from the server ([`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// Idle connections kept per socket (Kong: `lua_socket_pool_size` 256).
    pub pool_size: usize,
    pub pool_policy: PoolPolicy,
    /// Record every frame sent and received (for `-v`).
    pub trace: bool,
    /// How many times an event is retried after "no plugin instance" / a closed connection
    /// (Kong: unbounded, docs/protocol.md §4.6; here bounded and reported).
    pub max_retries: u32,
    /// The overall time one exchange may take: a MsgPack call from request to response, a
    /// ProtoBuf message (a method name with its arguments, an `RpcReturn`) from the moment the
    /// host waits for it. Kong has per-operation timeouts only (docs/protocol.md §7), which a server
    /// trickling one byte per read timeout defeats; this bounds that too.
    /// `None`: [`CALL_DEADLINE_READS`] × `timeouts.read`.
    pub call_deadline: Option<Duration>,
    /// MsgPack: notifications accepted while waiting for one response (Kong: unbounded);
    /// more is [`HostError::TooManyNotifications`].
    pub max_notifications: usize,
    /// PDK callbacks accepted in one event (Kong: unbounded); more is
    /// [`HostError::TooManyCallbacks`]. Every callback is kept in the event's transcript.
    pub max_callbacks: usize,
    /// Bytes read from the server in one event (or one instance call); more is
    /// [`HostError::TooManyBytes`]. Bounds what a transcript retains.
    pub max_event_bytes: u64,
}

impl HostOptions {
    pub fn new(socket: impl Into<PathBuf>, protocol: Protocol) -> HostOptions {
        HostOptions {
            socket: socket.into(),
            protocol,
            timeouts: Timeouts::default(),
            max_frame: DEFAULT_MAX_FRAME,
            pool_size: 256,
            pool_policy: PoolPolicy::Lifo,
            trace: false,
            max_retries: 3,
            call_deadline: None,
            max_notifications: DEFAULT_MAX_NOTIFICATIONS,
            max_callbacks: DEFAULT_MAX_CALLBACKS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// The caps of the event drivers, from this options' fields.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame: self.max_frame,
            max_notifications: self.max_notifications,
            max_callbacks: self.max_callbacks,
            max_event_bytes: self.max_event_bytes,
        }
    }

    /// The deadline of one exchange: [`call_deadline`](Self::call_deadline) or its default.
    pub fn effective_call_deadline(&self) -> Duration {
        self.call_deadline
            .unwrap_or_else(|| self.timeouts.read.saturating_mul(CALL_DEADLINE_READS))
    }
}

/// Direction of a traced frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Send,
    Recv,
}

/// One frame as it crossed the socket (recorded with [`HostOptions::trace`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WireFrame {
    pub conn: u64,
    pub dir: Direction,
    /// A decoded rendering (MsgPack value, protobuf message or method name).
    pub summary: String,
    #[serde(serialize_with = "ser_hex")]
    pub bytes: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(b))
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{x:02x}"));
    }
    out
}

impl WireFrame {
    /// The frame's bytes as spaced hex.
    pub fn bytes_hex(&self) -> String {
        hex(&self.bytes)
    }
}

/// A shared, optional frame log.
#[derive(Debug, Clone, Default)]
pub struct Trace(Option<Arc<Mutex<Vec<WireFrame>>>>);

impl Trace {
    pub fn new(enabled: bool) -> Trace {
        Trace(enabled.then(Default::default))
    }
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }
    pub fn push(&self, conn: u64, dir: Direction, summary: impl FnOnce() -> String, bytes: &[u8]) {
        if let Some(log) = &self.0 {
            let frame = WireFrame {
                conn,
                dir,
                summary: summary(),
                bytes: bytes.to_vec(),
            };
            if let Ok(mut l) = log.lock() {
                l.push(frame);
            }
        }
    }
    /// Takes the frames recorded so far.
    pub fn take(&self) -> Vec<WireFrame> {
        match &self.0 {
            Some(log) => log
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// One PDK callback as the host handled it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    pub method: String,
    #[serde(serialize_with = "ser_values")]
    pub args: Vec<Value>,
    /// The answer sent back (`None` for terminal calls that get no answer).
    #[serde(serialize_with = "ser_opt_value")]
    pub answer: Option<Value>,
    /// MsgPack: the Step method that carried the answer; ProtoBuf: the output message type.
    pub reply_kind: String,
    /// The connection the callback arrived on.
    pub conn: u64,
    /// A note: "unknown PDK method", "terminal: kong.response.exit", a raised error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn ser_values<S: serde::Serializer>(v: &[Value], s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    v.iter()
        .map(Value::to_json)
        .collect::<Vec<_>>()
        .serialize(s)
}

fn ser_opt_value<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    v.as_ref().map(Value::to_json).serialize(s)
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventEnd {
    /// The server said it was done (`"ret"` / empty frame + RpcReturn).
    Done,
    /// The plugin called `kong.response.exit`: terminal, no answer was sent.
    Exit {
        status: i64,
        #[serde(serialize_with = "ser_opt_body")]
        body: Option<Vec<u8>>,
        headers: Vec<(String, Vec<String>)>,
    },
    /// A PDK call raised a Lua error; Kong aborts the handler (HTTP 500 in access).
    Raised { method: String, error: String },
    /// ProtoBuf: the server called a method that is not in the PDK table (Kong: 500).
    MethodNotFound { method: String },
    /// The host could not complete the event (a [`HostError`]: timeout, protocol error, closed
    /// connection); only in the transcript of a [`FailedEvent`], which holds the calls made
    /// before.
    Failed { error: String },
}

fn ser_opt_body<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    b.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .serialize(s)
}

/// The transcript of one event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventReport {
    pub phase: String,
    pub instance_id: i64,
    /// MsgPack: the EventId from the HandleEvent answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    pub calls: Vec<CallRecord>,
    pub end: EventEnd,
    /// Connections used by this event, in order of first use.
    pub connections: Vec<u64>,
    /// How often the event was retried after an instance reset (docs/protocol.md §4.6).
    pub retries: u32,
    /// Notes about server behaviour Kong tolerates but a user should see.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl EventReport {
    pub(crate) fn new(phase: &str, instance_id: i64) -> EventReport {
        EventReport {
            phase: phase.to_owned(),
            instance_id,
            event_id: None,
            calls: Vec::new(),
            end: EventEnd::Done,
            connections: Vec::new(),
            retries: 0,
            findings: Vec::new(),
        }
    }
    pub(crate) fn used(&mut self, conn: u64) {
        if !self.connections.contains(&conn) {
            self.connections.push(conn);
        }
    }
}

/// An event the host could not complete, with its transcript up to the failure.
#[derive(Debug)]
pub struct FailedEvent {
    pub error: HostError,
    /// What the last attempt did before it failed (its PDK calls, connections, findings).
    pub partial: EventReport,
}

impl FailedEvent {
    /// The error, and the transcript ended with [`EventEnd::Failed`].
    pub fn new(error: HostError, mut partial: EventReport) -> FailedEvent {
        partial.end = EventEnd::Failed {
            error: error.to_string(),
        };
        FailedEvent { error, partial }
    }
}

/// A settled PDK outcome as the drivers' [`Reply`], and, for an exit, how the event ended (its
/// status, body and headers stay in the host's transcript; the driver only needs to know that
/// nothing is sent). The host and the conformance client answer callbacks through this one
/// mapping.
pub fn reply_for(outcome: PdkOutcome) -> (Reply, Option<EventEnd>) {
    match outcome {
        PdkOutcome::Return(v) => (Reply::Value(v), None),
        PdkOutcome::SoftError(e) => (Reply::SoftError(e), None),
        PdkOutcome::NotFound => (Reply::NotFound, None),
        PdkOutcome::Raise(e) => (Reply::Raise(e), None),
        PdkOutcome::Exit {
            status,
            body,
            headers,
        } => (
            Reply::Terminal,
            Some(EventEnd::Exit {
                status,
                body,
                headers,
            }),
        ),
        // Delays are waited out by the caller (`settle`); an unsettled one answers at once.
        PdkOutcome::Delayed { then, .. } => reply_for(*then),
    }
}

impl EventReport {
    /// Records how a driver ended the event: the terminal, raised or unknown callback `cb` (if
    /// any) in the transcript, and the end. An error response (MsgPack) is the call's
    /// [`HostError::Server`], which the runner may answer with an instance reset.
    pub(crate) fn finish(
        &mut self,
        end: End,
        cb: Option<Callback>,
        conn: u64,
        exit: Option<EventEnd>,
    ) -> Result<(), HostError> {
        let record = |cb: Option<Callback>, kind: &str, note: String| {
            cb.map(|cb| CallRecord {
                method: cb.method,
                args: cb.args,
                answer: None,
                reply_kind: kind.into(),
                conn,
                note: Some(note),
            })
        };
        let (call, end) = match end {
            End::Done => (None, EventEnd::Done),
            End::Exit => {
                let note = format!(
                    "terminal: {}",
                    cb.as_ref().map_or("", |c| c.method.as_str())
                );
                (
                    record(cb, "none (terminal)", note),
                    exit.unwrap_or(EventEnd::Exit {
                        status: 200,
                        body: None,
                        headers: Vec::new(),
                    }),
                )
            }
            End::Raised { method, error } => (
                record(cb, "none (raised)", error.clone()),
                EventEnd::Raised { method, error },
            ),
            End::MethodNotFound(method) => {
                let cb = Callback {
                    method: method.clone(),
                    args: Vec::new(),
                    args_not_array: None,
                };
                let note = format!("method \"{method}\" not found");
                (
                    record(Some(cb), "none (unknown method)", note),
                    EventEnd::MethodNotFound { method },
                )
            }
            End::ServerError { method, message } => {
                return Err(HostError::Server { method, message })
            }
        };
        self.calls.extend(call);
        self.end = end;
        Ok(())
    }

    /// Records a callback that was answered.
    pub(crate) fn answered(&mut self, cb: Callback, answer: Value, sent: Sent, conn: u64) {
        self.calls.push(CallRecord {
            method: cb.method,
            args: cb.args,
            answer: Some(answer),
            reply_kind: sent.kind,
            conn,
            note: sent.note,
        });
    }
}

/// What `StartInstance` returned.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartedInstance {
    pub id: i64,
    /// The raw answer, for reports.
    pub answer: serde_json::Value,
}

/// A protocol client for one plugin server socket.
pub enum Client {
    MsgPack(mp::MpClient),
    ProtoBuf(pb::PbClient),
}

impl Client {
    pub fn new(opts: HostOptions) -> Client {
        match opts.protocol {
            Protocol::MsgPack => Client::MsgPack(mp::MpClient::new(opts)),
            Protocol::ProtoBuf => Client::ProtoBuf(pb::PbClient::new(opts)),
        }
    }

    pub fn options(&self) -> &HostOptions {
        match self {
            Client::MsgPack(c) => c.options(),
            Client::ProtoBuf(c) => c.options(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.options().protocol
    }

    pub fn trace(&self) -> &Trace {
        match self {
            Client::MsgPack(c) => c.trace(),
            Client::ProtoBuf(c) => c.trace(),
        }
    }

    pub async fn start_instance(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<StartedInstance, HostError> {
        match self {
            Client::MsgPack(c) => c.start_instance(name, config_json).await,
            Client::ProtoBuf(c) => c.start_instance(name, config_json).await,
        }
    }

    pub async fn close_instance(&self, id: i64) -> Result<(), HostError> {
        match self {
            Client::MsgPack(c) => c.close_instance(id).await,
            Client::ProtoBuf(c) => c.close_instance(id).await,
        }
    }

    /// Runs one event: HandleEvent, then the callback loop until the server is done.
    pub async fn handle_event(
        &self,
        instance_id: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventReport, HostError> {
        let mut report = EventReport::new(phase, instance_id);
        self.handle_event_into(instance_id, phase, pdk, &mut report)
            .await
            .map(|()| report)
    }

    /// [`Client::handle_event`] into `report`, which keeps the transcript of what happened
    /// before a failure (the PDK calls answered, the connections used).
    pub async fn handle_event_into(
        &self,
        instance_id: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
        report: &mut EventReport,
    ) -> Result<(), HostError> {
        match self {
            Client::MsgPack(c) => c.handle_event(instance_id, phase, pdk, report).await,
            Client::ProtoBuf(c) => c.handle_event(instance_id, phase, pdk, report).await,
        }
    }

    /// Drops every pooled connection.
    pub fn clear_pool(&self) {
        match self {
            Client::MsgPack(c) => c.clear_pool(),
            Client::ProtoBuf(c) => c.clear_pool(),
        }
    }
}
