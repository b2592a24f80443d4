//! The `ProtoBuf:1` PDK service table (docs/protocol.md §5.4) and the conversions between PDK messages and
//! [`Value`]s, in both directions.
//!
//! Host side (what Kong's `pb_rpc.lua` does, reproduced with lua-protobuf 0.5.2 semantics as
//! pinned by Kong 3.9):
//! * [`unwrap_args`]: the argument frame → the Lua positional arguments of the PDK call.
//! * [`wrap_result`]: the PDK function's first return value → the reply frame payload.
//!
//! Server side (what a plugin server such as go-pdk does, plain proto3 through prost):
//! * [`encode_args`]: positional arguments → the argument frame payload.
//! * [`decode_result`]: the reply frame payload → a value.
//!
//! # Value conventions
//!
//! * Strings and bytes become [`Value::Str`] on the host side (Lua has one string type). On the
//!   server side, proto `bytes` fields become [`Value::Bin`] and `string` fields [`Value::Str`].
//! * Messages become [`Value::Map`]s keyed by the proto field names, **in proto field order**,
//!   with proto3 defaults filled in (`""`, `0`, `false`, empty arrays for repeated fields);
//!   absent sub-messages are left out (lua-protobuf leaves them nil).
//! * `google.protobuf.Struct` becomes a map with **sorted keys**: prost's `Struct` is a
//!   `BTreeMap`, so this order is also the encoding order. (Kong's own order is Lua hash order,
//!   i.e. unspecified.)
//!
//! # Deviations of Kong 3.9 from a plain proto3 encoder (all reproduced by [`wrap_result`])
//!
//! * nil as `google.protobuf.Value` is `null_value = 1`: bytes `08 01` (docs/protocol.md §5.3).
//! * `google.protobuf.Value` members are a oneof, and lua-protobuf writes oneof members even when
//!   they hold a default: `false` → `20 00`, `""` → `1A 00`, `0` → `11 00 … 00`. (Spec §5.3
//!   says `false` gives an empty Value; lua-protobuf 0.5.2's `lpb_encode_onefield` only skips
//!   defaults for fields outside a oneof, so it does not.)
//! * lua-protobuf 0.4.0 – 0.5.2 never skips a `false` bool: `Bool{v = false}` is `08 00`, not an
//!   empty message (fixed upstream after 0.5.2, "the bool default value also can be skipped").
//!   Kong ≤ 3.2 (lua-protobuf 0.3.x) did skip it.
//! * A `String`/`Int`/`Number`/`ByteString` result of nil, `""` or `0` is an empty message, so an
//!   empty reply frame; [`decode_result`] then yields the proto3 default (`""`, `0`, …), which a
//!   server cannot tell apart from nil (docs/protocol.md §10.10).

use prost::Message;

use super::convert::{self as cv, View};
use super::messages as pb;
use crate::Value;

/// The message type of a PDK method's input or output (docs/protocol.md §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `google.protobuf.Empty`.
    Empty,
    Bool,
    Int,
    Number,
    /// `String { string v = 1; }`.
    String,
    ByteString,
    /// `KV { string k = 1; google.protobuf.Value v = 2; }`.
    Kv,
    ExitArgs,
    Target,
    ConsumerSpec,
    AuthenticateArgs,
    AuthenticatedCredential,
    Consumer,
    RawBodyResult,
    UriCapturesResult,
    Route,
    Service,
    MemoryStats,
    /// `google.protobuf.Value`.
    Value,
    /// `google.protobuf.ListValue`.
    ListValue,
    /// `google.protobuf.Struct`.
    Struct,
}

/// One row of the PDK service table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    /// The wire name, e.g. `"kong.request.get_header"`.
    pub name: &'static str,
    pub input: Shape,
    pub output: Shape,
}

/// A PDK message that could not be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PbError {
    #[error("cannot decode {shape:?} for {method}: {reason}")]
    Decode {
        method: String,
        shape: Shape,
        reason: String,
    },
    #[error("cannot encode {shape:?} for {method}: {reason}")]
    Encode {
        method: String,
        shape: Shape,
        reason: String,
    },
}

const fn m(name: &'static str, input: Shape, output: Shape) -> MethodSpec {
    MethodSpec {
        name,
        input,
        output,
    }
}

use Shape as S;

/// Kong 3.9's `service Kong` (docs/protocol.md §5.4), in the proto's order. The wire name is derived from the
/// rpc name (`Client_GetIp` → `kong.client.get_ip`) or given by the `MethodName` option
/// (`kong.ctx.shared.*`). `kong.service.set_upstream` returns `Bool` since 3.7.0 (before: `Empty`).
static METHODS: [MethodSpec; 74] = [
    m("kong.client.get_ip", S::Empty, S::String),
    m("kong.client.get_forwarded_ip", S::Empty, S::String),
    m("kong.client.get_port", S::Empty, S::Int),
    m("kong.client.get_forwarded_port", S::Empty, S::Int),
    m(
        "kong.client.get_credential",
        S::Empty,
        S::AuthenticatedCredential,
    ),
    m("kong.client.load_consumer", S::ConsumerSpec, S::Consumer),
    m("kong.client.get_consumer", S::Empty, S::Consumer),
    m("kong.client.authenticate", S::AuthenticateArgs, S::Empty),
    m("kong.client.get_protocol", S::Bool, S::String),
    m("kong.ctx.shared.set", S::Kv, S::Empty),
    m("kong.ctx.shared.get", S::String, S::Value),
    m("kong.ip.is_trusted", S::String, S::Bool),
    m("kong.log.alert", S::ListValue, S::Empty),
    m("kong.log.crit", S::ListValue, S::Empty),
    m("kong.log.err", S::ListValue, S::Empty),
    m("kong.log.warn", S::ListValue, S::Empty),
    m("kong.log.notice", S::ListValue, S::Empty),
    m("kong.log.info", S::ListValue, S::Empty),
    m("kong.log.debug", S::ListValue, S::Empty),
    m("kong.log.set_serialize_value", S::Kv, S::Empty),
    m("kong.log.serialize", S::Empty, S::String),
    m("kong.nginx.get_var", S::String, S::String),
    m("kong.nginx.get_tls1_version_str", S::Empty, S::String),
    m("kong.nginx.set_ctx", S::Kv, S::String),
    m("kong.nginx.get_ctx", S::String, S::Value),
    m("kong.nginx.req_start_time", S::Empty, S::Number),
    m("kong.nginx.get_subsystem", S::Empty, S::String),
    m("kong.node.get_id", S::Empty, S::String),
    m("kong.node.get_memory_stats", S::Empty, S::MemoryStats),
    m("kong.request.get_scheme", S::Empty, S::String),
    m("kong.request.get_host", S::Empty, S::String),
    m("kong.request.get_port", S::Empty, S::Int),
    m("kong.request.get_forwarded_scheme", S::Empty, S::String),
    m("kong.request.get_forwarded_host", S::Empty, S::String),
    m("kong.request.get_forwarded_port", S::Empty, S::Int),
    m("kong.request.get_http_version", S::Empty, S::Number),
    m("kong.request.get_method", S::Empty, S::String),
    m("kong.request.get_path", S::Empty, S::String),
    m("kong.request.get_path_with_query", S::Empty, S::String),
    m("kong.request.get_raw_query", S::Empty, S::String),
    m("kong.request.get_query_arg", S::String, S::String),
    m("kong.request.get_query", S::Int, S::Struct),
    m("kong.request.get_header", S::String, S::String),
    m("kong.request.get_headers", S::Int, S::Struct),
    m("kong.request.get_raw_body", S::Empty, S::RawBodyResult),
    m(
        "kong.request.get_uri_captures",
        S::Empty,
        S::UriCapturesResult,
    ),
    m("kong.response.get_status", S::Empty, S::Int),
    m("kong.response.get_header", S::String, S::String),
    m("kong.response.get_headers", S::Int, S::Struct),
    m("kong.response.get_source", S::Empty, S::String),
    m("kong.response.set_status", S::Int, S::Empty),
    m("kong.response.set_header", S::Kv, S::Empty),
    m("kong.response.add_header", S::Kv, S::Empty),
    m("kong.response.clear_header", S::String, S::Empty),
    m("kong.response.set_headers", S::Struct, S::Empty),
    m("kong.response.exit", S::ExitArgs, S::Empty),
    m("kong.router.get_route", S::Empty, S::Route),
    m("kong.router.get_service", S::Empty, S::Service),
    m("kong.service.set_upstream", S::String, S::Bool),
    m("kong.service.set_target", S::Target, S::Empty),
    m("kong.service.request.set_scheme", S::String, S::Empty),
    m("kong.service.request.set_path", S::String, S::Empty),
    m("kong.service.request.set_raw_query", S::String, S::Empty),
    m("kong.service.request.set_method", S::String, S::Empty),
    m("kong.service.request.set_query", S::Struct, S::Empty),
    m("kong.service.request.set_header", S::Kv, S::Empty),
    m("kong.service.request.add_header", S::Kv, S::Empty),
    m("kong.service.request.clear_header", S::String, S::Empty),
    m("kong.service.request.set_headers", S::Struct, S::Empty),
    m("kong.service.request.set_raw_body", S::ByteString, S::Empty),
    m("kong.service.response.get_status", S::Empty, S::Int),
    m("kong.service.response.get_header", S::String, S::String),
    m("kong.service.response.get_headers", S::Int, S::Struct),
    m(
        "kong.service.response.get_raw_body",
        S::Empty,
        S::ByteString,
    ),
];

