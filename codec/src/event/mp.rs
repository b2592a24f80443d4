//! `MsgPack:1` (docs/protocol.md §4): one RPC call's answer ([`CallReader`]) and one event's conversation
//! ([`MpEvent`]), without I/O.
//!
//! Each RPC call of Kong's takes a pooled connection, sends one request, reads until the matching
//! response and hands the connection back (docs/protocol.md §4.1). An event is a HandleEvent call, then one
//! Step call per callback, each of which may travel on another connection; so the event driver
//! deals in calls (`method`, parameters) and their results, and the call reader in bytes.

use super::{error_text, short, Callback, End, HostError, Quirk, Quirks, Reply, Sent};
use crate::lua;
use crate::msgpack::{self, StreamDecoder};
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
    /// `[2, label, args]`, met before the response (Kong dispatches it and reads on). A label
    /// that is not a string (which no handler of Kong's matches) is shown as `<type>`.
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
    quirks: Quirks,
}

impl<'a> CallReader<'a> {
    pub fn new(msgid: u64, method: &'a str, max_notifications: usize) -> Self {
        CallReader {
            msgid,
            method,
            notifications: 0,
            max_notifications,
            trace: None,
            quirks: Quirks::default(),
        }
    }

    /// The legal but unusual choices noticed in the messages read so far.
    pub fn quirks(&self) -> Quirks {
        self.quirks
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
        let trailing = dec.buffered();
        self.classify(value, trailing).map(Some)
    }

