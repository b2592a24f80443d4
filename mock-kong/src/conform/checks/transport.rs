//! `transport/*`: the byte stream under the RPC (docs/protocol.md §4.1, §5.1, §7): partial and coalesced
//! reads, large frames, bad input, vanishing clients, Kong's pool of 256 connections and idle
//! pooled connections.

use std::time::Duration;

use prost::Message;
use serde_json::json;

use super::verdict;
use crate::conform::runner::Ctx;
use crate::conform::wire::{End, Reply, StepConns};
use crate::conform::{join_all, CheckFuture, Outcome};
use crate::host::HostError;
use crate::msgpack;
use crate::pdk::SimpleRequest;
use crate::protobuf::encode_frame;
use crate::protobuf::messages::RpcCall;
use crate::{Protocol, Value};

/// After bad input on one connection: the server may drop that connection, but must stay up
/// and keep serving others.
async fn still_serves(c: &mut Ctx, after: &str) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.serves().await.map_err(|e| format!("after {after}: {e}"))
}

pub fn byte_at_a_time(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(c.plain_config());
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                let pause = Duration::from_millis(1);
                let (bytes, msgid, seq) =
                    c.host.start_instance_bytes(&e.name, &e.kong_config_json());
                w.send_bytewise(&bytes, pause, "StartInstance, one byte per write")
                    .await
                    .map_err(|e| e.to_string())?;
                let id = c
                    .host
                    .start_instance_answer(&mut w, msgid, seq)
                    .await
                    .map_err(|r| format!("StartInstance written one byte at a time: {r}"))?;
                let phase = c.phase();
                let (bytes, started) = c.host.handle_event_bytes(id, &phase);
                w.send_bytewise(&bytes, pause, "HandleEvent, one byte per write")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut pdk = SimpleRequest::new("example.com");
                let run = c
                    .host
                    .continue_event(
                        &mut w,
                        started,
                        StepConns::Same,
                        &mut Ctx::kong_answer(&mut pdk),
                    )
                    .await
                    .map_err(|e| format!("HandleEvent written one byte at a time: {e}"))?;
                if !matches!(run.end, End::Done | End::Exit) {
                    return Err(format!(
                        "HandleEvent written one byte at a time: the event {}",
                        run.end
                    ));
                }
                c.alive()?;
                Ok(Outcome::Pass(
                    "StartInstance and HandleEvent written one byte per write were understood"
                        .into(),
                ))
            }
            .await,
        )
    })
}

pub fn coalesced_requests(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let a = c.entity(c.plain_config());
                let b = c.entity(c.plain_config());
                let (mut bytes, ma, sa) =
                    c.host.start_instance_bytes(&a.name, &a.kong_config_json());
                let (more, mb, sb) = c.host.start_instance_bytes(&b.name, &b.kong_config_json());
                bytes.extend_from_slice(&more);
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                w.send(&bytes, "two StartInstance requests in one write")
                    .await
                    .map_err(|e| e.to_string())?;
                let ia = c
                    .host
                    .start_instance_answer(&mut w, ma, sa)
                    .await
                    .map_err(|r| format!("the first of two requests sent in one write: {r}"))?;
                let ib = c
                    .host
                    .start_instance_answer(&mut w, mb, sb)
                    .await
                    .map_err(|r| format!("the second of two requests sent in one write: {r}"))?;
                still_serves(c, "two requests in one write").await?;
                Ok(Outcome::Pass(format!(
                    "both answered (instances {ia}, {ib})"
                )))
            }
            .await,
        )
    })
}

/// Size of the large config.
const LARGE: usize = 1 << 20;

pub fn large_frame(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let big: String = "k".repeat(LARGE);
                let mut e = if c.plugin.name == "hello" {
                    c.entity(json!({ "message": big.clone() }))
                } else {
                    c.entity(c.plain_config())
                };
                if c.plugin.name != "hello" {
                    // `plugin_instance_name` is a string Kong really puts in the config.
                    e.instance_name = Some(big.clone());
                }
                let size = e.kong_config_json().len();
                let id = c
                    .start(&e)
                    .await
                    .map_err(|m| format!("with a {size}-byte config: {m}"))?;
                let mut pdk = SimpleRequest::new("example.com");
                let run = c
                    .event(id, &c.phase(), &mut pdk)
                    .await
                    .map_err(|m| format!("an event of the instance with a 1 MiB config: {m}"))?;
                if !matches!(run.end, End::Done | End::Exit) {
                    return Err(format!("an event of the 1 MiB instance {}", run.end));
                }
                if c.plugin.name == "hello" {
                    let got = pdk.response_header("x-hello").map(str::len);
                    let want = LARGE + " example.com".len();
                    if got != Some(want) {
                        return Err(format!(
                        "x-hello came back with {got:?} bytes, expected {want} (the 1 MiB message \
                         and the host)"
                    ));
                    }
                    return Ok(Outcome::Pass(format!(
                        "a {size}-byte StartInstance and a 1 MiB set_header callback"
                    )));
                }
                Ok(Outcome::Pass(format!("a {size}-byte StartInstance")))
            }
            .await,
        )
    })
}

