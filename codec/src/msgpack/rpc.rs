//! MessagePack-RPC messages as Kong exchanges them (docs/protocol.md §4.1).
//!
//! * request `[0, msgid, method, params]` (host → server; `params` is always an array),
//! * response `[1, msgid, error, result]` (server → host; `error` is nil on success),
//! * notification `[2, label, args]` (server → host, e.g. `[2, "serverPid", 1234]`).
//!
//! [`RpcMessage::from_value`] is strict about the shape and lenient about widths: the type and
//! msgid may use any integer encoding (the decoder already folds widths), but must be integers.

use super::encode::{encode_array_header, encode_map_header, encode_str, encode_uint};
use crate::Value;

/// A MessagePack-RPC message (docs/protocol.md §4.1).
#[derive(Debug, Clone, PartialEq)]
pub enum RpcMessage {
    /// `[0, msgid, method, params]` (host → server); `params` is always an array.
    Request {
        msgid: u64,
        method: String,
        params: Vec<Value>,
    },
    /// `[1, msgid, error, result]` (server → host).
    Response {
        msgid: u64,
        error: Value,
        result: Value,
    },
    /// `[2, label, args]` (server → host), e.g. `[2, "serverPid", 1234]`.
    Notification { label: String, args: Value },
}

/// A MessagePack object that is not a MessagePack-RPC message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a MessagePack-RPC message: expected {expected}, got {got}")]
pub struct ShapeError {
    pub expected: String,
    pub got: String,
}

impl ShapeError {
    fn new(expected: impl Into<String>, got: impl Into<String>) -> Self {
        ShapeError {
            expected: expected.into(),
            got: got.into(),
        }
    }
}

/// The message type numbers of MessagePack-RPC.
const REQUEST: i64 = 0;
const RESPONSE: i64 = 1;
const NOTIFICATION: i64 = 2;

impl RpcMessage {
    /// The message as a [`Value`] array.
    pub fn to_value(&self) -> Value {
        match self {
            RpcMessage::Request {
                msgid,
                method,
                params,
            } => Value::Array(vec![
                Value::Int(REQUEST),
                uint_value(*msgid),
                Value::str(method.as_str()),
                Value::Array(params.clone()),
            ]),
            RpcMessage::Response {
                msgid,
                error,
                result,
            } => Value::Array(vec![
                Value::Int(RESPONSE),
                uint_value(*msgid),
                error.clone(),
                result.clone(),
            ]),
            RpcMessage::Notification { label, args } => Value::Array(vec![
                Value::Int(NOTIFICATION),
                Value::str(label.as_str()),
                args.clone(),
            ]),
        }
    }

