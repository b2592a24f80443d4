//! One rule for what a server may send (issue 17): the host (`mock_kong::host::Client`) and the
//! conformance client (`conform::wire::RawHost`) run events through the same drivers, and both
//! must accept exactly what Kong's host accepts.
//!
//! * A regression test: the two lenient answers that made the conformance client raise false
//!   alarms (`Args` as the bare value, Step answers without `EventId`).
//! * Differential property tests, one per protocol: generated server answers (Step answers,
//!   errors, notifications, argument shapes, id widths and types, envelopes of other lengths;
//!   ProtoBuf frames, sequences, unknown fields) are played by a scripted server to the host and
//!   to the conformance client, and both are compared with an independent model of Kong's Lua
//!   (`bridge_loop` / `Rpc:call` of `mp_rpc.lua`, the frame loop of `pb_rpc.lua`), written here
//!   from the specification and not from the drivers. Any case where one side accepts and
//!   another rejects, or where they see other callbacks or send other EventIds, fails.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock_kong::conform::wire::{End, RawHost};
use mock_kong::host::{Client, EventEnd, HostError, HostOptions, Timeouts};
use mock_kong::msgpack::{encode_response, RpcMessage, StreamDecoder};
use mock_kong::pdk::{Pdk, PdkOutcome, SimpleRequest};
use mock_kong::protobuf::messages::{RpcCall, RpcReturn};
use mock_kong::protobuf::{encode_frame, pdk_table, FrameDecoder};
use mock_kong::{Protocol, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Cases per protocol (each plays one event to the host and one to the conformance client).
const MSGPACK_CASES: u32 = 400;
const PROTOBUF_CASES: u32 = 250;

/// Answers HandleEvent with one `kong.request.get_header` callback whose `Args` is the bare
/// string `"host"`, and every Step with `{Data: "ret"}` (no EventId).
fn lenient_server() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lenient.socket");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(answer_mp_requests(s, |msgid, method, _| {
                let result = match method {
                    "plugin.HandleEvent" => Value::map([
                        ("EventId", Value::Int(3)),
                        (
                            "Data",
                            Value::map([
                                ("Method", Value::str("kong.request.get_header")),
                                ("Args", Value::str("host")),
                            ]),
                        ),
                    ]),
                    _ => Value::map([("Data", Value::str("ret"))]),
                };
                let mut out = Vec::new();
                encode_response(msgid, &Value::Nil, &result, &mut out);
                Some(out)
            }));
        }
    });
    (dir, socket)
}

/// Reads MsgPack requests from `s` and writes what `answer` makes of each (msgid, method,
/// params). Ends when the connection closes, a message is not a request, or `answer` gives
/// nothing (then the connection is closed).
async fn answer_mp_requests(
    mut s: tokio::net::UnixStream,
    mut answer: impl FnMut(u64, &str, &[Value]) -> Option<Vec<u8>>,
) {
    let mut dec = StreamDecoder::new(1 << 20);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        while let Ok(Some(v)) = dec.next_value() {
            let Ok(RpcMessage::Request {
                msgid,
                method,
                params,
            }) = RpcMessage::from_value(v)
            else {
                return;
            };
            let Some(bytes) = answer(msgid, &method, &params) else {
                return;
            };
            if s.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn host_and_conformance_client_accept_the_same_lenient_answers() {
    let (_dir, socket) = lenient_server();

    let mut o = HostOptions::new(&socket, Protocol::MsgPack);
    o.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let host = Client::new(o);
    let mut pdk = SimpleRequest::new("example.com");
    let report = host
        .handle_event(0, "access", &mut pdk)
        .await
        .expect("the host accepts it");
    assert_eq!(report.end, EventEnd::Done);
    assert_eq!(report.calls.len(), 1);
    assert_eq!(report.calls[0].args, vec![Value::str("host")]);

    let conform = RawHost::new(Protocol::MsgPack, socket.clone(), Duration::from_secs(5));
    let mut pdk = SimpleRequest::new("example.com");
    let run = conform
        .event(0, "access", &mut pdk)
        .await
        .expect("the conformance client accepts it");
    assert_eq!(run.end, End::Done);
    assert_eq!(run.methods(), ["kong.request.get_header"]);
    assert_eq!(run.callbacks[0].args, vec![Value::str("host")]);
    // The shape is still reported, for the suite to note at info level (it is legal in Kong).
    assert_eq!(run.callbacks[0].args_not_array, Some("string"));
}

// ------------------------------------------------------------------------------------------------
// What both sides are compared on
// ------------------------------------------------------------------------------------------------

/// How an event ended, in the terms all three sides share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// The server said it was done (or, MsgPack, ended the event silently).
    Done,
    /// The last callback was terminal (`kong.response.exit`).
    Exit,
    /// MsgPack: a string error answer (Kong logs it and the request goes on).
    ServerError(String),
    /// ProtoBuf: the connection closed (Kong resets its instances and retries).
    Closed,
    /// ProtoBuf: a method Kong's table lacks (HTTP 500).
    MethodNotFound,
    /// Kong raises (or gives up reading): the request fails.
    Rejected,
}

impl Class {
    fn label(&self) -> &'static str {
        match self {
            Class::Done => "done",
            Class::Exit => "exit",
            Class::ServerError(_) => "server error",
            Class::Closed => "closed",
            Class::MethodNotFound => "method not found",
            Class::Rejected => "rejected",
        }
    }
}

