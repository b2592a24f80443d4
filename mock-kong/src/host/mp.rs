//! The `MsgPack:1` host client (docs/protocol.md §4).
//!
//! Every RPC call checks a connection out of the pool (or opens one), sends one request, reads
//! until the matching response (dispatching notifications met on the way), and checks the
//! connection back in. The Steps of one event can therefore travel on different connections,
//! exactly as in Kong (docs/protocol.md §4.1).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::conn::{self, Conn, Deadline};
use super::{
    reply_for, Direction, EventReport, HostError, HostOptions, PoolPolicy, StartedInstance, Trace,
};
use crate::msgpack::StreamDecoder;
use crate::pdk::Pdk;
use crate::Value;
use mock_kong_codec::event::mp::{self as driver, Call, CallReader, Incoming, MpEvent};
use mock_kong_codec::event::{short, Budget, Quirks};

// Kong's choices of Step method and multi-map fix-up live with the event driver.
pub use mock_kong_codec::event::mp::{fix_multimap, step_method};

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
    /// (Kong drops this client's instances each time, docs/protocol.md §4.6).
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
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let mut quirks = Quirks::default();
        let (answer, conn) = self
            .call_within(
                method,
                |msgid, out| crate::msgpack::encode_request(msgid, method, &params, out),
                |msgid| format!("[0, {msgid}, {method:?}, {params:?}]"),
                findings,
                &mut budget,
                &mut quirks,
            )
            .await?;
        note_quirks(quirks, findings);
        match answer {
            Ok(v) => Ok((v, conn)),
            Err(e) => Err(HostError::Server {
                method: method.to_owned(),
                message: mock_kong_codec::event::error_text(&e),
            }),
        }
    }

    /// One RPC call whose request `encode` writes, reading at most what `budget` has left.
    /// Returns the answer (`Err`: the error value of an error response) and the connection id.
    async fn call_within(
        &self,
        method: &str,
        encode: impl FnOnce(u64, &mut Vec<u8>),
        describe: impl FnOnce(u64) -> String,
        findings: &mut Vec<String>,
        budget: &mut Budget,
        quirks: &mut Quirks,
    ) -> Result<(Result<Value, Value>, u64), HostError> {
        let mut conn = self.checkout().await?;
        let msgid = self.msgid.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = std::mem::take(&mut conn.wbuf);
        out.clear();
        encode(msgid, &mut out);
        let t = &self.opts.timeouts;
        self.trace
            .push(conn.id, Direction::Send, || describe(msgid), &out);
        let what_send = || format!("request {method} (msgid {msgid})");
        let written = conn.write_all(&out, t.write, &what_send).await;
        conn.wbuf = out;
        written?;

        // Kong uses a fresh unpacker for every call (docs/protocol.md §4.1).
        let mut dec = StreamDecoder::new(self.opts.max_frame);
        let mut reader = CallReader::new(msgid, method, self.opts.max_notifications)
            .traced(self.trace.enabled());
        let deadline = Deadline::after(self.opts.effective_call_deadline());
        // Bytes of a message received but not yet complete, for error messages.
        let partial = AtomicUsize::new(0);
        // Formatted only for an error message.
        let awaited = || driver::describe_response(method, msgid);
        let what_recv = || match partial.load(Ordering::Relaxed) {
            0 => format!("waiting for {}", awaited()),
            n => format!(
                "waiting for {} ({n} byte(s) of a message received so far)",
                awaited()
            ),
        };
        loop {
            let conn_id = conn.id;
            let bytes = conn.read_some_by(t.read, &deadline, &what_recv).await?;
            budget.take(bytes.len(), || format!("reading {}", awaited()))?;
            dec.feed(bytes);
            // With tracing on, the raw bytes of this read are logged with what they completed.
            let raw = self.trace.enabled().then(|| bytes.to_vec());
            let mut answer = None;
            loop {
                let m = reader.next(&mut dec);
                quirks.extend(reader.quirks());
                let Some(m) = m? else { break };
                match m {
                    Incoming::Notification { label, args } => {
                        self.notification(&label, &args, findings)
                    }
                    Incoming::Response { result, trailing } => {
                        answer = Some((result, trailing));
                        break;
                    }
                }
            }
            if let Some(raw) = raw {
                let done = reader.take_trace();
                let summary = if done.is_empty() {
                    "(partial message)".to_owned()
                } else {
                    done.join("; ")
                };
                self.trace.push(conn_id, Direction::Recv, || summary, &raw);
            }
            let Some((result, trailing)) = answer else {
                partial.store(dec.buffered(), Ordering::Relaxed);
                continue;
            };
            if trailing > 0 {
                // Kong discards bytes after the response; nginx would then drop the pooled
                // connection when more unexpected data arrives.
                findings.push(format!(
                    "{trailing} unexpected byte(s) after the response to {method} (msgid {msgid}); connection dropped"
                ));
            } else {
                self.checkin(conn);
            }
            return Ok((result, conn_id));
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
        let params = driver::start_instance_params(name, config_json);
        let mut findings = Vec::new();
        let (result, _) = self
            .call("plugin.StartInstance", params, &mut findings)
            .await?;
        Ok(StartedInstance {
            id: driver::instance_id(&result)?,
            answer: result.to_json(),
        })
    }

    pub async fn close_instance(&self, id: i64) -> Result<(), HostError> {
        let mut findings = Vec::new();
        // CloseInstance takes a bare integer (docs/protocol.md §4.3, §10.9); Kong ignores the answer.
        let params = driver::close_instance_params(id);
        self.call("plugin.CloseInstance", params, &mut findings)
            .await
            .map(|_| ())
    }

    /// Runs one event through the [`MpEvent`] driver: each call on a pooled connection, each
    /// callback answered by `pdk`.
    /// `report` holds the transcript so far also when the event fails.
    pub async fn handle_event(
        &self,
        instance_id: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
        report: &mut EventReport,
    ) -> Result<(), HostError> {
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let mut ev = MpEvent::new(
            instance_id,
            phase,
            self.opts.max_callbacks,
            pdk.sends_step_error(),
        );
        let mut call = ev.start();
        let mut quirks = Quirks::default();
        loop {
            let sent = self
                .call_within(
                    call.method(),
                    |msgid, out| call.encode(msgid, out),
                    |msgid| call.describe(msgid),
                    &mut report.findings,
                    &mut budget,
                    &mut quirks,
                )
                .await;
            let (answer, conn) = match sent {
                Ok(got) => got,
                Err(e) => {
                    // The Step carried its answer: the transcript of the failed event shows
                    // what was answered, not nil.
                    if let Call::Step { data, .. } = call {
                        if let Some(last) = report.calls.last_mut() {
                            last.answer = Some(data);
                        }
                    }
                    return Err(e.in_context(&ev.context()));
                }
            };
            report.used(conn);
            if let Call::Step { data, .. } = call {
                if let Some(last) = report.calls.last_mut() {
                    last.answer = Some(data);
                }
            }
            let next = ev
                .on_answer(answer)
                .map_err(|e| e.in_context(&ev.context()))?;
            report.event_id = ev.event_id();
            let cb = match next {
                driver::Next::End(end) => {
                    quirks.extend(ev.quirks());
                    note_quirks(quirks, &mut report.findings);
                    let ctx = ev.context();
                    return report
                        .finish(end, None, conn, None)
                        .map_err(|e| e.in_context(&ctx));
                }
                driver::Next::Callback(cb) => cb,
            };
            let outcome = pdk.call(phase, &cb.method, &cb.args).settle().await;
            let (reply, exit) = reply_for(outcome);
            match ev.reply(&cb.method, reply) {
                driver::Replied::End(end) => {
                    quirks.extend(ev.quirks());
                    note_quirks(quirks, &mut report.findings);
                    return report.finish(end, Some(cb), conn, exit);
                }
                driver::Replied::Call(next, sent) => {
                    // The answer is recorded once the Step is sent (it travels in the call).
                    report.answered(cb, Value::Nil, sent, conn);
                    call = next;
                }
            }
        }
    }
}

/// The legal but unusual choices of a server as findings (Kong accepts them; the transcript
/// says so once per kind).
fn note_quirks(quirks: Quirks, findings: &mut Vec<String>) {
    for q in quirks.iter() {
        let note = format!("legal but unusual: {}", q.reason());
        if !findings.contains(&note) {
            findings.push(note);
        }
    }
}
