//! # mock-kong
//!
//! A faithful stand-in for Kong Gateway's host side. It reads Kong's `pluginserver_*` settings,
//! runs a plugin server's query command and validates the dump, starts and supervises the server
//! process, and drives it over its real Unix socket in either wire protocol (`MsgPack:1` or
//! `ProtoBuf:1`), answering every PDK callback from an emulated Kong request.
//!
//! The protocol this crate follows is described in `docs/protocol.md` (cited as
//! "docs/protocol.md §N" throughout).
//!
//! # Layout
//!
//! * [`value`], [`lua`], [`msgpack`], [`protobuf`]: re-exported from the `mock-kong-codec` crate (no I/O,
//!   no async runtime): the dynamic [`Value`] both protocols and the PDK speak, how Kong's Lua
//!   sees it, and the two codecs.
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
//! * [`proxy`]: `mock-kong proxy`, a real HTTP data plane running the plugins' phases for
//!   every request, in front of an upstream.
//! * [`session`]: dump → start → wait for the socket → client; plays a request through phases.
//! * [`conform`]: the conformance suite (`mock-kong conform`): named checks, each proven to
//!   fail on a reference server with the matching fault.
//! * [`cli`]: the `mock-kong` command line (a thin shell over the above); [`edge`]: what both
//!   binaries share at their edge (exit codes, signals, output); [`xml`]: the one XML writer.

pub mod cli;
pub mod config;
pub mod conform;
pub mod dump;
pub mod edge;
pub mod host;
pub mod pdk;
pub mod plugin_config;
pub mod process;
pub mod procfs;
pub mod proxy;
pub mod reference;
pub mod scenario;
pub mod session;
pub mod target;
pub mod xml;

#[cfg(test)]
mod proptests;

// The codecs live in their own crate, which has no async runtime or socket among its
// dependencies ("codecs are pure" is a fact of the build); their paths stay `mock_kong::msgpack`,
// `mock_kong::protobuf` and `mock_kong::value`.
pub use mock_kong_codec::{lua, msgpack, protobuf, value, Protocol, Value};
