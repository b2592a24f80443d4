//! The `ProtoBuf:1` host client (docs/protocol.md §5).
//!
//! Each top-level call takes a pooled connection (or opens one); a HandleEvent conversation runs
//! entirely on that connection and the connection goes back to the pool only after the final
//! `RpcReturn` (docs/protocol.md §5.1). The sequence number starts at 2 and must be echoed (docs/protocol.md §5.2).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use prost::Message;

use super::conn::{self, Conn, Deadline};
use super::{reply_for, Direction, EventReport, HostError, HostOptions, StartedInstance, Trace};
use crate::pdk::Pdk;
use crate::protobuf::messages::{rpc_return, RpcCall, RpcReturn};
use crate::protobuf::{encode_frame, FrameDecoder};
use mock_kong_codec::event::pb::{self as driver, describe_call, describe_return, PbEvent};
use mock_kong_codec::event::Budget;

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
        budget: &mut Budget,
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
            budget.take(bytes.len(), what)?;
            c.dec.feed(bytes);
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.opts.effective_call_deadline())
    }

    /// Sends the RpcCall `make` builds for the next sequence and reads its RpcReturn on a
    /// pooled connection.
    async fn simple_call(
        &self,
        make: impl FnOnce(i64) -> RpcCall,
        name: &str,
    ) -> Result<RpcReturn, HostError> {
        let mut c = self.checkout().await?;
        let sequence = self.next_sequence();
        let msg = make(sequence);
        let payload = msg.encode_to_vec();
        let what = || format!("{name} (sequence {sequence})");
        self.write_frame(&mut c, &payload, || describe_call(&msg), &what)
            .await?;
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let frame = self
            .read_frame(
                &mut c,
                &self.deadline(),
                &mut budget,
                &describe_return,
                &|| format!("waiting for RpcReturn of {name} (sequence {sequence})"),
            )
            .await?;
        let ret = driver::decode_return(&frame, name, sequence)?;
        self.checkin(c);
        Ok(ret)
    }

    pub async fn start_instance(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<StartedInstance, HostError> {
        let ret = self
            .simple_call(
                |seq| driver::start_instance_call(seq, name, config_json),
                "cmd_start_instance",
            )
            .await?;
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
        self.simple_call(
            |seq| driver::close_instance_call(seq, id),
            "cmd_close_instance",
        )
        .await
        .map(|_| ())
    }

    /// Runs one event through the [`PbEvent`] driver on one pooled connection, each callback
    /// answered by `pdk`.
    /// `report` holds the transcript so far also when the event fails.
    pub async fn handle_event(
        &self,
        instance_id: i64,
        phase: &str,
        pdk: &mut dyn Pdk,
        report: &mut EventReport,
    ) -> Result<(), HostError> {
        let mut budget = Budget::new(self.opts.max_event_bytes);
        let mut c = self.checkout().await?;
        let conn_id = c.conn.id;
        report.used(conn_id);
        let mut ev = PbEvent::new(
            self.next_sequence(),
            instance_id,
            phase,
            self.opts.max_callbacks,
        );
        let msg = ev.start();
        let payload = msg.encode_to_vec();
        let what = || format!("cmd_handle_event {phase} (sequence {})", msg.sequence);
        self.write_frame(&mut c, &payload, || describe_call(&msg), &what)
            .await?;
        // One deadline for each message of the server: a method name and its arguments, or the
        // end-of-event frame and the RpcReturn.
        let mut deadline = self.deadline();
        loop {
            let frame = self
                .read_frame(&mut c, &deadline, &mut budget, &|f| ev.describe(f), &|| {
                    ev.awaiting()
                })
                .await
                .map_err(|e| e.in_context(&ev.context()))?;
            let cb = match ev
                .on_frame(&frame)
                .map_err(|e| e.in_context(&ev.context()))?
            {
                driver::Next::Frame => continue,
                driver::Next::End(end) => {
                    if end == mock_kong_codec::event::End::Done {
                        self.checkin(c);
                    }
                    return report.finish(end, None, conn_id, None);
                }
                driver::Next::Callback(cb) => cb,
            };
            let outcome = pdk.call(phase, &cb.method, &cb.args).settle().await;
            let (reply, exit) = reply_for(outcome);
            let mut out = std::mem::take(&mut c.conn.wbuf);
            out.clear();
            match ev.reply(&cb.method, reply, &mut out) {
                driver::Replied::End(end) => {
                    c.conn.wbuf = out;
                    return report.finish(end, Some(cb), conn_id, exit);
                }
                driver::Replied::Sent(answer, sent) => {
                    self.trace.push(
                        conn_id,
                        Direction::Send,
                        || format!("{} {answer:?}", sent.kind),
                        &out,
                    );
                    let what = || format!("the reply to {}", cb.method);
                    let written = c
                        .conn
                        .write_all(&out, self.opts.timeouts.write, &what)
                        .await;
                    c.conn.wbuf = out;
                    written.map_err(|e| e.in_context(&ev.context()))?;
                    report.answered(cb, answer, sent, conn_id);
                }
            }
            deadline = self.deadline();
        }
    }
}
