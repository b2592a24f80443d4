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
    /// Misbehave on purpose (repeatable): proves that each conformance check can fail. See
    /// `mock_kong::reference::faults` for the names.
    #[arg(long = "fault", value_name = "NAME")]
    pub faults: Vec<String>,
    /// Answer in a legal but unusual way (repeatable): the conformance suite must pass on each.
    /// See `mock_kong::reference::variations` for the names.
    #[arg(long = "variation", value_name = "NAME")]
    pub variations: Vec<String>,
}

pub(crate) async fn run(a: ReferenceArgs) -> Result<i32, Failure> {
    use crate::reference::Fault;
    let protocol: Protocol = a.protocol.into();
    let variations =
        crate::reference::Variations::parse(&a.variations).map_err(|e| setup(anyhow!(e)))?;
    let faults = crate::reference::Faults::parse(&a.faults)
        .map_err(|e| setup(anyhow!(e)))?
        .with_variations(variations);
    if faults.has(Fault::IgnoreSigterm) {
        // Overrides every SIGTERM handler of the process (the CLI's own included).
        // SAFETY: signal(2) with SIG_IGN installs no Rust code as a handler.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if a.dump {
        if faults.has(Fault::DumpHangs) {
            std::future::pending::<()>().await;
        }
        if faults.has(Fault::DumpReadsStdin) {
            use std::io::Read;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        let text = crate::reference::dump_json_with(protocol, &a.plugin, &faults)
            .map_err(|e| setup(anyhow!(e)))?;
        if faults.has(Fault::DumpLogLine) {
            crate::outln!("reference server: loading plugins")?;
        }
        crate::outln!("{text}")?;
        return Ok(0);
    }
    let socket = a
        .socket
        .ok_or_else(|| setup(anyhow!("--socket is required")))?;
    crate::reference::serve(crate::reference::ReferenceOptions {
        protocol,
        socket,
        plugin: a.plugin,
        faults,
    })
    .await
    .map_err(Failure::server)?;
    Ok(0)
}
