//! The `ProtoBuf:1` codec (spec §5). Pure: no I/O in this module.
//!
//! * [`messages`]: prost types written by hand from the field tables of spec §5.2 and §5.4.
//! * [`frame`]: little-endian u32 length framing (spec §5.1), including the meaningful empty frame.
//! * [`pdk_table`]: the PDK service table (spec §5.4): wire name → input/output message, and the
//!   conversions between those messages and [`crate::Value`] positional arguments / results, in
//!   both directions (host side "unwrap"/"wrap", server side "encode args"/"decode result").

pub mod frame;
pub mod messages;
pub mod pdk_table;

pub use frame::{encode_frame, FrameDecoder, FrameError};
pub use pdk_table::{lookup, MethodSpec, PbError, Shape};
