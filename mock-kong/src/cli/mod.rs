//! The `mock-kong` command line: a thin shell over the library.
//!
//! Exit codes (stable, documented in the README):
//! * `0`: everything as expected;
//! * `1`: the plugin server misbehaved (bad dump, no socket, protocol error, failed event);
//! * `2`: usage or setup error (bad flags, unreadable kong.conf, command not runnable).
//!
//! Layout: `mod.rs` (the command enum, exit-code mapping, signals), `server.rs` (the server
//! options every subcommand shares, and the `--json [FILE]` convention), one file per subcommand.

mod call;
mod check;
pub mod completions;
mod conform;
mod dump;
mod proxy;
mod reference;
mod run;
mod server;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::session::SessionError;

pub use call::CallArgs;
pub use check::CheckArgs;
pub use completions::{CompletionShell, CompletionsArgs};
pub use conform::ConformArgs;
pub use dump::DumpArgs;
pub use proxy::{ProxyArgs, ProxyOpts};
pub use reference::ReferenceArgs;
pub use run::RunArgs;
pub use server::{JsonArg, ProtocolArg, ServerArgs, DEFAULT_SOCKET_TIMEOUT};

const EXAMPLES: &str = "\
Examples:
  mock-kong dump                                   # the built-in reference server's dump
  mock-kong call --header host:example.com         # drive its hello plugin through access
  mock-kong call --protocol protobuf --plugin bench --config '{\"calls\":30}'
  mock-kong call --kong-conf /etc/kong/kong.conf --name go-hello --json
  mock-kong call --start-cmd ./go-hello --query-cmd './go-hello -dump' --socket /usr/local/kong/go-hello.socket
  mock-kong call --peer python --plugin hello -v   # a peer from peers.toml, every frame shown
  mock-kong run scenarios/ --peer go --junit report.xml
  mock-kong proxy --peer go --plugin hello --access-log   # curl http://127.0.0.1:8000/
  mock-kong check --kong-conf /etc/kong/kong.conf     # every pluginserver: dump, start, one request

Your own plugin, step by step: docs/your-plugin.md. Each subcommand's --help has examples.
Exit codes: 0 ok, 1 the plugin server misbehaved, 2 usage or setup error, 128 + signal when
interrupted.";

/// The version line: which Kong releases' host side is emulated.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (emulates the plugin-server host of Kong Gateway 3.9 by default; --kong-version 2.3 to 3.9)"
);

/// A faithful stand-in for Kong Gateway's host side, for testing external plugin servers.
#[derive(Debug, Parser)]
#[command(name = "mock-kong", version = VERSION, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server's query command, validate the dump and print the plugin info.
    Dump(DumpArgs),
    /// Start the server and drive one event per phase through it, printing the PDK exchange.
    Call(CallArgs),
    /// Play scenario files (TOML) through the server and check their expectations.
    Run(RunArgs),
    /// Run the conformance suite: named checks of everything Kong expects from a plugin server.
    Conform(ConformArgs),
    /// Serve HTTP in front of the plugin server(s): every request runs the plugins' phases, as
    /// behind Kong's proxy port, until Ctrl-C.
    Proxy(ProxyArgs),
    /// Check every pluginserver of a kong.conf: dump, start, one request each.
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(CompletionsArgs),
    /// Run the built-in Rust reference plugin server (what mock-kong starts by default).
    #[command(hide = true)]
    ReferenceServer(ReferenceArgs),
}

pub(crate) use crate::edge::Failure;

pub(crate) fn setup(e: impl Into<anyhow::Error>) -> Failure {
    Failure::usage(e)
}

pub(crate) fn session_failure(e: SessionError) -> Failure {
    if e.is_server_fault() {
        Failure::server(e)
    } else {
        Failure::usage(e)
    }
}

/// Runs the hidden `reference-server` subcommand; other binaries of the project (loadgen) embed
/// it so the reference server can be started from their own executable. Returns the exit code.
pub async fn run_reference_server(args: ReferenceArgs) -> i32 {
    match reference::run(args).await {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

/// Parses the arguments, runs, and returns the process exit code (see [`crate::edge`]: exit
/// codes, signals, a closed stdout).
pub fn main() -> i32 {
    let cli = match crate::edge::parse::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A current-thread runtime: the host is I/O bound, and children spawned from the main
    // thread keep their parent-death signal for the whole life of the process.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    // The reference server handles SIGINT/SIGTERM itself (its `ignore-sigterm` fault must not be
    // overridden by a handler installed here). `run` and `conform` write the reports of what
    // they finished when interrupted.
    let (signals, grace) = match cli.command {
        Command::ReferenceServer(_) => (false, Duration::ZERO),
        Command::Run(_) | Command::Conform(_) | Command::Proxy(_) => {
            (true, crate::edge::REPORT_GRACE)
        }
        _ => (true, Duration::ZERO),
    };
    crate::edge::run(rt, signals, grace, run(cli))
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Dump(a) => dump::run(a).await,
        Command::Call(a) => call::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Conform(a) => conform::run(a).await,
        Command::Proxy(a) => proxy::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Completions(a) => completions::run(a),
        Command::ReferenceServer(a) => reference::run(a).await,
    }
}

/// Every visible subcommand (and theirs) shows examples in its `--help`.
pub fn subcommands_without_examples(cmd: &mut clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    cmd.build();
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{path} {}", sub.get_name());
            let help = sub.clone().render_long_help().to_string();
            if !help.contains("Examples:") {
                missing.push(name.clone());
            }
            walk(sub, &name, missing);
        }
    }
    walk(cmd, cmd.get_name(), &mut missing);
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Regression (issue 13): subcommands' --help had no examples.
    #[test]
    fn every_subcommand_help_has_examples() {
        Cli::command().debug_assert();
        assert_eq!(
            subcommands_without_examples(&mut Cli::command()),
            Vec::<String>::new()
        );
    }

    /// Regression (issue 13): --version did not say which Kong it emulates.
    #[test]
    fn the_version_names_the_kong_versions_emulated() {
        let v = Cli::command().render_version().to_string();
        assert!(v.contains("Kong Gateway 3.9"), "{v}");
        assert!(v.contains("2.3 to 3.9"), "{v}");
    }
}
