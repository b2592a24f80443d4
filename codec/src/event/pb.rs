//! `ProtoBuf:1` (docs/protocol.md §5): one event's conversation on one connection ([`PbEvent`]) and the
//! calls around it, without I/O.
//!
//! ```text
//! host → RpcCall{sequence, cmd_handle_event}
//! srv  → frame("kong.request.get_header") frame(String{"host"})     a callback: name, arguments
//! host → frame(String{"example.com"})                               the reply
//! srv  → frame("")                                                  the handler is done
//! srv  → frame(RpcReturn{sequence})
//! ```

use prost::Message;

use super::{Callback, End, HostError, Reply, Sent};
use crate::protobuf::encode_frame;
use crate::protobuf::messages::{
    rpc_call, CmdCloseInstance, CmdHandleEvent, CmdStartInstance, RpcCall, RpcReturn,
};
use crate::protobuf::pdk_table::{self, MethodSpec};
use crate::Value;

/// `RpcCall{sequence, cmd_start_instance{name, config}}`.
pub fn start_instance_call(sequence: i64, name: &str, config_json: &str) -> RpcCall {
    RpcCall {
        sequence,
        call: Some(rpc_call::Call::CmdStartInstance(CmdStartInstance {
            name: name.to_owned(),
            config: config_json.as_bytes().to_vec(),
        })),
    }
}

/// `RpcCall{sequence, cmd_close_instance{instance_id}}` (ids beyond `i32` are clamped: Kong's
/// field is an int32).
pub fn close_instance_call(sequence: i64, id: i64) -> RpcCall {
    RpcCall {
        sequence,
        call: Some(rpc_call::Call::CmdCloseInstance(CmdCloseInstance {
            instance_id: clamp_id(id),
        })),
    }
}

/// `RpcCall{sequence, cmd_handle_event{instance_id, event_name}}`.
pub fn handle_event_call(sequence: i64, instance_id: i64, phase: &str) -> RpcCall {
    RpcCall {
        sequence,
        call: Some(rpc_call::Call::CmdHandleEvent(CmdHandleEvent {
            instance_id: clamp_id(instance_id),
            event_name: phase.to_owned(),
        })),
    }
}

/// Kong's instance ids come from an `int32` field (`instance_status.instance_id`), so every id
/// the host sends fits; a wider one is cut as a C cast would.
fn clamp_id(id: i64) -> i32 {
    id as i32
}

/// Appends `call` as one frame to `out`.
pub fn encode_call(call: &RpcCall, out: &mut Vec<u8>) {
    crate::protobuf::encode_message_frame(call, out);
}

/// Decodes the `RpcReturn` of the call `name` and checks that it echoes `sequence` (Kong asserts
/// they are equal, docs/protocol.md §5.2).
pub fn decode_return(frame: &[u8], name: &str, sequence: i64) -> Result<RpcReturn, HostError> {
    let ret = RpcReturn::decode(frame).map_err(|e| HostError::Decode {
        what: format!("RpcReturn of {name} (sequence {sequence})"),
        detail: e.to_string(),
    })?;
    if ret.sequence != sequence {
        return Err(HostError::Shape {
            what: format!("RpcReturn of {name}"),
            detail: format!("sequence mismatch: sent {sequence}, got {}", ret.sequence),
        });
    }
    Ok(ret)
}

/// What the event driver says after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Read the next frame.
    Frame,
    /// The server asks for a PDK call: answer it with [`PbEvent::reply`].
    Callback(Callback),
    /// The event is over.
    End(End),
}

/// What the event driver says after a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Replied {
    /// The reply frame was appended to the output buffer; read the next frame. The value sent is
    /// returned for transcripts.
    Sent(Value, Sent),
    /// The event is over without a reply.
    End(End),
}

#[derive(Debug)]
enum State {
    /// Waiting for a method name (or the empty frame).
    Name,
    /// Waiting for the arguments of a method (its name frame, as sent).
    Args(Vec<u8>),
    /// A callback waits for its reply (its name travels in the [`Callback`]).
    Reply(&'static MethodSpec),
    /// The empty frame came: waiting for the `RpcReturn`.
    Return,
    Over,
}

/// One `ProtoBuf:1` event on one connection, from the `cmd_handle_event` call to its
/// `RpcReturn` (docs/protocol.md §5.3, Kong's `pb_rpc.lua`).
///
/// Rules, as Kong's host: a callback is a method-name frame and an arguments frame; a name Kong's
/// PDK table lacks ends the event ([`End::MethodNotFound`]); the reply is the result wrapped for
/// the method's output type, and a result that cannot be wrapped raises (Kong's `pb.encode`
/// raises; [`End::Raised`]); a terminal or raised callback gets no reply; an empty name frame,
/// then the `RpcReturn` echoing the sequence, end the event.
#[derive(Debug)]
pub struct PbEvent<'a> {
    sequence: i64,
    instance_id: i64,
    phase: &'a str,
    state: State,
    callbacks: usize,
    max_callbacks: usize,
}

