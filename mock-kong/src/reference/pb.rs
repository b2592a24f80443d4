//! The `ProtoBuf:1` server (docs/protocol.md §5), behaving on the wire like go-pdk's `server/pbserver.go`.
//!
//! * One task per connection, reading length-prefixed frames (docs/protocol.md §5.1). Each `RpcCall` is
//!   answered by one `RpcReturn` carrying the same `sequence` (docs/protocol.md §5.2).
//! * `cmd_start_instance`: the instance id is the config's `__seq__` when it is a non-zero
//!   integer (go-pdk ≥ 0.10), otherwise the next value of a counter starting at 0. The reply's
//!   `instance_status` carries `name`, `instance_id` and `started_at` (Unix seconds); like
//!   go-pdk it omits `config`.
//! * `cmd_handle_event` runs the whole event on this connection (docs/protocol.md §5.3): for each PDK call
//!   the method name frame and the argument frame (one write), then one reply frame is read and
//!   decoded with the method's output type; when the handler returns, an empty frame and the
//!   `RpcReturn{sequence}` (one write).
//! * `kong.response.exit`: the two frames are written and the connection is closed, because
//!   Kong never answers it (go-pdk's `Exit` also closes the connection).
//! * Every error (undecodable frame, unknown instance, unknown phase, bad config, unknown plugin,
//!   a PDK method missing from the ProtoBuf table, an undecodable reply) closes the connection
//!   without a reply. There is no error field in `RpcReturn`; Kong turns "closed" into an
//!   instance reset and retry (docs/protocol.md §5.2, §5.6).
//! * `cmd_close_instance` and `cmd_get_instance_status` answer `instance_status` (an unknown id
//!   closes the connection); `cmd_get_plugin_names` / `cmd_get_plugin_info`, never sent by Kong,
//!   are answered properly (go-pdk sends an empty frame for them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::faults::{self, Fault};
use super::plugins::{self, Action, Instance, Plugin};
use super::Variation;
use super::{lock, Faults, IdMap, MAX_FRAME, READ_CHUNK};
use crate::protobuf::messages::{
    rpc_call, rpc_return, InstanceStatus, PluginInfo, PluginNames, RpcCall, RpcReturn,
};
use crate::protobuf::{encode_frame, encode_message_frame, pdk_table, FrameDecoder};
use crate::Protocol;

/// The state shared by every connection of one ProtoBuf server.
pub struct PbServer {
    faults: Arc<Faults>,
    loaded_at: i64,
    instances: Mutex<Instances>,
    /// Fault switches only: a handler raised or exited and no event is answered any more.
    blocked: AtomicBool,
    /// Fault switches only: event ids, and the reply slot every event shares (`cross-talk`).
    next_event: AtomicU64,
    slot: Mutex<Option<crate::Value>>,
    /// Fault switches only (`serial-events`): held by the call being served.
    serial: tokio::sync::Mutex<()>,
}

struct Instances {
    map: IdMap<i32, PbInstance>,
    next_id: i32,
}

