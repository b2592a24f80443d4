//! [`HostError`]: everything that can go wrong between the host and a plugin server, from the
//! socket (connect, read, write, timeouts) to what the drivers reject (undecodable or misshapen
//! messages, exceeded limits) and a server's error answer.

use std::path::PathBuf;
use std::time::Duration;

use crate::Protocol;

/// What went wrong between the host and the server. Messages name the operation and the
/// message involved, what was expected and what came instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    #[error(
        "cannot connect to {socket}: {reason}. Is the plugin server running and listening there?"
    )]
    Connect { socket: PathBuf, reason: String },
    #[error("connect to {socket} did not complete within {after:?}")]
    ConnectTimeout { socket: PathBuf, after: Duration },
    #[error("writing {what} failed: {reason}")]
    Write { what: String, reason: String },
    #[error("writing {what} did not complete within {after:?} (the server is not reading)")]
    WriteTimeout { what: String, after: Duration },
    #[error("no answer after {after:?} while {what}")]
    ReadTimeout { what: String, after: Duration },
    #[error("the server closed the connection while {what} (closed)")]
    Closed { what: String },
    #[error("reading {what} failed: {reason}")]
    Read { what: String, reason: String },
    #[error("undecodable {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error("unexpected {what}: {detail}")]
    Shape { what: String, detail: String },
    #[error(
        "{what}: not complete within the overall deadline of {after:?}, although bytes kept \
         arriving within each read timeout (a server trickling its answer); raise the deadline \
         (HostOptions::call_deadline) if the server is legitimately this slow"
    )]
    Deadline { what: String, after: Duration },
    #[error(
        "{what}: more than {limit} notifications before the response (Kong knows only \
         `serverPid`, once per connection); the server floods notifications"
    )]
    TooManyNotifications { what: String, limit: usize },
    #[error(
        "{what}: more than {limit} PDK callbacks in one event; the plugin loops on PDK calls \
         (raise HostOptions::max_callbacks if it legitimately makes that many)"
    )]
    TooManyCallbacks { what: String, limit: usize },
    #[error(
        "{what}: the server sent more than {limit} bytes in one event or call; it is flooding \
         the host (raise HostOptions::max_event_bytes if that much is legitimate)"
    )]
    TooManyBytes { what: String, limit: u64 },
    #[error("{method} failed on the server: {message}")]
    Server { method: String, message: String },
    #[error(
        "event aborted after {retries} retries on \"no plugin instance\"/closed connection: {last}"
    )]
    RetriesExhausted { retries: u32, last: Box<HostError> },
}

impl HostError {
    /// A short stable name of the kind of failure, for error tables (`read_timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::Connect { .. } => "connect",
            HostError::ConnectTimeout { .. } => "connect_timeout",
            HostError::Write { .. } => "write",
            HostError::WriteTimeout { .. } => "write_timeout",
            HostError::ReadTimeout { .. } => "read_timeout",
            HostError::Closed { .. } => "closed",
            HostError::Read { .. } => "read",
            HostError::Decode { .. } => "decode",
            HostError::Shape { .. } => "shape",
            HostError::Deadline { .. } => "deadline",
            HostError::TooManyNotifications { .. } => "too_many_notifications",
            HostError::TooManyCallbacks { .. } => "too_many_callbacks",
            HostError::TooManyBytes { .. } => "too_many_bytes",
            HostError::Server { .. } => "server_error",
            HostError::RetriesExhausted { .. } => "retries_exhausted",
        }
    }

    /// Names where the error happened (`"event access (EventId 3)"`), appended to the message
    /// part that says what was being done. Connect errors name the socket and stay as they are.
    pub fn in_context(mut self, ctx: &str) -> HostError {
        if let Some(what) = self.what_mut() {
            *what = format!("{what} in {ctx}");
        }
        self
    }

    /// The part of the message that says what was being done (`None` for errors that name the
    /// socket or wrap another error).
    fn what_mut(&mut self) -> Option<&mut String> {
        use HostError as E;
        match self {
            E::Write { what, .. }
            | E::WriteTimeout { what, .. }
            | E::ReadTimeout { what, .. }
            | E::Closed { what }
            | E::Read { what, .. }
            | E::Decode { what, .. }
            | E::Shape { what, .. }
            | E::Deadline { what, .. }
            | E::TooManyNotifications { what, .. }
            | E::TooManyCallbacks { what, .. }
            | E::TooManyBytes { what, .. }
            | E::Server { method: what, .. } => Some(what),
            E::Connect { .. } | E::ConnectTimeout { .. } | E::RetriesExhausted { .. } => None,
        }
    }

    /// Whether Kong would reset its instances and retry the event (docs/protocol.md §4.6, §5.2): a MsgPack
    /// error containing "no plugin instance", or (ProtoBuf) "closed".
    pub fn triggers_reset(&self, protocol: Protocol) -> bool {
        match self {
            HostError::Server { message, .. } => {
                message.to_lowercase().contains("no plugin instance")
            }
            HostError::Closed { .. } => protocol == Protocol::ProtoBuf,
            _ => false,
        }
    }
}
