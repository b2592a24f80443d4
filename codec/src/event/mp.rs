//! `MsgPack:1` (docs/protocol.md §4): one RPC call's answer ([`CallReader`]) and one event's conversation
//! ([`MpEvent`]), without I/O.
//!
//! Each RPC call of Kong's takes a pooled connection, sends one request, reads until the matching
//! response and hands the connection back (docs/protocol.md §4.1). An event is a HandleEvent call, then one
//! Step call per callback, each of which may travel on another connection; so the event driver
//! deals in calls (`method`, parameters) and their results, and the call reader in bytes.

use super::{error_text, short, Callback, End, HostError, Reply, Sent};
use crate::lua;
use crate::msgpack::{self, RpcMessage, StreamDecoder};
use crate::Value;

/// The Step method Kong uses to answer a PDK method (docs/protocol.md §4.4 table).
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

/// The four PDK methods whose results Kong passes through `fix_mmap` (docs/protocol.md §4.4).
pub fn is_multimap(m: &str) -> bool {
    matches!(
        m,
        "kong.request.get_query"
            | "kong.request.get_headers"
            | "kong.response.get_headers"
            | "kong.service.response.get_headers"
    )
}

/// Kong's `fix_mmap` (docs/protocol.md §4.4): every value becomes an array of strings (`true` → `[]`), and an
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

/// `plugin.StartInstance`'s parameters: `[{Name, Config}]` (docs/protocol.md §4.3).
pub fn start_instance_params(name: &str, config_json: &str) -> Vec<Value> {
    vec![Value::map([
        ("Name", Value::str(name)),
        ("Config", Value::str(config_json)),
    ])]
}

/// `plugin.CloseInstance`'s parameters: a bare instance id (docs/protocol.md §4.3, §10.9).
pub fn close_instance_params(id: i64) -> Vec<Value> {
    vec![Value::Int(id)]
}

/// `plugin.HandleEvent`'s parameters: `[{InstanceId, EventName}]`.
pub fn handle_event_params(instance_id: i64, phase: &str) -> Vec<Value> {
    vec![Value::map([
        ("InstanceId", Value::Int(instance_id)),
        ("EventName", Value::str(phase)),
    ])]
}

/// The `Id` of a StartInstance answer.
pub fn instance_id(result: &Value) -> Result<i64, HostError> {
    result
        .get("Id")
        .and_then(Value::as_i64)
        .ok_or_else(|| HostError::Shape {
            what: "answer to plugin.StartInstance".into(),
            detail: format!("expected a map with an integer `Id`, got {}", short(result)),
        })
}

// ------------------------------------------------------------------------------------------------
// One call's answer
// ------------------------------------------------------------------------------------------------

/// `"the response to M (msgid N)"`: how messages name the wait for a call's answer.
pub fn describe_response(method: &str, msgid: u64) -> String {
    format!("the response to {method} (msgid {msgid})")
}

/// What arrived while waiting for a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `[2, label, args]`, met before the response (Kong dispatches it and reads on).
    Notification { label: String, args: Value },
    /// The response: `Ok(result)`, or `Err(error)` when `error` is not nil. `trailing`: bytes
    /// already received after it (Kong discards them; nginx then drops the pooled connection).
    Response {
        result: Result<Value, Value>,
        trailing: usize,
    },
}

/// The receiving half of one RPC call: fed the connection's decoder, it yields notifications
/// (bounded by `max_notifications`) and then the response, checking its msgid. Kong uses a fresh
/// unpacker per call (docs/protocol.md §4.1); the decoder is borrowed so a raw client can keep one per
/// connection and read two pipelined answers.
#[derive(Debug)]
pub struct CallReader<'a> {
    msgid: u64,
    method: &'a str,
    notifications: usize,
    max_notifications: usize,
    /// With tracing on: a `Debug` rendering of every value completed (drained by the caller).
    trace: Option<Vec<String>>,
}

impl<'a> CallReader<'a> {
    pub fn new(msgid: u64, method: &'a str, max_notifications: usize) -> Self {
        CallReader {
            msgid,
            method,
            notifications: 0,
            max_notifications,
            trace: None,
        }
    }