/// What a side saw: how the event ended, the PDK calls it made (method, arguments without
/// trailing nils) and, MsgPack, the `EventId` each Step carried (nil: none).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    class: Class,
    calls: Vec<(String, Vec<Value>)>,
    step_ids: Vec<Value>,
    /// Legal but unusual choices the conformance client noted (0 for the host).
    quirks: usize,
}

/// Answers as Kong's functions do in kind: `kong.log.*` returns nothing, `kong.response.exit`
/// is terminal, anything else returns the text `"<method>!"`; records the calls.
#[derive(Default)]
struct TestPdk {
    calls: Vec<(String, Vec<Value>)>,
}

impl Pdk for TestPdk {
    fn call(&mut self, _phase: &str, method: &str, args: &[Value]) -> PdkOutcome {
        let mut args = args.to_vec();
        while args.last().is_some_and(|a| a.is_nil()) {
            args.pop();
        }
        self.calls.push((method.to_owned(), args));
        if method == "kong.response.exit" {
            PdkOutcome::Exit {
                status: 200,
                body: None,
                headers: Vec::new(),
            }
        } else if method.starts_with("kong.log.") {
            PdkOutcome::Return(Value::Nil)
        } else {
            PdkOutcome::Return(Value::str(format!("{method}!")))
        }
    }
}

/// A closed connection: ProtoBuf's refusal (Kong retries); over MsgPack Kong's "no data",
/// a failed call like any other.
fn closed(protocol: Protocol) -> Class {
    match protocol {
        Protocol::ProtoBuf => Class::Closed,
        Protocol::MsgPack => Class::Rejected,
    }
}

fn host_class(protocol: Protocol, r: Result<mock_kong::host::EventReport, HostError>) -> Class {
    match r {
        Ok(rep) => match rep.end {
            EventEnd::Done => Class::Done,
            EventEnd::Exit { .. } => Class::Exit,
            EventEnd::MethodNotFound { .. } => Class::MethodNotFound,
            EventEnd::Raised { .. } => Class::Rejected,
            // Only in a failed event's transcript, never in a finished report.
            EventEnd::Failed { .. } => Class::Rejected,
        },
        Err(HostError::Server { message, .. }) => Class::ServerError(message),
        Err(HostError::Closed { .. }) => closed(protocol),
        Err(_) => Class::Rejected,
    }
}

fn conform_class(
    protocol: Protocol,
    r: Result<mock_kong::conform::wire::EventRun, HostError>,
) -> Class {
    match r {
        Ok(run) => match run.end {
            End::Done => Class::Done,
            End::Exit => Class::Exit,
            End::Error(m) => Class::ServerError(m),
            End::Closed => closed(protocol),
            End::MethodNotFound(_) => Class::MethodNotFound,
            End::Raised { .. } => Class::Rejected,
        },
        Err(HostError::Closed { .. }) => closed(protocol),
        Err(_) => Class::Rejected,
    }
}

/// Plays one event to the host and one to the conformance client (a fresh server script
/// cursor for each) and returns what each saw.
async fn both_sides(protocol: Protocol, server: &ScriptServer) -> (Seen, Seen) {
    let mut o = HostOptions::new(&server.socket, protocol);
    o.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let host = Client::new(o);
    server.rewind();
    let mut pdk = TestPdk::default();
    let class = host_class(protocol, host.handle_event(7, "access", &mut pdk).await);
    drop(host);
    let host_seen = Seen {
        class,
        calls: pdk.calls,
        step_ids: server.step_ids(),
        quirks: 0,
    };
    server.rewind();
    let conform = RawHost::new(protocol, server.socket.clone(), Duration::from_secs(5));
    let mut pdk = TestPdk::default();
    let run = conform.event(7, "access", &mut pdk).await;
    let quirks = run.as_ref().map_or(0, |r| r.quirks.iter().count());
    let class = conform_class(protocol, run);
    let conform_seen = Seen {
        class,
        calls: pdk.calls,
        step_ids: server.step_ids(),
        quirks,
    };
    (host_seen, conform_seen)
}

// ------------------------------------------------------------------------------------------------
// The scripted server
// ------------------------------------------------------------------------------------------------

/// One step of a ProtoBuf script: what the server writes after reading a request or a reply.
#[derive(Debug, Clone)]
enum PbMove {
    /// Frames to write, then read the host's next frame (a reply).
    Callback(Vec<Vec<u8>>),
    /// Frames to write, then stay silent until the host closes.
    Last(Vec<Vec<u8>>),
    /// Frames to write, then close the connection.
    Close(Vec<Vec<u8>>),
}

