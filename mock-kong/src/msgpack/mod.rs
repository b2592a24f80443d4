//! The `MsgPack:1` codec (spec §4). Pure: no I/O in this module.
//!
//! * [`encode`]: a [`Value`] as Kong's Lua encoder (lua-MessagePack 0.5.x, spec §4.2) writes it.
//! * [`decode`]: one MessagePack object from a buffer, accepting every valid width.
//! * [`StreamDecoder`]: frames split at any byte, several frames in one read.
//! * [`RpcMessage`]: the MessagePack-RPC request/response/notification arrays (spec §4.1).

mod decode;
mod encode;
mod rpc;
mod stream;

pub use decode::{decode, DecodeError};
pub use encode::{encode, encode_to_vec};
pub use rpc::{RpcMessage, ShapeError};
pub use stream::StreamDecoder;

#[allow(unused_imports)]
use crate::Value;
