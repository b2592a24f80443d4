//! A raw client for conformance checks: exact control over what goes on the wire (bytes one at a
//! time, two requests in one write, garbage, a client that vanishes) and a Kong-like event driver
//! that records every callback exactly as the server sent it.
//!
//! Built on the pure codecs ([`crate::msgpack`], [`crate::protobuf`]) and a tokio `UnixStream`.
//! Every read and write has a deadline, so a server that never answers fails a check with
//! "no answer after N s" instead of hanging the suite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::host::mp::{fix_multimap, step_method};
use crate::msgpack::{self, RpcMessage, StreamDecoder};
use crate::pdk::{Pdk, PdkOutcome};
use crate::protobuf::messages::{
    rpc_call, rpc_return, CmdCloseInstance, CmdHandleEvent, CmdStartInstance, RpcCall, RpcReturn,
};
use crate::protobuf::{encode_frame, pdk_table, FrameDecoder};
use crate::{Protocol, Value};

/// The largest message accepted from a server under test.
const MAX_MESSAGE: usize = 64 << 20;

/// What went wrong on the wire. The texts are what a failed check reports as "actual".
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("no answer after {secs} s while {what}")]
    Timeout { what: String, secs: f64 },
    #[error("the server closed the connection while {what}")]
    Closed { what: String },
    #[error("I/O error while {what}: {reason}")]
    Io { what: String, reason: String },
    #[error("undecodable answer while {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error("unexpected answer while {what}: {detail}")]
    Shape { what: String, detail: String },
}

/// Seconds as a short human number (`2`, `0.5`).
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// One raw connection.
pub struct Wire {
    stream: UnixStream,
    mp: StreamDecoder,
    pb: FrameDecoder,
    rbuf: Vec<u8>,
    /// Deadline of every read and write.
    pub timeout: Duration,
    /// Notifications met while waiting for MsgPack responses (`[2, label, args]`).
    pub notifications: Vec<(String, Value)>,
}