enum Script {
    /// MsgPack: per request, the bytes of the answer given the request's msgid.
    Mp(Vec<Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>>),
    /// ProtoBuf: the moves after the HandleEvent call, given its sequence.
    Pb(Vec<Box<dyn Fn(i64) -> PbMove + Send + Sync>>),
}

#[derive(Default)]
struct State {
    cursor: usize,
    step_ids: Vec<Value>,
}

/// A server that plays a script: MsgPack answers in order to whatever requests arrive (on any
/// connection), closing the connection once the script is out; ProtoBuf moves on the
/// connection of the HandleEvent call.
struct ScriptServer {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptServer {
    fn start(script: Script) -> ScriptServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("script.socket");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let script = Arc::new(script);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (script, st) = (script.clone(), st.clone());
                tokio::spawn(async move {
                    match &*script {
                        Script::Mp(answers) => serve_mp(s, answers, &st).await,
                        Script::Pb(moves) => serve_pb(s, moves, &st).await,
                    }
                });
            }
        });
        ScriptServer {
            _dir: dir,
            socket,
            state,
            task,
        }
    }

    fn rewind(&self) {
        *self.state.lock().unwrap() = State::default();
    }

    fn step_ids(&self) -> Vec<Value> {
        self.state.lock().unwrap().step_ids.clone()
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type MpAnswers = Vec<Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>>;
type PbMoves = Vec<Box<dyn Fn(i64) -> PbMove + Send + Sync>>;

async fn serve_mp(s: tokio::net::UnixStream, answers: &MpAnswers, st: &Mutex<State>) {
    answer_mp_requests(s, |msgid, method, params| {
        let mut st = st.lock().unwrap();
        if method.starts_with("plugin.Step") {
            let id = params
                .first()
                .and_then(|p| p.get("EventId"))
                .cloned()
                .unwrap_or_default();
            st.step_ids.push(id);
        }
        let i = st.cursor;
        st.cursor += 1;
        // None once the script is out: the connection is closed.
        answers.get(i).map(|a| a(msgid))
    })
    .await
}

async fn serve_pb(mut s: tokio::net::UnixStream, moves: &PbMoves, st: &Mutex<State>) {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = vec![0u8; 4096];
    let mut sequence = None;
    loop {
        let frame = loop {
            match dec.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dec.feed(&buf[..n]),
            }
        };
        if sequence.is_none() {
            match RpcCall::decode(frame.as_slice()) {
                Ok(call) => sequence = Some(call.sequence),
                Err(_) => return,
            }
        }
        let next = {
            let mut st = st.lock().unwrap();
            let i = st.cursor;
            st.cursor += 1;
            moves.get(i).map(|m| m(sequence.unwrap_or(0)))
        };
        let (frames, then_read, close) = match next {
            Some(PbMove::Callback(f)) => (f, true, false),
            Some(PbMove::Last(f)) => (f, false, false),
            Some(PbMove::Close(f)) => (f, false, true),
            None => return,
        };
        let mut out = Vec::new();
        for f in &frames {
            encode_frame(f, &mut out);
        }
        if s.write_all(&out).await.is_err() || close {
            return;
        }
        if !then_read {
            // Silent until the host hangs up.
            let _ = s.read(&mut buf).await;
            return;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// MessagePack: the generated answers, their bytes, and Kong's reading of them
// ------------------------------------------------------------------------------------------------

/// How a number is written on the wire (every width a MessagePack writer may choose).
#[derive(Debug, Clone, Copy)]
enum Width {
    Min,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F64,
}

/// A MessagePack value with its wire form chosen.
#[derive(Debug, Clone)]
enum W {
    Nil,
    Bool(bool),
    Int(i64, Width),
    F64(f64),
    Str(String),
    /// `str8` (0xD9), which Kong's writer never uses but every reader takes.
    Str8(String),
    Bin(Vec<u8>),
    Arr(Vec<W>),
    Map(Vec<(W, W)>),
}

fn put(w: &W, out: &mut Vec<u8>) {
    match w {
        W::Nil => out.push(0xC0),
        W::Bool(b) => out.push(if *b { 0xC3 } else { 0xC2 }),
        W::F64(f) => {
            out.push(0xCB);
            out.extend(f.to_be_bytes());
        }
        W::Int(n, width) => {
            let n = *n;
            match width {
                Width::U8 if (0..=0xFF).contains(&n) => out.extend([0xCC, n as u8]),
                Width::U16 if (0..=0xFFFF).contains(&n) => {
                    out.push(0xCD);
                    out.extend((n as u16).to_be_bytes());
                }
                Width::U32 if (0..=0xFFFF_FFFF).contains(&n) => {
                    out.push(0xCE);
                    out.extend((n as u32).to_be_bytes());
                }
                Width::U64 if n >= 0 => {
                    out.push(0xCF);
                    out.extend((n as u64).to_be_bytes());
                }
                Width::I8 if i8::try_from(n).is_ok() => out.extend([0xD0, n as u8]),
                Width::I16 if i16::try_from(n).is_ok() => {
                    out.push(0xD1);
                    out.extend((n as i16).to_be_bytes());
                }
                Width::I32 if i32::try_from(n).is_ok() => {
                    out.push(0xD2);
                    out.extend((n as i32).to_be_bytes());
                }
                Width::I64 => {
                    out.push(0xD3);
                    out.extend(n.to_be_bytes());
                }
                Width::F64 => {
                    out.push(0xCB);
                    out.extend((n as f64).to_be_bytes());
                }
                _ => mock_kong::msgpack::encode(&Value::Int(n), out),
            }
        }
        W::Str(s) => mock_kong::msgpack::encode(&Value::str(s.clone()), out),
        W::Str8(s) => {
            out.extend([0xD9, s.len() as u8]);
            out.extend(s.as_bytes());
        }
        W::Bin(b) => {
            out.extend([0xC4, b.len() as u8]);
            out.extend(b);
        }
        W::Arr(items) => {
            mock_kong::msgpack::encode_array_header(items.len(), out);
            for i in items {
                put(i, out);
            }
        }
        W::Map(entries) => {
            mock_kong::msgpack::encode_map_header(entries.len(), out);
            for (k, v) in entries {
                put(k, out);
                put(v, out);
            }
        }
    }
}

/// What Kong's Lua holds after decoding `w`: strings are strings (`str` or `bin`), numbers
/// are numbers, tables are tables.
#[derive(Debug, Clone, PartialEq)]
enum Lua {
    Nil,
    Bool(bool),
    Num(f64),
    Str(Vec<u8>),
    Table(Vec<(Lua, Lua)>),
}

fn lua(w: &W) -> Lua {
    match w {
        W::Nil => Lua::Nil,
        W::Bool(b) => Lua::Bool(*b),
        W::Int(n, _) => Lua::Num(*n as f64),
        W::F64(f) => Lua::Num(*f),
        W::Str(s) | W::Str8(s) => Lua::Str(s.as_bytes().to_vec()),
        W::Bin(b) => Lua::Str(b.clone()),
        W::Arr(items) => Lua::Table(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (Lua::Num(i as f64 + 1.0), lua(v)))
                .filter(|(_, v)| *v != Lua::Nil)
                .collect(),
        ),
        W::Map(entries) => Lua::Table(
            entries
                .iter()
                .map(|(k, v)| (lua(k), lua(v)))
                .filter(|(k, v)| *k != Lua::Nil && *v != Lua::Nil)
                .collect(),
        ),
    }
}

impl Lua {
    /// `t[k]` (nil for a non-table here; the model raises before indexing one).
    fn get(&self, k: &Lua) -> Lua {
        match self {
            Lua::Table(entries) => entries
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or(Lua::Nil),
            _ => Lua::Nil,
        }
    }
    fn field(&self, name: &str) -> Lua {
        self.get(&Lua::Str(name.as_bytes().to_vec()))
    }
    fn truthy(&self) -> bool {
        !matches!(self, Lua::Nil | Lua::Bool(false))
    }
    /// `unpack(t)`: `t[1] .. t[#t]` (the generated tables have no holes).
    fn unpack(&self) -> Vec<Lua> {
        let mut out = Vec::new();
        let mut i = 1.0;
        loop {
            match self.get(&Lua::Num(i)) {
                Lua::Nil => return out,
                v => out.push(v),
            }
            i += 1.0;
        }
    }
    /// The value as the PDK receives it from the drivers (`bin`/`str` compared loosely).
    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Lua::Nil, v) => v.is_nil(),
            (Lua::Bool(a), Value::Bool(b)) => a == b,
            (Lua::Num(a), v) => v.as_f64() == Some(*a),
            (Lua::Str(a), v) => v.as_bytes() == Some(a.as_slice()),
            (Lua::Table(entries), Value::Array(items)) => {
                entries.len() == items.iter().filter(|x| !x.is_nil()).count()
                    && entries.iter().all(|(k, x)| match k {
                        Lua::Num(i) => items
                            .get((*i as usize).wrapping_sub(1))
                            .is_some_and(|y| x.matches(y)),
                        _ => false,
                    })
            }
            (Lua::Table(entries), Value::Map(m)) => {
                entries.len() == m.iter().filter(|(_, x)| !x.is_nil()).count()
                    && entries
                        .iter()
                        .all(|(k, x)| m.iter().any(|(k2, x2)| k.matches(k2) && x.matches(x2)))
            }
            _ => false,
        }
    }
    /// How Kong writes the value back (the EventId of every Step): an integral number below
    /// 2^53 as an integer, other numbers as floats, strings as `str`.
    fn written(&self) -> Value {
        match self {
            Lua::Nil => Value::Nil,
            Lua::Bool(b) => Value::Bool(*b),
            Lua::Num(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                Value::Int(*f as i64)
            }
            Lua::Num(f) => Value::Float(*f),
            Lua::Str(b) => Value::Str(b.clone()),
            Lua::Table(_) => Value::Nil, // not generated
        }
    }
}

