//! The `ProtoBuf:1` host client (spec §5).
//!
//! Each top-level call takes a pooled connection (or opens one); a HandleEvent conversation runs
//! entirely on that connection and the connection goes back to the pool only after the final
//! `RpcReturn` (spec §5.1). The sequence number starts at 2 and must be echoed (spec §5.2).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use prost::Message;

use super::conn::{self, Conn, Deadline};
use super::{
    CallRecord, Direction, EventEnd, EventReport, HostError, HostOptions, StartedInstance, Trace,
};
use crate::pdk::{Pdk, PdkOutcome};
use crate::protobuf::messages::{
    rpc_call, rpc_return, CmdCloseInstance, CmdHandleEvent, CmdStartInstance, RpcCall, RpcReturn,
};
use crate::protobuf::{encode_frame, pdk_table, FrameDecoder};
use crate::Value;

/// A connection with its frame reassembly state.
struct PbConn {
    conn: Conn,
    dec: FrameDecoder,
}

/// A ProtoBuf client with Kong's connection behaviour.
pub struct PbClient {
    opts: HostOptions,
    pool: Mutex<Vec<PbConn>>,
    /// Kong's `msg_id`; the sequence sent is `msg_id + 1` after the increment (2, 3, ...).
    msg_id: AtomicI64,
    trace: Trace,
}

impl PbClient {
    pub fn new(opts: HostOptions) -> PbClient {
        let trace = Trace::new(opts.trace);
        PbClient {
            opts,
            pool: Mutex::new(Vec::new()),
            msg_id: AtomicI64::new(0),
            trace,
        }
    }

    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    pub fn clear_pool(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    fn next_sequence(&self) -> i64 {
        self.msg_id.fetch_add(1, Ordering::Relaxed) + 2
    }

    async fn checkout(&self) -> Result<PbConn, HostError> {
        loop {
            let candidate = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match candidate {
                Some(c) if c.conn.is_stale() || c.dec.buffered() > 0 => continue,
                Some(c) => return Ok(c),
                None => {
                    let conn = conn::connect(&self.opts.socket, &self.opts.timeouts).await?;
                    return Ok(PbConn {
                        conn,
                        dec: FrameDecoder::new(self.opts.max_frame),
                    });
                }
            }
        }
    }

    fn checkin(&self, c: PbConn) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.opts.pool_size {
            pool.push(c);
        }
    }

