//! The `mock-kong` command line: a thin shell over the library.
//!
//! Exit codes (stable, documented in the README):
//! * `0`: everything as expected;
//! * `1`: the plugin server misbehaved (bad dump, no socket, protocol error, failed event);
//! * `2`: usage or setup error (bad flags, unreadable kong.conf, command not runnable).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::host::{EventEnd, PluginEntity, PoolPolicy, Timeouts};
use crate::pdk::SimpleRequest;
use crate::process::LogSink;
use crate::session::{kong_order, Session, SessionError, SessionOptions};
use crate::target::{self, Placement, TargetSpec};
use crate::Protocol;

const EXAMPLES: &str = "\
Examples:
  mock-kong dump                                   # the built-in reference server's dump
  mock-kong call --header host:example.com         # drive its hello plugin through access
  mock-kong call --protocol protobuf --plugin bench --config '{\"calls\":30}'
  mock-kong call --kong-conf /etc/kong/kong.conf --name go-hello --json
  mock-kong call --start-cmd ./go-hello --query-cmd './go-hello -dump' --socket /tmp/k/go-hello.socket
  mock-kong call --peer python --plugin hello -v   # a peer from peers.toml, every frame shown

Exit codes: 0 ok, 1 the plugin server misbehaved, 2 usage or setup error.";

/// A faithful stand-in for Kong Gateway's host side, for testing external plugin servers.
#[derive(Debug, Parser)]
#[command(name = "mock-kong", version, about, after_help = EXAMPLES)]
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
    /// Run the built-in Rust reference plugin server (what mock-kong starts by default).
    #[command(hide = true)]
    ReferenceServer(ReferenceArgs),
}

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
    /// Do not print the server's output lines.
    #[arg(long)]
    pub quiet_server: bool,
}

impl ServerArgs {
    fn spec(&self) -> anyhow::Result<TargetSpec> {
        if let Some(q) = &self.query_cmd {
            let name = self.name.clone().unwrap_or_else(|| guess_name(q));
            return Ok(TargetSpec::Commands { name, start_cmd: self.start_cmd.clone(), query_cmd: q.clone() });
        }
        if let Some(peer) = &self.peer {
            let registry = self.peers_file.clone().unwrap_or_else(target::default_registry);
            return Ok(TargetSpec::Peer { name: peer.clone(), registry });
        }
        if self.kong_conf.is_some() || (self.name.is_some() && !self.reference) {
            return Ok(TargetSpec::KongConf { path: self.kong_conf.clone(), name: self.name.clone() });
        }
        Ok(TargetSpec::Reference { protocol: self.protocol.into(), exe: None })
    }

    fn session_options(&self, trace: bool) -> anyhow::Result<SessionOptions> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err(anyhow!("--timeout must be a positive number of seconds, got {}", self.timeout));
        }
        Ok(SessionOptions {
            timeouts: Timeouts::uniform(Duration::from_secs_f64(self.timeout)),
            log: if self.quiet_server { LogSink::Quiet } else { LogSink::Stderr },
            trace,
            pool_policy: PoolPolicy::Lifo,
            ..SessionOptions::default()
        })
    }
}

/// A pluginserver name from a command line: the file name of its first word.
fn guess_name(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("custom");
    let base = first.rsplit('/').next().unwrap_or(first);
    if base.is_empty() { "custom".into() } else { base.to_owned() }
}

/// `--json [FILE]`: the JSON report to FILE, or to stdout instead of the human output.
#[derive(Debug, Clone, Args)]
pub struct JsonArg {
    /// Write the JSON report to FILE, or to stdout (instead of the human output) without FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
}

impl JsonArg {
    fn to_stdout(&self) -> bool {
        self.json.as_deref() == Some("-")
    }
    fn emit(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        match self.json.as_deref() {
            None => Ok(()),
            Some("-") => {
                println!("{text}");
                Ok(())
            }
            Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {path}")),
        }
    }
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The plugin's config record as JSON.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// Phase to run (repeatable; default: the phases the plugin declares, in Kong's order).
    #[arg(long = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// Request header NAME:VALUE (repeatable; default host:example.com).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Show every frame on the wire.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

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

/// An error with the exit code it maps to.
struct Failure {
    code: i32,
    error: anyhow::Error,
}

fn setup(e: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 2, error: e.into() }
}