    /// Keeps a rendering of each value completed, for `-v` transcripts ([`Self::take_trace`]).
    pub fn traced(mut self, on: bool) -> Self {
        self.trace = on.then(Vec::new);
        self
    }

    /// The renderings of the values completed since the last call.
    pub fn take_trace(&mut self) -> Vec<String> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What the error messages call the wait: `"the response to M (msgid N)"`.
    pub fn describe(&self) -> String {
        describe_response(self.method, self.msgid)
    }

    /// The next message complete in `dec`, `None` when more bytes are needed.
    pub fn next(&mut self, dec: &mut StreamDecoder) -> Result<Option<Incoming>, HostError> {
        let value = match dec.next_value() {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(HostError::Decode {
                    what: self.describe(),
                    detail: e.to_string(),
                })
            }
        };
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{value:?}"));
        }
        let (method, msgid) = (self.method, self.msgid);
        match RpcMessage::from_value(value) {
            Ok(RpcMessage::Response {
                msgid: got,
                error,
                result,
            }) => {
                if got != msgid {
                    return Err(HostError::Shape {
                        what: format!("response to {method}"),
                        detail: format!(
                            "unexpected RPC response ID from plugin server: expected msgid \
                             {msgid}, got {got}"
                        ),
                    });
                }
                let result = if error.is_nil() {
                    Ok(result)
                } else {
                    Err(error)
                };
                Ok(Some(Incoming::Response {
                    result,
                    trailing: dec.buffered(),
                }))
            }
            Ok(RpcMessage::Notification { label, args }) => {
                self.notifications += 1;
                if self.notifications > self.max_notifications {
                    return Err(HostError::TooManyNotifications {
                        what: format!(
                            "waiting for the response to {method} (msgid {msgid}), the last one \
                             [2, {}, ...]",
                            short(&label)
                        ),
                        limit: self.max_notifications,
                    });
                }
                Ok(Some(Incoming::Notification { label, args }))
            }
            Ok(RpcMessage::Request { method: m, .. }) => Err(HostError::Shape {
                what: format!("message while waiting for the response to {method}"),
                detail: format!(
                    "RPC response expected from plugin server, got a request for {}",
                    super::short_text(&m)
                ),
            }),
            Err(e) => Err(HostError::Shape {
                what: format!("message while waiting for the response to {method}"),
                detail: e.to_string(),
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// One event
// ------------------------------------------------------------------------------------------------

/// A call the event wants made next.
#[derive(Debug, Clone, PartialEq)]
pub enum Call<'a> {
    /// `plugin.HandleEvent` with [`handle_event_params`].
    HandleEvent { instance_id: i64, phase: &'a str },
    /// A Step: `[{EventId, Data}]`, `Data` absent when nil (docs/protocol.md §4.3).
    Step {
        method: &'static str,
        event_id: i64,
        data: Value,
    },
}

impl Call<'_> {
    /// The RPC method name.
    pub fn method(&self) -> &str {
        match self {
            Call::HandleEvent { .. } => "plugin.HandleEvent",
            Call::Step { method, .. } => method,
        }
    }

    /// A Step's `data` (the answer sent), nil for HandleEvent.
    pub fn into_data(self) -> Value {
        match self {
            Call::Step { data, .. } => data,
            Call::HandleEvent { .. } => Value::Nil,
        }
    }

    /// Appends the request `[0, msgid, method, params]` to `out`.
    pub fn encode(&self, msgid: u64, out: &mut Vec<u8>) {
        match self {
            // `[0, msgid, "plugin.HandleEvent", [{InstanceId, EventName}]]`, written without
            // building the params (the same bytes as `handle_event_params`; tested).
            Call::HandleEvent { instance_id, phase } => {
                msgpack::encode_array_header(4, out);
                msgpack::encode_uint(0, out);
                msgpack::encode_uint(msgid, out);
                msgpack::encode_str(b"plugin.HandleEvent", out);
                msgpack::encode_array_header(1, out);
                msgpack::encode_map_header(2, out);
                msgpack::encode_str(b"InstanceId", out);
                msgpack::encode_int(*instance_id, out);
                msgpack::encode_str(b"EventName", out);
                msgpack::encode_str(phase.as_bytes(), out);
            }
            // Written without building the params map (the hot path).
            Call::Step {
                method,
                event_id,
                data,
            } => msgpack::encode_step_request(msgid, method, *event_id, data, out),
        }
    }

    /// A readable rendering of the request for `-v` transcripts.
    pub fn describe(&self, msgid: u64) -> String {
        match self {
            Call::HandleEvent { instance_id, phase } => format!(
                "[0, {msgid}, \"plugin.HandleEvent\", {:?}]",
                handle_event_params(*instance_id, phase)
            ),
            Call::Step {
                method,
                event_id,
                data,
            } if data.is_nil() => {
                format!("[0, {msgid}, {method:?}, [{{\"EventId\": {event_id}}}]]")
            }
            Call::Step {
                method,
                event_id,
                data,
            } => format!(
                "[0, {msgid}, {method:?}, [{{\"EventId\": {event_id}, \"Data\": {data:?}}}]]"
            ),
        }
    }
}

/// What the event driver says after an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The server asks for a PDK call: answer it with [`MpEvent::reply`].
    Callback(Callback),
    /// The event is over.
    End(End),
}

/// What the event driver says after a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Replied {
    /// Make this call (a Step); `sent` describes the answer for transcripts, whose value is the
    /// Step's `data` ([`Call::into_data`]).
    Call(Call<'static>, Sent),
    /// The event is over without a Step.
    End(End),
}

/// One `MsgPack:1` event, from HandleEvent to its end (docs/protocol.md §4.4, Kong's `bridge_loop`).
///
/// ```text
/// MpEvent::new → start() → Call::HandleEvent
///   on_answer(result) → Next::Callback(cb) → reply(r) → Replied::Call(Call::Step, sent)
///   on_answer(result) → ...                           → Replied::End(Exit | Raised)
///   on_answer(result) → Next::End(Done | ServerError)
/// ```
///
/// Rules, as Kong's host: the `EventId` comes from the HandleEvent answer and is re-sent on
/// every Step (later answers' EventIds are not read); `Data: "ret"` ends the event; otherwise
/// `Data` must be `{Method: <string>, Args}`, and `Args` is unpacked if it is a table, else it is
/// the single argument; the Step method is chosen by the PDK method (even for nil) and the four
/// multi-map results get `fix_mmap`; a terminal or raised callback gets no Step. An error
/// response ends the event ([`End::ServerError`]).
#[derive(Debug)]
pub struct MpEvent<'a> {
    instance_id: i64,
    phase: &'a str,
    event_id: Option<i64>,
    /// Whether a callback waits for its reply.
    pending: bool,
    /// The call whose answer is awaited (for error texts).
    awaiting: &'static str,
    callbacks: usize,
    max_callbacks: usize,
    step_error: bool,
}

