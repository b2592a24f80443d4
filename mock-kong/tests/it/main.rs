//! The single integration-test binary of the mock-kong crate (see ARCHITECTURE.md, "Testing").
//!
//! * `agree`: the host and the conformance client accept the same server answers.
//! * `reference`: the host against the reference server over real Unix sockets, both protocols.
//! * `faults`: the host against hand-made misbehaving servers (timeouts, half frames).
//! * `conform`: the conformance suite: every check proven on the reference server with and
//!   without its faults; the real peers against their expected-failures files.
//! * `cli`: the `mock-kong` binary: output, JSON, exit codes, signals and orphans.
//! * `peers`: the real Go / Python / JS plugin servers (installed by `scripts/install-peers.sh`).
//! * `proxy`: `mock-kong proxy`: HTTP requests through the proxy with every real peer, bad input.
//! * `scenarios`: `mock-kong run` and the scenario API over the reference server and the peers.
//! * `docs`: every protocol citation points to a section of docs/protocol.md.
//! * `newcomer`: a plugin the project has never seen, in Python and JavaScript, through every
//!   command with nothing but its start and query commands; and every bad input a newcomer
//!   makes (issue 13); `stamp_plugin` holds that plugin's sources (loadgen's tests share it).
//! * `child_guard`: a spawned `mock-kong` that a failing test cannot leave running, with its
//!   plugin servers (loadgen's tests share it).

mod agree;
mod child_guard;
mod cli;
mod conform;
mod docs;
mod faults;
mod newcomer;
mod peers;
mod proxy;
mod reference;
mod scenarios;
mod stamp_plugin;
mod util;