    /// What Kong's `Rpc:call` makes of one message (docs/protocol.md §4.1): it indexes elements 1 to 4 of
    /// any table and compares numbers as Lua does, so a float type or msgid, a 3- or 5-element
    /// array (or a map with integer keys) are read like the 4-element array the kits send (and
    /// noted as [`Quirk`]s); anything that is not a table raises.
    fn classify(&mut self, mut value: Value, trailing: usize) -> Result<Incoming, HostError> {
        let (method, msgid) = (self.method, self.msgid);
        let expected = || format!("message while waiting for the response to {method}");
        if !matches!(value, Value::Array(_) | Value::Map(_)) {
            return Err(HostError::Shape {
                what: expected(),
                detail: format!(
                    "RPC response expected from plugin server, got {} (Kong indexes it and \
                     raises)",
                    short(&value)
                ),
            });
        }
        let length = match &value {
            Value::Array(a) => Some(a.len()),
            _ => None,
        };
        let kind = lua::take_index(&mut value, 1);
        if !matches!(kind, Value::Int(_) | Value::UInt(_)) && kind.as_f64().is_some() {
            self.quirks.insert(Quirk::OddNumber);
        }
        if lua::number_is(&kind, 2.0) {
            if length != Some(3) {
                self.quirks.insert(Quirk::EnvelopeShape);
            }
            let label = match lua::take_index(&mut value, 2) {
                Value::Str(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::Bin(b) => {
                    self.quirks.insert(Quirk::BinString);
                    String::from_utf8_lossy(&b).into_owned()
                }
                other => format!("<{}>", lua::lua_type(&other)),
            };
            if label != "serverPid" {
                self.quirks.insert(Quirk::UnknownNotification);
            }
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
            let args = lua::take_index(&mut value, 3);
            return Ok(Incoming::Notification { label, args });
        }
        if !lua::number_is(&kind, 1.0) {
            let got = if lua::number_is(&kind, 0.0) {
                match lua::take_index(&mut value, 3) {
                    Value::Str(m) | Value::Bin(m) => format!(
                        "a request for {}",
                        super::short_text(&String::from_utf8_lossy(&m))
                    ),
                    _ => "a request".into(),
                }
            } else {
                format!("{} as the message type", short(&kind))
            };
            return Err(HostError::Shape {
                what: expected(),
                detail: format!(
                    "RPC response expected from plugin server (type 1, or 2 for a \
                     notification), got {got}"
                ),
            });
        }
        if length != Some(4) {
            self.quirks.insert(Quirk::EnvelopeShape);
        }
        let got = lua::take_index(&mut value, 2);
        if got.as_f64() != Some(msgid as f64) {
            return Err(HostError::Shape {
                what: format!("response to {method}"),
                detail: format!(
                    "unexpected RPC response ID from plugin server: expected msgid {msgid}, \
                     got {}",
                    short(&got)
                ),
            });
        }
        if matches!(got, Value::Float(_)) {
            self.quirks.insert(Quirk::OddNumber);
        }
        let error = lua::take_index(&mut value, 3);
        let result = lua::take_index(&mut value, 4);
        let result = if error.is_nil() {
            Ok(result)
        } else {
            Err(error)
        };
        Ok(Incoming::Response { result, trailing })
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
    /// A Step: `[{EventId, Data}]`, each absent when nil (docs/protocol.md §4.3). `event_id` is what
    /// the HandleEvent answer carried, as Kong writes it back ([`lua::reencode`]).
    Step {
        method: &'static str,
        event_id: Value,
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
            } => msgpack::encode_step_request(msgid, method, event_id, data, out),
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
            } => {
                let mut entries = Vec::new();
                if !event_id.is_nil() {
                    entries.push(format!("\"EventId\": {event_id:?}"));
                }
                if !data.is_nil() {
                    entries.push(format!("\"Data\": {data:?}"));
                }
                format!("[0, {msgid}, {method:?}, [{{{}}}]]", entries.join(", "))
            }
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
/// Rules, as Kong's host reads answers (any table, Lua's field lookup): the `EventId` comes from
/// the HandleEvent answer (whatever it is, even absent) and is re-sent on every Step as Kong
/// writes it back; later answers' EventIds are not read; a nil or `false` result ends the event
/// silently; `Data: "ret"` ends it; otherwise `Data` must be `{Method: <string or number>,
/// Args}`, and `Args` is unpacked if it is a table, else it is the single argument; the Step
/// method is chosen by the PDK method (even for nil) and the four multi-map results get
/// `fix_mmap`; a terminal or raised callback gets no Step. A string error ends the event
/// ([`End::ServerError`]); any other error value raises in Kong (`err:lower()`). Everything
/// else raises in Kong's Lua and is a [`HostError`] here. What is legal but unusual is noted
/// ([`MpEvent::quirks`]).
#[derive(Debug)]
pub struct MpEvent<'a> {
    instance_id: i64,
    phase: &'a str,
    /// The EventId to re-send (`Some(Nil)`: the HandleEvent answer had none).
    event_id: Option<Value>,
    /// Whether a callback waits for its reply.
    pending: bool,
    /// The call whose answer is awaited (for error texts).
    awaiting: &'static str,
    callbacks: usize,
    max_callbacks: usize,
    step_error: bool,
    quirks: Quirks,
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
            quirks: Quirks::default(),
        }
    }

    /// The first call: HandleEvent.
    pub fn start(&self) -> Call<'a> {
        Call::HandleEvent {
            instance_id: self.instance_id,
            phase: self.phase,
        }
    }

    /// The event id from the HandleEvent answer, once known (when it is an integer).
    pub fn event_id(&self) -> Option<i64> {
        self.event_id.as_ref().and_then(Value::as_i64)
    }

    /// Callbacks so far.
    pub fn callbacks(&self) -> usize {
        self.callbacks
    }

    /// The legal but unusual choices of the server noticed so far in this event's answers
    /// (add the [`CallReader::quirks`] of each call for the envelopes).
    pub fn quirks(&self) -> Quirks {
        self.quirks
    }

    /// `"event access (instance 3, EventId 7)"`, for error messages.
    pub fn context(&self) -> String {
        match &self.event_id {
            None => format!("event {} (instance {})", self.phase, self.instance_id),
            Some(Value::Nil) => format!(
                "event {} (instance {}, no EventId)",
                self.phase, self.instance_id
            ),
            Some(Value::Int(e)) => format!(
                "event {} (instance {}, EventId {e})",
                self.phase, self.instance_id
            ),
            Some(e) => format!(
                "event {} (instance {}, EventId {})",
                self.phase,
                self.instance_id,
                short(e)
            ),
        }
    }

    /// The answer to the last call (HandleEvent or a Step): `Ok(result)` or `Err(error value)`.
    pub fn on_answer(&mut self, answer: Result<Value, Value>) -> Result<Next, HostError> {
        let mut result = match answer {
            Ok(r) => r,
            Err(e @ (Value::Str(_) | Value::Bin(_))) => {
                return Ok(Next::End(End::ServerError {
                    method: self.awaiting.to_owned(),
                    message: error_text(&e),
                }))
            }
            // `return nil, false`: Kong's `if err` does not fire; the event just stops.
            Err(Value::Bool(false)) => {
                self.quirks.insert(Quirk::SilentEnd);
                return Ok(Next::End(End::Done));
            }
            Err(other) => {
                return Err(HostError::Shape {
                    what: format!("error answer to {} in {}", self.awaiting, self.context()),
                    detail: format!(
                        "the error is a {} ({}), not a string: Kong calls err:lower() on it and \
                         raises",
                        lua::lua_type(&other),
                        short(&other)
                    ),
                })
            }
        };
        if lua::is_nil(&result) || result == Value::Bool(false) {
            // `if not step_in then return step_in, err end` with no error: a silent end.
            self.quirks.insert(Quirk::SilentEnd);
            return Ok(Next::End(End::Done));
        }
        if !matches!(result, Value::Array(_) | Value::Map(_))
            || lua::field(&result, "Data").is_none()
        {
            return Err(HostError::Shape {
                what: format!("answer to {} in {}", self.awaiting, self.context()),
                detail: format!(
                    "expected a map with `Data` (\"ret\" or a callback), got {} (Kong indexes \
                     Data.Method and raises)",
                    short(&result)
                ),
            });
        }
        let event_id = lua::take_field(&mut result, "EventId");
        if self.event_id.is_none() {
            if !matches!(event_id, Some(Value::Int(_) | Value::UInt(_))) {
                self.quirks.insert(Quirk::EventIdNotInteger);
            }
            self.event_id = Some(event_id.as_ref().map(lua::reencode).unwrap_or_default());
        } else if event_id.is_none() {
            self.quirks.insert(Quirk::StepAnswerWithoutEventId);
        }
        let mut data = lua::take_field(&mut result, "Data").unwrap_or_default();
        match &data {
            Value::Str(b) if b == b"ret" => return Ok(Next::End(End::Done)),
            Value::Bin(b) if b == b"ret" => {
                self.quirks.insert(Quirk::BinString);
                return Ok(Next::End(End::Done));
            }
            _ => {}
        }
        let method = match lua::take_field(&mut data, "Method") {
            Some(Value::Str(b)) => String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Some(Value::Bin(b)) => {
                self.quirks.insert(Quirk::BinString);
                String::from_utf8_lossy(&b).into_owned()
            }
            // Kong walks the name with ngx.re.gmatch, which takes a number as its text.
            Some(n @ (Value::Int(_) | Value::UInt(_) | Value::Float(_))) => {
                self.quirks.insert(Quirk::OddNumber);
                lua::lua_text(&n).unwrap_or_default()
            }
            other => {
                return Err(HostError::Shape {
                    what: format!("callback in {}", self.context()),
                    detail: format!(
                        "expected Data = \"ret\" or {{Method: <string>, Args: [...]}}, got {} \
                         (Method {})",
                        short(&data),
                        other.map_or("missing", |m| lua::lua_type(&m))
                    ),
                })
            }
        };
        if self.callbacks >= self.max_callbacks {
            return Err(HostError::TooManyCallbacks {
                what: format!("callback {} in {}", short(&method), self.context()),
                limit: self.max_callbacks,
            });
        }
        self.callbacks += 1;
        let raw = lua::take_field(&mut data, "Args");
        let args_not_array = match &raw {
            None | Some(Value::Array(_)) => None,
            Some(other) => {
                self.quirks.insert(Quirk::ArgsNotArray);
                Some(lua::lua_type(other))
            }
        };
        let args = match raw {
            Some(Value::Array(a)) => a,
            other => lua::unpack_args(other.as_ref()),
        };
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
        let event_id = self.event_id.clone().unwrap_or_default();
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
