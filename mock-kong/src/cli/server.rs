//! Options shared by every subcommand: which server, where its socket lives, timeouts; and the
//! `--json [FILE]` convention.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};

use super::{session_failure, Failure};
use crate::dump::Dump;
use crate::host::{PoolPolicy, Timeouts};
use crate::process::LogSink;
use crate::session::SessionOptions;
use crate::target::{self, Placement, ResolvedTarget, TargetError, TargetSpec};
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
    /// With --kong-conf: which pluginserver; with --start-cmd: the pluginserver's name (default:
    /// the dump's plugin name), which makes the default socket `<prefix>/<name>.socket`.
    #[arg(long)]
    pub name: Option<String>,
    /// Command that starts the server (run through /bin/sh with `exec`, as Kong does).
    /// `{socket}`, `{prefix}` and `{name}` are replaced by the socket path mock-kong waits
    /// for, its directory and the pluginserver name (shell-quoted).
    #[arg(long, value_name = "CMD", requires = "query_cmd")]
    pub start_cmd: Option<String>,
    /// Command that prints the server's JSON dump (`{prefix}` is replaced as in --start-cmd).
    #[arg(long, value_name = "CMD")]
    pub query_cmd: Option<String>,
    /// A peer from the peers registry (see peers.toml).
    #[arg(long, conflicts_with_all = ["start_cmd", "query_cmd"])]
    pub peer: Option<String>,
    /// The peers registry (default: peers.toml in this directory or a parent).
    #[arg(long, value_name = "FILE")]
    pub peers_file: Option<PathBuf>,
    /// Socket path; a relative path lies in the prefix (default: Kong's `<prefix>/<name>.socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Prefix directory for sockets (default: the kong.conf's prefix, else a private temporary
    /// directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Plugin to use: the reference server and peers list it first in their dump (default
    /// hello); with --kong-conf or --start-cmd the server's dump decides, and --plugin only
    /// checks that it serves this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Timeout of every connect, read and write, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// How long the started server may take to listen on its socket, in seconds (a server
    /// that exits 3 times within 10 s without listening is given up on sooner).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SOCKET_TIMEOUT)]
    pub socket_timeout: f64,
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
    /// which moves consecutive calls of one event to different connections (docs/protocol.md §10.1).
    #[arg(long, value_enum, default_value = "lifo")]
    pub pool: PoolPolicy,
}

/// The default of `--socket-timeout`: a server that has not listened after this long is reported
/// (with where it does listen, if anywhere).
pub const DEFAULT_SOCKET_TIMEOUT: f64 = 8.0;

/// The plugin used when `--plugin` is not given (the reference server's and peers' `hello`).
pub const DEFAULT_PLUGIN: &str = "hello";

impl ServerArgs {
    /// The plugin the reference server and peers are asked to list first.
    pub fn plugin(&self) -> &str {
        self.plugin.as_deref().unwrap_or(DEFAULT_PLUGIN)
    }

    /// The target as the flags name it. Commands without `--name` are named by
    /// [`ServerArgs::target`] after their dump.
    pub fn spec(&self) -> anyhow::Result<TargetSpec> {
        if let Some(q) = &self.query_cmd {
            return Ok(TargetSpec::Commands {
                name: self.name.clone(),
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

    /// The spec, with commands named after their dump (which runs the query command once):
    /// exit 1 when the query command or its dump fails, 2 for a setup error.
    pub async fn named_spec(&self) -> Result<TargetSpec, Failure> {
        let mut spec = self.spec().map_err(Failure::usage)?;
        target::name_from_dump(&mut spec, &self.placement(), DUMP_TIMEOUT)
            .await
            .map_err(target_failure)?;
        Ok(spec)
    }

    /// Resolves the target for the plugin asked for (see [`ServerArgs::plugin`]), printing a
    /// kong.conf's warnings (Kong's own and mock-kong's hints) to stderr.
    pub async fn target(&self) -> Result<(TargetSpec, ResolvedTarget), Failure> {
        let spec = self.named_spec().await?;
        let target =
            target::resolve(&spec, &self.placement(), self.plugin()).map_err(target_failure)?;
        for w in &target.warnings {
            crate::errln!("warning: {w}");
        }
        Ok((spec, target))
    }

    /// With a kong.conf or commands, `--plugin` names what the user expects the server to
    /// serve: a usage error when the dump's first plugin (the one Kong 3.9 registers) is
    /// another.
    pub fn check_plugin(&self, spec: &TargetSpec, dump: &Dump) -> Result<(), Failure> {
        let (Some(asked), TargetSpec::KongConf { .. } | TargetSpec::Commands { .. }) =
            (&self.plugin, spec)
        else {
            return Ok(());
        };
        let served = &dump.plugin().name;
        if served == asked {
            return Ok(());
        }
        let listed: Vec<&str> = dump.plugins.iter().map(|p| p.name.as_str()).collect();
        Err(Failure::usage(anyhow!(
            "--plugin {asked}: this server's dump lists [{}], and Kong 3.9 registers only its first plugin, `{served}`; drop --plugin (the dump decides which plugin a pluginserver serves) or point mock-kong at the server of `{asked}`",
            listed.join(", ")
        )))
    }

    pub fn session_options(&self, trace: bool) -> anyhow::Result<SessionOptions> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err(anyhow!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            ));
        }
        if !(self.socket_timeout > 0.0 && self.socket_timeout.is_finite()) {
            return Err(anyhow!(
                "--socket-timeout must be a positive number of seconds, got {}",
                self.socket_timeout
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
            socket_timeout: Duration::from_secs_f64(self.socket_timeout),
            ..SessionOptions::default()
        })
    }
}

/// How long a query command may run (as [`SessionOptions::dump_timeout`]).
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// A target that cannot be resolved: the server's fault (exit 1) when its query command failed
/// or printed a bad dump, else a setup error (exit 2).
pub(crate) fn target_failure(e: TargetError) -> Failure {
    match e {
        TargetError::Dump(d) => session_failure(d.into()),
        other => Failure::usage(other),
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
