//! The `MsgPack:1` codec (docs/protocol.md §4). Pure: no I/O in this module.
//!
//! * [`encode`]: a [`Value`] as Kong's Lua encoder (lua-MessagePack 0.5.x, docs/protocol.md §4.2) writes it.
//! * [`decode`]: one MessagePack object from a buffer, accepting every valid width.
//! * [`StreamDecoder`]: frames split at any byte, several frames in one read.
//! * [`RpcMessage`]: the MessagePack-RPC request/response/notification arrays (docs/protocol.md §4.1);
//!   [`encode_request`] writes a request without building the envelope as a [`Value`].
//!
//! [`Value`]: crate::Value

mod decode;
mod encode;
mod rpc;
mod stream;

pub use decode::{decode, DecodeError, MAX_DEPTH};
pub use encode::{
    encode, encode_array_header, encode_int, encode_map_header, encode_str, encode_to_vec,
    encode_uint,
};
pub use rpc::{encode_request, encode_response, encode_step_request, RpcMessage, ShapeError};
pub use stream::StreamDecoder;

#[cfg(test)]
pub(crate) mod proptests;