/// Looks a wire method name up (exact, lower-case; docs/protocol.md §5.3). `None` is Kong's
/// `method "<x>" not found`.
pub fn lookup(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

/// How messages name a frame read where the server's next PDK method name belongs: the name
/// itself when it is printable ASCII, otherwise its bytes escaped, with a note when they decode
/// as an `RpcReturn`. A server that ends its handler with the `RpcReturn` but without the empty
/// frame first (kong_rs 0.2.0 does) makes Kong read the `RpcReturn` as a method name and then
/// wait for its arguments until the socket timeout (docs/protocol.md §5.3).
/// Long frames are cut (120 characters of a name, 48 bytes otherwise).
pub fn method_label(frame: &[u8]) -> String {
    let cut = |max: usize| {
        if frame.len() > max {
            (&frame[..max], format!("… ({} bytes)", frame.len()))
        } else {
            (frame, String::new())
        }
    };
    if !frame.is_empty() && frame.iter().all(u8::is_ascii_graphic) {
        let (head, more) = cut(120);
        return format!("{}{more}", String::from_utf8_lossy(head));
    }
    let (head, more) = cut(48);
    let escaped = format!("\"{}\"{more}", head.escape_ascii());
    match super::messages::RpcReturn::decode(frame) {
        Ok(r) if r.r#return.is_some() || r.sequence != 0 => format!(
            "{escaped}, which is an RpcReturn (sequence {}): the handler ended without the empty \
             frame that must come before it",
            r.sequence
        ),
        _ => escaped,
    }
}

/// Every method of the table (74 rows, in the proto's order).
pub fn methods() -> &'static [MethodSpec] {
    &METHODS
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn decode<M: Message + Default>(
    spec: &MethodSpec,
    shape: Shape,
    bytes: &[u8],
) -> Result<M, PbError> {
    M::decode(bytes).map_err(|e| PbError::Decode {
        method: spec.name.to_owned(),
        shape,
        reason: format!(
            "{e}; the {} bytes are not a valid {shape:?} message (docs/protocol.md §5.4 gives each method's \
             message types)",
            bytes.len()
        ),
    })
}

fn host_err(spec: &MethodSpec, shape: Shape) -> impl Fn(String) -> PbError + '_ {
    move |reason| PbError::Encode {
        method: spec.name.to_owned(),
        shape,
        reason: format!("{reason} (Kong's pb.encode raises a Lua error here, failing the event)"),
    }
}

fn server_err(spec: &MethodSpec, shape: Shape) -> impl Fn(String) -> PbError + '_ {
    move |reason| PbError::Encode {
        method: spec.name.to_owned(),
        shape,
        reason,
    }
}

fn one(v: Value) -> Vec<Value> {
    vec![v]
}

fn s(b: Vec<u8>) -> Value {
    Value::Str(b)
}

// ------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------

/// Host side: the args frame → Lua positional args ("unwrap", docs/protocol.md §5.3/§5.4).
///
/// The message is decoded with proto3 defaults filled in (Kong's `auto_default_values`), then
/// unwrapped like `pb_rpc.lua` does: wrappers give `[v]` (`Int` without `v` gives `0`), `KV`
/// gives `[k, v]` with Kong's Value unwrap (`false` → nil, `null_value` → `"NULL_VALUE"`),
/// `ExitArgs` gives `[status, body, headers]` (headers nil when absent), `ListValue` gives its
/// values, `Struct` gives `[table]`. Other messages are passed as one table.
pub fn unwrap_args(spec: &MethodSpec, bytes: &[u8]) -> Result<Vec<Value>, PbError> {
    let shape = spec.input;
    let args = match shape {
        S::Empty => {
            decode::<pb::Empty>(spec, shape, bytes)?;
            Vec::new()
        }
        S::Bool => one(Value::Bool(decode::<pb::Bool>(spec, shape, bytes)?.v)),
        S::Int => one(Value::Int(decode::<pb::Int>(spec, shape, bytes)?.v.into())),
        S::Number => one(Value::Float(decode::<pb::Number>(spec, shape, bytes)?.v)),
        S::String => one(s(decode::<pb::PbString>(spec, shape, bytes)?.v)),
        S::ByteString => one(s(decode::<pb::ByteString>(spec, shape, bytes)?.v)),
        S::Kv => {
            let kv = decode::<pb::Kv>(spec, shape, bytes)?;
            vec![s(kv.k), cv::lua_from_pb_value(kv.v.as_ref())]
        }
        S::ExitArgs => {
            let x = decode::<pb::ExitArgs>(spec, shape, bytes)?;
            vec![
                Value::Int(x.status.into()),
                s(x.body),
                x.headers.as_ref().map_or(Value::Nil, cv::lua_from_struct),
            ]
        }
        S::Target => {
            let t = decode::<pb::Target>(spec, shape, bytes)?;
            vec![s(t.host), Value::Int(t.port.into())]
        }
        S::ConsumerSpec => {
            let c = decode::<pb::ConsumerSpec>(spec, shape, bytes)?;
            vec![s(c.id), Value::Bool(c.by_username)]
        }
        S::AuthenticateArgs => {
            let a = decode::<pb::AuthenticateArgs>(spec, shape, bytes)?;
            vec![
                a.consumer.as_ref().map_or(Value::Nil, cv::consumer_to_map),
                a.credential
                    .as_ref()
                    .map_or(Value::Nil, cv::credential_to_map),
            ]
        }
        S::ListValue => cv::lua_list_items(&decode::<pb::ListValue>(spec, shape, bytes)?),
        S::Struct => one(cv::lua_from_struct(&decode::<pb::Struct>(
            spec, shape, bytes,
        )?)),
        S::Value => one(cv::lua_from_pb_value(Some(&decode::<pb::PbValue>(
            spec, shape, bytes,
        )?))),
        // Shapes no method takes as input: Kong has no unwrap for them and passes the decoded
        // table through (identity).
        _ => one(message_to_value(spec, shape, bytes, View::Lua)?),
    };
    Ok(args)
}