    async fn write_frame(
        &self,
        c: &mut PbConn,
        payload: &[u8],
        summary: impl FnOnce() -> String,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<(), HostError> {
        let mut out = std::mem::take(&mut c.conn.wbuf);
        out.clear();
        encode_frame(payload, &mut out);
        self.trace.push(c.conn.id, Direction::Send, summary, &out);
        let written = c.conn.write_all(&out, self.opts.timeouts.write, what).await;
        c.conn.wbuf = out;
        written
    }

    /// Reads the next frame. Bounded: each read by the read timeout, the wait as a whole by
    /// `deadline`, the bytes read by `budget` (decremented by what was read).
    async fn read_frame(
        &self,
        c: &mut PbConn,
        deadline: &Deadline,
        budget: &mut u64,
        describe: &(dyn Fn(&[u8]) -> String + Sync),
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<Vec<u8>, HostError> {
        loop {
            match c.dec.next_frame() {
                Ok(Some(frame)) => {
                    if self.trace.enabled() {
                        let mut raw = Vec::with_capacity(frame.len() + 4);
                        encode_frame(&frame, &mut raw);
                        self.trace
                            .push(c.conn.id, Direction::Recv, || describe(&frame), &raw);
                    }
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(HostError::Decode {
                        what: what(),
                        detail: e.to_string(),
                    })
                }
            }
            let partial = c.dec.buffered();
            let what_now = || match partial {
                0 => what(),
                n => format!("{} ({n} byte(s) of a frame received so far)", what()),
            };
            let bytes = c
                .conn
                .read_some_by(self.opts.timeouts.read, deadline, &what_now)
                .await?;
            let n = bytes.len() as u64;
            if n > *budget {
                return Err(HostError::TooManyBytes {
                    what: what(),
                    limit: self.opts.max_event_bytes,
                });
            }
            *budget -= n;
            c.dec.feed(bytes);
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.opts.effective_call_deadline())
    }

    /// Sends one RpcCall and reads its RpcReturn on a pooled connection.
    async fn simple_call(&self, call: rpc_call::Call, name: &str) -> Result<RpcReturn, HostError> {
        let mut c = self.checkout().await?;
        let sequence = self.next_sequence();
        let msg = RpcCall {
            sequence,
            call: Some(call),
        };
        let payload = msg.encode_to_vec();
        let what = || format!("{name} (sequence {sequence})");
        self.write_frame(&mut c, &payload, || describe_call(&msg), &what)
            .await?;
        let mut budget = self.opts.max_event_bytes;
        let frame = self
            .read_frame(
                &mut c,
                &self.deadline(),
                &mut budget,
                &describe_return,
                &|| format!("waiting for RpcReturn of {name} (sequence {sequence})"),
            )
            .await?;
        let ret = decode_return(&frame, name, sequence)?;
        self.checkin(c);
        Ok(ret)
    }

    pub async fn start_instance(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<StartedInstance, HostError> {
        let call = rpc_call::Call::CmdStartInstance(CmdStartInstance {
            name: name.to_owned(),
            config: config_json.as_bytes().to_vec(),
        });
        let ret = self.simple_call(call, "cmd_start_instance").await?;
        match ret.r#return {
            Some(rpc_return::Return::InstanceStatus(st)) => Ok(StartedInstance {
                id: i64::from(st.instance_id),
                answer: serde_json::json!({
                    "name": st.name,
                    "instance_id": st.instance_id,
                    "started_at": st.started_at,
                }),
            }),
            other => Err(HostError::Shape {
                what: "RpcReturn of cmd_start_instance".into(),
                detail: format!("expected instance_status (field 33), got {other:?}"),
            }),
        }
    }

    pub async fn close_instance(&self, id: i64) -> Result<(), HostError> {
        let call = rpc_call::Call::CmdCloseInstance(CmdCloseInstance {
            instance_id: id as i32,
        });
        self.simple_call(call, "cmd_close_instance")
            .await
            .map(|_| ())
    }

    pub async fn handle_event(
        &self,
        instance_id: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventReport, HostError> {
        let mut report = EventReport::new(phase, instance_id);
        let ctx = || format!("event {phase} (instance {instance_id})");
        let mut budget = self.opts.max_event_bytes;
        let mut c = self.checkout().await?;
        report.used(c.conn.id);
        let sequence = self.next_sequence();
        let msg = RpcCall {
            sequence,
            call: Some(rpc_call::Call::CmdHandleEvent(CmdHandleEvent {
                instance_id: instance_id as i32,
                event_name: phase.to_owned(),
            })),
        };
        let payload = msg.encode_to_vec();
        let what = || format!("cmd_handle_event {phase} (sequence {sequence})");
        self.write_frame(&mut c, &payload, || describe_call(&msg), &what)
            .await?;
        let conn_id = c.conn.id;
        loop {
            // One deadline for the server's next message: a method name and its arguments.
            let deadline = self.deadline();
            let name = self
                .read_frame(&mut c, &deadline, &mut budget, &describe_name, &|| {
                    format!("waiting for a PDK method name or the end-of-event frame (sequence {sequence})")
                })
                .await
                .map_err(|e| e.in_context(&ctx()))?;
            if name.is_empty() {
                break;
            }
            let method = String::from_utf8_lossy(&name).into_owned();
            if report.calls.len() >= self.opts.max_callbacks {
                return Err(HostError::TooManyCallbacks {
                    what: format!("callback {} in {}", short_name(&method), ctx()),
                    limit: self.opts.max_callbacks,
                });
            }
            let args_frame = self
                .read_frame(
                    &mut c,
                    &deadline,
                    &mut budget,
                    &|b| describe_args(&method, b),
                    &|| {
                        format!(
                            "waiting for the arguments of {}",
                            pdk_table::method_label(&name)
                        )
                    },
                )
                .await
                .map_err(|e| e.in_context(&ctx()))?;
            let Some(spec) = pdk_table::lookup(&method) else {
                // Kong: `method "<x>" not found` → the event fails (HTTP 500 from 3.8, spec §5.3).
                report.calls.push(CallRecord {
                    method: method.clone(),
                    args: Vec::new(),
                    answer: None,
                    reply_kind: "none (unknown method)".into(),
                    conn: conn_id,
                    note: Some(format!("method \"{method}\" not found")),
                });
                report.end = EventEnd::MethodNotFound { method };
                return Ok(report);
            };
            let args =
                pdk_table::unwrap_args(spec, &args_frame).map_err(|e| HostError::Decode {
                    what: format!("arguments of {method}"),
                    detail: e.to_string(),
                })?;
            let outcome = pdk.call(phase, &method, &args).settle().await;
            let answer = match outcome {
                PdkOutcome::Return(v) => v,
                // No soft-error channel over ProtoBuf (spec §5.3): the plugin sees nil.
                // `settle` removed every delay.
                PdkOutcome::SoftError(_) | PdkOutcome::Delayed { .. } => Value::Nil,
                PdkOutcome::NotFound | PdkOutcome::Raise(_) => {
                    let error = match outcome {
                        PdkOutcome::Raise(e) => e,
                        _ => format!("{method} is not implemented by the emulated PDK"),
                    };
                    report.end = EventEnd::Raised {
                        method: method.clone(),
                        error: error.clone(),
                    };
                    report
                        .calls
                        .push(terminal(method, args, conn_id, "none (raised)", error));
                    return Ok(report);
                }
                PdkOutcome::Exit {
                    status,
                    body,
                    headers,
                } => {
                    // Kong never answers exit; the connection is closed at the end of the request.
                    let note = format!("terminal: {method}");
                    report
                        .calls
                        .push(terminal(method, args, conn_id, "none (terminal)", note));
                    report.end = EventEnd::Exit {
                        status,
                        body,
                        headers,
                    };
                    return Ok(report);
                }
            };
            let reply = match pdk_table::wrap_result(spec, &answer) {
                Ok(r) => r,
                Err(e) => {
                    // pb.encode raised in Kong (e.g. the pre-3.7 set_upstream bug, spec §5.3).
                    let error = e.to_string();
                    report.end = EventEnd::Raised {
                        method: method.clone(),
                        error: error.clone(),
                    };
                    report
                        .calls
                        .push(terminal(method, args, conn_id, "none (raised)", error));
                    return Ok(report);
                }
            };
            let what = || format!("the reply to {method}");
            let kind = format!("{:?}", spec.output);
            self.write_frame(&mut c, &reply, || format!("{kind} {answer:?}"), &what)
                .await
                .map_err(|e| e.in_context(&ctx()))?;
            report.calls.push(CallRecord {
                method,
                args,
                answer: Some(answer),
                reply_kind: kind,
                conn: conn_id,
                note: None,
            });
        }
        let frame = self
            .read_frame(
                &mut c,
                &self.deadline(),
                &mut budget,
                &describe_return,
                &|| format!("waiting for RpcReturn of cmd_handle_event (sequence {sequence})"),
            )
            .await
            .map_err(|e| e.in_context(&ctx()))?;
        decode_return(&frame, "cmd_handle_event", sequence).map_err(|e| e.in_context(&ctx()))?;
        self.checkin(c);
        report.end = EventEnd::Done;
        Ok(report)
    }
}

/// A method name from the server, cut for error messages (it is arbitrary bytes up to the
/// frame limit).
fn short_name(method: &str) -> String {
    const MAX: usize = 120;
    match method.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &method[..cut], method.len()),
        None => method.to_owned(),
    }
}

fn terminal(method: String, args: Vec<Value>, conn: u64, kind: &str, note: String) -> CallRecord {
    CallRecord {
        method,
        args,
        answer: None,
        reply_kind: kind.into(),
        conn,
        note: Some(note),
    }
}

fn decode_return(frame: &[u8], name: &str, sequence: i64) -> Result<RpcReturn, HostError> {
    let ret = RpcReturn::decode(frame).map_err(|e| HostError::Decode {
        what: format!("RpcReturn of {name} (sequence {sequence})"),
        detail: e.to_string(),
    })?;
    if ret.sequence != sequence {
        return Err(HostError::Shape {
            what: format!("RpcReturn of {name}"),
            detail: format!("sequence mismatch: sent {sequence}, got {}", ret.sequence),
        });
    }
    Ok(ret)
}

/// A readable rendering of an RpcCall for `-v` (the config as text, not as a byte list).
fn describe_call(msg: &RpcCall) -> String {
    let body = match &msg.call {
        Some(rpc_call::Call::CmdStartInstance(c)) => format!(
            "cmd_start_instance {{ name: {:?}, config: {} }}",
            c.name,
            String::from_utf8_lossy(&c.config)
        ),
        Some(rpc_call::Call::CmdCloseInstance(c)) => {
            format!("cmd_close_instance {{ instance_id: {} }}", c.instance_id)
        }
        Some(rpc_call::Call::CmdHandleEvent(c)) => format!(
            "cmd_handle_event {{ instance_id: {}, event_name: {:?} }}",
            c.instance_id, c.event_name
        ),
        other => format!("{other:?}"),
    };
    format!("RpcCall {{ sequence: {}, {body} }}", msg.sequence)
}

fn describe_return(frame: &[u8]) -> String {
    match RpcReturn::decode(frame) {
        Ok(r) => format!("{r:?}"),
        Err(e) => format!("undecodable RpcReturn ({e})"),
    }
}

fn describe_name(frame: &[u8]) -> String {
    if frame.is_empty() {
        "<empty frame: handler finished>".into()
    } else {
        format!("method {}", pdk_table::method_label(frame))
    }
}

fn describe_args(method: &str, frame: &[u8]) -> String {
    match pdk_table::lookup(method).map(|spec| (spec, pdk_table::unwrap_args(spec, frame))) {
        Some((spec, Ok(args))) => format!("{:?} args {args:?}", spec.input),
        Some((_, Err(e))) => format!("undecodable args ({e})"),
        None => format!("{} byte(s) of args", frame.len()),
    }
}