    /// Appends the Kong-exact encoding of the message (docs/protocol.md §4.2), without building a [`Value`]
    /// for the envelope.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RpcMessage::Request {
                msgid,
                method,
                params,
            } => encode_request(*msgid, method, params, out),
            RpcMessage::Response {
                msgid,
                error,
                result,
            } => encode_response(*msgid, error, result, out),
            RpcMessage::Notification { label, args } => {
                encode_array_header(3, out);
                encode_uint(NOTIFICATION as u64, out);
                encode_str(label.as_bytes(), out);
                super::encode(args, out);
            }
        }
    }

    /// [`encode`](Self::encode) into a new buffer.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Recognises a decoded value as an RPC message.
    ///
    /// # Errors
    ///
    /// A [`ShapeError`] naming what was expected and what came instead, e.g. "expected a
    /// 4-element array [type, msgid, error, result], got a 3-element array".
    pub fn from_value(value: Value) -> Result<RpcMessage, ShapeError> {
        let items = match value {
            Value::Array(items) => items,
            other => {
                return Err(ShapeError::new(
                    "an array [type, ...] (0 = request, 1 = response, 2 = notification)",
                    describe(&other),
                ))
            }
        };
        let Some(kind) = items.first() else {
            return Err(ShapeError::new("an array [type, ...]", "an empty array"));
        };
        // Kong compares with Lua's `==`, where `1.0 == 1`: an integral float type or msgid is
        // accepted as the integer (docs/protocol.md §4.1).
        let kind = match *kind {
            Value::Float(f) if f.fract() == 0.0 && (0.0..=2.0).contains(&f) => Value::Int(f as i64),
            ref other => other.clone(),
        };
        match kind {
            Value::Int(REQUEST) => {
                let [_, msgid, method, params] =
                    take_array(items, "[type, msgid, method, params]")?;
                let msgid = msgid_of(&msgid, "request")?;
                let method = match method {
                    Value::Str(bytes) => String::from_utf8(bytes).map_err(|e| {
                        ShapeError::new(
                            "a UTF-8 method name in a request",
                            format!(
                                "non-UTF-8 bytes {:?}",
                                String::from_utf8_lossy(e.as_bytes())
                            ),
                        )
                    })?,
                    other => {
                        return Err(ShapeError::new(
                            "a str method name in a request",
                            describe(&other),
                        ))
                    }
                };
                let params = match params {
                    Value::Array(params) => params,
                    other => {
                        return Err(ShapeError::new(
                            "an array of params in a request",
                            describe(&other),
                        ))
                    }
                };
                Ok(RpcMessage::Request {
                    msgid,
                    method,
                    params,
                })
            }
            Value::Int(RESPONSE) => {
                let [_, msgid, error, result] = take_array(items, "[type, msgid, error, result]")?;
                let msgid = msgid_of(&msgid, "response")?;
                Ok(RpcMessage::Response {
                    msgid,
                    error,
                    result,
                })
            }
            Value::Int(NOTIFICATION) => {
                let [_, label, args] = take_array(items, "[type, label, args]")?;
                let label = match label {
                    Value::Str(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    other => {
                        return Err(ShapeError::new(
                            "a str label in a notification",
                            describe(&other),
                        ))
                    }
                };
                Ok(RpcMessage::Notification { label, args })
            }
            other => Err(ShapeError::new(
                "message type 0 (request), 1 (response) or 2 (notification) as the first element",
                describe(&other),
            )),
        }
    }

    /// [`from_value`](Self::from_value) under the name the transport code reads best with.
    pub fn decode_from(value: Value) -> Result<RpcMessage, ShapeError> {
        Self::from_value(value)
    }

    /// The msgid of a request or response; `None` for a notification.
    pub fn msgid(&self) -> Option<u64> {
        match self {
            RpcMessage::Request { msgid, .. } | RpcMessage::Response { msgid, .. } => Some(*msgid),
            RpcMessage::Notification { .. } => None,
        }
    }
}

/// Appends the request `[0, msgid, method, params]` as Kong encodes it, without building a
/// [`Value`] for the envelope (the load generator's hot path).
pub fn encode_request(msgid: u64, method: &str, params: &[Value], out: &mut Vec<u8>) {
    encode_array_header(4, out);
    encode_uint(REQUEST as u64, out);
    encode_uint(msgid, out);
    encode_str(method.as_bytes(), out);
    encode_array_header(params.len(), out);
    for p in params {
        super::encode(p, out);
    }
}

/// Writes a Step request `[0, msgid, method, [{EventId: event_id, Data: data}]]` without
/// building the params map (the host's hot path). A nil `EventId` or `Data` is left out, as Kong's
/// encoder drops nil map values (docs/protocol.md §4.2, Appendix A "Step with nil"): `event_id` is whatever
/// the HandleEvent answer carried, as Kong writes it back.
pub fn encode_step_request(
    msgid: u64,
    method: &str,
    event_id: &Value,
    data: &Value,
    out: &mut Vec<u8>,
) {
    encode_array_header(4, out);
    encode_uint(REQUEST as u64, out);
    encode_uint(msgid, out);
    encode_str(method.as_bytes(), out);
    encode_array_header(1, out);
    let entries = usize::from(!event_id.is_nil()) + usize::from(!data.is_nil());
    encode_map_header(entries, out);
    if !event_id.is_nil() {
        encode_str(b"EventId", out);
        super::encode(event_id, out);
    }
    if !data.is_nil() {
        encode_str(b"Data", out);
        super::encode(data, out);
    }
}

/// Appends the response `[1, msgid, error, result]` (for mock servers in tests and tools).
pub fn encode_response(msgid: u64, error: &Value, result: &Value, out: &mut Vec<u8>) {
    encode_array_header(4, out);
    encode_uint(RESPONSE as u64, out);
    encode_uint(msgid, out);
    super::encode(error, out);
    super::encode(result, out);
}

fn uint_value(n: u64) -> Value {
    match i64::try_from(n) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::UInt(n),
    }
}

