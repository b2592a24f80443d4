//! `mock-kong check`: every plugin server of a kong.conf at once, as `kong check` checks a
//! configuration: each server's dump validated, the server started (unless Kong would leave it
//! to external process management) until it listens, and one request through its plugin's
//! phases with the config built from the schema's defaults.
//!
//! Exit codes: 0 every server passed; 1 a server failed; 2 the kong.conf cannot be used.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use super::{setup, Failure, JsonArg};
use crate::host::Timeouts;
use crate::process::LogSink;
use crate::scenario::runner::Outcome;
use crate::scenario::{RunOptions, Scenario};
use crate::session::{Session, SessionOptions};
use crate::target::{self, Placement, TargetSpec};

const EXAMPLES: &str = "\
Examples:
  mock-kong check --kong-conf /etc/kong/kong.conf
  mock-kong check --kong-conf kong.conf --name greet-py --json check.json
  KONG_PLUGINSERVER_NAMES=greet mock-kong check --kong-conf kong.conf

Exit codes: 0 every pluginserver passed, 1 one failed, 2 the kong.conf cannot be used.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CheckArgs {
    /// The kong.conf (`pluginserver_*` settings; KONG_* environment variables apply).
    #[arg(long, value_name = "FILE")]
    pub kong_conf: Option<PathBuf>,
    /// Check only these pluginservers (repeatable; default: all of them).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Timeout of every connect, read and write, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// How long a started server may take to listen on its socket, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = super::server::DEFAULT_SOCKET_TIMEOUT)]
    pub socket_timeout: f64,
    /// Show the servers' output lines as they come.
    #[arg(long)]
    pub server_log: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// What checking one pluginserver found.
#[derive(Debug, Clone, serde::Serialize)]
struct ServerCheck {
    name: String,
    ok: bool,
    /// The plugin its dump registers (Kong 3.9: the first entry).
    plugin: Option<String>,
    protocol: Option<String>,
    socket: PathBuf,
    /// What was done, step by step (`dump`, `start`, `event`), or why it failed.
    steps: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn positive(name: &str, v: f64) -> Result<Duration, Failure> {
    if v > 0.0 && v.is_finite() {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(setup(anyhow!(
            "{name} must be a positive number of seconds, got {v}"
        )))
    }
}

pub(crate) async fn run(a: CheckArgs) -> Result<i32, Failure> {
    let opts = SessionOptions {
        timeouts: Timeouts::uniform(positive("--timeout", a.timeout)?),
        socket_timeout: positive("--socket-timeout", a.socket_timeout)?,
        log: if a.server_log {
            LogSink::Stderr
        } else {
            LogSink::Quiet
        },
        // A server that dies is an error here, not something to wait out.
        respawn: true,
        ..SessionOptions::default()
    };
    let conf = crate::config::load(a.kong_conf.as_deref()).map_err(setup)?;
    for w in &conf.warnings {
        crate::errln!("warning: {w}");
    }
    let mut names: Vec<String> = conf.servers.iter().map(|s| s.name.clone()).collect();
    if !a.names.is_empty() {
        for wanted in &a.names {
            crate::config::select(&conf, Some(wanted)).map_err(setup)?;
        }
        names.retain(|n| a.names.iter().any(|w| w.trim().eq_ignore_ascii_case(n)));
    }
    let mut checks = Vec::new();
    for name in &names {
        if crate::edge::stopping() {
            break;
        }
        checks.push(check_one(&a, name, &opts).await);
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if !a.json.to_stdout() {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kong.conf: {} (prefix {})",
            a.kong_conf
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none: KONG_* variables only)".into()),
            conf.prefix.display()
        );
        for c in &checks {
            let _ = writeln!(
                out,
                "\npluginserver {}: {}",
                c.name,
                if c.ok { "ok" } else { "FAILED" }
            );
            for s in &c.steps {
                let _ = writeln!(out, "  {s}");
            }
            if let Some(e) = &c.error {
                let _ = writeln!(out, "  error: {}", e.replace('\n', "\n    "));
            }
        }
        let _ = writeln!(
            out,
            "\n{} pluginserver(s) checked: {} ok, {failed} failed",
            checks.len(),
            checks.len() - failed
        );
        crate::out!("{out}")?;
    }
    a.json
        .emit(&serde_json::json!({
            "kong_conf": a.kong_conf,
            "prefix": conf.prefix,
            "warnings": conf.warnings,
            "servers": checks,
            "ok": failed == 0,
        }))
        .map_err(setup)?;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Dump, start, one request: what happened and where it stopped.
async fn check_one(a: &CheckArgs, name: &str, opts: &SessionOptions) -> ServerCheck {
    let spec = TargetSpec::KongConf {
        path: a.kong_conf.clone(),
        name: Some(name.to_owned()),
    };
    let mut c = ServerCheck {
        name: name.to_owned(),
        ok: false,
        plugin: None,
        protocol: None,
        socket: PathBuf::new(),
        steps: Vec::new(),
        error: None,
    };
    let target = match target::resolve(&spec, &Placement::default(), "") {
        Ok(t) => t,
        Err(e) => {
            c.error = Some(e.to_string());
            return c;
        }
    };
    c.socket.clone_from(&target.socket);
    let managed = target.start_cmd.is_some();
    let session = match Session::open(target, opts).await {
        Ok(s) => s,
        Err(e) => {
            c.error = Some(e.to_string());
            return c;
        }
    };
    let info = session.dump.plugin().clone();
    c.plugin = Some(info.name.clone());
    c.protocol = Some(session.protocol().to_string());
    c.steps.push(format!(
        "dump: plugin {} {} (priority {}), phases [{}], {}",
        info.name,
        info.version,
        info.priority,
        info.phases.join(", "),
        session.protocol()
    ));
    for w in &session.dump.warnings {
        c.steps.push(format!("dump warning: {w}"));
    }
    c.steps.push(if managed {
        format!(
            "start: listening at {}{}",
            session.target.socket.display(),
            session
                .process
                .as_ref()
                .and_then(|p| p.pid())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "start: no start command (Kong assumes external process management); connecting to {}",
            session.target.socket.display()
        )
    });
    let scenario = Scenario {
        plugin: info.name.clone(),
        ..Scenario::default()
    };
    let r = scenario.run(&session, &RunOptions::default()).await;
    match r.outcome {
        Outcome::Passed => {
            let calls = r.observed.as_ref().map_or(0, |o| o.calls.len());
            let phases = r
                .observed
                .as_ref()
                .map(|o| o.phases.join(", "))
                .unwrap_or_default();
            c.steps.push(format!(
                "event: one request through [{phases}] with the schema's default config: {calls} PDK call(s), status {}",
                r.observed.as_ref().map_or(0, |o| o.status)
            ));
            c.ok = true;
        }
        // The schema requires fields no default fills: nothing to send without the user's
        // config; the server itself is fine so far.
        Outcome::Invalid => {
            c.steps.push(format!(
                "event: not run: {}",
                r.reason
                    .as_deref()
                    .unwrap_or("the default config is not valid")
            ));
            c.ok = true;
        }
        _ => {
            c.error = Some(format!("event failed:\n{}", r.explain().trim_end()));
        }
    }
    session.close().await;
    c
}
