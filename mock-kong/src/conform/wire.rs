//! The conformance client: exact control over what goes on the wire (bytes one at a time, two
//! requests in one write, garbage, a client that vanishes) around the same event drivers the
//! host uses ([`mock_kong_codec::event`]), so a check accepts exactly what Kong's host accepts.
//!
//! Built on the host's timed connection ([`crate::host::conn::Conn`]) and its options
//! ([`HostOptions`]: the same timeouts, deadline and caps), so a server that never answers
//! fails a check with "no answer after N s" instead of hanging the suite, and one that floods
//! fails it at the host's limits. What differs from the host is only what a check needs to see:
//! MsgPack Steps on the HandleEvent's connection or each on a new one ([`StepConns`]), a raw
//! decoder per connection (pipelined answers), and an event's end as data ([`End`]) rather than
//! an error.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::host::conn::{self, Conn, Deadline, Probe};
use crate::host::{reply_for, HostError, HostOptions, Timeouts};
use crate::msgpack::StreamDecoder;
use crate::pdk::{Pdk, PdkOutcome};
use crate::protobuf::messages::{rpc_return, RpcReturn};
use crate::protobuf::{encode_frame, FrameDecoder};
use crate::{Protocol, Value};
use mock_kong_codec::event::mp::{self, CallReader, Incoming, MpEvent};
use mock_kong_codec::event::pb::{self, PbEvent};
use mock_kong_codec::event::{self as driver, Budget};

pub use mock_kong_codec::event::{error_text, Callback, Quirk, Quirks, Reply};

/// Seconds as a short human number (`2`, `0.5`), for check texts.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// One raw connection.
pub struct Wire {
    conn: Conn,
    mp: StreamDecoder,
    pb: FrameDecoder,
    opts: Arc<HostOptions>,
    /// Notifications met while waiting for MsgPack responses (`[2, label, args]`).
    pub notifications: Vec<(String, Value)>,
    /// Legal but unusual choices noticed in the MsgPack envelopes read on this connection.
    pub quirks: Quirks,
    /// Where every quirk noticed is also recorded (the host's, for the whole check).
    sink: Arc<Mutex<Quirks>>,
}

impl Wire {
    /// Connects within the connect timeout.
    pub async fn connect(opts: Arc<HostOptions>) -> Result<Wire, HostError> {
        Wire::connect_noting(opts, Arc::default()).await
    }

    async fn connect_noting(
        opts: Arc<HostOptions>,
        sink: Arc<Mutex<Quirks>>,
    ) -> Result<Wire, HostError> {
        let conn = conn::connect(&opts.socket, &opts.timeouts).await?;
        Ok(Wire {
            conn,
            mp: StreamDecoder::new(opts.max_frame),
            pb: FrameDecoder::new(opts.max_frame),
            opts,
            notifications: Vec::new(),
            quirks: Quirks::default(),
            sink,
        })
    }

    fn note(&mut self, q: Quirks) {
        self.quirks.extend(q);
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(q);
    }

    fn timeouts(&self) -> Timeouts {
        self.opts.timeouts
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), HostError> {
        let t = self.timeouts().write;
        self.conn.write_all(bytes, t, &|| what.to_owned()).await
    }