impl<'a> MpEvent<'a> {
    /// An event of `instance_id` in `phase`. `step_error`: soft errors go out as
    /// `plugin.StepError` (Kong 2.x) instead of a Step without `Data` (3.x).
    pub fn new(instance_id: i64, phase: &'a str, max_callbacks: usize, step_error: bool) -> Self {
        MpEvent {
            instance_id,
            phase,
            event_id: None,
            pending: false,
            awaiting: "plugin.HandleEvent",
            callbacks: 0,
            max_callbacks,
            step_error,
        }
    }

    /// The first call: HandleEvent.
    pub fn start(&self) -> Call<'a> {
        Call::HandleEvent {
            instance_id: self.instance_id,
            phase: self.phase,
        }
    }

    /// The event id from the HandleEvent answer, once known.
    pub fn event_id(&self) -> Option<i64> {
        self.event_id
    }

    /// Callbacks so far.
    pub fn callbacks(&self) -> usize {
        self.callbacks
    }

    /// `"event access (instance 3, EventId 7)"`, for error messages.
    pub fn context(&self) -> String {
        match self.event_id {
            None => format!("event {} (instance {})", self.phase, self.instance_id),
            Some(e) => format!(
                "event {} (instance {}, EventId {e})",
                self.phase, self.instance_id
            ),
        }
    }

    /// The answer to the last call (HandleEvent or a Step): `Ok(result)` or `Err(error value)`.
    pub fn on_answer(&mut self, answer: Result<Value, Value>) -> Result<Next, HostError> {
        let result = match answer {
            Ok(r) => r,
            Err(e) => {
                return Ok(Next::End(End::ServerError {
                    method: self.awaiting.to_owned(),
                    message: error_text(&e),
                }))
            }
        };
        let event_id = match self.event_id {
            Some(id) => id,
            None => {
                let id = result
                    .get("EventId")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| HostError::Shape {
                        what: "answer to plugin.HandleEvent".into(),
                        detail: format!(
                            "expected a map with an integer `EventId`, got {}",
                            short(&result)
                        ),
                    })?;
                self.event_id = Some(id);
                id
            }
        };
        let mut result = result;
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
                detail: format!(
                    "expected `Data` (\"ret\" or a callback), got {}",
                    short(&result)
                ),
            });
        };
        if data.as_bytes() == Some(b"ret") {
            return Ok(Next::End(End::Done));
        }
        let Some(method) = data
            .get("Method")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(HostError::Shape {
                what: format!("callback in event {event_id}"),
                detail: format!(
                    "expected Data = \"ret\" or {{Method: <string>, Args: [...]}}, got {}",
                    short(&data)
                ),
            });
        };
        if self.callbacks >= self.max_callbacks {
            return Err(HostError::TooManyCallbacks {
                what: format!("callback {} in {}", short(&method), self.context()),
                limit: self.max_callbacks,
            });
        }
        self.callbacks += 1;
        let raw = data.get("Args");
        let args_not_array = match raw {
            None | Some(Value::Array(_)) => None,
            Some(other) => Some(lua::lua_type(other)),
        };
        let args = lua::unpack_args(raw);
        self.pending = true;
        Ok(Next::Callback(Callback {
            method,
            args,
            args_not_array,
        }))
    }

    /// Answers the pending callback `method` (the name in its [`Callback`]): the Step to call,
    /// or the end of the event. (Replying with no callback pending ends the event as raised: a
    /// caller's bug shows in the transcript.)
    pub fn reply(&mut self, method: &str, reply: Reply) -> Replied {
        if !std::mem::take(&mut self.pending) {
            return Replied::End(End::Raised {
                method: method.to_owned(),
                error: "a reply without a pending callback".into(),
            });
        }
        let event_id = self.event_id.unwrap_or_default();
        let step = step_method(method);
        let (step, data, note) = match reply {
            Reply::Value(v) if is_multimap(method) => (step, fix_multimap(v), None),
            Reply::Value(v) => (step, v, None),
            Reply::Variant(s, v) => (s, v, None),
            // Kong 2.x: `nil, err` goes out as StepError with the message (docs/protocol.md §4.4).
            Reply::SoftError(e) if self.step_error => {
                let note = format!("soft error: {e}");
                ("plugin.StepError", Value::str(e), Some(note))
            }
            // Kong 3.x sends only the first return value: nil.
            Reply::SoftError(e) => (step, Value::Nil, Some(format!("soft error: {e}"))),
            Reply::NotFound => (
                step,
                Value::Nil,
                Some(format!("could not find pdk method: {method}")),
            ),
            Reply::Terminal => return Replied::End(End::Exit),
            Reply::Raise(error) => {
                return Replied::End(End::Raised {
                    method: method.to_owned(),
                    error,
                })
            }
        };
        self.awaiting = step;
        let sent = Sent {
            kind: step.to_owned(),
            note,
        };
        Replied::Call(
            Call::Step {
                method: step,
                event_id,
                data,
            },
            sent,
        )
    }
}

#[cfg(test)]
mod tests;