fn session_failure(e: SessionError) -> Failure {
    Failure { code: if e.is_server_fault() { 1 } else { 2 }, error: e.into() }
}

/// Parses the arguments, runs, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // A current-thread runtime: the host is I/O bound, and children spawned from the main
    // thread keep their parent-death signal for the whole life of the process.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            _ = interrupted() => Err(Failure { code: 130, error: anyhow!("interrupted") }),
        }
    });
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            f.code
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Dump(a) => cmd_dump(a).await,
        Command::Call(a) => cmd_call(a).await,
        Command::ReferenceServer(a) => cmd_reference(a).await,
    }
}

async fn cmd_reference(a: ReferenceArgs) -> Result<i32, Failure> {
    let protocol: Protocol = a.protocol.into();
    if a.dump {
        let text = crate::reference::dump_json(protocol, &a.plugin).map_err(|e| setup(anyhow!(e)))?;
        println!("{text}");
        return Ok(0);
    }
    let socket = a.socket.ok_or_else(|| setup(anyhow!("--socket is required")))?;
    crate::reference::serve(crate::reference::ReferenceOptions { protocol, socket, plugin: a.plugin })
        .await
        .map_err(|e| Failure { code: 1, error: e.into() })?;
    Ok(0)
}

async fn cmd_dump(a: DumpArgs) -> Result<i32, Failure> {
    let spec = a.server.spec().map_err(setup)?;
    let placement = Placement { socket: a.server.socket.clone(), prefix: a.server.prefix.clone() };
    let target = target::resolve(&spec, &placement, &a.server.plugin).map_err(setup)?;
    let opts = a.server.session_options(false).map_err(setup)?;
    let out = crate::dump::query(&target.query_cmd, opts.dump_timeout)
        .await
        .map_err(|e| session_failure(e.into()))?;
    let dump = &out.dump;
    let json = serde_json::json!({
        "server": { "label": target.label, "query_cmd": target.query_cmd },
        "protocol": dump.protocol,
        "dump": dump,
        "plugin": dump.plugin(),
        "stderr": out.stderr,
        "exit_code": out.exit_code,
    });
    a.json.emit(&json).map_err(setup)?;
    if !a.json.to_stdout() {
        let p = dump.plugin();
        println!("server:   {} ({})", target.label, target.query_cmd);
        println!(
            "protocol: {}{}",
            dump.protocol,
            if dump.protocol_explicit { "" } else { " (not named in the dump; Kong's default)" }
        );
        println!("plugin:   {} {} (priority {})", p.name, p.version, p.priority);
        println!("phases:   {}", p.phases.join(", "));
        println!("schema:   {}", p.schema);
        for extra in dump.plugins.iter().skip(1) {
            println!("ignored:  {} (Kong 3.9 registers only the first plugin of a dump)", extra.name);
        }
        for w in &dump.warnings {
            println!("warning:  {w}");
        }
    }
    Ok(0)
}

fn parse_headers(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    if raw.is_empty() {
        return Ok(vec![("host".into(), "example.com".into())]);
    }
    raw.iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("--header expects NAME:VALUE, got {h:?}"))?;
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

async fn cmd_call(a: CallArgs) -> Result<i32, Failure> {
    let spec = a.server.spec().map_err(setup)?;
    let placement = Placement { socket: a.server.socket.clone(), prefix: a.server.prefix.clone() };
    let headers = parse_headers(&a.headers).map_err(setup)?;
    let config: serde_json::Value = serde_json::from_str(&a.config)
        .with_context(|| format!("--config is not valid JSON: {}", a.config))
        .map_err(setup)?;
    let serde_json::Value::Object(config) = config else {
        return Err(setup(anyhow!("--config must be a JSON object, got {}", a.config)));
    };
    let target = target::resolve(&spec, &placement, &a.server.plugin).map_err(setup)?;
    let opts = a.server.session_options(a.verbose || a.json.json.is_some()).map_err(setup)?;
    let session = Session::open(target, &opts).await.map_err(session_failure)?;
    let result = drive(&session, &a, headers, config).await;
    let stopped = session.close().await;
    let (json, ok) = result.map_err(|e| Failure { code: 1, error: e })?;
    let mut json = json;
    json["server_stop"] = serde_json::json!(stopped);
    a.json.emit(&json).map_err(setup)?;
    Ok(if ok { 0 } else { 1 })
}

