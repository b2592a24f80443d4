//! `mock-kong reference-server` (hidden): the built-in Rust reference plugin server.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use super::{setup, Failure, ProtocolArg};
use crate::Protocol;

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[arg(long, value_enum, default_value = "msgpack")]
    pub protocol: ProtocolArg,
    /// Socket to listen on.
    #[arg(long, required_unless_present = "dump")]
    pub socket: Option<PathBuf>,
    /// Plugin listed first in the dump.
    #[arg(long, default_value = "hello")]
    pub plugin: String,
    /// Print the dump and exit.
    #[arg(long)]
    pub dump: bool,
}

pub(crate) async fn run(a: ReferenceArgs) -> Result<i32, Failure> {
    let protocol: Protocol = a.protocol.into();
    if a.dump {
        let text =
            crate::reference::dump_json(protocol, &a.plugin).map_err(|e| setup(anyhow!(e)))?;
        println!("{text}");
        return Ok(0);
    }
    let socket = a
        .socket
        .ok_or_else(|| setup(anyhow!("--socket is required")))?;
    crate::reference::serve(crate::reference::ReferenceOptions {
        protocol,
        socket,
        plugin: a.plugin,
    })
    .await
    .map_err(|e| Failure {
        code: 1,
        error: e.into(),
    })?;
    Ok(0)
}