/// The elements of an `N`-element array, or a shape error naming the expected layout.
fn take_array<const N: usize>(items: Vec<Value>, layout: &str) -> Result<[Value; N], ShapeError> {
    let got = items.len();
    <[Value; N]>::try_from(items).map_err(|_| {
        ShapeError::new(
            format!("a {N}-element array {layout}"),
            format!("a {got}-element array"),
        )
    })
}

fn msgid_of(value: &Value, what: &str) -> Result<u64, ShapeError> {
    match *value {
        Value::Int(i) if i >= 0 => Ok(i as u64),
        Value::UInt(u) => Ok(u),
        Value::Float(f) if f.fract() == 0.0 && (0.0..9.0e15).contains(&f) => Ok(f as u64),
        _ => Err(ShapeError::new(
            format!("a non-negative integer msgid in a {what}"),
            describe(value),
        )),
    }
}

/// A short description of a value for error messages: its type and, when small, itself.
fn describe(value: &Value) -> String {
    match value {
        Value::Array(a) => format!("an array of {} element(s)", a.len()),
        Value::Map(m) => format!(
            "a map of {} entr{}",
            m.len(),
            if m.len() == 1 { "y" } else { "ies" }
        ),
        Value::Str(s) if s.len() > 64 => format!("a str of {} bytes", s.len()),
        Value::Bin(b) if b.len() > 64 => format!("a bin of {} bytes", b.len()),
        Value::Ext(..) => format!("{value:?}"),
        other => format!("{} {other:?}", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::{decode, encode_to_vec};

    /// Hex bytes and quoted strings: `bytes("94 00 02 B2 'plugin.HandleEvent'")`, spaces inside
    /// quotes allowed.
    fn bytes(spec: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = spec.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('\'') {
                let end = r.find('\'').expect("closing quote");
                out.extend_from_slice(&r.as_bytes()[..end]);
                rest = r[end + 1..].trim_start();
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                out.push(u8::from_str_radix(&rest[..end], 16).expect("hex byte"));
                rest = rest[end..].trim_start();
            }
        }
        out
    }

    fn req(msgid: u64, method: &str, params: Vec<Value>) -> RpcMessage {
        RpcMessage::Request {
            msgid,
            method: method.into(),
            params,
        }
    }

    /// Appendix A, byte for byte.
    #[test]
    fn appendix_a_examples() {
        let config = r#"{"message":"hello","path":"\/tmp\/x","__seq__":1}"#;
        assert!(config.len() >= 32);
        let table: Vec<(&str, RpcMessage, Vec<u8>)> = vec![
            (
                "HandleEvent",
                req(2, "plugin.HandleEvent", vec![Value::map([
                    ("InstanceId", Value::Int(0)),
                    ("EventName", Value::str("access")),
                ])]),
                bytes("94 00 02 B2 'plugin.HandleEvent' 91 82 AA 'InstanceId' 00 A9 'EventName' A6 'access'"),
            ),
            (
                "Step with value",
                req(3, "plugin.Step", vec![Value::map([
                    ("EventId", Value::Int(0)),
                    ("Data", Value::str("example.com")),
                ])]),
                bytes("94 00 03 AB 'plugin.Step' 91 82 A7 'EventId' 00 A4 'Data' AB 'example.com'"),
            ),
            (
                "Step with nil: the Data key is absent",
                req(3, "plugin.Step", vec![Value::map([("EventId", Value::Int(0)), ("Data", Value::Nil)])]),
                bytes("94 00 03 AB 'plugin.Step' 91 81 A7 'EventId' 00"),
            ),
            (
                "StepMultiMap",
                req(4, "plugin.StepMultiMap", vec![Value::map([
                    ("EventId", Value::Int(0)),
                    ("Data", Value::map([("host", Value::Array(vec![Value::str("example.com")]))])),
                ])]),
                bytes("94 00 04 B3 'plugin.StepMultiMap' 91 82 A7 'EventId' 00 A4 'Data' 81 A4 'host' 91 AB 'example.com'"),
            ),
            (
                "CloseInstance with a bare integer",
                req(9, "plugin.CloseInstance", vec![Value::Int(7)]),
                bytes("94 00 09 B4 'plugin.CloseInstance' 91 07"),
            ),
            (
                "server done",
                RpcMessage::Response {
                    msgid: 5,
                    error: Value::Nil,
                    result: Value::map([("Data", Value::str("ret")), ("EventId", Value::Int(0))]),
                },
                bytes("94 01 05 C0 82 A4 'Data' A3 'ret' A7 'EventId' 00"),
            ),
            (
                "server error",
                RpcMessage::Response {
                    msgid: 2,
                    error: Value::str("no plugin instance #0"),
                    result: Value::Nil,
                },
                bytes("94 01 02 B5 'no plugin instance #0' C0"),
            ),
            (
                "StartInstance with a config JSON of 32+ bytes",
                req(1, "plugin.StartInstance", vec![Value::map([
                    ("Name", Value::str("py-hello")),
                    ("Config", Value::str(config)),
                ])]),
                [
                    bytes("94 00 01 B4 'plugin.StartInstance' 91 82 A4 'Name' A8 'py-hello' A6 'Config' DA"),
                    (config.len() as u16).to_be_bytes().to_vec(),
                    config.as_bytes().to_vec(),
                ]
                .concat(),
            ),
        ];
        for (name, msg, want) in table {
            assert_eq!(msg.encode_to_vec(), want, "{name}: RpcMessage::encode");
            assert_eq!(
                encode_to_vec(&msg.to_value()),
                want,
                "{name}: encode(to_value())"
            );
            if let RpcMessage::Request {
                msgid,
                method,
                params,
            } = &msg
            {
                let mut out = Vec::new();
                encode_request(*msgid, method, params, &mut out);
                assert_eq!(out, want, "{name}: encode_request");
            }
            if let RpcMessage::Response {
                msgid,
                error,
                result,
            } = &msg
            {
                let mut out = Vec::new();
                encode_response(*msgid, error, result, &mut out);
                assert_eq!(out, want, "{name}: encode_response");
            }
            // Decoding gives the message back (minus nil map values, which Kong never sends).
            let (value, used) = decode(&want).expect(name);
            assert_eq!(used, want.len());
            let back = RpcMessage::from_value(value).expect(name);
            assert_eq!(back.encode_to_vec(), want, "{name}: round trip");
        }
    }

    #[test]
    fn notification() {
        let msg = RpcMessage::Notification {
            label: "serverPid".into(),
            args: Value::Int(1234),
        };
        let want = bytes("93 02 A9 'serverPid' CD 04 D2");
        assert_eq!(msg.encode_to_vec(), want);
        assert_eq!(encode_to_vec(&msg.to_value()), want);
        assert_eq!(RpcMessage::from_value(decode(&want).unwrap().0), Ok(msg));
    }

    #[test]
    fn any_integer_width_for_type_and_msgid() {
        // [1, 5, nil, "ok"] with the type as uint64 and the msgid as int16.
        let wire = bytes("94 CF 00 00 00 00 00 00 00 01 D1 00 05 C0 A2 'ok'");
        let msg = RpcMessage::from_value(decode(&wire).unwrap().0).unwrap();
        assert_eq!(
            msg,
            RpcMessage::Response {
                msgid: 5,
                error: Value::Nil,
                result: Value::str("ok")
            }
        );
        assert_eq!(msg.msgid(), Some(5));
        // A msgid above i64::MAX survives.
        let wire = bytes("94 01 CF FF FF FF FF FF FF FF FF C0 C0");
        let msg = RpcMessage::from_value(decode(&wire).unwrap().0).unwrap();
        assert_eq!(msg.msgid(), Some(u64::MAX));
        assert_eq!(msg.encode_to_vec(), wire);
        assert_eq!(encode_to_vec(&msg.to_value()), wire);
    }

    /// The direct Step encoder writes exactly what the generic path writes (Appendix A).
    #[test]
    fn step_requests_encode_like_the_generic_path() {
        for data in [
            Value::Nil,
            Value::str("example.com"),
            Value::map([("host", Value::Array(vec![Value::str("a")]))]),
        ] {
            let mut entries = vec![(Value::str("EventId"), Value::Int(7))];
            entries.push((Value::str("Data"), data.clone()));
            let mut generic = Vec::new();
            encode_request(3, "plugin.Step", &[Value::Map(entries)], &mut generic);
            let mut direct = Vec::new();
            encode_step_request(3, "plugin.Step", &Value::Int(7), &data, &mut direct);
            assert_eq!(direct, generic, "{data:?}");
        }
        // Appendix A, "Step with nil": 94 00 03 AB "plugin.Step" 91 81 A7 "EventId" 00
        let mut out = Vec::new();
        encode_step_request(3, "plugin.Step", &Value::Int(0), &Value::Nil, &mut out);
        let mut want = vec![0x94, 0x00, 0x03, 0xAB];
        want.extend_from_slice(b"plugin.Step");
        want.extend_from_slice(&[0x91, 0x81, 0xA7]);
        want.extend_from_slice(b"EventId");
        want.push(0x00);
        assert_eq!(out, want);
        // No EventId (a HandleEvent answer without one): Kong's Lua drops the nil key.
        let mut out = Vec::new();
        encode_step_request(3, "plugin.Step", &Value::Nil, &Value::Nil, &mut out);
        assert_eq!(&out[out.len() - 1..], &[0x80]);
    }

    /// Spec §4.1: Kong compares type and msgid with Lua's `==`, so `1.0` is a response and a
    /// msgid of `7.0` matches request 7.
    #[test]
    fn integral_float_type_and_msgid_are_accepted_as_kong_does() {
        let v = Value::Array(vec![
            Value::Float(1.0),
            Value::Float(7.0),
            Value::Nil,
            Value::Nil,
        ]);
        let msg = RpcMessage::from_value(v).unwrap();
        assert!(
            matches!(msg, RpcMessage::Response { msgid: 7, .. }),
            "{msg:?}"
        );
        let v = Value::Array(vec![
            Value::Int(1),
            Value::Float(7.5),
            Value::Nil,
            Value::Nil,
        ]);
        assert!(RpcMessage::from_value(v).is_err());
    }

    #[test]
    fn shape_errors_say_what_was_expected() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                Value::Array(vec![Value::Int(1), Value::Int(2), Value::Nil]),
                "a 4-element array [type, msgid, error, result]",
                "a 3-element array",
            ),
            (
                Value::Array(vec![Value::Int(0), Value::Int(2), Value::str("m")]),
                "a 4-element array [type, msgid, method, params]",
                "a 3-element array",
            ),
            (
                Value::Array(vec![Value::Int(2), Value::str("serverPid")]),
                "a 3-element array [type, label, args]",
                "a 2-element array",
            ),
            (
                Value::str("hello"),
                "an array [type, ...] (0 = request, 1 = response, 2 = notification)",
                "str \"hello\"",
            ),
            (
                Value::Array(vec![]),
                "an array [type, ...]",
                "an empty array",
            ),
            (
                Value::Array(vec![Value::Int(3), Value::Int(1), Value::Nil, Value::Nil]),
                "message type 0 (request), 1 (response) or 2 (notification) as the first element",
                "integer 3",
            ),
            (
                Value::Array(vec![
                    Value::Float(1.5),
                    Value::Int(1),
                    Value::Nil,
                    Value::Nil,
                ]),
                "message type 0 (request), 1 (response) or 2 (notification) as the first element",
                "float 1.5",
            ),
            (
                Value::Array(vec![Value::Int(1), Value::Int(-1), Value::Nil, Value::Nil]),
                "a non-negative integer msgid in a response",
                "integer -1",
            ),
            (
                Value::Array(vec![Value::Int(1), Value::str("5"), Value::Nil, Value::Nil]),
                "a non-negative integer msgid in a response",
                "str \"5\"",
            ),
            (
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(1),
                    Value::Int(5),
                    Value::Array(vec![]),
                ]),
                "a str method name in a request",
                "integer 5",
            ),
            (
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(1),
                    Value::str("m"),
                    Value::Map(vec![]),
                ]),
                "an array of params in a request",
                "a map of 0 entries",
            ),
            (
                Value::Array(vec![Value::Int(2), Value::Int(1), Value::Nil]),
                "a str label in a notification",
                "integer 1",
            ),
        ];
        for (value, expected, got) in cases {
            let err = RpcMessage::from_value(value.clone()).expect_err(&format!("{value:?}"));
            assert_eq!(err, ShapeError::new(expected, got), "{value:?}");
            assert!(err
                .to_string()
                .starts_with("not a MessagePack-RPC message: expected "));
        }
        assert_eq!(
            RpcMessage::from_value(Value::Array(vec![Value::Int(1), Value::Int(2), Value::Nil]))
                .unwrap_err()
                .to_string(),
            "not a MessagePack-RPC message: expected a 4-element array [type, msgid, error, result], got a 3-element array"
        );
    }
}