    /// Writes `bytes` one byte per write, pausing `pause` between writes.
    pub async fn send_bytewise(
        &mut self,
        bytes: &[u8],
        pause: Duration,
        what: &str,
    ) -> Result<(), HostError> {
        for b in bytes {
            self.send(std::slice::from_ref(b), what).await?;
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Reads what is available into the MessagePack (`pb` false) or frame decoder, counting it
    /// against `budget`.
    async fn fill(
        &mut self,
        deadline: &Deadline,
        budget: &mut Budget,
        what: &str,
        pb: bool,
    ) -> Result<(), HostError> {
        let t = self.timeouts().read;
        let bytes = self
            .conn
            .read_some_by(t, deadline, &|| what.to_owned())
            .await?;
        budget.take(bytes.len(), || format!("reading while {what}"))?;
        if pb {
            self.pb.feed(bytes);
        } else {
            self.mp.feed(bytes);
        }
        Ok(())
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.opts.effective_call_deadline())
    }

    /// One MsgPack call: `Ok(Ok(result))`, or `Ok(Err(error))` for an error response.
    pub async fn mp_call(
        &mut self,
        msgid: u64,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Result<Value, Value>, HostError> {
        let mut out = Vec::new();
        crate::msgpack::encode_request(msgid, method, &params, &mut out);
        self.send(&out, method).await?;
        self.mp_answer(msgid, method).await
    }

    /// Reads the response to request `msgid` (notifications met on the way are collected).
    pub async fn mp_answer(
        &mut self,
        msgid: u64,
        method: &str,
    ) -> Result<Result<Value, Value>, HostError> {
        let mut budget = Budget::new(self.opts.max_event_bytes);
        self.mp_answer_within(msgid, method, &mut budget).await
    }

    async fn mp_answer_within(
        &mut self,
        msgid: u64,
        method: &str,
        budget: &mut Budget,
    ) -> Result<Result<Value, Value>, HostError> {
        let mut reader = CallReader::new(msgid, method, self.opts.max_notifications);
        let what = format!("waiting for {}", reader.describe());
        let deadline = self.deadline();
        loop {
            let next = reader.next(&mut self.mp);
            self.note(reader.quirks());
            match next? {
                Some(Incoming::Notification { label, args }) => {
                    self.notifications.push((label, args))
                }
                Some(Incoming::Response { result, .. }) => return Ok(result),
                None => self.fill(&deadline, budget, &what, false).await?,
            }
        }
    }

    /// The next ProtoBuf frame.
    pub async fn recv_frame(&mut self, what: &str) -> Result<Vec<u8>, HostError> {
        let mut budget = Budget::new(self.opts.max_event_bytes);
        self.recv_frame_within(&self.deadline(), &mut budget, what)
            .await
    }

    async fn recv_frame_within(
        &mut self,
        deadline: &Deadline,
        budget: &mut Budget,
        what: &str,
    ) -> Result<Vec<u8>, HostError> {
        loop {
            match self.pb.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.fill(deadline, budget, what, true).await?,
                Err(e) => {
                    return Err(HostError::Decode {
                        what: what.to_owned(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    /// Sends `frame(payload)`.
    pub async fn send_frame(&mut self, payload: &[u8], what: &str) -> Result<(), HostError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        encode_frame(payload, &mut out);
        self.send(&out, what).await
    }

    /// Reads and decodes the `RpcReturn` of `name`, checking that it echoes `sequence`.
    pub async fn pb_return(&mut self, sequence: i64, name: &str) -> Result<RpcReturn, HostError> {
        let frame = self
            .recv_frame(&format!("waiting for the {name} reply"))
            .await?;
        pb::decode_return(&frame, name, sequence)
    }

    /// Waits up to `within` and says whether the server closed the connection (`Ok(true)`),
    /// sent something (`Err` with a description) or stayed silent with the connection open
    /// (`Ok(false)`).
    pub async fn closed_within(&mut self, within: Duration) -> Result<bool, String> {
        let unread = self.mp.buffered() + self.pb.buffered();
        if unread > 0 {
            return Err(format!("{unread} unread byte(s)"));
        }
        match self.conn.probe(within).await {
            Probe::Silent => Ok(false),
            Probe::Closed => Ok(true),
            Probe::Bytes(b) => Err(format!(
                "{} byte(s): {}",
                b.len(),
                crate::host::hex(&b[..b.len().min(32)])
            )),
        }
    }
}

/// Kong's reply to a [`Pdk`] outcome, as the checks answer callbacks: the host's mapping
/// ([`reply_for`]), except that what the small emulated request does not know is answered nil,
/// so a check never fails because mock-kong's PDK lacks a function the plugin calls.
pub fn answer_from(outcome: PdkOutcome) -> Reply {
    match reply_for(outcome).0 {
        Reply::NotFound => Reply::Value(Value::Nil),
        other => other,
    }
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// `"ret"` / empty frame + `RpcReturn`.
    Done,
    /// The last callback was terminal; nothing more was read.
    Exit,
    /// MsgPack: an error response (the text).
    Error(String),
    /// ProtoBuf: the connection was closed without an answer.
    Closed,
    /// ProtoBuf: the server called a method missing from Kong's PDK table (Kong: HTTP 500).
    MethodNotFound(String),
    /// The answer to a callback raised (or could not be encoded for its output type): nothing
    /// was sent, as Kong aborts the handler.
    Raised { method: String, error: String },
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Done => f.write_str("finished (\"ret\")"),
            End::Exit => f.write_str("ended with kong.response.exit"),
            End::Error(e) => write!(f, "an error response {e:?}"),
            End::Closed => f.write_str("the connection was closed without an answer"),
            End::MethodNotFound(m) => write!(f, "a call of {m:?}, which Kong's PDK table lacks"),
            End::Raised { method, error } => {
                write!(f, "was aborted: answering {method} raised ({error})")
            }
        }
    }
}

impl From<driver::End> for End {
    fn from(end: driver::End) -> End {
        match end {
            driver::End::Done => End::Done,
            driver::End::Exit => End::Exit,
            driver::End::Raised { method, error } => End::Raised { method, error },
            driver::End::MethodNotFound(m) => End::MethodNotFound(m),
            driver::End::ServerError { message, .. } => End::Error(message),
        }
    }
}

/// The record of one event.
#[derive(Debug, Clone)]
pub struct EventRun {
    pub callbacks: Vec<Callback>,
    pub end: End,
    /// Legal but unusual choices of the server in this event (MsgPack; see [`Quirk`]).
    pub quirks: Quirks,
}

impl EventRun {
    /// The callback methods in order.
    pub fn methods(&self) -> Vec<&str> {
        self.callbacks.iter().map(|c| c.method.as_str()).collect()
    }
}

/// How MsgPack Steps travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepConns {
    /// Every Step on the connection of the HandleEvent.
    Same,
    /// Every Step on a new connection (what Kong's pool may do, docs/protocol.md §4.1).
    Fresh,
}

/// What StartInstance/HandleEvent got instead of success.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// MsgPack: an error response; ProtoBuf: the connection closed without a reply.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Wire(#[from] HostError),
}

/// An event whose HandleEvent was written ([`RawHost::handle_event_bytes`]): its driver, and
/// for MsgPack the msgid of the HandleEvent call.
#[derive(Debug)]
pub enum Started<'a> {
    MsgPack { msgid: u64, event: MpEvent<'a> },
    ProtoBuf(PbEvent<'a>),
}

/// A Kong-like host for one server socket, raw enough to see everything.
#[derive(Clone)]
pub struct RawHost {
    pub protocol: Protocol,
    opts: Arc<HostOptions>,
    msgid: Arc<AtomicU64>,
    sequence: Arc<AtomicI64>,
    /// Every legal but unusual choice noticed on any connection of this host (and its clones).
    quirks: Arc<Mutex<Quirks>>,
}

impl RawHost {
    /// A host for `socket` with every read, write and connect bounded by `timeout` (and the
    /// host's default caps and call deadline).
    pub fn new(protocol: Protocol, socket: PathBuf, timeout: Duration) -> RawHost {
        let mut opts = HostOptions::new(socket, protocol);
        opts.timeouts = Timeouts::uniform(timeout);
        RawHost {
            protocol,
            opts: Arc::new(opts),
            msgid: Arc::new(AtomicU64::new(1)),
            // Kong's first ProtoBuf call carries sequence 2 (docs/protocol.md §5.2).
            sequence: Arc::new(AtomicI64::new(2)),
            quirks: Arc::default(),
        }
    }

    /// The legal but unusual choices of the server noticed so far by this host and its clones
    /// (Kong accepts them; the conformance suite notes them at `info` level).
    pub fn quirks(&self) -> Quirks {
        *self.quirks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The options every connection of this host uses.
    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Wire, HostError> {
        Wire::connect_noting(self.opts.clone(), self.quirks.clone()).await
    }

    /// The next MsgPack msgid.
    pub fn next_msgid(&self) -> u64 {
        self.msgid.fetch_add(1, Ordering::Relaxed)
    }

    /// The next ProtoBuf sequence.
    pub fn next_sequence(&self) -> i64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Sets the next ProtoBuf sequence (Kong's counter is per plugin per worker and only ever
    /// grows; checks use large values to catch truncation).
    pub fn set_sequence(&self, next: i64) {
        self.sequence.store(next, Ordering::Relaxed);
    }

    /// The bytes of a StartInstance call (MsgPack request or ProtoBuf frame), with its msgid
    /// (MsgPack) or sequence (ProtoBuf).
    pub fn start_instance_bytes(&self, name: &str, config: &str) -> (Vec<u8>, u64, i64) {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::MsgPack => {
                let id = self.next_msgid();
                let params = mp::start_instance_params(name, config);
                crate::msgpack::encode_request(id, "plugin.StartInstance", &params, &mut out);
                (out, id, 0)
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                pb::encode_call(&pb::start_instance_call(seq, name, config), &mut out);
                (out, 0, seq)
            }
        }
    }

    /// Reads the answer to a StartInstance sent with [`RawHost::start_instance_bytes`].
    pub async fn start_instance_answer(
        &self,
        w: &mut Wire,
        msgid: u64,
        seq: i64,
    ) -> Result<i64, Refusal> {
        match self.protocol {
            Protocol::MsgPack => match w.mp_answer(msgid, "plugin.StartInstance").await? {
                Ok(result) => Ok(mp::instance_id(&result)?),
                Err(e) => Err(Refusal::Rejected(error_text(&e))),
            },
            Protocol::ProtoBuf => {
                let ret = pb_or_closed(w.pb_return(seq, "cmd_start_instance").await)?;
                match ret.r#return {
                    Some(rpc_return::Return::InstanceStatus(s)) => Ok(i64::from(s.instance_id)),
                    other => Err(Refusal::Wire(HostError::Shape {
                        what: "RpcReturn of cmd_start_instance".into(),
                        detail: format!(
                            "expected instance_status, got {other:?} (Kong indexes \
                             instance_status.instance_id, docs/protocol.md §5.2)"
                        ),
                    })),
                }
            }
        }
    }

    /// `StartInstance(name, config)` on `w`.
    pub async fn start_instance(
        &self,
        w: &mut Wire,
        name: &str,
        config: &str,
    ) -> Result<i64, Refusal> {
        let (bytes, msgid, seq) = self.start_instance_bytes(name, config);
        w.send(&bytes, "plugin.StartInstance").await?;
        self.start_instance_answer(w, msgid, seq).await
    }

    /// `CloseInstance(id)` on `w` (Kong ignores the answer; so do we, beyond reading it).
    pub async fn close_instance(&self, w: &mut Wire, id: i64) -> Result<(), Refusal> {
        match self.protocol {
            Protocol::MsgPack => {
                let msgid = self.next_msgid();
                let params = mp::close_instance_params(id);
                match w.mp_call(msgid, "plugin.CloseInstance", params).await? {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Refusal::Rejected(error_text(&e))),
                }
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                let mut out = Vec::new();
                pb::encode_call(&pb::close_instance_call(seq, id), &mut out);
                w.send(&out, "CloseInstance").await?;
                pb_or_closed(w.pb_return(seq, "cmd_close_instance").await)?;
                Ok(())
            }
        }
    }

    /// Starts an instance on a new connection.
    pub async fn start(&self, name: &str, config: &str) -> Result<i64, Refusal> {
        let mut w = self.connect().await?;
        self.start_instance(&mut w, name, config).await
    }

    /// Closes an instance on a new connection.
    pub async fn close(&self, id: i64) -> Result<(), Refusal> {
        let mut w = self.connect().await?;
        self.close_instance(&mut w, id).await
    }

    /// The bytes of a HandleEvent call, and the event they start.
    pub fn handle_event_bytes<'a>(&self, instance: i64, phase: &'a str) -> (Vec<u8>, Started<'a>) {
        let mut out = Vec::new();
        let max = self.opts.max_callbacks;
        match self.protocol {
            Protocol::MsgPack => {
                let msgid = self.next_msgid();
                let event = MpEvent::new(instance, phase, max, false);
                event.start().encode(msgid, &mut out);
                (out, Started::MsgPack { msgid, event })
            }
            Protocol::ProtoBuf => {
                let event = PbEvent::new(self.next_sequence(), instance, phase, max);
                pb::encode_call(&event.start(), &mut out);
                (out, Started::ProtoBuf(event))
            }
        }
    }

    /// Sends HandleEvent on `w` and returns the event it started.
    pub async fn send_handle_event<'a>(
        &self,
        w: &mut Wire,
        instance: i64,
        phase: &'a str,
    ) -> Result<Started<'a>, HostError> {
        let (bytes, started) = self.handle_event_bytes(instance, phase);
        w.send(&bytes, "HandleEvent").await?;
        Ok(started)
    }