/// One MsgPack answer of the server: notifications, then the response envelope.
#[derive(Debug, Clone)]
struct MpAnswer {
    notes: Vec<W>,
    kind: Width,
    /// `None`: the right msgid (in this width); `Some(d)`: off by `d`.
    msgid: (Width, Option<i64>),
    error: W,
    result: W,
    /// 3 (no result element), 4, 5 (an extra element), or 0: a map with integer keys.
    shape: u8,
}

impl MpAnswer {
    fn bytes(&self, msgid: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for n in &self.notes {
            put(n, &mut out);
        }
        let id = msgid as i64 + self.msgid.1.unwrap_or(0);
        let mut items = vec![
            W::Int(1, self.kind),
            W::Int(id, self.msgid.0),
            self.error.clone(),
        ];
        match self.shape {
            3 => {}
            5 => items.extend([self.result.clone(), W::Str("extra".into())]),
            _ => items.push(self.result.clone()),
        }
        let envelope = if self.shape == 0 {
            W::Map(
                items
                    .into_iter()
                    .enumerate()
                    .rev()
                    .map(|(i, v)| (W::Int(i as i64 + 1, Width::Min), v))
                    .collect(),
            )
        } else {
            W::Arr(items)
        };
        put(&envelope, &mut out);
        out
    }
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![
        4 => Just(Width::Min),
        1 => Just(Width::U8),
        1 => Just(Width::U16),
        1 => Just(Width::U32),
        1 => Just(Width::U64),
        1 => Just(Width::I8),
        1 => Just(Width::I16),
        1 => Just(Width::I32),
        1 => Just(Width::I64),
        1 => Just(Width::F64),
    ]
}