/// Sends `bytes` on a new connection, gives the server a moment, and closes.
async fn send_and_drop(c: &Ctx, bytes: &[u8], what: &str) -> Result<String, String> {
    let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
    w.send(bytes, what).await.map_err(|e| e.to_string())?;
    Ok(match w.closed_within(Duration::from_millis(300)).await {
        Ok(true) => "the server closed that connection".into(),
        Ok(false) => "the server ignored it".into(),
        Err(sent) => format!("the server answered ({sent})"),
    })
}

pub fn garbage(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let bytes: Vec<u8> = match c.protocol {
                    // 0xC1 is never used by MessagePack.
                    Protocol::MsgPack => [0xC1u8; 8]
                        .iter()
                        .copied()
                        .chain(*b"\x00\xffnot msgpack")
                        .collect(),
                    Protocol::ProtoBuf => {
                        let mut out = Vec::new();
                        encode_frame(&[0xFF; 12], &mut out);
                        out
                    }
                };
                let note = send_and_drop(c, &bytes, "garbage bytes").await?;
                still_serves(c, "garbage bytes on another connection").await?;
                Ok(Outcome::Pass(format!("{note}; the server kept serving")))
            }
            .await,
        )
    })
}

pub fn wrong_shape(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let mut notes = Vec::new();
                let samples: Vec<(Vec<u8>, &str)> = match c.protocol {
                    Protocol::MsgPack => vec![
                        (
                            msgpack::encode_to_vec(&Value::map([("hello", Value::Int(1))])),
                            "a map instead of a request",
                        ),
                        (
                            msgpack::encode_to_vec(&Value::Array(vec![
                                Value::Int(1),
                                Value::Int(1),
                                Value::Nil,
                                Value::Nil,
                            ])),
                            "a response sent to the server",
                        ),
                        (
                            msgpack::encode_to_vec(&Value::Array(vec![
                                Value::Int(0),
                                Value::Int(1),
                                Value::str("plugin.HandleEvent"),
                                Value::str("not an array"),
                            ])),
                            "a request whose params are not an array",
                        ),
                    ],
                    Protocol::ProtoBuf => {
                        let mut a = Vec::new();
                        encode_frame(
                            &RpcCall {
                                sequence: 5,
                                call: None,
                            }
                            .encode_to_vec(),
                            &mut a,
                        );
                        let mut b = Vec::new();
                        encode_frame(b"kong.request.get_header", &mut b);
                        vec![
                            (a, "an RpcCall without a command"),
                            (b, "a callback frame sent to the server"),
                        ]
                    }
                };
                for (bytes, what) in samples {
                    let note = send_and_drop(c, &bytes, what).await?;
                    notes.push(format!("{what}: {note}"));
                    still_serves(c, what).await?;
                }
                Ok(Outcome::Pass(notes.join("; ")))
            }
            .await,
        )
    })
}

pub fn truncated_frame(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(c.plain_config());
                let (bytes, _, _) = c.host.start_instance_bytes(&e.name, &e.kong_config_json());
                let half = &bytes[..bytes.len() / 2];
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                w.send(half, "half a StartInstance")
                    .await
                    .map_err(|e| e.to_string())?;
                drop(w);
                still_serves(c, "half a request and a close").await?;
                Ok(Outcome::Pass(format!(
                    "{} of {} bytes, then close: the server kept serving",
                    half.len(),
                    bytes.len()
                )))
            }
            .await,
        )
    })
}

pub fn vanishing_client(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(c.plain_config());
                let id = c.start(&e).await?;
                let phase = c.phase();
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                // The first callback is left unanswered, as after a terminal one.
                let run = c
                    .host
                    .drive(&mut w, id, &phase, StepConns::Same, &mut |_, _| {
                        Reply::Terminal
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                if let End::Error(e) = &run.end {
                    return Err(format!("HandleEvent failed: {e}"));
                }
                let Some(method) = run.callbacks.first().map(|cb| cb.method.clone()) else {
                    return Ok(Outcome::Skip(format!(
                        "the plugin makes no PDK call in {phase}, so no event stays open"
                    )));
                };
                drop(w);
                still_serves(
                    c,
                    "a client vanished while the server waited for its answer",
                )
                .await?;
                Ok(Outcome::Pass(format!(
                    "the client vanished instead of answering {method}; the server kept serving"
                )))
            }
            .await,
        )
    })
}

/// Kong's `lua_socket_pool_size` (docs/protocol.md §4.1, §7).
const POOL: usize = 256;