    /// Runs one event on a new connection with `pdk` answering.
    pub async fn event(
        &self,
        instance: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventRun, HostError> {
        let mut w = self.connect().await?;
        self.drive(&mut w, instance, phase, StepConns::Same, &mut |m, a| {
            answer_from(pdk.call(phase, m, a))
        })
        .await
    }

    /// Runs one event: HandleEvent on `w`, then every callback answered by `answer` until the
    /// server is done, fails, or a terminal answer was given.
    pub async fn drive(
        &self,
        w: &mut Wire,
        instance: i64,
        phase: &str,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> Reply,
    ) -> Result<EventRun, HostError> {
        let started = self.send_handle_event(w, instance, phase).await?;
        self.continue_event(w, started, steps, answer).await
    }

    /// The rest of an event whose HandleEvent was sent on `w`.
    pub async fn continue_event(
        &self,
        w: &mut Wire,
        started: Started<'_>,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> Reply,
    ) -> Result<EventRun, HostError> {
        match started {
            Started::MsgPack { msgid, event } => {
                self.mp_event(w, msgid, event, steps, answer, None).await
            }
            Started::ProtoBuf(event) => self.pb_event(w, event, answer, None).await,
        }
    }

    /// [`RawHost::drive`] with a slow PDK answer: the first callback is answered only `pause`
    /// after it arrived (`paused` is set when the pause starts), as a Kong whose PDK call
    /// takes that long.
    pub async fn drive_paused(
        &self,
        w: &mut Wire,
        instance: i64,
        phase: &str,
        pause: Duration,
        paused: &std::sync::atomic::AtomicBool,
        answer: &mut dyn FnMut(&str, &[Value]) -> Reply,
    ) -> Result<EventRun, HostError> {
        let slow = Some((pause, paused));
        match self.send_handle_event(w, instance, phase).await? {
            Started::MsgPack { msgid, event } => {
                self.mp_event(w, msgid, event, StepConns::Same, answer, slow)
                    .await
            }
            Started::ProtoBuf(event) => self.pb_event(w, event, answer, slow).await,
        }
    }

    /// Whether the server's status lists instance `id` of plugin `name` (MsgPack
    /// `plugin.GetStatus`, ProtoBuf `cmd_get_instance_status`): `Ok(Ok(how))` listed,
    /// `Ok(Err(what))` not listed or refused, `Err` a transport failure.
    pub async fn instance_listed(
        &self,
        id: i64,
        name: &str,
    ) -> Result<Result<String, String>, String> {
        let mut w = self.connect().await.map_err(|e| e.to_string())?;
        match self.protocol {
            Protocol::MsgPack => {
                let msgid = self.next_msgid();
                let status = match w
                    .mp_call(msgid, "plugin.GetStatus", Vec::new())
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(format!("GetStatus answered {:?}", error_text(&e)))),
                };
                let instances = crate::lua::field(&status, "Plugins")
                    .and_then(|p| crate::lua::field(p, name))
                    .and_then(|p| crate::lua::field(p, "Instances"));
                let listed = instances
                    .and_then(crate::lua::pairs)
                    .is_some_and(|entries| {
                        entries.iter().any(|(_, x)| {
                            crate::lua::field(x, "Id").and_then(Value::as_i64) == Some(id)
                        })
                    });
                Ok(if listed {
                    Ok(format!(
                        "GetStatus lists instance {id} under Plugins.{name}.Instances"
                    ))
                } else {
                    Err(format!(
                        "GetStatus does not list instance {id}: Plugins.{name}.Instances is {}",
                        instances.map_or("missing".into(), driver::short)
                    ))
                })
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                let call = crate::protobuf::messages::RpcCall {
                    sequence: seq,
                    call: Some(
                        crate::protobuf::messages::rpc_call::Call::CmdGetInstanceStatus(
                            crate::protobuf::messages::CmdGetInstanceStatus {
                                instance_id: id as i32,
                            },
                        ),
                    ),
                };
                let mut out = Vec::new();
                pb::encode_call(&call, &mut out);
                w.send(&out, "cmd_get_instance_status")
                    .await
                    .map_err(|e| e.to_string())?;
                let ret = match pb_or_closed(w.pb_return(seq, "cmd_get_instance_status").await) {
                    Ok(r) => r,
                    Err(Refusal::Rejected(m)) => {
                        return Ok(Err(format!("cmd_get_instance_status({id}): {m}")))
                    }
                    Err(Refusal::Wire(e)) => return Err(e.to_string()),
                };
                Ok(match ret.r#return {
                    Some(rpc_return::Return::InstanceStatus(st))
                        if i64::from(st.instance_id) == id =>
                    {
                        Ok(format!(
                            "cmd_get_instance_status({id}) answers instance_status {{name: {:?}, \
                             instance_id: {id}}}",
                            st.name
                        ))
                    }
                    other => Err(format!(
                        "cmd_get_instance_status({id}) answered {}",
                        driver::short(&other)
                    )),
                })
            }
        }
    }

    /// MsgPack: the event after its HandleEvent (msgid `msgid`) was sent, through the driver.
    async fn mp_event(
        &self,
        w: &mut Wire,
        msgid: u64,
        mut ev: MpEvent<'_>,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> Reply,
        mut slow: Option<(Duration, &std::sync::atomic::AtomicBool)>,
    ) -> Result<EventRun, HostError> {
        let mut run = EventRun {
            callbacks: Vec::new(),
            end: End::Done,
            quirks: Quirks::default(),
        };
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let mut fresh: Option<Wire> = None;
        w.quirks = Quirks::default();
        let mut answered = w
            .mp_answer_within(msgid, "plugin.HandleEvent", &mut budget)
            .await;
        run.quirks.extend(std::mem::take(&mut w.quirks));
        loop {
            let next = ev.on_answer(answered?);
            run.quirks.extend(ev.quirks());
            w.note(ev.quirks());
            let cb = match next? {
                mp::Next::End(end) => {
                    run.end = end.into();
                    return Ok(run);
                }
                mp::Next::Callback(cb) => cb,
            };
            let reply = answer(&cb.method, &cb.args);
            pause(&mut slow).await;
            let replied = ev.reply(&cb.method, reply);
            run.callbacks.push(cb);
            let call = match replied {
                mp::Replied::End(end) => {
                    run.end = end.into();
                    return Ok(run);
                }
                mp::Replied::Call(call, _) => call,
            };
            let msgid = self.next_msgid();
            let conn = match steps {
                StepConns::Same => &mut *w,
                StepConns::Fresh => fresh.insert(self.connect().await?),
            };
            let mut out = Vec::new();
            call.encode(msgid, &mut out);
            conn.send(&out, call.method()).await?;
            answered = conn
                .mp_answer_within(msgid, call.method(), &mut budget)
                .await;
            run.quirks.extend(std::mem::take(&mut conn.quirks));
        }
    }

    /// ProtoBuf: the HandleEvent conversation after the call was sent, through the driver. A
    /// close instead of a frame ends the event as [`End::Closed`] (how a server refuses).
    async fn pb_event(
        &self,
        w: &mut Wire,
        mut ev: PbEvent<'_>,
        answer: &mut dyn FnMut(&str, &[Value]) -> Reply,
        mut slow: Option<(Duration, &std::sync::atomic::AtomicBool)>,
    ) -> Result<EventRun, HostError> {
        let mut run = EventRun {
            callbacks: Vec::new(),
            end: End::Done,
            quirks: Quirks::default(),
        };
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let mut deadline = w.deadline();
        loop {
            let frame = match w
                .recv_frame_within(&deadline, &mut budget, &ev.awaiting())
                .await
            {
                Ok(f) => f,
                Err(HostError::Closed { .. }) => {
                    run.end = End::Closed;
                    return Ok(run);
                }
                Err(e) => return Err(e),
            };
            let cb = match ev.on_frame(&frame)? {
                pb::Next::Frame => continue,
                pb::Next::End(driver::End::MethodNotFound(method)) => {
                    run.callbacks.push(Callback {
                        method: method.clone(),
                        args: Vec::new(),
                        args_not_array: None,
                    });
                    run.end = End::MethodNotFound(method);
                    return Ok(run);
                }
                pb::Next::End(end) => {
                    run.end = end.into();
                    return Ok(run);
                }
                pb::Next::Callback(cb) => cb,
            };
            let reply = answer(&cb.method, &cb.args);
            pause(&mut slow).await;
            let what = format!("the reply to {}", cb.method);
            run.callbacks.push(cb);
            let mut out = Vec::new();
            match ev.reply(
                &run.callbacks[run.callbacks.len() - 1].method,
                reply,
                &mut out,
            ) {
                pb::Replied::End(end) => {
                    run.end = end.into();
                    return Ok(run);
                }
                pb::Replied::Sent(..) => w.send(&out, &what).await?,
            }
            deadline = w.deadline();
        }
    }
}

/// A ProtoBuf reply read: a close without reply is how a server refuses (docs/protocol.md §5.2).
fn pb_or_closed(r: Result<RpcReturn, HostError>) -> Result<RpcReturn, Refusal> {
    match r {
        Ok(x) => Ok(x),
        Err(HostError::Closed { .. }) => Err(Refusal::Rejected(
            "the connection was closed without a reply".into(),
        )),
        Err(e) => Err(Refusal::Wire(e)),
    }
}

/// The pause of a slow PDK answer, taken once (the first callback): flags it, then sleeps.
async fn pause(slow: &mut Option<(Duration, &std::sync::atomic::AtomicBool)>) {
    if let Some((d, flag)) = slow.take() {
        flag.store(true, Ordering::SeqCst);
        tokio::time::sleep(d).await;
    }
}