fn text(s: &str) -> impl Strategy<Value = W> {
    let s = s.to_owned();
    prop_oneof![
        4 => Just(W::Str(s.clone())),
        1 => Just(W::Str8(s.clone())),
        1 => Just(W::Bin(s.into_bytes())),
    ]
}

fn scalar() -> impl Strategy<Value = W> {
    prop_oneof![
        text("host"),
        (-300i64..70_000, width()).prop_map(|(n, w)| W::Int(n, w)),
        any::<bool>().prop_map(W::Bool),
        Just(W::F64(1.5)),
    ]
}

/// `Args` in every shape Kong reads: an array, a map with keys 1..n, a bare value, nil,
/// nested tables.
fn args() -> impl Strategy<Value = Option<W>> {
    prop_oneof![
        4 => prop::collection::vec(scalar(), 0..4).prop_map(|v| Some(W::Arr(v))),
        2 => scalar().prop_map(Some),
        1 => prop::collection::vec(scalar(), 1..4).prop_map(|v| Some(W::Map(
            v.into_iter()
                .enumerate()
                .rev()
                .map(|(i, x)| (W::Int(i as i64 + 1, Width::Min), x))
                .collect()
        ))),
        1 => Just(Some(W::Nil)),
        1 => Just(None),
        1 => Just(Some(W::Arr(vec![
            W::Str("k".into()),
            W::Map(vec![(W::Str("a".into()), W::Int(1, Width::Min))]),
        ]))),
    ]
}

fn method() -> impl Strategy<Value = Option<W>> {
    prop_oneof![
        3 => text("kong.request.get_header").prop_map(Some),
        2 => text("kong.log.err").prop_map(Some),
        1 => text("kong.nope.missing").prop_map(Some),
        1 => text("kong.response.exit").prop_map(Some),
        1 => (0i64..9, width()).prop_map(|(n, w)| Some(W::Int(n, w))),
        1 => prop_oneof![Just(None), Just(Some(W::Bool(true)))],
    ]
}

fn data() -> impl Strategy<Value = Option<W>> {
    let callback = (method(), args(), any::<bool>()).prop_map(|(m, a, extra)| {
        let mut entries = Vec::new();
        if let Some(m) = m {
            entries.push((W::Str("Method".into()), m));
        }
        if let Some(a) = a {
            entries.push((W::Str("Args".into()), a));
        }
        if extra {
            entries.push((W::Str("Trace".into()), W::Str("x".into())));
        }
        Some(W::Map(entries))
    });
    prop_oneof![
        8 => callback,
        3 => text("ret").prop_map(Some),
        1 => prop_oneof![
            Just(Some(W::Str("done".into()))),
            Just(Some(W::Int(2, Width::Min))),
            Just(None),
        ],
    ]
}

fn event_id() -> impl Strategy<Value = Option<W>> {
    prop_oneof![
        5 => (0i64..100_000, width()).prop_map(|(n, w)| Some(W::Int(n, w))),
        2 => Just(None),
        1 => text("ev-1").prop_map(Some),
        1 => Just(Some(W::F64(2.5))),
        1 => Just(Some(W::Int(1 << 60, Width::I64))),
    ]
}

