//! The query command and its JSON dump (spec §2).

use std::time::Duration;

use crate::Protocol;

/// One plugin as a dump describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub priority: i64,
    pub version: String,
    pub phases: Vec<String>,
    pub schema: serde_json::Value,
}

/// The dump's top-level shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpShape {
    /// `[ {...}, ... ]` (Python, JS).
    Array,
    /// `{"Protocol": ..., "Plugins": [...]}` (Go).
    Object,
}

/// A validated dump.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dump {
    pub shape: DumpShape,
    /// The protocol Kong selects (`MsgPack:1` when the dump names none).
    pub protocol: Protocol,
    /// Whether the dump named its protocol.
    pub protocol_explicit: bool,
    /// Every plugin listed; Kong 3.9 uses only the first (see [`Dump::plugin`]).
    pub plugins: Vec<PluginInfo>,
    /// Things Kong would accept but a user should know (extra plugins ignored, unknown phases...).
    pub warnings: Vec<String>,
}

impl Dump {
    /// The plugin Kong 3.9 registers: the first entry.
    pub fn plugin(&self) -> &PluginInfo {
        &self.plugins[0]
    }
}

/// Why a dump was rejected. Messages say what Kong expected and what came instead.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("query command `{cmd}` could not be run: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("query command `{cmd}` printed nothing within {timeout:?} and was killed")]
    Timeout { cmd: String, timeout: Duration },
    #[error("failed decoding plugin info: stdout is not one JSON document ({reason}); stdout began with: {head:?}. Make the query command print only the JSON dump on stdout (logs belong on stderr)")]
    NotJson { reason: String, head: String },
    #[error("not a plugin info table: {0}")]
    Shape(String),
    #[error("invalid plugin info: {0}")]
    Invalid(String),
}

/// Parses and validates a dump (all of stdout).
pub fn parse(stdout: &[u8]) -> Result<Dump, DumpError> {
    let _ = stdout;
    todo!()
}

/// The result of running a query command.
#[derive(Debug)]
pub struct QueryOutput {
    pub dump: Dump,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub elapsed: Duration,
}

/// Runs `cmd` through `/bin/sh -c` (stdin closed), reads all of stdout within `timeout`, parses.
pub async fn query(cmd: &str, timeout: Duration) -> Result<QueryOutput, DumpError> {
    let _ = (cmd, timeout);
    todo!()
}