async fn drive(
    session: &Session,
    a: &CallArgs,
    headers: Vec<(String, String)>,
    config: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let dump_plugin = session.dump.plugin();
    let plugin_name = if session.dump.plugins.iter().any(|p| p.name == a.server.plugin) {
        a.server.plugin.clone()
    } else {
        dump_plugin.name.clone()
    };
    let info = session.dump.plugins.iter().find(|p| p.name == plugin_name).unwrap_or(dump_plugin);
    let phases = if a.phases.is_empty() { kong_order(&info.phases) } else { a.phases.clone() };
    let entity = PluginEntity::new(&plugin_name, config);
    let mut pdk = SimpleRequest { request_headers: headers, ..Default::default() };
    let report = session.run_request(&entity, &phases, &mut pdk).await;
    let frames = session.client().trace().take();
    let ok = report.errors.is_empty()
        && report.events.iter().all(|e| matches!(e.end, EventEnd::Done | EventEnd::Exit { .. }));

    if !a.json.to_stdout() {
        let mut out = std::io::stdout().lock();
        let pid = session.process.as_ref().and_then(|p| p.pid());
        let _ = writeln!(
            out,
            "server:  {}{}{}",
            session.target.label,
            if session.target.label.contains(session.protocol().as_str()) {
                String::new()
            } else {
                format!(" ({})", session.protocol())
            },
            pid.map(|p| format!(", pid {p}")).unwrap_or_default()
        );
        let _ = writeln!(out, "plugin:  {} {} phases [{}]", info.name, info.version, info.phases.join(", "));
        for ev in &report.events {
            let _ = writeln!(
                out,
                "\nphase {}: instance {}{}{}",
                ev.phase,
                ev.instance_id,
                ev.event_id.map(|e| format!(", event {e}")).unwrap_or_default(),
                if ev.retries > 0 { format!(", retried {}x", ev.retries) } else { String::new() }
            );
            for c in &ev.calls {
                let args: Vec<String> = c.args.iter().map(|v| format!("{v:?}")).collect();
                let answer = c.answer.as_ref().map(|v| format!("{v:?}")).unwrap_or_else(|| "—".into());
                let _ = writeln!(
                    out,
                    "  {}({}) -> {}   [{}, conn {}]{}",
                    c.method,
                    args.join(", "),
                    answer,
                    c.reply_kind,
                    c.conn,
                    c.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default()
                );
            }
            let end = match &ev.end {
                EventEnd::Done => "done".to_owned(),
                EventEnd::Exit { status, body, .. } => format!(
                    "exit {status} {}",
                    body.as_ref().map(|b| format!("{:?}", String::from_utf8_lossy(b))).unwrap_or_default()
                ),
                EventEnd::Raised { method, error } => format!("FAILED: {method} raised: {error}"),
                EventEnd::MethodNotFound { method } => format!("FAILED: method \"{method}\" not found"),
            };
            let _ = writeln!(out, "  {end} ({} PDK call(s))", ev.calls.len());
            for f in &ev.findings {
                let _ = writeln!(out, "  note: {f}");
            }
        }
        for (phase, err) in &report.errors {
            let _ = writeln!(out, "\nphase {phase}: FAILED: {err}");
        }
        if !report.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped after exit: {}", report.skipped.join(", "));
        }
        if !pdk.response_headers.is_empty() {
            let _ = writeln!(out, "\nresponse headers:");
            for (k, v) in &pdk.response_headers {
                let _ = writeln!(out, "  {k}: {v}");
            }
        }
        if a.verbose {
            let _ = writeln!(out, "\nframes:");
            for f in &frames {
                let arrow = match f.dir {
                    crate::host::Direction::Send => ">>",
                    crate::host::Direction::Recv => "<<",
                };
                let _ = writeln!(out, "  conn {} {arrow} {}\n      {}", f.conn, f.summary, f.bytes_hex());
            }
        }
    }
    let json = serde_json::json!({
        "server": {
            "label": session.target.label,
            "protocol": session.protocol(),
            "socket": session.target.socket,
            "pid": session.process.as_ref().and_then(|p| p.pid()),
        },
        "dump": session.dump,
        "plugin": plugin_name,
        "phases": phases,
        "events": report.events,
        "errors": report.errors,
        "skipped": report.skipped,
        "response_headers": pdk.response_headers,
        "log": pdk.log,
        "frames": frames,
        "ok": ok,
    });
    Ok((json, ok))
}