impl<'a> PbEvent<'a> {
    pub fn new(sequence: i64, instance_id: i64, phase: &'a str, max_callbacks: usize) -> Self {
        PbEvent {
            sequence,
            instance_id,
            phase,
            state: State::Name,
            callbacks: 0,
            max_callbacks,
        }
    }

    /// The `cmd_handle_event` call that starts the event.
    pub fn start(&self) -> RpcCall {
        handle_event_call(self.sequence, self.instance_id, self.phase)
    }

    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// `"event access (instance 3)"`, for error messages.
    pub fn context(&self) -> String {
        format!("event {} (instance {})", self.phase, self.instance_id)
    }

    /// What the next frame is awaited as, for error messages ("waiting for ...").
    pub fn awaiting(&self) -> String {
        match &self.state {
            State::Name => format!(
                "waiting for a PDK method name or the end-of-event frame (sequence {})",
                self.sequence
            ),
            State::Args(name) => format!(
                "waiting for the arguments of {}",
                pdk_table::method_label(name)
            ),
            State::Return => format!(
                "waiting for RpcReturn of cmd_handle_event (sequence {})",
                self.sequence
            ),
            State::Reply(..) | State::Over => "after the end of the event".into(),
        }
    }

    /// A rendering of `frame` as the state expects it, for `-v` transcripts.
    pub fn describe(&self, frame: &[u8]) -> String {
        match &self.state {
            State::Name if frame.is_empty() => "<empty frame: handler finished>".into(),
            State::Name => format!("method {}", pdk_table::method_label(frame)),
            State::Args(name) => describe_args(&String::from_utf8_lossy(name), frame),
            _ => match RpcReturn::decode(frame) {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("undecodable RpcReturn ({e})"),
            },
        }
    }

    /// The next frame from the server.
    pub fn on_frame(&mut self, frame: &[u8]) -> Result<Next, HostError> {
        match std::mem::replace(&mut self.state, State::Over) {
            State::Name if frame.is_empty() => {
                self.state = State::Return;
                Ok(Next::Frame)
            }
            State::Name => {
                if let Some(sequence) = self.premature_return(frame) {
                    // Kong reads it as a method name, then waits for arguments that never come
                    // (the server is done) until its 60 s read timeout, and answers HTTP 500:
                    // the outcome is known now, so it is said now, in these words.
                    return Err(HostError::Shape {
                        what: format!("frame in {}", self.context()),
                        detail: format!(
                            "the RpcReturn (sequence {sequence}) came without the empty end \
                             frame Kong waits for: Kong reads it as a PDK method name, waits \
                             for its arguments until its 60 s socket timeout and fails the \
                             request (HTTP 500); every event of this server hangs that way"
                        ),
                    });
                }
                if self.callbacks >= self.max_callbacks {
                    // The name as messages show it (an RpcReturn sent in its place is named).
                    return Err(HostError::TooManyCallbacks {
                        what: format!(
                            "callback {} in {}",
                            pdk_table::method_label(frame),
                            self.context()
                        ),
                        limit: self.max_callbacks,
                    });
                }
                self.state = State::Args(frame.to_vec());
                Ok(Next::Frame)
            }
            State::Args(name) => {
                // The name as text (no copy when it is UTF-8, as every PDK name is).
                let method = String::from_utf8(name)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                // Kong: `method "<x>" not found` → the event fails (HTTP 500 from 3.8, docs/protocol.md §5.3).
                let Some(spec) = pdk_table::lookup(&method) else {
                    return Ok(Next::End(End::MethodNotFound(method)));
                };
                let args = pdk_table::unwrap_args(spec, frame).map_err(|e| HostError::Decode {
                    what: format!("arguments of {method}"),
                    detail: e.to_string(),
                })?;
                self.callbacks += 1;
                self.state = State::Reply(spec);
                Ok(Next::Callback(Callback {
                    method,
                    args,
                    args_not_array: None,
                }))
            }
            State::Return => {
                decode_return(frame, "cmd_handle_event", self.sequence)?;
                Ok(Next::End(End::Done))
            }
            state @ (State::Reply(..) | State::Over) => {
                let detail = match &state {
                    State::Reply(spec) => {
                        format!("a frame before the reply to {} was sent", spec.name)
                    }
                    _ => "a frame after the end of the event".into(),
                };
                self.state = state;
                Err(HostError::Shape {
                    what: format!("frame in {}", self.context()),
                    detail,
                })
            }
        }
    }