pub fn many_connections(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(c.plain_config());
                let id = c.start(&e).await?;
                let phase = c.phase();
                let connects: Vec<_> = (0..POOL).map(|_| c.host.connect()).collect();
                let mut wires = Vec::with_capacity(POOL);
                for (i, w) in join_all(connects).await.into_iter().enumerate() {
                    wires.push(w.map_err(|e| format!("connection {} of {POOL}: {e}", i + 1))?);
                }
                let host = c.host.clone();
                let runs: Vec<_> = wires
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut w)| {
                        let host = host.clone();
                        let phase = phase.clone();
                        async move {
                            let mut pdk = SimpleRequest::new("example.com");
                            let r = host
                                .drive(
                                    &mut w,
                                    id,
                                    &phase,
                                    StepConns::Same,
                                    &mut Ctx::kong_answer(&mut pdk),
                                )
                                .await;
                            // Held open until every event is done, like a busy pool.
                            (i, r, w)
                        }
                    })
                    .collect();
                let results = join_all(runs).await;
                let mut bad = Vec::new();
                for (i, r, _) in &results {
                    match r {
                        Ok(run) if matches!(run.end, End::Done | End::Exit) => {}
                        Ok(run) => bad.push(format!("connection {}: the event {}", i + 1, run.end)),
                        Err(e) => bad.push(format!("connection {}: {e}", i + 1)),
                    }
                }
                drop(results);
                if !bad.is_empty() {
                    return Err(format!(
                        "{} of {POOL} concurrent connections failed: {}",
                        bad.len(),
                        bad.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                    ));
                }
                Ok(Outcome::Pass(format!(
                    "{POOL} connections open at once, one event each"
                )))
            }
            .await,
        )
    })
}

pub fn idle_connection(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(c.plain_config());
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                let id = c
                    .host
                    .start_instance(&mut w, &e.name, &e.kong_config_json())
                    .await
                    .map_err(|r| r.to_string())?;
                let idle = c.opts.idle_connection;
                tokio::time::sleep(idle).await;
                let mut pdk = SimpleRequest::new("example.com");
                let run = c
                    .host
                    .drive(
                        &mut w,
                        id,
                        &c.phase(),
                        StepConns::Same,
                        &mut Ctx::kong_answer(&mut pdk),
                    )
                    .await
                    .map_err(|e| match e {
                        HostError::Closed { .. }
                        | HostError::Read { .. }
                        | HostError::Write { .. } => format!(
                            "the server closed the pooled connection within {} s of idling ({e}); \
                         Kong reuses idle connections for up to 60 s and a request that picks a \
                         closed one fails",
                            idle.as_secs()
                        ),
                        other => other.to_string(),
                    })?;
                if !matches!(run.end, End::Done | End::Exit) {
                    return Err(format!(
                        "after {} s idle, the event {}",
                        idle.as_secs(),
                        run.end
                    ));
                }
                Ok(Outcome::Pass(format!(
                    "reused after {} s idle",
                    idle.as_secs_f64()
                )))
            }
            .await,
        )
    })
}

/// The length prefix `transport/huge-length` sends: 2^31 bytes declared.
const HUGE: u32 = 1 << 31;

/// A server's address-space size and its peak (`VmSize`, `VmPeak`), in KiB.
fn vm_kib(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("VmSize:"), field("VmPeak:")) {
        (Some(size), Some(peak)) => Ok((size, peak)),
        _ => Err(format!("no VmSize/VmPeak in /proc/{pid}/status")),
    }
}

pub fn huge_length(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let Some(pid) = c.process.as_ref().and_then(|p| p.pid()) else {
                    return Ok(Outcome::Skip(
                        "the server is managed externally, so its memory cannot be measured".into(),
                    ));
                };
                let (_, peak0) = vm_kib(pid)?;
                let mut bytes = HUGE.to_le_bytes().to_vec();
                bytes.extend([0u8; 16]);
                let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
                w.send(&bytes, "a frame declaring 2^31 bytes")
                    .await
                    .map_err(|e| e.to_string())?;
                let refused = w.closed_within(Duration::from_secs(1)).await;
                // The peak covers a reservation made and dropped in the meantime.
                let grown_mib = c
                    .alive()
                    .ok()
                    .and_then(|()| vm_kib(pid).ok())
                    .map(|(_, peak1)| peak1.saturating_sub(peak0) / 1024);
                drop(w);
                if let Some(g) = grown_mib.filter(|g| *g >= 1024) {
                    return Err(format!(
                        "the server reserved {g} MiB for a frame that declared 2^31 bytes and \
                         sent 16 (its address space grew by the declared length)"
                    ));
                }
                match refused {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(
                            "the connection stayed open, waiting for the 2 GiB the prefix \
                             declared: the length was not refused"
                                .into(),
                        )
                    }
                    Err(sent) => {
                        return Err(format!(
                            "the server answered a frame that declared 2^31 bytes: {sent}"
                        ))
                    }
                }
                still_serves(c, "a frame that declared 2^31 bytes").await?;
                Ok(Outcome::Pass(format!(
                    "the connection was closed; address-space peak grew by {} MiB; the server \
                     kept serving",
                    grown_mib.unwrap_or(0)
                )))
            }
            .await,
        )
    })
}
