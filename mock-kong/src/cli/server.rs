//! Options shared by every subcommand: which server, where its socket lives, timeouts; and the
//! `--json [FILE]` convention.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};

use crate::host::{PoolPolicy, Timeouts};
use crate::process::LogSink;
use crate::session::SessionOptions;
use crate::target::{self, Placement, TargetSpec};
use crate::Protocol;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Msgpack,
    Protobuf,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Msgpack => Protocol::MsgPack,
            ProtocolArg::Protobuf => Protocol::ProtoBuf,
        }
    }
}

/// Which plugin server to use. Default: the built-in reference server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Use the built-in Rust reference server (the default when no server is named).
    #[arg(long, conflicts_with_all = ["kong_conf", "start_cmd", "query_cmd", "peer"])]
    pub reference: bool,
    /// Wire protocol of the reference server.
    #[arg(long, value_enum, default_value = "msgpack")]
    pub protocol: ProtocolArg,
    /// Read pluginserver_* settings from this kong.conf (KONG_* environment variables apply).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["start_cmd", "query_cmd", "peer"])]
    pub kong_conf: Option<PathBuf>,
    /// With --kong-conf: which pluginserver; with --start-cmd: the pluginserver's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Command that starts the server (run through /bin/sh with `exec`, as Kong does).
    #[arg(long, value_name = "CMD", requires = "query_cmd")]
    pub start_cmd: Option<String>,
    /// Command that prints the server's JSON dump.
    #[arg(long, value_name = "CMD")]
    pub query_cmd: Option<String>,
    /// A peer from the peers registry (see peers.toml).
    #[arg(long, conflicts_with_all = ["start_cmd", "query_cmd"])]
    pub peer: Option<String>,
    /// The peers registry (default: peers.toml in this directory or a parent).
    #[arg(long, value_name = "FILE")]
    pub peers_file: Option<PathBuf>,
    /// Socket path (default: Kong's `<prefix>/<name>.socket`, prefix a private temp directory).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Prefix directory for sockets.
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Plugin to use (the reference server and peers list it first in their dump).
    #[arg(long, default_value = "hello")]
    pub plugin: String,
    /// Timeout of every connect, read and write, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Overall deadline of one exchange (a response, a PDK message), in seconds, however slowly
    /// the bytes trickle in (default: six times --timeout).
    #[arg(long, value_name = "SECS")]
    pub call_deadline: Option<f64>,
    /// Largest message accepted from the server, in bytes (default 64 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = crate::host::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Do not print the server's output lines.
    #[arg(long)]
    pub quiet_server: bool,
    /// MsgPack connection reuse: `lifo` as ngx_lua (most recently pooled first), or `rotate`,
    /// which moves consecutive calls of one event to different connections (spec §10.1).
    #[arg(long, value_enum, default_value = "lifo")]
    pub pool: PoolPolicy,
}

impl ServerArgs {
    pub fn spec(&self) -> anyhow::Result<TargetSpec> {
        if let Some(q) = &self.query_cmd {
            let name = self.name.clone().unwrap_or_else(|| guess_name(q));
            return Ok(TargetSpec::Commands {
                name,
                start_cmd: self.start_cmd.clone(),
                query_cmd: q.clone(),
            });
        }
        if let Some(peer) = &self.peer {
            let registry = self
                .peers_file
                .clone()
                .unwrap_or_else(target::default_registry);
            return Ok(TargetSpec::Peer {
                name: peer.clone(),
                registry,
            });
        }
        if self.kong_conf.is_some() || (self.name.is_some() && !self.reference) {
            return Ok(TargetSpec::KongConf {
                path: self.kong_conf.clone(),
                name: self.name.clone(),
            });
        }
        Ok(TargetSpec::Reference {
            protocol: self.protocol.into(),
            exe: None,
            faults: Vec::new(),
        })
    }

    pub fn session_options(&self, trace: bool) -> anyhow::Result<SessionOptions> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err(anyhow!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            ));
        }
        let call_deadline = match self.call_deadline {
            None => None,
            Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(anyhow!(
                    "--call-deadline must be a positive number of seconds, got {s}"
                ))
            }
        };
        Ok(SessionOptions {
            timeouts: Timeouts::uniform(Duration::from_secs_f64(self.timeout)),
            call_deadline,
            max_frame: self.max_frame,
            log: if self.quiet_server {
                LogSink::Quiet
            } else {
                LogSink::Stderr
            },
            trace,
            pool_policy: self.pool,
            ..SessionOptions::default()
        })
    }
}

/// A pluginserver name from a command line: the file name of its first word.
fn guess_name(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("custom");
    let base = first.rsplit('/').next().unwrap_or(first);
    if base.is_empty() {
        "custom".into()
    } else {
        base.to_owned()
    }
}

/// `--json [FILE]`: the JSON report to FILE, or to stdout instead of the human output.
#[derive(Debug, Clone, Args)]
pub struct JsonArg {
    /// Write the JSON report to FILE, or to stdout (instead of the human output) without FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
}

impl JsonArg {
    pub fn to_stdout(&self) -> bool {
        self.json.as_deref() == Some("-")
    }
    pub fn emit(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        match self.json.as_deref() {
            None => Ok(()),
            // A closed stdout is flagged for the edge (a quiet exit 0), not an error here.
            Some("-") => match crate::outln!("{text}") {
                Err(f) if !f.is_quiet() => Err(f.error),
                _ => Ok(()),
            },
            Some(path) => {
                std::fs::write(path, text + "\n").with_context(|| format!("writing {path}"))
            }
        }
    }
}

impl ServerArgs {
    /// The socket placement flags.
    pub fn placement(&self) -> Placement {
        Placement {
            socket: self.socket.clone(),
            prefix: self.prefix.clone(),
        }
    }
}
