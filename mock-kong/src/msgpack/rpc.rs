use crate::Value;

/// A MessagePack-RPC message (spec §4.1).
#[derive(Debug, Clone, PartialEq)]
pub enum RpcMessage {
    /// `[0, msgid, method, params]` (host → server); `params` is always an array.
    Request { msgid: u64, method: String, params: Vec<Value> },
    /// `[1, msgid, error, result]` (server → host).
    Response { msgid: u64, error: Value, result: Value },
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

impl RpcMessage {
    /// The message as a [`Value`] array.
    pub fn to_value(&self) -> Value {
        todo!()
    }

    /// Appends the Kong-exact encoding of the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        super::encode(&self.to_value(), out)
    }

    /// Recognises a decoded value as an RPC message.
    pub fn from_value(value: Value) -> Result<RpcMessage, ShapeError> {
        let _ = value;
        todo!()
    }
}
