//! The Rust reference plugin server (both protocols). Filled in by the reference-server work.

use std::path::PathBuf;

use crate::Protocol;

/// How to run the reference server.
#[derive(Debug, Clone)]
pub struct ReferenceOptions {
    pub protocol: Protocol,
    pub socket: PathBuf,
    /// Plugin listed first in the dump (Kong 3.9 registers only the first).
    pub plugin: String,
}

/// The dump the reference server prints for `--dump`.
pub fn dump_json(protocol: Protocol, first_plugin: &str) -> Result<String, String> {
    let _ = (protocol, first_plugin);
    todo!()
}

/// Serves until SIGTERM/SIGINT.
pub async fn serve(opts: ReferenceOptions) -> std::io::Result<()> {
    let _ = opts;
    todo!()
}
