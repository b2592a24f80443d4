//! The `MsgPack:1` host client (spec §4).
//!
//! Every RPC call checks a connection out of the pool (or opens one), sends one request, reads
//! until the matching response (dispatching notifications met on the way), and checks the
//! connection back in. The Steps of one event can therefore travel on different connections,
//! exactly as in Kong (spec §4.1).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::conn::{self, Conn, Deadline};
use super::{
    CallRecord, Direction, EventEnd, EventReport, HostError, HostOptions, PoolPolicy,
    StartedInstance, Trace,
};
use crate::msgpack::{self, RpcMessage, StreamDecoder};
use crate::pdk::{Pdk, PdkOutcome};
use crate::Value;

/// The Step method Kong uses to answer a PDK method (spec §4.4 table).
pub fn step_method(pdk_method: &str) -> &'static str {
    match pdk_method {
        "kong.client.get_credential" | "kong.client.authenticate" => "plugin.StepCredential",
        "kong.client.load_consumer" | "kong.client.get_consumer" => "plugin.StepConsumer",
        "kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        "kong.router.get_route" => "plugin.StepRoute",
        "kong.router.get_service" => "plugin.StepService",
        m if is_multimap(m) => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

fn is_multimap(m: &str) -> bool {
    matches!(
        m,
        "kong.request.get_query"
            | "kong.request.get_headers"
            | "kong.response.get_headers"
            | "kong.service.response.get_headers"
    )
}

/// Kong's `fix_mmap` (spec §4.4): every value becomes an array of strings (`true` → `[]`), and an
/// empty result becomes an empty *map*.
pub fn fix_multimap(v: Value) -> Value {
    match v {
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .filter(|(_, v)| !v.is_nil())
                .map(|(k, v)| {
                    let v = match v {
                        Value::Array(a) => Value::Array(a),
                        Value::Bool(true) => Value::Array(Vec::new()),
                        other => Value::Array(vec![other]),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) if a.is_empty() => Value::Map(Vec::new()),
        Value::Nil => Value::Nil,
        other => other,
    }
}

/// How much of a server-sent value a finding quotes: a flood of large notifications must not
/// turn into a flood of large strings kept in the report.
const QUOTE_CHARS: usize = 120;

/// `v` rendered with `Debug`, cut at [`QUOTE_CHARS`] characters.
fn short(v: &(impl Debug + ?Sized)) -> String {
    let full = format!("{v:?}");
    match full.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}… ({} chars)", &full[..cut], full.chars().count()),
        None => full,
    }
}

/// The parameters of a call.
enum Params<'a> {
    /// Positional values (`[0, msgid, method, [values...]]`).
    Values(Vec<Value>),
    /// A Step's single `{EventId, Data}` map, written without building it (the hot path).
    Step { event_id: i64, data: &'a Value },
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Params::Values(v) => write!(f, "{v:?}"),
            Params::Step { event_id, data } if data.is_nil() => {
                write!(f, "[{{\"EventId\": {event_id}}}]")
            }
            Params::Step { event_id, data } => {
                write!(f, "[{{\"EventId\": {event_id}, \"Data\": {data:?}}}]")
            }
        }
    }
}

/// A MessagePack-RPC client with Kong's connection behaviour.
pub struct MpClient {
    opts: HostOptions,
    pool: Mutex<VecDeque<Conn>>,
    msgid: AtomicU64,
    server_pid: Mutex<Option<i64>>,
    pid_changes: AtomicU64,
    trace: Trace,
}

impl MpClient {
    pub fn new(opts: HostOptions) -> MpClient {
        let trace = Trace::new(opts.trace);
        MpClient {
            opts,
            pool: Mutex::new(VecDeque::new()),
            msgid: AtomicU64::new(0),
            server_pid: Mutex::new(None),
            pid_changes: AtomicU64::new(0),
            trace,
        }
    }

    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The last pid announced by a `serverPid` notification.
    pub fn server_pid(&self) -> Option<i64> {
        self.server_pid.lock().ok().and_then(|p| *p)
    }

    /// How many times a `serverPid` notification announced a different pid than the one before
    /// (Kong drops this client's instances each time, spec §4.6).
    pub fn pid_changes(&self) -> u64 {
        self.pid_changes.load(Ordering::Relaxed)
    }