    /// The sequence of `frame` when it is this event's `RpcReturn` sent where a method name (or
    /// the empty end frame) belongs: a frame that decodes as an `RpcReturn` echoing the event's
    /// sequence and is not the name of a PDK method.
    fn premature_return(&self, frame: &[u8]) -> Option<i64> {
        if frame.first() != Some(&0x08)
            || std::str::from_utf8(frame).is_ok_and(|m| pdk_table::lookup(m).is_some())
        {
            return None;
        }
        RpcReturn::decode(frame)
            .ok()
            .filter(|r| r.sequence == self.sequence)
            .map(|r| r.sequence)
    }

    /// Answers the pending callback `method` (the name in its [`Callback`]): appends the reply
    /// frame to `out`, or ends the event.
    pub fn reply(&mut self, method: &str, reply: Reply, out: &mut Vec<u8>) -> Replied {
        let method = || method.to_owned();
        let State::Reply(spec) = std::mem::replace(&mut self.state, State::Over) else {
            return Replied::End(End::Raised {
                method: method(),
                error: "a reply without a pending callback".into(),
            });
        };
        let answer = match reply {
            Reply::Value(v) | Reply::Variant(_, v) => v,
            // No soft-error channel over ProtoBuf (docs/protocol.md §5.3): the plugin sees nil.
            Reply::SoftError(_) => Value::Nil,
            Reply::NotFound => {
                return Replied::End(End::Raised {
                    error: format!("{} is not implemented by the emulated PDK", spec.name),
                    method: method(),
                })
            }
            // Kong never answers exit; the connection is closed at the end of the request.
            Reply::Terminal => return Replied::End(End::Exit),
            Reply::Raise(error) => {
                return Replied::End(End::Raised {
                    method: method(),
                    error,
                })
            }
        };
        match pdk_table::wrap_result(spec, &answer) {
            Ok(payload) => {
                encode_frame(&payload, out);
                self.state = State::Name;
                Replied::Sent(
                    answer,
                    Sent {
                        kind: format!("{:?}", spec.output),
                        note: None,
                    },
                )
            }
            // pb.encode raised in Kong (e.g. the pre-3.7 set_upstream bug, docs/protocol.md §5.3).
            Err(e) => Replied::End(End::Raised {
                method: method(),
                error: e.to_string(),
            }),
        }
    }
}

/// A readable rendering of an `RpcCall` for `-v` (the config as text, not as a byte list).
pub fn describe_call(msg: &RpcCall) -> String {
    let body = match &msg.call {
        Some(rpc_call::Call::CmdStartInstance(c)) => format!(
            "cmd_start_instance {{ name: {:?}, config: {} }}",
            c.name,
            String::from_utf8_lossy(&c.config)
        ),
        Some(rpc_call::Call::CmdCloseInstance(c)) => {
            format!("cmd_close_instance {{ instance_id: {} }}", c.instance_id)
        }
        Some(rpc_call::Call::CmdHandleEvent(c)) => format!(
            "cmd_handle_event {{ instance_id: {}, event_name: {:?} }}",
            c.instance_id, c.event_name
        ),
        other => format!("{other:?}"),
    };
    format!("RpcCall {{ sequence: {}, {body} }}", msg.sequence)
}

/// A readable rendering of an `RpcReturn` frame for `-v`.
pub fn describe_return(frame: &[u8]) -> String {
    match RpcReturn::decode(frame) {
        Ok(r) => format!("{r:?}"),
        Err(e) => format!("undecodable RpcReturn ({e})"),
    }
}

fn describe_args(method: &str, frame: &[u8]) -> String {
    match pdk_table::lookup(method).map(|spec| (spec, pdk_table::unwrap_args(spec, frame))) {
        Some((spec, Ok(args))) => format!("{:?} args {args:?}", spec.input),
        Some((_, Err(e))) => format!("undecodable args ({e})"),
        None => format!("{} byte(s) of args", frame.len()),
    }
}

#[cfg(test)]
mod tests;
