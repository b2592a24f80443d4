//! Kong's host side of one event, per protocol, as a state machine without I/O.
//!
//! Each driver is fed what the server sent (a decoded MessagePack-RPC answer, a ProtoBuf frame)
//! and says what happens next: send this, ask the PDK about this callback, or the event is over.
//! It never reads a socket or a clock, so the same code serves mock-kong's host
//! (`mock_kong::host`), the conformance client (`mock_kong::conform`) and any test that feeds it
//! bytes; and its rules are tested once, here, with bytes (the h2 / quinn-proto / rustls way of
//! structuring a protocol).
//!
//! * [`mp`]: `MsgPack:1`: [`mp::MpEvent`] (HandleEvent, then one Step per callback) and
//!   [`mp::CallReader`] (one RPC call's answer: notifications on the way, msgid check, trailing
//!   bytes).
//! * [`pb`]: `ProtoBuf:1`: [`pb::PbEvent`] (the frame loop on one connection: method name,
//!   arguments, reply; an empty frame and the `RpcReturn` end it).
//!
//! What the drivers accept is what Kong's host accepts (docs/protocol.md §4.4, §5.3): a Step answer's
//! `EventId` is not read (Kong takes it from the HandleEvent answer), a callback's `Args` that is
//! not a table is its single argument, and so on. Where mock-kong goes beyond Kong it is to stay
//! bounded ([`Limits`]): Kong leaves notifications, callbacks and bytes per event unbounded.

pub mod mp;
pub mod pb;

mod error;

pub use error::HostError;

use crate::Value;

/// The default of [`Limits::max_frame`]: the largest message accepted from a server (64 MiB). A
/// declared length above it fails at once, before anything is buffered, so reading never holds
/// more than about this much per connection.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// The default of [`Limits::max_notifications`]. Kong's servers send at most one (`serverPid`)
/// per connection; a thousand in one call is a flood.
pub const DEFAULT_MAX_NOTIFICATIONS: usize = 1000;

/// The default of [`Limits::max_callbacks`]: PDK calls in one event.
pub const DEFAULT_MAX_CALLBACKS: usize = 100_000;

/// The default of [`Limits::max_event_bytes`]: bytes read from the server in one event or call
/// (4 frames at the default frame limit).
pub const DEFAULT_MAX_EVENT_BYTES: u64 = 4 * DEFAULT_MAX_FRAME as u64;

/// mock-kong's bounds on what a server can make the host hold or do (Kong has none of these):
/// the one set of caps of the host and the conformance client. Each is reported by its own
/// [`HostError`] variant naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted from the server.
    pub max_frame: usize,
    /// MsgPack: notifications accepted while waiting for one response.
    pub max_notifications: usize,
    /// PDK callbacks accepted in one event.
    pub max_callbacks: usize,
    /// Bytes read from the server in one event (or one instance call).
    pub max_event_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_notifications: DEFAULT_MAX_NOTIFICATIONS,
            max_callbacks: DEFAULT_MAX_CALLBACKS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// The bytes one event (or call) may still read: [`Limits::max_event_bytes`] counted down.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { left: limit, limit }
    }

    /// Accounts for `n` bytes just read; [`HostError::TooManyBytes`] when they exceed what is
    /// left. `what` names the read for the error.
    pub fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<(), HostError> {
        let n = n as u64;
        if n > self.left {
            return Err(HostError::TooManyBytes {
                what: what(),
                limit: self.limit,
            });
        }
        self.left -= n;
        Ok(())
    }
}

/// A legal but unusual choice of a server, noticed by a driver: Kong's host accepts it (so the
/// drivers do), and the conformance suite reports it at `info` level with [`Quirk::reason`],
/// never as a failure. The official kits never make these choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quirk {
    /// MsgPack: a callback's `Args` is not an array.
    ArgsNotArray,
    /// MsgPack: the HandleEvent answer has no integer `EventId`.
    EventIdNotInteger,
    /// MsgPack: a Step answer without `EventId`.
    StepAnswerWithoutEventId,
    /// MsgPack: an answer whose result is nil or `false` (or whose error is `false`).
    SilentEnd,
    /// MsgPack: a response or notification that is not an array of exactly 4 (3) elements.
    EnvelopeShape,
    /// MsgPack: a notification other than `serverPid`.
    UnknownNotification,
    /// MsgPack: `bin` where Kong's kits send `str` (a method name, `"ret"`, a key).
    BinString,
    /// MsgPack: a number where Kong's kits send a string or an integer (a numeric method
    /// name, a float msgid or message type).
    OddNumber,
}