impl Wire {
    /// Connects within `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Wire, WireError> {
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(socket)).await {
            Err(_) => {
                return Err(WireError::Timeout {
                    what: format!("connecting to {}", socket.display()),
                    secs: secs(timeout),
                })
            }
            Ok(Err(e)) => {
                return Err(WireError::Connect {
                    socket: socket.to_owned(),
                    reason: e.to_string(),
                })
            }
            Ok(Ok(s)) => s,
        };
        Ok(Wire {
            stream,
            mp: StreamDecoder::new(MAX_MESSAGE),
            pb: FrameDecoder::new(MAX_MESSAGE),
            rbuf: vec![0; 64 * 1024],
            timeout,
            notifications: Vec::new(),
        })
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), WireError> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Err(_) => Err(WireError::Timeout {
                what: format!("writing {what} (the server is not reading)"),
                secs: secs(self.timeout),
            }),
            Ok(Err(e)) => Err(WireError::Io {
                what: format!("writing {what}"),
                reason: e.to_string(),
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes `bytes` one byte per write, pausing `pause` between writes.
    pub async fn send_bytewise(
        &mut self,
        bytes: &[u8],
        pause: Duration,
        what: &str,
    ) -> Result<(), WireError> {
        for b in bytes {
            self.send(std::slice::from_ref(b), what).await?;
            self.stream.flush().await.ok();
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    /// Reads what is available into the MessagePack (`pb` false) or frame decoder.
    async fn fill(&mut self, what: &str, pb: bool) -> Result<(), WireError> {
        match tokio::time::timeout(self.timeout, self.stream.read(&mut self.rbuf)).await {
            Err(_) => Err(WireError::Timeout {
                what: what.to_owned(),
                secs: secs(self.timeout),
            }),
            Ok(Ok(0)) => Err(WireError::Closed {
                what: what.to_owned(),
            }),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Err(WireError::Closed {
                    what: what.to_owned(),
                })
            }
            Ok(Err(e)) => Err(WireError::Io {
                what: what.to_owned(),
                reason: e.to_string(),
            }),
            Ok(Ok(n)) => {
                if pb {
                    self.pb.feed(&self.rbuf[..n]);
                } else {
                    self.mp.feed(&self.rbuf[..n]);
                }
                Ok(())
            }
        }
    }

    /// The next MessagePack-RPC response (notifications are collected, not returned).
    pub async fn recv_mp(&mut self, what: &str) -> Result<RpcMessage, WireError> {
        loop {
            match self.mp.next_value() {
                Ok(Some(v)) => match RpcMessage::from_value(v) {
                    Ok(RpcMessage::Notification { label, args }) => {
                        self.notifications.push((label, args));
                    }
                    Ok(m) => return Ok(m),
                    Err(e) => {
                        return Err(WireError::Shape {
                            what: what.to_owned(),
                            detail: e.to_string(),
                        })
                    }
                },
                Ok(None) => self.fill(what, false).await?,
                Err(e) => {
                    return Err(WireError::Decode {
                        what: what.to_owned(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    /// One MsgPack call: `Ok(Ok(result))`, or `Ok(Err(error))` for an error response.
    pub async fn mp_call(
        &mut self,
        msgid: u64,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Result<Value, Value>, WireError> {
        let mut out = Vec::new();
        msgpack::encode_request(msgid, method, &params, &mut out);
        self.send(&out, method).await?;
        self.mp_answer(msgid, method).await
    }

    /// Reads the response to request `msgid`.
    pub async fn mp_answer(
        &mut self,
        msgid: u64,
        method: &str,
    ) -> Result<Result<Value, Value>, WireError> {
        let what = format!("waiting for the answer to {method} (msgid {msgid})");
        match self.recv_mp(&what).await? {
            RpcMessage::Response {
                msgid: got,
                error,
                result,
            } => {
                if got != msgid {
                    return Err(WireError::Shape {
                        what,
                        detail: format!("the response carries msgid {got}, not {msgid}"),
                    });
                }
                Ok(if error.is_nil() {
                    Ok(result)
                } else {
                    Err(error)
                })
            }
            other => Err(WireError::Shape {
                what,
                detail: format!("expected a response [1, msgid, error, result], got {other:?}"),
            }),
        }
    }

    /// The next ProtoBuf frame.
    pub async fn recv_frame(&mut self, what: &str) -> Result<Vec<u8>, WireError> {
        loop {
            match self.pb.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.fill(what, true).await?,
                Err(e) => {
                    return Err(WireError::Decode {
                        what: what.to_owned(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    /// Sends `frame(payload)`.
    pub async fn send_frame(&mut self, payload: &[u8], what: &str) -> Result<(), WireError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        encode_frame(payload, &mut out);
        self.send(&out, what).await
    }

    /// Reads and decodes an `RpcReturn`, checking that it echoes `sequence`.
    pub async fn pb_return(&mut self, sequence: i64, what: &str) -> Result<RpcReturn, WireError> {
        let frame = self.recv_frame(what).await?;
        let ret = RpcReturn::decode(frame.as_slice()).map_err(|e| WireError::Decode {
            what: what.to_owned(),
            detail: format!("not an RpcReturn: {e}"),
        })?;
        if ret.sequence != sequence {
            return Err(WireError::Shape {
                what: what.to_owned(),
                detail: format!(
                    "RpcReturn.sequence is {}, but the call carried {sequence} (Kong asserts they \
                     are equal, spec §5.2)",
                    ret.sequence
                ),
            });
        }
        Ok(ret)
    }

    /// Waits up to `within` and says whether the server closed the connection (`Ok(true)`),
    /// sent something (`Err` with a description) or stayed silent with the connection open
    /// (`Ok(false)`).
    pub async fn closed_within(&mut self, within: Duration) -> Result<bool, String> {
        let unread = self.mp.buffered() + self.pb.buffered();
        if unread > 0 {
            return Err(format!("{unread} unread byte(s)"));
        }
        match tokio::time::timeout(within, self.stream.read(&mut self.rbuf)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(true),
            Ok(Ok(n)) => Err(format!(
                "{n} byte(s): {}",
                crate::host::hex(&self.rbuf[..n.min(32)])
            )),
        }
    }
}

/// How a check answers a callback.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The PDK's first return value (`Nil`: MsgPack `Data` absent, ProtoBuf empty frame or the
    /// wrapped nil).
    Value(Value),
    /// MsgPack: this value, sent with this Step method instead of Kong's choice.
    Variant(&'static str, Value),
    /// Terminal (`kong.response.exit`): Kong sends nothing more for this event.
    Terminal,
}

/// Kong's answer for a [`Pdk`] outcome.
pub fn answer_from(outcome: PdkOutcome) -> Answer {
    match outcome {
        PdkOutcome::Return(v) => Answer::Value(v),
        PdkOutcome::Exit { .. } => Answer::Terminal,
        PdkOutcome::Raise(_) | PdkOutcome::NotFound | PdkOutcome::SoftError(_) => {
            Answer::Value(Value::Nil)
        }
        // Checks answer at once; a scripted delay only matters to scenarios.
        PdkOutcome::Delayed { then, .. } => answer_from(*then),
    }
}

/// One callback as the server sent it.
#[derive(Debug, Clone)]
pub struct Callback {
    pub method: String,
    pub args: Vec<Value>,
    /// MsgPack: the type of `Args` when it is not an array (`None`: an array, as Kong expects).
    pub args_not_array: Option<&'static str>,
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
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Done => f.write_str("finished (\"ret\")"),
            End::Exit => f.write_str("ended with kong.response.exit"),
            End::Error(e) => write!(f, "an error response {e:?}"),
            End::Closed => f.write_str("the connection was closed without an answer"),
            End::MethodNotFound(m) => write!(f, "a call of {m:?}, which Kong's PDK table lacks"),
        }
    }
}

/// The record of one event.
#[derive(Debug, Clone)]
pub struct EventRun {
    pub callbacks: Vec<Callback>,
    pub end: End,
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
    /// Every Step on a new connection (what Kong's pool may do, spec §4.1).
    Fresh,
}

/// What StartInstance/HandleEvent got instead of success.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// MsgPack: an error response; ProtoBuf: the connection closed without a reply.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A Kong-like host for one server socket, raw enough to see everything.
#[derive(Clone)]
pub struct RawHost {
    pub protocol: Protocol,
    pub socket: PathBuf,
    pub timeout: Duration,
    msgid: Arc<AtomicU64>,
    sequence: Arc<AtomicI64>,
}

impl RawHost {
    pub fn new(protocol: Protocol, socket: PathBuf, timeout: Duration) -> RawHost {
        RawHost {
            protocol,
            socket,
            timeout,
            msgid: Arc::new(AtomicU64::new(1)),
            // Kong's first ProtoBuf call carries sequence 2 (spec §5.2).
            sequence: Arc::new(AtomicI64::new(2)),
        }
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Wire, WireError> {
        Wire::connect(&self.socket, self.timeout).await
    }

    /// The next MsgPack msgid.
    pub fn next_msgid(&self) -> u64 {
        self.msgid.fetch_add(1, Ordering::Relaxed)
    }

    /// The next ProtoBuf sequence.
    pub fn next_sequence(&self) -> i64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// The bytes of a StartInstance call (MsgPack request or ProtoBuf frame).
    pub fn start_instance_bytes(&self, name: &str, config: &str) -> (Vec<u8>, u64, i64) {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::MsgPack => {
                let id = self.next_msgid();
                let params = vec![Value::map([
                    ("Name", Value::str(name)),
                    ("Config", Value::str(config)),
                ])];
                msgpack::encode_request(id, "plugin.StartInstance", &params, &mut out);
                (out, id, 0)
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                let call = RpcCall {
                    sequence: seq,
                    call: Some(rpc_call::Call::CmdStartInstance(CmdStartInstance {
                        name: name.to_owned(),
                        config: config.as_bytes().to_vec(),
                    })),
                };
                encode_frame(&call.encode_to_vec(), &mut out);
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
                Ok(result) => result.get("Id").and_then(Value::as_i64).ok_or_else(|| {
                    Refusal::Wire(WireError::Shape {
                        what: "reading the answer to plugin.StartInstance".into(),
                        detail: format!("expected a map with an integer Id, got {result:?}"),
                    })
                }),
                Err(e) => Err(Refusal::Rejected(error_text(&e))),
            },
            Protocol::ProtoBuf => {
                let ret = pb_or_closed(
                    w.pb_return(seq, "waiting for the StartInstance reply")
                        .await,
                )?;
                match ret.r#return {
                    Some(rpc_return::Return::InstanceStatus(s)) => Ok(i64::from(s.instance_id)),
                    other => Err(Refusal::Wire(WireError::Shape {
                        what: "reading the StartInstance reply".into(),
                        detail: format!(
                            "expected instance_status, got {other:?} (Kong indexes \
                             instance_status.instance_id, spec §5.2)"
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
                match w
                    .mp_call(msgid, "plugin.CloseInstance", vec![Value::Int(id)])
                    .await?
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Refusal::Rejected(error_text(&e))),
                }
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                let call = RpcCall {
                    sequence: seq,
                    call: Some(rpc_call::Call::CmdCloseInstance(CmdCloseInstance {
                        instance_id: i32::try_from(id).unwrap_or(i32::MAX),
                    })),
                };
                w.send_frame(&call.encode_to_vec(), "CloseInstance").await?;
                pb_or_closed(
                    w.pb_return(seq, "waiting for the CloseInstance reply")
                        .await,
                )?;
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

    /// Sets the next ProtoBuf sequence (Kong's counter is per plugin per worker and only ever
    /// grows; checks use large values to catch truncation).
    pub fn set_sequence(&self, next: i64) {
        self.sequence.store(next, Ordering::Relaxed);
    }

    /// The bytes of a HandleEvent call, and its msgid (MsgPack) or sequence (ProtoBuf).
    pub fn handle_event_bytes(&self, instance: i64, phase: &str) -> (Vec<u8>, i64) {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::MsgPack => {
                let id = self.next_msgid();
                let params = vec![Value::map([
                    ("InstanceId", Value::Int(instance)),
                    ("EventName", Value::str(phase)),
                ])];
                msgpack::encode_request(id, "plugin.HandleEvent", &params, &mut out);
                (out, id as i64)
            }
            Protocol::ProtoBuf => {
                let seq = self.next_sequence();
                let call = RpcCall {
                    sequence: seq,
                    call: Some(rpc_call::Call::CmdHandleEvent(CmdHandleEvent {
                        instance_id: i32::try_from(instance).unwrap_or(i32::MAX),
                        event_name: phase.to_owned(),
                    })),
                };
                encode_frame(&call.encode_to_vec(), &mut out);
                (out, seq)
            }
        }
    }

    /// Sends HandleEvent on `w` and returns the sequence used (ProtoBuf) or msgid (MsgPack).
    pub async fn send_handle_event(
        &self,
        w: &mut Wire,
        instance: i64,
        phase: &str,
    ) -> Result<i64, WireError> {
        let (bytes, id) = self.handle_event_bytes(instance, phase);
        w.send(&bytes, "HandleEvent").await?;
        Ok(id)
    }

    /// Runs one event on a new connection with `pdk` answering.
    pub async fn event(
        &self,
        instance: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventRun, WireError> {
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
        answer: &mut dyn FnMut(&str, &[Value]) -> Answer,
    ) -> Result<EventRun, WireError> {
        let id = self.send_handle_event(w, instance, phase).await?;
        self.continue_event(w, id, steps, answer).await
    }

    /// The rest of an event whose HandleEvent (msgid or sequence `id`) was sent on `w`.
    pub async fn continue_event(
        &self,
        w: &mut Wire,
        id: i64,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> Answer,
    ) -> Result<EventRun, WireError> {
        match self.protocol {
            Protocol::MsgPack => {
                let first = w.mp_answer(id as u64, "plugin.HandleEvent").await?;
                self.mp_loop(w, first, steps, answer).await
            }
            Protocol::ProtoBuf => self.pb_loop(w, id, answer).await,
        }
    }

    /// MsgPack: continues an event from the answer to its HandleEvent (or a Step).
    pub async fn mp_loop(
        &self,
        w: &mut Wire,
        first: Result<Value, Value>,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> Answer,
    ) -> Result<EventRun, WireError> {
        let mut run = EventRun {
            callbacks: Vec::new(),
            end: End::Done,
        };
        let mut current = first;
        let mut fresh: Option<Wire> = None;
        loop {
            let result = match current {
                Ok(r) => r,
                Err(e) => {
                    run.end = End::Error(error_text(&e));
                    return Ok(run);
                }
            };
            let Some(event_id) = result.get("EventId").and_then(Value::as_i64) else {
                return Err(WireError::Shape {
                    what: "reading an event answer".into(),
                    detail: format!("expected {{EventId: <integer>, Data: ...}}, got {result:?}"),
                });
            };
            let data = result.get("Data").cloned();
            match data {
                Some(d) if d.as_bytes() == Some(b"ret") => {
                    run.end = End::Done;
                    return Ok(run);
                }
                Some(d) => {
                    let Some(method) = d.get("Method").and_then(Value::as_str).map(str::to_owned)
                    else {
                        return Err(WireError::Shape {
                            what: format!("reading a callback of event {event_id}"),
                            detail: format!(
                                "expected Data = \"ret\" or {{Method: <string>, Args: [...]}}, got {d:?}"
                            ),
                        });
                    };
                    let (args, args_not_array) = match d.get("Args") {
                        Some(Value::Array(a)) => (a.clone(), None),
                        None => (Vec::new(), None),
                        Some(other) => (vec![other.clone()], Some(other.type_name())),
                    };
                    let a = answer(&method, &args);
                    let multimap = step_method(&method) == "plugin.StepMultiMap";
                    run.callbacks.push(Callback {
                        method: method.clone(),
                        args,
                        args_not_array,
                    });
                    let (step, value) = match a {
                        Answer::Terminal => {
                            run.end = End::Exit;
                            return Ok(run);
                        }
                        Answer::Value(v) if multimap => (step_method(&method), fix_multimap(v)),
                        Answer::Value(v) => (step_method(&method), v),
                        Answer::Variant(s, v) => (s, v),
                    };
                    let mut arg = vec![(Value::str("EventId"), Value::Int(event_id))];
                    if !value.is_nil() {
                        arg.push((Value::str("Data"), value));
                    }
                    let msgid = self.next_msgid();
                    let conn = match steps {
                        StepConns::Same => &mut *w,
                        StepConns::Fresh => fresh.insert(self.connect().await?),
                    };
                    current = conn.mp_call(msgid, step, vec![Value::Map(arg)]).await?;
                }
                None => {
                    return Err(WireError::Shape {
                        what: format!("reading an answer of event {event_id}"),
                        detail: format!("the answer has no Data: {result:?}"),
                    })
                }
            }
        }
    }

    /// ProtoBuf: the HandleEvent conversation after the call was sent (spec §5.3).
    async fn pb_loop(
        &self,
        w: &mut Wire,
        seq: i64,
        answer: &mut dyn FnMut(&str, &[Value]) -> Answer,
    ) -> Result<EventRun, WireError> {
        let mut run = EventRun {
            callbacks: Vec::new(),
            end: End::Done,
        };
        loop {
            let name = match w
                .recv_frame("waiting for a callback or the end of the event")
                .await
            {
                Ok(n) => n,
                Err(WireError::Closed { .. }) => {
                    run.end = End::Closed;
                    return Ok(run);
                }
                Err(e) => return Err(e),
            };
            if name.is_empty() {
                w.pb_return(seq, "waiting for the RpcReturn after the empty frame")
                    .await?;
                run.end = End::Done;
                return Ok(run);
            }
            let method = String::from_utf8_lossy(&name).into_owned();
            let args_frame = match w
                .recv_frame(&format!(
                    "waiting for the arguments of {}",
                    pdk_table::method_label(&name)
                ))
                .await
            {
                Ok(f) => f,
                Err(WireError::Closed { .. }) => {
                    run.end = End::Closed;
                    return Ok(run);
                }
                Err(e) => return Err(e),
            };
            let Some(spec) = pdk_table::lookup(&method) else {
                run.callbacks.push(Callback {
                    method: method.clone(),
                    args: Vec::new(),
                    args_not_array: None,
                });
                run.end = End::MethodNotFound(method);
                return Ok(run);
            };
            let args =
                pdk_table::unwrap_args(spec, &args_frame).map_err(|e| WireError::Decode {
                    what: format!("reading the arguments of {method}"),
                    detail: e.to_string(),
                })?;
            let a = answer(&method, &args);
            run.callbacks.push(Callback {
                method: method.clone(),
                args,
                args_not_array: None,
            });
            let value = match a {
                Answer::Terminal => {
                    run.end = End::Exit;
                    return Ok(run);
                }
                Answer::Value(v) | Answer::Variant(_, v) => v,
            };
            let reply = pdk_table::wrap_result(spec, &value).unwrap_or_default();
            w.send_frame(&reply, &format!("the reply to {method}"))
                .await?;
        }
    }
}

/// A ProtoBuf reply read: a close without reply is how a server refuses (spec §5.2).
fn pb_or_closed(r: Result<RpcReturn, WireError>) -> Result<RpcReturn, Refusal> {
    match r {
        Ok(x) => Ok(x),
        Err(WireError::Closed { .. }) => Err(Refusal::Rejected(
            "the connection was closed without a reply".into(),
        )),
        Err(e) => Err(Refusal::Wire(e)),
    }
}

/// An error value as text.
pub fn error_text(e: &Value) -> String {
    match e.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => format!("{e:?}"),
    }
}