struct PbInstance {
    plugin: &'static dyn Plugin,
    started_at: i64,
    /// When it was started (the `expire-on-close` fault's clock).
    created: std::time::Instant,
    inner: Box<dyn Instance>,
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
enum Close {
    /// Not an error: the host closed, or the event ended with `kong.response.exit`.
    #[error("done")]
    Quiet,
    #[error("{0}")]
    Error(String),
}

impl From<std::io::Error> for Close {
    fn from(_: std::io::Error) -> Close {
        // The peer went away; nothing to report.
        Close::Quiet
    }
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PbServer {
    /// A server with no instances.
    pub fn new(faults: Arc<Faults>) -> PbServer {
        // The counter for configs without `__seq__` (Kong 3.6+ always sends one).
        let first_id = i32::try_from(faults::first_instance_id(&faults)).unwrap_or(0);
        PbServer {
            faults,
            loaded_at: unix_secs(),
            instances: Mutex::new(Instances {
                map: IdMap::default(),
                next_id: first_id,
            }),
            blocked: AtomicBool::new(false),
            next_event: AtomicU64::new(0),
            slot: Mutex::new(None),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The fault switches this server was started with.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn start_instance(&self, name: &str, config: &[u8]) -> Result<InstanceStatus, String> {
        let plugin = plugins::find(name).ok_or_else(|| {
            format!(
                "StartInstance: unknown plugin {name:?} (this server hosts {})",
                plugins::names()
            )
        })?;
        let json: serde_json::Value = serde_json::from_slice(config)
            .map_err(|e| format!("StartInstance: decoding config: {e}"))?;
        if self.faults.has(Fault::StrictConfig) {
            if let Some(k) = faults::unknown_config_key(&plugin.config_fields(), &json) {
                return Err(format!("StartInstance: unknown config field {k:?}"));
            }
        }
        let inner = plugin.start(&json)?;
        let seq = json
            .get("__seq__")
            .and_then(serde_json::Value::as_i64)
            .and_then(|s| i32::try_from(s).ok())
            .filter(|&s| s != 0 && !self.faults.has(Fault::IdsFromZero));
        let started_at = unix_secs();
        let mut inst = lock(&self.instances);
        let id = match seq {
            _ if self.faults.has(Fault::OneInstance) => 1,
            Some(s) => s,
            None => {
                let id = inst.next_id;
                inst.next_id = inst.next_id.wrapping_add(1);
                id
            }
        };
        inst.map.insert(
            id,
            PbInstance {
                plugin,
                started_at,
                created: std::time::Instant::now(),
                inner,
            },
        );
        Ok(InstanceStatus {
            name: plugin.name().to_owned(),
            instance_id: id,
            config: None,
            started_at,
        })
    }

    fn instance_status(&self, id: i32, close: bool) -> Result<InstanceStatus, String> {
        let mut inst = lock(&self.instances);
        let status = |x: &PbInstance| InstanceStatus {
            name: x.plugin.name().to_owned(),
            instance_id: id,
            config: None,
            started_at: x.started_at,
        };
        let found = if close {
            let found = inst.map.remove(&id);
            if let (Some(x), true) = (&found, self.faults.has(Fault::CloseAll)) {
                let name = x.plugin.name();
                inst.map.retain(|_, y| y.plugin.name() != name);
            }
            if self.faults.has(Fault::ExpireOnClose) {
                inst.map
                    .retain(|_, y| y.created.elapsed() <= faults::EXPIRE_AFTER);
            }
            found.map(|x| status(&x))
        } else if self.faults.has(Fault::StatusEmpty) {
            None
        } else {
            inst.map.get(&id).map(status)
        };
        found.ok_or_else(|| format!("no plugin instance {id}"))
    }

    fn plugin_info(&self, name: &str) -> Result<PluginInfo, String> {
        let p =
            plugins::find(name).ok_or_else(|| format!("GetPluginInfo: unknown plugin {name:?}"))?;
        Ok(PluginInfo {
            name: p.name().to_owned(),
            updated_at: self.loaded_at,
            loaded_at: self.loaded_at,
            phases: p.phases().iter().map(|s| (*s).to_owned()).collect(),
            version: p.version().to_owned(),
            priority: i32::try_from(p.priority()).unwrap_or(i32::MAX),
            schema: p.schema_json().to_string(),
        })
    }
}

/// One connection's I/O state.
struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    faults: Arc<Faults>,
    /// Frames taken since the last read (fault switches only).
    frames_since_read: u32,
}

impl Conn {
    /// Exits the process if `crash-on-garbage` is on.
    fn garbage(&self, why: &str) {
        if self.faults.has(Fault::CrashOnGarbage) {
            faults::crash(Fault::CrashOnGarbage, why);
        }
    }

    /// The next frame; `None` at a clean EOF between frames.
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, Close> {
        let mut fed = false;
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.frames_since_read += 1;
                    if self.frames_since_read > 1 && self.faults.has(Fault::CrashOnCoalesced) {
                        faults::crash(Fault::CrashOnCoalesced, "two frames in one read");
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {
                    if fed && self.decoder.buffered() > 0 && self.faults.has(Fault::CrashOnSplit) {
                        faults::crash(Fault::CrashOnSplit, "a frame split across reads");
                    }
                }
                Err(crate::protobuf::FrameError::TooLarge { len, .. })
                    if self.faults.has(Fault::TrustLength) =>
                {
                    // Reserves what the prefix declares, then waits for the bytes.
                    let hoard: Vec<u8> = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                    while let Ok(n) = self.stream.read(&mut self.rbuf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    std::hint::black_box(&hoard);
                    return Err(Close::Quiet);
                }
                Err(e) => {
                    self.garbage("an impossible frame length");
                    return Err(Close::Error(e.to_string()));
                }
            }
            let n = if self.faults.has(Fault::IdleClose) {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    self.stream.read(&mut self.rbuf),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => return Err(Close::Quiet),
                }
            } else {
                self.stream.read(&mut self.rbuf).await?
            };
            if n == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    self.garbage("a truncated frame");
                    Err(Close::Error(
                        "connection closed in the middle of a frame".into(),
                    ))
                };
            }
            self.decoder.feed(&self.rbuf[..n]);
            self.frames_since_read = 0;
            fed = true;
        }
    }