/// Host side: the PDK's first return value → reply frame payload ("wrap"); empty = empty frame.
///
/// Mirrors `pb_rpc.lua`'s wrap table and lua-protobuf 0.5.2's encoder (see the module docs for
/// the deviations from plain proto3). Errors are the cases where Kong's `pb.encode` raises, e.g.
/// a non-nil, non-table value for an `Empty` output (the pre-3.7 `set_upstream` crash, spec
/// §5.3) or a nil `Struct` result.
pub fn wrap_result(spec: &MethodSpec, result: &Value) -> Result<Vec<u8>, PbError> {
    let shape = spec.output;
    let err = host_err(spec, shape);
    let nil = crate::lua::is_nil(result);
    let bytes = match shape {
        S::Empty => match result {
            _ if nil => Vec::new(),
            // pb.encode(".google.protobuf.Empty", table) ignores every key: empty bytes.
            Value::Array(_) | Value::Map(_) => Vec::new(),
            other => {
                return Err(err(format!(
                    "table expected, got {}",
                    crate::lua::lua_type(other)
                )));
            }
        },
        // `{v = value}`: nil leaves `v` out, so the message (and the frame) is empty.
        _ if nil && is_wrapper(shape) => Vec::new(),
        S::Bool => {
            let v = result.is_truthy();
            cv::Encoded {
                msg: pb::Bool { v },
                false_bools: if v { vec![] } else { vec![1] },
            }
            .into_bytes()
        }
        S::Int => pb::Int {
            v: cv::lua_int32(result, "field 'v' of Int").map_err(err)?,
        }
        .encode_to_vec(),
        S::Number => pb::Number {
            v: cv::to_number(result, "field 'v' of Number").map_err(err)?,
        }
        .encode_to_vec(),
        S::String => pb::PbString {
            v: cv::lua_bytes(result, "field 'v' of String").map_err(err)?,
        }
        .encode_to_vec(),
        S::ByteString => pb::ByteString {
            v: cv::lua_bytes(result, "field 'v' of ByteString").map_err(err)?,
        }
        .encode_to_vec(),
        S::Value => cv::lua_to_pb_value(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::ListValue => cv::lua_to_list(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::Struct => cv::lua_to_struct(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::RawBodyResult => cv::raw_body_from_lua(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        // No wrap function in Kong (identity): nil → no reply message → empty frame.
        _ if nil => Vec::new(),
        S::UriCapturesResult => cv::uri_captures_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::Consumer => cv::consumer_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::AuthenticatedCredential => cv::credential_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::Route => cv::route_from_table(result, "result")
            .map_err(err)?
            .into_bytes(),
        S::Service => cv::service_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::MemoryStats => cv::memory_stats_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::Kv => cv::kv_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::ExitArgs => cv::exit_args_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::Target => cv::target_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
        S::ConsumerSpec => cv::consumer_spec_from_table(result, "result")
            .map_err(err)?
            .into_bytes(),
        S::AuthenticateArgs => cv::authenticate_args_from_table(result, "result")
            .map_err(err)?
            .encode_to_vec(),
    };
    Ok(bytes)
}

fn is_wrapper(shape: Shape) -> bool {
    matches!(
        shape,
        S::Bool | S::Int | S::Number | S::String | S::ByteString
    )
}

// ------------------------------------------------------------------------------------------------
// Server side
// ------------------------------------------------------------------------------------------------

/// How many positional arguments a method with this input shape takes (`None`: any number).
fn max_args(shape: Shape) -> Option<usize> {
    match shape {
        S::Empty => Some(0),
        S::Kv | S::Target | S::ConsumerSpec | S::AuthenticateArgs => Some(2),
        S::ExitArgs => Some(3),
        S::ListValue => None,
        _ => Some(1),
    }
}

/// Server side: positional args → the args frame payload.
///
/// Plain proto3 like go-pdk: defaults are not written, nil as a `google.protobuf.Value` is
/// `null_value = NULL_VALUE` (`08 00`). Missing trailing args are nil; too many args, or args of
/// the wrong type, are errors. `KV` with a single arg leaves `v` out; `ExitArgs` with nil
/// headers leaves `headers` out.
pub fn encode_args(spec: &MethodSpec, args: &[Value]) -> Result<Vec<u8>, PbError> {
    let shape = spec.input;
    let err = server_err(spec, shape);
    if let Some(max) = max_args(shape) {
        if args.len() > max {
            return Err(err(format!(
                "{} takes at most {max} argument(s) over ProtoBuf, got {}",
                spec.name,
                args.len()
            )));
        }
    }
    let nil = Value::Nil;
    let arg = |i: usize| args.get(i).unwrap_or(&nil);
    let string = |i: usize, what: &str| -> Result<Vec<u8>, PbError> {
        match arg(i) {
            Value::Nil => Ok(Vec::new()),
            v => cv::lua_bytes(v, what).map_err(&err),
        }
    };
    let int32 = |i: usize, what: &str| -> Result<i32, PbError> {
        match arg(i) {
            Value::Nil => Ok(0),
            v => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    err(format!(
                        "{what}: expected an integer in the int32 range, got {v:?}"
                    ))
                }),
        }
    };
    let boolean = |i: usize, what: &str| -> Result<bool, PbError> {
        match arg(i) {
            Value::Nil => Ok(false),
            Value::Bool(b) => Ok(*b),
            v => Err(err(format!(
                "{what}: expected a bool, got {}",
                v.type_name()
            ))),
        }
    };
    let bytes = match shape {
        S::Empty => Vec::new(),
        S::Bool => pb::Bool {
            v: boolean(0, "argument 1")?,
        }
        .encode_to_vec(),
        S::Int => pb::Int {
            v: int32(0, "argument 1")?,
        }
        .encode_to_vec(),
        S::Number => {
            let v = match arg(0) {
                Value::Nil => 0.0,
                v => cv::to_number(v, "argument 1").map_err(&err)?,
            };
            pb::Number { v }.encode_to_vec()
        }
        S::String => pb::PbString {
            v: string(0, "argument 1")?,
        }
        .encode_to_vec(),
        S::ByteString => pb::ByteString {
            v: string(0, "argument 1")?,
        }
        .encode_to_vec(),
        S::Kv => {
            let v = match args.get(1) {
                None => None,
                Some(v) => Some(cv::server_to_pb_value(v, "argument 2").map_err(&err)?),
            };
            pb::Kv {
                k: string(0, "argument 1")?,
                v,
            }
            .encode_to_vec()
        }
        S::ExitArgs => {
            let headers = match arg(2) {
                Value::Nil => None,
                h => Some(cv::server_to_struct(h, "argument 3 (headers)").map_err(&err)?),
            };
            pb::ExitArgs {
                status: int32(0, "argument 1 (status)")?,
                body: string(1, "argument 2 (body)")?,
                headers,
            }
            .encode_to_vec()
        }
        S::Target => pb::Target {
            host: string(0, "argument 1 (host)")?,
            port: int32(1, "argument 2 (port)")?,
        }
        .encode_to_vec(),
        S::ConsumerSpec => pb::ConsumerSpec {
            id: string(0, "argument 1 (id)")?,
            by_username: boolean(1, "argument 2 (by_username)")?,
        }
        .encode_to_vec(),
        S::AuthenticateArgs => {
            let consumer = match arg(0) {
                Value::Nil => None,
                c => Some(cv::consumer_from_table(c, "argument 1 (consumer)").map_err(&err)?),
            };
            let credential = match arg(1) {
                Value::Nil => None,
                c => Some(cv::credential_from_table(c, "argument 2 (credential)").map_err(&err)?),
            };
            pb::AuthenticateArgs {
                consumer,
                credential,
            }
            .encode_to_vec()
        }
        S::ListValue => pb::ListValue {
            values: args
                .iter()
                .enumerate()
                .map(|(i, v)| cv::server_to_pb_value(v, &format!("argument {}", i + 1)))
                .collect::<Result<_, _>>()
                .map_err(&err)?,
        }
        .encode_to_vec(),
        S::Struct => cv::server_to_struct(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::Value => cv::server_to_pb_value(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        // Shapes no method takes as input: encode the table by field names.
        _ if arg(0).is_nil() => Vec::new(),
        S::RawBodyResult => cv::raw_body_from_lua(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::UriCapturesResult => cv::uri_captures_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::Consumer => cv::consumer_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::AuthenticatedCredential => cv::credential_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::Route => cv::route_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .msg
            .encode_to_vec(),
        S::Service => cv::service_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
        S::MemoryStats => cv::memory_stats_from_table(arg(0), "argument 1")
            .map_err(&err)?
            .encode_to_vec(),
    };
    Ok(bytes)
}

/// Server side: a reply frame payload → a value, as a proto3 server sees it.
///
/// Wrappers give their `v` with the proto3 default when the frame is empty (`String` → `""`,
/// `Int` → `0`, `Bool` → `false`): **indistinguishable from a nil result** (docs/protocol.md §5.3, §10.10).
/// `ByteString` gives [`Value::Bin`]. `google.protobuf.Value` gives nil for no kind and for any
/// `null_value` (Kong's `08 01` included), floats for numbers. `Empty` gives nil.
/// `RawBodyResult` gives `{content = bin}`, `{body_filepath = str}` or `{error = str}`, and nil
/// when no kind is set. Other messages give maps (see the module docs).
pub fn decode_result(spec: &MethodSpec, bytes: &[u8]) -> Result<Value, PbError> {
    let shape = spec.output;
    let value = match shape {
        S::Empty => {
            decode::<pb::Empty>(spec, shape, bytes)?;
            Value::Nil
        }
        S::Bool => Value::Bool(decode::<pb::Bool>(spec, shape, bytes)?.v),
        S::Int => Value::Int(decode::<pb::Int>(spec, shape, bytes)?.v.into()),
        S::Number => Value::Float(decode::<pb::Number>(spec, shape, bytes)?.v),
        S::String => s(decode::<pb::PbString>(spec, shape, bytes)?.v),
        S::ByteString => Value::Bin(decode::<pb::ByteString>(spec, shape, bytes)?.v),
        S::Value => cv::server_from_pb_value(Some(&decode::<pb::PbValue>(spec, shape, bytes)?)),
        S::ListValue => cv::server_from_list(&decode::<pb::ListValue>(spec, shape, bytes)?),
        S::Struct => cv::server_from_struct(&decode::<pb::Struct>(spec, shape, bytes)?),
        S::RawBodyResult => {
            let r = decode::<pb::RawBodyResult>(spec, shape, bytes)?;
            match r.kind {
                None => Value::Nil,
                Some(_) => cv::raw_body_to_map(&r, View::Server),
            }
        }
        _ => message_to_value(spec, shape, bytes, View::Server)?,
    };
    Ok(value)
}

/// A message shape decoded into a map in the given view.
fn message_to_value(
    spec: &MethodSpec,
    shape: Shape,
    bytes: &[u8],
    view: View,
) -> Result<Value, PbError> {
    let v = match shape {
        S::Consumer => cv::consumer_to_map(&decode(spec, shape, bytes)?),
        S::AuthenticatedCredential => cv::credential_to_map(&decode(spec, shape, bytes)?),
        S::Route => cv::route_to_map(&decode(spec, shape, bytes)?),
        S::Service => cv::service_to_map(&decode(spec, shape, bytes)?),
        S::MemoryStats => cv::memory_stats_to_map(&decode(spec, shape, bytes)?),
        S::UriCapturesResult => cv::uri_captures_to_map(&decode(spec, shape, bytes)?, view),
        S::RawBodyResult => cv::raw_body_to_map(&decode(spec, shape, bytes)?, view),
        S::Kv => cv::kv_to_map(&decode(spec, shape, bytes)?, view),
        S::ExitArgs => cv::exit_args_to_map(&decode(spec, shape, bytes)?, view),
        S::Target => cv::target_to_map(&decode(spec, shape, bytes)?),
        S::ConsumerSpec => cv::consumer_spec_to_map(&decode(spec, shape, bytes)?),
        S::AuthenticateArgs => cv::authenticate_args_to_map(&decode(spec, shape, bytes)?),
        S::Empty => {
            decode::<pb::Empty>(spec, shape, bytes)?;
            Value::Map(Vec::new())
        }
        S::Bool => Value::map([("v", Value::Bool(decode::<pb::Bool>(spec, shape, bytes)?.v))]),
        S::Int => Value::map([(
            "v",
            Value::Int(decode::<pb::Int>(spec, shape, bytes)?.v.into()),
        )]),
        S::Number => Value::map([(
            "v",
            Value::Float(decode::<pb::Number>(spec, shape, bytes)?.v),
        )]),
        S::String => Value::map([("v", s(decode::<pb::PbString>(spec, shape, bytes)?.v))]),
        S::ByteString => {
            let b = decode::<pb::ByteString>(spec, shape, bytes)?.v;
            Value::map([(
                "v",
                if view == View::Lua {
                    s(b)
                } else {
                    Value::Bin(b)
                },
            )])
        }
        S::Value => match view {
            View::Lua => cv::lua_from_pb_value(Some(&decode(spec, shape, bytes)?)),
            View::Server => cv::server_from_pb_value(Some(&decode(spec, shape, bytes)?)),
        },
        S::ListValue => cv::server_from_list(&decode(spec, shape, bytes)?),
        S::Struct => cv::struct_to_value(&decode(spec, shape, bytes)?, view),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(name: &str) -> &'static MethodSpec {
        lookup(name).unwrap_or_else(|| panic!("{name} missing from the table"))
    }
    fn st(x: &str) -> Value {
        Value::str(x)
    }
    fn bin(x: &[u8]) -> Value {
        Value::Bin(x.to_vec())
    }
    fn arr(v: Vec<Value>) -> Value {
        Value::Array(v)
    }

    /// kong_rs 0.2.0 sends its RpcReturn where Kong reads the next method name; messages must
    /// say so instead of printing the raw bytes (regression: the report showed mojibake).
    #[test]
    fn method_label_names_an_rpc_return_sent_in_place_of_a_method() {
        use super::super::messages::{rpc_return, InstanceStatus, RpcReturn};
        assert_eq!(
            method_label(b"kong.request.get_header"),
            "kong.request.get_header"
        );
        let ret = RpcReturn {
            sequence: 3,
            r#return: Some(rpc_return::Return::InstanceStatus(InstanceStatus {
                name: "hello".into(),
                ..InstanceStatus::default()
            })),
        };
        let label = method_label(&ret.encode_to_vec());
        assert!(label.starts_with("\"\\x08\\x03\\x8a\\x02"), "{label}");
        assert!(
            label.ends_with(
                "which is an RpcReturn (sequence 3): the handler ended without the empty frame \
                 that must come before it"
            ),
            "{label}"
        );
        assert_eq!(method_label(b"kong.x\n\xff"), "\"kong.x\\n\\xff\"");
        assert_eq!(
            method_label(&[b'k'; 130]),
            format!("{}… (130 bytes)", "k".repeat(120))
        );
        assert_eq!(
            method_label(&[0; 50]),
            format!("\"{}\"… (50 bytes)", "\\x00".repeat(48))
        );
    }

    /// The rpc names of Kong's `service Kong` (docs/protocol.md §5.4) and the `MethodName` overrides.
    const RPC_NAMES: [&str; 74] = [
        "Client_GetIp",
        "Client_GetForwardedIp",
        "Client_GetPort",
        "Client_GetForwardedPort",
        "Client_GetCredential",
        "Client_LoadConsumer",
        "Client_GetConsumer",
        "Client_Authenticate",
        "Client_GetProtocol",
        "=kong.ctx.shared.set",
        "=kong.ctx.shared.get",
        "Ip_IsTrusted",
        "Log_Alert",
        "Log_Crit",
        "Log_Err",
        "Log_Warn",
        "Log_Notice",
        "Log_Info",
        "Log_Debug",
        "Log_SetSerializeValue",
        "Log_Serialize",
        "Nginx_GetVar",
        "Nginx_GetTls1VersionStr",
        "Nginx_SetCtx",
        "Nginx_GetCtx",
        "Nginx_ReqStartTime",
        "Nginx_GetSubsystem",
        "Node_GetId",
        "Node_GetMemoryStats",
        "Request_GetScheme",
        "Request_GetHost",
        "Request_GetPort",
        "Request_GetForwardedScheme",
        "Request_GetForwardedHost",
        "Request_GetForwardedPort",
        "Request_GetHttpVersion",
        "Request_GetMethod",
        "Request_GetPath",
        "Request_GetPathWithQuery",
        "Request_GetRawQuery",
        "Request_GetQueryArg",
        "Request_GetQuery",
        "Request_GetHeader",
        "Request_GetHeaders",
        "Request_GetRawBody",
        "Request_GetUriCaptures",
        "Response_GetStatus",
        "Response_GetHeader",
        "Response_GetHeaders",
        "Response_GetSource",
        "Response_SetStatus",
        "Response_SetHeader",
        "Response_AddHeader",
        "Response_ClearHeader",
        "Response_SetHeaders",
        "Response_Exit",
        "Router_GetRoute",
        "Router_GetService",
        "Service_SetUpstream",
        "Service_SetTarget",
        "Service_Request_SetScheme",
        "Service_Request_SetPath",
        "Service_Request_SetRawQuery",
        "Service_Request_SetMethod",
        "Service_Request_SetQuery",
        "Service_Request_SetHeader",
        "Service_Request_AddHeader",
        "Service_Request_ClearHeader",
        "Service_Request_SetHeaders",
        "Service_Request_SetRawBody",
        "Service_Response_GetStatus",
        "Service_Response_GetHeader",
        "Service_Response_GetHeaders",
        "Service_Response_GetRawBody",
    ];

    /// Kong's derivation (docs/protocol.md §5.4): `Kong.<Rpc>`, `_` → `.`, `_` before an upper-case letter
    /// that follows a lower-case letter (and optional digits), lower-cased.
    fn derive_wire_name(rpc: &str) -> String {
        if let Some(explicit) = rpc.strip_prefix('=') {
            return explicit.to_owned();
        }
        let dotted = format!("Kong.{rpc}").replace('_', ".");
        let chars: Vec<char> = dotted.chars().collect();
        let mut out = String::new();
        for (i, &c) in chars.iter().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                let mut j = i - 1;
                while j > 0 && chars[j].is_ascii_digit() {
                    j -= 1;
                }
                if chars[j].is_ascii_lowercase() {
                    out.push('_');
                }
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn table_has_74_unique_names_derived_like_kong() {
        assert_eq!(methods().len(), 74);
        let names: HashSet<&str> = methods().iter().map(|m| m.name).collect();
        assert_eq!(names.len(), methods().len(), "duplicate wire names");
        let derived: Vec<String> = RPC_NAMES.iter().map(|r| derive_wire_name(r)).collect();
        let table: Vec<&str> = methods().iter().map(|m| m.name).collect();
        assert_eq!(table, derived);
        for level in ["alert", "crit", "err", "warn", "notice", "info", "debug"] {
            let m = spec(&format!("kong.log.{level}"));
            assert_eq!((m.input, m.output), (Shape::ListValue, Shape::Empty));
        }
        assert_eq!(
            derive_wire_name("Nginx_GetTls1VersionStr"),
            "kong.nginx.get_tls1_version_str"
        );
    }

    #[test]
    fn lookup_is_exact() {
        assert_eq!(spec("kong.request.get_header").output, Shape::String);
        assert!(lookup("Kong.Request.Get_Header").is_none());
        assert!(lookup("kong.request.get_header ").is_none());
        assert!(lookup("kong.request.get_body").is_none()); // MsgPack-only PDK function
        let up = spec("kong.service.set_upstream");
        assert_eq!((up.input, up.output), (Shape::String, Shape::Bool));
        assert_eq!(spec("kong.nginx.set_ctx").output, Shape::String);
        assert_eq!(
            spec("kong.service.response.get_raw_body").output,
            Shape::ByteString
        );
        assert_eq!(
            spec("kong.service.request.set_raw_body").input,
            Shape::ByteString
        );
    }

    /// Representative positional args per input shape and what Kong's unwrap makes of them.
    fn sample_args(shape: Shape) -> (Vec<Value>, Vec<Value>) {
        match shape {
            S::Empty => (vec![], vec![]),
            S::Bool => (vec![Value::Bool(true)], vec![Value::Bool(true)]),
            S::Int => (vec![Value::Int(100)], vec![Value::Int(100)]),
            S::Number => (vec![Value::Float(1.5)], vec![Value::Float(1.5)]),
            S::String => (vec![st("host")], vec![st("host")]),
            S::ByteString => (
                vec![bin(b"\x00\xffbody")],
                vec![Value::Str(b"\x00\xffbody".to_vec())],
            ),
            S::Kv => (
                vec![
                    st("k"),
                    Value::map([("a", Value::Int(1)), ("b", arr(vec![st("x")]))]),
                ],
                vec![
                    st("k"),
                    Value::map([("a", Value::Float(1.0)), ("b", arr(vec![st("x")]))]),
                ],
            ),
            S::ExitArgs => (
                vec![
                    Value::Int(403),
                    st("denied"),
                    Value::map([("x-a", arr(vec![st("1")]))]),
                ],
                vec![
                    Value::Int(403),
                    st("denied"),
                    Value::map([("x-a", arr(vec![st("1")]))]),
                ],
            ),
            S::Target => (
                vec![st("10.0.0.1"), Value::Int(8080)],
                vec![st("10.0.0.1"), Value::Int(8080)],
            ),
            S::ConsumerSpec => (
                vec![st("alice"), Value::Bool(true)],
                vec![st("alice"), Value::Bool(true)],
            ),
            S::AuthenticateArgs => (
                vec![
                    Value::map([("id", st("c1")), ("username", st("alice"))]),
                    Value::map([("id", st("cred")), ("consumer_id", st("c1"))]),
                ],
                vec![
                    Value::map([
                        ("id", st("c1")),
                        ("created_at", Value::Int(0)),
                        ("username", st("alice")),
                        ("custom_id", st("")),
                        ("tags", arr(vec![])),
                    ]),
                    Value::map([("id", st("cred")), ("consumer_id", st("c1"))]),
                ],
            ),
            S::ListValue => (
                vec![st("a"), Value::Int(1), Value::Bool(true)],
                vec![st("a"), Value::Float(1.0), Value::Bool(true)],
            ),
            S::Struct => (
                vec![Value::map([
                    ("b", arr(vec![st("1"), st("2")])),
                    ("a", st("x")),
                ])],
                vec![Value::map([
                    ("a", st("x")),
                    ("b", arr(vec![st("1"), st("2")])),
                ])],
            ),
            other => panic!("{other:?} is not an input of any method"),
        }
    }

    fn full_consumer() -> Value {
        Value::map([
            ("id", st("c1")),
            ("created_at", Value::Int(1_700_000_000)),
            ("username", st("alice")),
            ("custom_id", st("")),
            ("tags", arr(vec![st("gold")])),
        ])
    }

    fn full_route() -> Value {
        Value::map([
            ("id", st("r1")),
            ("created_at", Value::Int(1)),
            ("updated_at", Value::Int(2)),
            ("name", st("route")),
            ("protocols", arr(vec![st("http"), st("https")])),
            ("methods", arr(vec![st("GET")])),
            ("hosts", arr(vec![st("example.com")])),
            ("paths", arr(vec![st("/")])),
            ("headers", arr(vec![])),
            ("https_redirect_status_code", Value::Int(426)),
            ("regex_priority", Value::Int(0)),
            ("strip_path", Value::Bool(false)),
            ("preserve_host", Value::Bool(true)),
            ("snis", arr(vec![])),
            ("sources", arr(vec![])),
            ("destinations", arr(vec![])),
            ("tags", arr(vec![st("t")])),
            ("service", Value::map([("id", st("s1"))])),
        ])
    }

    fn full_service() -> Value {
        Value::map([
            ("id", st("s1")),
            ("created_at", Value::Int(1)),
            ("updated_at", Value::Int(2)),
            ("name", st("svc")),
            ("retries", Value::Int(5)),
            ("protocol", st("http")),
            ("host", st("upstream")),
            ("port", Value::Int(80)),
            ("path", st("/api")),
            ("connect_timeout", Value::Int(60000)),
            ("write_timeout", Value::Int(60000)),
            ("read_timeout", Value::Int(60000)),
            ("tags", arr(vec![])),
            ("client_certificate", Value::map([("id", st("cert"))])),
        ])
    }

    fn memory_stats() -> Value {
        let dict = |a, c| {
            Value::map([
                ("allocated_slabs", Value::Int(a)),
                ("capacity", Value::Int(c)),
            ])
        };
        Value::map([
            (
                "lua_shared_dicts",
                Value::map([("kong", dict(1, 2)), ("kong_db_cache", dict(3, 4))]),
            ),
            (
                "workers_lua_vms",
                arr(vec![Value::map([
                    ("http_allocated_gc", Value::Int(1024)),
                    ("pid", Value::Int(42)),
                ])]),
            ),
        ])
    }

    /// A representative PDK result per output shape and what a protobuf server decodes.
    fn sample_result(shape: Shape) -> (Value, Value) {
        match shape {
            S::Empty => (Value::Nil, Value::Nil),
            S::Bool => (Value::Bool(true), Value::Bool(true)),
            S::Int => (Value::Int(8000), Value::Int(8000)),
            S::Number => (Value::Float(1.1), Value::Float(1.1)),
            S::String => (st("example.com"), st("example.com")),
            S::ByteString => (Value::Str(b"\x00raw".to_vec()), bin(b"\x00raw")),
            S::AuthenticatedCredential => (
                Value::map([("id", st("cred")), ("consumer_id", st("c1"))]),
                Value::map([("id", st("cred")), ("consumer_id", st("c1"))]),
            ),
            S::Consumer => (
                Value::map([
                    ("id", st("c1")),
                    ("created_at", Value::Int(1_700_000_000)),
                    ("username", st("alice")),
                    ("tags", arr(vec![st("gold")])),
                    ("unknown_key", Value::Bool(true)),
                ]),
                full_consumer(),
            ),
            S::Value => (
                Value::map([("a", arr(vec![st("x"), Value::Int(2)]))]),
                Value::map([("a", arr(vec![st("x"), Value::Float(2.0)]))]),
            ),
            S::Struct => (
                Value::map([
                    ("x-b", st("1")),
                    ("host", arr(vec![st("example.com"), st("other")])),
                    ("flag", Value::Bool(true)),
                ]),
                Value::map([
                    ("flag", Value::Bool(true)),
                    ("host", arr(vec![st("example.com"), st("other")])),
                    ("x-b", st("1")),
                ]),
            ),
            S::MemoryStats => (memory_stats(), memory_stats()),
            S::RawBodyResult => (st("body"), Value::map([("content", bin(b"body"))])),
            S::UriCapturesResult => (
                Value::map([
                    ("unnamed", arr(vec![st("a"), st("b")])),
                    ("named", Value::map([("n", st("v"))])),
                ]),
                Value::map([
                    ("unnamed", arr(vec![bin(b"a"), bin(b"b")])),
                    ("named", Value::map([("n", bin(b"v"))])),
                ]),
            ),
            S::Route => (full_route(), full_route()),
            S::Service => (full_service(), full_service()),
            other => panic!("{other:?} is not an output of any method"),
        }
    }

    #[test]
    fn every_method_round_trips_args() {
        for m in methods() {
            let (args, expected) = sample_args(m.input);
            let bytes = encode_args(m, &args).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            let got = unwrap_args(m, &bytes).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            assert_eq!(got, expected, "{}", m.name);
        }
    }

    #[test]
    fn every_method_round_trips_results() {
        for m in methods() {
            let (result, expected) = sample_result(m.output);
            let bytes = wrap_result(m, &result).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            let got = decode_result(m, &bytes).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            assert_eq!(got, expected, "{}", m.name);
        }
    }

    #[test]
    fn every_method_has_an_empty_frame_for_nil_where_kong_sends_one() {
        for m in methods() {
            let bytes = wrap_result(m, &Value::Nil);
            match m.output {
                S::Value => assert_eq!(bytes.unwrap(), [0x08, 0x01], "{}", m.name),
                S::Struct => assert!(bytes.is_err(), "{}", m.name),
                S::RawBodyResult => assert!(!bytes.unwrap().is_empty(), "{}", m.name),
                _ => assert_eq!(bytes.unwrap(), Vec::<u8>::new(), "{}", m.name),
            }
        }
    }

    #[test]
    fn value_output_quirks() {
        let get = spec("kong.ctx.shared.get");
        // nil → null_value = 1 (docs/protocol.md §5.3), read back as nil.
        assert_eq!(wrap_result(get, &Value::Nil).unwrap(), [0x08, 0x01]);
        assert_eq!(decode_result(get, &[0x08, 0x01]).unwrap(), Value::Nil);
        assert_eq!(decode_result(get, &[0x08, 0x00]).unwrap(), Value::Nil);
        assert_eq!(decode_result(get, &[]).unwrap(), Value::Nil);
        // Oneof members are written even when they hold a default (lua-protobuf 0.5.2).
        assert_eq!(wrap_result(get, &Value::Bool(false)).unwrap(), [0x20, 0x00]);
        assert_eq!(
            decode_result(get, &[0x20, 0x00]).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(wrap_result(get, &Value::Bool(true)).unwrap(), [0x20, 0x01]);
        assert_eq!(wrap_result(get, &st("")).unwrap(), [0x1A, 0x00]);
        assert_eq!(
            wrap_result(get, &Value::Int(0)).unwrap(),
            [0x11, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            wrap_result(get, &st("ab")).unwrap(),
            [0x1A, 0x02, b'a', b'b']
        );
        // An empty table is a struct (t[1] == nil).
        assert_eq!(wrap_result(get, &arr(vec![])).unwrap(), [0x2A, 0x00]);
        assert_eq!(
            decode_result(get, &[0x2A, 0x00]).unwrap(),
            Value::Map(vec![])
        );
    }

    #[test]
    fn wrapper_output_quirks() {
        let header = spec("kong.request.get_header");
        assert_eq!(wrap_result(header, &Value::Nil).unwrap(), Vec::<u8>::new());
        assert_eq!(wrap_result(header, &st("")).unwrap(), Vec::<u8>::new());
        // An empty frame decodes to the proto3 default: indistinguishable from nil.
        assert_eq!(decode_result(header, &[]).unwrap(), st(""));
        assert_eq!(
            decode_result(spec("kong.request.get_port"), &[]).unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            decode_result(spec("kong.ip.is_trusted"), &[]).unwrap(),
            Value::Bool(false)
        );
        // Non-UTF-8 header bytes go through as Kong sends them.
        assert_eq!(
            wrap_result(header, &Value::Str(vec![0xE9])).unwrap(),
            [0x0A, 0x01, 0xE9]
        );
        assert_eq!(
            decode_result(header, &[0x0A, 0x01, 0xE9]).unwrap(),
            Value::Str(vec![0xE9])
        );
        let err = wrap_result(header, &Value::Int(1)).unwrap_err();
        assert!(
            err.to_string().contains("string expected, got number"),
            "{err}"
        );
        // Int from a float truncates (lua-protobuf under LuaJIT).
        let port = spec("kong.request.get_port");
        assert_eq!(
            wrap_result(port, &Value::Float(8000.9)).unwrap(),
            [0x08, 0xC0, 0x3E]
        );
        assert!(wrap_result(port, &st("80")).is_err());
        let version = spec("kong.request.get_http_version");
        assert_eq!(
            decode_result(version, &wrap_result(version, &Value::Int(2)).unwrap()).unwrap(),
            Value::Float(2.0)
        );
    }

    #[test]
    fn set_upstream_returns_bool_and_false_is_written() {
        let up = spec("kong.service.set_upstream");
        assert_eq!(wrap_result(up, &Value::Bool(true)).unwrap(), [0x08, 0x01]);
        // lua-protobuf 0.5.2 writes an explicit false.
        assert_eq!(wrap_result(up, &Value::Bool(false)).unwrap(), [0x08, 0x00]);
        assert_eq!(
            decode_result(up, &[0x08, 0x00]).unwrap(),
            Value::Bool(false)
        );
        // Before 3.7 the output was Empty, and `true` made pb.encode raise.
        let old = MethodSpec {
            name: up.name,
            input: Shape::String,
            output: Shape::Empty,
        };
        let err = wrap_result(&old, &Value::Bool(true)).unwrap_err();
        assert!(
            matches!(
                err,
                PbError::Encode {
                    shape: Shape::Empty,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("table expected, got boolean"),
            "{err}"
        );
        assert_eq!(wrap_result(&old, &Value::Nil).unwrap(), Vec::<u8>::new());
        assert_eq!(
            wrap_result(&old, &Value::map([("x", Value::Int(1))])).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn unwrap_quirks() {
        // ExitArgs: missing body → "", missing headers → nil.
        let exit = spec("kong.response.exit");
        assert_eq!(
            unwrap_args(exit, &[0x08, 0x93, 0x03]).unwrap(),
            [Value::Int(403), st(""), Value::Nil]
        );
        assert_eq!(
            unwrap_args(exit, &encode_args(exit, &[Value::Int(200)]).unwrap()).unwrap(),
            [Value::Int(200), st(""), Value::Nil]
        );
        // Int without v → 0 (and Kong's get_headers(0) then raises, docs/protocol.md §5.3).
        assert_eq!(
            unwrap_args(spec("kong.request.get_headers"), &[]).unwrap(),
            [Value::Int(0)]
        );
        assert_eq!(
            unwrap_args(spec("kong.nginx.get_var"), &[]).unwrap(),
            [st("")]
        );
        assert_eq!(
            unwrap_args(spec("kong.client.get_protocol"), &[]).unwrap(),
            [Value::Bool(false)]
        );
        // KV: false → nil, null → "NULL_VALUE", absent v → nil.
        let set = spec("kong.ctx.shared.set");
        let args = encode_args(set, &[st("k"), Value::Bool(false)]).unwrap();
        assert_eq!(unwrap_args(set, &args).unwrap(), [st("k"), Value::Nil]);
        let args = encode_args(set, &[st("k"), Value::Nil]).unwrap();
        assert_eq!(args, [0x0A, 0x01, b'k', 0x12, 0x02, 0x08, 0x00]);
        assert_eq!(
            unwrap_args(set, &args).unwrap(),
            [st("k"), st("NULL_VALUE")]
        );
        let args = encode_args(set, &[st("k")]).unwrap();
        assert_eq!(unwrap_args(set, &args).unwrap(), [st("k"), Value::Nil]);
        // Struct: keys whose value unwraps to nil disappear.
        let set_headers = spec("kong.response.set_headers");
        let args = encode_args(
            set_headers,
            &[Value::map([
                ("a", Value::Bool(false)),
                ("b", Value::Bool(true)),
            ])],
        )
        .unwrap();
        assert_eq!(
            unwrap_args(set_headers, &args).unwrap(),
            [Value::map([("b", Value::Bool(true))])]
        );
        // ListValue: trailing nils are dropped, inner ones kept.
        let log = spec("kong.log.err");
        let args = encode_args(
            log,
            &[st("a"), Value::Bool(false), st("b"), Value::Bool(false)],
        )
        .unwrap();
        assert_eq!(
            unwrap_args(log, &args).unwrap(),
            [st("a"), Value::Nil, st("b")]
        );
        // AuthenticateArgs without messages → (nil, nil).
        assert_eq!(
            unwrap_args(spec("kong.client.authenticate"), &[]).unwrap(),
            [Value::Nil, Value::Nil]
        );
    }

    #[test]
    fn struct_and_raw_body_results() {
        let headers = spec("kong.request.get_headers");
        let err = wrap_result(headers, &Value::Nil).unwrap_err();
        assert!(err.to_string().contains("table expected, got nil"), "{err}");
        assert_eq!(
            wrap_result(headers, &Value::Map(vec![])).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(decode_result(headers, &[]).unwrap(), Value::Map(vec![]));
        // A query flag `true` → bool_value, several values → list_value.
        let q = wrap_result(
            spec("kong.request.get_query"),
            &Value::map([("f", Value::Bool(true))]),
        )
        .unwrap();
        assert_eq!(q, [0x0A, 0x07, 0x0A, 0x01, b'f', 0x12, 0x02, 0x20, 0x01]);

        let raw = spec("kong.request.get_raw_body");
        let err_body = Value::map([("error", st("Can't read request body"))]);
        assert_eq!(
            decode_result(raw, &wrap_result(raw, &Value::Nil).unwrap()).unwrap(),
            err_body
        );
        let path = Value::map([("body_filepath", st("/tmp/body"))]);
        assert_eq!(
            decode_result(raw, &wrap_result(raw, &path).unwrap()).unwrap(),
            path
        );
        let e = Value::map([("error", st("too big"))]);
        assert_eq!(
            decode_result(raw, &wrap_result(raw, &e).unwrap()).unwrap(),
            e
        );
        // An empty body is still written: content is a oneof member.
        assert_eq!(wrap_result(raw, &st("")).unwrap(), [0x0A, 0x00]);
        assert_eq!(decode_result(raw, &[]).unwrap(), Value::Nil);
    }

    #[test]
    fn route_false_bool_and_uri_capture_zero() {
        let route = spec("kong.router.get_route");
        let bytes = wrap_result(route, &Value::map([("strip_path", Value::Bool(false))])).unwrap();
        assert_eq!(bytes, [0x60, 0x00]);
        let caps = spec("kong.request.get_uri_captures");
        let t = Value::map([
            (
                "unnamed",
                Value::Map(vec![(Value::Int(0), st("/x/1")), (Value::Int(1), st("1"))]),
            ),
            ("named", arr(vec![])),
        ]);
        let got = decode_result(caps, &wrap_result(caps, &t).unwrap()).unwrap();
        assert_eq!(
            got,
            Value::map([
                ("unnamed", arr(vec![bin(b"1")])),
                ("named", Value::Map(vec![]))
            ])
        );
    }

    #[test]
    fn server_side_argument_errors() {
        let err = encode_args(spec("kong.request.get_header"), &[st("a"), st("b")]).unwrap_err();
        assert!(err.to_string().contains("at most 1 argument"), "{err}");
        assert!(encode_args(spec("kong.request.get_headers"), &[Value::Int(1 << 40)]).is_err());
        assert!(encode_args(spec("kong.client.get_ip"), &[Value::Nil]).is_err());
        assert!(encode_args(spec("kong.response.set_headers"), &[st("x")]).is_err());
        assert!(encode_args(spec("kong.log.err"), &[Value::Str(vec![0xFF])]).is_err());
        // go-pdk maps -1 to 100 itself; the codec sends what it is given.
        assert_eq!(
            encode_args(spec("kong.request.get_headers"), &[Value::Int(100)]).unwrap(),
            [0x08, 0x64]
        );
    }

    /// A small deterministic generator for the garbage tests.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u8 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u8
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        // A truncated varint key and a LEN field running past the end are invalid for every
        // message type.
        for bad in [&[0xFFu8][..], &[0x0A, 0x05, 0x01], &[0x80, 0x80]] {
            for m in methods() {
                assert!(
                    matches!(unwrap_args(m, bad), Err(PbError::Decode { .. })),
                    "{} accepted {bad:02x?} as input",
                    m.name
                );
                assert!(
                    matches!(decode_result(m, bad), Err(PbError::Decode { .. })),
                    "{} accepted {bad:02x?} as result",
                    m.name
                );
            }
        }
        // Wrong wire type for a known field.
        assert!(unwrap_args(spec("kong.request.get_header"), &[0x08, 0x01]).is_err());
        // Random bytes: any outcome but a panic.
        let mut rng = Lcg(7);
        for round in 0..2000 {
            let len = usize::from(rng.next() % 24);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next()).collect();
            let m = &methods()[round % methods().len()];
            let _ = unwrap_args(m, &bytes);
            let _ = decode_result(m, &bytes);
        }
    }
}