impl Quirk {
    /// What the server did, and why Kong accepts it.
    pub fn reason(self) -> &'static str {
        match self {
            Quirk::ArgsNotArray => {
                "a callback's Args is not an array: Kong unpacks a table by its integer keys and \
                 passes anything else as the single argument (a one-table argument sent bare \
                 would be unpacked, so the kits send an array)"
            }
            Quirk::EventIdNotInteger => {
                "the HandleEvent answer's EventId is not an integer (or is missing): Kong \
                 re-sends whatever it got on every Step"
            }
            Quirk::StepAnswerWithoutEventId => {
                "a Step answer has no EventId: Kong reads the EventId of the HandleEvent answer \
                 only"
            }
            Quirk::SilentEnd => {
                "an answer with a nil or false result (or a false error) instead of Data \
                 \"ret\": Kong ends the event silently, as for \"ret\""
            }
            Quirk::EnvelopeShape => {
                "a response is not a 4-element array (or a notification not a 3-element one): \
                 Kong reads elements 1 to 4 of any table and ignores the rest"
            }
            Quirk::UnknownNotification => {
                "a notification other than serverPid: Kong ignores labels it does not know"
            }
            Quirk::BinString => {
                "bin where the kits send str: Kong decodes both to the same Lua string"
            }
            Quirk::OddNumber => {
                "a number where the kits send a string or an integer (a numeric method name, a \
                 float msgid): Lua has one number type and coerces numbers to strings"
            }
        }
    }
}

impl Quirk {
    /// Every quirk, in order.
    pub const ALL: [Quirk; 8] = [
        Quirk::ArgsNotArray,
        Quirk::EventIdNotInteger,
        Quirk::StepAnswerWithoutEventId,
        Quirk::SilentEnd,
        Quirk::EnvelopeShape,
        Quirk::UnknownNotification,
        Quirk::BinString,
        Quirk::OddNumber,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Quirk`]s (no allocation: the drivers note them on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks(u16);

impl Quirks {
    pub fn insert(&mut self, q: Quirk) {
        self.0 |= q.bit();
    }
    pub fn contains(self, q: Quirk) -> bool {
        self.0 & q.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Adds every quirk of `other`.
    pub fn extend(&mut self, other: Quirks) {
        self.0 |= other.0;
    }
    /// The quirks in the set, in [`Quirk::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Quirk> {
        Quirk::ALL.into_iter().filter(move |q| self.contains(*q))
    }
}

/// How the host answers one callback: what the PDK did, in the terms both protocols need.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The PDK function returned; its first return value (`Nil` for none).
    Value(Value),
    /// `nil, err`: MsgPack `plugin.StepError` with the message when the emulated Kong is 2.x
    /// ([`mp::MpEvent::new`]'s `step_error`), else nil; ProtoBuf has no channel for it: nil.
    SoftError(String),
    /// No PDK function of that name. MsgPack: Kong logs "could not find pdk method" and answers a
    /// Step without `Data`. ProtoBuf: the driver only asks about methods of Kong's table, so
    /// this means the emulated PDK lacks one Kong has: the event is raised.
    NotFound,
    /// `kong.response.exit` and friends: nothing is sent, the event is over (docs/protocol.md §4.4).
    Terminal,
    /// The PDK function raised a Lua error: nothing is sent, Kong aborts the handler.
    Raise(String),
    /// MsgPack only: this value with this Step method instead of Kong's choice (conformance
    /// checks of the Step variants). ProtoBuf sends the value as for [`Reply::Value`].
    Variant(&'static str, Value),
}

/// One PDK callback as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub method: String,
    /// The positional arguments Kong passes to the PDK function.
    pub args: Vec<Value>,
    /// MsgPack: the Lua type of `Args` when it was not an array (Kong unpacks a table and passes
    /// anything else as the single argument); `None` for an array or no `Args`.
    pub args_not_array: Option<&'static str>,
}

/// How the host answered a callback (for transcripts; the value sent travels with the call or
/// frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// MsgPack: the Step method; ProtoBuf: the output message type.
    pub kind: String,
    /// "could not find pdk method: ...", "soft error: ..."
    pub note: Option<String>,
}

/// How an event ended, as the drivers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The server said it was done (`Data: "ret"`; an empty frame and the `RpcReturn`).
    Done,
    /// The last callback was terminal ([`Reply::Terminal`]); nothing more is read.
    Exit,
    /// The callback raised (or, ProtoBuf, its result could not be encoded, as `pb.encode` raises
    /// in Kong): nothing is sent, Kong aborts the handler.
    Raised { method: String, error: String },
    /// ProtoBuf: the server called a method that is not in Kong's PDK table (Kong: HTTP 500).
    MethodNotFound(String),
    /// MsgPack: an error response to HandleEvent or a Step (`method` is the call answered).
    ServerError { method: String, message: String },
}

/// How much of a server-sent value a message quotes: a flood of large values must not turn
/// into a flood of large strings kept in a report.
pub const QUOTE_CHARS: usize = 120;

/// `v` rendered with `Debug`, cut at [`QUOTE_CHARS`] characters.
pub fn short(v: &(impl std::fmt::Debug + ?Sized)) -> String {
    let full = format!("{v:?}");
    match full.char_indices().nth(QUOTE_CHARS) {
        Some((at, _)) => format!("{}… ({} chars)", &full[..at], full.chars().count()),
        None => full,
    }
}

/// A server-chosen text (a method name of up to the frame limit) cut at [`QUOTE_CHARS`]
/// characters, saying how long it was.
pub fn short_text(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
        None => s.to_owned(),
    }
}

/// An error value of a MessagePack response as text (a Lua string: `str` or `bin` alike).
pub fn error_text(e: &Value) -> String {
    match e.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => format!("{e:?}"),
    }
}