    /// Writes `out` and empties it.
    async fn flush(&mut self) -> Result<(), Close> {
        faults::write_out(&mut self.stream, &self.out, &self.faults).await?;
        self.out.clear();
        if self.out.capacity() > 1 << 20 {
            self.out.shrink_to(64 * 1024);
        }
        Ok(())
    }
}

/// Serves one connection until EOF, an I/O error, an error (closed without reply, like go-pdk)
/// or a `kong.response.exit`.
pub async fn serve_connection(server: Arc<PbServer>, stream: UnixStream) {
    let max = if server.faults.has(Fault::SmallFrames) {
        256 * 1024
    } else {
        MAX_FRAME
    };
    let mut conn = Conn {
        stream,
        decoder: FrameDecoder::new(max),
        rbuf: vec![0u8; READ_CHUNK],
        out: Vec::with_capacity(512),
        faults: server.faults.clone(),
        frames_since_read: 0,
    };
    if let Err(Close::Error(e)) = serve(&server, &mut conn).await {
        eprintln!("reference server (ProtoBuf): closing connection: {e}");
    }
    let _ = conn.stream.shutdown().await;
}

async fn serve(server: &PbServer, conn: &mut Conn) -> Result<(), Close> {
    while let Some(frame) = conn.read_frame().await? {
        // `serial-events`: one call at a time, a whole event conversation included.
        let _one_at_a_time = if server.faults.has(Fault::SerialEvents) {
            Some(server.serial.lock().await)
        } else {
            None
        };
        let call = match RpcCall::decode(frame.as_slice()) {
            Ok(c) => c,
            Err(e) => {
                conn.garbage("an undecodable RpcCall");
                return Err(Close::Error(format!("undecodable RpcCall: {e}")));
            }
        };
        let sequence = call.sequence;
        let ret = match call.call {
            Some(rpc_call::Call::CmdStartInstance(c)) => Some(rpc_return::Return::InstanceStatus(
                server
                    .start_instance(&c.name, &c.config)
                    .map_err(Close::Error)?,
            )),
            Some(rpc_call::Call::CmdCloseInstance(c)) => Some(rpc_return::Return::InstanceStatus(
                server
                    .instance_status(c.instance_id, true)
                    .map_err(Close::Error)?,
            )),
            Some(rpc_call::Call::CmdGetInstanceStatus(c)) => {
                Some(rpc_return::Return::InstanceStatus(
                    server
                        .instance_status(c.instance_id, false)
                        .map_err(Close::Error)?,
                ))
            }
            Some(rpc_call::Call::CmdHandleEvent(c)) => {
                handle_event(server, conn, c.instance_id, &c.event_name).await?;
                // The empty "handler finished" frame is already in `out`.
                None
            }
            Some(rpc_call::Call::CmdGetPluginNames(_)) => {
                Some(rpc_return::Return::PluginNames(PluginNames {
                    names: plugins::all().iter().map(|p| p.name().to_owned()).collect(),
                }))
            }
            Some(rpc_call::Call::CmdGetPluginInfo(c)) => Some(rpc_return::Return::PluginInfo(
                server.plugin_info(&c.name).map_err(Close::Error)?,
            )),
            None => {
                conn.garbage("an RpcCall without a command");
                return Err(Close::Error(format!(
                    "RpcCall (sequence {sequence}) carries no command"
                )));
            }
        };
        let sequence = if server.faults.has(Fault::BadSequence) {
            i64::from(sequence as i32)
        } else {
            sequence
        };
        let ret = match ret {
            // The legal variation start-id-only: nothing but the id (Kong reads only that).
            Some(rpc_return::Return::InstanceStatus(st))
                if server.faults.varies(Variation::StartIdOnly) =>
            {
                Some(rpc_return::Return::InstanceStatus(InstanceStatus {
                    instance_id: st.instance_id,
                    ..InstanceStatus::default()
                }))
            }
            other => other,
        };
        let reply = RpcReturn {
            sequence,
            r#return: ret,
        };
        if server.faults.varies(Variation::UnknownFields) {
            // Fields 99 (varint) and 100 (bytes), which Kong's proto does not have.
            let mut payload = reply.encode_to_vec();
            payload.extend([0x98, 0x06, 0x01, 0xA2, 0x06, 0x03]);
            payload.extend(b"ref");
            encode_frame(&payload, &mut conn.out);
        } else {
            encode_message_frame(&reply, &mut conn.out);
        }
        conn.flush().await?;
    }
    Ok(())
}

