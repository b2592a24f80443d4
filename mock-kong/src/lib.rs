//! # mock-kong
//!
//! A faithful stand-in for Kong Gateway's host side. It reads Kong's `pluginserver_*` settings,
//! runs a plugin server's query command and validates the dump, starts and supervises the server
//! process, and drives it over its real Unix socket in either wire protocol (`MsgPack:1` or
//! `ProtoBuf:1`), answering every PDK callback from an emulated Kong request.
//!
//! The specification this crate follows is `shared/reference/kong-host-protocol.md` (cited as
//! "spec §N" throughout).
//!
//! # Layout
//!
//! * [`value`]: the dynamic [`Value`] both protocols and the PDK speak (a Lua value, as it appears
//!   on the wire).
//! * [`msgpack`]: the `MsgPack:1` codec: Kong-exact MessagePack encoding, a tolerant decoder,
//!   a streaming frame decoder and the MessagePack-RPC message shapes. Pure, no I/O.
//! * [`protobuf`]: the `ProtoBuf:1` codec: hand-written prost types for `RpcCall`/`RpcReturn` and
//!   every PDK message, little-endian u32 framing, and the PDK method table that converts between
//!   protobuf messages and [`Value`] arguments/results. Pure, no I/O.
//! * [`config`]: plugin-server definitions from a `kong.conf` (+ `KONG_*` environment) or flags.
//! * [`dump`]: running the query command and validating its JSON dump.
//! * [`process`]: spawning, logging, restarting and stopping plugin-server processes.
//! * [`pdk`]: the [`pdk::Pdk`] trait the host loop asks to answer callbacks, and the emulated
//!   Kong request ([`pdk::KongRequest`]) behind it.
//! * [`host`]: Kong's host loop: connection pools, instances, events and the callback loop, per
//!   protocol, with timeouts on every socket operation.
//! * [`reference`]: the Rust reference plugin server (both protocols), the default target.
//! * [`target`]: which server to drive (reference, kong.conf entry, commands, peer) and where its
//!   socket lives.
//! * [`scenario`]: scripted scenarios (TOML) played through a server, with expectations.
//! * [`session`]: dump → start → wait for the socket → client; plays a request through phases.
//! * [`conform`]: the conformance suite (`mock-kong conform`): named checks, each proven to
//!   fail on a reference server with the matching fault.
//! * [`cli`]: the `mock-kong` command line (a thin shell over the above).

pub mod cli;
pub mod config;
pub mod conform;
pub mod dump;
pub mod host;
pub mod msgpack;
pub mod pdk;
pub mod process;
pub mod protobuf;
pub mod reference;
pub mod scenario;
pub mod session;
pub mod target;
pub mod value;

#[cfg(test)]
mod proptests;

pub use value::Value;

/// The two wire protocols a dump may name (spec §2, §9: no other identifier was ever accepted).
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