fn result() -> impl Strategy<Value = W> {
    let table = (event_id(), data(), any::<bool>()).prop_map(|(id, data, extra)| {
        let mut entries = Vec::new();
        if let Some(d) = data {
            entries.push((W::Str("Data".into()), d));
        }
        if let Some(id) = id {
            entries.push((W::Str("EventId".into()), id));
        }
        if extra {
            entries.push((W::Str("Pid".into()), W::Int(4242, Width::Min)));
        }
        W::Map(entries)
    });
    prop_oneof![
        20 => table,
        1 => prop_oneof![Just(W::Nil), Just(W::Bool(false))],
        1 => prop_oneof![Just(W::Str("ret".into())), Just(W::Int(3, Width::Min))],
    ]
}

fn note() -> impl Strategy<Value = W> {
    prop_oneof![
        Just(W::Arr(vec![
            W::Int(2, Width::Min),
            W::Str("serverPid".into()),
            W::Int(4242, Width::U32)
        ])),
        Just(W::Arr(vec![W::Int(2, Width::Min), W::Str("log".into())])),
        Just(W::Arr(vec![
            W::Int(2, Width::F64),
            W::Int(7, Width::Min),
            W::Map(vec![])
        ])),
    ]
}

fn error() -> impl Strategy<Value = W> {
    prop_oneof![
        40 => Just(W::Nil),
        2 => text("boom"),
        1 => prop_oneof![Just(W::Bool(false)), Just(W::Int(5, Width::Min))],
    ]
}

fn answer() -> impl Strategy<Value = MpAnswer> {
    (
        prop::collection::vec(note(), 0..3),
        prop_oneof![4 => Just(Width::Min), 1 => Just(Width::F64), 1 => Just(Width::U64)],
        (
            width(),
            prop_oneof![30 => Just(None), 1 => Just(Some(1i64))],
        ),
        error(),
        result(),
        prop_oneof![10 => Just(4u8), 1 => Just(3u8), 1 => Just(5u8), 1 => Just(0u8)],
    )
        .prop_map(|(notes, kind, msgid, error, result, shape)| MpAnswer {
            notes,
            kind,
            msgid,
            error,
            result,
            shape,
        })
}

/// The PDK calls of an event: each method with its arguments as Lua values.
type LuaCalls = Vec<(String, Vec<Lua>)>;

/// Kong's reading of the script (`Rpc:call` and `bridge_loop` of `mp_rpc.lua`,
/// docs/protocol.md §4.1 and §4.4), with the test PDK answering.
fn kong_mp(script: &[MpAnswer]) -> (Class, LuaCalls, Vec<Value>) {
    let mut calls = Vec::new();
    let mut step_ids = Vec::new();
    let mut event_id = None;
    for a in script {
        // Rpc:call: notifications are dispatched (the labels Kong does not know ignored).
        if a.msgid.1.is_some() {
            return (Class::Rejected, calls, step_ids); // "unexpected RPC response ID"
        }
        let error = lua(&a.error);
        let result = if a.shape == 3 {
            Lua::Nil
        } else {
            lua(&a.result)
        };
        if error != Lua::Nil {
            return match error {
                Lua::Str(s) => (
                    Class::ServerError(String::from_utf8_lossy(&s).into_owned()),
                    calls,
                    step_ids,
                ),
                // `return nil, false`: `if err` does not fire.
                Lua::Bool(false) => (Class::Done, calls, step_ids),
                // err:lower() on a number raises.
                _ => (Class::Rejected, calls, step_ids),
            };
        }
        // bridge_loop: `if not step_in then return step_in, err end`.
        if !result.truthy() {
            return (Class::Done, calls, step_ids);
        }
        if !matches!(result, Lua::Table(_)) {
            return (Class::Rejected, calls, step_ids); // indexing a string's Data.Method, a number
        }
        if event_id.is_none() {
            event_id = Some(result.field("EventId").written());
        }
        let data = result.field("Data");
        if data == Lua::Str(b"ret".to_vec()) {
            return (Class::Done, calls, step_ids);
        }
        if !matches!(data, Lua::Table(_)) {
            return (Class::Rejected, calls, step_ids);
        }
        let method = match data.field("Method") {
            Lua::Str(s) => String::from_utf8_lossy(&s).into_owned(),
            Lua::Num(n) if n.fract() == 0.0 => format!("{}", n as i64),
            _ => return (Class::Rejected, calls, step_ids), // gmatch(nil/true) raises
        };
        let args = match data.field("Args") {
            t @ Lua::Table(_) => t.unpack(),
            Lua::Nil => Vec::new(),
            v => vec![v],
        };
        calls.push((method.clone(), args));
        if method == "kong.response.exit" {
            return (Class::Exit, calls, step_ids);
        }
        step_ids.push(event_id.clone().unwrap_or_default());
    }
    // The server closed instead of answering: "no data".
    (Class::Rejected, calls, step_ids)
}

