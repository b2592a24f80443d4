//! # mock-kong-codec
//!
//! The wire of Kong's external plugin protocols, without I/O: this crate depends on no async
//! runtime and opens no socket, so everything in it is fed bytes or values and returns values or
//! bytes to send. `mock-kong` re-exports each module (`mock_kong::msgpack`, ...).
//!
//! * [`value`]: the dynamic [`Value`] both protocols and the PDK speak (a Lua value, as it
//!   appears on the wire).
//! * [`lua`]: how Kong's Lua sees a value: type names, tables, `tostring`, lua-cjson.
//! * [`msgpack`]: the `MsgPack:1` codec: Kong-exact MessagePack encoding, a tolerant decoder, a
//!   streaming frame decoder and the MessagePack-RPC message shapes.
//! * [`protobuf`]: the `ProtoBuf:1` codec: hand-written prost types for `RpcCall`/`RpcReturn` and
//!   every PDK message, little-endian u32 framing, and the PDK method table that converts
//!   between protobuf messages and [`Value`] arguments/results.
//!
//! The protocol this crate follows is described in the repository's `docs/protocol.md`, cited
//! as "docs/protocol.md §N".

pub mod event;
pub mod lua;
pub mod msgpack;
pub mod protobuf;
pub mod value;

pub use value::Value;

/// The two wire protocols a dump may name (docs/protocol.md §2, §9: no other identifier was ever accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// `"MsgPack:1"`, the default when a dump names no protocol.
    #[serde(rename = "MsgPack:1")]
    MsgPack,
    /// `"ProtoBuf:1"`.
    #[serde(rename = "ProtoBuf:1")]
    ProtoBuf,
}

impl Protocol {
    /// The identifier as it appears in a dump.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::MsgPack => "MsgPack:1",
            Protocol::ProtoBuf => "ProtoBuf:1",
        }
    }

    /// Parses a dump's `Protocol` value. Only the two exact identifiers are accepted.
    pub fn from_dump(s: &str) -> Option<Protocol> {
        match s {
            "MsgPack:1" => Some(Protocol::MsgPack),
            "ProtoBuf:1" => Some(Protocol::ProtoBuf),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