/// The HandleEvent conversation (docs/protocol.md §5.3). On success the final empty frame has been
/// appended to `conn.out` (the caller adds the `RpcReturn` and writes both at once).
async fn handle_event(
    server: &PbServer,
    conn: &mut Conn,
    instance_id: i32,
    phase: &str,
) -> Result<(), Close> {
    let f = &server.faults;
    if server.blocked.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    if f.has(Fault::ExpireIdle) && faults::touch_expired(i64::from(instance_id)) {
        lock(&server.instances).map.remove(&instance_id);
    }
    if f.has(Fault::LeakPerEvent) {
        faults::leak();
    }
    if f.has(Fault::WrongErrorText) && !lock(&server.instances).map.contains_key(&instance_id) {
        // Pretends the event finished instead of closing the connection.
        encode_frame(&[], &mut conn.out);
        return Ok(());
    }
    let event_id = server.next_event.fetch_add(1, Ordering::Relaxed);
    let event = {
        let inst = lock(&server.instances);
        let instance = inst
            .map
            .get(&instance_id)
            .ok_or_else(|| Close::Error(format!("no plugin instance {instance_id}")))?;
        instance.inner.event(phase).ok_or_else(|| {
            Close::Error(format!(
                "undefined method {phase} (plugin {} handles {})",
                instance.plugin.name(),
                instance.plugin.phases().join(", ")
            ))
        })
    };
    let mut event = match event {
        Ok(e) => e,
        Err(_) if f.has(Fault::UndeclaredPhaseHangs) => std::future::pending().await,
        Err(e) => return Err(e),
    };
    if f.has(Fault::LeakAbandoned) {
        faults::hold(event_id);
    }
    let mut first = true;
    let mut reply = None;
    loop {
        let action = event.step(reply.take());
        if !matches!(action, Action::Call { .. }) {
            faults::release(event_id);
        }
        let ends_unanswered =
            matches!(action, Action::Exit { .. }) || (first && matches!(action, Action::Done));
        if f.has(Fault::LeakEntry) && ends_unanswered {
            faults::leak_entry();
        }
        first = false;
        match action {
            // `no-end-frame`: the RpcReturn follows without the empty frame before it.
            Action::Done if f.has(Fault::NoEndFrame) => return Ok(()),
            Action::Done => {
                encode_frame(&[], &mut conn.out);
                return Ok(());
            }
            Action::Raise(_) if f.has(Fault::RaiseIsSuccess) => {
                encode_frame(&[], &mut conn.out);
                return Ok(());
            }
            Action::Raise(_) if f.has(Fault::RaiseHangs) => {
                server.blocked.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            Action::Raise(e) => return Err(Close::Error(format!("handler raised: {e}"))),
            Action::Call { method, args } => {
                let spec = put_call(&mut conn.out, method.as_str(), &args, f)?;
                conn.flush().await?;
                let frame = match conn.read_frame().await {
                    Ok(Some(frame)) => frame,
                    other => {
                        if f.has(Fault::CrashOnVanish) {
                            faults::crash(Fault::CrashOnVanish, "a client vanished mid-event");
                        }
                        other?.ok_or_else(|| {
                            Close::Error(format!(
                                "host closed the connection instead of answering {}",
                                spec.name
                            ))
                        })?
                    }
                };
                if frame.is_empty() && f.has(Fault::NilNeedsData) {
                    return Err(Close::Error(format!(
                        "an empty reply to {} is not accepted",
                        spec.name
                    )));
                }
                let value = pdk_table::decode_result(spec, &frame)
                    .map_err(|e| Close::Error(e.to_string()))?;
                reply = Some(if f.has(Fault::CrossTalk) {
                    // Every event shares one reply slot; whoever looks first takes it.
                    *lock(&server.slot) = Some(value);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    lock(&server.slot).take().unwrap_or_default()
                } else {
                    value
                });
            }
            Action::Exit { method, args } => {
                put_call(&mut conn.out, method.as_str(), &args, f)?;
                conn.flush().await?;
                if f.has(Fault::ExitBlocks) {
                    server.blocked.store(true, Ordering::Relaxed);
                }
                if f.has(Fault::LeakExit) {
                    faults::leak();
                }
                return Err(Close::Quiet);
            }
        }
    }
}

/// Appends the method-name frame and the argument frame of a PDK call.
fn put_call(
    out: &mut Vec<u8>,
    method: &str,
    args: &[crate::Value],
    faults: &Faults,
) -> Result<&'static pdk_table::MethodSpec, Close> {
    let spec = pdk_table::lookup(method).ok_or_else(|| {
        Close::Error(format!(
            "PDK method {method:?} does not exist over {} (only the methods of Kong's \
             pluginsocket.proto can be called, docs/protocol.md §5.4)",
            Protocol::ProtoBuf
        ))
    })?;
    let payload = pdk_table::encode_args(spec, args).map_err(|e| Close::Error(e.to_string()))?;
    encode_frame(faults::method_name(method, faults).as_bytes(), out);
    encode_frame(&payload, out);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::messages::{CmdCloseInstance, CmdHandleEvent, CmdStartInstance};
    use crate::Value;
    use std::time::Duration;

    use super::super::testutil::TestServer;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(payload, &mut v);
        v
    }

    async fn read_frame(c: &mut UnixStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut len))
            .await
            .expect("frame within 5 s")
            .expect("frame length");
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        c.read_exact(&mut buf).await.expect("frame payload");
        buf
    }

    /// Asserts that the server closes the connection without sending anything more.
    async fn assert_closed(c: &mut UnixStream) {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected EOF, got {:02x?}", &buf[..n]);
    }

    fn call_bytes(sequence: i64, call: rpc_call::Call) -> Vec<u8> {
        frame(
            &RpcCall {
                sequence,
                call: Some(call),
            }
            .encode_to_vec(),
        )
    }

    async fn start(c: &mut UnixStream, seq: i64, name: &str, config: &str) -> InstanceStatus {
        let call = rpc_call::Call::CmdStartInstance(CmdStartInstance {
            name: name.into(),
            config: config.as_bytes().to_vec(),
        });
        c.write_all(&call_bytes(seq, call)).await.unwrap();
        let ret = RpcReturn::decode(read_frame(c).await.as_slice()).expect("RpcReturn");
        assert_eq!(ret.sequence, seq);
        match ret.r#return {
            Some(rpc_return::Return::InstanceStatus(s)) => s,
            other => panic!("expected instance_status, got {other:?}"),
        }
    }

    fn handle_event(seq: i64, instance_id: i32, phase: &str) -> Vec<u8> {
        call_bytes(
            seq,
            rpc_call::Call::CmdHandleEvent(CmdHandleEvent {
                instance_id,
                event_name: phase.into(),
            }),
        )
    }

    /// Runs an event, answering every call with `answer(method)` (already encoded). Returns
    /// the methods called and their decoded args; stops after the RpcReturn or an exit.
    async fn converse(
        c: &mut UnixStream,
        seq: i64,
        instance_id: i32,
        answer: impl Fn(&str) -> Vec<u8>,
    ) -> Vec<(String, Vec<Value>)> {
        c.write_all(&handle_event(seq, instance_id, "access"))
            .await
            .unwrap();
        let mut calls = Vec::new();
        loop {
            let name = read_frame(c).await;
            if name.is_empty() {
                let ret = RpcReturn::decode(read_frame(c).await.as_slice()).expect("RpcReturn");
                assert_eq!(ret.sequence, seq, "sequence echoed");
                assert!(ret.r#return.is_none());
                return calls;
            }
            let name = String::from_utf8(name).expect("utf-8 method name");
            let spec = pdk_table::lookup(&name).expect("known method");
            let args = pdk_table::unwrap_args(spec, &read_frame(c).await).expect("args");
            let exit = name == "kong.response.exit";
            calls.push((name.clone(), args));
            if exit {
                return calls;
            }
            c.write_all(&frame(&answer(&name))).await.unwrap();
        }
    }

    #[tokio::test]
    async fn start_instance_uses_seq_else_a_counter() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        let st = start(&mut c, 2, "hello", "{\"message\":\"Kong!\",\"__seq__\":17}").await;
        assert_eq!(st.instance_id, 17);
        assert_eq!(st.name, "hello");
        assert!(st.started_at > 1_600_000_000);
        // __seq__ 0 (no sequence) and none at all: a counter from a base drawn per process
        // (ids of a restarted server are not the ids of before).
        let st = start(&mut c, 3, "hello", "{\"message\":\"Kong!\",\"__seq__\":0}").await;
        let base = st.instance_id;
        assert!((1 << 20..1 << 30).contains(&base), "{base}");
        let st = start(&mut c, 4, "hello", "{}").await;
        assert_eq!(st.instance_id, base + 1);
        // Close answers instance_status with the echoed sequence.
        c.write_all(&call_bytes(
            5,
            rpc_call::Call::CmdCloseInstance(CmdCloseInstance { instance_id: 17 }),
        ))
        .await
        .unwrap();
        let ret = RpcReturn::decode(read_frame(&mut c).await.as_slice()).unwrap();
        assert_eq!(ret.sequence, 5);
        assert!(
            matches!(ret.r#return, Some(rpc_return::Return::InstanceStatus(ref s)) if s.instance_id == 17)
        );
        // Closed instance: HandleEvent closes the connection without a reply.
        c.write_all(&handle_event(6, 17, "access")).await.unwrap();
        assert_closed(&mut c).await;
        srv.stop().await;
    }

    /// Spec §5.5, with `hello`'s header name.
    #[tokio::test]
    async fn hello_conversation_frames() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        let st = start(&mut c, 2, "hello", "{\"message\":\"Kong!\",\"__seq__\":5}").await;
        assert_eq!(st.instance_id, 5);
        // HandleEvent (seq 3, instance 5, "access"): 0F 00 00 00 | 08 03 A2 02 0A 08 05 12 06 access
        let mut he = vec![
            0x0F, 0, 0, 0, 0x08, 0x03, 0xA2, 0x02, 0x0A, 0x08, 0x05, 0x12, 0x06,
        ];
        he.extend_from_slice(b"access");
        c.write_all(&he).await.unwrap();
        assert_eq!(read_frame(&mut c).await, b"kong.request.get_header");
        assert_eq!(
            read_frame(&mut c).await,
            [&[0x0A, 0x04][..], b"host"].concat()
        );
        c.write_all(&[&[0x0D, 0, 0, 0, 0x0A, 0x0B][..], b"example.com"].concat())
            .await
            .unwrap();
        assert_eq!(read_frame(&mut c).await, b"kong.response.set_header");
        let kv = read_frame(&mut c).await;
        let spec = pdk_table::lookup("kong.response.set_header").unwrap();
        assert_eq!(
            pdk_table::unwrap_args(spec, &kv).unwrap(),
            vec![Value::str("x-hello"), Value::str("Kong! example.com")]
        );
        c.write_all(&[0, 0, 0, 0]).await.unwrap();
        // Server done: 00 00 00 00, then RpcReturn 02 00 00 00 08 03.
        let mut tail = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut tail))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tail, [0, 0, 0, 0, 2, 0, 0, 0, 0x08, 0x03]);
        // The connection is reusable for the next call (no __seq__: the per-process counter).
        let st = start(&mut c, 4, "hello", "{}").await;
        assert!(st.instance_id >= 1 << 20, "{}", st.instance_id);
        srv.stop().await;
    }

    #[tokio::test]
    async fn unknown_instance_or_garbage_closes_the_connection() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        c.write_all(&handle_event(2, 99, "access")).await.unwrap();
        assert_closed(&mut c).await;

        let mut c = srv.connect().await;
        c.write_all(&frame(&[0xFF, 0xFF, 0xFF])).await.unwrap();
        assert_closed(&mut c).await;

        let mut c = srv.connect().await;
        let call = rpc_call::Call::CmdStartInstance(CmdStartInstance {
            name: "hello".into(),
            config: b"{not json".to_vec(),
        });
        c.write_all(&call_bytes(2, call)).await.unwrap();
        assert_closed(&mut c).await;

        let mut c = srv.connect().await;
        let st = start(&mut c, 2, "hello", "{}").await;
        c.write_all(&handle_event(3, st.instance_id, "log"))
            .await
            .unwrap();
        assert_closed(&mut c).await;

        // Others keep being served.
        let mut c = srv.connect().await;
        let calls = converse(&mut c, 2, st.instance_id, |_| Vec::new()).await;
        assert_eq!(calls.len(), 2);
        srv.stop().await;
    }

    #[tokio::test]
    async fn exit_writes_two_frames_then_closes() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        let st = start(
            &mut c,
            2,
            "exit",
            "{\"status\":429,\"message\":\"slow down\"}",
        )
        .await;
        let calls = converse(&mut c, 3, st.instance_id, |_| Vec::new()).await;
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "kong.response.exit");
        assert_eq!(calls[0].1.first(), Some(&Value::Int(429)));
        assert_eq!(
            calls[0].1.get(1).and_then(Value::as_bytes),
            Some(&b"slow down"[..])
        );
        assert_closed(&mut c).await;
        srv.stop().await;
    }

    #[tokio::test]
    async fn bench_makes_exactly_n_calls() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        let mut seq = 2;
        for n in [0usize, 1, 30] {
            let st = start(&mut c, seq, "bench", &format!("{{\"calls\":{n}}}")).await;
            seq += 1;
            let calls = converse(&mut c, seq, st.instance_id, |_| Vec::new()).await;
            seq += 1;
            assert_eq!(calls.len(), n, "bench calls={n}");
            if n > 0 {
                assert_eq!(calls[n - 1].0, "kong.response.set_header");
                assert_eq!(
                    calls[n - 1].1,
                    vec![Value::str("x-bench-calls"), Value::str(n.to_string())]
                );
            }
            if n > 1 {
                assert_eq!(calls[0].0, "kong.request.get_header");
                assert_eq!(calls[0].1, vec![Value::str("x-bench")]);
            }
        }
        srv.stop().await;
    }

    #[tokio::test]
    async fn multiphase_log_over_protobuf() {
        let srv = TestServer::start(Protocol::ProtoBuf).await;
        let mut c = srv.connect().await;
        let st = start(&mut c, 2, "multiphase", "{\"message\":\"Kong!\"}").await;
        c.write_all(&handle_event(3, st.instance_id, "log"))
            .await
            .unwrap();
        let mut notices = Vec::new();
        loop {
            let name = read_frame(&mut c).await;
            if name.is_empty() {
                break;
            }
            let name = String::from_utf8(name).unwrap();
            let spec = pdk_table::lookup(&name).expect("method in the PB table");
            let args = pdk_table::unwrap_args(spec, &read_frame(&mut c).await).unwrap();
            let reply = match name.as_str() {
                "kong.ctx.shared.get" => pdk_table::wrap_result(spec, &Value::str("Kong!")),
                "kong.request.get_header" => pdk_table::wrap_result(spec, &Value::str("this")),
                "kong.response.get_header" => {
                    pdk_table::wrap_result(spec, &Value::str("mock_upstream"))
                }
                "kong.log.serialize" => pdk_table::wrap_result(spec, &Value::str("{}")),
                "kong.log.notice" => {
                    notices.push(args);
                    Ok(Vec::new())
                }
                other => panic!("unexpected {other}"),
            }
            .unwrap();
            c.write_all(&frame(&reply)).await.unwrap();
        }
        let ret = RpcReturn::decode(read_frame(&mut c).await.as_slice()).unwrap();
        assert_eq!(ret.sequence, 3);
        assert_eq!(
            notices,
            vec![
                vec![Value::str("shared_msg: Kong!")],
                vec![Value::str("request_header: this")],
                vec![Value::str("response_header: mock_upstream")],
                vec![Value::str("serialized: {}")],
            ]
        );
        srv.stop().await;
    }
}