    pub fn clear_pool(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    async fn checkout(&self) -> Result<Conn, HostError> {
        loop {
            let candidate = {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                match self.opts.pool_policy {
                    PoolPolicy::Lifo => pool.pop_back(),
                    PoolPolicy::Rotate if pool.len() >= 2 => pool.pop_front(),
                    PoolPolicy::Rotate => None,
                }
            };
            match candidate {
                Some(c) if c.is_stale() => continue,
                Some(c) => return Ok(c),
                None => return conn::connect(&self.opts.socket, &self.opts.timeouts).await,
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.opts.pool_size {
            pool.push_back(conn);
        }
    }

    /// One RPC call: returns the result and the id of the connection used.
    /// A non-nil error in the response becomes [`HostError::Server`].
    ///
    /// Bounded: each read by the read timeout, the whole call by the call deadline, the
    /// notifications met on the way by `max_notifications`, the bytes read by
    /// `max_event_bytes`.
    pub async fn call(
        &self,
        method: &str,
        params: Vec<Value>,
        findings: &mut Vec<String>,
    ) -> Result<(Value, u64), HostError> {
        let mut budget = self.opts.max_event_bytes;
        self.call_within(method, Params::Values(params), findings, &mut budget)
            .await
    }

    /// [`call`](Self::call), reading at most `budget` bytes (decremented by what was read).
    async fn call_within(
        &self,
        method: &str,
        params: Params<'_>,
        findings: &mut Vec<String>,
        budget: &mut u64,
    ) -> Result<(Value, u64), HostError> {
        let mut conn = self.checkout().await?;
        let msgid = self.msgid.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = std::mem::take(&mut conn.wbuf);
        out.clear();
        match &params {
            Params::Values(v) => msgpack::encode_request(msgid, method, v, &mut out),
            Params::Step { event_id, data } => {
                msgpack::encode_step_request(msgid, method, *event_id, data, &mut out)
            }
        }
        let t = &self.opts.timeouts;
        self.trace.push(
            conn.id,
            Direction::Send,
            || format!("[0, {msgid}, {method:?}, {params:?}]"),
            &out,
        );
        let what_send = || format!("request {method} (msgid {msgid})");
        let written = conn.write_all(&out, t.write, &what_send).await;
        conn.wbuf = out;
        written?;

        // Kong uses a fresh unpacker for every call (spec §4.1).
        let mut dec = StreamDecoder::new(self.opts.max_frame);
        let deadline = Deadline::after(self.opts.effective_call_deadline());
        // Bytes of a message received but not yet complete, for error messages.
        let partial = AtomicUsize::new(0);
        let what_recv = || {
            match partial.load(Ordering::Relaxed) {
            0 => format!("waiting for the response to {method} (msgid {msgid})"),
            n => format!(
                "waiting for the response to {method} (msgid {msgid}; {n} byte(s) of a message received so far)"
            ),
        }
        };
        let mut notifications = 0usize;
        loop {
            let conn_id = conn.id;
            let bytes = conn.read_some_by(t.read, &deadline, &what_recv).await?;
            let n = bytes.len() as u64;
            if n > *budget {
                return Err(HostError::TooManyBytes {
                    what: format!("reading the response to {method} (msgid {msgid})"),
                    limit: self.opts.max_event_bytes,
                });
            }
            *budget -= n;
            dec.feed(bytes);
            // With tracing on, the raw bytes of this read are logged with what they completed.
            let mut chunk = self
                .trace
                .enabled()
                .then(|| (bytes.to_vec(), Vec::<String>::new()));
            loop {
                let value = match dec.next_value() {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        partial.store(dec.buffered(), Ordering::Relaxed);
                        if let Some((raw, done)) = chunk.take() {
                            let summary = if done.is_empty() {
                                "(partial message)".into()
                            } else {
                                done.join("; ")
                            };
                            self.trace.push(conn_id, Direction::Recv, || summary, &raw);
                        }
                        break;
                    }
                    Err(e) => {
                        return Err(HostError::Decode {
                            what: format!("response to {method} (msgid {msgid})"),
                            detail: e.to_string(),
                        })
                    }
                };
                if let Some((_, done)) = chunk.as_mut() {
                    done.push(format!("{value:?}"));
                }
                match RpcMessage::from_value(value) {
                    Ok(RpcMessage::Response {
                        msgid: got,
                        error,
                        result,
                    }) => {
                        if let Some((raw, done)) = chunk.take() {
                            self.trace
                                .push(conn_id, Direction::Recv, || done.join("; "), &raw);
                        }
                        if got != msgid {
                            return Err(HostError::Shape {
                                what: format!("response to {method}"),
                                detail: format!(
                                    "unexpected RPC response ID from plugin server: expected msgid {msgid}, got {got}"
                                ),
                            });
                        }
                        let conn_id = conn.id;
                        if dec.buffered() > 0 {
                            // Kong discards bytes after the response; nginx would then drop the
                            // pooled connection when more unexpected data arrives.
                            findings.push(format!(
                                "{} unexpected byte(s) after the response to {method} (msgid {msgid}); connection dropped",
                                dec.buffered()
                            ));
                        } else {
                            self.checkin(conn);
                        }
                        if !error.is_nil() {
                            let message = match error.as_str() {
                                Some(s) => s.to_owned(),
                                None => format!("{error:?}"),
                            };
                            return Err(HostError::Server {
                                method: method.to_owned(),
                                message,
                            });
                        }
                        return Ok((result, conn_id));
                    }
                    Ok(RpcMessage::Notification { label, args }) => {
                        notifications += 1;
                        if notifications > self.opts.max_notifications {
                            return Err(HostError::TooManyNotifications {
                                what: format!(
                                    "waiting for the response to {method} (msgid {msgid}), the last one [2, {}, ...]",
                                    short(&label)
                                ),
                                limit: self.opts.max_notifications,
                            });
                        }
                        self.notification(&label, &args, findings);
                    }
                    Ok(RpcMessage::Request { method: m, .. }) => {
                        return Err(HostError::Shape {
                            what: format!("message while waiting for the response to {method}"),
                            detail: format!(
                                "RPC response expected from plugin server, got a request for {m}"
                            ),
                        });
                    }
                    Err(e) => {
                        return Err(HostError::Shape {
                            what: format!("message while waiting for the response to {method}"),
                            detail: e.to_string(),
                        })
                    }
                }
            }
        }
    }

    fn notification(&self, label: &str, args: &Value, findings: &mut Vec<String>) {
        if label != "serverPid" {
            findings.push(format!(
                "ignored notification {} (Kong knows only serverPid)",
                short(&label)
            ));
            return;
        }
        let Some(pid) = args.as_i64() else {
            findings.push(format!(
                "serverPid notification without a pid number: {}",
                short(args)
            ));
            return;
        };
        let mut cur = self.server_pid.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*cur, Some(old) if old != pid) {
            self.pid_changes.fetch_add(1, Ordering::Relaxed);
        }
        *cur = Some(pid);
    }

    pub async fn start_instance(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<StartedInstance, HostError> {
        let params = vec![Value::map([
            ("Name", Value::str(name)),
            ("Config", Value::str(config_json)),
        ])];
        let mut findings = Vec::new();
        let (result, _) = self
            .call("plugin.StartInstance", params, &mut findings)
            .await?;
        let id = result
            .get("Id")
            .and_then(Value::as_i64)
            .ok_or_else(|| HostError::Shape {
                what: "answer to plugin.StartInstance".into(),
                detail: format!("expected a map with an integer `Id`, got {result:?}"),
            })?;
        Ok(StartedInstance {
            id,
            answer: result.to_json(),
        })
    }

    pub async fn close_instance(&self, id: i64) -> Result<(), HostError> {
        let mut findings = Vec::new();
        // CloseInstance takes a bare integer (spec §4.3, §10.9); Kong ignores the answer.
        self.call("plugin.CloseInstance", vec![Value::Int(id)], &mut findings)
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
        let mut budget = self.opts.max_event_bytes;
        let params = vec![Value::map([
            ("InstanceId", Value::Int(instance_id)),
            ("EventName", Value::str(phase)),
        ])];
        let (mut result, conn) = self
            .call_within(
                "plugin.HandleEvent",
                Params::Values(params),
                &mut report.findings,
                &mut budget,
            )
            .await
            .map_err(|e| e.in_context(&format!("event {phase} (instance {instance_id})")))?;
        report.used(conn);
        let event_id = result
            .get("EventId")
            .and_then(Value::as_i64)
            .ok_or_else(|| HostError::Shape {
                what: "answer to plugin.HandleEvent".into(),
                detail: format!("expected a map with an integer `EventId`, got {result:?}"),
            })?;
        report.event_id = Some(event_id);
        let ctx = || format!("event {phase} (instance {instance_id}, EventId {event_id})");
        let mut last_conn = conn;
        loop {
            let data = match &mut result {
                Value::Map(m) => m
                    .iter_mut()
                    .find(|(k, _)| k.as_bytes() == Some(b"Data"))
                    .map(|(_, v)| std::mem::take(v)),
                _ => None,
            };
            let Some(data) = data else {
                return Err(HostError::Shape {
                    what: format!("answer in event {event_id}"),
                    detail: format!("expected `Data` (\"ret\" or a callback), got {result:?}"),
                });
            };
            if data.as_bytes() == Some(b"ret") {
                report.end = EventEnd::Done;
                return Ok(report);
            }
            let method = data
                .get("Method")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(method) = method else {
                return Err(HostError::Shape {
                    what: format!("callback in event {event_id}"),
                    detail: format!(
                        "expected Data = \"ret\" or {{Method: <string>, Args: [...]}}, got {data:?}"
                    ),
                });
            };
            if report.calls.len() >= self.opts.max_callbacks {
                return Err(HostError::TooManyCallbacks {
                    what: format!("callback {method} in {}", ctx()),
                    limit: self.opts.max_callbacks,
                });
            }
            let args = match data.get("Args") {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Map(_)) | Some(Value::Nil) | None => Vec::new(),
                Some(other) => vec![other.clone()],
            };
            let outcome = pdk.call(phase, &method, &args).settle().await;
            let mut step = step_method(&method);
            let (answer, note) = match outcome {
                PdkOutcome::Return(v) if is_multimap(&method) => (fix_multimap(v), None),
                PdkOutcome::Return(v) => (v, None),
                // Kong 2.x: `nil, err` goes out as StepError with the message (spec §4.4).
                PdkOutcome::SoftError(e) if pdk.sends_step_error() => {
                    step = "plugin.StepError";
                    (Value::str(e.as_str()), Some(format!("soft error: {e}")))
                }
                // Kong 3.x sends only the first return value: nil.
                PdkOutcome::SoftError(e) => (Value::Nil, Some(format!("soft error: {e}"))),
                // `settle` removed every delay.
                PdkOutcome::Delayed { .. } => (Value::Nil, None),
                PdkOutcome::NotFound => (
                    Value::Nil,
                    Some(format!("could not find pdk method: {method}")),
                ),
                PdkOutcome::Exit {
                    status,
                    body,
                    headers,
                } => {
                    report.calls.push(CallRecord {
                        method: method.clone(),
                        args,
                        answer: None,
                        reply_kind: "none (terminal)".into(),
                        conn: last_conn,
                        note: Some(format!("terminal: {method}")),
                    });
                    report.end = EventEnd::Exit {
                        status,
                        body,
                        headers,
                    };
                    return Ok(report);
                }
                PdkOutcome::Raise(error) => {
                    report.calls.push(CallRecord {
                        method: method.clone(),
                        args,
                        answer: None,
                        reply_kind: "none (raised)".into(),
                        conn: last_conn,
                        note: Some(error.clone()),
                    });
                    report.end = EventEnd::Raised { method, error };
                    return Ok(report);
                }
            };
            report.calls.push(CallRecord {
                method,
                args,
                answer: Some(answer),
                reply_kind: step.to_owned(),
                conn: last_conn,
                note,
            });
            let data = report
                .calls
                .last()
                .and_then(|c| c.answer.as_ref())
                .unwrap_or(&Value::Nil);
            let (next, conn) = self
                .call_within(
                    step,
                    Params::Step { event_id, data },
                    &mut report.findings,
                    &mut budget,
                )
                .await
                .map_err(|e| e.in_context(&ctx()))?;
            report.used(conn);
            last_conn = conn;
            result = next;
        }
    }
}