fn compare(
    kong: &Seen,
    kong_calls: &[(String, Vec<Lua>)],
    side: &Seen,
    name: &str,
) -> Result<(), String> {
    if side.class != kong.class {
        return Err(format!("{name}: {:?}, Kong: {:?}", side.class, kong.class));
    }
    let same_calls = side.calls.len() == kong_calls.len()
        && side.calls.iter().zip(kong_calls).all(|((m, a), (km, ka))| {
            m == km && a.len() == ka.len() && a.iter().zip(ka).all(|(v, l)| l.matches(v))
        });
    if !same_calls {
        return Err(format!(
            "{name} called {:?}, Kong {kong_calls:?}",
            side.calls
        ));
    }
    if side.step_ids != kong.step_ids {
        return Err(format!(
            "{name} sent the Step EventIds {:?}, Kong {:?}",
            side.step_ids, kong.step_ids
        ));
    }
    Ok(())
}

/// Counts of the cases by how Kong ended them (printed with `--nocapture`).
fn summary(protocol: &str, counts: &BTreeMap<&'static str, u32>) -> String {
    let total: u32 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "differential {protocol}: {total} cases, host = conformance client = Kong in every one ({})",
        parts.join(", ")
    )
}

#[test]
fn differential_msgpack_host_conformance_client_and_kong_agree() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = RefCell::new(BTreeMap::new());
    let unusual = RefCell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: MSGPACK_CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(answer(), 1..6), |script| {
            let (class, kong_calls, step_ids) = kong_mp(&script);
            let kong = Seen {
                class,
                calls: Vec::new(),
                step_ids,
                quirks: 0,
            };
            let answers: MpAnswers = script
                .iter()
                .cloned()
                .map(|a| {
                    Box::new(move |msgid| a.bytes(msgid))
                        as Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>
                })
                .collect();
            let (host, conform) = rt.block_on(async {
                let server = ScriptServer::start(Script::Mp(answers));
                both_sides(Protocol::MsgPack, &server).await
            });
            compare(&kong, &kong_calls, &host, "the host").map_err(TestCaseError::fail)?;
            compare(&kong, &kong_calls, &conform, "the conformance client")
                .map_err(TestCaseError::fail)?;
            *counts.borrow_mut().entry(kong.class.label()).or_insert(0) += 1;
            if conform.quirks > 0 && matches!(kong.class, Class::Done | Class::Exit) {
                *unusual.borrow_mut() += 1;
            }
            Ok(())
        })
        .unwrap();
    let counts = counts.into_inner();
    let unusual = unusual.into_inner();
    eprintln!(
        "{}; {unusual} of the accepted events used shapes the kits do not (noted, not failed)",
        summary("MsgPack:1", &counts)
    );
    assert_eq!(counts.values().sum::<u32>(), MSGPACK_CASES);
    assert!(
        unusual >= 50,
        "only {unusual} accepted events with legal variations"
    );
    // The generator reaches every way an event can end (else the test proves little).
    for class in ["done", "exit", "server error", "rejected"] {
        assert!(
            counts.get(class).is_some_and(|n| *n >= 10),
            "{class}: {counts:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// ProtoBuf
// ------------------------------------------------------------------------------------------------

/// One callback of the generated ProtoBuf script.
#[derive(Debug, Clone)]
enum PbName {
    Known(&'static str),
    /// Not in Kong's table.
    Unknown,
    /// This event's RpcReturn where a name belongs (no empty end frame).
    EarlyReturn,
}

#[derive(Debug, Clone)]
enum PbArgs {
    Valid,
    Empty,
    /// A truncated length-delimited field.
    Garbage,
}

#[derive(Debug, Clone)]
enum PbEnd {
    /// The empty frame, then the RpcReturn; `off` shifts the sequence, `unknown` appends an
    /// unknown field.
    Return { off: i64, unknown: bool },
    /// The empty frame, then an undecodable RpcReturn.
    Garbage,
    /// The empty frame, then a close.
    EmptyThenClose,
    /// A close instead of the end.
    Close,
}

fn valid_args(method: &str) -> Vec<u8> {
    let spec = pdk_table::lookup(method).expect("a method of the table");
    let args = match method {
        "kong.request.get_header" => vec![Value::str("host")],
        "kong.log.err" => vec![Value::str("a"), Value::Int(1)],
        _ => vec![Value::Int(403), Value::str("no")],
    };
    pdk_table::encode_args(spec, &args).expect("encodable")
}

fn pb_script() -> impl Strategy<Value = (Vec<(PbName, PbArgs)>, PbEnd)> {
    let name = prop_oneof![
        4 => Just(PbName::Known("kong.request.get_header")),
        3 => Just(PbName::Known("kong.log.err")),
        1 => Just(PbName::Known("kong.response.exit")),
        1 => Just(PbName::Unknown),
        1 => Just(PbName::EarlyReturn),
    ];
    let args =
        prop_oneof![6 => Just(PbArgs::Valid), 1 => Just(PbArgs::Empty), 1 => Just(PbArgs::Garbage)];
    let end = prop_oneof![
        6 => (prop_oneof![8 => Just(0i64), 1 => Just(1i64)], any::<bool>())
            .prop_map(|(off, unknown)| PbEnd::Return { off, unknown }),
        1 => Just(PbEnd::Garbage),
        1 => Just(PbEnd::EmptyThenClose),
        1 => Just(PbEnd::Close),
    ];
    (prop::collection::vec((name, args), 0..4), end)
}

fn rpc_return(sequence: i64, unknown: bool) -> Vec<u8> {
    let mut bytes = RpcReturn {
        sequence,
        r#return: None,
    }
    .encode_to_vec();
    if unknown {
        // Field 99, varint 1: a field Kong's proto does not have.
        bytes.extend([0x98, 0x06, 0x01]);
    }
    bytes
}

/// Kong's reading of the script (`Rpc:call` with the bridge loop of `pb_rpc.lua`, §5.3).
fn kong_pb(calls_in: &[(PbName, PbArgs)], end: &PbEnd) -> (Class, Vec<String>) {
    let mut calls = Vec::new();
    for (name, args) in calls_in {
        match name {
            // Read as a name, then Kong waits for "arguments" that never come: read timeout.
            PbName::EarlyReturn => return (Class::Rejected, calls),
            PbName::Unknown => return (Class::MethodNotFound, calls),
            PbName::Known(m) => {
                // `assert(pb.decode(input_type, arg))`.
                let decodes = match args {
                    PbArgs::Garbage => false,
                    PbArgs::Valid | PbArgs::Empty => true,
                };
                if !decodes {
                    return (Class::Rejected, calls);
                }
                calls.push((*m).to_owned());
                if *m == "kong.response.exit" {
                    return (Class::Exit, calls);
                }
            }
        }
    }
    let class = match end {
        PbEnd::Return { off: 0, .. } => Class::Done,
        PbEnd::Return { .. } | PbEnd::Garbage => Class::Rejected, // assert(sequence), pb.decode
        PbEnd::EmptyThenClose | PbEnd::Close => Class::Closed,
    };
    (class, calls)
}

#[test]
fn differential_protobuf_host_conformance_client_and_kong_agree() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases: PROTOBUF_CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&pb_script(), |(calls_in, end)| {
            let (class, kong_calls) = kong_pb(&calls_in, &end);
            let mut moves: PbMoves = Vec::new();
            let mut stopped = false;
            for (name, args) in &calls_in {
                let (name, args, last) = (name.clone(), args.clone(), false);
                let exit = matches!(name, PbName::Known("kong.response.exit"));
                let early = matches!(name, PbName::EarlyReturn);
                moves.push(Box::new(move |seq| {
                    let name_frame = match &name {
                        PbName::Known(m) => m.as_bytes().to_vec(),
                        PbName::Unknown => b"kong.nope.missing".to_vec(),
                        PbName::EarlyReturn => rpc_return(seq, false),
                    };
                    let args_frame = match (&name, &args) {
                        (PbName::Known(m), PbArgs::Valid) => valid_args(m),
                        (_, PbArgs::Garbage) => vec![0x0A, 0x05, 0x61],
                        _ => Vec::new(),
                    };
                    let frames = if matches!(name, PbName::EarlyReturn) {
                        vec![name_frame]
                    } else {
                        vec![name_frame, args_frame]
                    };
                    if last || exit || early {
                        PbMove::Last(frames)
                    } else {
                        PbMove::Callback(frames)
                    }
                }));
                if exit || early {
                    stopped = true;
                    break;
                }
            }
            if !stopped {
                let end = end.clone();
                moves.push(Box::new(move |seq| match end {
                    PbEnd::Return { off, unknown } => {
                        PbMove::Last(vec![Vec::new(), rpc_return(seq + off, unknown)])
                    }
                    PbEnd::Garbage => PbMove::Last(vec![Vec::new(), vec![0x0A, 0x09]]),
                    PbEnd::EmptyThenClose => PbMove::Close(vec![Vec::new()]),
                    PbEnd::Close => PbMove::Close(Vec::new()),
                }));
            }
            let (host, conform) = rt.block_on(async {
                let server = ScriptServer::start(Script::Pb(moves));
                both_sides(Protocol::ProtoBuf, &server).await
            });
            for (side, name) in [(&host, "the host"), (&conform, "the conformance client")] {
                let methods: Vec<&String> = side.calls.iter().map(|(m, _)| m).collect();
                let want: Vec<&String> = kong_calls.iter().collect();
                if side.class != class || methods != want {
                    return Err(TestCaseError::fail(format!(
                        "{name}: {:?} after {methods:?}; Kong: {class:?} after {want:?}",
                        side.class
                    )));
                }
            }
            *counts.borrow_mut().entry(class.label()).or_insert(0) += 1;
            Ok(())
        })
        .unwrap();
    let counts = counts.into_inner();
    eprintln!("{}", summary("ProtoBuf:1", &counts));
    assert_eq!(counts.values().sum::<u32>(), PROTOBUF_CASES);
    for class in ["done", "exit", "closed", "method not found", "rejected"] {
        assert!(
            counts.get(class).is_some_and(|n| *n >= 5),
            "{class}: {counts:?}"
        );
    }
}
